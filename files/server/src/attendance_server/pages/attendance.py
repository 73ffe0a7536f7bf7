"""The attendance page (`/`): it leads with the kiosks (which are silent, which have a problem), then the
attendance, filtered by day, kiosk and person, with the CSV export of a range of days."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from ..days import MAX_DAYS
from ..fleet import KioskState, span
from ..store import Event
from .layout import document, error


@dataclass(frozen=True)
class Filters:
    """What the page shows, as its query has it ("" for any): kept in the forms, also when refused."""
    day: str = ""
    kiosk: str = ""
    employee: str = ""
    start: str = ""  # the export's from and to
    end: str = ""


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


def _options(values: list[str], chosen: str) -> str:
    return "".join(f'<option{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values)


def _filters(filters: Filters, kiosks: list[str], employees: list[str]) -> str:
    """The filter form (GET: it changes nothing); its choices are the configured kiosks and enrolled people."""
    return f"""<form class=row method=get action="/">
<label>day <input type=date name=day value="{escape(filters.day)}"></label>
<label>kiosk <select name=kiosk><option value="">any</option>{_options(kiosks, filters.kiosk)}</select></label>
<label>person <input type=text name=employee value="{escape(filters.employee)}" list=enrolled size=10
 placeholder="any"></label><datalist id=enrolled>{_options(employees, "")}</datalist>
<button>Show</button> <a class="button quiet" href="/">all</a></form>"""


def export_form(filters: Filters) -> str:
    """The CSV export of a range of days, for the kiosk and person filtered on (GET /attendance.csv)."""
    kept = [(name, value) for name, value in (("kiosk", filters.kiosk), ("employee", filters.employee)) if value]
    hidden = "".join(f'<input type=hidden name={name} value="{escape(value)}">' for name, value in kept)
    only = f", {escape(' and '.join(value for _, value in kept))} only" if kept else ""
    return f"""<form class=row method=get action="/attendance.csv" id=export>
<label>from <input type=date name=from value="{escape(filters.start)}" required></label>
<label>to <input type=date name=to value="{escape(filters.end)}" required></label>{hidden}
<button>Export CSV</button> <span class=muted>at most {MAX_DAYS} days{only}</span></form>"""


def export_refused(filters: Filters, problem: str) -> str:
    """The export's form again, with what was wrong with it."""
    return document("Attendance export", "attendance",
                    f"<h1>Attendance export</h1>\n{error(problem)}\n{export_form(filters)}")


def render(events: list[Event], employees: dict[str, dict[str, object]], kiosks: list[KioskState],
           now: datetime, filters: Filters = Filters(), problem: str = "") -> str:
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
    shown = ", ".join(f"{what} {escape(value)}" for what, value in (
        ("on", filters.day), ("at kiosk", filters.kiosk), ("of", filters.employee)) if value)
    return document("Attendance", "attendance", f"""<h1>Kiosks</h1>
<p class=muted>{len(kiosks)} kiosk(s), {silent} silent (nothing heard for longer than the server's
silent_after_seconds).</p>
<div class=scroll><table id=fleet><thead><tr><th>kiosk</th><th>state</th><th>release</th><th>last heard</th></tr>
</thead><tbody>{fleet}</tbody></table></div>
<section id=attendance><h1>Attendance</h1>
{error(problem)}{_filters(filters, [state.name for state in kiosks], sorted(employees))}
<p class=muted>{len(events)} event(s){" " + shown if shown else ""}, newest first; {len(employees)} employee(s)
enrolled; as of {escape(now.isoformat(timespec="seconds"))}. <a href="/">all</a></p>
<div class=scroll><table id=events><thead><tr><th>time</th><th>kiosk</th><th>person</th><th>status</th></tr></thead>
<tbody>{rows or '<tr><td colspan=4 class=muted>no events</td></tr>'}</tbody></table></div>
{export_form(filters)}
<h2>Per kiosk</h2><table id=kiosks><thead><tr><th>kiosk</th><th>events</th></tr></thead><tbody>{counts}</tbody></table>
<h2>Per person</h2><table id=people><thead><tr><th>person</th><th>name</th><th>events</th></tr></thead>
<tbody>{people}</tbody></table></section>""")
