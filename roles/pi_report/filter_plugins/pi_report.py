"""Filters of the pi_report role: what the fleet report says about each kiosk, from what the probe read.

Kept here in Python (tested in tests/test_pi_report.py) rather than in Jinja: the throttling bits, the
latency quantiles from a Prometheus histogram and the judgement of each figure are logic."""
from __future__ import annotations

import math
import re
from typing import Any

# vcgencmd get_throttled: bits 0-3 now, 16-19 since boot (Raspberry Pi's documentation of vcgencmd).
THROTTLED_BITS = {
    0: "under-voltage now",
    1: "arm frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "arm frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}

# The deployment guide's embedding latency per face, in ms, by board family and model class.
GUIDE_LATENCY_MS: dict[str, dict[str, tuple[int, int]]] = {
    "pi4": {"mobilefacenet": (100, 150), "arcface-int8": (200, 300), "arcface-fp32": (500, 800)},
    "pi400": {"mobilefacenet": (100, 150), "arcface-int8": (200, 300), "arcface-fp32": (500, 800)},
    "pi3+": {"mobilefacenet": (200, 300), "arcface-int8": (300, 500)},
    "pi3": {"mobilefacenet": (200, 300), "arcface-int8": (300, 500)},
    "zero2w": {"mobilefacenet": (400, 600), "arcface-int8": (600, 800)},
}
SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# A sync older than this is stale (the kiosk syncs every few minutes).
STALE_SYNC_SECONDS = 3600


def throttled_words(value: str | int) -> list[str]:
    """'throttled=0x50005' (or the number) as words; [] when nothing is set."""
    if isinstance(value, str):
        value = int(value.rpartition("=")[2].strip() or "0", 16)
    return [word for bit, word in THROTTLED_BITS.items() if value & (1 << bit)]


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        found = SAMPLE_RE.match(line.strip())
        if found and not line.startswith("#"):
            labels = dict(LABEL_RE.findall(found["labels"] or ""))
            samples.append((found["name"], labels, float(found["value"])))
    return samples


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus's histogram_quantile over cumulative (upper bound, count) buckets: linear within the
    bucket the rank falls in; None without observations; inf when the rank is beyond the last finite bound."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound) or count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return math.inf


def stage_latency_ms(metrics_text: str, name: str = "kiosk_stage_seconds") -> dict[str, dict[str, Any]]:
    """p50 and p95 per pipeline stage in ms, from the kiosk's /metrics; a quantile beyond the histogram's last
    finite bucket is given as that bound with p50_over / p95_over true (the true value is larger)."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    for sample, labels, value in metric_samples(metrics_text):
        if sample == f"{name}_bucket" and "stage" in labels:
            buckets.setdefault(labels["stage"], []).append((float(labels["le"]), value))
    out: dict[str, dict[str, Any]] = {}
    for stage, stage_buckets in buckets.items():
        top = max((b for b, _ in stage_buckets if not math.isinf(b)), default=0.0)
        out[stage] = {}
        for label, q in (("p50", 0.5), ("p95", 0.95)):
            seconds = histogram_quantile(stage_buckets, q)
            over = seconds is not None and math.isinf(seconds)
            out[stage][label] = None if seconds is None else round((top if over else seconds) * 1000, 1)
            out[stage][f"{label}_over"] = over
    return out


def metric_value(metrics_text: str, name: str) -> float | None:
    return next((value for sample, _, value in metric_samples(metrics_text) if sample == name), None)


def model_class(size_bytes: int, quantized: bool) -> str:
    """The guide's model classes: MobileFaceNet (a few MB), ArcFace (ResNet, over 30 MB) in INT8 or FP32."""
    if size_bytes < 30 * 1024 * 1024 and not quantized:
        return "mobilefacenet"
    return "arcface-int8" if quantized else "arcface-fp32"


def kiosk_row(probe: dict[str, Any], board: str, emulated: bool, now: float) -> dict[str, Any]:
    """One kiosk's line of the report: its figures and the problems a person must see."""
    metrics = probe.get("metrics") or ""
    latency = stage_latency_ms(metrics) if metrics else {}
    embed_p50 = (latency.get("embed") or {}).get("p50")
    cls = model_class(int(probe.get("model_size") or 0), bool(probe.get("model_quantized")))
    expected = GUIDE_LATENCY_MS.get(board, {}).get(cls)
    # (the report's column it concerns, what a person must know)
    problems: list[tuple[str, str]] = []
    words = throttled_words(probe.get("throttled") or "0")
    if words:
        problems.append(("throttled", "throttled: " + ", ".join(words)))
    healthz = probe.get("healthz") or {}
    if healthz.get("status") != "ok":
        status, reason = healthz.get("status", "no answer"), healthz.get("reason", "")
        problems.append(("health", f"unhealthy: {status} {reason}".strip()))
    restarts = int(probe.get("restarts") or 0)
    if restarts > 0:
        problems.append(("service", f"restarted {restarts} time(s)"))
    depth = metric_value(metrics, "kiosk_outbox_depth")
    if depth is not None and depth > 0 and (metric_value(metrics, "kiosk_outbox_blocked_seconds") or 0) > 0:
        problems.append(("outbox", f"outbox growing: {int(depth)} event(s) waiting"))
    last_sync = metric_value(metrics, "kiosk_last_successful_sync_timestamp_seconds")
    if not last_sync:
        problems.append(("sync", "never synced the gallery"))
    elif now - last_sync > STALE_SYNC_SECONDS:
        problems.append(("sync", f"gallery sync stale: {int((now - last_sync) // 60)} min ago"))
    live, good = probe.get("live"), probe.get("last_known_good")
    if live and live != good:
        problems.append(("release", f"release {live} is not the last known good ({good})"))
    slow = (expected is not None and embed_p50 is not None and not emulated and embed_p50 > expected[1])
    if slow:
        problems.append(("latency", f"embedding {embed_p50} ms, the guide expects {expected[0]}-{expected[1]} ms"))
    return {
        "latency_ms": latency,
        "embed_p50_ms": embed_p50,
        "model_class": cls,
        "guide_ms": list(expected) if expected else None,
        "throttled_words": words,
        "outbox_depth": None if depth is None else int(depth),
        "last_sync_age_s": None if not last_sync else int(now - last_sync),
        "frames_per_s": probe.get("fps"),
        "problems": [message for _, message in problems],
        "flagged": sorted({column for column, _ in problems}),
        "emulated": emulated,
    }


def row_of(host: str, hostvars: Any) -> dict[str, Any]:
    """The judged row of a kiosk, or the row saying it could not be read."""
    row = hostvars[host].get("__pi_report_row")
    if row:
        return dict(row)
    return {"host": host, "reachable": False, "judged": {"problems": ["unreachable: not read"], "flagged": ["host"]}}


class FilterModule:
    """Ansible filters of the pi_report role."""

    def filters(self) -> dict[str, Any]:
        return {"pi_throttled_words": throttled_words, "pi_stage_latency_ms": stage_latency_ms,
                "pi_kiosk_row": kiosk_row, "pi_report_row_of": row_of}
