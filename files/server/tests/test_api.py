"""The API as a kiosk and an operator use it, through HTTP (FastAPI's TestClient)."""
from __future__ import annotations

import base64
import importlib.util
import sqlite3
import tempfile
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ADMIN, DOOR, LOBBY, MODEL_A, MODEL_B, bearer, png
from fastapi.testclient import TestClient

from attendance_server.app import create_app
from attendance_server.config import ConfigError, EmbeddingModel, Settings, parse
from attendance_server.store import MIGRATIONS, Conflict, Store


def event(employee: str = "E001", at: str = "2026-11-26T09:00:00+01:00") -> dict[str, str]:
    return {"E1": employee, "S1": "IN", "TS1": at}


def post(client: TestClient, body: dict[str, str], key: str | None = "k1", token: str = LOBBY) -> int:
    headers = {**bearer(token), **({"Idempotency-Key": key} if key else {})}
    return client.post("/toon/attendance", json=body, headers=headers).status_code


def test_a_repeated_idempotency_key_is_stored_once_and_answered_2xx(client: TestClient) -> None:
    assert post(client, event()) == 201
    assert post(client, event()) == 200  # the kiosk lost the first answer: same key, same event
    assert post(client, event(), key="k2") == 201  # another event of the same person
    rows = client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"]
    assert [(r["key"], r["kiosk"], r["employee"]) for r in rows] == [("k2", "lobby", "E001"), ("k1", "lobby", "E001")]


def test_a_key_reused_for_another_event_is_refused(client: TestClient) -> None:
    assert post(client, event()) == 201
    assert post(client, event("E002")) == 422


@pytest.mark.parametrize(("body", "key", "status"), [
    (event(), None, 400),                                        # no Idempotency-Key
    ({"E1": "E001", "S1": "IN"}, "k", 422),                      # no time
    (event(at="2026-11-26T09:00:00"), "k", 422),                 # a time without its UTC offset
    (event("E 001; DROP TABLE"), "k", 422),                      # not an employee id
    ({**event(), "E2": "x"}, "k", 422),                          # a field the API does not have
])
def test_bad_events_get_a_clear_4xx(client: TestClient, body: dict[str, str], key: str | None, status: int) -> None:
    assert post(client, body, key=key) == status
    assert client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"] == []


def test_tokens_decide_who_may_do_what(client: TestClient) -> None:
    assert post(client, event(), token="") == 401
    assert post(client, event(), token="wrong-token-0123456789") == 401
    assert post(client, event(), token=ADMIN) == 403  # attendance comes from kiosks, each named by its token
    unauthorized = client.get("/api/employees/embeddings", params={"model": MODEL_A})
    assert unauthorized.status_code == 401
    # One challenge per header: a browser reads only the first of a header (test_browser.py: its login).
    assert unauthorized.headers.get_list("WWW-Authenticate") == ['Bearer realm="pi-fleet attendance"',
                                                                'Basic realm="pi-fleet attendance"']
    assert client.get("/api/attendance", headers=bearer(LOBBY)).status_code == 403
    enroll = {"model": MODEL_A, "embeddings": [[1.0, 0.0]]}
    assert client.post("/api/employees/E001/embeddings", json=enroll, headers=bearer(DOOR)).status_code == 403
    assert post(client, event(), token=DOOR) == 201
    assert client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"][0]["kiosk"] == "door"


