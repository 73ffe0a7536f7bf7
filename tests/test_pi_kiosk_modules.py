"""The pi_kiosk role's modules, run here on temporary directories: what goes live, what is committed,
what a rollback picks, what pruning keeps, what the controller packs for a Pi."""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from conftest import COLLECTIONS, ROOT, STORE, QuietHandler, load_module, serving

ROLE = ROOT / "roles/pi_kiosk"
store_mod: ModuleType = importlib.import_module(STORE)
switch: ModuleType = load_module(ROOT / "plugins/modules/pi_kiosk_switch.py")
release_mod: ModuleType = load_module(ROOT / "plugins/modules/pi_kiosk_release.py")
wheelhouse: ModuleType = load_module(ROOT / "plugins/modules/pi_kiosk_wheelhouse.py")


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
        (self.candidates / "config.toml").write_text(f'{config}\nmodel_path = "{self.models}/{model}.onnx"\n')
        (self.candidates / "unit").write_text("[Service]\n")
        return {str(self.etc / "config.toml"): str(self.candidates / "config.toml"),
                str(self.etc / "unit"): str(self.candidates / "unit")}

    def deploy(self, name: str, config: str, keep: int = 2, commit: bool = True) -> dict[str, Any]:
        result = switch.go_live(self.store, name, self.files(config), check=False)
        if commit:
            switch.commit(self.store, keep, [self.models], check=False)
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


def test_rollbacks_go_down_the_history_and_a_release_rolled_back_from_is_not_good_again(area: Area) -> None:
    """Issue 27: with A, B, C committed two rollbacks went C -> B -> C, and a failed deploy after a rollback to B fell
    back to C, the release the operator had left. A rollback moves down the history, its target taking the top."""
    for name in ("0.2.0-a", "0.2.0-b", "0.2.0-c"):
        area.release(name)
        area.deploy(name, f"# {name}", keep=3)
    back = [switch.roll_back(area.store, "", "rollback requested", "", check=False) for _ in range(2)]
    assert [(r["previous"]["release"], r["deployment"]["release"]) for r in back] == [
        ("0.2.0-c", "0.2.0-b"), ("0.2.0-b", "0.2.0-a")]
    assert back[0]["left_history"] == ["0.2.0-c"]
    with pytest.raises(ValueError, match="no committed deployment to roll back to"):
        switch.roll_back(area.store, "", "rollback requested", "", check=False)
    # B again, then a failed D: the fallback is B, never C.
    area.deploy("0.2.0-b", "# 0.2.0-b", keep=3)
    area.release("0.2.0-d")
    area.deploy("0.2.0-d", "# d", commit=False)
    assert switch.roll_back(area.store, "", "health", "no frames", check=False)["deployment"]["release"] == "0.2.0-b"
    assert [d["release"] for d in area.store.read_state()["committed"]] == ["0.2.0-a", "0.2.0-b"]


def test_keep_counts_code_releases_not_configuration_changes(area: Area) -> None:
    area.release("0.2.0-a")
    area.deploy("0.2.0-a", "# a", keep=2)
    area.release("0.2.0-b")
    for n in range(3):
        area.deploy("0.2.0-b", f"# b, threshold {n}", keep=2)
    assert area.store.release_complete("0.2.0-a"), "three configuration changes pruned the previous code release"
    assert [d["release"] for d in area.store.read_state()["committed"]] == ["0.2.0-a"] + ["0.2.0-b"] * 3


def test_with_keep_1_a_rollback_still_goes_back_once(area: Area) -> None:
    for name in ("0.2.0-a", "0.2.0-b"):
        area.release(name)
        area.deploy(name, f"# {name}", keep=1)
    assert switch.roll_back(area.store, "", "rollback requested", "", check=False)["deployment"]["release"] == "0.2.0-a"
    switch.commit(area.store, 1, [area.models], check=False)
    assert sorted(p.name for p in area.store.releases.iterdir()) == ["0.2.0-a"]  # b was rolled back from: pruned


