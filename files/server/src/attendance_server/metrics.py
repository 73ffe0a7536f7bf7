"""The kiosks as Prometheus metrics (`GET /metrics`, admin token: Prometheus sends it with `authorization` or
`basic_auth`), one series per kiosk (label `kiosk`), made at scrape time from the database and never kept in this
process: several server processes may share the database, and each must answer the same.

`attendance_kiosk_up` is 0 for a kiosk not heard from for `silent_after_seconds` (or never); the others are what
its last heartbeat said, and are left out when it said nothing of it (a kiosk never heard from has `up` alone).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .fleet import THROTTLED_NOW, KioskState

# (name, help, the value from a last heartbeat's body or None when it has none)
FROM_BODY: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("healthy", "1 when the kiosk's last heartbeat said status ok, 0 when degraded, camera_missing or stale",
     lambda b: float(b.get("status") == "ok")),
    ("camera_ok", "1 when the kiosk's camera delivered frames at its last heartbeat, 0 while missing",
     lambda b: None if not b.get("camera") else float(b["camera"] == "ok")),
    ("clock_synchronized", "1 when the kiosk's clock was synchronised at its last heartbeat",
     lambda b: None if b.get("clock_synchronized") is None else float(b["clock_synchronized"])),
    ("outbox_depth", "Attendance events the kiosk had not yet delivered at its last heartbeat",
     lambda b: b.get("outbox_depth")),
    ("temperature_celsius", "The kiosk's SoC temperature at its last heartbeat",
     lambda b: b.get("temperature_celsius")),
    ("throttled", "1 when the kiosk's Pi was under-voltage, frequency capped, throttled or at its soft temperature "
     "limit at its last heartbeat (get_throttled bits 0-3)",
     lambda b: None if b.get("throttled") is None else float(bool(b["throttled"] & THROTTLED_NOW))),
    ("seconds_since_last_frame", "Seconds since the kiosk processed a frame, at its last heartbeat",
     lambda b: b.get("seconds_since_last_frame")),
)


class KioskCollector(Collector):
    def __init__(self, states: list[KioskState]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("attendance_kiosk_up", "1 when the kiosk's last heartbeat came within "
                               "silent_after_seconds, 0 when it is silent or was never heard from", labels=["kiosk"])
        last = GaugeMetricFamily("attendance_kiosk_last_heartbeat_timestamp_seconds", "Unix time (the server's) of "
                                 "the kiosk's last heartbeat", labels=["kiosk"])
        info = GaugeMetricFamily("attendance_kiosk_info", "The release, pi-kiosk version and model of the kiosk's "
                                 "last heartbeat", labels=["kiosk", "release", "version", "model_sha256"])
        gauges = [(GaugeMetricFamily(f"attendance_kiosk_{name}", text, labels=["kiosk"]), value)
                  for name, text, value in FROM_BODY]
        for state in self._states:
            up.add_metric([state.name], 0.0 if state.silent else 1.0)
            if state.heard is None:
                continue
            last.add_metric([state.name], state.heard.timestamp())
            body = state.body
            info.add_metric([state.name, str(body.get("release") or ""), str(body.get("version", "")),
                             str(body.get("model_sha256", ""))], 1.0)
            for family, value in gauges:
                got = value(body)
                if got is not None:
                    family.add_metric([state.name], float(got))
        yield from (up, last, info, *(family for family, _ in gauges))


def exposition(states: list[KioskState]) -> bytes:
    """The Prometheus text format of these kiosks, from a registry of this scrape alone."""
    registry = CollectorRegistry()
    registry.register(KioskCollector(states))
    return generate_latest(registry)
