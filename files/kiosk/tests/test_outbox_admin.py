"""`pi-kiosk outbox list|requeue`: what an operator sees and does, as the service's user beside the service."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fakeserver import FakeServer
from kioskcli import cli

from pi_kiosk.client import ServerClient
from pi_kiosk.outbox import Outbox, Sender
from pi_kiosk.outbox_admin import listing
from pi_kiosk.outbox_writer import OutboxWriter
from pi_kiosk.timekeeping import Stamp

WHEN = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def rejected_and_blocked(path: Path, server: FakeServer) -> list[str]:
    """Three events: the first set aside (HTTP 422), the second blocked by a refused token."""
    box = Outbox(path)
    keys = [box.add(f"E00{i}", "IN", WHEN).key for i in range(3)]
    server.post_script = [422, 401]
    Sender(box, ServerClient(server.url, timeout=30)).deliver_due()  # a loaded machine: no timeout by chance
    box.close()
    return keys


def test_list_shows_counts_age_last_error_and_rejected_events(write_config: Callable[..., Path], tmp_path: Path,
                                                              server: FakeServer) -> None:
    cfg = write_config(server.url)
    keys = rejected_and_blocked(tmp_path / "outbox.sqlite3", server)
    done = cli("outbox", "list", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["pending: 2", "rejected: 1"]
    assert lines[2].startswith("oldest pending: queued ") and lines[2].endswith(" s ago)")
    assert lines[3] == "last error: HTTP 401 (after 1 attempt(s))"
    (rejected,) = lines[4:]
    assert rejected.startswith(f"rejected {keys[0]} employee E000 HTTP 422 queued ")
    assert '"S1"' not in done.stdout and "IN" not in done.stdout.split()  # no more of the payload than the id


def test_requeue_puts_the_event_back_in_its_place(write_config: Callable[..., Path], tmp_path: Path,
                                                  server: FakeServer) -> None:
    cfg = write_config(server.url)
    path = tmp_path / "outbox.sqlite3"
    keys = rejected_and_blocked(path, server)
    unknown = cli("outbox", "requeue", "--config", str(cfg), "no-such-key")
    assert unknown.returncode == 1 and "no rejected event with idempotency key no-such-key" in unknown.stderr
    done = cli("outbox", "requeue", "--config", str(cfg), keys[0])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("requeued 1 event(s) at their old place in the queue")
    box = Outbox(path)
    assert [e.key for e in box.pending()] == keys and box.rejected_count() == 0


def test_commands_never_create_the_database(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = write_config()
    for args in (["list"], ["requeue"]):
        done = cli("outbox", *args, "--config", str(cfg))
        assert done.returncode == 1
        assert f"outbox.path = '{tmp_path / 'outbox.sqlite3'}': no outbox database there" in done.stderr
    assert not (tmp_path / "outbox.sqlite3").exists()


def test_list_tells_the_events_waiting_for_the_clock(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add("E001", "IN", WHEN)
    OutboxWriter(box, limit=10).record("E002", "IN", Stamp(WHEN.timestamp(), False, "boot-1", 30.0))
    lines = listing(box, WHEN.timestamp() + 60).splitlines()
    assert lines[:3] == ["pending: 2", "rejected: 0", "of the pending, waiting for the clock: 1 (recorded before the "
                         "clock was synchronised: sent at their true time once it is)"]
