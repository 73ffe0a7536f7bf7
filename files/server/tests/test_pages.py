"""The server's own pages, as a browser uses them (HTTP Basic, forms posted from the server's origin): employees
enrolled from photos through the kiosk's real pipeline, their photos replaced, their removal confirmed first; bad
forms refused with the form kept and nothing stored; another site's forms refused; the attendance filtered by
day, kiosk and person, and exported as CSV."""
from __future__ import annotations

import csv
import io
import re
from html import unescape
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import ADMIN, DOOR, LOBBY, MODEL_A, MODEL_B, SAME_ORIGIN, astronaut, basic, bearer, png
from fastapi.testclient import TestClient

from attendance_server.app import create_app
from attendance_server.config import EmbeddingModel, Limits, Settings
from attendance_server.store import Conflict, Store

PHOTO_LIMITS = Limits(photos=3, photo_bytes=4 * 1024 * 1024, photo_pixels=2_000_000)


@pytest.fixture
def pages(tmp_path: Path, face_model: EmbeddingModel) -> TestClient:
    """A server with one model for photos (mobilefacenet), logged in as a browser is."""
    settings = Settings(tmp_path / "attendance.sqlite3", ADMIN, {"lobby": LOBBY, "door": DOOR},
                        {"mobilefacenet": face_model}, limits=PHOTO_LIMITS)
    return TestClient(create_app(settings), headers=basic(), follow_redirects=False)


