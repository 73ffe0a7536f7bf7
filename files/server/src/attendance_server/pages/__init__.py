"""The server's own pages, for the people who run it: server-rendered HTML, each page self-contained (its style
inline, no script, no external assets) and readable on a phone. `layout` is what every page shares; the routes
that serve them are in api/routes/ (attendance.py, employee_pages.py)."""
