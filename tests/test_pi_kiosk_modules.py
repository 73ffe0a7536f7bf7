"""The pi_kiosk role's modules, run here on temporary directories: what goes live, what is committed,
what a rollback picks, what pruning keeps, what the controller packs for a Pi."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import ROOT, load_module

ROLE = ROOT / "roles/pi_kiosk"
sys.modules["ansible.module_utils.pi_kiosk_store"] = load_module(ROLE / "module_utils/pi_kiosk_store.py")
store_mod: ModuleType = sys.modules["ansible.module_utils.pi_kiosk_store"]
switch: ModuleType = load_module(ROLE / "library/pi_kiosk_switch.py")
release_mod: ModuleType = load_module(ROLE / "library/pi_kiosk_release.py")
wheelhouse: ModuleType = load_module(ROLE / "library/pi_kiosk_wheelhouse.py")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Area:
    """A deployment area with fake releases and candidate files."""

    def __init__(self, tmp: Path) -> None:
        self.store = store_mod.Store(tmp / "opt")
        self.etc = tmp / "etc"
        self.candidates = tmp / "candidate"
        self.models = tmp / "models"
        for d in (self.etc, self.candidates, self.models):
            d.mkdir(parents=True)

    def release(self, name: str, wheels: list[str] = ()) -> str:  # type: ignore[assignment]
        path = self.store.release_dir(name)
        path.mkdir(parents=True)
        (path / store_mod.MARKER).write_text(json.dumps({"release": name, "wheels": list(wheels)}))
        return name

    def files(self, config: str, model: str = "m" * 64) -> dict[str, str]:
        (self.candidates / "config.toml").write_text(f'{config}\nmodel_sha256 = "{model}"\n')
        (self.candidates / "unit").write_text("[Service]\n")
        return {str(self.etc / "config.toml"): str(self.candidates / "config.toml"),
                str(self.etc / "unit"): str(self.candidates / "unit")}

    def deploy(self, name: str, config: str, keep: int = 2, commit: bool = True) -> dict[str, Any]:
        result = switch.go_live(self.store, name, self.files(config), check=False)
        if commit:
            switch.commit(self.store, keep, self.models, check=False)
        return result  # type: ignore[no-any-return]


@pytest.fixture
def area(tmp_path: Path) -> Area:
    return Area(tmp_path)


def test_going_live_installs_the_files_and_switches_current(area: Area) -> None:
    area.release("0.2.0-aaa")
    result = area.deploy("0.2.0-aaa", "threshold = 0.4", commit=False)
    assert result["changed"] and result["release_switched"]
    assert os.readlink(area.store.current) == "releases/0.2.0-aaa"
    assert (area.etc / "config.toml").read_text().startswith("threshold = 0.4")
    state = area.store.read_state()
    assert state["live"]["release"] == "0.2.0-aaa" and state["committed"] == []
    # The same candidate again changes nothing.
    assert not switch.go_live(area.store, "0.2.0-aaa", area.files("threshold = 0.4"), check=False)["changed"]


def test_check_mode_predicts_and_writes_nothing(area: Area) -> None:
    area.release("0.2.0-aaa")
    predicted = switch.go_live(area.store, "0.2.0-aaa", area.files("x = 1"), check=True)
    assert predicted["changed"]
    assert not area.store.current.is_symlink() and not (area.etc / "config.toml").exists()
    assert not area.store.state_path.exists()
    # A release this run would build first is a switch it would make, not an error.
    assert switch.go_live(area.store, "0.2.0-new", area.files("x = 1"), check=True)["changed"]
    with pytest.raises(ValueError, match="not complete"):
        switch.go_live(area.store, "0.2.0-new", area.files("x = 1"), check=False)


def test_rollback_follows_commit_order_not_file_times(area: Area) -> None:
    """ansistrano/capistrano roll back to the newest directory by mtime: here a touched old release
    must not be taken for the last known good."""
    for name in ("0.2.0-old", "0.2.0-mid"):
        area.release(name)
        area.deploy(name, f"# {name}", keep=3)
    area.release("0.2.0-bad")
    area.deploy("0.2.0-bad", "# bad", commit=False)
    future = time.time() + 3600
    os.utime(area.store.release_dir("0.2.0-old"), (future, future))
    result = switch.roll_back(area.store, "", "health", "no frames", check=False)
    assert result["deployment"]["release"] == "0.2.0-mid"
    assert os.readlink(area.store.current) == "releases/0.2.0-mid"
    assert (area.etc / "config.toml").read_text().startswith("# 0.2.0-mid")
    state = area.store.read_state()
    assert [(f["release"], f["phase"], f["reason"]) for f in state["failed"]] == [("0.2.0-bad", "health", "no frames")]
    assert state["live"]["release"] == "0.2.0-mid"


def test_rollback_of_a_committed_live_deployment_goes_to_the_one_before(area: Area) -> None:
    for name in ("0.2.0-a", "0.2.0-b"):
        area.release(name)
        area.deploy(name, f"# {name}", keep=3)
    result = switch.roll_back(area.store, "", "rollback requested", "", check=False)
    assert (result["previous"]["release"], result["deployment"]["release"]) == ("0.2.0-b", "0.2.0-a")
    assert area.store.read_state()["failed"] == []  # b passed its gate: it did not fail


def test_rollback_to_a_named_release_and_refusals(area: Area) -> None:
    with pytest.raises(ValueError, match="no committed deployment to roll back to"):
        switch.roll_back(area.store, "", "", "", check=False)
    area.release("0.2.0-a")
    area.deploy("0.2.0-a", "# a")
    with pytest.raises(ValueError, match="no committed deployment to roll back to"):
        switch.roll_back(area.store, "", "", "", check=False)
    with pytest.raises(ValueError, match=r"pi_kiosk_rollback_to=9\.9\.9-x is not a committed release here; "
                                         r"committed: 0\.2\.0-a"):
        switch.roll_back(area.store, "9.9.9-x", "", "", check=False)
    area.release("0.2.0-b")
    area.deploy("0.2.0-b", "# b")
    assert switch.roll_back(area.store, "0.2.0-a", "", "", check=False)["deployment"]["release"] == "0.2.0-a"


def test_pruning_keeps_the_live_and_the_last_known_good_and_ignores_failures(area: Area) -> None:
    (area.store.wheels / "w-old").mkdir(parents=True)
    (area.models / f"{'a' * 64}.onnx").write_text("old model")
    area.release("0.2.0-1", ["w-old"])
    switch.go_live(area.store, "0.2.0-1", area.files("# 1", model="a" * 64), check=False)
    switch.commit(area.store, 2, area.models, check=False)
    (area.store.wheels / "w-keep").mkdir()  # arrive with release 2
    (area.models / f"{'b' * 64}.onnx").write_text("kept model")
    for n in (2, 3):
        area.release(f"0.2.0-{n}", ["w-keep"])
        switch.go_live(area.store, f"0.2.0-{n}", area.files(f"# {n}", model="b" * 64), check=False)
        switch.commit(area.store, 2, area.models, check=False)
    # A failed release neither takes a keep slot nor survives the next prune.
    area.release("0.2.0-failed", ["w-keep"])
    area.deploy("0.2.0-failed", "# failed", commit=False)
    switch.roll_back(area.store, "", "smoke test", "boom", check=False)
    result = switch.commit(area.store, 2, area.models, check=False)
    assert sorted(p.name for p in area.store.releases.iterdir()) == ["0.2.0-2", "0.2.0-3"]
    assert result["pruned"]["releases"] == ["0.2.0-failed"]
    assert sorted(p.name for p in area.store.wheels.iterdir()) == ["w-keep"]
    assert [p.name for p in area.models.iterdir()] == [f"{'b' * 64}.onnx"]
    assert os.readlink(area.store.current) == "releases/0.2.0-3"


def test_a_wheel_that_is_not_what_the_controller_sent_is_refused(area: Area, tmp_path: Path) -> None:
    good, bad = b"good wheel", b"tampered wheel"
    tar_path = tmp_path / "in.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in (("a-1-py3-none-any.whl", good), ("b-1-py3-none-any.whl", bad)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    expected = {"a-1-py3-none-any.whl": sha(good), "b-1-py3-none-any.whl": sha(b"what was locked")}
    with pytest.raises(release_mod.Refused, match=r"b-1-py3-none-any.whl: sha256 .* differs from the release's"):
        release_mod.ingest(area.store, tar_path, expected, False)
    assert area.store.wheel_hashes() == [sha(good)]
    assert not tar_path.exists(), "a refused tar stays on the Pi"



def test_lock_entries_are_replaced_by_the_users_wheels(tmp_path: Path) -> None:
    lock = "onnxruntime==1.32.0 \\\n    --hash=sha256:aa\nnumpy==2.4.6 \\\n    --hash=sha256:bb\n"
    entries = wheelhouse.split_lock(lock)
    assert set(entries) == {"onnxruntime", "numpy"}
    wheel = tmp_path / "onnxruntime-1.20.0-cp311-cp311-linux_armv7l.whl"
    wheel.write_bytes(b"user's build")
    found = wheelhouse.local_entries([wheel], "armv7l")
    assert [(w["name"], w["version"], w["sha256"]) for w in found] == [("onnxruntime", "1.20.0", sha(b"user's build"))]
    assert wheelhouse.local_entries([wheel], "aarch64") == []
    with pytest.raises(wheelhouse.WheelhouseError, match="is not a wheel file"):
        wheelhouse.local_entries([tmp_path / "notes.txt"], "armv7l")


def test_a_32_bit_pi_without_an_onnxruntime_wheel_is_refused_early(tmp_path: Path) -> None:
    params = {"source_dir": str(ROOT / "files/kiosk"), "cache_dir": str(tmp_path), "download": False,
              "index_url": "", "local_wheels": [],
              "hosts": {"zero-w": {"lock": str(ROOT / "files/kiosk/locks/pi.txt"), "have": [],
                                   "platform": {"python": "3.11", "machine": "armv7l", "glibc": "2.36"}}}}
    with pytest.raises(wheelhouse.WheelhouseError, match=r"zero-w runs a 32-bit userland .* pi_kiosk_local_wheels"):
        wheelhouse.plan(params)


def test_the_kiosk_wheel_is_reproducible_and_only_its_sources_name_a_release(tmp_path: Path) -> None:
    before = sorted(p for p in (ROOT / "files/kiosk").rglob("*") if "__pycache__" not in p.parts)
    one = wheelhouse.local_wheel(ROOT / "files/kiosk", tmp_path / "a")
    two = wheelhouse.local_wheel(ROOT / "files/kiosk", tmp_path / "b")
    assert one["sha256"] == two["sha256"], "two controllers would name the same code two releases"
    after = sorted(p for p in (ROOT / "files/kiosk").rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "the build left files in the checkout"
    inputs = {p.relative_to(ROOT / "files/kiosk").parts[0] for p in wheelhouse.wheel_inputs(ROOT / "files/kiosk")}
    assert inputs == {"pyproject.toml", "README.md", "src"}
    # The detector's networks are a wheel of their own: a code change does not ship them again.
    assert wheelhouse.local_sources(ROOT / "files/kiosk") == [ROOT / "files/mtcnn"]
    assert one["size"] < 200_000


def test_a_pi_gets_only_the_wheels_it_lacks(tmp_path: Path) -> None:
    wheels = []
    for n in range(3):
        path = tmp_path / f"w{n}-1-py3-none-any.whl"
        path.write_bytes(bytes([n]) * 1000)
        wheels.append({"file": path.name, "path": str(path), "sha256": sha(path.read_bytes()), "size": 1000})
    packed = wheelhouse.pack(wheels[2:], tmp_path / "cache")
    assert packed["count"] == 1 and packed["bytes"] <= 10240  # one tar record of 10 KiB
    with tarfile.open(packed["tar"]) as tar:
        assert tar.getnames() == [wheels[2]["file"]]
    assert wheelhouse.pack([], tmp_path / "cache") == {"tar": "", "count": 0, "bytes": 0}


def test_an_offline_controller_uses_its_cache_and_says_what_is_missing(tmp_path: Path) -> None:
    lock = ROOT / "files/kiosk/locks/pi.txt"
    platform = {"python": "3.11", "machine": "aarch64", "glibc": "2.36"}
    with pytest.raises(wheelhouse.WheelhouseError, match="pi_kiosk_pip_download is false"):
        wheelhouse.wheelhouse(lock, platform, tmp_path, False, "", [])
    # A cache filled earlier (or copied from another controller) is all it needs.
    _, cached = wheelhouse.cache_entry(lock, platform, tmp_path, set())
    cached.mkdir(parents=True)
    (cached / "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl").write_bytes(b"wheel")
    (cached / "manifest.json").write_text(json.dumps(
        [{"file": "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl", "sha256": sha(b"wheel"), "size": 5}]))
    wheels, requirements = wheelhouse.wheelhouse(lock, platform, tmp_path, False, "", [])
    assert [w["file"] for w in wheels] == ["numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl"]
    assert "onnxruntime==" in requirements and "--hash=sha256:" in requirements


def test_a_cached_kiosk_wheel_keeps_the_sha256_it_was_built_with(tmp_path: Path) -> None:
    built = wheelhouse.local_wheel(ROOT / "files/kiosk", tmp_path)
    Path(built["path"]).write_bytes(b"tampered in the controller's cache")
    again = wheelhouse.local_wheel(ROOT / "files/kiosk", tmp_path)
    # The Pi checks what it receives against this sha256: the tampered file cannot match it.
    assert again["sha256"] == built["sha256"] != sha(b"tampered in the controller's cache")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two throwaway ed25519 keys: the fleet's signing key and a stranger's; an allowed_signers file for the first."""
    base = tmp_path_factory.mktemp("keys")
    paths = {}
    for name in ("fleet", "stranger"):
        paths[name] = base / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(paths[name])], check=True)
    allowed = base / "allowed_signers"
    allowed.write_text(f'pi-kiosk-release namespaces="pi-kiosk-release" {(base / "fleet.pub").read_text()}')
    paths["allowed"] = allowed
    return paths


