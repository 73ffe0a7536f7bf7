"""Durable outbox for attendance events: written before sending, moved out only once delivered.

Events live in SQLite (WAL, synchronous=FULL) from the moment they are recognised. A sender
posts due events to `{server}/toon/attendance` as the guide's message ({"E1": employee id,
"S1": status, "TS1": ISO-8601 time}) with an `Idempotency-Key` header that is fixed when the
event is written. Only an answer that judges the event itself (delivery.REJECTING) sets it
aside; any other failure pauses delivery with exponential backoff (the whole queue: a server
that is down, or refuses the token, does so for every event, and the order of events is kept);
a kill at any point loses nothing. The one case a client cannot settle alone, a request the
server processed whose answer never arrived, is resent with the same key, so a server that
honours the key records it once.

Each event keeps how its time is known (timekeeping.py): an event recorded while the clock is not
synchronised waits, unsent, until the clock is synchronised in the same boot and place() gives it
its true time; one of an earlier boot that never was is sent with its estimate, flagged. Delivered
events are kept for a day (the longest report.cooldown_seconds) beside the pending and rejected ones,
so that a restarted service knows whom it reported lately (reported()), and no longer than
`outbox.keep_days`, which bounds the rejected ones too (prune()). An erased person's events go in every
state (forget()); deleted rows are overwritten with zeros (secure_delete) and the write-ahead log is
truncated after an erasure, so no copy of them survives in the file's free pages or in old log frames.
"""
from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from .backoff import doubling
from .client import ServerClient
from .config import OutboxConfig
from .delivery import Action, DeliveryStatus, DeliveryTracker, Verdict, judge, unreachable
from .errors import OutboxError
from .redact import redact_url
from .timekeeping import Stamp, Timekeeper, local_time

log = logging.getLogger(__name__)

# The tables of pi-kiosk 0.1 (`PRAGMA user_version` 0); _MIGRATIONS brings them up to date.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS rejected (
        idempotency_key TEXT PRIMARY KEY,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        rejected_at REAL NOT NULL,
        status INTEGER NOT NULL,
        response TEXT
    )""",
)
# An event's time, in the `clock` column of every table: true; unsynchronized, waiting until this
# boot's clock is synchronised (TS1 is what the clock showed, replaced by the true time before it is
# sent); or an earlier boot's that never was (TS1 stays the clock's reading, sent flagged TS1_estimated).
SYNCHRONIZED, UNSYNCHRONIZED, ESTIMATED = "synchronized", "unsynchronized", "estimated"
# Delivered events are kept this long for the cooldown (the largest report.cooldown_seconds).
KEEP_DELIVERED_SECONDS = 86400.0
# How often the sender deletes the delivered and rejected events past outbox.keep_days.
PRUNE_SECONDS = 3600.0
# Entry n takes a database from user_version n to n + 1. Kiosks hold outbox files already, so
# the schema only ever grows this way.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # The event's outbox row id, so that a requeued event gets its old place in the queue back
    # (NULL for events set aside by 0.1).
    ("ALTER TABLE rejected ADD COLUMN outbox_id INTEGER",),
    # How each event's time is known, and when in which boot it happened (NULL for events stored
    # before, which all took the wall clock's time); delivered events, kept a while for the cooldown.
    (*(f"ALTER TABLE {table} ADD COLUMN {column}" for table in ("outbox", "rejected") for column in (
        f"clock TEXT NOT NULL DEFAULT '{SYNCHRONIZED}'", "boot_id TEXT", "boot_seconds REAL")),
     """CREATE TABLE delivered (
        idempotency_key TEXT PRIMARY KEY,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL NOT NULL,
        clock TEXT NOT NULL,
        boot_id TEXT,
        boot_seconds REAL
    )"""),
)
# What every table keeps of an event besides its key and payload, in one order for the copies between them.
_TIME_COLUMNS = "created_at, clock, boot_id, boot_seconds"
# The tables by what their events are, for forget().
_STATES = {"pending": "outbox", "delivered": "delivered", "rejected": "rejected"}


@dataclass(frozen=True)
class Event:
    key: str
    payload: dict[str, str | bool]  # the guide's E1, S1 and TS1; TS1_estimated true for an estimated time
    attempts: int = 0


def new_event(employee_id: str, status: str, when: datetime) -> Event:
    """The guide's message with its Idempotency-Key, fixed here for every attempt to store and send it."""
    return Event(str(uuid.uuid4()), {"E1": employee_id, "S1": status, "TS1": _ts1(when)})


