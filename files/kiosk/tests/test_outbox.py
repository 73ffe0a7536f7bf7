from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fakeserver import FakeServer

from pi_kiosk.outbox import Outbox, Sender

WHEN = datetime(2026, 11, 24, 9, 30, 5, tzinfo=timezone(timedelta(hours=1)))


def sender(outbox: Outbox, url: str, **kwargs: float) -> Sender:
    return Sender(outbox, url, timeout=kwargs.get("timeout", 1.0), retry_initial=0.01, retry_max=0.05)


def drain(s: Sender, seconds: float = 5.0) -> None:
    """Deliver until the outbox is empty (retries included), within `seconds`."""
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
    server.post_script = ["hang"]
    s = sender(box, server.url, timeout=0.3)
    assert s.deliver_due() == 0 and box.depth() == 1
    drain(s)
    time.sleep(1.5)  # let the hung request finish on the server side
    assert [key for key, _ in server.posts] == [event.key, event.key]
    assert server.unique_events == {event.key: event.payload}


def test_server_down_loses_nothing_and_keeps_order(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    down = sender(box, "http://127.0.0.1:9")  # nothing listens on the discard port
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
    s = Sender(Outbox(tmp_path / "o.sqlite3"), "http://x", retry_initial=2, retry_max=60)
    for attempts, base in [(0, 2), (1, 4), (3, 16), (10, 60), (100, 60)]:
        delays = [s.backoff(attempts) for _ in range(50)]
        assert all(base * 0.5 <= d <= base for d in delays)


CHILD = """
import os, signal, sys
from datetime import datetime, timezone
from pathlib import Path
from pi_kiosk.outbox import Outbox, Sender
box = Outbox(Path(sys.argv[1]))
if sys.argv[2] == "write":
    box.add("E001", "IN", datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc))
    os.kill(os.getpid(), signal.SIGKILL)  # dies between the write and any send
else:
    Sender(box, sys.argv[3], timeout=30).deliver_due()
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
    deadline = time.monotonic() + 5
    while not server.posts and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.posts) == 1
    box.add("E002", "IN", datetime.now(UTC))
    stop.set()
    s.wake()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert [body["E1"] for _, body in server.posts] == ["E001", "E002"]
    assert json.loads(json.dumps(server.posts[1][1]))["S1"] == "IN"