def signed_release(key: Path) -> dict[str, Any]:
    host_plan = {"release": "0.2.0-abc", "platform": "cp311-aarch64-glibc2.36", "requirements": "numpy==2.4.6\n",
                 "wheels": [{"file": "numpy-2.4.6-cp311-cp311-linux_aarch64.whl", "sha256": "a" * 64}]}
    models = {"m.onnx": "b" * 64}
    manifest = wheelhouse.manifest_of(host_plan, models)
    return {"manifest": manifest, "signature": wheelhouse.sign(manifest, key), "release": host_plan["release"],
            "wheels": host_plan["wheels"], "requirements": host_plan["requirements"], "models": models}


def test_a_signed_release_verifies_and_anything_else_is_refused(keys: dict[str, Path]) -> None:
    good = signed_release(keys["fleet"])
    release_mod.verify(keys["allowed"], **good)
    refusals = {
        "not signed": {**good, "signature": ""},
        "does not verify": {**good, "signature": signed_release(keys["stranger"])["signature"]},
        "does not verify ": {**good, "manifest": good["manifest"].replace("0.2.0-abc", "0.2.0-abd")},
        "differs from its signed manifest in wheels (numpy": {
            **good, "wheels": [{"file": "numpy-2.4.6-cp311-cp311-linux_aarch64.whl", "sha256": "c" * 64}]},
        "differs from its signed manifest in requirements_sha256": {**good, "requirements": "numpy==2.4.7\n"},
        "differs from its signed manifest in models": {**good, "models": {"m.onnx": "d" * 64}},
    }
    for message, args in refusals.items():
        with pytest.raises(release_mod.Refused, match=re.escape(message.strip())):
            release_mod.verify(keys["allowed"], **args)


