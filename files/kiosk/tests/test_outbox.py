from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fakeclock import FakeClock, FakeTime
from fakeserver import FakeServer

from pi_kiosk.client import ServerClient
from pi_kiosk.config import ReportConfig
from pi_kiosk.errors import OutboxError
from pi_kiosk.outbox import KEEP_DELIVERED_SECONDS, Backlog, Outbox, Sender
from pi_kiosk.outbox_writer import OutboxWriter
from pi_kiosk.timekeeping import Stamp

WHEN = datetime(2026, 11, 24, 9, 30, 5, tzinfo=timezone(timedelta(hours=1)))


def sender(outbox: Outbox, url: str, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic) -> Sender:
    """A sender with short backoffs; its generous timeout never expires by chance on a loaded machine."""
    return Sender(outbox, ServerClient(url, timeout=timeout), retry_initial=0.01, retry_max=0.05, clock=clock)


def next_pass(s: Sender, clock: FakeClock) -> int:
    """One deliver_due() once the backoff pause is over (on the sender's fake clock: no waiting)."""
    clock.advance(s.retry_in())
    return s.deliver_due()


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    """Poll until `condition` holds; `seconds` only bounds a failing test."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def drain(s: Sender, seconds: float = 60.0) -> None:
    """Deliver until the outbox is empty (retries included); `seconds` only bounds a failing test."""
    deadline = time.monotonic() + seconds
    while s.outbox.depth() and time.monotonic() < deadline:
        s.deliver_due()
        time.sleep(0.02)


def test_event_is_the_guides_message_with_an_idempotency_key(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", WHEN)
    assert sender(box, server.url + "/").deliver_due() == 1
    assert server.posts == [(event.key, {"E1": "E001", "S1": "IN", "TS1": "2026-11-24T09:30:05+01:00"})]
    assert box.depth() == 0


def test_outbox_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "o.sqlite3"
    Outbox(path).add("E001", "IN", WHEN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "state" / "o.sqlite3-wal").exists()


ADDING = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from pi_kiosk.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
for i in range(100_000):  # never all: once the pipe is full, printing blocks until the test reads
    event = box.add(f"E{i:05d}", "IN", datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc))
    print(event.key, flush=True)  # acknowledged: add() has returned
"""


