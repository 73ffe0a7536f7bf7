"""The kiosk's clocks, and attendance times that stay true on a Pi without a real-time clock.

A Pi has no battery-backed clock: it boots with the time fake-hwclock saved at its last shutdown
(after a power cut, at its last hourly save) and keeps that wrong time until NTP synchronises it,
or for ever where NTP is blocked. An event stamped with that clock is wrong by minutes or days, and
nothing downstream can tell. So no event is ever sent with a time from an unsynchronised clock:

- Whether the clock is synchronised: the file systemd-timesyncd creates once it has synchronised
  the clock in this boot (`clock.synchronized_path`, /run/systemd/timesync/synchronized; /run is
  emptied at every boot). The kernel's own flag (adjtimex) is out of reach: the service's sandbox
  has ProtectClock=yes, which refuses that system call. An empty path trusts the clock always (a
  board with a real-time clock; another NTP client: point the key at a file that client creates).
- Every event records the boot it happened in (the kernel's boot id) and `monotonic()`, which is
  CLOCK_BOOTTIME: seconds since boot that never jump when the wall clock is set, and that keep
  counting through a suspend. An event recorded while the clock is unsynchronised waits in the
  outbox; once the clock is synchronised in the same boot its true time is exact,
  wall = now_wall - (now_boottime - event_boottime), and only then is it sent. A restart of the
  service within the boot changes nothing: the boot id and CLOCK_BOOTTIME are the system's.
- An event of an earlier boot that never got synchronised cannot be placed: how far that boot's
  clock was off died with it. It is sent with the time the clock showed then, the best estimate
  there is, flagged `"TS1_estimated": true` for the server to show as such; holding it for ever
  would lose it, and dropping it would lose the attendance itself. Its Idempotency-Key is the one
  it got when it was recorded, so nothing is sent twice.

The same stamps tell the cooldown, after a restart, how long ago each person was reported (age()).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import KioskError

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Stamp:
    """When an event happened, as far as the kiosk can know it."""

    wall: float  # Unix time: true when `synchronized`, otherwise what the clock showed
    synchronized: bool
    boot_id: str = ""  # the boot it happened in; "" unknown (stored before the outbox kept it, or given a time)
    boot_seconds: float = 0.0  # CLOCK_BOOTTIME then


@dataclass(frozen=True)
class ClockStatus:
    synchronized: bool = True
    boot_seconds: float = 0.0  # how long this boot has run: unsynchronised all along while not synchronized
    waiting: int = 0  # events waiting in the outbox until it is
    path: str = ""  # clock.synchronized_path

    def describe(self) -> str:
        return (f"clock not synchronised for {duration(self.boot_seconds)} (no {self.path}): {self.waiting} "
                "attendance event(s) waiting for it")


class Timekeeper:
    """The system's clocks; a test's subclass replaces wall(), monotonic() and wait(), and gives a boot id."""

    def __init__(self, synchronized_path: str = "", boot_id: str | None = None) -> None:
        self.synchronized_path = synchronized_path  # "" trusts the clock always
        self.boot_id = boot_id or _read_boot_id()
        self._synchronized = not synchronized_path

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep `seconds` unless `stop` is set first; whether it is."""
        return stop.wait(seconds)

    def synchronized(self) -> bool:
        # Once seen, for the rest of the process: the file stays until the next boot empties /run.
        if not self._synchronized:
            self._synchronized = os.path.exists(self.synchronized_path)
        return self._synchronized

    def stamp(self) -> Stamp:
        return Stamp(self.wall(), self.synchronized(), self.boot_id, self.monotonic())

    def wall_at(self, boot_seconds: float) -> float:
        """The Unix time of a moment of this boot (its CLOCK_BOOTTIME): true once the clock is synchronised."""
        return self.wall() - (self.monotonic() - boot_seconds)

    def age(self, stamp: Stamp) -> float | None:
        """Seconds since `stamp`; None when no clock can tell (an earlier boot's, with the clock then
        or now unsynchronised)."""
        if stamp.boot_id == self.boot_id:
            return self.monotonic() - stamp.boot_seconds
        if stamp.synchronized and self.synchronized():
            return self.wall() - stamp.wall
        return None

    def status(self, waiting: int) -> ClockStatus:
        return ClockStatus(self.synchronized(), self.monotonic(), waiting, self.synchronized_path)


def _read_boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError as exc:
        raise KioskError(f"cannot read this boot's id from {BOOT_ID_PATH}: {exc.strerror}") from None


def local_time(wall: float) -> datetime:
    """A Unix time as local time with its UTC offset."""
    return datetime.fromtimestamp(wall).astimezone()


def local_iso(wall: float) -> str:
    """A Unix time as ISO 8601 local time with its UTC offset, to the second."""
    return local_time(wall).isoformat(timespec="seconds")


def duration(seconds: float) -> str:
    """A span in words: "2 h 5 min", "12 min 3 s", "40 s"."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"
