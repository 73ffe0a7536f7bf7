"""The recorded attendance (admin token): the events as JSON (`GET /api/attendance`) and as CSV for a range of
days (`GET /attendance.csv`), and the attendance page at `/`, led by the kiosks' state (a browser logs in with
HTTP Basic: any user name, the admin token as password)."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from ... import days
from ...csv_export import export
from ...fleet import kiosk_states
from ...pages import attendance as page
from ..deps import AdminDep, SettingsDep, StoreDep

router = APIRouter(tags=["attendance"])


@router.get("/api/attendance")
def events(_: AdminDep, store: StoreDep, kiosk: str | None = None, employee: str | None = None,
           limit: Annotated[int, Query(ge=1, le=10000)] = 500) -> dict[str, Any]:
    return {"events": [asdict(e) for e in store.events(kiosk, employee, limit)]}


@router.get("/", response_class=HTMLResponse, responses={400: {"description": "a day that is not YYYY-MM-DD"}})
def attendance_page(_: AdminDep, settings: SettingsDep, store: StoreDep, kiosk: str = "", employee: str = "",
                    day: str = "") -> HTMLResponse:
    now = datetime.now(UTC).astimezone()
    # The export's range starts as the day shown, or this month so far.
    filters = page.Filters(day, kiosk, employee, start=day or now.date().replace(day=1).isoformat(),
                           end=day or now.date().isoformat())
    try:
        since, until = days.bounds(days.parse(day, "day")) if day else (None, None)
    except ValueError as exc:
        return HTMLResponse(page.render([], store.employees(), kiosk_states(settings, store, now), now, filters,
                                        str(exc)), 400)
    return HTMLResponse(page.render(store.events(kiosk, employee, since=since, until=until), store.employees(),
                                    kiosk_states(settings, store, now), now, filters))


@router.get("/attendance.csv", response_class=StreamingResponse, responses={
    200: {"content": {"text/csv": {}}, "description": "a header row, then the events, oldest first"},
    400: {"content": {"text/html": {}}, "description": f"from or to not a date (YYYY-MM-DD), to before from, or "
                                                       f"more than {days.MAX_DAYS} days"}})
def attendance_csv(_: AdminDep, store: StoreDep, start: Annotated[str, Query(alias="from")] = "",
                   end: Annotated[str, Query(alias="to")] = "", kiosk: str = "", employee: str = "") -> Response:
    try:
        span = days.span(start, end)
    except ValueError as exc:
        return HTMLResponse(page.export_refused(page.Filters("", kiosk, employee, start, end), str(exc)), 400)
    return StreamingResponse(export(store, span, kiosk, employee), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="attendance-{start}-{end}.csv"'})