def test_no_rollback_restores_a_rotated_away_token_and_no_token_is_kept(area: Area, tmp_path: Path) -> None:
    """Issue 27: the token was part of the history, so a rollback brought back a revoked one (and state.json, readable
    by all, held its unsalted sha256)."""
    token = tmp_path / "etc" / "token"
    secret_store = store_mod.Store(area.store.root, secrets=[str(token)])

    def deploy(name: str, secret: str) -> None:
        area.release(name)
        (area.candidates / "token").write_text(secret)
        files = {**area.files(f"# {name}"), str(token): str(area.candidates / "token")}
        switch.go_live(secret_store, name, files, check=False)
        switch.commit(secret_store, 3, [area.models], check=False)

    deploy("0.2.0-a", "old-token")
    deploy("0.2.0-b", "new-token")
    back = switch.roll_back(secret_store, "", "rollback requested", "", check=False)
    assert back["deployment"]["release"] == "0.2.0-a"
    assert token.read_text() == "new-token"
    state_text = area.store.state_path.read_text()
    assert str(token) not in state_text and sha(b"old-token") not in state_text and sha(b"new-token") not in state_text
    assert not list(area.store.files.glob(sha(b"old-token"))) and not list(area.store.files.glob(sha(b"new-token")))
    assert oct(area.store.state_path.stat().st_mode & 0o777) == "0o600"
    assert oct(area.store.files.stat().st_mode & 0o777) == "0o700"


def test_a_live_deployment_never_gated_is_gated_on_the_next_run(area: Area) -> None:
    """Issue 27: SSH lost after the switch left the new release live and uncommitted; the next run saw nothing to
    change and skipped the gate. The switch says the live deployment is uncommitted, until it is committed."""
    area.release("0.2.0-a")
    area.deploy("0.2.0-a", "# a")
    area.release("0.2.0-b")
    files = area.files("# b")
    assert switch.go_live(area.store, "0.2.0-b", files, check=False)["uncommitted"] is False
    again = switch.go_live(area.store, "0.2.0-b", files, check=True)  # the next run's compare
    assert again["changed"] is False and again["uncommitted"] is True
    switch.commit(area.store, 2, [area.models], check=False)
    assert switch.go_live(area.store, "0.2.0-b", files, check=True)["uncommitted"] is False


def test_a_switch_cut_short_is_known_to_the_next_run_and_undone_by_a_rollback(
        area: Area, monkeypatch: pytest.MonkeyPatch) -> None:
    """A switch that stopped part way (power lost between two files) leaves its intent in state.json: the next run
    completes it (and gates it), or a rollback restores every file and the link of the last known good."""
    area.release("0.2.0-a")
    area.deploy("0.2.0-a", "# a")
    area.release("0.2.0-b")
    files = area.files("# b")
    real = switch.install_copy

    def cut(src: Path, dest: Path) -> None:  # the file goes live, then the power goes (before the release link)
        real(src, dest)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(switch, "install_copy", cut)
    with pytest.raises(OSError):
        switch.go_live(area.store, "0.2.0-b", files, check=False)
    monkeypatch.setattr(switch, "install_copy", real)
    state = area.store.read_state()
    assert state["switching"]["release"] == "0.2.0-b" and state["live"]["release"] == "0.2.0-a"
    assert (area.etc / "config.toml").read_text().startswith("# b")  # the file went live, the release did not
    assert os.readlink(area.store.current) == "releases/0.2.0-a"
    preview = switch.go_live(area.store, "0.2.0-b", files, check=True)
    assert preview["changed"] and preview["interrupted"]
    back = switch.roll_back(area.store, "", "switch", "No space left on device", check=False)
    assert back["changed"] and back["deployment"]["release"] == "0.2.0-a"
    assert (area.etc / "config.toml").read_text().startswith("# a")
    assert os.readlink(area.store.current) == "releases/0.2.0-a"
    assert area.store.read_state()["switching"] is None
    done = switch.go_live(area.store, "0.2.0-b", files, check=False)
    assert done["changed"] and not done["interrupted"] and area.store.read_state()["switching"] is None


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
    switch.commit(area.store, 2, [area.models], check=False)
    (area.store.wheels / "w-keep").mkdir()  # arrive with release 2
    (area.models / f"{'b' * 64}.onnx").write_text("kept model")
    for n in (2, 3):
        area.release(f"0.2.0-{n}", ["w-keep"])
        switch.go_live(area.store, f"0.2.0-{n}", area.files(f"# {n}", model="b" * 64), check=False)
        switch.commit(area.store, 2, [area.models], check=False)
    # A failed release neither takes a keep slot nor survives the next prune.
    area.release("0.2.0-failed", ["w-keep"])
    area.deploy("0.2.0-failed", "# failed", commit=False)
    switch.roll_back(area.store, "", "smoke test", "boom", check=False)
    result = switch.commit(area.store, 2, [area.models], check=False)
    assert sorted(p.name for p in area.store.releases.iterdir()) == ["0.2.0-2", "0.2.0-3"]
    assert result["pruned"]["releases"] == ["0.2.0-failed"]
    assert sorted(p.name for p in area.store.wheels.iterdir()) == ["w-keep"]
    assert [p.name for p in area.models.iterdir()] == [f"{'b' * 64}.onnx"]
    assert os.readlink(area.store.current) == "releases/0.2.0-3"


