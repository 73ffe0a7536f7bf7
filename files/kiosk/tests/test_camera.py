"""A live camera that comes and goes: the capture loop waits for it with backoff, feeding the watchdog."""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from fakecamera import FakeCamera
from fakeclock import FakeTime

from pi_kiosk import capture
from pi_kiosk.camera import BACKOFF_MAX, CameraStatus, CameraWait

# The deploy role's unit: WatchdogSec=30 (pings every 15 s), StartLimitIntervalSec=600.
WATCHDOG_SECONDS, START_LIMIT_INTERVAL = 30.0, 600.0
SOURCE = "rtsp://kiosk:s3cr3t@10.0.0.5/stream"
SHOWN = "rtsp://kiosk:***@10.0.0.5/stream"


class Watch:
    """frames() of a CameraWait on a fake clock, recording its waits, its heartbeats and its status
    at every wait; the camera is plugged in again once the clock reaches `plug_in_at`."""

    def __init__(self, camera: FakeCamera, source: str = SOURCE) -> None:
        self.camera = camera
        self.time = FakeTime()
        self.stop = threading.Event()
        self.plug_in_at = float("inf")
        self.waited: list[float] = []
        self.heartbeats: list[float] = []
        self.statuses: list[CameraStatus] = []
        self.wait = CameraWait(source, clock=self.time.monotonic, wait=self._wait,
                               heartbeat=lambda: self.heartbeats.append(self.time.monotonic()))
        self.frames: Iterator[np.ndarray] = capture.frames(source, camera=self.wait)

    def _wait(self, seconds: float) -> bool:
        self.waited.append(seconds)
        self.statuses.append(self.wait.status)
        if self.time.monotonic() >= self.plug_in_at:
            self.camera.plugged.set()
        return self.time.wait(self.stop, seconds)


def test_a_camera_missing_longer_than_the_watchdog_and_the_start_limit_is_waited_for(
        camera: FakeCamera, caplog: pytest.LogCaptureFixture) -> None:
    watch = Watch(camera)
    camera.plugged.set()
    next(watch.frames)
    assert watch.wait.status == CameraStatus(source=SHOWN)
    camera.plugged.clear()  # the cable is pulled while frames flow
    unplugged = watch.time.monotonic()
    watch.plug_in_at = unplugged + WATCHDOG_SECONDS + START_LIMIT_INTERVAL + 100
    with caplog.at_level(logging.INFO):
        next(watch.frames)  # the frames never ended: they flow again
    back = watch.time.monotonic()
    assert back >= watch.plug_in_at and watch.wait.status == CameraStatus(source=SHOWN)
    # Missing since the frames stopped, with the source's password masked, for the whole outage.
    missing = [s for s in watch.statuses if s.missing]
    assert {s.since for s in missing} == {unplugged} and {s.source for s in missing} == {SHOWN}
    assert missing[-1].attempts == camera.opens - 2  # all but the first open and the last, which worked
    assert {s.problem for s in missing} == {"it cannot be opened"}
    # Reopen attempts back off from 1 s to at most 30 s.
    pauses = [s.retry_seconds for s in {s.attempts: s for s in missing}.values()]
    assert pauses[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX, BACKOFF_MAX] and max(pauses) == BACKOFF_MAX
    # The heartbeat (the watchdog's ping) never paused for more than a second of the outage.
    beats = [unplugged, *watch.heartbeats, back]
    assert max(b - a for a, b in itertools.pairwise(beats)) <= 1.0
    assert f"camera {SHOWN} stopped delivering frames; reopening it" in caplog.text
    assert f"camera {SHOWN} not available (it cannot be opened): waiting for it" in caplog.text
    assert f"camera {SHOWN} is back after 12 min" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_a_camera_absent_at_start_is_waited_for(camera: FakeCamera) -> None:
    watch = Watch(camera, "/dev/video7")
    watch.plug_in_at = watch.time.monotonic() + 45
    next(watch.frames)
    assert watch.wait.status.state == "ok" and camera.opens >= 2
    missing = [s for s in watch.statuses if s.missing]
    assert missing[0] == CameraStatus("missing", "/dev/video7", since=1000.0, problem="it cannot be opened",
                                      attempts=1, retry_seconds=1.0)


def test_a_camera_that_opens_but_delivers_nothing_is_missing(camera: FakeCamera) -> None:
    watch = Watch(camera)
    camera.plugged.set()
    camera.failing_reads = 3
    next(watch.frames)
    problems = [(s.problem, s.attempts) for s in watch.statuses]
    assert problems[0] == ("it opens but delivers no frames", 1) and camera.opens == 4
    assert watch.wait.status.state == "ok"


def test_a_stream_that_hiccups_reconnects_without_being_missing(camera: FakeCamera) -> None:
    watch = Watch(camera)
    camera.plugged.set()
    next(watch.frames)
    camera.failing_reads = 1
    next(watch.frames)
    assert camera.opens == 2 and watch.waited == [1.0]  # one short pause, then reopened
    assert not any(s.missing for s in watch.statuses)
