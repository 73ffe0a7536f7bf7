"""A full disk: events held in memory, written in order and once when the outbox takes them again."""
from __future__ import annotations

import errno
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from diskfull import FullDisk, disk_full_error
from fakeclock import FakeClock

from pi_kiosk.outbox import Outbox
from pi_kiosk.outbox_writer import RETRY_SECONDS, OutboxWriter, WriteStatus
from pi_kiosk.timekeeping import Stamp

WHEN = Stamp(datetime(2026, 11, 24, 8, 0, tzinfo=UTC).timestamp(), synchronized=True)
TS1 = datetime.fromtimestamp(WHEN.wall).astimezone().isoformat(timespec="seconds")  # in the local time zone


def test_the_error_is_sqlites_own() -> None:
    exc = disk_full_error()
    assert str(exc) == "database or disk is full" and exc.sqlite_errorcode == sqlite3.SQLITE_FULL


def test_a_full_disk_holds_events_and_writes_them_in_order_once_it_frees(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = FullDisk(tmp_path / "o.sqlite3")
    clock = FakeClock()
    wakes: list[str] = []  # the sender is woken whenever events reach the outbox, and only then
    writer = OutboxWriter(box, limit=100, on_written=lambda: wakes.append("wake"), clock=clock)
    first = writer.record("E001", "IN", WHEN)
    assert wakes == ["wake"]
    box.failures = 1_000  # the disk fills up
    with caplog.at_level(logging.WARNING):
        held = [writer.record(f"E00{i}", "IN", WHEN) for i in (2, 3)]  # no exception escapes
    assert writer.status == WriteStatus("disk_full", "OperationalError: database or disk is full", 2, 0, 100)
    assert "held in memory until it takes them again (at most 100, 0 dropped)" in writer.status.describe()
    assert writer.status.describe().startswith("disk full (OperationalError: database or disk is full): 2 ")
    assert [e.key for e in box.pending()] == [first.key] and wakes == ["wake"]
    (line,) = caplog.records  # one line for the state, not one per event
    assert line.levelno == logging.ERROR and "holding attendance events in memory" in line.getMessage()
    tries = box.tries
    writer.retry()
    assert box.tries == tries  # not before RETRY_SECONDS: a full disk costs the frame loop nothing
    box.failures = 0  # space is freed
    clock.advance(RETRY_SECONDS)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        writer.retry()
    assert [e.key for e in box.pending()] == [first.key, *(e.key for e in held)]  # in order, each once, same keys
    assert [e.payload["E1"] for e in box.pending()] == ["E001", "E002", "E003"]
    assert writer.status == WriteStatus(limit=100) and wakes == ["wake", "wake"]
    assert caplog.messages == ["outbox writable again: 2 attendance event(s) held in memory written"]


def test_a_new_event_waits_behind_held_ones(tmp_path: Path) -> None:
    box = FullDisk(tmp_path / "o.sqlite3")
    writer = OutboxWriter(box, limit=100, clock=FakeClock())
    box.failures = 1
    held = writer.record("E001", "IN", WHEN)
    later = writer.record("E002", "IN", WHEN)  # the disk took writes again: the held event goes first
    assert [e.key for e in box.pending()] == [held.key, later.key]
    assert writer.status.state == "ok"


def test_a_write_that_landed_is_not_stored_twice(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", datetime(2026, 11, 24, 8, 0, tzinfo=UTC))
    box.store(event, WHEN)  # e.g. an error reported after the commit, then the retry
    assert [e.key for e in box.pending()] == [event.key]


def test_past_the_cap_the_newest_event_is_dropped_and_logged(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    box = FullDisk(tmp_path / "o.sqlite3")
    writer = OutboxWriter(box, limit=2, clock=FakeClock())
    box.failures = 1_000
    kept = [writer.record(f"E00{i}", "IN", WHEN) for i in (1, 2)]
    with caplog.at_level(logging.ERROR):
        dropped = writer.record("E003", "OUT", WHEN)
    assert writer.status.held == 2 and writer.status.dropped == 1
    assert caplog.messages[-1] == (
        "attendance event DROPPED: 2 event(s) are held in memory already (outbox.memory_events) while the outbox "
        "cannot be written (OperationalError: database or disk is full): employee E003, status OUT, at "
        f"{TS1}, key {dropped.key}")
    box.failures = 0
    writer.record("E004", "IN", WHEN)
    assert [e.payload["E1"] for e in box.pending()] == ["E001", "E002", "E004"]
    assert [e.key for e in box.pending()][:2] == [e.key for e in kept]
    assert writer.status.dropped == 1  # a count since the start, for the counter in /metrics


@pytest.mark.parametrize(("error", "state"), [
    (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk_full"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "error"),  # a read-only remount
    (OSError(errno.EIO, "Input/output error"), "error"),
])
def test_every_write_failure_holds_the_event_and_a_full_disk_says_so(tmp_path: Path, error: Exception,
                                                                      state: str) -> None:
    box = FullDisk(tmp_path / "o.sqlite3", error)
    writer = OutboxWriter(box, limit=10, clock=FakeClock())
    box.failures = 1
    writer.record("E001", "IN", WHEN)
    assert (writer.status.state, writer.status.held) == (state, 1)
    assert writer.status.describe().startswith("disk full" if state == "disk_full" else "outbox not writable")


def test_events_still_held_at_stop_are_logged_as_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = FullDisk(tmp_path / "o.sqlite3")
    writer = OutboxWriter(box, limit=10, clock=FakeClock())
    box.failures = 1_000
    event = writer.record("E001", "IN", WHEN)
    with caplog.at_level(logging.ERROR):
        writer.close()
    assert caplog.messages[-1] == (
        "attendance event LOST at stop, the outbox could not be written (OperationalError: database or disk is "
        f"full): employee E001, status IN, at {TS1}, key {event.key}")
    assert writer.status.held == 0


def test_sqlite_filling_the_real_database_then_space_freed(tmp_path: Path) -> None:
    """No stand-in: SQLite itself refuses the writes (the database may not grow), then takes them."""
    box = Outbox(tmp_path / "o.sqlite3")
    clock = FakeClock()
    writer = OutboxWriter(box, limit=1_000, clock=clock)
    box._db.execute(f"PRAGMA max_page_count = {box._db.execute('PRAGMA page_count').fetchone()[0]}")
    recorded = [writer.record(f"E{i:03d}", "IN", WHEN).key for i in range(200)]  # more than a page holds
    assert writer.status.state == "disk_full" and 0 < writer.status.held < 200
    box._db.execute("PRAGMA max_page_count = 1073741823")
    clock.advance(RETRY_SECONDS)
    writer.retry()
    assert writer.status.state == "ok"
    assert [e.key for e in box.pending(limit=1_000)] == recorded
