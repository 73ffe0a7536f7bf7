"""Erasing people from everything the kiosk stores (biometric data: GDPR Art. 9, BIPA).

One function for both ways a person is erased: the server's tombstones in a gallery answer (sync.py, applied by
the service) and `pi-kiosk forget` (an operator, or playbooks/forget.yml). It removes their rows from the gallery
cache, the local enrollments (and the files of other models' enrollments set aside beside them) and their events
from the outbox in every state: a pending event is dropped too, since reporting a person who asked to be erased
would re-create their data on the server. Files are rewritten whole and renamed over the old ones (store.py),
the outbox's rows are overwritten with zeros (outbox.py). What the running service holds in memory (gallery,
cooldown, events held while the disk is full) is its own to drop (service.py).
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .config import SyncConfig
from .outbox import Outbox
from .store import remove_ids


@dataclass
class Erased:
    """What was removed of one person."""

    gallery: int = 0  # embeddings in the gallery cache
    enrolled: int = 0  # embeddings enrolled on this kiosk (any model's file)
    events: dict[str, int] = field(default_factory=dict)  # outbox events per state: pending, delivered, rejected

    def describe(self) -> str:
        states = ", ".join(f"{count} {state}" for state, count in self.events.items())
        return (f"{self.gallery} synced embedding(s), {self.enrolled} enrolled embedding(s), "
                f"{sum(self.events.values())} outbox event(s){f' ({states})' if states else ''}")


def embeddings_files(sync: SyncConfig) -> list[Path]:
    """Every file of embeddings: the gallery cache, the enrollments, and those of earlier models set aside by
    `enroll --new-model` (enrolled.<sha256[:12]>.npz)."""
    enrolled = sync.enrolled_path
    return [sync.cache_path, enrolled, *sorted(enrolled.parent.glob(f"{enrolled.stem}.*{enrolled.suffix}"))]


def erase_stored(ids: Collection[str], sync: SyncConfig, outbox: Outbox | None) -> dict[str, Erased]:
    """Remove these people from the kiosk's files and outbox (None: no outbox yet); returns what was found of each
    (people not found are left out)."""
    found: dict[str, Erased] = {}
    for path in embeddings_files(sync):
        for employee, rows in remove_ids(path, ids).items():
            erased = found.setdefault(employee, Erased())
            if path == sync.cache_path:
                erased.gallery += rows
            else:
                erased.enrolled += rows
    if outbox is not None:
        for employee, events in outbox.forget(ids).items():
            found.setdefault(employee, Erased()).events = events
    return found


def totals(found: dict[str, Erased]) -> str:
    """For the journal: counts only, no ids (the journal is kept apart from any erasure)."""
    events = sum(sum(e.events.values()) for e in found.values())
    return (f"{len(found)} person(s): {sum(e.gallery for e in found.values())} synced and "
            f"{sum(e.enrolled for e in found.values())} enrolled embedding(s), {events} outbox event(s)")
