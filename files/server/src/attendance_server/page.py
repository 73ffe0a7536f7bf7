"""The attendance page: one self-contained HTML file (no external assets), readable on a phone. It leads with the
kiosks (which are silent, which have a problem), then the attendance."""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from .fleet import KioskState, span
from .store import Event

STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;font-size:.95rem}
th{background:#f3f3f3}
a{color:#0645ad}
.muted{color:#777}
.estimated,.problem{color:#a15c00}
.silent{color:#b00020;font-weight:600}
@media (max-width:600px){td,th{font-size:.85rem;padding:.3rem}}
"""


def _link(text: str, **query: str) -> str:
    return f'<a href="/?{escape(urlencode(query))}">{escape(text)}</a>'


def _time(event: Event) -> str:
    if not event.estimated:
        return escape(event.at)
    return (f'{escape(event.at)} <span class=estimated title="the kiosk\'s clock was never synchronised when it '
            'recorded this event: the time is its estimate">(clock unknown: estimated)</span>')


def _kiosk_row(state: KioskState, now: datetime) -> str:
    css = "silent" if state.silent else "ok" if state.describe() == "ok" else "problem"
    heard = "" if state.heard is None or state.seconds is None else (
        f"{escape(state.heard.astimezone(now.tzinfo).isoformat(timespec='seconds'))} "
        f"<span class=muted>({span(state.seconds)} ago)</span>")
    return (f"<tr><td>{_link(state.name, kiosk=state.name)}</td><td class={css}>{escape(state.describe())}</td>"
            f"<td>{escape(str(state.body.get('release') or ''))}</td><td>{heard}</td></tr>")


def render(events: list[Event], employees: dict[str, dict[str, object]], kiosks: list[KioskState],
           now: datetime) -> str:
    per_kiosk = Counter(e.kiosk for e in events)
    per_person = Counter(e.employee for e in events)
    names = {emp: str(info.get("name") or "") for emp, info in employees.items()}
    rows = "".join(
        f"<tr><td>{_time(e)}</td><td>{_link(e.kiosk, kiosk=e.kiosk)}</td>"
        f"<td>{_link(e.employee, employee=e.employee)}"
        f" <span class=muted>{escape(names.get(e.employee, ''))}</span></td>"
        f"<td>{escape(e.status)}</td></tr>"
        for e in events)
    fleet = "".join(_kiosk_row(state, now) for state in kiosks)
    silent = sum(state.silent for state in kiosks)
    counts = "".join(f"<tr><td>{_link(k, kiosk=k)}</td><td>{n}</td></tr>" for k, n in sorted(per_kiosk.items()))
    people = "".join(f"<tr><td>{_link(p, employee=p)}</td><td>{escape(names.get(p, ''))}</td><td>{n}</td></tr>"
                     for p, n in sorted(per_person.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Attendance</title><style>{STYLE}</style></head><body>
<h1>Kiosks</h1>
<p class=muted>{len(kiosks)} kiosk(s), {silent} silent (nothing heard for longer than the server's
silent_after_seconds).</p>
<table id=fleet><thead><tr><th>kiosk</th><th>state</th><th>release</th><th>last heard</th></tr></thead>
<tbody>{fleet}</tbody></table>
<h1>Attendance</h1>
<p class=muted>{len(events)} event(s), newest first; {len(employees)} employee(s) enrolled; as of
{escape(now.isoformat(timespec="seconds"))}. <a href="/">all</a></p>
<table id=events><thead><tr><th>time</th><th>kiosk</th><th>person</th><th>status</th></tr></thead>
<tbody>{rows or '<tr><td colspan=4 class=muted>no events</td></tr>'}</tbody></table>
<h2>Per kiosk</h2><table id=kiosks><thead><tr><th>kiosk</th><th>events</th></tr></thead><tbody>{counts}</tbody></table>
<h2>Per person</h2><table id=people><thead><tr><th>person</th><th>name</th><th>events</th></tr></thead>
<tbody>{people}</tbody></table>
</body></html>
"""
