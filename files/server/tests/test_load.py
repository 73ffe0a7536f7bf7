"""The load benchmark (benchmarks/load.py) in a tiny configuration: its own server on SQLite, every kind of request,
every event stored exactly once and no request refused. Behaviour, not timing: the figures are the README's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attendance_server

LOAD = Path(__file__).parents[1] / "benchmarks" / "load.py"


def load(*args: str) -> subprocess.CompletedProcess[str]:
    # The server processes it starts import this checkout's package, as this test does.
    src = str(Path(attendance_server.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, str(LOAD), *args], capture_output=True, text=True, env=env, timeout=180)


def test_a_small_fleet_is_served_and_every_event_is_stored_once(tmp_path: Path) -> None:
    report = tmp_path / "load.json"
    done = load("--kiosks", "50", "--burst-kiosks", "25", "--minutes", "0.1", "--burst-seconds", "3",
                "--heartbeat-interval", "2", "--sync-interval", "3", "--fresh-syncs", "0.2", "--gallery", "10",
                "--report", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(report.read_text())
    assert figures["exactly_once"] == {"ok": True, "sent": 50, "stored": 50, "missing": 0, "duplicated": 0,
                                       "unexpected": 0, "resent": 0, "still_failing": {}}
    for kind in ("heartbeat", "sync", "event"):
        assert figures[kind]["requests"] > 0 and figures[kind]["errors"] == {}, figures[kind]
        assert figures[kind]["ok"] == figures[kind]["requests"]
    assert set(figures["sync"]["statuses"]) == {"200", "304"}  # fresh syncs downloaded the gallery, the rest 304
    assert "every event stored exactly once: yes" in done.stdout


def test_several_processes_need_postgresql() -> None:
    done = load("--processes", "2")
    assert done.returncode == 2 and "--processes above 1 needs --database postgresql" in done.stderr
