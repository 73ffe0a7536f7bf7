"""The employees pages (`/employees`): who is enrolled (with which models, how many embeddings, since when), a
person added from photos, their photos replaced, their removal after a confirmation page. Every form posts to
the server's own origin, which is what the guard lets a browser do (api/guard.py: Sec-Fetch-Site and Origin),
so the forms need no token of their own."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import cast
from urllib.parse import quote

from ..config import Limits
from .layout import document, done, error

MiB = 1024 * 1024


@dataclass(frozen=True)
class Person:
    """An employee as Store.employees lists them."""
    id: str
    name: str
    embeddings: dict[str, int]  # per model's sha256
    enrolled: str  # when their latest embeddings were stored (UTC, ISO 8601)

    @classmethod
    def of(cls, employee: str, info: dict[str, object]) -> Person:
        return cls(employee, str(info["name"]), cast(dict[str, int], info["embeddings"]), str(info["enrolled"]))


@dataclass(frozen=True)
class Models:
    """The configured models' names by sha256 (a name is easier to read than a hash), and their names in the
    settings' order: a person without embeddings of one of them is not recognised by the kiosks running it."""
    names: dict[str, str]
    configured: list[str]

    def named(self, sha256: str) -> str:
        return self.names.get(sha256) or f"model {sha256[:12]}"


def _href(employee: str, then: str = "") -> str:
    return f"/employees/{quote(employee, safe='')}{then}"


def _when(stored: str, now: datetime) -> str:
    if not stored:
        return ""
    return escape(datetime.fromisoformat(stored).astimezone(now.tzinfo).isoformat(sep=" ", timespec="minutes"))


def _models(person: Person, models: Models) -> str:
    have = [f'<span title="{escape(sha)}">{escape(models.named(sha))}</span>: {count}'
            for sha, count in sorted(person.embeddings.items(), key=lambda item: models.named(item[0]))]
    missing = [f'<span class=problem>no {escape(name)}</span>' for name in models.configured
               if name not in {models.names.get(sha) for sha in person.embeddings}]
    return "<br>".join(have + missing) or '<span class=problem>none</span>'


def _photos_field(limits: Limits) -> str:
    return (f'<label for=photos>Photos <small>JPEG or PNG, each of this one face alone; up to {limits.photos}, '
            f'{limits.photo_bytes // MiB} MB each. Only their embeddings are kept, never the photos.</small></label>'
            '<input type=file id=photos name=photos accept="image/jpeg,image/png" multiple required>')


def roster(people: list[Person], models: Models, limits: Limits, now: datetime, *, employee: str = "",
           name: str = "", problem: str = "", message: str = "") -> str:
    """The list, then the form that adds a person (`employee` and `name`: what was typed, kept when refused)."""
    rows = "".join(
        f'<tr><td><a href="{escape(_href(p.id))}">{escape(p.id)}</a></td><td>{escape(p.name)}</td>'
        f"<td>{_models(p, models)}</td><td>{_when(p.enrolled, now)}</td>"
        f'<td><a href="{escape(_href(p.id, "/delete"))}">delete</a></td></tr>' for p in people)
    return document("Employees", "employees", f"""<h1>Employees</h1>
{done(message)}{error(problem)}
<p class=muted>{len(people)} enrolled; each kiosk receives their embeddings for its own model at its next
sync.</p>
<div class=scroll><table id=employees><thead><tr><th>id</th><th>name</th><th>embeddings per model</th>
<th>enrolled</th><th></th></tr></thead>
<tbody>{rows or '<tr><td colspan=5 class=muted>no one yet</td></tr>'}</tbody></table></div>
<form class=card method=post action="/employees" enctype="multipart/form-data" id=enrol>
<h2>Add a person</h2>
<label for=employee>Employee id <small>as the kiosks report it: letters, digits, . _ - (up to 64)</small></label>
<input type=text id=employee name=employee value="{escape(employee)}" required maxlength=64 autocomplete=off>
<label for=name>Name <small>optional</small></label>
<input type=text id=name name=name value="{escape(name)}" maxlength=200 autocomplete=off>
{_photos_field(limits)}
<button>Enrol</button>
</form>""")


def person(who: Person, models: Models, limits: Limits, now: datetime, *, name: str | None = None,
           problem: str = "", message: str = "") -> str:
    """One person: their embeddings, the form that replaces their photos, the way to their removal."""
    return document(f"Employee {who.id}", "employees", f"""<h1>{escape(who.id)} <span class=muted>{
    escape(who.name)}</span></h1>
{done(message)}{error(problem)}
<div class=scroll><table id=person class=facts><tbody>
<tr><th>embeddings per model</th><td>{_models(who, models)}</td></tr>
<tr><th>enrolled</th><td>{_when(who.enrolled, now)}</td></tr>
<tr><th>attendance</th><td><a href="/?employee={quote(who.id, safe='')}#attendance">their events</a></td></tr>
</tbody></table></div>
<form class=card method=post action="{escape(_href(who.id, "/photos"))}" enctype="multipart/form-data" id=replace>
<h2>Replace their photos</h2>
<p class=muted>The new photos' embeddings replace all of theirs, for every configured model.</p>
<label for=name>Name</label>
<input type=text id=name name=name value="{escape(who.name if name is None else name)}" maxlength=200>
{_photos_field(limits)}
<button>Replace</button>
</form>
<p><a class="button danger" href="{escape(_href(who.id, "/delete"))}">Delete {escape(who.id)}…</a></p>""")


def confirm_removal(who: Person, models: Models, problem: str = "") -> str:
    """The confirmation step: nothing is deleted until its form is posted."""
    return document(f"Delete {who.id}?", "employees", f"""<h1>Delete {escape(who.id)}?</h1>
{error(problem)}
<p><strong>{escape(who.id)}</strong> {escape(who.name)}: {_models(who, models)}</p>
<p>They are erased: their embeddings and their attendance events on the server at once, and on every kiosk at
its next sync, from everything it keeps.</p>
<form method=post action="{escape(_href(who.id, "/delete"))}" id=remove>
<input type=hidden name=confirm value="{escape(who.id)}">
<p><label><input type=checkbox name=keep_events value=yes> Keep their attendance events (where a law requires them
kept, e.g. for payroll)</label></p>
<button class=danger>Delete {escape(who.id)}</button>
<a class="button quiet" href="{escape(_href(who.id))}">Cancel</a>
</form>""")


def unknown(employee: str) -> str:
    return document("No such employee", "employees", f"""<h1>No such employee</h1>
{error(f"No employee {employee!r} is enrolled: nothing was changed.")}
<p><a href="/employees">All employees</a></p>""")