def test_a_kiosk_gets_only_its_models_embeddings_with_an_etag(client: TestClient) -> None:
    for model, vector in ((MODEL_A, [1.0, 0.0]), (MODEL_B, [0.0, 1.0, 0.0])):
        r = client.post("/api/employees/E001/embeddings", json={"model": model, "embeddings": [vector], "name": "Ada"},
                        headers=bearer(ADMIN))
        assert r.status_code == 201 and r.json()["embeddings"] == 1
    got = client.get("/api/employees/embeddings", params={"model": MODEL_A}, headers=bearer(LOBBY))
    assert got.json() == {"model": MODEL_A, "employees": [{"id": "E001", "embeddings": [[1.0, 0.0]]}], "erased": []}
    etag = got.headers["ETag"]
    same = client.get("/api/employees/embeddings", params={"model": MODEL_A},
                      headers={**bearer(LOBBY), "If-None-Match": etag})
    assert same.status_code == 304
    client.post("/api/employees/E002/embeddings", json={"model": MODEL_A, "embeddings": [[0.6, 0.8]]},
                headers=bearer(ADMIN))
    changed = client.get("/api/employees/embeddings", params={"model": MODEL_A},
                         headers={**bearer(LOBBY), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert [e["id"] for e in changed.json()["employees"]] == ["E001", "E002"]
    unknown = client.get("/api/employees/embeddings", params={"model": "c" * 64}, headers=bearer(LOBBY))
    assert unknown.json() == {"model": "c" * 64, "employees": [], "erased": []}
    bad = client.get("/api/employees/embeddings", params={"model": "not-a-sha"}, headers=bearer(LOBBY))
    assert bad.status_code == 422


def test_an_etag_a_kiosk_saw_never_names_another_gallery_after_a_restore(tmp_path: Path) -> None:
    """The database restored from an older copy and changed again: a version counter would count to the tag the
    kiosk saw again (1, 2; restored to 1; 2) and the kiosk would keep a gallery that is gone (304)."""
    database = tmp_path / "attendance.sqlite3"
    client = TestClient(create_app(Settings(database, ADMIN, {"lobby": LOBBY})))

    def enroll(employee: str, vector: list[float]) -> None:
        r = client.post(f"/api/employees/{employee}/embeddings", json={"model": MODEL_A, "embeddings": [vector]},
                        headers=bearer(ADMIN))
        assert r.status_code == 201

    def copy(source: Path, target: Path) -> None:
        with closing(sqlite3.connect(source)) as db, closing(sqlite3.connect(target)) as into:
            db.backup(into)

    def sync(etag: str = "") -> tuple[int, str, list[str]]:
        r = client.get("/api/employees/embeddings", params={"model": MODEL_A},
                       headers={**bearer(LOBBY), **({"If-None-Match": etag} if etag else {})})
        return r.status_code, r.headers["ETag"], [e["id"] for e in r.json()["employees"]] if r.content else []

    enroll("E001", [1.0, 0.0])
    _, before, _ = sync()
    copy(database, tmp_path / "backup.sqlite3")
    enroll("E002", [0.0, 1.0])
    _, seen, _ = sync()  # the kiosk holds E001 and E002

    copy(tmp_path / "backup.sqlite3", database)  # restored: E002 is gone
    assert sync(seen) == (200, before, ["E001"])  # the restored gallery's tag is the one it had
    enroll("E003", [0.6, 0.8])  # changed again, once, as after the copy
    status, etag, ids = sync(seen)
    assert (status, ids) == (200, ["E001", "E003"]) and etag not in (seen, before)
    assert sync(etag)[0] == 304


def test_enrollment_is_validated_and_replace_and_delete_work(client: TestClient) -> None:
    def enroll(employee: str, **body: object) -> int:
        return client.post(f"/api/employees/{employee}/embeddings", json={"model": MODEL_A, **body},
                           headers=bearer(ADMIN)).status_code

    assert enroll("E001", embeddings=[[1.0, 0.0], [0.0, 1.0]]) == 201
    assert enroll("E001", embeddings=[[1.0, 0.0, 0.0]]) == 422       # another length than the model's
    assert enroll("E001", embeddings=[[0.0, 0.0]]) == 422            # a zero vector
    assert enroll("E001", embeddings=[]) == 422
    assert enroll("E 001", embeddings=[[1.0, 0.0]]) == 422
    assert enroll("E001", embeddings=[[0.5, 0.5]], replace=True) == 201
    listed = client.get("/api/employees", headers=bearer(ADMIN)).json()["employees"]
    assert listed == {"E001": {"name": "", "left": None, "embeddings": {MODEL_A: 1},
                               "enrolled": listed["E001"]["enrolled"]}}
    assert datetime.fromisoformat(listed["E001"]["enrolled"]).tzinfo is not None  # when, with its offset (UTC)
    assert client.delete("/api/employees/E001", headers=bearer(ADMIN)).status_code == 204
    assert client.delete("/api/employees/E001", headers=bearer(ADMIN)).status_code == 404
    assert client.get("/api/employees/embeddings", params={"model": MODEL_A}, headers=bearer(LOBBY)).json()[
        "employees"] == []


def gallery(client: TestClient, etag: str = "") -> tuple[int, str, dict[str, object]]:
    r = client.get("/api/employees/embeddings", params={"model": MODEL_A},
                   headers={**bearer(LOBBY), **({"If-None-Match": etag} if etag else {})})
    return r.status_code, r.headers["ETag"], r.json() if r.status_code == 200 else {}


def test_an_erased_person_is_a_tombstone_in_every_gallery_answer_until_enrolled_again(client: TestClient) -> None:
    for employee, vector in (("E001", [1.0, 0.0]), ("E002", [0.0, 1.0])):
        client.post(f"/api/employees/{employee}/embeddings", json={"model": MODEL_A, "embeddings": [vector]},
                    headers=bearer(ADMIN))
    _, before, _ = gallery(client)
    assert client.delete("/api/employees/E001", headers=bearer(ADMIN)).status_code == 204
    status, erased_tag, body = gallery(client, before)
    assert status == 200 and erased_tag != before  # a new tag: every kiosk hears of it, holding E001 or not
    assert body["employees"] == [{"id": "E002", "embeddings": [[0.0, 1.0]]}] and body["erased"] == ["E001"]
    # Another model's gallery never held E001, and carries the tombstone all the same.
    other = client.get("/api/employees/embeddings", params={"model": MODEL_B}, headers=bearer(LOBBY)).json()
    assert other == {"model": MODEL_B, "employees": [], "erased": ["E001"]}
    assert gallery(client, erased_tag)[0] == 304
    # Enrolled again: the tombstone is gone, the person is in the gallery again.
    client.post("/api/employees/E001/embeddings", json={"model": MODEL_A, "embeddings": [[0.6, 0.8]]},
                headers=bearer(ADMIN))
    status, again, body = gallery(client, erased_tag)
    assert status == 200 and again not in (before, erased_tag)
    assert [e["id"] for e in body["employees"]] == ["E001", "E002"] and body["erased"] == []  # type: ignore[index]


def test_erasure_deletes_the_events_unless_they_must_be_kept(client: TestClient) -> None:
    for employee in ("E001", "E002", "E003"):
        client.post(f"/api/employees/{employee}/embeddings", json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]},
                    headers=bearer(ADMIN))
        assert post(client, event(employee), key=f"k-{employee}") == 201
    assert client.delete("/api/employees/E001", headers=bearer(ADMIN)).status_code == 204
    assert client.delete("/api/employees/E002", params={"keep_events": "true"},
                         headers=bearer(ADMIN)).status_code == 204
    rows = client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"]
    assert sorted(r["employee"] for r in rows) == ["E002", "E003"]  # E002's kept for payroll, E001's erased
    assert gallery(client)[2]["erased"] == ["E001", "E002"]


