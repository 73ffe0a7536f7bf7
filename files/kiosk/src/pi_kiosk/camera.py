"""A live camera that comes and goes: waited for as long as it takes, and reported meanwhile.

A kiosk whose camera is unplugged, not plugged in yet at start, or an IP camera rebooting, must
neither exit nor stop pinging systemd's watchdog: either gets the service restarted, and once
systemd has restarted it StartLimitBurst times within StartLimitIntervalSec the unit stays failed
until someone logs in, even after the cable is back. So the capture loop waits here instead:
reopen attempts BACKOFF_INITIAL seconds apart, doubling up to BACKOFF_MAX, the watchdog pinged
throughout, and the state ("missing", since when, what the last attempt found) kept for /healthz
and /metrics until a frame arrives again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .backoff import doubling
from .redact import redact_url
from .timekeeping import duration, local_iso

log = logging.getLogger(__name__)

STATES = ("ok", "missing")
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
# The longest a wait sleeps between two calls of the heartbeat (the notifier pings at its own pace).
HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot, replaced whole on change, so the health thread reads it without a lock."""

    state: str = "ok"  # one of STATES
    source: str = ""  # camera.source as it may be shown (credentials masked)
    since: float | None = None  # clock time the frames stopped, while missing
    problem: str = ""  # what the last attempt found
    attempts: int = 0  # failed attempts since
    retry_seconds: float = 0.0  # the pause before the next attempt

    @property
    def missing(self) -> bool:
        return self.state == "missing"

    def missing_seconds(self, now: float) -> float:
        return 0.0 if self.since is None else now - self.since

    def describe(self, now: float, wall: float) -> str:
        """`now` on the clock of `since`, `wall` the Unix time at that moment."""
        seconds = self.missing_seconds(now)
        return (f"camera {self.source} missing since {local_iso(wall - seconds)} ({duration(seconds)}): "
                f"{self.problem}; {self.attempts} reopen attempt(s), the next within {self.retry_seconds:g} s")


def _never_stopped(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class CameraWait:
    """Used by the capture loop alone; `status` may be read from any thread. `wait(seconds)` sleeps
    and says whether the service is stopping meanwhile; `heartbeat` pings the watchdog."""

    def __init__(self, source: str, *, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] = _never_stopped,
                 heartbeat: Callable[[], None] = lambda: None) -> None:
        self.source = redact_url(source)
        self._clock, self._wait, self._heartbeat = clock, wait, heartbeat
        self.status = CameraStatus(source=self.source)
        self._failures = 0  # consecutive failed attempts
        self._lost_at: float | None = None  # when the last stream stopped, until a frame arrives

    def found(self) -> None:
        """An attempt delivered a frame."""
        if self.status.missing:
            log.warning("camera %s is back after %s (%d reopen attempt(s))", self.source,
                        duration(self.status.missing_seconds(self._clock())), self.status.attempts)
            self.status = CameraStatus(source=self.source)
        self._failures, self._lost_at = 0, None

    def failed(self, problem: str) -> bool:
        """An attempt failed (`problem`: what it found): the camera is missing. Waits before the
        next attempt; True when the service is stopping."""
        now = self._clock()
        delay = doubling(self._failures, BACKOFF_INITIAL, BACKOFF_MAX)
        self._failures += 1
        if not self.status.missing:
            log.warning("camera %s not available (%s): waiting for it, reopening it %g s to %g s apart; "
                        "/healthz says camera_missing meanwhile", self.source, problem, BACKOFF_INITIAL, BACKOFF_MAX)
        since = self.status.since if self.status.missing else self._lost_at if self._lost_at is not None else now
        self.status = CameraStatus("missing", self.source, since, problem, self._failures, delay)
        return self._pause(delay)

    def interrupted(self) -> bool:
        """A stream stopped delivering frames. A short pause, then the next attempt: a stream that
        hiccuped comes back, a camera that is gone fails it and is missing since now."""
        self._lost_at = self._clock()
        log.warning("camera %s stopped delivering frames; reopening it", self.source)
        return self._pause(BACKOFF_INITIAL)

    def _pause(self, seconds: float) -> bool:
        deadline = self._clock() + seconds
        while True:
            self._heartbeat()
            left = deadline - self._clock()
            if left <= 0:
                return False
            if self._wait(min(left, HEARTBEAT_SECONDS)):
                return True
