"""Heartbeats and the kiosks' state: stored (the last one per kiosk, named by its token), listed, marked silent, on
the page and as Prometheus metrics."""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, DOOR, LOBBY, bearer
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from attendance_server.config import ConfigError, parse
from attendance_server.store import Store

MODEL = "c" * 64


def beat(**fields: Any) -> dict[str, Any]:
    """A heartbeat as pi-kiosk sends it (heartbeat.py), with `fields` changed."""
    return {"release": "0.2.0-1a2b3c4d", "version": "0.2.0", "model_sha256": MODEL, "status": "ok", "reason": "",
            "camera": "ok", "camera_problem": "", "clock_synchronized": True, "clock_waiting_events": 0,
            "outbox_depth": 0, "outbox_rejected": 0, "seconds_since_last_frame": 0.1, "temperature_celsius": 48.3,
            "throttled": 0, "sent_at": "2026-11-26T09:00:00+01:00", "boot_id": "0c7c", "boot_seconds": 125.4,
            **fields}


def send(client: TestClient, body: dict[str, Any], token: str = LOBBY) -> int:
    return client.post("/api/kiosk/heartbeat", json=body, headers=bearer(token)).status_code


def kiosks(client: TestClient) -> dict[str, dict[str, Any]]:
    got = client.get("/api/kiosks", headers=bearer(ADMIN))
    assert got.status_code == 200
    return {k["name"]: k for k in got.json()["kiosks"]}


def store_of(client: TestClient) -> Store:
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    return store


def test_the_last_heartbeat_is_kept_under_the_token_s_kiosk(client: TestClient) -> None:
    assert send(client, beat(outbox_depth=4)) == 204
    # The body claims another kiosk, and carries a field this server does not know: neither counts.
    assert send(client, beat(outbox_depth=1, kiosk="door", name="door", future_field=[1, 2])) == 204
    listed = kiosks(client)
    lobby, door = listed["lobby"], listed["door"]
    assert lobby["heartbeat"]["outbox_depth"] == 1  # replaced: only the last is kept
    assert "kiosk" not in lobby["heartbeat"] and "future_field" not in lobby["heartbeat"]
    assert (lobby["silent"], lobby["state"], lobby["heartbeat"]["release"]) == (False, "ok", "0.2.0-1a2b3c4d")
    assert 0 <= lobby["seconds_since_heard"] < 60
    assert datetime.fromisoformat(lobby["last_heard"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert door == {"name": "door", "last_heard": None, "seconds_since_heard": None, "silent": True,
                    "state": "never heard", "heartbeat": None}
    assert len(store_of(client).heartbeats()) == 1


@pytest.mark.parametrize("body", [
    {k: v for k, v in beat().items() if k != "status"},   # no status
    beat(temperature_celsius=500),                        # out of bounds
    beat(outbox_depth=-1),
    beat(throttled=1 << 40),
    beat(reason="x" * 5000),
    beat(model_sha256="not-a-sha"),
    beat(sent_at="2026-11-26T09:00:00"),                  # a time without its offset
])
def test_a_heartbeat_out_of_bounds_is_refused(client: TestClient, body: dict[str, Any]) -> None:
    assert send(client, body) == 422
    assert store_of(client).heartbeats() == {}


def test_heartbeats_come_from_kiosks_and_the_kiosks_state_is_the_admin_s(client: TestClient) -> None:
    assert send(client, beat(), token=ADMIN) == 403
    assert send(client, beat(), token="") == 401
    for path in ("/api/kiosks", "/metrics"):
        assert client.get(path, headers=bearer(LOBBY)).status_code == 403
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer(ADMIN)).status_code == 200


def test_a_kiosk_not_heard_from_for_silent_after_seconds_is_silent(client: TestClient) -> None:
    assert send(client, beat()) == 204
    now = datetime.now(UTC)
    store_of(client).heartbeat("door", beat(), received=now - timedelta(seconds=170))
    assert kiosks(client)["door"]["silent"] is False  # within the default 180 s
    store_of(client).heartbeat("door", beat(status="degraded", reason="disk full"),
                               received=now - timedelta(minutes=12))
    door = kiosks(client)["door"]
    assert (door["silent"], door["state"]) == (True, "silent for 12 min")
    assert door["heartbeat"]["reason"] == "disk full"  # what it said last, still shown
    assert client.get("/api/kiosks", headers=bearer(ADMIN)).json()["silent_after_seconds"] == 180


def metrics(client: TestClient) -> dict[tuple[str, str], float]:
    """(metric name, kiosk) -> value, as Prometheus parses the text."""
    got = client.get("/metrics", headers=bearer(ADMIN))
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, sample.labels["kiosk"]): sample.value
            for family in text_string_to_metric_families(got.text) for sample in family.samples}