def test_an_event_is_committed_before_add_returns(tmp_path: Path) -> None:
    """A process killed at any moment (here: SIGKILL from outside while it adds events, never
    closing the outbox) loses no event that add() had returned for."""
    path = tmp_path / "o.sqlite3"
    with subprocess.Popen([sys.executable, "-c", ADDING, str(path)], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        acknowledged = [child.stdout.readline().strip() for _ in range(20)]
        child.kill()  # it may be in add() or just past it (blocked printing when the pipe is full)
        acknowledged += child.stdout.read().split()  # printed before the kill landed
        assert child.wait(timeout=60) == -signal.SIGKILL
    assert all(acknowledged), acknowledged  # the child started adding
    box = Outbox(path)
    stored = [event.key for event in box.pending(limit=1_000_000)]
    assert stored[:len(acknowledged)] == acknowledged, "an acknowledged event was lost"
    assert len(stored) - len(acknowledged) <= 1  # at most the one being added: not acknowledged, may be kept
    # A power cut cannot be simulated here: a killed process's writes are still in the kernel's page
    # cache, so this proves the commit, not the sync. A commit survives a power cut because SQLite syncs
    # its log at every commit: WAL with synchronous=FULL (NORMAL, SQLite's WAL default, may lose the
    # last events). The setting is per connection, so only the outbox's own connection can tell.
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Outbox(tmp_path / "o.sqlite3").add("E001", "IN", datetime(2026, 1, 1))


def test_server_errors_keep_the_event_and_retry_with_the_same_key(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", WHEN)
    server.post_script = [500, 503, 429]
    s = sender(box, server.url)
    assert s.deliver_due() == 0 and box.depth() == 1
    drain(s)
    assert box.depth() == 0
    assert server.posts == [(event.key, event.payload)]  # the three failures recorded nothing


def test_timeout_then_retry_delivers_once_per_key(tmp_path: Path, server: FakeServer) -> None:
    """The server processes the first request but answers too late: the client resends with
    the same key, and the server (which dedupes on it) holds exactly one event."""
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", WHEN)
    server.post_script = ["hang"]  # held until released: any client timeout passes first
    s = sender(box, server.url, timeout=0.3)
    assert s.deliver_due() == 0 and box.depth() == 1
    drain(s)
    server.release.set()  # the server now processes the first request too
    wait_for(lambda: len(server.posts) >= 2)
    # Twice, unless a slow machine made a retry time out as well: every attempt has the same key.
    assert set(server.attempts) == {key for key, _ in server.posts} == {event.key}
    assert server.unique_events == {event.key: event.payload}


def test_server_down_loses_nothing_and_keeps_order(tmp_path: Path, server: FakeServer, refused_url: str) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    down = sender(box, refused_url)
    events = [box.add(f"E00{i}", "IN", WHEN) for i in range(3)]
    assert down.deliver_due() == 0
    assert box.depth() == 3
    drain(sender(box, server.url))
    assert [key for key, _ in server.posts] == [e.key for e in events]


def test_permanent_rejection_is_set_aside(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.add("E001", "IN", WHEN)
    second = box.add("E002", "IN", WHEN)
    server.post_script = [400]
    assert sender(box, server.url).deliver_due() == 1
    assert box.depth() == 0 and box.rejected_count() == 1
    assert server.unique_events == {second.key: second.payload}


def test_backoff_doubles_with_jitter_up_to_the_cap(tmp_path: Path) -> None:
    s = Sender(Outbox(tmp_path / "o.sqlite3"), ServerClient("http://x"), retry_initial=2, retry_max=60)
    for attempts, base in [(0, 2), (1, 4), (3, 16), (10, 60), (100, 60)]:
        delays = [s.backoff(attempts) for _ in range(50)]
        assert all(base * 0.5 <= d <= base for d in delays)


CHILD = """
import os, signal, sys
from datetime import datetime, timezone
from pathlib import Path
from pi_kiosk.errors import OutboxError
from pi_kiosk.outbox import Backlog, Outbox, Sender
from pi_kiosk.client import ServerClient
box = Outbox(Path(sys.argv[1]))
if sys.argv[2] == "write":
    box.add("E001", "IN", datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc))
    os.kill(os.getpid(), signal.SIGKILL)  # dies between the write and any send
else:
    Sender(box, ServerClient(sys.argv[3], timeout=30)).deliver_due()
"""


def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=60)


def test_killed_between_write_and_send_restart_delivers_exactly_once(tmp_path: Path, server: FakeServer) -> None:
    path = tmp_path / "o.sqlite3"
    child = run_child(str(path), "write")
    assert child.returncode == -signal.SIGKILL
    box = Outbox(path)
    assert box.depth() == 1 and server.posts == []
    s = sender(box, server.url)
    assert s.deliver_due() == 1
    assert s.deliver_due() == 0  # a second pass, or a second restart, sends nothing more
    box.close()
    assert Outbox(path).depth() == 0
    assert len(server.posts) == 1 and server.posts[0][1]["E1"] == "E001"


def test_killed_while_the_server_answers_resends_the_same_key(tmp_path: Path, server: FakeServer) -> None:
    path = tmp_path / "o.sqlite3"
    event = Outbox(path).add("E001", "IN", WHEN)
    child: list[subprocess.Popen[bytes]] = []
    server.on_post = lambda: os.kill(child[0].pid, signal.SIGKILL)  # recorded, then the client dies
    with subprocess.Popen([sys.executable, "-c", CHILD, str(path), "send", server.url]) as proc:
        child.append(proc)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    server.on_post = None
    box = Outbox(path)
    assert box.depth() == 1  # not confirmed, so not deleted
    assert sender(box, server.url).deliver_due() == 1
    assert [key for key, _ in server.posts] == [event.key, event.key]
    assert server.unique_events == {event.key: event.payload}
    assert box.depth() == 0


def test_run_loop_delivers_on_wake_and_flushes_on_stop(tmp_path: Path, server: FakeServer) -> None:
    import threading

    box = Outbox(tmp_path / "o.sqlite3")
    s = sender(box, server.url)
    stop = threading.Event()
    worker = threading.Thread(target=s.run, args=(stop,))
    worker.start()
    box.add("E001", "IN", datetime.now(UTC))
    s.wake()
    wait_for(lambda: bool(server.posts))
    assert len(server.posts) == 1
    box.add("E002", "IN", datetime.now(UTC))
    stop.set()
    s.wake()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert [body["E1"] for _, body in server.posts] == ["E001", "E002"]
    assert json.loads(json.dumps(server.posts[1][1]))["S1"] == "IN"


def test_a_stop_during_a_pass_still_sends_what_was_added_meanwhile(tmp_path: Path, server: FakeServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    box = Outbox(tmp_path / "o.sqlite3")
    s = sender(box, server.url)
    stop = threading.Event()
    box.add("E001", "IN", datetime.now(UTC))
    first_pass = s.deliver_due

    def pass_during_which_the_service_stops() -> int:
        sent = first_pass()
        if not stop.is_set():
            box.add("E002", "IN", datetime.now(UTC))
            stop.set()
        return sent

    monkeypatch.setattr(s, "deliver_due", pass_during_which_the_service_stops)
    s.run(stop)  # returns after its last pass
    assert [body["E1"] for _, body in server.posts] == ["E001", "E002"]
    assert box.depth() == 0


def test_a_refused_token_keeps_the_whole_backlog_in_order(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    events = [box.add(f"E{i:03d}", "IN", WHEN) for i in range(20)]
    server.post_status = 401
    s = sender(box, server.url)
    assert s.deliver_due() == 0
    assert box.depth() == 20 and box.rejected_count() == 0
    assert [e.key for e in box.pending()] == [e.key for e in events]
    assert server.attempts == [events[0].key]  # the pass stopped at the first refusal
    assert s.status.state == "auth" and s.status.blocked
    server.post_status = 200
    drain(s)
    assert box.depth() == 0 and box.rejected_count() == 0
    assert [key for key, _ in server.posts] == [e.key for e in events]
    assert not s.status.blocked and s.status.blocked_since is None


@pytest.mark.parametrize(("status", "state"), [
    (401, "auth"), (403, "auth"), (407, "auth"), (404, "routing"), (405, "routing"), (421, "routing"),
    (408, "server"), (409, "server"), (425, "server"), (429, "server"), (500, "server"), (503, "server"),
    (302, "routing"), (410, "unexpected"), (418, "unexpected"),
])
def test_answers_that_say_nothing_about_the_event_pause_delivery(tmp_path: Path, server: FakeServer,
                                                                  status: int, state: str) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.add("E001", "IN", WHEN)
    box.add("E002", "IN", WHEN)
    server.post_script = [status]
    clock = FakeClock()  # the pause is 10 ms: a loaded machine may take longer than that between two lines
    s = sender(box, server.url, clock=clock)
    assert s.deliver_due() == 0
    assert box.depth() == 2 and box.rejected_count() == 0 and s.retry_in() > 0
    assert s.status.state == state and s.status.detail == f"HTTP {status}"
    assert s.status.blocked_since == clock()
    assert (box.pending()[0].attempts, len(server.attempts)) == (1, 1)


def test_a_redirect_is_not_followed(tmp_path: Path, server: FakeServer) -> None:
    """Followed, the POST would become a GET that the server answers 200: a lost event."""
    box = Outbox(tmp_path / "o.sqlite3")
    box.add("E001", "IN", WHEN)
    server.post_script = ["redirect"]
    s = sender(box, server.url)
    assert s.deliver_due() == 0
    assert box.depth() == 1 and server.gets == []
    assert s.status.state == "routing" and "set server.url to where it leads" in s.status.hint


@pytest.mark.parametrize("status", [400, 413, 422])
def test_answers_that_judge_the_event_set_aside_exactly_that_one(tmp_path: Path, server: FakeServer,
                                                                 status: int) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    events = [box.add(f"E00{i}", "IN", WHEN) for i in range(4)]
    server.post_script = [200, status]
    assert sender(box, server.url).deliver_due() == 3
    assert box.depth() == 0 and box.rejected_count() == 1
    assert [key for key, _ in server.posts] == [events[0].key, events[2].key, events[3].key]
    (rejected,) = box.rejected()
    assert (rejected.key, rejected.employee_id, rejected.status) == (events[1].key, "E001", status)


def test_409_is_retried_with_the_same_key(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", WHEN)
    server.post_script = [409, 409]
    s = sender(box, server.url)
    assert s.deliver_due() == 0 and s.status.state == "server"
    drain(s)
    assert server.attempts == [event.key] * 3
    assert server.posts == [(event.key, event.payload)] and box.rejected_count() == 0


def test_one_log_line_per_state_change(tmp_path: Path, server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    for i in range(20):
        box.add(f"E{i:03d}", "IN", WHEN)
    server.post_script = [401, 401, 401, 503, 503]
    clock = FakeClock()
    s = sender(box, server.url, clock=clock)
    with caplog.at_level(logging.INFO, logger="pi_kiosk.delivery"):
        for _ in range(6):
            clock.advance(60)  # a pass a minute, past every backoff: blocked from the 1st to the 6th
            s.deliver_due()
    assert box.depth() == 0
    blocked, changed, resumed = (r.getMessage() for r in caplog.records)
    assert blocked.startswith(f"attendance delivery blocked by HTTP 401 from {server.url}/toon/attendance: "
                              "check server.token; 20 event(s) waiting")
    assert changed.startswith("attendance delivery still blocked, now by HTTP 503")
    assert "server error" in changed
    assert resumed.startswith("attendance delivery resumed after 5 min 0 s blocked (last by HTTP 503); "
                              "20 event(s) were waiting")


def test_an_unreachable_server_is_a_network_block(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   refused_url: str) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.add("E001", "IN", WHEN)
    clock = FakeClock()
    s = sender(box, refused_url, clock=clock)
    with caplog.at_level(logging.WARNING, logger="pi_kiosk.delivery"):
        next_pass(s, clock)
        next_pass(s, clock)
    assert (s.status.state, s.status.detail) == ("network", "ConnectionError")
    (line,) = caplog.records
    assert "server unreachable: check the network, DNS and server.url" in line.getMessage()
    (pending,) = box.pending()
    assert pending.attempts == 2
    assert box.backlog().last_error is not None and box.backlog().last_error.startswith("ConnectionError: ")


def test_requeue_restores_keys_and_places(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    e = [box.add(f"E00{i}", "IN", WHEN) for i in range(5)]
    server.post_script = [200, 400, 200, 422, 401]  # e1 and e3 set aside, blocked at e4
    s = sender(box, server.url)
    assert s.deliver_due() == 2
    e5 = box.add("E005", "IN", WHEN)
    assert [r.key for r in box.rejected()] == [e[1].key, e[3].key]
    assert box.requeue([e[3].key]) == 1
    assert [p.key for p in box.pending()] == [e[3].key, e[4].key, e5.key]
    assert box.requeue() == 1 and box.rejected_count() == 0
    assert [p.key for p in box.pending()] == [e[1].key, e[3].key, e[4].key, e5.key]
    drain(s)
    assert [key for key, _ in server.posts] == [e[0].key, e[2].key, e[1].key, e[3].key, e[4].key, e5.key]


def test_requeue_of_an_unknown_key_moves_nothing(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", WHEN)
    server.post_script = [400]
    sender(box, server.url).deliver_due()
    with pytest.raises(OutboxError, match="no rejected event with idempotency key nope; `pi-kiosk outbox list`"):
        box.requeue([event.key, "nope"])
    assert box.rejected_count() == 1 and box.depth() == 0


V01_SCHEMA = """
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE rejected (idempotency_key TEXT PRIMARY KEY, payload TEXT NOT NULL, created_at REAL NOT NULL,
    rejected_at REAL NOT NULL, status INTEGER NOT NULL, response TEXT);
INSERT INTO outbox (idempotency_key, payload, created_at) VALUES ('k-pending', '{"E1": "E009"}', 300);
INSERT INTO rejected VALUES ('k-late', '{"E1": "E002"}', 200, 400, 401, '');
INSERT INTO rejected VALUES ('k-early', '{"E1": "E001"}', 100, 400, 401, '');
"""


def test_a_0_1_outbox_is_migrated_and_its_rejected_events_requeue_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V01_SCHEMA)
    old.close()
    box = Outbox(path)
    assert box.backlog() == Backlog(pending=1, rejected=2, oldest_created_at=300, last_error=None,
                                    last_error_attempts=0)
    assert box.requeue() == 2
    assert [p.key for p in box.pending()] == ["k-pending", "k-early", "k-late"]  # no recorded place: oldest first
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (2,)
    assert "outbox_id" in {row[1] for row in db.execute("PRAGMA table_info(rejected)")}
    db.close()
    assert Outbox(path).depth() == 3  # opening a migrated database again changes nothing


def test_an_outbox_that_cannot_record_a_delivery_pauses_instead_of_resending(
        tmp_path: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A full disk: the server took the event but the outbox cannot delete it. Without a pause the
    sender's loop would post it again at once, for as long as the disk stays full."""
    box = Outbox(tmp_path / "o.sqlite3")
    event = box.add("E001", "IN", WHEN)
    clock = FakeClock()
    s = sender(box, server.url, clock=clock)
    delivered = box.delivered

    def disk_full(key: str, keep_seconds: float) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(box, "delivered", disk_full)
    with caplog.at_level(logging.WARNING):
        assert s.deliver_due() == 0  # no exception escapes to the sender's loop
        assert s.deliver_due() == 0  # paused: nothing posted again
    assert server.attempts == [event.key] and s.retry_in() > 0
    assert "attendance delivery paused for 0 s: the outbox database failed: database or disk is full" in caplog.text
    clock.advance(s.retry_in())
    assert s.deliver_due() == 0 and len(server.attempts) == 2
    assert s.retry_in() > 0 and s._failures == 2  # the backoff grows while the disk stays full
    monkeypatch.setattr(box, "delivered", delivered)  # space is freed
    assert next_pass(s, clock) == 1 and box.depth() == 0
    assert server.unique_events == {event.key: event.payload}  # the same key every time: recorded once


FAKE_HWCLOCK = 1_790_000_000.0  # what a Pi's clock shows after boot: the time fake-hwclock saved
TRUTH = 3 * 86400 + 17.25  # how far behind the truth it is


def test_events_recorded_before_the_clock_is_synchronised_are_sent_once_at_their_true_time(
        tmp_path: Path, server: FakeServer) -> None:
    flag = tmp_path / "synchronized"
    clock = FakeTime(str(flag), wall=FAKE_HWCLOCK)
    box = Outbox(tmp_path / "o.sqlite3")
    s = Sender(box, ServerClient(server.url, timeout=30), clock=clock.monotonic, timekeeper=clock)
    writer = OutboxWriter(box, limit=100, clock=clock.monotonic)
    truths: dict[str, float] = {}
    for i in range(3):
        event = writer.record(f"E00{i}", "IN", clock.stamp())
        truths[event.key] = clock.wall() + TRUTH
        clock.advance(61.5)
    assert s.deliver_due() == 0 and server.attempts == []  # never sent with a wrong time
    assert box.depth() == box.unsynchronized() == box.backlog().unsynchronized == 3
    box.close()
    box = Outbox(tmp_path / "o.sqlite3")  # the service restarted, in the same boot
    s = Sender(box, ServerClient(server.url, timeout=30), clock=clock.monotonic, timekeeper=clock)
    clock.advance(30)
    clock.step(TRUTH)  # NTP sets the clock
    assert s.deliver_due() == 0  # timesyncd has not said so yet
    flag.touch()
    assert s.deliver_due() == 3 and box.depth() == 0
    assert [key for key, _ in server.posts] == list(truths)  # each once, in order, with its key
    for key, body in server.posts:
        assert datetime.fromisoformat(str(body["TS1"])).timestamp() == int(truths[key])  # to the second
        assert "TS1_estimated" not in body


def test_an_event_of_a_boot_that_never_synchronised_its_clock_is_sent_flagged_with_its_estimate(
        tmp_path: Path, server: FakeServer) -> None:
    flag = tmp_path / "synchronized"
    first = FakeTime(str(flag), "boot-1", wall=FAKE_HWCLOCK, boot=20.0)
    box = Outbox(tmp_path / "o.sqlite3")
    writer = OutboxWriter(box, limit=100, clock=first.monotonic)
    lost_boot = writer.record("E001", "IN", first.stamp())
    box.close()
    # The Pi rebooted, its clock back at what fake-hwclock saved, and still no NTP.
    second = FakeTime(str(flag), "boot-2", wall=FAKE_HWCLOCK + 5, boot=15.0)
    box = Outbox(tmp_path / "o.sqlite3")
    this_boot = OutboxWriter(box, limit=100, clock=second.monotonic).record("E002", "IN", second.stamp())
    assert box.estimate_earlier_boots(second.boot_id) == 1
    assert box.estimate_earlier_boots(second.boot_id) == 0  # once
    s = Sender(box, ServerClient(server.url, timeout=30), clock=second.monotonic, timekeeper=second)
    assert s.deliver_due() == 1
    ((key, body),) = server.posts
    assert key == lost_boot.key and body == {**lost_boot.payload, "TS1_estimated": True}
    assert box.unsynchronized() == 1  # this boot's event waits for this boot's clock
    second.step(TRUTH)
    flag.touch()
    assert s.deliver_due() == 1 and server.posts[1][0] == this_boot.key
    assert datetime.fromisoformat(str(server.posts[1][1]["TS1"])).timestamp() == int(FAKE_HWCLOCK + 5 + TRUTH)


def test_delivered_pending_and_rejected_events_are_reported_with_their_stamps_for_a_day(
        tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    clock = FakeTime(wall=time.time())  # delivered_at is the wall clock's: this one
    writer = OutboxWriter(box, limit=100, clock=clock.monotonic)
    for employee in ("E001", "E002", "E003"):
        writer.record(employee, "IN", clock.stamp())
    server.post_script = [200, 400, 401]
    sender(box, server.url).deliver_due()  # E001 delivered, E002 rejected, E003 pending
    assert {employee: stamp for employee, stamp in box.reported()} == {
        employee: clock.stamp() for employee in ("E001", "E002", "E003")}
    longest_cooldown = next(f for f in dataclasses.fields(ReportConfig) if f.name == "cooldown_seconds")
    assert longest_cooldown.metadata["max"] <= KEEP_DELIVERED_SECONDS
    box._db.execute("UPDATE delivered SET delivered_at = delivered_at - ?", (KEEP_DELIVERED_SECONDS + 1,))
    server.post_status = 200
    sender(box, server.url).deliver_due()  # E003 delivered: E001's day is over
    assert sorted(employee for employee, _ in box.reported()) == ["E002", "E003"]
    assert box.requeue() == 1 and [e.payload["E1"] for e in box.pending()] == ["E002"]
    assert dict(box.reported())["E002"] == clock.stamp()  # rejected and requeued, its stamp kept


V02_SCHEMA = V01_SCHEMA + """
ALTER TABLE rejected ADD COLUMN outbox_id INTEGER;
PRAGMA user_version = 1;
"""


def test_a_0_2_outbox_is_migrated_its_events_taking_the_clocks_time_as_before(
        tmp_path: Path, server: FakeServer) -> None:
    path = tmp_path / "o.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(V02_SCHEMA)
    old.close()
    box = Outbox(path)
    assert dict(box.reported()) == {"E009": Stamp(300, synchronized=True), "E002": Stamp(200, synchronized=True),
                                    "E001": Stamp(100, synchronized=True)}
    assert box.unsynchronized() == 0 and [e.key for e in box.pending()] == ["k-pending"]
    assert box._db.execute("PRAGMA user_version").fetchone() == (2,)
