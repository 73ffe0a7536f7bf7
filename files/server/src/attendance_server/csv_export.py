"""The attendance of a range of days as CSV (`GET /attendance.csv`): a header row, then the events oldest
first, made one day at a time so that a year of events is never in memory at once. Safe to open in a
spreadsheet: a cell a spreadsheet would read as a formula is prefixed with '."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import date

from .days import bounds
from .store import Store

COLUMNS = ("time", "time_estimated", "kiosk", "employee", "name", "status", "received")
# What starts a formula in Excel, LibreOffice or Google Sheets (OWASP's "CSV injection"): names and statuses are
# free text, and a name like =HYPERLINK(...) must stay a name.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _lines(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows([cell(value) for value in row] for row in rows)
    return out.getvalue()


def export(store: Store, days: list[date], kiosk: str = "", employee: str = "") -> Iterator[str]:
    """The CSV, a chunk per day (the header first), the events of each day as the kiosks' times have it."""
    names = {emp: str(info["name"]) for emp, info in store.employees().items()}
    yield _lines([COLUMNS])
    for day in days:
        since, until = bounds(day)
        events = store.events(kiosk or None, employee or None, limit=None, since=since, until=until)
        yield _lines([e.at, "yes" if e.estimated else "no", e.kiosk, e.employee, names.get(e.employee, ""),
                      e.status, e.received] for e in reversed(events))