def test_a_key_that_cannot_sign_is_named(tmp_path: Path) -> None:
    (tmp_path / "nokey").write_text("not a key")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"pi_kiosk_signing_key=.*nokey"):
        wheelhouse.sign("{}", tmp_path / "nokey")


def test_the_verified_manifest_is_kept_beside_the_release_once(tmp_path: Path) -> None:
    release = tmp_path / "0.2.0-abc"
    release.mkdir()
    assert release_mod.keep_manifest(release, '{"release": "0.2.0-abc"}\n', "SIG1") is True
    # Signed again (ECDSA signatures differ each time): the same manifest is no change.
    assert release_mod.keep_manifest(release, '{"release": "0.2.0-abc"}\n', "SIG2") is False
    assert (release / "manifest.json.sig").read_text() == "SIG1"
    assert release_mod.keep_manifest(release, '{"release": "0.2.0-abc", "models": {}}\n', "SIG3") is True
    assert (release / "manifest.json.sig").read_text() == "SIG3"


def run_files_module(tmp: Path, check: bool = False, diff: bool = True, **params: Any) -> dict[str, Any]:
    args = tmp / "args.json"
    params = {**params, "_ansible_check_mode": check, "_ansible_diff": diff}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    proc = subprocess.run([sys.executable, str(ROLE / "library/pi_kiosk_files.py"), str(args)],
                          capture_output=True, text=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_the_layout_is_made_in_one_call_and_check_mode_and_diff_tell_the_truth(tmp_path: Path) -> None:
    import grp
    import pwd
    me = {"owner": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name}
    etc = tmp_path / "etc"
    params = {"directories": [{"path": str(etc / "sub"), **me, "mode": "0750"}],
              "files": [{"path": str(etc / "sub/config.toml"), "content": "threshold = 0.4\n", **me, "mode": "0640"},
                        {"path": str(etc / "gone"), "state": "absent"}],
              "secret_files": [{"path": str(etc / "sub/token"), "content": "s3cret-token", **me, "mode": "0600"}]}
    (tmp_path / "etc").mkdir()
    (etc / "gone").write_text("old")

    preview = run_files_module(tmp_path, check=True, **params)
    assert preview["changed"] and not (etc / "sub").exists() and (etc / "gone").exists()
    assert [d["after"] for d in preview["diff"]] == ["threshold = 0.4\n"]
    assert "s3cret-token" not in json.dumps(preview)

    sub, config, token = etc / "sub", etc / "sub/config.toml", etc / "sub/token"
    made = run_files_module(tmp_path, **params)
    assert made["changed_paths"] == [str(sub), str(config), str(etc / "gone"), str(token)]
    assert token.read_text() == "s3cret-token" and not (etc / "gone").exists()
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in (sub, config, token)} == {
        "sub": "0o750", "config.toml": "0o640", "token": "0o600"}
    assert "s3cret-token" not in json.dumps(made)

    assert run_files_module(tmp_path, **params)["changed"] is False
    (etc / "sub/token").chmod(0o644)
    params["files"][0]["content"] = "threshold = 0.45\n"
    again = run_files_module(tmp_path, check=True, **params)
    assert again["changed_paths"] == [str(config), str(token)]
    assert again["diff"] == [{"before_header": str(config), "after_header": str(config),
                              "before": "threshold = 0.4\n", "after": "threshold = 0.45\n"}]
    assert oct(token.stat().st_mode & 0o777) == "0o644"


