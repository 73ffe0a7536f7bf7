"""Commands that write the service's files refuse root; those that do not still run as root."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from kioskcli import NOBODY, cli_as_root

from pi_kiosk import cli
from pi_kiosk.outbox import Outbox


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file and directory under `root`, with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


CACHE = "the model cache (embedder.cache_dir)"
OUTBOX = "the outbox database (outbox.path) and its -wal and -shm files"
# Each command that writes the service's state or cache: its words, its name, what it says it writes.
WRITERS = {
    "run": (["run"], "run", f"the outbox, the gallery cache and {CACHE}"),
    "check": (["check"], "check", f"{CACHE} and the outbox's -wal and -shm files"),
    "check --offline": (["check", "--offline"], "check", f"{CACHE} and the outbox's -wal and -shm files"),
    "enroll": (["enroll", "--id", "E001", "photo.jpg"], "enroll", f"sync.enrolled_path and {CACHE}"),
    "outbox list": (["outbox", "list"], "outbox list", OUTBOX),
    "outbox requeue": (["outbox", "requeue", "KEY"], "outbox requeue", OUTBOX),
    "bench": (["bench"], "bench", CACHE),
}


@pytest.mark.parametrize(("words", "command", "writes"), WRITERS.values(), ids=WRITERS.keys())
def test_commands_that_write_the_services_files_refuse_root(
        as_root: None, write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        words: list[str], command: str, writes: str) -> None:
    state = tmp_path / "state"
    cfg = write_config(outbox={"path": str(state / "outbox.sqlite3")})
    Outbox(state / "outbox.sqlite3").close()  # the service's, so that the outbox commands would open it
    os.chown(state, NOBODY, NOBODY)  # the service's user owns its state directory
    before = snapshot(tmp_path)
    argv = [*words, "--config", str(cfg)]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"pi-kiosk: {command}: refusing to run as root: it writes {writes}, which must stay "
                   f"the service user's; run it as that user: runuser -u nobody -- pi-kiosk {' '.join(argv)}\n")
    assert snapshot(tmp_path) == before  # nothing written: no model cache, no -wal, no enrollment


def test_without_a_readable_state_directory_the_user_is_a_placeholder(
        as_root: None, write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["enroll", "--config", str(write_config()), "--id", "E1", "a.jpg"]) == 1
    assert "run it as that user: runuser -u SERVICE-USER -- pi-kiosk enroll --config " in capsys.readouterr().err


def test_commands_that_write_only_their_output_run_as_root(as_root: None, write_config: Callable[..., Path],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config()
    assert cli.main(["check", "--config-only", "--config", str(cfg)]) == 0  # the config validator
    assert capsys.readouterr().out == f"ok: config {cfg}\n"
    model = tmp_path / "out" / "synthetic.onnx"
    assert cli.main(["synthetic-model", "--arch", "mobilefacenet", "--dim", "128", str(model)]) == 0
    assert model.is_file()
    assert not (tmp_path / "cache").exists()  # no service cache touched


def test_the_deploy_smoke_test_refuses_a_real_root(write_config: Callable[..., Path], tmp_path: Path) -> None:
    """Not mocked: `pi-kiosk check` run by root itself (the tests run as root, as CI does)."""
    assert os.geteuid() == 0, "this test runs as root, as CI does"
    done = cli_as_root("check", "--offline", "--config", str(write_config()))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("pi-kiosk: check: refusing to run as root: it writes the model cache")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists()
