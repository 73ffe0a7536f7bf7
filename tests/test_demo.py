"""scripts/demo's own steps (testbed/demo.py) on this machine: the assets, the threshold it measures,
enrollment through the real server's command line, and the verdict on the server's events. The
emulated fleet's part is the demo itself."""
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

import pytest
import requests
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
def out(demo: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo")
    demo.assets(path, KIOSKS)
    return path


def test_assets_are_made_once_and_the_tokens_are_private(demo: ModuleType, out: Path) -> None:
    settings = load(out / "server.toml")
    assert set(settings.kiosk_tokens) == set(KIOSKS)
    assert settings.kiosk_tokens["demo-pi4-01"] == (out / "tokens/demo-pi4-01").read_text()
    for secret in [out / "server.toml", *(out / "tokens").iterdir()]:
        assert secret.stat().st_mode & 0o077 == 0, secret
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    demo.assets(out, KIOSKS)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_the_threshold_lies_between_her_scores_and_the_strangers(demo: ModuleType, out: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    demo.threshold(out)
    m = json.loads((out / "threshold.json").read_text())
    assert m["stranger"][1] < m["threshold"] < m["her"][0]
    assert m["her"][2] > 0 and m["stranger"][2] > 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "NOT a calibrated one" in printed and f"{m['threshold']:.3f}" in printed


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


def test_enrollment_happens_once(demo: ModuleType, out: Path, server: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    demo.enroll(out, server)
    assert "enrolled astronaut" in capsys.readouterr().out
    demo.enroll(out, server)
    assert "enrolled for model" in capsys.readouterr().out
    gallery = requests.get(f"{server}/api/employees/embeddings",
                           params={"model": (out / "mobilefacenet.onnx.sha256").read_text().strip()},
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
