"""PostgreSQL: the setting (a URL; its password in it or in a file, never shown), the schema migrated once, and
several server processes on one database: each event recorded once per Idempotency-Key, heartbeats upserted."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from threading import Barrier

import psycopg
import pytest
from conftest import ADMIN, LOBBY, PG_PASSWORD, bearer
from fastapi.testclient import TestClient

from attendance_server.app import create_app
from attendance_server.backends import masked
from attendance_server.cli import main
from attendance_server.config import ConfigError, parse
from attendance_server.store import MIGRATIONS, Conflict, Store

PROCESSES = 6


def test_several_processes_record_each_event_once(database: Path | str) -> None:
    """Each store is a process of its own (its own connections); they all send the same events at the same time."""
    stores = [Store(database) for _ in range(PROCESSES)]
    try:
        start = Barrier(PROCESSES)

        def deliver(db: Store) -> list[bool]:
            start.wait()
            got = [db.record(f"k{n}", "lobby", "E001", "IN", f"2027-01-01T08:00:{n:02}+00:00", False)
                   for n in range(20)]
            db.heartbeat("lobby", {"status": "ok", "from": id(db)})
            return got

        with ThreadPoolExecutor(PROCESSES) as pool:
            results = list(pool.map(deliver, stores))
        assert [sum(r[n] for r in results) for n in range(20)] == [1] * 20  # each key: one process recorded it
        assert len(stores[0].events()) == 20
        assert list(stores[0].heartbeats()) == ["lobby"]
        with pytest.raises(Conflict, match="Idempotency-Key k3 was used for another event"):
            stores[1].record("k3", "lobby", "E002", "IN", "2027-01-01T08:00:03+00:00", False)
    finally:
        for db in stores:
            db.close()


def test_several_processes_agree_on_a_models_embedding_length(database: Path | str) -> None:
    """First enrolments of a new model with other lengths at the same time: one length wins, each other
    enrolment is refused whole (its person not created), and the model's gallery holds one length only."""
    stores = [Store(database) for _ in range(PROCESSES)]

    def enroll(model: str, start: Barrier, n: int) -> int | None:
        start.wait()
        try:
            stores[n].enroll(f"{model}-p{n}", model, [[1.0] * (4 + n)])
        except Conflict:
            return None
        return 4 + n

    try:
        for model in ("m1", "m2", "m3"):
            with ThreadPoolExecutor(PROCESSES) as pool:
                lengths = [n for n in pool.map(partial(enroll, model, Barrier(PROCESSES)), range(PROCESSES))
                           if n is not None]
            assert len(set(lengths)) == 1, lengths
            winners = sorted(f"{model}-p{n - 4}" for n in lengths)
            assert sorted(p for p in stores[0].employees() if p.startswith(f"{model}-")) == winners
            gallery = stores[0].gallery(model)
            assert sorted(gallery.employees) == winners
            assert {len(v) for vectors in gallery.employees.values() for v in vectors} == set(lengths)
    finally:
        for db in stores:
            db.close()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite's user_version: test_api.py
def test_the_schema_is_migrated_once(database: str) -> None:
    with ThreadPoolExecutor(3) as pool:  # servers started together
        for db in list(pool.map(lambda _: Store(database), range(3))):
            db.close()
    with psycopg.connect(database) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]


def test_the_password_comes_from_a_private_file_and_is_never_shown(postgresql: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = postgresql.replace(f":{PG_PASSWORD}@", "@")
    secret = tmp_path / "db-password"
    secret.write_text(PG_PASSWORD + "\n")
    secret.chmod(0o640)
    base = {"database": url, "admin_token": ADMIN, "kiosks": {"lobby": LOBBY}}
    with pytest.raises(ConfigError, match=rf"{secret}: mode 0640 lets group or others at the database password"):
        parse({**base, "database_password_file": str(secret)}, "server.toml")
    secret.chmod(0o600)
    settings = parse({**base, "database_password_file": str(secret)}, "server.toml")
    assert PG_PASSWORD not in repr(settings) and settings.database_shown() == url
    client = TestClient(create_app(settings))
    assert client.get("/api/employees", headers=bearer(ADMIN)).status_code == 200
    client.app.state.store.close()  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"holds a password, and database_password_file names another: keep one"):
        parse({**base, "database": postgresql, "database_password_file": str(secret)}, "server.toml")
    assert masked(postgresql) == url.replace("@", ":***@") and masked(url + "?password=x") == url + "?password=***"
    config = tmp_path / "server.toml"
    config.write_text(f'database = "{postgresql}"\nadmin_token = "{ADMIN}"\n[kiosks]\nlobby = "{LOBBY}"\n')
    config.chmod(0o600)
    assert main(["check", "--config", str(config)]) == 0
    assert main(["prune", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert PG_PASSWORD not in out and url.replace("@", ":***@") in out


@pytest.mark.parametrize(("setting", "message"), [
    ({"database": "postgresql://fleet@db.example"}, r"database = 'postgresql://fleet@db.example': name the database"),
    ({"database": "/srv/a.sqlite3", "database_password_file": "/p"},
     r"database_password_file is for a PostgreSQL database; database = '/srv/a.sqlite3' is a SQLite file"),
    ({"database": "postgresql://fleet:s3cret@db.example/a", "database_password_file": "/p"},
     r"database = 'postgresql://fleet:\*\*\*@db.example/a' holds a password"),
])
def test_bad_database_settings_are_named_without_the_password(setting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        parse({"admin_token": ADMIN, "kiosks": {"lobby": LOBBY}, **setting}, "server.toml")
    assert "s3cret" not in str(refused.value)
