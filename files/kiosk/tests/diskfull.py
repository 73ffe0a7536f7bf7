"""A full disk for the outbox: SQLite's own SQLITE_FULL error, and an outbox whose writes fail with it."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from pi_kiosk.outbox import Event, Outbox
from pi_kiosk.timekeeping import Stamp


def disk_full_error() -> sqlite3.OperationalError:
    """SQLite's own SQLITE_FULL ("database or disk is full"), from a database allowed one page."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    try:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("SQLite wrote past max_page_count")


class FullDisk(Outbox):
    """An outbox whose next `failures` writes fail with `error` (a full disk), then succeed."""

    def __init__(self, path: Path, error: Exception | None = None) -> None:
        super().__init__(path)
        self.error = error or disk_full_error()
        self.failures = 0
        self.tries = 0

    def store(self, event: Event, stamp: Stamp) -> None:
        self.tries += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        super().store(event, stamp)