def test_an_event_of_a_person_erased_since_is_not_stored(client: TestClient) -> None:
    """A kiosk that saw her before its next sync reports her: the server answers (the kiosk must not retry) and
    stores nothing; enrolled again, she is recorded again."""
    enrol = {"model": MODEL_A, "embeddings": [[1.0, 0.0]]}
    client.post("/api/employees/E001/embeddings", json=enrol, headers=bearer(ADMIN))
    client.delete("/api/employees/E001", headers=bearer(ADMIN))
    r = client.post("/toon/attendance", json=event(), headers={**bearer(LOBBY), "Idempotency-Key": "after"})
    assert (r.status_code, r.json()["recorded"], r.json()["erased"]) == (200, False, True)
    assert client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"] == []
    client.post("/api/employees/E001/embeddings", json=enrol, headers=bearer(ADMIN))
    assert post(client, event(), key="again") == 201


def test_old_tombstones_leave_the_answer_and_are_pruned(client: TestClient) -> None:
    client.post("/api/employees/E001/embeddings", json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]},
                headers=bearer(ADMIN))
    client.post("/api/employees/E002/embeddings", json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]},
                headers=bearer(ADMIN))
    client.delete("/api/employees/E001", headers=bearer(ADMIN))
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    with store.connect() as db:  # on either backend
        db.execute("UPDATE erasures SET erased_at = '2020-01-01T00:00:00+00:00'")  # past ERASED_DAYS
    assert gallery(client)[2]["erased"] == []
    client.delete("/api/employees/E002", headers=bearer(ADMIN))  # a new erasure prunes the old tombstones
    with store.connect() as db:
        assert [row[0] for row in db.execute("SELECT employee FROM erasures").fetchall()] == ["E002"]


