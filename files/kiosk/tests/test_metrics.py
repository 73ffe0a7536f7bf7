from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests
from fakeclock import FakeClock

from pi_kiosk import __version__
from pi_kiosk.camera import CameraStatus
from pi_kiosk.delivery import DeliveryStatus
from pi_kiosk.heartbeat import HeartbeatStatus
from pi_kiosk.metrics import HealthServer, Metrics
from pi_kiosk.outbox_writer import WriteStatus
from pi_kiosk.sync import SyncStatus
from pi_kiosk.timekeeping import ClockStatus, local_iso

WALL = 1_800_000_000.0  # the Unix time when the fake clock reads 1000 (its start)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Iterator[HealthServer]:
    # The metrics' clock is the test's: ages and blocked times are exact, however slow the requests.
    metrics = Metrics(clock)
    server = HealthServer(metrics, "127.0.0.1", 0, stale_seconds=30, auth_degraded_seconds=300, threads=3,
                          wall=lambda: WALL + clock() - 1000)
    server.start()
    yield server
    server.stop()


def healthz(health: HealthServer) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{health.port}/healthz", timeout=5)


def blocked(clock: FakeClock, state: str, seconds: float, detail: str = "HTTP 401",
            hint: str = "check server.token") -> DeliveryStatus:
    since = clock() - seconds
    return DeliveryStatus(state, detail, hint, blocked_since=since, state_since=since)


def test_healthz_follows_frame_processing(health: HealthServer, clock: FakeClock) -> None:
    health.metrics.frame_done()
    clock.advance(30)  # stale_seconds: not yet stale
    ok = healthz(health)
    assert ok.status_code == 200
    assert ok.json() == {"status": "ok", "seconds_since_last_frame": 30, "camera": "ok", "delivery": "ok",
                         "outbox": "ok", "sync": "ok", "clock": "synchronized", "version": __version__, "threads": 3,
                         "heartbeat": {"last_ok": None, "failures": 0, "error": ""}}
    clock.advance(1.2)
    stale = healthz(health)
    assert stale.status_code == 503 and json.loads(stale.text)["status"] == "stale"
    assert stale.json()["reason"] == "no frame processed for 31 s (metrics.stale_seconds = 30)"
    health.metrics.frame_done()
    assert healthz(health).json()["seconds_since_last_frame"] == 0 and healthz(health).status_code == 200


def test_healthz_is_degraded_only_after_auth_blocks_delivery_for_long(health: HealthServer,
                                                                       clock: FakeClock) -> None:
    status = blocked(clock, "auth", 100)
    health.metrics.track_outbox(lambda: 20, lambda: 0, lambda: status)
    health.metrics.frame_done()
    assert healthz(health).json()["status"] == "ok"  # a token being rotated: not yet
    clock.advance(200)
    health.metrics.frame_done()
    assert healthz(health).json()["status"] == "ok"  # auth_degraded_seconds: not yet
    clock.advance(1)
    health.metrics.frame_done()
    body = healthz(health)
    assert body.status_code == 200  # frames are still processed
    assert body.json()["status"] == "degraded" and body.json()["delivery"] == "auth"
    assert body.json()["reason"] == "attendance delivery blocked for 301 s by HTTP 401: check server.token"
    status = blocked(clock, "network", 3600, "ConnectionError", "server unreachable")
    assert healthz(health).json()["status"] == "ok"  # the outbox rides out an outage
    clock.advance(31)
    status = blocked(clock, "auth", 301)
    assert healthz(health).status_code == 503 and healthz(health).json()["status"] == "stale"


def test_metrics_are_prometheus_text(health: HealthServer, clock: FakeClock) -> None:
    m = health.metrics
    m.frame_done()
    m.faces.inc(2)
    m.matches.inc()
    m.unknowns.inc()
    m.observe("embed", 0.004)
    m.last_sync.set(1700000000)
    m.track_outbox(lambda: 7, lambda: 2, lambda: blocked(clock, "routing", 42, "HTTP 404", "check server.url"))
    resp = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = resp.text
    for line in ["kiosk_frames_total 1.0", "kiosk_faces_total 2.0", "kiosk_matches_total 1.0",
                 "kiosk_unknowns_total 1.0", "kiosk_outbox_depth 7.0", "kiosk_outbox_rejected 2.0",
                 'kiosk_outbox_delivery{kiosk_outbox_delivery="routing"} 1.0',
                 'kiosk_outbox_delivery{kiosk_outbox_delivery="ok"} 0.0',
                 'kiosk_stage_seconds_bucket{le="0.005",stage="embed"} 1.0',
                 "kiosk_last_successful_sync_timestamp_seconds 1.7e+09", "kiosk_outbox_blocked_seconds 42.0"]:
        assert line in text.splitlines(), line


def test_other_paths_are_404(health: HealthServer) -> None:
    assert requests.get(f"http://127.0.0.1:{health.port}/", timeout=5).status_code == 404


DISK_FULL = WriteStatus("disk_full", "OperationalError: database or disk is full", held=2, dropped=0, limit=10000)