def encoded(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def two_faces() -> bytes:
    face = cv2.imdecode(np.frombuffer(astronaut(), np.uint8), cv2.IMREAD_COLOR)
    return encoded(np.concatenate([face, face], axis=1))


def photo(data: bytes, name: str = "face.png") -> tuple[str, tuple[str, bytes, str]]:
    return "photos", (name, data, "image/png")


def enrol(pages: TestClient, employee: str, *photos: bytes, name: str = "", headers: dict[str, str] = SAME_ORIGIN,
          path: str = "/employees") -> Any:
    return pages.post(path, data={"employee": employee, "name": name}, headers=headers,
                      files=[photo(p, f"{n}.png") for n, p in enumerate(photos)] or [photo(b"", "")])


def stored(pages: TestClient) -> dict[str, Any]:
    employees: dict[str, Any] = pages.get("/api/employees", headers=bearer(ADMIN)).json()["employees"]
    return employees


def counts(pages: TestClient, employee: str) -> list[int]:
    return list(stored(pages)[employee]["embeddings"].values())


def test_a_person_enrolled_from_a_photo_is_listed_with_their_models(pages: TestClient) -> None:
    r = enrol(pages, "E042", astronaut(), name="Eileen Collins")
    assert (r.status_code, r.headers["location"]) == (303, "/employees/E042?done=enrolled"), r.text
    assert counts(pages, "E042") == [1]
    person = pages.get("/employees/E042?done=enrolled").text
    assert "Enrolled. Each kiosk receives the embeddings" in person and "mobilefacenet</span>: 1" in person
    listing = pages.get("/employees").text
    row = re.search(r'<tr><td><a href="/employees/E042">E042</a></td>.*?</tr>', listing)
    assert row, listing
    assert "Eileen Collins" in row[0] and "mobilefacenet</span>: 1" in row[0]
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d[+-]\d\d:\d\d</td>", row[0])  # when: local time, offset
    assert '<a href="/employees/E042/delete">delete</a>' in row[0]


def test_new_photos_replace_the_old(pages: TestClient) -> None:
    assert enrol(pages, "E042", astronaut(), astronaut(), name="E. Collins").status_code == 303
    assert counts(pages, "E042") == [2]
    r = pages.post("/employees/E042/photos", data={"name": "Eileen Collins"}, files=[photo(astronaut())],
                   headers=SAME_ORIGIN)
    assert (r.status_code, r.headers["location"]) == (303, "/employees/E042?done=replaced"), r.text
    assert counts(pages, "E042") == [1] and stored(pages)["E042"]["name"] == "Eileen Collins"
    assert "Photos replaced." in pages.get(r.headers["location"]).text
    # Refused new photos leave the old ones, and the page keeps the name typed.
    r = pages.post("/employees/E042/photos", data={"name": "Eileen M. Collins"}, headers=SAME_ORIGIN,
                   files=[photo(astronaut()), photo(encoded(np.full((200, 200, 3), 128, np.uint8)), "wall.png")])
    assert r.status_code == 422 and "photo 1.png (wall.png): 0 usable faces found" in r.text
    assert 'value="Eileen M. Collins"' in r.text
    assert counts(pages, "E042") == [1] and stored(pages)["E042"]["name"] == "Eileen Collins"
    assert pages.post("/employees/E999/photos", files=[photo(astronaut())], headers=SAME_ORIGIN).status_code == 404


def test_a_person_is_deleted_only_once_the_deletion_is_confirmed(pages: TestClient) -> None:
    assert enrol(pages, "E042", astronaut()).status_code == 303
    confirm = pages.get("/employees/E042/delete")
    assert confirm.status_code == 200 and "Delete E042?" in confirm.text
    assert '<form method=post action="/employees/E042/delete" id=remove>' in confirm.text
    assert '<input type=hidden name=confirm value="E042">' in confirm.text
    assert "E042" in stored(pages)  # the confirmation page deleted nothing
    refused = pages.post("/employees/E042/delete", headers=SAME_ORIGIN)  # no confirmation
    assert refused.status_code == 400 and "not deleted" in refused.text and "E042" in stored(pages)
    done = pages.post("/employees/E042/delete", data={"confirm": "E042"}, headers=SAME_ORIGIN)
    assert (done.status_code, done.headers["location"]) == (303, "/employees?removed=E042")
    assert stored(pages) == {}
    listing = pages.get(done.headers["location"]).text
    assert "E042 was deleted." in listing and "no one yet" in listing
    assert "was deleted" not in pages.get("/employees?removed=E042%3Cb%3E").text  # only an id, not enrolled
    for unknown in (pages.post("/employees/E042/delete", data={"confirm": "E042"}, headers=SAME_ORIGIN),
                    pages.get("/employees/E042/delete"), pages.get("/employees/E042")):
        assert unknown.status_code == 404
        assert "No employee 'E042' is enrolled: nothing was changed." in unescape(unknown.text)


@pytest.mark.parametrize(("employee", "photos", "status", "message"), [
    ("E042", [b"blank"], 422, "photo 0.png (0.png): 0 usable faces found, need exactly one"),
    ("E042", [b"two"], 422, "photo 0.png (0.png): 2 usable faces found, need exactly one"),
    ("E042", [b"good", b"blank"], 422, "photo 1.png (1.png): 0 usable faces found"),
    ("E042", [b"corrupt"], 422, "photo 0.png (0.png): not an image OpenCV can read"),
    ("E042", [b"huge"], 413, "photo 0.png (0.png): 3000x3000 pixels, more than 2000000 (limits.photo_pixels)"),
    ("E042", [b"GIF89a"], 415, "photo 0.png (0.png): not a JPEG or PNG image"),
    ("E042", [b"good"] * 4, 413, "4 photos: at most 3 per request (limits.photos)"),
    ("E042", [], 422, "no photo chosen"),
    ("", [b"good"], 422, "an employee id is needed"),
    ("E 042", [b"good"], 422, "'E 042' cannot be an employee id"),
])
def test_a_bad_form_is_refused_with_the_form_kept_and_nothing_stored(
        pages: TestClient, employee: str, photos: list[bytes], status: int, message: str) -> None:
    made = {b"good": astronaut(), b"blank": encoded(np.full((480, 640, 3), 200, np.uint8)), b"two": two_faces(),
            b"corrupt": png(64, 64)[:33] + b"\0" * 64, b"huge": png(3000, 3000)}
    r = enrol(pages, employee, *(made.get(p, p) for p in photos), name="Eileen Collins")
    assert r.status_code == status, r.text
    assert message in unescape(r.text)
    assert f'name=employee value="{employee}"' in r.text and 'value="Eileen Collins"' in r.text
    assert r.text.count("<nav>") == 1 and "<form class=card method=post" in r.text
    assert stored(pages) == {}


def test_an_id_already_enrolled_is_not_enrolled_again(pages: TestClient) -> None:
    assert enrol(pages, "E042", astronaut()).status_code == 303
    r = enrol(pages, "E042", astronaut())
    assert r.status_code == 409 and "E042 is already enrolled: replace their photos on their page" in r.text
    assert counts(pages, "E042") == [1]


@pytest.mark.parametrize("browser", [{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
                                     {"Origin": "https://evil.example"}])  # one without Sec-Fetch-Site
def test_another_sites_forms_are_refused(pages: TestClient, browser: dict[str, str]) -> None:
    assert enrol(pages, "E042", astronaut(), headers=browser).status_code == 403
    assert stored(pages) == {}
    assert enrol(pages, "E042", astronaut()).status_code == 303
    for path, data in (("/employees/E042/delete", {"confirm": "E042"}), ("/employees/E042/photos", {})):
        r = pages.post(path, data=data, files=[photo(astronaut())], headers=browser)
        assert r.status_code == 403 and "another site's page" in r.json()["detail"]
    assert counts(pages, "E042") == [1]


def test_every_page_leads_to_the_others(pages: TestClient) -> None:
    assert enrol(pages, "E042", astronaut()).status_code == 303
    nav = ('<nav><a href="/#fleet">Kiosks</a><a href="/employees"{}>Employees</a>'
           '<a href="/#attendance"{}>Attendance</a></nav>')
    for path, current in (("/", (False, True)), ("/employees", (True, False)), ("/employees/E042", (True, False)),
                          ("/employees/E042/delete", (True, False)), ("/employees/E7", (True, False)),
                          ("/attendance.csv?from=x", (False, True))):
        text = pages.get(path).text
        assert nav.format(*(" aria-current=page" if c else "" for c in current)) in text, path
        assert "<script" not in text and "http" not in text.split("<body>")[1].replace('="/', ""), path


def record(pages: TestClient, key: str, employee: str, at: str, token: str = LOBBY, status: str = "IN",
           estimated: bool = False) -> None:
    r = pages.post("/toon/attendance", headers={**bearer(token), "Idempotency-Key": key},
                   json={"E1": employee, "S1": status, "TS1": at, "TS1_estimated": estimated})
    assert r.status_code == 201, r.text


@pytest.fixture
def week(pages: TestClient) -> TestClient:
    """Events on 25 and 26 November 2026 at two kiosks; E001 is enrolled as a spreadsheet's formula."""
    r = pages.post("/api/employees/E001/embeddings", headers=bearer(ADMIN),
                   json={"model": MODEL_A, "embeddings": [[1.0, 0.0]], "name": '=HYPERLINK("http://x","y")'})
    assert r.status_code == 201
    record(pages, "k1", "E001", "2026-11-25T08:00:00+01:00")
    record(pages, "k2", "E001", "2026-11-26T08:00:00+01:00", estimated=True)
    record(pages, "k3", "E002", "2026-11-26T09:00:00+01:00", token=DOOR, status="-OUT")
    record(pages, "k4", "E002", "2026-11-26T23:30:00-05:00", token=DOOR, status="@IN")  # the kiosk's own day
    record(pages, "k5", "E001", "2026-11-27T00:00:00+01:00")
    return pages


def events_shown(page: str) -> list[str]:
    rows = page.split("<table id=events>")[1].split("</tbody>")[0].split("<tr>")[2:]
    return [re.findall(r"\d{4}-\d\d-\d\dT[\d:]+[+-]\d\d:\d\d", row)[0] for row in rows]


def test_the_attendance_page_is_filtered_by_day_kiosk_and_person(week: TestClient) -> None:
    assert len(events_shown(week.get("/").text)) == 5  # as before: everything, newest first
    day = week.get("/", params={"day": "2026-11-26"}).text
    assert events_shown(day) == ["2026-11-26T23:30:00-05:00", "2026-11-26T09:00:00+01:00",
                                 "2026-11-26T08:00:00+01:00"]
    assert "4 event(s)" not in day and "3 event(s) on 2026-11-26, newest first" in day
    assert '<input type=date name=day value="2026-11-26">' in day
    assert events_shown(week.get("/", params={"day": "2026-11-26", "kiosk": "door", "employee": "E002"}).text) == [
        "2026-11-26T23:30:00-05:00", "2026-11-26T09:00:00+01:00"]
    assert events_shown(week.get("/", params={"day": "2026-11-26", "employee": "E001"}).text) == [
        "2026-11-26T08:00:00+01:00"]
    # The form's empty fields are no filter; the kiosk chosen stays chosen.
    shown = week.get("/", params={"day": "", "kiosk": "lobby", "employee": ""}).text
    assert len(events_shown(shown)) == 3 and "<option selected>lobby</option>" in shown
    bad = week.get("/", params={"day": "26.11.2026", "kiosk": "door"})
    assert bad.status_code == 400
    assert "day='26.11.2026' is not a date: use YYYY-MM-DD, e.g. 2026-11-26" in unescape(bad.text)
    assert '<input type=date name=day value="26.11.2026">' in bad.text and "<option selected>door</option>" in bad.text


def export(client: TestClient, **query: str) -> Any:
    return client.get("/attendance.csv", params=query)


def test_the_csv_export_of_a_range_of_days(week: TestClient) -> None:
    r = export(week, **{"from": "2026-11-25", "to": "2026-11-26"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="attendance-2026-11-25-2026-11-26.csv"'
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["time", "time_estimated", "kiosk", "employee", "name", "status", "received"]
    formula = '\'=HYPERLINK("http://x","y")'  # a name, not a formula: prefixed with '
    assert [row[:6] for row in rows[1:]] == [  # oldest first, both days included, 27 November not
        ["2026-11-25T08:00:00+01:00", "no", "lobby", "E001", formula, "IN"],
        ["2026-11-26T08:00:00+01:00", "yes", "lobby", "E001", formula, "IN"],
        ["2026-11-26T09:00:00+01:00", "no", "door", "E002", "", "'-OUT"],
        ["2026-11-26T23:30:00-05:00", "no", "door", "E002", "", "'@IN"]]
    assert all(re.fullmatch(r"\d{4}-.*\+00:00", row[6]) for row in rows[1:])  # received: the server's time, UTC
    assert r.text.endswith("\r\n") and r.text.count("\r\n") == 5
    only = list(csv.reader(io.StringIO(export(week, **{"from": "2026-11-26", "to": "2026-11-27", "kiosk": "lobby",
                                                         "employee": "E001"}).text)))
    assert [row[0] for row in only[1:]] == ["2026-11-26T08:00:00+01:00", "2026-11-27T00:00:00+01:00"]
    assert export(week, **{"from": "2026-11-26", "to": "2026-11-26", "employee": "E404"}).text.count("\n") == 1
    assert export(week, **{"from": "2028-01-01", "to": "2028-12-31"}).status_code == 200  # 366 days: a leap year


@pytest.mark.parametrize(("query", "message"), [
    ({"from": "2026-11-27", "to": "2026-11-26"}, "to=2026-11-26 is before from=2026-11-27"),
    ({"from": "2026-01-01", "to": "2027-01-02"}, "from=2026-01-01 to=2027-01-02 is 367 days: at most 366 days"),
    ({"from": "2026-11-31", "to": "2026-12-01"}, "from='2026-11-31' is not a date: use YYYY-MM-DD"),
    ({"from": "2026-11-01", "to": "20261130"}, "to='20261130' is not a date: use YYYY-MM-DD"),
    ({"to": "2026-11-30"}, "from='' is not a date"),
])
def test_a_bad_range_is_refused_with_a_readable_400(week: TestClient, query: dict[str, str], message: str) -> None:
    r = export(week, **query, kiosk="door")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert message in unescape(r.text)
    assert f'name=to value="{query["to"]}"' in r.text and 'name=kiosk value="door"' in r.text  # the form kept


def test_a_photo_enrolment_stores_every_models_embeddings_or_none(tmp_path: Path) -> None:
    """The photos' embeddings, one list per configured model, in one transaction: a model refused (here, one
    whose stored embeddings are longer) leaves no one enrolled with the other model only."""
    store = Store(tmp_path / "attendance.sqlite3")
    store.enroll("E001", MODEL_B, [[1.0, 0.0, 0.0]])
    with pytest.raises(Conflict, match="has embeddings of length 3, not 2"):
        store.enroll_models("E042", {MODEL_A: [[1.0, 0.0]], MODEL_B: [[0.0, 1.0]]}, "Eileen Collins")
    assert list(store.employees()) == ["E001"] and store.gallery(MODEL_A).employees == {}
    assert store.enroll_models("E042", {MODEL_A: [[1.0, 0.0]], MODEL_B: [[0.0, 1.0, 0.0]]}) == {MODEL_A: 1, MODEL_B: 1}
