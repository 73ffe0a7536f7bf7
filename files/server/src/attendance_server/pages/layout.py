"""What every page shares: the style, the navigation between Kiosks, Employees and Attendance, and the boxes that
say what went wrong or what was done."""
from __future__ import annotations

from html import escape

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:#222;line-height:1.4}
nav{display:flex;flex-wrap:wrap;gap:.25rem;background:#1f3a5f;padding:.5rem 1rem}
nav a{color:#fff;text-decoration:none;padding:.4rem .75rem;border-radius:4px}
nav a[aria-current]{background:#fff;color:#1f3a5f;font-weight:600}
main{padding:0 1rem 2rem;max-width:76rem}
h1{font-size:1.6rem;margin:1.2rem 0 .6rem}
h2{font-size:1.2rem;margin:1.2rem 0 .5rem}
.scroll{overflow-x:auto;margin-bottom:1.5rem}
table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}
.scroll table{margin-bottom:0}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;font-size:.95rem;vertical-align:top}
th{background:#f3f3f3}
a{color:#0645ad}
.muted{color:#777}
.estimated,.problem{color:#a15c00}
.silent{color:#b00020;font-weight:600}
form.card{border:1px solid #ddd;border-radius:6px;background:#fafafa;padding:.75rem 1rem 1rem;margin:0 0 1.5rem;
 max-width:36rem}
form.card h2{margin-top:.2rem}
form.row{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:flex-end;margin:0 0 1rem}
form.row label{margin:0}
label{display:block;font-weight:600;margin:.6rem 0 .2rem}
label small{font-weight:400;color:#555}
input[type=text],input[type=date],select{width:100%;padding:.45rem;font-size:1rem;border:1px solid #aaa;
 border-radius:4px}
form.row input,form.row select{width:auto;max-width:100%}
input[type=file]{font-size:1rem;max-width:100%;padding:.3rem 0}
button,.button{display:inline-block;margin-top:.8rem;padding:.5rem 1rem;font-size:1rem;border:0;border-radius:4px;
 background:#1f3a5f;color:#fff;text-decoration:none;cursor:pointer}
form.card button{display:block}
form.row button,form.row .button{margin-top:0}
table.facts{width:auto;min-width:min(100%,36rem)}
.facts th{width:11rem}
button.danger,.button.danger{background:#b00020}
.button.quiet{background:#e8e8e8;color:#222}
.error{border-left:4px solid #b00020;background:#fdecee;padding:.6rem .8rem;margin:1rem 0;white-space:pre-line}
.done{border-left:4px solid #2e7d32;background:#edf7ed;padding:.6rem .8rem;margin:1rem 0}
@media (max-width:600px){td,th{font-size:.85rem;padding:.3rem}main{padding:0 .6rem 1.5rem}}
"""

# (key, label, where): the Kiosks table leads the attendance page, so both are on /.
NAV = (("kiosks", "Kiosks", "/#fleet"), ("employees", "Employees", "/employees"),
       ("attendance", "Attendance", "/#attendance"))


def document(title: str, current: str, body: str) -> str:
    """A whole page: `body` (HTML) under the navigation, `current` its NAV key."""
    links = "".join(f'<a href="{href}"{" aria-current=page" if key == current else ""}>{label}</a>'
                    for key, label, href in NAV)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{STYLE}</style></head><body>
<nav>{links}</nav>
<main>
{body}
</main>
</body></html>
"""


def error(message: str) -> str:
    """What was refused and why (kept on the page, with the form, so the user can fix it)."""
    return f"<p class=error role=alert>{escape(message)}</p>" if message else ""


def done(message: str) -> str:
    return f"<p class=done role=status>{escape(message)}</p>" if message else ""
