"""Attendance events into the outbox, held in memory while it cannot be written (a full disk).

A failed write must not stop the kiosk: the service would die with the event, and systemd's
restarts would end in a failed unit. The event is kept in memory instead, with the
Idempotency-Key it was given, and written on a later frame once the outbox takes it again; new
events queue behind it, so the outbox receives them in order and each once. Memory is bounded by
`outbox.memory_events`: past it the newest event is dropped (the oldest held, a day's first
arrivals, are kept), each drop logged with the event and counted in /metrics. Events still held
when the service stops are lost: each is logged at ERROR with what it held.
"""
from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .outbox import Event, Outbox, new_event
from .timekeeping import Stamp, local_time

log = logging.getLogger(__name__)

STATES = ("ok", "disk_full", "error")
# How often the frame loop retries the held events: often enough to write them soon after space
# is freed, seldom enough that a full disk costs the frame loop nothing.
RETRY_SECONDS = 1.0
# What a write to a full or failing disk raises: SQLite's errors, and the OS's for its files.
WRITE_ERRORS = (sqlite3.OperationalError, OSError)


@dataclass(frozen=True)
class WriteStatus:
    state: str = "ok"  # one of STATES
    error: str = ""  # the last failed write's error, while events are held
    held: int = 0  # events in memory, not yet in the outbox
    dropped: int = 0  # events dropped since the start because `limit` were held
    limit: int = 0

    def describe(self) -> str:
        what = "disk full" if self.state == "disk_full" else "outbox not writable"
        return (f"{what} ({self.error}): {self.held} attendance event(s) held in memory until it takes them "
                f"again (at most {self.limit}, {self.dropped} dropped)")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class OutboxWriter:
    """Used by the frame loop alone; `status` may be read from any thread."""

    def __init__(self, outbox: Outbox, limit: int, on_written: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.outbox = outbox
        self.limit = limit
        self._on_written = on_written  # the sender's wake(): events are in the outbox to be sent
        self._clock = clock  # time.monotonic; a test passes one it moves itself
        self._held: deque[tuple[Event, Stamp]] = deque()  # (event, when it was recorded)
        self._retry_at = 0.0
        self._state, self._error = "ok", ""
        self._dropped = 0

    @property
    def status(self) -> WriteStatus:
        return WriteStatus(self._state, self._error, len(self._held), self._dropped, self.limit)

    def record(self, employee_id: str, status: str, stamp: Stamp) -> Event:
        """Write a new event to the outbox, after any held ones; hold it if the outbox fails."""
        event = new_event(employee_id, status, local_time(stamp.wall))
        self._held.append((event, stamp))
        self._write_held()
        if len(self._held) > self.limit:
            self._held.pop()
            self._dropped += 1
            log.error("attendance event DROPPED: %d event(s) are held in memory already (outbox.memory_events) "
                      "while the outbox cannot be written (%s): employee %s, status %s, at %s, key %s",
                      self.limit, self._error, employee_id, status, event.payload["TS1"], event.key)
        return event

    def retry(self) -> None:
        """From the frame loop: write the held events, at most once per RETRY_SECONDS."""
        if self._held and self._clock() >= self._retry_at:
            self._write_held()

    def drop(self, ids: Collection[str]) -> int:
        """Drop the held events of erased people (reporting them would re-create their data); returns how many."""
        kept = deque(held for held in self._held if held[0].payload["E1"] not in ids)
        dropped = len(self._held) - len(kept)
        self._held = kept
        return dropped

    def close(self) -> None:
        """At stop: a last try; events that still cannot be written are lost, and each is logged."""
        self._write_held()
        for event, _ in self._held:
            log.error("attendance event LOST at stop, the outbox could not be written (%s): employee %s, "
                      "status %s, at %s, key %s", self._error, event.payload["E1"], event.payload["S1"],
                      event.payload["TS1"], event.key)
        self._held.clear()

    def _write_held(self) -> None:
        written = 0
        try:
            while self._held:
                event, stamp = self._held[0]
                self.outbox.store(event, stamp)
                self._held.popleft()
                written += 1
        except WRITE_ERRORS as exc:
            self._failed(exc)
        else:
            if self._state != "ok":
                log.warning("outbox writable again: %d attendance event(s) held in memory written", written)
                self._state, self._error = "ok", ""
        if written:
            self._on_written()

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + RETRY_SECONDS
        state, error = ("disk_full" if is_disk_full(exc) else "error"), f"{type(exc).__name__}: {exc}"
        if (state, error) != (self._state, self._error):
            log.error("cannot write to the outbox %s (%s): holding attendance events in memory, at most %d "
                      "(outbox.memory_events); retrying every %.0f s", self.outbox.path, error, self.limit,
                      RETRY_SECONDS)
        self._state, self._error = state, error
