"""One attendance event per visit, not one per frame.

A person is reported when they have not been seen for `seconds`; every sighting restarts their
timer, so someone standing at the kiosk for ten minutes is one event, and they are reported
again only after being away for the cooldown.
"""
from __future__ import annotations

import time
from collections.abc import Callable


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
