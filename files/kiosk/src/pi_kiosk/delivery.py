"""What an answer from the attendance server means for the outbox, and the delivery state.

Only 400, 413 and 422 judge the event itself: that one event is set aside and the next one is
sent. Every other failure says something about the server, the network, the token or the URL,
and would be the same for every event: delivery pauses at that event (backoff, order kept) and
the backlog waits. The state is logged once per change, never once per event or attempt.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import requests

from .timekeeping import duration

log = logging.getLogger(__name__)

STATES = ("ok", "network", "server", "auth", "routing", "unexpected")
# The answers that judge the event itself (malformed, too large, semantically invalid).
REJECTING = frozenset({400, 413, 422})

_TOKEN = "check server.token"
_ROUTE = "check server.url and any proxy"
# (state, what to check) for the answers named in the README; other 3xx are "routing", other
# 5xx "server", any other answer "unexpected".
_BLOCKING: dict[int, tuple[str, str]] = {
    401: ("auth", _TOKEN),
    403: ("auth", _TOKEN),
    407: ("auth", "check the proxy's credentials (proxy authentication required)"),
    404: ("routing", _ROUTE),
    405: ("routing", _ROUTE),
    421: ("routing", _ROUTE),
    408: ("server", "the server timed out reading the request"),
    # Every request carries an Idempotency-Key: 409 says the first request with this key is
    # still being processed (draft-ietf-httpapi-idempotency-key-header), so the same key is resent.
    409: ("server", "the server is still processing an earlier request with this Idempotency-Key"),
    425: ("server", "the server asked to retry later (too early)"),
    429: ("server", "the server is rate-limiting this kiosk"),
}


class Action(Enum):
    DELIVERED = "delivered"
    REJECT = "reject"  # set this event aside, go on with the next
    BLOCKED = "blocked"  # keep this event and all after it, pause with backoff


@dataclass(frozen=True)
class Verdict:
    action: Action
    state: str = "ok"
    detail: str = ""  # "HTTP 401", "ConnectionError"
    hint: str = ""  # what to check


def judge(status: int) -> Verdict:
    """What an HTTP answer to one event's POST means."""
    if 200 <= status < 300:
        return Verdict(Action.DELIVERED)
    if status in REJECTING:
        return Verdict(Action.REJECT, detail=f"HTTP {status}")
    if status in _BLOCKING:
        state, hint = _BLOCKING[status]
    elif 300 <= status < 400:
        state, hint = "routing", "the server redirects server.url elsewhere: set server.url to where it leads"
    elif 500 <= status < 600:
        state, hint = "server", "the attendance server failed (server error); see its logs"
    else:
        state, hint = "unexpected", "check server.url and that the server implements this API"
    return Verdict(Action.BLOCKED, state, f"HTTP {status}", hint)


def unreachable(exc: requests.RequestException) -> Verdict:
    """A request that got no answer: the network or the server is down, or too slow."""
    hint = ("no answer within server.timeout_seconds" if isinstance(exc, requests.Timeout)
            else "server unreachable: check the network, DNS and server.url")
    return Verdict(Action.BLOCKED, "network", type(exc).__name__, hint)


@dataclass(frozen=True)
class DeliveryStatus:
    """A snapshot (replaced whole on change, so other threads read it without a lock)."""

    state: str = "ok"
    detail: str = ""
    hint: str = ""
    blocked_since: float | None = None  # when delivery stopped, on the tracker's clock; None while it works
    state_since: float | None = None  # when the current state began, on that clock

    @property
    def blocked(self) -> bool:
        return self.blocked_since is not None

    def blocked_seconds(self, now: float | None = None) -> float:
        """Seconds blocked at `now` (time.monotonic(), or the caller's clock)."""
        now = time.monotonic() if now is None else now
        return 0.0 if self.blocked_since is None else now - self.blocked_since

    def state_seconds(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return 0.0 if self.state_since is None else now - self.state_since

    def describe(self) -> str:
        return f"blocked by {self.detail}: {self.hint}" if self.blocked else "ok"


class DeliveryTracker:
    """Keeps the delivery state and logs one line when it changes."""

    def __init__(self, url: str, waiting: Callable[[], int],
                 on_change: Callable[[DeliveryStatus], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._waiting = waiting
        self._on_change = on_change
        self._clock = clock  # time.monotonic; a test passes one it moves itself
        self.status = DeliveryStatus()

    def _set(self, status: DeliveryStatus) -> None:
        self.status = status
        if self._on_change is not None:
            self._on_change(status)

    def blocked(self, verdict: Verdict, retry_in: float) -> None:
        old = self.status
        if (old.state, old.detail) == (verdict.state, verdict.detail):
            return
        now = self._clock()
        self._set(DeliveryStatus(verdict.state, verdict.detail, verdict.hint,
                                 blocked_since=old.blocked_since if old.blocked else now,
                                 state_since=old.state_since if old.state == verdict.state else now))
        change = "still blocked, now by" if old.blocked else "blocked by"
        log.warning("attendance delivery %s %s from %s: %s; %d event(s) waiting, retrying with backoff "
                    "(next try in %.0f s)", change, verdict.detail, self.url, verdict.hint, self._waiting(), retry_in)

    def resumed(self) -> None:
        old = self.status
        if not old.blocked:
            return
        self._set(DeliveryStatus())
        log.info("attendance delivery resumed after %s blocked (last by %s); %d event(s) were waiting",
                 duration(old.blocked_seconds(self._clock())), old.detail, self._waiting())
