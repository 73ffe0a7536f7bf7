"""Exponential backoff, shared by the outbox's sender and the camera's reopen attempts."""
from __future__ import annotations


def doubling(failures: int, initial: float, maximum: float) -> float:
    """The pause after `failures + 1` consecutive failures: `initial`, doubling, capped at `maximum`."""
    return min(maximum, initial * 2.0 ** min(failures, 32))  # min(): 2.0 ** a long outage's count overflows
