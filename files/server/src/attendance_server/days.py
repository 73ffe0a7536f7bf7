"""Days as the pages and the CSV export take them (YYYY-MM-DD): an event's day is the date of its time as the
kiosk sent it, in the kiosk's own time zone, so a day's bounds are compared with the stored time as text."""
from __future__ import annotations

import re
from datetime import date, timedelta

# The longest CSV export, in days: a year, leap day included. Fixed, not a setting: an export streams one day
# at a time, so this bounds only how long one request runs.
MAX_DAYS = 366
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")  # date.fromisoformat also takes 20261126 and 2026-W48-4


def parse(value: str, field: str) -> date:
    """The day `value` names; ValueError naming the field, the value and the form expected."""
    try:
        if DAY.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ValueError(f"{field}={value!r} is not a date: use YYYY-MM-DD, e.g. 2026-11-26")


def span(start: str, end: str) -> list[date]:
    """Every day from `start` to `end`, both included (the export's from and to); ValueError when either is no
    date, `end` is before `start`, or there are more than MAX_DAYS of them."""
    first, last = parse(start, "from"), parse(end, "to")
    if last < first:
        raise ValueError(f"to={end} is before from={start}: the range runs from its first day to its last")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise ValueError(f"from={start} to={end} is {days} days: at most {MAX_DAYS} days per export; "
                         "export a longer time in parts")
    return [first + timedelta(n) for n in range(days)]


def bounds(day: date) -> tuple[str, str]:
    """The day's events: at or after the first string, before the second (Store.events' since and until)."""
    return day.isoformat(), (day + timedelta(1)).isoformat()
