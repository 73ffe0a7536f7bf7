"""How the delivery state is kept and reported (the Sender's use of it is in test_outbox.py)."""
from __future__ import annotations

import logging

import pytest
from fakeclock import FakeClock

from pi_kiosk.delivery import DeliveryStatus, DeliveryTracker, judge


def test_only_400_413_422_judge_the_event() -> None:
    judged = {status for status in range(200, 600) if judge(status).action.value == "reject"}
    assert judged == {400, 413, 422}
    assert {status for status in range(100, 600) if judge(status).action.value == "delivered"} == set(range(200, 300))


def test_resuming_names_how_long_delivery_was_blocked(caplog: pytest.LogCaptureFixture) -> None:
    changes: list[DeliveryStatus] = []
    clock = FakeClock()
    tracker = DeliveryTracker("http://srv/toon/attendance", lambda: 7, changes.append, clock)
    tracker.blocked(judge(401), retry_in=2)
    clock.advance(5)
    tracker.blocked(judge(401), retry_in=4)  # same reason: no new line, no change
    assert [s.state for s in changes] == ["auth"]
    clock.advance(3720)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        tracker.resumed()
        tracker.resumed()
    (line,) = caplog.records
    assert line.getMessage() == ("attendance delivery resumed after 1 h 2 min blocked (last by HTTP 401); "
                                 "7 event(s) were waiting")
    assert changes[-1] == DeliveryStatus() and changes[-1].describe() == "ok"


def test_a_new_reason_keeps_the_blocked_since_time() -> None:
    clock = FakeClock()
    tracker = DeliveryTracker("http://srv", lambda: 1, clock=clock)
    tracker.blocked(judge(503), retry_in=1)
    clock.advance(10)
    tracker.blocked(judge(401), retry_in=1)
    assert tracker.status.blocked_since == clock() - 10
    assert tracker.status.state_since == clock()  # auth for less time than blocked overall
    assert tracker.status.describe() == "blocked by HTTP 401: check server.token"


def test_each_blocking_answer_says_what_to_check() -> None:
    assert [judge(s).hint for s in (401, 403)] == ["check server.token"] * 2
    assert judge(407).hint.startswith("check the proxy's credentials")
    assert [judge(s).hint for s in (404, 405, 421)] == ["check server.url and any proxy"] * 3
    assert "server error" in judge(502).hint and "Idempotency-Key" in judge(409).hint