def test_pruning_with_keep_1_keeps_the_last_known_good_older_than_the_kept_one(area: Area) -> None:
    """README: pruning never removes the live or the last known good deployment (the one a rollback takes), nor
    what they use; with keep=1 the kept one is the live one, and the last known good is older than it."""
    def deploy(name: str, model: str) -> dict[str, Any]:
        (area.store.wheels / f"w-{name}").mkdir(parents=True)
        (area.store.wheels / f"w-{name}" / f"{name}-py3-none-any.whl").write_text(name)
        (area.models / f"{model}.onnx").write_text(name)
        area.release(name, [f"w-{name}"])
        switch.go_live(area.store, name, area.files(f"# {name}", model=model), check=False)
        result: dict[str, Any] = switch.commit(area.store, 1, [area.models], check=False)
        assert os.readlink(area.store.current) == f"releases/{name}" and area.store.release_complete(name)
        return result

    def kept() -> tuple[list[str], list[str], list[str]]:
        committed = {d["release"]: d for d in area.store.read_state()["committed"]}
        releases = sorted(p.name for p in area.store.releases.iterdir())
        # The stored files are those of the kept deployments (config and unit), no more, no fewer.
        assert {p.name for p in area.store.files.iterdir()} == {
            sha for r in releases for sha in committed[r]["files"].values()}
        return releases, area.store.wheel_hashes(), sorted(p.name for p in area.models.iterdir())

    deploy("0.2.0-a", "a" * 64)
    assert deploy("0.2.0-b", "b" * 64)["pruned"] == {"releases": [], "files": [], "wheels": [], "models": []}
    assert kept() == (["0.2.0-a", "0.2.0-b"], ["w-0.2.0-a", "w-0.2.0-b"], [f"{'a' * 64}.onnx", f"{'b' * 64}.onnx"])
    # The next deploy makes b the last known good: a goes, with its wheel, model and files.
    assert deploy("0.2.0-c", "c" * 64)["pruned"]["releases"] == ["0.2.0-a"]
    assert kept() == (["0.2.0-b", "0.2.0-c"], ["w-0.2.0-b", "w-0.2.0-c"], [f"{'b' * 64}.onnx", f"{'c' * 64}.onnx"])
    # What was kept is what a rollback needs: b comes back, byte for byte.
    assert switch.roll_back(area.store, "", "rollback requested", "", check=False)["deployment"]["release"] == "0.2.0-b"
    assert (area.etc / "config.toml").read_text() == f"# 0.2.0-b\nmodel_path = \"{area.models}/{'b' * 64}.onnx\"\n"


def test_pruning_never_follows_a_link_the_service_user_placed(area: Area, tmp_path: Path) -> None:
    """Issue 27: the service user owns its state directory; it renames the models directory kept there and links a
    directory of root's in its place. Root's prune must neither list nor delete through that link."""
    state = tmp_path / "var-lib-pi-kiosk"
    state.mkdir()
    state.chmod(0o777)  # writable by others than root (as the service user's own directory is for root)
    victim = tmp_path / "root-only"
    victim.mkdir()
    (victim / "precious").write_text("root's")
    retired = state / "models"
    retired.symlink_to(victim)
    area.release("0.2.0-1")
    area.deploy("0.2.0-1", "# 1")
    result = switch.commit(area.store, 2, [area.models, retired], check=False)
    assert (victim / "precious").read_text() == "root's"
    assert result["pruned"]["models"] == [str(retired)] and not retired.is_symlink()  # the link itself went
    # The models directory itself a link where anyone could have placed it: refused, nothing removed.
    current = state / "current-models"
    current.symlink_to(victim)
    with pytest.raises(store_mod.UnsafePath, match=f"{current} is a symlink that a user other than root"):
        switch.commit(area.store, 2, [current], check=False)
    with pytest.raises(store_mod.UnsafePath, match="refusing to follow it as root"):
        store_mod.remove_tree(current / "precious")
    assert (victim / "precious").read_text() == "root's"


