"""The heartbeat against the fake server, on the fake clock: its body, its interval, failures logged
once per streak, and nothing queued (the running service's heartbeat: test_service.py)."""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fakeclock import FakeTime
from fakeserver import FakeServer

from pi_kiosk import __version__
from pi_kiosk.camera import CameraStatus
from pi_kiosk.client import ServerClient
from pi_kiosk.delivery import DeliveryStatus
from pi_kiosk.heartbeat import Heartbeat, deployed_release, soc_temperature, throttled
from pi_kiosk.metrics import HealthServer, Metrics
from pi_kiosk.timekeeping import ClockStatus, local_iso

TOKEN = "kiosk-token-0123456789"
MODEL = "ab" * 32
INTERVAL = 60.0


class Waits:
    """The heartbeat's wait: moves the fake clock by what is asked, and says "stop" after `beats` heartbeats."""

    def __init__(self, clock: FakeTime, beats: int) -> None:
        self.clock, self.beats, self.asked = clock, beats, list[float]()

    def __call__(self, seconds: float) -> bool:
        self.asked.append(seconds)
        self.clock.advance(seconds)
        return len(self.asked) >= self.beats


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(boot_id="boot-7", boot=500.0)


@pytest.fixture
def health(clock: FakeTime) -> Iterator[HealthServer]:
    server = HealthServer(Metrics(clock.monotonic), "127.0.0.1", 0, stale_seconds=30, auth_degraded_seconds=300,
                          threads=2, wall=clock.wall)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make(health: HealthServer, clock: FakeTime, tmp_path: Path) -> Callable[..., Heartbeat]:
    def make(url: str, waits: Waits | None = None) -> Heartbeat:
        return Heartbeat(ServerClient(url, token=TOKEN, timeout=30), health.metrics, clock, MODEL, INTERVAL,
                         waits or Waits(clock, 1), release="0.2.0-1a2b3c4d", thermal_path=tmp_path / "temp",
                         throttled_path=tmp_path / "get_throttled")
    return make


def test_the_body_tells_release_model_health_clock_outbox_and_the_pi(
        make: Callable[..., Heartbeat], health: HealthServer, clock: FakeTime, server: FakeServer,
        tmp_path: Path) -> None:
    (tmp_path / "temp").write_text("48312\n")  # millidegrees
    (tmp_path / "get_throttled").write_text("50005\n")  # under-voltage and throttled, now and since boot
    metrics = health.metrics
    metrics.track_outbox(lambda: 3, lambda: 1, DeliveryStatus)
    metrics.track_clock(lambda: ClockStatus(False, 75.0, 2, "/run/systemd/timesync/synchronized"))
    metrics.frame_done()
    clock.advance(1.5)
    heartbeat = make(server.url)
    assert heartbeat.beat(health.healthy)
    ((authorization, body),) = server.heartbeats
    assert authorization == f"Bearer {TOKEN}"
    assert str(body.pop("reason")).startswith("clock not synchronised for 1 min 15 s")
    assert body == {
        "release": "0.2.0-1a2b3c4d", "version": __version__, "model_sha256": MODEL, "status": "degraded",
        "camera": "ok", "camera_problem": "", "clock_synchronized": False, "clock_waiting_events": 2,
        "outbox_depth": 3, "outbox_rejected": 1, "seconds_since_last_frame": 1.5, "temperature_celsius": 48.3,
        "throttled": 0x50005, "sent_at": local_iso(clock.wall()), "boot_id": "boot-7", "boot_seconds": 501.5}
    assert heartbeat.status.last_ok == clock.wall() and heartbeat.status.failures == 0


def test_a_missing_camera_is_named_and_sensors_off_a_pi_are_null(
        make: Callable[..., Heartbeat], health: HealthServer, server: FakeServer) -> None:
    health.metrics.track_camera(lambda: CameraStatus("missing", "/dev/video0", 400.0, "it cannot be opened", 3, 4.0))
    make(server.url).beat(health.healthy)
    ((_, body),) = server.heartbeats
    assert (body["status"], body["camera"], body["camera_problem"]) == ("camera_missing", "missing",
                                                                        "it cannot be opened")
    assert str(body["reason"]).startswith("camera /dev/video0 missing since ")
    assert body["temperature_celsius"] is None and body["throttled"] is None  # no such files in the test's directory