def _ts1(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("attendance timestamps must be timezone-aware")
    return when.isoformat(timespec="seconds")


@dataclass(frozen=True)
class RejectedEvent:
    key: str
    employee_id: str
    status: int
    created_at: float  # Unix time the event was queued
    rejected_at: float


@dataclass(frozen=True)
class Backlog:
    pending: int
    rejected: int
    oldest_created_at: float | None  # Unix time of the oldest pending event
    last_error: str | None  # of the oldest event that failed, with its attempts
    last_error_attempts: int
    unsynchronized: int = 0  # of the pending, waiting until the clock is synchronised


class Outbox:
    """Thread-safe: the recognition loop adds, the sender delivers, /metrics reads the depth."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event survives a power cut, not just a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # Deleted events are overwritten with zeros: an erased person's id does not survive in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        with self._lock, self._transaction():
            self._migrate()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; callers hold self._lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        for statement in _SCHEMA:
            self._db.execute(statement)
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        # A newer pi-kiosk's database (after a downgrade) is used as it is: every query here names its columns.
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                self._db.execute(statement)
        if version < len(_MIGRATIONS):
            self._db.execute(f"PRAGMA user_version = {len(_MIGRATIONS)}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, employee_id: str, status: str, when: datetime) -> Event:
        """Store a new event at a time known to be true; it is durable when this returns."""
        event = new_event(employee_id, status, when)
        self.store(event, Stamp(when.timestamp(), synchronized=True))
        return event

    def store(self, event: Event, stamp: Stamp) -> None:
        """Store an event made earlier (new_event) at `stamp`, its TS1; durable when this returns.
        Storing one again is a no-op: a retried write whose first try did land keeps one row."""
        clock = SYNCHRONIZED if stamp.synchronized else UNSYNCHRONIZED
        boot = (stamp.boot_id, stamp.boot_seconds) if stamp.boot_id else (None, None)
        with self._lock:
            self._db.execute(
                f"INSERT INTO outbox (idempotency_key, payload, {_TIME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                (event.key, json.dumps(event.payload), stamp.wall, clock, *boot),
            )

    def pending(self, limit: int = 50) -> list[Event]:
        """The oldest undelivered events whose time is known (not unsynchronized)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idempotency_key, payload, attempts FROM outbox WHERE clock <> ? ORDER BY id LIMIT ?",
                (UNSYNCHRONIZED, limit)).fetchall()
        return [Event(key, json.loads(payload), attempts) for key, payload, attempts in rows]

    def delivered(self, key: str, keep_seconds: float = KEEP_DELIVERED_SECONDS) -> None:
        """Move a delivered event aside, kept `keep_seconds` for the cooldown (0: not kept); older ones go."""
        now = time.time()
        with self._lock, self._transaction():
            if keep_seconds > 0:
                self._db.execute(
                    f"INSERT OR REPLACE INTO delivered (idempotency_key, payload, delivered_at, {_TIME_COLUMNS}) "
                    f"SELECT idempotency_key, payload, ?, {_TIME_COLUMNS} FROM outbox WHERE idempotency_key = ?",
                    (now, key))
            self._db.execute("DELETE FROM outbox WHERE idempotency_key = ?", (key,))
            self._db.execute("DELETE FROM delivered WHERE delivered_at < ?", (now - keep_seconds,))

    def prune(self, keep_delivered: float, keep_rejected: float, now: float | None = None) -> int:
        """Delete delivered and rejected events older than these (seconds since delivered or rejected); pending
        events are never pruned: they are not delivered yet. Returns how many went."""
        now = time.time() if now is None else now
        with self._lock, self._transaction():
            return sum(self._db.execute(f"DELETE FROM {table} WHERE {column} < ?", (now - keep,)).rowcount
                       for table, column, keep in (("delivered", "delivered_at", keep_delivered),
                                                   ("rejected", "rejected_at", keep_rejected)))

    def forget(self, ids: Collection[str]) -> dict[str, dict[str, int]]:
        """Delete every event of these people, in every state; returns {id: {state: count}} for those found.
        The log is then truncated (waiting for readers, busy_timeout): its old frames held the events."""
        found: dict[str, dict[str, int]] = {}
        with self._lock:
            with self._transaction():
                for state, table in _STATES.items():
                    for key, payload in self._db.execute(f"SELECT idempotency_key, payload FROM {table}").fetchall():
                        employee = str(json.loads(payload).get("E1", ""))
                        if employee in ids:
                            self._db.execute(f"DELETE FROM {table} WHERE idempotency_key = ?", (key,))
                            counts = found.setdefault(employee, dict.fromkeys(_STATES, 0))
                            counts[state] += 1
            if found:
                (busy, _, _) = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy:  # counts only: the ids are personal
                    log.warning("%s: erased events deleted, but a reader kept the write-ahead log from being "
                                "truncated; its old frames are overwritten as the log is reused", self.path)
        return found

    def place(self, boot_id: str, wall_at: Callable[[float], float]) -> int:
        """Give the unsynchronized events of boot `boot_id` their true time, `wall_at(their CLOCK_BOOTTIME)`,
        once its clock is synchronised; they are sent from then on. Returns how many."""
        with self._lock, self._transaction():
            rows = self._db.execute("SELECT idempotency_key, payload, boot_seconds FROM outbox "
                                    "WHERE clock = ? AND boot_id = ?", (UNSYNCHRONIZED, boot_id)).fetchall()
            for key, payload, boot_seconds in rows:
                wall = wall_at(boot_seconds)
                self._db.execute("UPDATE outbox SET payload = ?, created_at = ?, clock = ? WHERE idempotency_key = ?",
                                 (json.dumps({**json.loads(payload), "TS1": _ts1(local_time(wall))}), wall,
                                  SYNCHRONIZED, key))
        return len(rows)

    def estimate_earlier_boots(self, boot_id: str) -> int:
        """Let the unsynchronized events of a boot other than `boot_id` go with the time their clock
        showed, flagged TS1_estimated: their boot never got its clock synchronised. Returns how many."""
        with self._lock, self._transaction():
            rows = self._db.execute("SELECT idempotency_key, payload FROM outbox WHERE clock = ? AND boot_id <> ?",
                                    (UNSYNCHRONIZED, boot_id)).fetchall()
            for key, payload in rows:
                self._db.execute("UPDATE outbox SET payload = ?, clock = ? WHERE idempotency_key = ?",
                                 (json.dumps({**json.loads(payload), "TS1_estimated": True}), ESTIMATED, key))
        return len(rows)

    def reported(self) -> list[tuple[str, Stamp]]:
        """(employee id, when) of every event kept here: pending, delivered within the last day, rejected."""
        with self._lock:
            rows = self._db.execute(" UNION ALL ".join(
                f"SELECT payload, {_TIME_COLUMNS} FROM {table}" for table in ("outbox", "delivered", "rejected")
            )).fetchall()
        return [(str(json.loads(payload).get("E1", "")), Stamp(created_at, clock == SYNCHRONIZED, boot_id or "",
                                                               boot_seconds or 0.0))
                for payload, created_at, clock, boot_id, boot_seconds in rows]

    def failed(self, key: str, error: str) -> None:
        """Note a failed attempt (kept for an operator: `attempts`, `last_error`)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE idempotency_key = ?",
                             (error[:500], key))

    def reject(self, key: str, status: int, response: str) -> None:
        """Move an event the server refused for good aside, kept for an operator to look at."""
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO rejected "
                f"(idempotency_key, payload, rejected_at, status, response, outbox_id, {_TIME_COLUMNS}) "
                f"SELECT idempotency_key, payload, ?, ?, ?, id, {_TIME_COLUMNS} FROM outbox WHERE idempotency_key = ?",
                (time.time(), status, response[:500], key))
            self._db.execute("DELETE FROM outbox WHERE idempotency_key = ?", (key,))

    def requeue(self, keys: Sequence[str] = ()) -> int:
        """Move rejected events (all, or those with these idempotency keys) back into the queue,
        with their keys and at their old place; returns how many. Unknown keys requeue nothing."""
        with self._lock, self._transaction():
            # Events with a recorded place first (their ids are explicit), then 0.1's, oldest first,
            # which take new ids at the end of the queue.
            rows = self._db.execute(
                f"SELECT idempotency_key, payload, outbox_id, {_TIME_COLUMNS} FROM rejected "
                "ORDER BY outbox_id IS NULL, outbox_id, created_at").fetchall()
            if keys:
                wanted = set(keys)
                unknown = sorted(wanted - {row[0] for row in rows})
                if unknown:
                    raise OutboxError(f"{self.path}: no rejected event with idempotency key {', '.join(unknown)}; "
                                      "`pi-kiosk outbox list` shows the rejected events")
                rows = [row for row in rows if row[0] in wanted]
            for key, payload, outbox_id, *times in rows:
                self._db.execute(f"INSERT INTO outbox (id, idempotency_key, payload, {_TIME_COLUMNS}) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (outbox_id, key, payload, *times))
                self._db.execute("DELETE FROM rejected WHERE idempotency_key = ?", (key,))
        return len(rows)

    def depth(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def rejected_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()
        return int(count)

    def unsynchronized(self) -> int:
        """Pending events waiting until the clock is synchronised."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE clock = ?", (UNSYNCHRONIZED,)).fetchone()
        return int(count)

    def backlog(self) -> Backlog:
        """What an operator needs to know about the queue (`pi-kiosk outbox list`)."""
        with self._lock:
            pending, oldest, unsynchronized = self._db.execute(
                "SELECT COUNT(*), MIN(created_at), COUNT(*) FILTER (WHERE clock = ?) FROM outbox",
                (UNSYNCHRONIZED,)).fetchone()
            (rejected,) = self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()
            # A pass stops at the first failure, so the oldest failed event holds the latest error.
            error = self._db.execute("SELECT last_error, attempts FROM outbox WHERE last_error IS NOT NULL "
                                     "ORDER BY id LIMIT 1").fetchone()
        return Backlog(int(pending), int(rejected), oldest, error[0] if error else None, error[1] if error else 0,
                       int(unsynchronized))

    def rejected(self) -> list[RejectedEvent]:
        with self._lock:
            rows = self._db.execute("SELECT idempotency_key, payload, status, created_at, rejected_at FROM rejected "
                                    "ORDER BY rejected_at, outbox_id").fetchall()
        return [RejectedEvent(key, str(json.loads(payload).get("E1", "?")), status, created, rejected)
                for key, payload, status, created, rejected in rows]


