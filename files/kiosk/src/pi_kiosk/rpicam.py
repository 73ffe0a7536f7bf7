"""Frames of a Raspberry Pi camera module (CSI) from rpicam-vid, a child process writing raw YUV420 to a pipe.

OpenCV's VideoCapture cannot open a libcamera camera, and picamera2 needs Raspberry Pi OS's system
Python packages, which the kiosk's venv does not see. rpicam-vid (package rpicam-apps-lite) runs the
camera and writes each frame as raw YUV420 (I420), `--codec yuv420`: no encoder on the Pi and no
decoder here (MJPEG would cost a JPEG decode per frame), only one cv2.cvtColor into a buffer made once.
The frame's bytes are read with readinto into buffers made once too, so a frame allocates nothing.

A frame is read whole; no data for `timeout` seconds, or rpicam-vid exiting, ends the stream (the
capture loop then waits for the camera, feeding the watchdog: capture.py, camera.py). Frames queued
while the kiosk was busy are skipped, so it sees the newest. The child is always ended and reaped
on release(). Colours: OpenCV converts with BT.601, the matrix rpicam-vid uses below 1280x720 (above
it uses BT.709; the small hue shift does not matter to face detection and recognition).
"""
from __future__ import annotations

import io
import selectors
import subprocess
import time
from typing import IO

import cv2
import numpy as np
import numpy.typing as npt

from .csi import TOOL

U8 = npt.NDArray[np.uint8]
# rpicam-vid keeps 6 buffers (rpicam-apps core/rpicam_app.cpp, ConfigureVideo): at most that many frames wait in it.
MAX_SKIPPED = 6
STDERR_TAIL = 4096  # bytes of rpicam-vid's stderr kept: its last line says why it stopped
STOP_SECONDS = 2.0  # how long rpicam-vid may take to exit on SIGTERM before it is killed


def command(camera: int, width: int, height: int, fps: float) -> list[str]:
    """`--verbose 0`: rpicam-vid then writes only its errors to stderr (rpicam-apps core/options.cpp)."""
    return [TOOL, "--camera", str(camera), "--width", str(width), "--height", str(height),
            "--framerate", f"{fps:g}", "--codec", "yuv420", "--timeout", "0", "--nopreview", "--verbose", "0",
            "--output", "-"]


class RpicamVid:
    """One run of rpicam-vid, read like OpenCV's VideoCapture (isOpened, read, release). read()
    returns the same BGR array every time, overwritten by the next read."""

    def __init__(self, camera: int, width: int, height: int, fps: float, timeout: float) -> None:
        self.timeout = timeout
        self.problem = ""  # why the stream stopped or never started, once it has
        # Two frames' bytes: the newest whole frame stays in one while the next is read into the other.
        self._raw = [bytearray(width * height * 3 // 2) for _ in range(2)]
        self._yuv = [np.frombuffer(raw, np.uint8).reshape(height * 3 // 2, width) for raw in self._raw]
        self._newest = 0
        self._ended = False  # the stream stopped after the frame read() returns last
        self._bgr = np.empty((height, width, 3), np.uint8)
        self._tail = b""
        self._selector = selectors.DefaultSelector()
        try:
            # bufsize=0: raw pipes, so that select() sees every byte not yet read.
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                command(camera, width, height, fps), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            self._proc, self.problem = None, f"cannot start {TOOL}: {exc.strerror}"
            return
        self._stdout, self._stderr = self._pipe(self._proc.stdout), self._pipe(self._proc.stderr)
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._selector.register(self._stderr, selectors.EVENT_READ)

    @staticmethod
    def _pipe(pipe: IO[bytes] | None) -> io.RawIOBase:
        assert isinstance(pipe, io.RawIOBase)  # PIPE with bufsize=0
        return pipe

    def isOpened(self) -> bool:  # OpenCV's name: capture.py reads either
        return self._proc is not None

    def read(self) -> tuple[bool, U8 | None]:
        """The newest frame, or (False, None) once the stream stopped (`problem` says why)."""
        if self._proc is None or self._ended or not self._fill(self._raw[self._newest]):
            return False, None
        for _ in range(MAX_SKIPPED):  # frames that waited in rpicam-vid while the kiosk was busy
            if not self._ready(self._stdout, 0):
                break
            if not self._fill(self._raw[1 - self._newest]):
                self._ended = True  # the newest whole frame is still delivered
                break
            self._newest = 1 - self._newest
        cv2.cvtColor(self._yuv[self._newest], cv2.COLOR_YUV2BGR_I420, dst=self._bgr)
        return True, self._bgr

    def _ready(self, pipe: io.RawIOBase, seconds: float) -> bool:
        return any(key.fileobj is pipe for key, _ in self._selector.select(seconds))

    def _fill(self, raw: bytearray) -> bool:
        """Reads one frame's bytes into `raw`; False when rpicam-vid ended its output or sent nothing for
        `timeout` s."""
        view, got, size = memoryview(raw), 0, len(raw)
        while got < size:
            ready = self._selector.select(self.timeout)
            if not ready:
                self.problem = f"{TOOL} sent no frame data for {self.timeout:g} s"
                return False
            for key, _ in ready:
                if key.fileobj is self._stderr:
                    self._read_stderr()
                    continue
                n = self._stdout.readinto(view[got:])
                if not n:
                    return False  # rpicam-vid exited: release() says how
                got += n
        return True

    def _read_stderr(self) -> None:
        chunk = self._stderr.read(STDERR_TAIL)
        if chunk:
            self._tail = (self._tail + chunk)[-STDERR_TAIL:]
        else:
            self._selector.unregister(self._stderr)

    def release(self) -> None:
        """Ends rpicam-vid (SIGTERM, SIGKILL after STOP_SECONDS), reaps it and closes the pipes."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
            try:
                code = proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            self._drain_stderr()
            if not self.problem:
                lines = self._tail.decode(errors="replace").strip().splitlines()
                self.problem = f"{TOOL} exited with status {code}" + (f": {lines[-1].strip()}" if lines else "")
        finally:
            self._selector.close()
            self._stdout.close()
            self._stderr.close()

    def _drain_stderr(self) -> None:
        """What rpicam-vid wrote to stderr before it exited (its error), without waiting for a
        grandchild that may hold the pipe open."""
        deadline = time.monotonic() + STOP_SECONDS
        while self._stderr in (key.fileobj for key in self._selector.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0 or not self._ready(self._stderr, left):
                return
            self._read_stderr()