def test_one_heartbeat_at_start_then_one_per_interval(make: Callable[..., Heartbeat], health: HealthServer,
                                                      clock: FakeTime, server: FakeServer) -> None:
    waits = Waits(clock, 4)
    make(server.url, waits).run(health.healthy)  # returns once its wait says the service stops
    assert waits.asked == [INTERVAL] * 4
    sent = [datetime.fromisoformat(str(body["sent_at"])).timestamp() for _, body in server.heartbeats]
    assert [b - a for a, b in itertools.pairwise(sent)] == [INTERVAL] * 3
    assert [body["boot_seconds"] for _, body in server.heartbeats] == [500.0, 560.0, 620.0, 680.0]


def test_an_outage_is_logged_once_retried_each_interval_and_nothing_is_queued(
        make: Callable[..., Heartbeat], health: HealthServer, clock: FakeTime, server: FakeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    depth = [0]
    health.metrics.track_outbox(lambda: depth[0], lambda: 0, DeliveryStatus)
    heartbeat = make(server.url)
    assert heartbeat.beat(health.healthy)
    taken = heartbeat.status.last_ok
    server.heartbeat_status = 503
    with caplog.at_level(logging.INFO, logger="pi_kiosk.heartbeat"):
        for _ in range(5):  # five intervals with the server failing, the state changing meanwhile
            clock.advance(INTERVAL)
            depth[0] += 1
            assert not heartbeat.beat(health.healthy)
        assert heartbeat.status.failures == 5 and heartbeat.status.last_ok == taken
        assert heartbeat.status.error == "HTTP 503: the attendance server failed (server error); see its logs"
        server.heartbeat_status = 200
        clock.advance(INTERVAL)
        assert heartbeat.beat(health.healthy)
    assert len(server.heartbeat_attempts) == 7  # one per interval, no retry in between
    assert [body["outbox_depth"] for _, body in server.heartbeats] == [0, 5]  # the latest state, no backlog
    assert heartbeat.status.failures == 0 and heartbeat.status.last_ok == clock.wall()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"heartbeat to {server.url}/api/kiosk/heartbeat failed (HTTP 503: the attendance server "
                        "failed (server error); see its logs); trying again every 60 s with the state of then, "
                        "logged again once it works"]
    assert f"heartbeat to {server.url}/api/kiosk/heartbeat works again after 5 failed one(s)" in caplog.text


def test_a_server_that_is_down_is_a_failure_with_its_hint(make: Callable[..., Heartbeat], health: HealthServer,
                                                          refused_url: str) -> None:
    heartbeat = make(refused_url)
    assert not heartbeat.beat(health.healthy)
    assert heartbeat.status.healthz() == {
        "last_ok": None, "failures": 1,
        "error": "ConnectionError: server unreachable: check the network, DNS and server.url"}


def test_the_release_is_the_deployed_virtualenv_s_directory(tmp_path: Path) -> None:
    release = tmp_path / "opt/pi-kiosk/releases/0.2.0-1a2b3c4d"
    release.mkdir(parents=True)
    (tmp_path / "opt/pi-kiosk/current").symlink_to(release)
    assert deployed_release(str(release)) == "0.2.0-1a2b3c4d"
    assert deployed_release(str(tmp_path / "opt/pi-kiosk/current")) == "0.2.0-1a2b3c4d"  # the unit's path
    assert deployed_release(str(tmp_path / "venv")) is None  # a development checkout


def test_sensors_read_sysfs_and_are_null_when_unreadable(tmp_path: Path) -> None:
    (tmp_path / "temp").write_text("-2500\n")
    (tmp_path / "throttled").write_text("0x0\n")
    (tmp_path / "garbage").write_text("n/a\n")
    assert soc_temperature(tmp_path / "temp") == -2.5 and throttled(tmp_path / "throttled") == 0
    assert soc_temperature(tmp_path / "garbage") is None and throttled(tmp_path / "missing") is None
