"""Retention (`[retention]`): attendance events deleted `events_days` after the server received them, and the
embeddings of people marked as having left deleted `left_days` after the mark. The server prunes at start and every
hour (`pruning`, in its lifespan); `pi-fleet-server prune` does the same once, for cron. Each prune is a pair of
idempotent deletes, so several server processes sharing one database may prune at once.

Events count from their receipt, the server's clock, not from their `TS1`: a kiosk's clock may be wrong (an estimated
time may be days off), and an event must be neither deleted on arrival nor kept for ever for it."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .config import Retention
from .store import Store, iso

PRUNE_EVERY = 3600.0  # seconds
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    events: int
    embeddings: int
    events_before: datetime | None  # None: events are kept for ever
    left_before: datetime | None

    def describe(self) -> str:
        events = (f"{self.events} event(s) received before {iso(self.events_before)}" if self.events_before
                  else "no events (retention.events_days not set: kept for ever)")
        left = (f"{self.embeddings} embedding(s) of people who left before {iso(self.left_before)}"
                if self.left_before else "no embeddings (retention.left_days not set: kept for ever)")
        return f"deleted {events}; {left}"


def prune(store: Store, retention: Retention, now: datetime) -> Pruned:
    """Deletes what `retention` keeps no longer at `now`."""
    events_before = None if retention.events_days is None else now - timedelta(days=retention.events_days)
    left_before = None if retention.left_days is None else now - timedelta(days=retention.left_days)
    return Pruned(store.forget_events(events_before) if events_before else 0,
                  store.forget_left(left_before) if left_before else 0, events_before, left_before)


async def _prune_logged(store: Store, retention: Retention) -> None:
    try:
        pruned = await asyncio.to_thread(prune, store, retention, datetime.now(UTC))
    except Exception:  # a database out of reach for a while: the next prune catches up
        log.exception("retention: pruning failed; trying again in %d s", PRUNE_EVERY)
    else:
        log.info("retention: %s", pruned.describe())


@contextlib.asynccontextmanager
async def pruning(store: Store, retention: Retention) -> AsyncIterator[None]:
    """Prunes now, then every PRUNE_EVERY seconds in the background while the block runs (nothing without a
    [retention] setting)."""
    if retention == Retention():
        yield
        return
    await _prune_logged(store, retention)

    async def later() -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            await _prune_logged(store, retention)

    task = asyncio.create_task(later())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
