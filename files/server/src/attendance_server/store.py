"""The server's SQLite database: employees, their embeddings per model, attendance events, each kiosk's last
heartbeat.

WAL mode, so the attendance page reads while kiosks write. A repeated Idempotency-Key is stored once
(a UNIQUE column, not a set in memory): a kiosk that lost an answer sends the event again, and the
server answers it as the first time without a second row. A model's gallery is named in the ETag the
kiosks send back by the hash of what it holds, not by a counter: a counter repeats once a database is
restored from a copy (or made anew) and changed again, and a kiosk would keep a gallery that is gone.

Removing a person erases them (biometric data: GDPR Art. 9, BIPA): their embeddings at once, their attendance
events unless they must be kept (payroll law), and a tombstone (id, erased_at) is kept for ERASED_DAYS so that
every gallery answer in that window tells the kiosks to erase their own copies. A later enrolment of the same id
clears the tombstone: the person is enrolled again."""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS employees (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    row INTEGER PRIMARY KEY,
    employee TEXT NOT NULL REFERENCES employees(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_by_model ON embeddings(model, employee);
DROP TABLE IF EXISTS galleries;  -- each model's version counter, before ETags were the galleries' hashes
CREATE TABLE IF NOT EXISTS events (
    row INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    kiosk TEXT NOT NULL,
    employee TEXT NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    received TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(at DESC);
"""
# Entry n takes a database from user_version n to n + 1 (SCHEMA is the first release's tables).
MIGRATIONS = (
    # The kiosk's TS1_estimated: a time from a clock that was never synchronised (1), or a true one (0).
    "ALTER TABLE events ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0",
    # Each kiosk's last heartbeat (its validated JSON body), replaced by the next: only the latest state matters.
    "CREATE TABLE heartbeats (kiosk TEXT PRIMARY KEY, body TEXT NOT NULL, received TEXT NOT NULL)",
    # Who was erased and when (UTC, ISO 8601: compared as text), sent to the kiosks for ERASED_DAYS.
    "CREATE TABLE erasures (employee TEXT PRIMARY KEY, erased_at TEXT NOT NULL)",
)
# How long tombstones are sent to the kiosks: longer than any kiosk stays offline and still syncs (a kiosk
# offline for longer keeps the person until an operator runs `pi-kiosk forget`: files/kiosk/README.md).
ERASED_DAYS = 400


class Conflict(Exception):
    """The request contradicts what is stored (a reused key with another event, a vector of another size)."""


@dataclass(frozen=True)
class Event:
    key: str
    kiosk: str
    employee: str
    status: str
    at: str
    received: str
    estimated: bool  # `at` is the kiosk's estimate (TS1_estimated)


@dataclass(frozen=True)
class LastHeartbeat:
    kiosk: str
    body: dict[str, Any]
    received: datetime  # the server's time, UTC: the kiosk's clock may not be synchronised


@dataclass(frozen=True)
class Gallery:
    model: str
    employees: dict[str, list[list[float]]]
    etag: str  # the hash of the model, every stored vector and every tombstone: the same tag, the same gallery
    erased: list[str]  # ids erased within ERASED_DAYS: the kiosks erase them too


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def erased_cutoff() -> str:
    """Tombstones older than this are no longer sent, and are pruned."""
    return (datetime.now(UTC) - timedelta(days=ERASED_DAYS)).isoformat(timespec="seconds")


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(blob: bytes, dim: int) -> list[float]:
    return list(struct.unpack(f"<{dim}f", blob))


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            (version,) = db.execute("PRAGMA user_version").fetchone()
            for statement in MIGRATIONS[version:]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {max(version, len(MIGRATIONS))}")

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per request (FastAPI runs them in threads); committed when the block ends."""
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten with zeros, so an erased person's vectors do not survive in free pages.
            db.execute("PRAGMA secure_delete=ON")
            with db:
                yield db
        finally:
            db.close()

    # Employees and their embeddings.

    def enroll(self, employee: str, model: str, vectors: Sequence[Sequence[float]], name: str = "",
               replace: bool = False) -> int:
        """Adds (or with replace, replaces) an employee's embeddings for one model; returns how many they have."""
        dims = {len(v) for v in vectors}
        if not vectors or len(dims) != 1 or 0 in dims:
            raise Conflict("embeddings must be a non-empty list of vectors of one length")
        if not all(math.isfinite(x) for v in vectors for x in v) or any(not any(v) for v in vectors):
            raise Conflict("every embedding must be finite and not all zeros")
        (dim,) = dims
        with self.connect() as db:
            known = db.execute("SELECT DISTINCT dim FROM embeddings WHERE model = ?", (model,)).fetchall()
            if known and known[0][0] != dim:
                raise Conflict(f"model {model[:12]} has embeddings of length {known[0][0]}, not {dim}")
            # A name given replaces the one stored; none keeps it.
            db.execute("INSERT INTO employees (id, name, created) VALUES (?, ?, ?) ON CONFLICT(id) "
                       "DO UPDATE SET name = CASE WHEN excluded.name = '' THEN name ELSE excluded.name END",
                       (employee, name, now()))
            db.execute("DELETE FROM erasures WHERE employee = ?", (employee,))  # enrolled again after an erasure
            if replace:
                db.execute("DELETE FROM embeddings WHERE employee = ? AND model = ?", (employee, model))
            db.executemany("INSERT INTO embeddings (employee, model, dim, vector, created) VALUES (?, ?, ?, ?, ?)",
                           [(employee, model, dim, pack(v), now()) for v in vectors])
            (count,) = db.execute("SELECT count(*) FROM embeddings WHERE employee = ? AND model = ?",
                                  (employee, model)).fetchone()
        return int(count)

    def remove(self, employee: str, keep_events: bool = False) -> int | None:
        """Erases an employee: their embeddings, their events unless `keep_events`, and records the tombstone the
        kiosks erase them by. Returns how many events were deleted, or None for an unknown employee."""
        with self.connect() as db:
            if db.execute("DELETE FROM employees WHERE id = ?", (employee,)).rowcount == 0:
                return None
            events = 0 if keep_events else db.execute("DELETE FROM events WHERE employee = ?", (employee,)).rowcount
            db.execute("INSERT INTO erasures (employee, erased_at) VALUES (?, ?) ON CONFLICT (employee) "
                       "DO UPDATE SET erased_at = excluded.erased_at", (employee, now()))
            db.execute("DELETE FROM erasures WHERE erased_at < ?", (erased_cutoff(),))
        return int(events)

    def employees(self) -> dict[str, dict[str, object]]:
        """Every employee: name and embeddings per model (counts, never the vectors)."""
        with self.connect() as db:
            people: dict[str, dict[str, object]] = {
                emp: {"name": name, "embeddings": {}} for emp, name in db.execute("SELECT id, name FROM employees")}
            for emp, model, count in db.execute(
                    "SELECT employee, model, count(*) FROM embeddings GROUP BY employee, model"):
                people[emp]["embeddings"][model] = count  # type: ignore[index]
        return people

    def gallery(self, model: str) -> Gallery:
        digest = hashlib.sha256(model.encode())
        employees: dict[str, list[list[float]]] = {}
        with self.connect() as db:
            for emp, dim, blob in db.execute(
                    "SELECT employee, dim, vector FROM embeddings WHERE model = ? ORDER BY employee, row", (model,)):
                employees.setdefault(emp, []).append(unpack(blob, dim))
                digest.update(f"\0{emp}\0{dim}\0".encode() + blob)  # ids hold no NUL: one reading only
            erased = [emp for (emp,) in db.execute("SELECT employee FROM erasures WHERE erased_at >= ? "
                                                   "ORDER BY employee", (erased_cutoff(),))]
        # A new tombstone changes the tag, so a kiosk whose gallery never held the person still hears of it.
        if erased:  # none: the tag stays what it was before tombstones existed
            digest.update(b"\0\0erased" + "".join(f"\0{emp}" for emp in erased).encode())
        return Gallery(model, employees, f'"{digest.hexdigest()[:32]}"', erased)

    # Attendance.

    def record(self, key: str, kiosk: str, employee: str, status: str, at: str, estimated: bool) -> bool:
        """Stores an event once per key: True when new, False for a replay of the same event;
        Conflict when the key was used for another event."""
        with self.connect() as db:
            new = db.execute("INSERT INTO events (idempotency_key, kiosk, employee, status, at, received, estimated) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(idempotency_key) DO NOTHING",
                             (key, kiosk, employee, status, at, now(), estimated)).rowcount > 0
            if not new:
                stored = db.execute("SELECT kiosk, employee, status, at, estimated FROM events "
                                    "WHERE idempotency_key = ?", (key,)).fetchone()
                if tuple(stored) != (kiosk, employee, status, at, estimated):
                    raise Conflict(f"Idempotency-Key {key} was used for another event")
        return new

    def events(self, kiosk: str | None = None, employee: str | None = None, limit: int = 500) -> list[Event]:
        """Newest first."""
        where, args = [], []
        for column, value in (("kiosk", kiosk), ("employee", employee)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = ("SELECT idempotency_key, kiosk, employee, status, at, received, estimated FROM events"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY at DESC, row DESC LIMIT ?")
        with self.connect() as db:
            return [Event(key, kiosk, employee, status, at, received, bool(estimated))
                    for key, kiosk, employee, status, at, received, estimated in db.execute(sql, (*args, limit))]

    # Heartbeats.

    def heartbeat(self, kiosk: str, body: dict[str, Any], received: datetime | None = None) -> None:
        """Keeps `body` as the kiosk's last heartbeat, received now (or at `received`: tests)."""
        at = (received or datetime.now(UTC)).isoformat(timespec="seconds")
        with self.connect() as db:
            db.execute("INSERT INTO heartbeats (kiosk, body, received) VALUES (?, ?, ?) ON CONFLICT(kiosk) "
                       "DO UPDATE SET body = excluded.body, received = excluded.received",
                       (kiosk, json.dumps(body), at))

    def heartbeats(self) -> dict[str, LastHeartbeat]:
        with self.connect() as db:
            return {kiosk: LastHeartbeat(kiosk, json.loads(body), datetime.fromisoformat(received))
                    for kiosk, body, received in db.execute("SELECT kiosk, body, received FROM heartbeats")}
