"""The server's database: employees, their embeddings per model, attendance events, each kiosk's last heartbeat,
the Pis registered at first boot; on SQLite or PostgreSQL (backends.py), with the same SQL.

A repeated Idempotency-Key is stored once (a UNIQUE column and ON CONFLICT, not a set in memory, so several server
processes sharing one database agree): a kiosk that lost an answer sends the event again, and the server answers it
as the first time without a second row. A model's gallery is named in the ETag the kiosks send back by the hash of
what it holds, not by a counter: a counter repeats once a database is restored from a copy (or made anew) and
changed again, and a kiosk would keep a gallery that is gone. Times are ISO 8601 text, as the API returns them.

Removing a person erases them (biometric data: GDPR Art. 9, BIPA): their embeddings at once, their attendance
events unless they must be kept (payroll law), and a tombstone (id, erased_at) is kept for ERASED_DAYS so that
every gallery answer in that window tells the kiosks to erase their own copies. A later enrolment of the same id
clears the tombstone: the person is enrolled again."""
from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .backends import Backend, Transaction, UniqueViolation, backend

# {id}, {bytes} and {text} are each backend's types (backends.py): write TEXT columns as {text}, so that they
# compare and sort alike on both. "row" is quoted: a keyword in PostgreSQL.
SCHEMA = """
CREATE TABLE IF NOT EXISTS employees (
    id {text} PRIMARY KEY,
    name {text} NOT NULL DEFAULT '',
    created {text} NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    "row" {id},
    employee {text} NOT NULL REFERENCES employees(id) ON DELETE CASCADE,
    model {text} NOT NULL,
    dim INTEGER NOT NULL,
    vector {bytes} NOT NULL,
    created {text} NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_by_model ON embeddings(model, employee);
DROP TABLE IF EXISTS galleries;  -- each model's version counter, before ETags were the galleries' hashes
CREATE TABLE IF NOT EXISTS events (
    "row" {id},
    idempotency_key {text} NOT NULL UNIQUE,
    kiosk {text} NOT NULL,
    employee {text} NOT NULL,
    status {text} NOT NULL,
    at {text} NOT NULL,
    received {text} NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(at DESC);
"""
# Entry n takes a database from version n to n + 1 (SCHEMA is the first release's tables); one statement each.
MIGRATIONS = (
    # The kiosk's TS1_estimated: a time from a clock that was never synchronised (true), or a true one (false).
    "ALTER TABLE events ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false",
    # Each kiosk's last heartbeat (its validated JSON body), replaced by the next: only the latest state matters.
    "CREATE TABLE heartbeats (kiosk {text} PRIMARY KEY, body {text} NOT NULL, received {text} NOT NULL)",
    # When a person was marked as having left (NULL: still here): out of the galleries, embeddings deleted later.
    "ALTER TABLE employees ADD COLUMN left_at {text}",
    # Retention deletes events by the server's time of receipt.
    "CREATE INDEX events_by_received ON events(received)",
    # Who was erased and when (UTC, ISO 8601: compared as text), sent to the kiosks for ERASED_DAYS.
    "CREATE TABLE erasures (employee {text} PRIMARY KEY, erased_at {text} NOT NULL)",
    # The Pis that registered themselves at first boot, one per serial; a hostname is one Pi's (UNIQUE: between
    # server processes too). host_key NULL: none sent.
    "CREATE TABLE registrations (serial {text} PRIMARY KEY, hostname {text} NOT NULL UNIQUE, model {text} NOT NULL, "
    "revision {text} NOT NULL, address {text} NOT NULL, host_key {text}, first_seen {text} NOT NULL, "
    "last_seen {text} NOT NULL)",
    # Each model's embedding length, fixed by its first enrolment (the PRIMARY KEY makes server processes agree: the
    # second of two first enrolments with other lengths waits for the first and is refused), then filled from the
    # embeddings already stored.
    "CREATE TABLE model_dims (model {text} PRIMARY KEY, dim INTEGER NOT NULL)",
    "INSERT INTO model_dims (model, dim) SELECT model, MIN(dim) FROM embeddings GROUP BY model",
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
class RegisteredPi:
    """A Pi as it registered itself at first boot (and last registered again: a card flashed anew, a new address)."""
    serial: str
    hostname: str
    model: str
    revision: str
    address: str
    host_key: str | None
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class Gallery:
    model: str
    employees: dict[str, list[list[float]]]
    etag: str  # the hash of the model, every stored vector and every tombstone: the same tag, the same gallery
    erased: list[str]  # ids erased within ERASED_DAYS: the kiosks erase them too


def iso(at: datetime) -> str:
    """How the store writes its own times: UTC to the second, so that text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="seconds")


def now() -> str:
    return iso(datetime.now(UTC))


def erased_cutoff() -> str:
    """Tombstones older than this are no longer sent, and are pruned."""
    return (datetime.now(UTC) - timedelta(days=ERASED_DAYS)).isoformat(timespec="seconds")


def pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(blob: bytes, dim: int) -> list[float]:
    return list(struct.unpack(f"<{dim}f", blob))


class Store:
    def __init__(self, database: Path | str, password: str | None = None) -> None:
        """`database`: a SQLite file's path, or a PostgreSQL URL (`password`: when not in the URL)."""
        self.backend: Backend = backend(database, password)
        self.backend.migrate(SCHEMA.format(**self.backend.types),
                             [m.format(**self.backend.types) for m in MIGRATIONS])

    def close(self) -> None:
        """Lets go of the database's connections (PostgreSQL's pool)."""
        self.backend.close()

    @contextmanager
    def connect(self) -> Iterator[Transaction]:
        """One transaction (FastAPI runs requests in threads): committed when the block ends."""
        with self.backend.transaction() as tx:
            yield tx

    # Employees and their embeddings.

    def enroll(self, employee: str, model: str, vectors: Sequence[Sequence[float]], name: str = "",
               replace: bool = False) -> int:
        """Adds (or with replace, replaces) an employee's embeddings for one model; returns how many they have.
        A person marked as having left is back."""
        return self.enroll_models(employee, {model: vectors}, name, replace)[model]

    def enroll_models(self, employee: str, vectors: Mapping[str, Sequence[Sequence[float]]], name: str = "",
                      replace: bool = False) -> dict[str, int]:
        """`enroll` for several models in one transaction (a photo's embeddings, one per configured model): all
        are stored, or on a Conflict none, so no one is left enrolled with some models only. Counts per model."""
        if not vectors:
            raise Conflict("embeddings of at least one model are needed")
        dims: dict[str, int] = {}
        for model, rows in vectors.items():
            lengths = {len(v) for v in rows}
            if not rows or len(lengths) != 1 or 0 in lengths:
                raise Conflict("embeddings must be a non-empty list of vectors of one length")
            if not all(math.isfinite(x) for v in rows for x in v) or any(not any(v) for v in rows):
                raise Conflict("every embedding must be finite and not all zeros")
            (dims[model],) = lengths
        counts: dict[str, int] = {}
        with self.connect() as db:  # a Conflict raised in the block rolls all of it back
            # A name given replaces the one stored; none keeps it.
            db.execute("INSERT INTO employees (id, name, created) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                       "name = CASE WHEN excluded.name = '' THEN employees.name ELSE excluded.name END, left_at = NULL",
                       (employee, name, now()))
            db.execute("DELETE FROM erasures WHERE employee = ?", (employee,))  # enrolled again after an erasure
            for model, rows in vectors.items():
                dim = dims[model]
                db.execute("INSERT INTO model_dims (model, dim) VALUES (?, ?) ON CONFLICT (model) DO NOTHING",
                           (model, dim))
                (known,) = db.execute("SELECT dim FROM model_dims WHERE model = ?", (model,)).fetchone()
                if known != dim:
                    raise Conflict(f"model {model[:12]} has embeddings of length {known}, not {dim}")
                if replace:
                    db.execute("DELETE FROM embeddings WHERE employee = ? AND model = ?", (employee, model))
                db.executemany("INSERT INTO embeddings (employee, model, dim, vector, created) VALUES (?, ?, ?, ?, ?)",
                               [(employee, model, dim, pack(v), now()) for v in rows])
                (count,) = db.execute("SELECT count(*) FROM embeddings WHERE employee = ? AND model = ?",
                                      (employee, model)).fetchone()
                counts[model] = int(count)
        return counts

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

    def mark_left(self, employee: str, at: datetime | None = None) -> str | None:
        """Marks a person as having left, now (or at `at`: tests): out of every gallery at once, their embeddings
        deleted by retention (`left_days`) counted from the first mark. Returns that time; None: no such person."""
        with self.connect() as db:
            db.execute("UPDATE employees SET left_at = ? WHERE id = ? AND left_at IS NULL",
                       (iso(at or datetime.now(UTC)), employee))
            row = db.execute("SELECT left_at FROM employees WHERE id = ?", (employee,)).fetchone()
        return None if row is None else str(row[0])

    def employees(self) -> dict[str, dict[str, object]]:
        """Every employee: name, when they left (None: still here), embeddings per model (counts, never the
        vectors) and when the latest of them were enrolled."""
        with self.connect() as db:
            people: dict[str, dict[str, object]] = {
                emp: {"name": name, "left": left, "embeddings": {}, "enrolled": ""}
                for emp, name, left in db.execute("SELECT id, name, left_at FROM employees ORDER BY id")}
            for emp, model, count, created in db.execute(
                    "SELECT employee, model, count(*), max(created) FROM embeddings GROUP BY employee, model"):
                people[emp]["embeddings"][model] = count  # type: ignore[index]
                people[emp]["enrolled"] = max(str(people[emp]["enrolled"]), created)
        return people

    def gallery(self, model: str) -> Gallery:
        """The model's embeddings of everyone who has not left."""
        digest = hashlib.sha256(model.encode())
        employees: dict[str, list[list[float]]] = {}
        with self.connect() as db:
            for emp, dim, blob in db.execute(
                    'SELECT e.employee, e.dim, e.vector FROM embeddings e JOIN employees p ON p.id = e.employee '
                    'WHERE e.model = ? AND p.left_at IS NULL ORDER BY e.employee, e."row"', (model,)):
                employees.setdefault(emp, []).append(unpack(blob, dim))
                digest.update(f"\0{emp}\0{dim}\0".encode() + blob)  # ids hold no NUL: one reading only
            erased = [emp for (emp,) in db.execute("SELECT employee FROM erasures WHERE erased_at >= ? "
                                                   "ORDER BY employee", (erased_cutoff(),))]
        # A new tombstone changes the tag, so a kiosk whose gallery never held the person still hears of it.
        if erased:  # none: the tag stays what it was before tombstones existed
            digest.update(b"\0\0erased" + "".join(f"\0{emp}" for emp in erased).encode())
        return Gallery(model, employees, f'"{digest.hexdigest()[:32]}"', erased)

    # Attendance.

    def record(self, key: str, kiosk: str, employee: str, status: str, at: str, estimated: bool) -> bool | None:
        """Stores an event once per key: True when new, False for a replay of the same event, None (nothing stored)
        for a person erased within ERASED_DAYS: a kiosk that saw them before its next sync must not bring their data
        back. Conflict when the key was used for another event. Under concurrency too: of several processes
        inserting one key, the database lets one in, and the others read what it stored."""
        with self.connect() as db:
            if db.execute("SELECT 1 FROM erasures WHERE employee = ?", (employee,)).fetchone():
                return None
            new = db.execute("INSERT INTO events (idempotency_key, kiosk, employee, status, at, received, estimated) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(idempotency_key) DO NOTHING",
                             (key, kiosk, employee, status, at, now(), estimated)).rowcount > 0
            if not new:
                stored = db.execute("SELECT kiosk, employee, status, at, estimated FROM events "
                                    "WHERE idempotency_key = ?", (key,)).fetchone()
                if (*stored[:4], bool(stored[4])) != (kiosk, employee, status, at, estimated):
                    raise Conflict(f"Idempotency-Key {key} was used for another event")
        return new

    def events(self, kiosk: str | None = None, employee: str | None = None, limit: int | None = 500,
               since: str | None = None, until: str | None = None) -> list[Event]:
        """Newest first; `limit` None: all. `since` (included) and `until` (excluded) bound the time as the kiosk
        sent it, compared as text: "2026-11-26" to "2026-11-27" is that day in the kiosk's own time zone."""
        where, args = [], []
        for condition, value in (("kiosk = ?", kiosk), ("employee = ?", employee), ("at >= ?", since),
                                 ("at < ?", until)):
            if value:
                where.append(condition)
                args.append(value)
        sql = ("SELECT idempotency_key, kiosk, employee, status, at, received, estimated FROM events"
               + (" WHERE " + " AND ".join(where) if where else "") + ' ORDER BY at DESC, "row" DESC'
               + (" LIMIT ?" if limit is not None else ""))
        with self.connect() as db:
            return [Event(key, kiosk, employee, status, at, received, bool(estimated))
                    for key, kiosk, employee, status, at, received, estimated
                    in db.execute(sql, (*args, *([limit] if limit is not None else [])))]

    # Retention: each delete is idempotent, so several processes may run it at once.

    def forget_events(self, received_before: datetime) -> int:
        """Deletes the events the server received before this time; returns how many."""
        with self.connect() as db:
            return db.execute("DELETE FROM events WHERE received < ?", (iso(received_before),)).rowcount

    def forget_left(self, left_before: datetime) -> int:
        """Deletes the embeddings of the people marked as having left before this time; returns how many."""
        with self.connect() as db:
            return db.execute("DELETE FROM embeddings WHERE employee IN "
                              "(SELECT id FROM employees WHERE left_at < ?)", (iso(left_before),)).rowcount

    # Heartbeats.

    def heartbeat(self, kiosk: str, body: dict[str, Any], received: datetime | None = None) -> None:
        """Keeps `body` as the kiosk's last heartbeat, received now (or at `received`: tests)."""
        with self.connect() as db:
            db.execute("INSERT INTO heartbeats (kiosk, body, received) VALUES (?, ?, ?) ON CONFLICT(kiosk) "
                       "DO UPDATE SET body = excluded.body, received = excluded.received",
                       (kiosk, json.dumps(body), iso(received or datetime.now(UTC))))

    def heartbeats(self) -> dict[str, LastHeartbeat]:
        with self.connect() as db:
            return {kiosk: LastHeartbeat(kiosk, json.loads(body), datetime.fromisoformat(received))
                    for kiosk, body, received in db.execute("SELECT kiosk, body, received FROM heartbeats")}

    # Registrations: the Pis that registered themselves at first boot.

    def register(self, serial: str, hostname: str, model: str, revision: str, address: str,
                 host_key: str | None) -> str:
        """Registers a Pi by its serial: "new", or "updated" for a serial registered before (a card flashed again,
        a new address: all but first_seen replaced). Conflict, with nothing changed, when another serial holds the
        hostname. Under concurrency too: the UNIQUE hostname decides between processes, not a read beforehand."""
        row = (serial, hostname, model, revision, address, host_key, now())
        while True:
            try:
                registered = self._register(*row)
            except UniqueViolation:
                holder = self._holder(hostname)
                if holder not in (None, serial):
                    raise Conflict(f"hostname {hostname} is registered to the Pi of serial {holder}: if that Pi is "
                                   f"gone, delete its registration (DELETE /api/registrations/{holder}); else flash "
                                   "this card with another hostname") from None
                # Its holder was deleted since, or was this serial, registered by another process at the same time
                # (PostgreSQL may find the hostname taken before the serial): the next attempt sees which.
                continue
            if registered:
                return registered
            # Deleted by another process between the insert and the update (PostgreSQL): registered anew next.

    def _register(self, serial: str, hostname: str, model: str, revision: str, address: str, host_key: str | None,
                  seen: str) -> str | None:
        """One attempt, in one transaction: "new", "updated", or None when the serial was there for the insert and
        gone for the update."""
        with self.connect() as db:
            if db.execute("INSERT INTO registrations (serial, hostname, model, revision, address, host_key, "
                          "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(serial) DO NOTHING",
                          (serial, hostname, model, revision, address, host_key, seen, seen)).rowcount:
                return "new"
            if db.execute("UPDATE registrations SET hostname = ?, model = ?, revision = ?, address = ?, "
                          "host_key = ?, last_seen = ? WHERE serial = ?",
                          (hostname, model, revision, address, host_key, seen, serial)).rowcount:
                return "updated"
        return None

    def _holder(self, hostname: str) -> str | None:
        """The serial registered with this hostname."""
        with self.connect() as db:
            row = db.execute("SELECT serial FROM registrations WHERE hostname = ?", (hostname,)).fetchone()
        return None if row is None else str(row[0])

    def registrations(self) -> list[RegisteredPi]:
        """Every registered Pi, by hostname."""
        with self.connect() as db:
            return [RegisteredPi(*row) for row in db.execute(
                "SELECT serial, hostname, model, revision, address, host_key, first_seen, last_seen "
                "FROM registrations ORDER BY hostname")]

    def unregister(self, serial: str) -> bool:
        """Deletes a Pi's registration (its hostname is free again); False: no such serial."""
        with self.connect() as db:
            return db.execute("DELETE FROM registrations WHERE serial = ?", (serial,)).rowcount > 0
