"""A time.monotonic() stand-in for the code that takes a clock: time moves only when the test says,
so no assertion depends on how fast a loaded machine runs the test."""
from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
