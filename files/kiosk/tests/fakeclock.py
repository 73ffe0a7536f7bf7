"""Stand-ins for the clocks the code takes: time moves only when the test (or, for FakeTime, the
kiosk's own waits) moves it, so no assertion depends on how fast a loaded machine runs the test."""
from __future__ import annotations

import threading

from pi_kiosk.timekeeping import Timekeeper


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTime(Timekeeper):
    """The kiosk's clocks (timekeeping.Timekeeper) in boot `boot_id`, moved by the test and by the
    kiosk's own waits: a wait moves them by its length at once, taking only a moment of real time
    (so that a waiting loop does not spin a core, and other threads run). `step()` sets the wall
    clock alone, as NTP does when it synchronises it."""

    def __init__(self, synchronized_path: str = "", boot_id: str = "boot-1", *, wall: float = 1_800_000_000.0,
                 boot: float = 1000.0) -> None:
        super().__init__(synchronized_path, boot_id)
        self.wall_now, self.boot_now = wall, boot

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.boot_now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        if stop.wait(0.001):
            return True
        self.advance(seconds)
        return stop.is_set()

    def advance(self, seconds: float) -> None:
        self.boot_now += seconds
        self.wall_now += seconds

    def step(self, seconds: float) -> None:
        self.wall_now += seconds