def test_photos_need_configured_models(client: TestClient) -> None:
    r = client.post("/api/employees/E001/photos", files=[("photos", ("a.jpg", b"x", "image/jpeg"))],
                    headers=bearer(ADMIN))
    assert r.status_code == 422 and "[models]" in r.json()["detail"]


def test_a_photo_enrolled_is_not_kept_only_its_embedding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: photos are enrolled with every configured model and are not kept. With the kiosk's real pipeline
    (the photos extra), so whatever it does with the photo on the way is covered too."""
    synthetic = pytest.importorskip("pi_kiosk.synthetic")
    skimage = importlib.util.find_spec("skimage")  # its astronaut: one face; read without importing scikit-image
    if skimage is None or not skimage.submodule_search_locations:
        pytest.skip("scikit-image's astronaut photo is not installed")
    photo = (Path(next(iter(skimage.submodule_search_locations))) / "data" / "astronaut.png").read_bytes()
    temp = tmp_path / "tmp"  # a fresh temp directory: anything the upload left behind is found there
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data = tmp_path / "data"
    model = EmbeddingModel(synthetic.cached("mobilefacenet", tmp_path / "models"), "arcface")
    settings = Settings(data / "attendance.sqlite3", ADMIN, {"lobby": LOBBY}, {"mobilefacenet": model})
    r = TestClient(create_app(settings)).post("/api/employees/E042/photos", headers=bearer(ADMIN),
                                              files=[("photos", ("astronaut.png", photo, "image/png"))])
    assert r.status_code == 201 and list(r.json()["embeddings"].values()) == [1], r.text

    assert list(temp.iterdir()) == []
    assert {p.name for p in data.iterdir()} <= {f"attendance.sqlite3{end}" for end in ("", "-wal", "-shm")}
    with closing(sqlite3.connect(data / "attendance.sqlite3")) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        values = [v for t in tables for row in db.execute(f'SELECT * FROM "{t}"') for v in row]
    stored = [v.encode() if isinstance(v, str) else v for v in values if isinstance(v, str | bytes)]
    assert any(len(v) == 512 * 4 for v in stored)  # the embedding is there: the scan reads what was stored
    image = (b"\x89PNG", b"\xff\xd8\xff", photo[1000:1064], base64.b64encode(photo)[1000:1064])
    assert [v[:40] for v in stored if any(sign in v for sign in image)] == []


def test_each_models_card_is_read_at_start_and_must_fit_its_model(tmp_path: Path) -> None:
    """An unknown card stops the server at start; a card that does not fit its model (here: a card naming
    another file's sha256) refuses photos with the settings' message, not a server error."""
    synthetic = pytest.importorskip("pi_kiosk.synthetic")
    base = {"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}}
    with pytest.raises(ConfigError, match=r"models.m.card = 'arcfac': no built-in card of that name; built-in cards: "
                                          r"arcface, dlib-resnet-v1, sface"):
        parse({**base, "models": {"m": {"path": __file__, "card": "arcfac"}}}, "server.toml")
    model = synthetic.cached("mobilefacenet", tmp_path / "models")
    assert parse({**base, "models": {"m": {"path": str(model), "card": "arcface"}}}, "server.toml").models == {
        "m": EmbeddingModel(model, "arcface")}
    settings = Settings(tmp_path / "attendance.sqlite3", ADMIN, {"lobby": LOBBY},
                        {"m": EmbeddingModel(model, "dlib-resnet-v1")})
    r = TestClient(create_app(settings)).post("/api/employees/E042/photos", headers=bearer(ADMIN),
                                              files=[("photos", ("a.png", png(640, 480), "image/png"))])
    assert r.status_code == 422
    assert "models.m.path = " in r.json()["detail"]
    assert "but built-in card 'dlib-resnet-v1' describes the file with sha256" in r.json()["detail"]


def test_the_attendance_page_lists_events_newest_first_behind_basic_auth(client: TestClient) -> None:
    post(client, event("E001", "2026-11-26T08:00:00+00:00"), key="k1")
    post(client, event("E002", "2026-11-26T09:00:00+00:00"), key="k2", token=DOOR)
    assert client.get("/").status_code == 401
    basic = {"Authorization": "Basic " + base64.b64encode(f"ops:{ADMIN}".encode()).decode()}
    page = client.get("/", headers=basic).text
    assert page.index("E002") < page.index("E001") and "door" in page and "lobby" in page
    filtered = client.get("/", params={"kiosk": "lobby"}, headers=basic).text
    assert "E001" in filtered and "E002" not in filtered
    assert "<script" not in page and "http" not in page.split("<body>")[1].replace('href="/', "")


def test_the_openapi_contract_is_published(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/toon/attendance", "/api/employees/embeddings"} <= set(spec["paths"])


@pytest.mark.parametrize(("data", "message"), [
    ({"admin_token": ADMIN, "kiosks": {"a": LOBBY}}, "database"),
    ({"database": "x.db", "admin_token": "short", "kiosks": {"a": LOBBY}}, "admin_token must be"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {}}, "[kiosks]"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": ADMIN}}, "a token of their own"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}, "port": 1}, "unknown settings port"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}, "models": {"m": "/nonexistent.onnx"}},
     "models.m = '/nonexistent.onnx': a model needs its card"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY},
      "models": {"m": {"path": "/nonexistent.onnx", "card": "arcface"}}}, "models.m.path = '/nonexistent.onnx' is not"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}, "models": {"m": {"path": __file__}}},
     "models.m.card: missing; every model needs its card"),
    ({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY},
      "models": {"m": {"path": __file__, "card": "arcface", "threshold": 0.5}}}, "unknown keys threshold"),
])
def test_bad_settings_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(data, "server.toml")


def test_an_estimated_time_is_recorded_and_shown_as_such(client: TestClient) -> None:
    """A kiosk whose clock was never synchronised sends its estimate flagged TS1_estimated (pi-kiosk's
    timekeeping.py); the flag is part of the event, kept, replayed alike, and shown on the page."""
    estimated = {**event("E001", "2026-11-26T08:00:00+00:00"), "TS1_estimated": True}
    assert post(client, estimated, key="k1") == 201
    assert post(client, estimated, key="k1") == 200  # a replay
    assert post(client, {**estimated, "TS1_estimated": False}, key="k1") == 422  # not the same event
    assert post(client, event("E002", "2026-11-26T09:00:00+00:00"), key="k2") == 201
    rows = client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"]
    assert [(r["employee"], r["estimated"]) for r in rows] == [("E002", False), ("E001", True)]
    basic = {"Authorization": "Basic " + base64.b64encode(f"ops:{ADMIN}".encode()).decode()}
    events_html = client.get("/", headers=basic).text.split("<table id=events>")[1]
    rows_html = events_html.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert [("(clock unknown: estimated)" in row) for row in rows_html] == [False, True]


FIRST_RELEASE_EVENTS = """
CREATE TABLE events (row INTEGER PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, kiosk TEXT NOT NULL,
    employee TEXT NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL, received TEXT NOT NULL);
INSERT INTO events (idempotency_key, kiosk, employee, status, at, received)
    VALUES ('k0', 'lobby', 'E001', 'IN', '2026-11-26T07:00:00+00:00', '2026-11-26T07:00:01+00:00');
"""


def test_a_database_of_the_first_release_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "attendance.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(FIRST_RELEASE_EVENTS)
    client = TestClient(create_app(Settings(path, ADMIN, {"lobby": LOBBY})))
    assert post(client, {**event(), "TS1_estimated": True}, key="k1") == 201
    rows = client.get("/api/attendance", headers=bearer(ADMIN)).json()["events"]
    assert [(r["key"], r["estimated"]) for r in rows] == [("k1", True), ("k0", False)]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    TestClient(create_app(Settings(path, ADMIN, {"lobby": LOBBY})))  # opened again: nothing to migrate


def test_embedding_lengths_stored_before_the_model_dims_table_still_bind_their_model(tmp_path: Path) -> None:
    path = tmp_path / "attendance.sqlite3"
    Store(path).enroll("E001", "m", [[1.0, 2.0, 3.0]])
    with closing(sqlite3.connect(path)) as db:  # back to the release before the table
        db.executescript(f"DROP TABLE model_dims; PRAGMA user_version = {len(MIGRATIONS) - 2};")
    store = Store(path)
    with pytest.raises(Conflict, match="model m has embeddings of length 3, not 4"):
        store.enroll("E002", "m", [[1.0, 2.0, 3.0, 4.0]])
    assert store.enroll("E002", "m", [[3.0, 2.0, 1.0]]) == 1