def test_a_link_root_made_in_roots_directory_is_followed(area: Area, tmp_path: Path) -> None:
    """An operator's own link (root's, in a directory only root can change: /opt/pi-kiosk on a bigger disk) works."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the suite runs as root): a link root made is what it checks")
    roots = tmp_path / "roots"
    roots.mkdir(mode=0o755)
    target = tmp_path / "disk" / "models"
    target.mkdir(parents=True)
    (target / "unused.onnx").write_text("x")
    (roots / "models").symlink_to(target)
    area.release("0.2.0-1")
    area.deploy("0.2.0-1", "# 1")
    assert switch.commit(area.store, 2, [roots / "models"], check=False)["pruned"]["models"] == [
        str(roots / "models" / "unused.onnx")]
    assert list(target.iterdir()) == []


def test_models_move_out_of_the_retired_directory_as_their_deployments_go(area: Area, tmp_path: Path) -> None:
    """Deployments of earlier versions name models in the retired directory: they stay while those deployments are
    kept (a rollback needs them), then go, and the retired directory with them."""
    retired = tmp_path / "retired"
    retired.mkdir()
    (retired / f"{'a' * 64}.onnx").write_text("old")
    old = area.files("# old")
    Path(old[str(area.etc / "config.toml")]).write_text(f'# old\nmodel_path = "{retired}/{"a" * 64}.onnx"\n')
    area.release("0.1.0")
    switch.go_live(area.store, "0.1.0", old, check=False)
    switch.commit(area.store, 1, [area.models, retired], check=False)
    (area.models / f"{'b' * 64}.onnx").write_text("new")
    for name in ("0.2.0-1", "0.2.0-2"):
        area.release(name)
        switch.go_live(area.store, name, area.files(f"# {name}", model="b" * 64), check=False)
        pruned = switch.commit(area.store, 1, [area.models, retired], check=False)["pruned"]["models"]
        # After the first: 0.1.0 is the last known good, its model stays; after the second it goes.
        assert retired.exists() == (name == "0.2.0-1")
    assert pruned == [f"{retired}/{'a' * 64}.onnx", str(retired)]
    assert [p.name for p in area.models.iterdir()] == [f"{'b' * 64}.onnx"]


def test_the_switch_renames_the_files_and_current_into_place(
        area: Area, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: the switch is atomic renames of the files and of `current`. A reader never finds them missing or
    partial during many switches; nothing removes them (to create them again); and each switch gives a file a new
    inode while a reader holding the old one still reads it whole (a file rewritten in place would change under it)."""
    contents = {}
    candidates = {}
    for name, fill in (("0.2.0-a", b"a"), ("0.2.0-b", b"b")):
        area.release(name)
        base = tmp_path / f"candidate-{name}"
        base.mkdir()
        contents[name] = {"config.toml": b"# " + name.encode() + b"\n" + fill * 400_000,
                          "unit": b"[Service]\n# " + name.encode() + b"\n" + fill * 50_000}
        for file, data in contents[name].items():
            (base / file).write_bytes(data)
        candidates[name] = {str(area.etc / file): str(base / file) for file in contents[name]}
    switch.go_live(area.store, "0.2.0-a", candidates["0.2.0-a"], check=False)
    wholes = {file: {contents[n][file] for n in contents} for file in ("config.toml", "unit")}
    problems: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                target = os.readlink(area.store.current)
                if target not in ("releases/0.2.0-a", "releases/0.2.0-b"):
                    problems.append(f"current -> {target}")
            except FileNotFoundError:
                problems.append("current missing")
            for file, whole in wholes.items():
                try:
                    data = (area.etc / file).read_bytes()
                except FileNotFoundError:
                    problems.append(f"{file} missing")
                    continue
                if data not in whole:
                    problems.append(f"{file} partial ({len(data)} bytes)")
            reads += 1

    live = {str(area.store.current), *(str(area.etc / file) for file in wholes)}
    removed: list[str] = []

    def spy(real: Any) -> Any:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(path) in live:
                removed.append(os.fspath(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "unlink", spy(os.unlink))
    monkeypatch.setattr(os, "remove", spy(os.remove))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(60):
            name, old = ("0.2.0-b", "0.2.0-a") if n % 2 == 0 else ("0.2.0-a", "0.2.0-b")
            before = {file: ((area.etc / file).stat().st_ino, (area.etc / file).open("rb")) for file in wholes}
            assert switch.go_live(area.store, name, candidates[name], check=False)["release_switched"]
            for file, (inode, held) in before.items():
                with held:
                    assert (area.etc / file).stat().st_ino != inode, f"{file} was rewritten in place, not renamed"
                    assert held.read() == contents[old][file], f"{file} changed under a reader holding it open"
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert not removed, f"the switch removed {sorted(set(removed))} (to create them again)"
    assert not problems, f"{len(problems)} of {reads} reads saw: {sorted(set(problems))}"
    assert reads > 60, "the reader did not run during the switches"


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


def test_a_kiosk_wheel_tampered_with_in_the_controllers_cache_is_refused_by_the_pi(area: Area, tmp_path: Path) -> None:
    """The wheelhouse hands out the sha256 a wheel had when it was built, not the cached file's (molecule/fleet
    tampers with the cache the same way): the Pi checks what it receives against it and refuses the wheel."""
    built = wheelhouse.local_wheel(ROOT / "files/kiosk", tmp_path / "cache")
    wheel = Path(built["path"])
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    again = wheelhouse.local_wheel(ROOT / "files/kiosk", tmp_path / "cache")
    assert again["path"] == built["path"], "the cache entry is keyed by the sources: not rebuilt"
    assert again["sha256"] == built["sha256"] != store_mod.sha256_file(wheel)
    packed = wheelhouse.pack([again], tmp_path / "cache")
    with pytest.raises(release_mod.Refused, match=re.escape(
            f"{again['file']}: sha256 {store_mod.sha256_file(wheel)} differs from the release's {built['sha256']}")):
        release_mod.ingest(area.store, Path(packed["tar"]), {again["file"]: again["sha256"]}, False)
    assert area.store.wheel_hashes() == [], "the tampered wheel went into the Pi's cache"


def test_the_wheelhouse_module_loads_by_its_path_alone_as_the_rollout_scenario_loads_it() -> None:
    """molecule/rollout/verify/tampered.yml imports pi_kiosk_wheelhouse.py by its path, outside Ansible: its
    sha256_file (the store's, the only one) still comes from the collection's module_utils."""
    assert wheelhouse.sha256_file is store_mod.sha256_file
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('wheelhouse', sys.argv[1])\n"
            "wheelhouse = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(wheelhouse)\n"
            "print(wheelhouse.sha256_file.__module__, wheelhouse.local_wheel.__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "plugins/modules/pi_kiosk_wheelhouse.py")],
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "pi_kiosk_store local_wheel\n"), proc.stderr


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