def test_healthz_is_degraded_while_events_are_held_and_while_the_sync_fails(health: HealthServer,
                                                                            clock: FakeClock) -> None:
    writes, sync = DISK_FULL, SyncStatus()
    health.metrics.track_writes(lambda: writes)
    health.metrics.track_sync(lambda: sync)
    health.metrics.frame_done()
    body = healthz(health)
    assert body.status_code == 200  # frames are processed: degraded, not down
    assert body.json()["status"] == "degraded" and body.json()["outbox"] == "disk_full"
    assert body.json()["reason"] == ("disk full (OperationalError: database or disk is full): 2 attendance "
                                     "event(s) held in memory until it takes them again (at most 10000, 0 dropped)")
    sync = SyncStatus("failing", 3, "http://srv/api/employees/embeddings: bad answer: RecursionError: too deep")
    assert healthz(health).json()["reason"].endswith(
        "; gallery sync failed 3 times in a row (last: http://srv/api/employees/embeddings: bad answer: "
        "RecursionError: too deep), recognising with the last good gallery")
    writes = WriteStatus()  # the disk took the events
    assert healthz(health).json()["sync"] == "failing"
    sync = SyncStatus("stopped", 1, "boom")
    assert healthz(health).json()["reason"] == "gallery sync stopped: its thread ended (last error: boom)"
    sync = SyncStatus()
    assert healthz(health).json()["status"] == "ok" and "reason" not in healthz(health).json()


def test_metrics_tell_held_events_and_the_sync_state(health: HealthServer) -> None:
    health.metrics.track_writes(lambda: DISK_FULL)
    health.metrics.track_sync(lambda: SyncStatus("failing", 4, "x"))
    text = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5).text.splitlines()
    for line in ['kiosk_outbox_write{kiosk_outbox_write="disk_full"} 1.0',
                 'kiosk_outbox_write{kiosk_outbox_write="ok"} 0.0', "kiosk_outbox_held_events 2.0",
                 "kiosk_outbox_dropped_events_total 0.0", 'kiosk_gallery_sync{kiosk_gallery_sync="failing"} 1.0',
                 "kiosk_gallery_sync_failures 4.0"]:
        assert line in text, line


def test_healthz_is_503_camera_missing_while_the_kiosk_waits_for_its_camera(health: HealthServer,
                                                                          clock: FakeClock) -> None:
    camera = CameraStatus()
    health.metrics.track_camera(lambda: camera)
    health.metrics.frame_done()
    clock.advance(5)
    camera = CameraStatus("missing", "rtsp://kiosk:***@10.0.0.5/stream", since=clock(), problem="it cannot be opened",
                          attempts=9, retry_seconds=30)
    clock.advance(725)
    body = healthz(health)
    assert body.status_code == 503  # the kiosk sees nothing: a deploy's gate must not commit it
    assert body.json()["status"] == "camera_missing" and body.json()["camera"] == "missing"
    since = datetime.fromtimestamp(WALL + 5).astimezone().isoformat(timespec="seconds")
    assert body.json()["reason"] == (f"camera rtsp://kiosk:***@10.0.0.5/stream missing since {since} (12 min 5 s): "
                                     "it cannot be opened; 9 reopen attempt(s), the next within 30 s")
    text = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5).text.splitlines()
    assert "kiosk_camera_missing 1.0" in text and "kiosk_camera_missing_seconds 725.0" in text
    camera = CameraStatus()
    health.metrics.frame_done()
    assert healthz(health).status_code == 200 and healthz(health).json()["status"] == "ok"
    text = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5).text.splitlines()
    assert "kiosk_camera_missing 0.0" in text and "kiosk_camera_missing_seconds 0.0" in text


def test_an_unsynchronised_clock_is_degraded_and_counted(health: HealthServer) -> None:
    clock = ClockStatus(synchronized=False, boot_seconds=725, waiting=3, path="/run/systemd/timesync/synchronized")
    health.metrics.track_clock(lambda: clock)
    health.metrics.frame_done()
    body = healthz(health)
    assert body.status_code == 200  # frames are processed, events recorded: they wait for the clock
    assert body.json()["status"] == "degraded" and body.json()["clock"] == "unsynchronized"
    assert body.json()["reason"] == ("clock not synchronised for 12 min 5 s (no /run/systemd/timesync/synchronized): "
                                     "3 attendance event(s) waiting for it")
    text = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5).text.splitlines()
    assert "kiosk_clock_synchronized 0.0" in text and "kiosk_clock_waiting_events 3.0" in text
    clock = ClockStatus(synchronized=True, boot_seconds=800)
    assert healthz(health).json()["status"] == "ok" and healthz(health).json()["clock"] == "synchronized"
    assert "kiosk_clock_synchronized 1.0" in requests.get(f"http://127.0.0.1:{health.port}/metrics",
                                                          timeout=5).text.splitlines()


def test_a_failing_heartbeat_is_told_but_degrades_nothing(health: HealthServer) -> None:
    status = HeartbeatStatus(WALL - 120, 2, "HTTP 503: the attendance server failed (server error); see its logs")
    health.metrics.track_heartbeat(lambda: status)
    health.metrics.frame_done()
    body = healthz(health).json()
    assert body["status"] == "ok"  # the server sees the silence: the kiosk itself works
    assert body["heartbeat"] == {"last_ok": local_iso(WALL - 120), "failures": 2, "error": status.error}
    text = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5).text.splitlines()
    assert "kiosk_heartbeat_last_success_timestamp_seconds 1.79999988e+09" in text
    assert "kiosk_heartbeat_failures 2.0" in text
