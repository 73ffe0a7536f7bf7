"""[retention]: events deleted events_days after their receipt, the embeddings of people who left left_days after
the mark; by the server at start and every hour, and by `pi-fleet-server prune`. Time is the tests' to set: the
store's clock (`store.now`) and prune's `now`."""
from __future__ import annotations

import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ADMIN, LOBBY, MODEL_A, bearer
from fastapi.testclient import TestClient

from attendance_server import retention, store
from attendance_server.app import create_app
from attendance_server.cli import main
from attendance_server.config import ConfigError, Retention, Settings, parse
from attendance_server.retention import prune
from attendance_server.store import Store

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def received_at(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    """What the store records from now on, it records as received at `at`."""
    monkeypatch.setattr(store, "now", lambda: store.iso(at))


def record(db: Store, key: str) -> None:
    assert db.record(key, "lobby", "E001", "IN", "2027-01-01T08:00:00+01:00", False)


def test_events_are_kept_events_days_from_their_receipt(database: Path | str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(Store(database)) as db:
        received_at(monkeypatch, NOW - timedelta(days=30, seconds=1))
        record(db, "old")
        received_at(monkeypatch, NOW - timedelta(days=29))
        record(db, "recent")
        kept = Retention(events_days=30)
        assert prune(db, Retention(), NOW).events == 0  # nothing set: kept for ever
        pruned = prune(db, kept, NOW)
        assert pruned.events == 1
        assert pruned.describe().startswith("deleted 1 event(s) received before 2027-01-30T12:00:00+00:00; "
                                            "no embeddings")
        assert [e.key for e in db.events()] == ["recent"]
        assert prune(db, kept, NOW).events == 0  # idempotent: several processes may prune at once
        assert prune(db, kept, NOW + timedelta(days=1, seconds=1)).events == 1


def test_a_person_who_left_leaves_the_galleries_at_once_and_their_embeddings_after_left_days(
        client: TestClient, database: Path | str) -> None:
    for employee in ("E001", "E002"):
        assert client.post(f"/api/employees/{employee}/embeddings", headers=bearer(ADMIN),
                           json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]}).status_code == 201
    etag = client.get("/api/employees/embeddings", params={"model": MODEL_A}, headers=bearer(LOBBY)).headers["ETag"]
    gone = client.post("/api/employees/E001/left", headers=bearer(ADMIN))
    assert gone.status_code == 200 and gone.json()["embeddings_deleted_after"] is None  # no left_days: kept
    assert client.post("/api/employees/E404/left", headers=bearer(ADMIN)).status_code == 404
    assert client.post("/api/employees/E002/left", headers=bearer(LOBBY)).status_code == 403
    sync = client.get("/api/employees/embeddings", params={"model": MODEL_A},
                      headers={**bearer(LOBBY), "If-None-Match": etag})
    assert sync.status_code == 200 and [e["id"] for e in sync.json()["employees"]] == ["E002"]
    people = client.get("/api/employees", headers=bearer(ADMIN)).json()["employees"]
    assert people["E001"]["left"] == gone.json()["left"] and people["E002"]["left"] is None
    db: Store = client.app.state.store  # type: ignore[attr-defined]
    left = datetime.fromisoformat(gone.json()["left"])
    assert db.mark_left("E001", left + timedelta(days=5)) == gone.json()["left"]  # the first mark counts
    assert prune(db, Retention(left_days=7), left + timedelta(days=6)).embeddings == 0
    assert prune(db, Retention(left_days=7), left + timedelta(days=7, seconds=1)).embeddings == 1
    assert db.employees()["E001"]["embeddings"] == {} and db.employees()["E002"]["embeddings"] == {MODEL_A: 1}
    # Enrolled again: back, in the galleries.
    assert client.post("/api/employees/E001/embeddings", headers=bearer(ADMIN),
                       json={"model": MODEL_A, "embeddings": [[0.0, 1.0]]}).status_code == 201
    assert db.employees()["E001"]["left"] is None and set(db.gallery(MODEL_A).employees) == {"E001", "E002"}


def test_the_answer_names_when_the_embeddings_go(database: Path | str) -> None:
    settings = Settings(database, ADMIN, {"lobby": LOBBY}, retention=Retention(left_days=30))
    with closing(Store(database)) as db:
        client = TestClient(create_app(settings, db))
        client.post("/api/employees/E001/embeddings", headers=bearer(ADMIN),
                    json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]})
        answer = client.post("/api/employees/E001/left", headers=bearer(ADMIN)).json()
    left = datetime.fromisoformat(answer["left"])
    assert datetime.fromisoformat(answer["embeddings_deleted_after"]) == left + timedelta(days=30)


def test_the_server_prunes_at_start_and_every_hour(database: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database, ADMIN, {"lobby": LOBBY}, retention=Retention(events_days=1))
    with closing(Store(database)) as db:
        received_at(monkeypatch, datetime.now(UTC) - timedelta(days=2))
        record(db, "before-start")
        monkeypatch.setattr(retention, "PRUNE_EVERY", 0.05)  # an hour, for the test
        with TestClient(create_app(settings, db)):
            assert db.events() == []  # pruned before the first request
            record(db, "while-running")
            deadline = time.monotonic() + 10
            while db.events() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert db.events() == []


def test_prune_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "attendance.sqlite3"
    with closing(Store(database)) as db:
        received_at(monkeypatch, datetime.now(UTC) - timedelta(days=11))
        record(db, "old")
    config = tmp_path / "server.toml"
    config.write_text(f'database = "{database}"\nadmin_token = "{ADMIN}"\n[kiosks]\nlobby = "{LOBBY}"\n'
                      "[retention]\nevents_days = 10\n")
    config.chmod(0o600)
    assert main(["prune", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{database}: deleted 1 event(s) received before ")
    assert "no embeddings (retention.left_days not set: kept for ever)" in out
    with closing(Store(database)) as db:
        assert db.events() == []


BASE = {"database": "attendance.sqlite3", "admin_token": ADMIN, "kiosks": {"lobby": LOBBY}}


def test_retention_settings_are_read() -> None:
    assert parse(BASE, "server.toml").retention == Retention(None, None)
    assert parse({**BASE, "retention": {"events_days": 400, "left_days": 0}}, "server.toml").retention == Retention(
        400, 0)


@pytest.mark.parametrize(("entry", "message"), [
    ({"events_days": -1}, r"retention.events_days must be a whole number of days from 1 to 36500 \(omit it to keep "
                          r"for ever\), got -1"),
    ({"events_days": 0}, r"retention.events_days must be a whole number of days from 1 to 36500.*got 0"),
    ({"left_days": -1}, r"retention.left_days must be a whole number of days from 0 to 36500.*got -1"),
    ({"left_days": 1.5}, r"retention.left_days must be .*got 1.5"),
    ({"left_days": "30"}, r"retention.left_days must be .*got '30'"),
    ({"events_days": True}, r"retention.events_days must be .*got True"),
    ({"events_days": 36501}, r"retention.events_days must be .*got 36501"),
    ({"event_days": 30}, r"unknown retention settings event_days \(allowed: events_days, left_days\)"),
])
def test_bad_retention_settings_are_refused_at_start(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^server.toml: {message}$"):
        parse({**BASE, "retention": entry}, "server.toml")