def run_module(name: str, tmp: Path, check: bool = False, diff: bool = True, **params: Any) -> dict[str, Any]:
    """Run one of the collection's modules as Ansible does: a Python of its own, the module_utils importable."""
    args = tmp / "args.json"
    params = {**params, "_ansible_check_mode": check, "_ansible_diff": diff}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    proc = subprocess.run([sys.executable, str(ROOT / f"plugins/modules/{name}.py"), str(args)],
                          env={**os.environ, "PYTHONPATH": str(COLLECTIONS)}, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run_files_module(tmp: Path, check: bool = False, diff: bool = True, **params: Any) -> dict[str, Any]:
    return run_module("pi_kiosk_files", tmp, check, diff, **params)


def tiny_wheel(store: Any, version: str = "1.0") -> dict[str, str]:
    """A wheel of one module, in the Pi's wheel cache as the controller would have sent it."""
    import base64
    import zipfile
    name = f"tiny-{version}-py3-none-any.whl"
    info = f"tiny-{version}.dist-info"
    files = {"tiny/__init__.py": b"VALUE = 1\n" + b"#" * 100 + b"\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: tiny\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path, data in {**files, f"{info}/RECORD": record.encode()}.items():
            zf.writestr(path, data)
    digest = sha(buffer.getvalue())
    store.wheel_path(digest, name).parent.mkdir(parents=True)
    store.wheel_path(digest, name).write_bytes(buffer.getvalue())
    return {"file": name, "sha256": digest}


def test_a_damaged_release_is_built_again_from_the_pis_wheel_cache(area: Area, tmp_path: Path) -> None:
    """Issue 27: a package deleted from a built release (a corrupt SD card) killed the kiosk, and every later deploy
    kept the release as it was. The release is checked against its wheels' RECORD and built again when damaged."""
    wheel = tiny_wheel(area.store)
    params = {"root": str(area.store.root), "release": "0.2.0-r", "python": sys.executable, "wheels": [wheel],
              "requirements": f"tiny==1.0 --hash=sha256:{wheel['sha256']}\n"}
    first = run_module("pi_kiosk_release", tmp_path, **params)
    assert first["built"] and first["damaged"] == [], first
    assert run_module("pi_kiosk_release", tmp_path, **params)["built"] is False
    module = next(area.store.release_dir("0.2.0-r").glob("lib/python3*/site-packages/tiny/__init__.py"))

    module.unlink()
    preview = run_module("pi_kiosk_release", tmp_path, check=True, **params)
    assert preview["changed"] and preview["built"] and not module.exists()
    repaired = run_module("pi_kiosk_release", tmp_path, **params)
    assert repaired["damaged"] == ["tiny/__init__.py: missing"] and repaired["built"] and module.is_file()

    # The same size, other bytes (a flipped bit): only the hashes see it.
    module.write_bytes(module.read_bytes().replace(b"VALUE = 1", b"VALUE = 2"))
    assert run_module("pi_kiosk_release", tmp_path, **params)["damaged"] == []
    assert run_module("pi_kiosk_release", tmp_path, verify="hashes", **params)["damaged"] == [
        "tiny/__init__.py: content differs from what was installed"]
    assert b"VALUE = 1" in module.read_bytes()

    shutil.rmtree(module.parent.parent / "tiny-1.0.dist-info")
    assert run_module("pi_kiosk_release", tmp_path, **params)["damaged"] == ["tiny 1.0: not installed"]


def test_a_damaged_cached_wheel_is_dropped_so_the_next_run_sends_it(area: Area, tmp_path: Path) -> None:
    wheel = tiny_wheel(area.store)
    params = {"root": str(area.store.root), "release": "0.2.0-r", "python": sys.executable, "wheels": [wheel],
              "requirements": f"tiny==1.0 --hash=sha256:{wheel['sha256']}\n"}
    assert run_module("pi_kiosk_release", tmp_path, **params)["built"]
    next(area.store.release_dir("0.2.0-r").glob("lib/python3*/site-packages/tiny/__init__.py")).unlink()
    cached = area.store.wheel_path(wheel["sha256"], wheel["file"])
    cached.write_bytes(cached.read_bytes()[:-10])
    failed = run_module("pi_kiosk_release", tmp_path, **params)
    assert failed["failed"] and f"Damaged in the Pi's wheel cache, removed (the next run sends them again): " \
        f"{wheel['file']}" in failed["msg"]
    assert not cached.parent.exists() and area.store.wheel_hashes() == []
    assert "It was the live release" not in failed["msg"]
    # The kept pip may be what is damaged: the next build makes it again.
    assert not area.store.pip.exists()


def test_one_kept_pip_installs_every_release_and_no_release_holds_one(area: Area, tmp_path: Path) -> None:
    """ensurepip cost each build 35 s of an emulated Pi's 95: the pip is made once in ROOT/pip and installs into
    each release."""
    wheel = tiny_wheel(area.store)
    params = {"root": str(area.store.root), "python": sys.executable, "wheels": [wheel],
              "requirements": f"tiny==1.0 --hash=sha256:{wheel['sha256']}\n"}
    marker = area.store.pip / ".pi-kiosk-release"
    made = None
    for release in ("0.2.0-a", "0.2.0-b"):
        assert run_module("pi_kiosk_release", tmp_path, release=release, **params)["built"]
        path = area.store.release_dir(release)
        assert subprocess.run([path / "bin/python", "-c", "import tiny"]).returncode == 0
        assert not list(path.glob("lib/python3*/site-packages/pip")) and not (path / "bin/pip").exists()
        assert marker.read_text() == os.path.realpath(sys.executable) + "\n"
        assert made in (None, marker.stat().st_ino)  # the second build used the pip the first one made
        made = marker.stat().st_ino


def test_the_kept_pip_is_made_again_for_another_interpreter_or_when_incomplete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = release_mod.Store(tmp_path)
    made: list[list[str]] = []

    def make(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
        made.append(argv)
        (Path(argv[-1]) / "bin").mkdir(parents=True)
        (Path(argv[-1]) / "bin/python").touch()

    monkeypatch.setattr(release_mod, "run", make)
    assert release_mod.pip_tool(store, sys.executable) == [str(store.pip / "bin/python"), "-m", "pip"]
    release_mod.pip_tool(store, sys.executable)
    assert made == [[sys.executable, "-m", "venv", str(store.pip)]]
    (store.pip / ".pi-kiosk-release").write_text("/usr/bin/python3.9\n")  # an OS upgrade changed the interpreter
    release_mod.pip_tool(store, sys.executable)
    (store.pip / ".pi-kiosk-release").unlink()  # a making cut short before its marker
    release_mod.pip_tool(store, sys.executable)
    (store.pip / "bin/python").unlink()  # a damaged card
    release_mod.pip_tool(store, sys.executable)
    assert len(made) == 4


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


def test_the_diff_never_shows_a_cameras_password(tmp_path: Path) -> None:
    """Issue 27: an rtsp camera's credentials appeared in --diff."""
    config = tmp_path / "config.toml"
    config.write_text('source = "rtsp://admin:old-secret@10.0.0.5/stream"\n')
    new = 'source = "rtsp://admin:new-secret@10.0.0.5/stream"\nsnapshot = "http://cam/snap.cgi?user=u&pwd=q-secret"\n'
    preview = run_files_module(tmp_path, check=True, files=[{"path": str(config), "content": new, "mode": "0640"}])
    assert [(d["before"], d["after"]) for d in preview["diff"]] == [
        ('source = "rtsp://admin:********@10.0.0.5/stream"\n',
         'source = "rtsp://admin:********@10.0.0.5/stream"\nsnapshot = "http://cam/snap.cgi?user=u&pwd=********"\n')]
    assert not {"old-secret", "new-secret", "q-secret"} & set(re.findall(r"[a-z]+-secret", json.dumps(preview)))


def test_a_link_where_a_directory_is_expected_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """Issue 27: a directory the layout sets the owner and mode of, replaced by a link anyone could have placed:
    refused with its name, the link's target keeps its mode."""
    open_to_all = tmp_path / "state"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    target = tmp_path / "root-only"
    target.mkdir(mode=0o700)
    (open_to_all / "models").symlink_to(target)
    result = run_files_module(tmp_path, directories=[{"path": str(open_to_all / "models"), "mode": "0755"}])
    assert result["failed"] and "is a symlink that a user other than root could have placed" in result["msg"]
    assert oct(target.stat().st_mode & 0o777) == "0o700"


gate: ModuleType = load_module(ROOT / "plugins/modules/pi_kiosk_gate.py")
UNIT = "pi-kiosk.service"
FAKE_SYSTEMCTL = """
import json, os, sys
state = json.load(open(os.environ["FAKE_SYSTEMD_STATE"]))
with open(os.environ["FAKE_SYSTEMD_STATE"] + ".calls", "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
if os.path.basename(sys.argv[0]) == "journalctl":
    invocation = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("_SYSTEMD_INVOCATION_ID="))
    print("\\n".join(state.get("journal", {}).get(invocation, [])))
elif sys.argv[1] == "show":
    unit = state["units"].get(sys.argv[2], {"LoadState": "not-found", "ActiveState": "inactive"})
    for arg in sys.argv[3:]:
        prop = arg.removeprefix("--property=")
        print(f"{prop}={unit.get(prop, '')}")
"""


class FakeSystemd:
    """systemctl and journalctl on PATH, answering from a state the test sets (and changes while the gate runs)."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name in ("systemctl", "journalctl"):
            (bin_dir / name).write_text(f"#!{sys.executable} -S\n{FAKE_SYSTEMCTL}")
            (bin_dir / name).chmod(0o755)
        self.path = tmp / "systemd.json"
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_SYSTEMD_STATE", str(self.path))
        self.set(units={})

    def set(self, **state: Any) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)

    def later(self, seconds: float, **state: Any) -> threading.Timer:
        timer = threading.Timer(seconds, self.set, kwargs=state)
        timer.start()
        return timer

    def calls(self) -> list[list[str]]:
        log = Path(f"{self.path}.calls")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> set[str]:
        """What systemctl was asked to do besides reading (start, restart, enable, ...)."""
        return {c[1] for c in self.calls() if c[0] == "systemctl" and c[1] != "show"}


class FakeKiosk:
    """The kiosk's /healthz and /metrics on 127.0.0.1: the frames counter rises by one per /metrics read unless the
    camera is stuck."""

    def __init__(self) -> None:
        self.healthz: dict[str, Any] = {"status": "ok", "version": "0.2.0", "threads": 4, "delivery": "ok",
                                        "seconds_since_last_frame": 0.1}
        self.frames = 7.0
        self.stuck = False
        self.requests: list[str] = []
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.path == "/metrics":
                    owner.frames += 0 if owner.stuck else 1
                    self.reply(200, f"# TYPE kiosk_frames_total counter\nkiosk_frames_total {owner.frames}\n".encode(),
                               "text/plain; version=0.0.4")
                else:
                    self.reply(200, json.dumps(owner.healthz).encode())

        self.handler = Handler
        self.url = ""


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    # The gate polls every 2 s on a Pi; the fake answers at once.
    monkeypatch.setattr(gate, "POLL_SECONDS", 0.2)
    return FakeSystemd(tmp_path, monkeypatch)


@pytest.fixture
def kiosk() -> Iterator[FakeKiosk]:
    fake = FakeKiosk()
    with serving(fake.handler) as fake.url:
        yield fake


def test_watch_passes_a_pi_without_a_kiosk(systemd: FakeSystemd, kiosk: FakeKiosk) -> None:
    assert gate.watch(UNIT, kiosk.url, 60, 30) == {"installed": False}
    assert systemd.commands() == set() and kiosk.requests == []


def test_watch_holds_a_kiosk_still_starting_after_a_reboot_to_its_health_without_restarting_it(
        systemd: FakeSystemd, kiosk: FakeKiosk) -> None:
    starting = {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "activating",
                "SubState": "start", "NRestarts": "0", "MainPID": "4242"}
    systemd.set(units={UNIT: starting})
    systemd.later(1.5, units={UNIT: {**starting, "ActiveState": "active", "SubState": "running"}})
    result = gate.watch(UNIT, kiosk.url, 30, 1)
    assert result["installed"] is True and result["ready_seconds"] >= 1.0
    assert result["frames"] >= 1 and result["fps"] > 0 and result["healthz"]["version"] == "0.2.0"
    assert set(result) <= set(yaml.safe_load(gate.RETURN)), "a key the module's RETURN does not document"
    assert "/healthz" in kiosk.requests and "/metrics" in kiosk.requests
    assert systemd.commands() == set(), "watch restarted, started or reloaded the kiosk"


def test_watch_fails_an_enabled_kiosk_that_systemd_gave_up_on(systemd: FakeSystemd, kiosk: FakeKiosk) -> None:
    systemd.set(units={UNIT: {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "failed",
                              "Result": "start-limit-hit", "InvocationID": "inv1"}},
                journal={"inv1": ["Starting the kiosk", "pi-kiosk: cannot open the camera /dev/video0"]})
    with pytest.raises(gate.GateError) as err:
        gate.watch(UNIT, kiosk.url, 30, 1)
    assert (err.value.phase, err.value.reason) == (
        "ready", f"{UNIT} failed: pi-kiosk: cannot open the camera /dev/video0 [result start-limit-hit]")
    assert kiosk.requests == [] and systemd.commands() == set()


@pytest.mark.parametrize("active", ["inactive", "failed"])
def test_watch_fails_at_once_a_kiosk_that_nothing_starts(systemd: FakeSystemd, kiosk: FakeKiosk, active: str) -> None:
    systemd.set(units={UNIT: {"LoadState": "loaded", "UnitFileState": "disabled", "ActiveState": active,
                              "Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "1"}})
    start = time.monotonic()
    with pytest.raises(gate.GateError) as err:
        gate.watch(UNIT, kiosk.url, 5, 1)
    assert (err.value.phase, err.value.reason) == (
        "ready", f"{UNIT} is {active} and not enabled (nothing starts it): [result exit-code, exit status 1]")
    assert time.monotonic() - start < 4, "a kiosk that nothing starts was waited for"
    assert kiosk.requests == [] and systemd.commands() == set()


def test_the_gate_fails_a_kiosk_restarted_during_its_window(systemd: FakeSystemd, kiosk: FakeKiosk) -> None:
    running = {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "active", "NRestarts": "0",
               "MainPID": "100", "Result": "success"}
    systemd.set(units={UNIT: running})
    systemd.later(0.8, units={UNIT: {**running, "NRestarts": "1", "MainPID": "101", "Result": "watchdog"}})
    with pytest.raises(gate.GateError) as err:
        gate.hold(UNIT, kiosk.url, 30, 3, "0.2.0")
    assert (err.value.phase, err.value.reason) == ("stability", f"{UNIT} restarted during the 3 s window: "
                                                                "[result watchdog]")


def test_the_gate_fails_a_kiosk_that_processes_no_frames_or_runs_another_version(
        systemd: FakeSystemd, kiosk: FakeKiosk) -> None:
    systemd.set(units={UNIT: {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "active",
                              "NRestarts": "0", "MainPID": "100"}})
    kiosk.stuck = True
    with pytest.raises(gate.GateError) as err:
        gate.hold(UNIT, kiosk.url, 30, 1, "0.2.0")
    assert (err.value.phase, err.value.reason) == (
        "health", "no frames processed during the 1 s window (kiosk_frames_total 7.0 -> 7.0): "
                  "is the camera delivering?")
    kiosk.stuck = False
    with pytest.raises(gate.GateError, match=r"^health: /healthz reports version 0\.2\.0, the release is 0\.3\.0$"):
        gate.hold(UNIT, kiosk.url, 30, 1, "0.3.0")
    # The same kiosk, healthy and of the expected version, passes.
    assert gate.hold(UNIT, kiosk.url, 30, 1, "0.2.0")["frames"] >= 1


def test_the_module_reports_the_phase_and_reason_the_role_records(systemd: FakeSystemd, tmp_path: Path) -> None:
    """Run as Ansible runs it: a failed gate's result carries phase and reason (the role's rescue reads them)."""
    systemd.set(units={UNIT: {"LoadState": "loaded", "UnitFileState": "disabled", "ActiveState": "inactive",
                              "Result": "success"}})
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"mode": "watch", "unit": UNIT, "timeout": 5, "window": 1}}))
    proc = subprocess.run([sys.executable, str(ROOT / "plugins/modules/pi_kiosk_gate.py"), str(args)],
                          capture_output=True, text=True)
    result = json.loads(proc.stdout)
    assert result["failed"] and (result["phase"], result["reason"]) == (
        "ready", f"{UNIT} is inactive and not enabled (nothing starts it): [result success]")