def test_metrics_per_kiosk_are_made_from_the_database_at_scrape_time(client: TestClient, tmp_path: Path) -> None:
    assert metrics(client) == {("attendance_kiosk_up", "door"): 0.0, ("attendance_kiosk_up", "lobby"): 0.0}
    assert send(client, beat(status="camera_missing", reason="camera /dev/video0 missing", camera="missing",
                             throttled=0x50005, outbox_depth=3, clock_synchronized=False)) == 204
    old = datetime.now(UTC) - timedelta(hours=1)
    # Another server process sharing the database: what it stores is in this one's next scrape.
    Store(tmp_path / "attendance.sqlite3").heartbeat("door", beat(throttled=0x50000, release=None), received=old)
    got = metrics(client)
    assert got[("attendance_kiosk_up", "lobby")] == 1.0 and got[("attendance_kiosk_up", "door")] == 0.0
    assert abs(got[("attendance_kiosk_last_heartbeat_timestamp_seconds", "lobby")] - datetime.now(UTC).timestamp()) < 60
    assert got[("attendance_kiosk_last_heartbeat_timestamp_seconds", "door")] == old.replace(microsecond=0).timestamp()
    lobby = {name: got[(name, "lobby")] for name, kiosk in got if kiosk == "lobby"}
    assert lobby == {**lobby, "attendance_kiosk_healthy": 0.0, "attendance_kiosk_camera_ok": 0.0,
                     "attendance_kiosk_clock_synchronized": 0.0, "attendance_kiosk_outbox_depth": 3.0,
                     "attendance_kiosk_temperature_celsius": 48.3, "attendance_kiosk_throttled": 1.0,
                     "attendance_kiosk_seconds_since_last_frame": 0.1, "attendance_kiosk_info": 1.0}
    # Throttled since boot, not now: 0. Its last word is kept while silent; `up` says it is silent.
    assert got[("attendance_kiosk_throttled", "door")] == 0.0 and got[("attendance_kiosk_healthy", "door")] == 1.0
    text = client.get("/metrics", headers=bearer(ADMIN)).text
    assert ('attendance_kiosk_info{kiosk="lobby",model_sha256="' + MODEL + '",release="0.2.0-1a2b3c4d",'
            'version="0.2.0"} 1.0') in text.splitlines()


def test_the_page_leads_with_the_kiosks(client: TestClient) -> None:
    assert send(client, beat(status="degraded", reason="clock not synchronised for 2 min 5 s"), token=DOOR) == 204
    store_of(client).heartbeat("lobby", beat(release="0.1.9-9f8e7d6c"), received=datetime.now(UTC) - timedelta(hours=3))
    page = client.get("/", headers=bearer(ADMIN)).text
    assert page.index("<h1>Kiosks</h1>") < page.index("<h1>Attendance</h1>")
    fleet = page[page.index("<table id=fleet>"):page.index("<h1>Attendance</h1>")]
    assert "1 silent" in page
    assert "<td class=problem>clock not synchronised for 2 min 5 s</td><td>0.2.0-1a2b3c4d</td>" in fleet
    assert "<td class=silent>silent for 3 h 0 min</td><td>0.1.9-9f8e7d6c</td>" in fleet
    assert "(3 h 0 min ago)" in fleet and re.search(r"\(\d+ s ago\)", fleet)


def test_silent_after_seconds_is_a_setting(tmp_path: Path) -> None:
    base = {"database": str(tmp_path / "db.sqlite3"), "admin_token": ADMIN, "kiosks": {"lobby": LOBBY}}
    assert parse(base, "server.toml").silent_after_seconds == 180
    assert parse({**base, "silent_after_seconds": 600}, "server.toml").silent_after_seconds == 600
    for bad in (0, -1, 1.5, True, "180", 8 * 86400):
        with pytest.raises(ConfigError, match=r"silent_after_seconds must be a whole number from 1 to 604800"):
            parse({**base, "silent_after_seconds": bad}, "server.toml")


def test_a_database_of_an_earlier_release_gains_the_heartbeats(tmp_path: Path) -> None:
    path = tmp_path / "attendance.sqlite3"
    Store(path)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE heartbeats")
        db.execute("DROP TABLE erasures")  # nor this, of a later release
        db.execute("PRAGMA user_version = 1")
    store = Store(path)
    store.heartbeat("lobby", beat())
    assert store.heartbeats()["lobby"].body["status"] == "ok"
