"""A Raspberry Pi camera module (camera.source = "csi"), read through the test bed's rpicam-vid stand-in."""
from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from fakeclock import FakeTime
from kioskcli import cli

from pi_kiosk import capture, rpicam
from pi_kiosk.camera import CameraWait
from pi_kiosk.config import parse
from pi_kiosk.csi import require_tool
from pi_kiosk.errors import ConfigError

STANDIN = Path(__file__).resolve().parents[3] / "testbed/rpicam/rpicam-vid"
WIDTH, HEIGHT = 128, 48  # the smallest width rpicam-vid does not pad
# BGR colours of 2x2-aligned blocks: chroma subsampling keeps them exact, only YUV rounding remains.
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128)]


def _make_i420() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_i420", STANDIN.parent / "make_i420.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_i420 = _make_i420()


def blocks(shift: int) -> np.ndarray:
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    for i in range(4):
        frame[:, i * WIDTH // 4:(i + 1) * WIDTH // 4] = COLOURS[(i + shift) % 4]
    return frame


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in first on PATH, its cameras in the returned folder (none yet)."""
    monkeypatch.setenv("PATH", f"{STANDIN.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RPICAM_STANDIN_DIR", str(tmp_path / "camera"))
    return tmp_path / "camera"


def waiting(seconds: list[float], then: Callable[[], None] = lambda: None) -> CameraWait:
    """A CameraWait on a fake clock that records its pauses and runs `then` at the first."""
    clock, stop = FakeTime(), threading.Event()

    def wait(s: float) -> bool:
        if not seconds:
            then()
        seconds.append(s)
        return clock.wait(stop, s)

    return CameraWait("csi:1", clock=clock.monotonic, wait=wait)


def test_frames_of_known_colours_decode_to_them(standin: Path) -> None:
    make_i420.write_camera(standin, 0, [blocks(0), blocks(1)], WIDTH, HEIGHT)
    got = [f.copy() for f in itertools.islice(capture.frames("csi", width=WIDTH, height=HEIGHT, fps=200), 4)]
    # The file loops; which of the two each frame is depends on the frames skipped to keep up (a loaded machine).
    for frame in got:
        assert min(np.abs(frame.astype(int) - blocks(shift)).max() for shift in (0, 1)) <= 3


def test_a_stream_that_dies_is_reopened_and_frames_flow_again(standin: Path) -> None:
    make_i420.write_camera(standin, 1, [blocks(0)], WIDTH, HEIGHT, exit_after_frames=2)
    paused: list[float] = []
    camera = waiting(paused)
    assert len(list(itertools.islice(capture.frames("csi:1", width=WIDTH, height=HEIGHT, fps=200,
                                                    camera=camera), 5))) == 5
    # Each run of the stand-in gives 2 frames (or 1, when the kiosk skips to the newest): hiccups, never missing.
    assert len(paused) >= 2 and set(paused) == {1.0} and not camera.status.missing


def test_a_missing_camera_is_waited_for_and_comes_without_a_restart(standin: Path) -> None:
    paused: list[float] = []
    camera = waiting(paused, then=lambda: make_i420.write_camera(standin, 1, [blocks(2)], WIDTH, HEIGHT))
    problems: list[str] = []
    camera_failed = camera.failed

    def failed(problem: str) -> bool:
        problems.append(problem)
        return camera_failed(problem)

    camera.failed = failed  # type: ignore[method-assign]
    frame = next(capture.frames("csi:1", width=WIDTH, height=HEIGHT, fps=200, camera=camera))
    assert problems == ["rpicam-vid exited with status 255: ERROR: *** no cameras available ***"]
    assert np.abs(frame.astype(int) - blocks(2)).max() <= 3 and not camera.status.missing


def test_the_child_is_gone_once_the_frames_are_closed(standin: Path) -> None:
    make_i420.write_camera(standin, 0, [blocks(0)], WIDTH, HEIGHT)
    started: list[rpicam.RpicamVid] = []
    real = rpicam.RpicamVid

    def spy(*args: float) -> rpicam.RpicamVid:
        started.append(real(*args))  # type: ignore[arg-type]
        return started[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(capture, "RpicamVid", spy)
        stream = capture.frames("csi", width=WIDTH, height=HEIGHT, fps=200)
        next(stream)
        pid = started[0]._proc.pid  # type: ignore[union-attr]
        stream.close()
    assert started[0]._proc is None
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)


def test_a_hung_camera_ends_the_stream_after_the_timeout(standin: Path) -> None:
    make_i420.write_camera(standin, 0, [blocks(0)], WIDTH, HEIGHT)
    cam = rpicam.RpicamVid(0, WIDTH, HEIGHT, 0.2, timeout=0.5)  # a frame every 5 s: none within 0.5 s
    try:
        assert cam.read()[0]  # the first frame comes at once
        assert cam.read() == (False, None)
    finally:
        cam.release()
    assert cam.problem == "rpicam-vid sent no frame data for 0.5 s"


def test_the_standin_pads_rows_as_a_pi_5_does(standin: Path) -> None:
    make_i420.write_camera(standin, 0, [blocks(0)[:, :64]], 64, HEIGHT)
    done = subprocess.run([str(STANDIN), "--camera", "0", "--width", "64", "--height", str(HEIGHT), "--framerate",
                           "100", "--codec", "yuv420", "--timeout", "25", "--output", "-"],
                          capture_output=True, timeout=30, check=True)
    assert len(done.stdout) % (128 * HEIGHT * 3 // 2) == 0 and done.stdout  # 64-byte rows padded to 128


@pytest.mark.parametrize("source", ["csi:x", "csi:", "csi:-1", "csi:16", "csi:1.0"])
def test_csi_values_naming_no_camera_are_refused(source: str) -> None:
    with pytest.raises(ConfigError, match=rf"^camera.source = '{source}': expected \"csi\" \(camera 0\) or "
                                          r"\"csi:N\" with N a camera number from 0 to 15$"):
        capture.classify(source)


def test_the_config_refuses_widths_rpicam_vid_pads() -> None:
    data = {"embedder": {"model_path": "/m.onnx", "card": "arcface"}, "server": {"url": "http://s"},
            "camera": {"source": "csi:1", "width": 800, "height": 601}}
    with pytest.raises(ConfigError) as refused:
        parse(data)
    assert "camera.width = 800: with a csi camera.source, expected a multiple of 128" in str(refused.value)
    assert "camera.height = 601: with a csi camera.source, expected an even number" in str(refused.value)
    assert parse({**data, "camera": {"source": "csi:1", "width": 640, "height": 480}}).camera.source == "csi:1"


def test_no_rpicam_vid_is_one_line_and_exit_2(write_config: Callable[..., Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(ConfigError, match=r"^camera.source = 'csi': rpicam-vid is not on PATH; install the package "
                                          r"rpicam-apps-lite, which provides it$"):
        require_tool("csi")
    done = cli("check", "--config", str(write_config(camera={"source": "csi:1"})))
    assert done.returncode == 2
    assert done.stderr == ("pi-kiosk: camera.source = 'csi:1': rpicam-vid is not on PATH; install the package "
                           "rpicam-apps-lite, which provides it\n")
