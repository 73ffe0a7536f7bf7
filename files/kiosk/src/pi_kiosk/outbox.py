"""Durable outbox for attendance events: written before sending, deleted only once delivered.

Events live in SQLite (WAL, synchronous=FULL) from the moment they are recognised. A sender
posts due events to `{server}/toon/attendance` as the guide's message ({"E1": employee id,
"S1": status, "TS1": ISO-8601 time}) with an `Idempotency-Key` header that is fixed when the
event is written. A server error, timeout or network failure leaves the event in place and
pauses delivery with exponential backoff (the whole queue: a server that is down is down for
every event, and the order of events is kept); a kill at any point loses nothing. The one case a
client cannot settle alone, a request the server processed whose answer never arrived, is
resent with the same key, so a server that honours the key records it once.
"""
from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from .server import server_session

log = logging.getLogger(__name__)

ATTENDANCE_PATH = "/toon/attendance"
# Client errors that may pass (timeout, too early, rate limit): retried like server errors.
RETRYABLE_4XX = frozenset({408, 425, 429})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS rejected (
    idempotency_key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    rejected_at REAL NOT NULL,
    status INTEGER NOT NULL,
    response TEXT
);
"""


@dataclass(frozen=True)
class Event:
    key: str
    payload: dict[str, str]
    attempts: int = 0


class Outbox:
    """Thread-safe: the recognition loop adds, the sender delivers, /metrics reads the depth."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event survives a power cut, not just a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, employee_id: str, status: str, when: datetime) -> Event:
        """Store an event; it is durable when this returns."""
        if when.tzinfo is None:
            raise ValueError("attendance timestamps must be timezone-aware")
        event = Event(str(uuid.uuid4()), {"E1": employee_id, "S1": status,
                                          "TS1": when.isoformat(timespec="seconds")})
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (idempotency_key, payload, created_at) VALUES (?, ?, ?)",
                (event.key, json.dumps(event.payload), now),
            )
        return event

    def pending(self, limit: int = 50) -> list[Event]:
        """The oldest undelivered events."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idempotency_key, payload, attempts FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [Event(key, json.loads(payload), attempts) for key, payload, attempts in rows]

    def delivered(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE idempotency_key = ?", (key,))

    def failed(self, key: str, error: str) -> None:
        """Note a failed attempt (kept for an operator: `attempts`, `last_error`)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE idempotency_key = ?",
                             (error[:500], key))

    def reject(self, key: str, status: int, response: str) -> None:
        """Move an event the server refused for good aside, kept for an operator to look at."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO rejected SELECT idempotency_key, payload, created_at, ?, ?, ? "
                    "FROM outbox WHERE idempotency_key = ?", (time.time(), status, response[:500], key))
                self._db.execute("DELETE FROM outbox WHERE idempotency_key = ?", (key,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def depth(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def rejected_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()
        return int(count)


class Sender:
    """Delivers pending events, oldest first; `run` loops until stopped, woken early by `wake`."""

    def __init__(self, outbox: Outbox, server_url: str, *, token: str = "", timeout: float = 5.0,
                 retry_initial: float = 2.0, retry_max: float = 300.0,
                 session: requests.Session | None = None) -> None:
        self.outbox = outbox
        self.url = server_url.rstrip("/") + ATTENDANCE_PATH
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.session = server_session(token, session)
        self._wake = threading.Event()
        self._failures = 0  # consecutive failed attempts
        self._resume_at = 0.0  # time.monotonic() before which delivery is paused

    def backoff(self, failures: int) -> float:
        """Pause after `failures + 1` consecutive failures: doubling, capped, with jitter so a
        fleet that lost its server together does not come back in lockstep."""
        base = min(self.retry_max, self.retry_initial * 2.0 ** min(failures, 32))
        return base * random.uniform(0.5, 1.0)

    def retry_in(self) -> float:
        return max(0.0, self._resume_at - time.monotonic())

    def wake(self) -> None:
        self._wake.set()

    def _fail(self, event: Event, error: str) -> None:
        self.outbox.failed(event.key, error)
        self._resume_at = time.monotonic() + self.backoff(self._failures)
        self._failures += 1

    def deliver_due(self) -> int:
        """Send pending events unless paused by a failure; returns how many were delivered.
        Stops at the first failure: the rest would fail the same way, and order is kept."""
        if self.retry_in() > 0:
            return 0
        delivered = 0
        for event in self.outbox.pending():
            try:
                resp = self.session.post(self.url, json=event.payload, timeout=self.timeout,
                                         headers={"Idempotency-Key": event.key})
            except requests.RequestException as exc:
                self._fail(event, f"{type(exc).__name__}: {exc}")
                log.warning("attendance server unreachable (%s); %d event(s) waiting, next try in %.0f s",
                            type(exc).__name__, self.outbox.depth(), self.retry_in())
                break
            if 200 <= resp.status_code < 300:
                self.outbox.delivered(event.key)
                self._failures = 0
                delivered += 1
            elif 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_4XX:
                self.outbox.reject(event.key, resp.status_code, resp.text)
                log.error("attendance server rejected event %s with HTTP %d; kept in the rejected table",
                          event.key, resp.status_code)
            else:
                self._fail(event, f"HTTP {resp.status_code}")
                log.warning("attendance server answered HTTP %d; next try in %.0f s", resp.status_code,
                            self.retry_in())
                break
        return delivered

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then make one last pass (wake() to make it prompt)."""
        while True:
            try:
                self.deliver_due()
            except sqlite3.Error:
                log.exception("outbox database error")
            if stop.is_set():
                return
            self._wake.wait(timeout=min(self.retry_in() if self.outbox.depth() else 60.0, 60.0))
            self._wake.clear()
