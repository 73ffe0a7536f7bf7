"""One attendance event per visit, not one per frame, and not one more after a restart.

A person is reported when they have not been seen for `seconds`; every sighting restarts their
timer, so someone standing at the kiosk for ten minutes is one event, and they are reported
again only after being away for the cooldown. The timers live in memory: a service that starts
(after a crash, a watchdog restart, a deploy) is told by remember() whom it reported before, from
the events its outbox still holds, so that a person still in view is not reported a second time.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Collection


class Cooldown:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last_seen: dict[str, float] = {}

    def should_report(self, employee_id: str) -> bool:
        now = self._clock()
        last = self._last_seen.get(employee_id)
        self._last_seen[employee_id] = now
        if len(self._last_seen) > 4096:  # bound memory on a busy kiosk: drop expired entries
            self._last_seen = {k: t for k, t in self._last_seen.items() if now - t < self.seconds}
        return last is None or now - last >= self.seconds

    def remember(self, employee_id: str, seconds_ago: float) -> bool:
        """`employee_id` was reported `seconds_ago`, before this process: within the cooldown, as if seen
        then (returns whether it was within). Only the report is known, not the sightings after it:
        someone in view without a break for longer than the cooldown across a restart is reported again
        once it ends."""
        if seconds_ago >= self.seconds:
            return False
        seen = self._clock() - max(0.0, seconds_ago)
        self._last_seen[employee_id] = max(seen, self._last_seen.get(employee_id, seen))
        return True

    def forget(self, ids: Collection[str]) -> None:
        """Erased people: nothing of them is kept, not even when they were seen."""
        for employee_id in ids:
            self._last_seen.pop(employee_id, None)
