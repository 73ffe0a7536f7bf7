"""The kiosk's clocks behind one seam, so that a test runs hours of a kiosk's life in a moment.

`monotonic` is CLOCK_BOOTTIME: it counts from boot, never jumps when the wall clock is set, and
keeps counting through a suspend (CLOCK_MONOTONIC stops), so a time span measured on it is a true
span of wall time.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime


class Timekeeper:
    """A test's subclass replaces wall(), monotonic() and wait()."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep `seconds` unless `stop` is set first; whether it is."""
        return stop.wait(seconds)


def local_iso(wall: float) -> str:
    """A Unix time as ISO 8601 local time with its UTC offset, to the second."""
    return datetime.fromtimestamp(wall).astimezone().isoformat(timespec="seconds")


def duration(seconds: float) -> str:
    """A span in words: "2 h 5 min", "12 min 3 s", "40 s"."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"
