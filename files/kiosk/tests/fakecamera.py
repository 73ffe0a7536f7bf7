"""A camera a test plugs in and out, in place of OpenCV's (capture._open)."""
from __future__ import annotations

import threading

import numpy as np

from pi_kiosk import capture


class FakeCamera:
    """A camera the test plugs in and out: unplugged it cannot be opened, and an open one stops
    delivering; `failing_reads` reads fail while it stays plugged (a stream's hiccup, or a camera
    that opens but delivers nothing)."""

    def __init__(self) -> None:
        self.plugged = threading.Event()
        self.failing_reads = 0
        self.frame = np.zeros((48, 64, 3), np.uint8)
        self.opens = 0

    def open(self, src: capture.Source, width: int, height: int, fps: float) -> FakeCapture:
        self.opens += 1
        return FakeCapture(self)


class FakeCapture:
    def __init__(self, camera: FakeCamera) -> None:
        self.camera = camera
        self.opened = camera.plugged.is_set()

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.camera.failing_reads:
            self.camera.failing_reads -= 1
            return False, None
        return (True, self.camera.frame) if self.camera.plugged.is_set() else (False, None)

    def release(self) -> None:
        pass
