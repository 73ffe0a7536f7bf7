"""The recorded attendance (admin token): the events as JSON (`GET /api/attendance`) and the attendance
page at `/`, led by the kiosks' state (a browser logs in with HTTP Basic: any user name, the admin token as
password)."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from ... import page
from ...fleet import kiosk_states
from ..deps import AdminDep, SettingsDep, StoreDep

router = APIRouter(tags=["attendance"])


@router.get("/api/attendance")
def events(_: AdminDep, store: StoreDep, kiosk: str | None = None, employee: str | None = None,
           limit: Annotated[int, Query(ge=1, le=10000)] = 500) -> dict[str, Any]:
    return {"events": [asdict(e) for e in store.events(kiosk, employee, limit)]}


@router.get("/", response_class=HTMLResponse)
def attendance_page(_: AdminDep, settings: SettingsDep, store: StoreDep, kiosk: str | None = None,
                    employee: str | None = None) -> str:
    now = datetime.now(UTC)
    return page.render(store.events(kiosk, employee), store.employees(), kiosk_states(settings, store, now),
                       now.astimezone())
