"""The employees pages (admin token; a browser logs in with HTTP Basic): the list and the add form at
`/employees`, a person's page, their photos replaced, their removal after a confirmation page. A refused form
is answered with its page again (4xx), what was typed kept and the reason shown; nothing is stored then.
Photos go through the photo API's own path (`employees.enroll_uploads`: its limits, checks and pipeline).
Each success answers 303 to the page that shows it, so reloading that page posts nothing again."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...config import Settings
from ...pages import employees as pages
from ...photos import model_names
from ...schemas import EMPLOYEE_ID
from ...store import Store
from ..deps import AdminDep, SettingsDep, StoreDep
from .employees import enroll_uploads

# Pages for people, not part of the API's contract.
router = APIRouter(tags=["pages"], include_in_schema=False)
uploads = APIRouter(tags=["pages"], include_in_schema=False)  # photo forms: bodies as large as the photo API's

# A browser sends an empty file input as a field without a file name, which arrives as a string: no photo.
Photos = Annotated[list[UploadFile | str] | None, File()]
DONE = {"enrolled": "Enrolled. Each kiosk receives the embeddings at its next sync.",
        "replaced": "Photos replaced. Each kiosk receives the new embeddings at its next sync."}


def _models(settings: Settings) -> pages.Models:
    return pages.Models(model_names(settings.models), list(settings.models))


def _people(store: Store) -> dict[str, pages.Person]:
    return {emp: pages.Person.of(emp, info) for emp, info in sorted(store.employees().items())}


def _now() -> datetime:
    return datetime.now(UTC).astimezone()


def _new_id(employee: str, people: dict[str, pages.Person]) -> str:
    """The id typed for a new person; HTTPException when it cannot be one (or is someone's already)."""
    if not employee:
        raise HTTPException(422, "an employee id is needed: the one the kiosks report, e.g. E001")
    if not re.fullmatch(EMPLOYEE_ID, employee):
        raise HTTPException(422, f"{employee!r} cannot be an employee id: letters, digits, '.', '_' and '-', "
                                 "at most 64, starting with a letter or digit")
    if employee in people:
        raise HTTPException(409, f"{employee} is already enrolled: replace their photos on their page")
    return employee


def _chosen(name: str, photos: list[UploadFile | str] | None) -> list[UploadFile]:
    """The photos chosen; HTTPException for a form without any, or with a name longer than the API takes."""
    if len(name) > 200:
        raise HTTPException(422, f"the name is {len(name)} characters long: at most 200")
    chosen = [photo for photo in photos or [] if not isinstance(photo, str) and photo.filename]
    if not chosen:
        raise HTTPException(422, "no photo chosen: choose one or more photos of the person's face")
    return chosen


@router.get("/employees", response_class=HTMLResponse)
def roster(_: AdminDep, settings: SettingsDep, store: StoreDep, removed: str = "") -> str:
    people = _people(store)
    # The query is the removal's redirect: said of an id only, one not enrolled (a typed query can say no more).
    message = f"{removed} was deleted." if re.fullmatch(EMPLOYEE_ID, removed) and removed not in people else ""
    return pages.roster(list(people.values()), _models(settings), settings.limits, _now(), message=message)


@uploads.post("/employees", response_class=HTMLResponse)
def enroll(_: AdminDep, settings: SettingsDep, store: StoreDep, employee: Annotated[str, Form()] = "",
           name: Annotated[str, Form()] = "", photos: Photos = None) -> Response:
    people = _people(store)
    try:
        enroll_uploads(_new_id(employee.strip(), people), _chosen(name, photos), name, False, settings, store)
    except HTTPException as exc:
        return HTMLResponse(pages.roster(list(people.values()), _models(settings), settings.limits, _now(),
                                         employee=employee, name=name, problem=str(exc.detail)), exc.status_code)
    return RedirectResponse(f"/employees/{employee.strip()}?done=enrolled", 303)


@router.get("/employees/{employee}", response_class=HTMLResponse)
def person(employee: str, _: AdminDep, settings: SettingsDep, store: StoreDep, done: str = "") -> Response:
    who = _people(store).get(employee)
    if who is None:
        return HTMLResponse(pages.unknown(employee), 404)
    return HTMLResponse(pages.person(who, _models(settings), settings.limits, _now(), message=DONE.get(done, "")))


@uploads.post("/employees/{employee}/photos", response_class=HTMLResponse)
def replace(employee: str, _: AdminDep, settings: SettingsDep, store: StoreDep,
            name: Annotated[str, Form()] = "", photos: Photos = None) -> Response:
    who = _people(store).get(employee)
    if who is None:
        return HTMLResponse(pages.unknown(employee), 404)
    try:
        enroll_uploads(employee, _chosen(name, photos), name, True, settings, store)
    except HTTPException as exc:
        return HTMLResponse(pages.person(who, _models(settings), settings.limits, _now(), name=name,
                                         problem=str(exc.detail)), exc.status_code)
    return RedirectResponse(f"/employees/{employee}?done=replaced", 303)


@router.get("/employees/{employee}/delete", response_class=HTMLResponse)
def confirm_removal(employee: str, _: AdminDep, settings: SettingsDep, store: StoreDep) -> Response:
    """The confirmation page: a GET deletes nothing."""
    who = _people(store).get(employee)
    if who is None:
        return HTMLResponse(pages.unknown(employee), 404)
    return HTMLResponse(pages.confirm_removal(who, _models(settings)))


@router.post("/employees/{employee}/delete", response_class=HTMLResponse)
def remove(employee: str, _: AdminDep, settings: SettingsDep, store: StoreDep,
           confirm: Annotated[str, Form()] = "", keep_events: Annotated[str, Form()] = "") -> Response:
    """Erases once confirmed: the confirmation page's form names the person again (`confirm`); their attendance
    events too unless the form keeps them (`keep_events`)."""
    who = _people(store).get(employee)
    if who is None:
        return HTMLResponse(pages.unknown(employee), 404)
    if confirm != employee:
        return HTMLResponse(pages.confirm_removal(who, _models(settings), "not deleted: confirm it with the button "
                                                                         "below"), 400)
    store.remove(employee, keep_events=keep_events == "yes")
    return RedirectResponse(f"/employees?removed={employee}", 303)

