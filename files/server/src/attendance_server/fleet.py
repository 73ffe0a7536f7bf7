"""The kiosks as the operator sees them: each configured kiosk with its last heartbeat, and silent once none came
for `silent_after_seconds`. The page, `GET /api/kiosks` and `/metrics` all read this, from the database at the time
of asking (several server processes may share it)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .config import Settings
from .store import Store

# get_throttled bits 0-3: under-voltage, frequency capped, throttled, soft temperature limit, now (16-19: since boot).
THROTTLED_NOW = 0xF


@dataclass(frozen=True)
class KioskState:
    name: str
    heard: datetime | None  # the server's time of its last heartbeat; None: never heard from
    seconds: float | None  # since then
    silent: bool  # nothing heard for longer than silent_after_seconds, or never
    body: dict[str, Any]  # the last heartbeat ({}: none)

    def describe(self) -> str:
        """Its state in words: "ok", what is wrong, "silent for 12 min", or "never heard"."""
        if self.seconds is None:
            return "never heard"
        if self.silent:
            return f"silent for {span(self.seconds)}"
        status = str(self.body.get("status", ""))
        return status if status == "ok" else str(self.body.get("reason") or status)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "last_heard": self.heard.isoformat() if self.heard else None,
                "seconds_since_heard": self.seconds, "silent": self.silent, "state": self.describe(),
                "heartbeat": self.body or None}


def kiosk_states(settings: Settings, store: Store, now: datetime) -> list[KioskState]:
    """Every configured kiosk, by name. A heartbeat of a kiosk no longer in [kiosks] is left out: its token is
    gone, so it could never report again, and it would stay silent for ever."""
    last = store.heartbeats()
    states = []
    for name in sorted(settings.kiosk_tokens):
        beat = last.get(name)
        if beat is None:
            states.append(KioskState(name, None, None, True, {}))
            continue
        seconds = max(0.0, (now - beat.received).total_seconds())  # another process's clock may be a moment ahead
        states.append(KioskState(name, beat.received, seconds, seconds > settings.silent_after_seconds, beat.body))
    return states


def span(seconds: float) -> str:
    """A silence in words, to the minute past the first: "40 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60 % 60, whole // 3600 % 24, whole // 86400
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