gate: ModuleType = load_module(ROLE / "library/pi_kiosk_gate.py")


@pytest.mark.parametrize(("unit_state", "expected"), [
    # After an OS upgrade on a Pi that never had a kiosk: nothing to hold to its health.
    ({"LoadState": "not-found", "UnitFileState": "", "ActiveState": "inactive"}, {"installed": False}),
    # Enabled but still starting after the reboot: held to its health like a deployed release.
    ({"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "activating"}, {"installed": True, "held": 1}),
    ({"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "failed"}, {"installed": True, "held": 1}),
])
def test_watch_holds_an_installed_kiosk_and_passes_a_pi_without_one(
        monkeypatch: pytest.MonkeyPatch, unit_state: dict[str, str], expected: dict[str, Any]) -> None:
    monkeypatch.setattr(gate, "show", lambda unit, *props: unit_state)
    monkeypatch.setattr(gate, "hold", lambda *args: {"held": 1})
    assert gate.watch("pi-kiosk.service", "http://127.0.0.1:9108", 60, 30) == expected


@pytest.mark.parametrize("active", ["inactive", "failed"])
def test_watch_fails_at_once_a_kiosk_that_nothing_starts(monkeypatch: pytest.MonkeyPatch, active: str) -> None:
    monkeypatch.setattr(gate, "show", lambda unit, *props: {"LoadState": "loaded", "UnitFileState": "disabled",
                                                            "ActiveState": active})
    monkeypatch.setattr(gate, "why", lambda unit: "[result exit-code]")
    monkeypatch.setattr(gate, "hold", lambda *args: pytest.fail("a kiosk that nothing starts was waited for"))
    with pytest.raises(gate.GateError) as err:
        gate.watch("pi-kiosk.service", "http://127.0.0.1:9108", 60, 30)
    assert (err.value.phase, err.value.reason) == (
        "ready", f"pi-kiosk.service is {active} and not enabled (nothing starts it): [result exit-code]")
