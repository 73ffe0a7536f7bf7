"""The outbox as an operator sees it: `pi-kiosk outbox list|requeue` and `pi-kiosk check`.

These run as root while the service, under its own user, may have the database open. They
never create the database (a root-owned one would lock the service out), and afterwards every
`-wal`/`-shm` file beside it is owned like the database itself. SQLite's unix VFS does that
for the files it creates as root; checking here keeps the service writable whatever the
SQLite build.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .errors import OutboxError
from .outbox import Outbox

SIDE_FILES = ("-wal", "-shm")
# How much of a stored error to show on one line.
ERROR_CHARS = 200


def match_owner(db: Path) -> None:
    """Give the database's `-wal` and `-shm` files the database file's owner and group (as root)."""
    if os.geteuid() != 0:
        return  # only root can have created files another user cannot write
    owner = db.stat()
    for suffix in SIDE_FILES:
        side = db.with_name(db.name + suffix)
        try:
            st = side.stat()
        except FileNotFoundError:
            continue  # SQLite removes both when the last connection closes
        if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(side, owner.st_uid, owner.st_gid)


@contextmanager
def existing_outbox(path: Path) -> Iterator[Outbox]:
    """The service's outbox, which must exist already; its side files keep the service's owner."""
    if not path.is_file():
        raise OutboxError(f"outbox.path = {str(path)!r}: no outbox database there "
                          "(the service creates it when it first starts)")
    outbox = Outbox(path)
    try:
        yield outbox
    finally:
        outbox.close()
        match_owner(path)


def _when(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time).astimezone().isoformat(timespec="seconds")


def listing(outbox: Outbox, now: float) -> str:
    """Counts, the oldest pending event's age, the last error, and one line per rejected event.
    Of an event's payload only the employee id is shown."""
    backlog = outbox.backlog()
    lines = [f"pending: {backlog.pending}", f"rejected: {backlog.rejected}"]
    if backlog.oldest_created_at is not None:
        lines.append(f"oldest pending: queued {_when(backlog.oldest_created_at)} "
                     f"({max(0.0, now - backlog.oldest_created_at):.0f} s ago)")
    if backlog.last_error is not None:
        lines.append(f"last error: {' '.join(backlog.last_error.split())[:ERROR_CHARS]} "
                     f"(after {backlog.last_error_attempts} attempt(s))")
    for event in outbox.rejected():
        lines.append(f"rejected {event.key} employee {event.employee_id} HTTP {event.status} "
                     f"queued {_when(event.created_at)} rejected {_when(event.rejected_at)}")
    return "\n".join(lines)
