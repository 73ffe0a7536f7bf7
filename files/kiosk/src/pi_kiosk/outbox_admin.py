"""The outbox as an operator sees it: `pi-kiosk outbox list|requeue` and `pi-kiosk check`.

These run as the service's user (never as root: privileges.py) while the service may have the
database open, and never create the database: the service does, where it is configured.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutboxError
from .outbox import Outbox
from .timekeeping import local_iso

# How much of a stored error to show on one line.
ERROR_CHARS = 200


@contextmanager
def existing_outbox(path: Path) -> Iterator[Outbox]:
    """The service's outbox, which must exist already."""
    if not path.is_file():
        raise OutboxError(f"outbox.path = {str(path)!r}: no outbox database there "
                          "(the service creates it when it first starts)")
    outbox = Outbox(path)
    try:
        yield outbox
    finally:
        outbox.close()


def listing(outbox: Outbox, now: float) -> str:
    """Counts, the oldest pending event's age, the last error, and one line per rejected event.
    Of an event's payload only the employee id is shown."""
    backlog = outbox.backlog()
    lines = [f"pending: {backlog.pending}", f"rejected: {backlog.rejected}"]
    if backlog.unsynchronized:
        lines.append(f"of the pending, waiting for the clock: {backlog.unsynchronized} (recorded before the clock was "
                     "synchronised: sent at their true time once it is)")
    if backlog.oldest_created_at is not None:
        lines.append(f"oldest pending: queued {local_iso(backlog.oldest_created_at)} "
                     f"({max(0.0, now - backlog.oldest_created_at):.0f} s ago)")
    if backlog.last_error is not None:
        lines.append(f"last error: {' '.join(backlog.last_error.split())[:ERROR_CHARS]} "
                     f"(after {backlog.last_error_attempts} attempt(s))")
    for event in outbox.rejected():
        lines.append(f"rejected {event.key} employee {event.employee_id} HTTP {event.status} "
                     f"queued {local_iso(event.created_at)} rejected {local_iso(event.rejected_at)}")
    return "\n".join(lines)