class Sender:
    """Delivers pending events, oldest first; `run` loops until stopped, woken early by `wake`."""

    def __init__(self, outbox: Outbox, server: ServerClient, *, retry_initial: float = 2.0, retry_max: float = 300.0,
                 on_change: Callable[[DeliveryStatus], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, timekeeper: Timekeeper | None = None,
                 keep_days: int = OutboxConfig.keep_days) -> None:
        self.outbox = outbox
        # outbox.keep_days bounds both; a delivered event is kept no longer than the cooldown needs it.
        self.keep_rejected = keep_days * 86400.0
        self.keep_delivered = min(KEEP_DELIVERED_SECONDS, self.keep_rejected)
        self._prune_at = 0.0  # clock() of the next prune
        self.timekeeper = timekeeper  # each pass places this boot's unsynchronized events once it can
        self.server = server
        self.url = redact_url(server.attendance_url)  # for messages
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        # Backoffs and blocked times are read on `clock`: time.monotonic, or a test's fake clock (for
        # deliver_due(); run() waits in real time).
        self._clock = clock
        self.tracker = DeliveryTracker(self.url, outbox.depth, on_change, clock)
        self._wake = threading.Event()
        self._failures = 0  # consecutive failed attempts
        self._resume_at = 0.0  # clock() before which delivery is paused

    @property
    def status(self) -> DeliveryStatus:
        """Whether delivery works, what blocks it and since when."""
        return self.tracker.status

    def backoff(self, failures: int) -> float:
        """Pause after `failures + 1` consecutive failures: doubling, capped, with jitter so a
        fleet that lost its server together does not come back in lockstep."""
        return doubling(failures, self.retry_initial, self.retry_max) * random.uniform(0.5, 1.0)

    def retry_in(self) -> float:
        return max(0.0, self._resume_at - self._clock())

    def wake(self) -> None:
        self._wake.set()

    def _back_off(self) -> None:
        self._resume_at = self._clock() + self.backoff(self._failures)
        self._failures += 1

    def _pause(self, event: Event, verdict: Verdict, error: str) -> None:
        self.outbox.failed(event.key, error)
        self._back_off()
        self.tracker.blocked(verdict, self.retry_in())

    def deliver_due(self) -> int:
        """Send pending events unless paused by a failure; returns how many were delivered.
        Stops at the first failure that is not about the event itself: the rest would fail the
        same way, and order is kept."""
        if self.retry_in() > 0:
            return 0
        delivered = 0
        try:
            self._place_unsynchronized()
            for event in self.outbox.pending():
                try:
                    resp = self.server.post_attendance(event.payload, event.key)
                except requests.RequestException as exc:
                    self._pause(event, unreachable(exc), f"{type(exc).__name__}: {exc}")
                    break
                verdict = judge(resp.status_code)
                if verdict.action is Action.BLOCKED:
                    self._pause(event, verdict, verdict.detail)
                    break
                # The server judged the event: it is reachable, takes the token and knows the URL.
                self.tracker.resumed()
                if verdict.action is Action.DELIVERED:
                    self.outbox.delivered(event.key, self.keep_delivered)
                    delivered += 1
                else:
                    self.outbox.reject(event.key, resp.status_code, resp.text)
                    log.error("attendance server rejected event %s with HTTP %d; set aside in the rejected table "
                              "(pi-kiosk outbox list, pi-kiosk outbox requeue)", event.key, resp.status_code)
                self._failures = 0  # once the outbox took the verdict: a failing disk keeps backing off
        except sqlite3.Error as exc:
            # A full or failing disk: the event the server took cannot be marked delivered. Pausing with
            # backoff, as for any failure, keeps the pass from resending it in a tight loop (the server
            # records it once: same Idempotency-Key).
            self._back_off()
            log.warning("attendance delivery paused for %.0f s: the outbox database failed: %s", self.retry_in(), exc)
        return delivered

    def _prune(self) -> None:
        """At most every PRUNE_SECONDS: delete the delivered and rejected events past their keep."""
        if self._clock() < self._prune_at:
            return
        self._prune_at = self._clock() + PRUNE_SECONDS
        try:
            pruned = self.outbox.prune(self.keep_delivered, self.keep_rejected)
        except sqlite3.Error as exc:  # a failing disk: tried again at the next prune
            log.warning("could not delete old events from the outbox: %s", exc)
            return
        if pruned:
            log.info("outbox: %d delivered or rejected event(s) older than outbox.keep_days deleted", pruned)

    def _place_unsynchronized(self) -> None:
        keeper = self.timekeeper
        if keeper is not None and keeper.synchronized():
            placed = self.outbox.place(keeper.boot_id, keeper.wall_at)
            if placed:
                log.info("clock synchronised: %d attendance event(s) that waited for it now carry their true time",
                         placed)

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, then make one last pass (wake() to make it prompt)."""
        while True:
            # Read before the pass: a stop that comes during a pass gets a pass of its own, which sends
            # what was added meanwhile (checked after the pass, such events stayed until the next start).
            stopping = stop.is_set()
            self.deliver_due()
            self._prune()
            if stopping:
                return
            due = self.outbox.depth() > self.outbox.unsynchronized()  # those wait for the clock, not a retry
            self._wake.wait(timeout=min(self.retry_in() if due else 60.0, 60.0))
            self._wake.clear()
