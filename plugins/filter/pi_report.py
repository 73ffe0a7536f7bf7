"""Filters of the pi_report role: what the fleet report says about each kiosk, from what the probe read.

Kept here in Python (tested in tests/test_pi_report.py) rather than in Jinja: the throttling bits, the
latency quantiles from a Prometheus histogram, the judgement of each figure, the problems in a few words for
the report's status column, "last heard" and the fleet's release are logic."""
from __future__ import annotations

import math
import re
from collections import Counter
from datetime import UTC, datetime
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
# systemd's ActiveState in the words of the status column ("unknown": the probe could not read it).
SERVICE_WORDS = {"failed": "service failed", "unknown": "service state unknown"}
# /healthz's status in the words of the report's status column; "degraded" is said by the fields below instead.
HEALTH_WORDS = {"camera_missing": "camera missing", "stale": "no frames processed", "no answer": "kiosk not answering"}
# /healthz's delivery state (pi_kiosk/delivery.py) in words: what blocks attendance reaching the server.
DELIVERY_WORDS = {"network": "server unreachable", "server": "server errors", "auth": "token refused",
                  "routing": "wrong server address", "unexpected": "unexpected answers"}


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


def ago(seconds: float) -> str:
    """A time span as a person says it: "40 s ago", "12 min ago", "5 h ago", "3 d ago"."""
    if seconds < 0:
        return "ahead of this clock"
    for limit, unit, size in ((90, "s", 1), (90 * 60, "min", 60), (48 * 3600, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds // 86400)} d ago"


def last_heard(heartbeat: Any, now: float) -> dict[str, Any]:
    """The report's "last heard" from /healthz's heartbeat ({"last_ok": ISO-8601 or null, "failures", "error"}):
    its text, the absolute time for the title, and its age; "—" from a release without heartbeats."""
    if not isinstance(heartbeat, dict):
        return {"text": "—", "title": "this release's /healthz has no heartbeat", "iso": None, "age_s": None}
    last_ok = heartbeat.get("last_ok")
    if not last_ok:
        return {"text": "never", "title": "no heartbeat has reached the attendance server", "iso": None,
                "age_s": None}
    try:
        when = datetime.fromisoformat(str(last_ok))
    except ValueError:
        return {"text": str(last_ok), "title": "not an ISO-8601 time", "iso": None, "age_s": None}
    if when.tzinfo is None:  # the kiosk writes UTC; a time without an offset is taken as UTC, not the controller's
        when = when.replace(tzinfo=UTC)
    age = now - when.timestamp()
    return {"text": ago(age), "title": when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "iso": when.isoformat(), "age_s": int(age)}


def kiosk_row(probe: dict[str, Any], board: str, emulated: bool, now: float) -> dict[str, Any]:
    """One kiosk's line of the report: its figures and the problems a person must see."""
    metrics = probe.get("metrics") or ""
    latency = stage_latency_ms(metrics) if metrics else {}
    embed_p50 = (latency.get("embed") or {}).get("p50")
    cls = model_class(int(probe.get("model_size") or 0), bool(probe.get("model_quantized")))
    expected = GUIDE_LATENCY_MS.get(board, {}).get(cls)
    # (the report's fact it concerns, the problem in a few words for the status column, what a person must know;
    # None where another problem's words already say it)
    problems: list[tuple[str, str | None, str | None]] = []
    words = throttled_words(probe.get("throttled") or "0")
    if words:
        word = "under-voltage" if any(w.startswith("under-voltage") for w in words) else "throttled"
        problems.append(("throttled", word, "throttled: " + ", ".join(words)))
    active = probe.get("active")
    service_down = bool(active) and active != "active"
    if service_down:
        word = SERVICE_WORDS.get(active, f"service {active}")
        problems.append(("service", word, word))
    healthz = probe.get("healthz") or {}
    status = healthz.get("status", "no answer")
    # The fields of a kiosk's /healthz, each a problem in its own words; a "degraded" reason already says them.
    said = status == "degraded"
    fields: list[tuple[str, str, str | None]] = []
    if healthz.get("clock") == "unsynchronized":
        fields.append(("clock", "clock not synchronised", None if said else "clock not synchronised"))
    if healthz.get("outbox") in ("disk_full", "error"):
        fields.append(("outbox", "disk full" if healthz["outbox"] == "disk_full" else "outbox not writable",
                       None if said else f"outbox: {healthz['outbox']}"))
    if healthz.get("sync") in ("failing", "stopped"):
        fields.append(("sync", f"gallery sync {healthz['sync']}", None if said else f"gallery sync {healthz['sync']}"))
    delivery = healthz.get("delivery")
    if delivery and delivery != "ok":
        fields.append(("delivery", "delivery failing",
                       f"attendance delivery failing: {DELIVERY_WORDS.get(delivery, delivery)}"))
    if status != "ok":
        reason = healthz.get("reason", "")
        # A stopped service is why nothing answers: its words say it already.
        word = None if status == "no answer" and service_down else HEALTH_WORDS.get(status, f"kiosk answers {status}")
        if status == "degraded":
            word = None if fields else "degraded"
        problems.append(("health", word, f"unhealthy: {status} {reason}".strip()))
    problems += fields
    restarts = int(probe.get("restarts") or 0)
    if restarts > 0:
        problems.append(("service", "restarting", f"restarted {restarts} time(s)"))
    depth = metric_value(metrics, "kiosk_outbox_depth")
    if depth is not None and depth > 0 and (metric_value(metrics, "kiosk_outbox_blocked_seconds") or 0) > 0:
        problems.append(("outbox", "delivery failing", f"outbox growing: {int(depth)} event(s) waiting"))
    last_sync = metric_value(metrics, "kiosk_last_successful_sync_timestamp_seconds")
    if not last_sync:
        problems.append(("sync", "gallery never synced", "never synced the gallery"))
    elif now - last_sync > STALE_SYNC_SECONDS:
        problems.append(("sync", "gallery sync stale", f"gallery sync stale: {int((now - last_sync) // 60)} min ago"))
    heartbeat = healthz.get("heartbeat")
    failures = int(heartbeat.get("failures") or 0) if isinstance(heartbeat, dict) else 0
    if failures > 0:
        error = heartbeat.get("error") or "no error given"
        problems.append(("heartbeat", "heartbeat failing", f"heartbeat failing: {failures} in a row ({error})"))
    live, good = probe.get("live"), probe.get("last_known_good")
    if live and live != good:
        problems.append(("release", "release not committed", f"release {live} is not the last known good ({good})"))
    slow = (expected is not None and embed_p50 is not None and not emulated and embed_p50 > expected[1])
    if slow:
        problems.append(("latency", "slow embedding",
                         f"embedding {embed_p50} ms, the guide expects {expected[0]}-{expected[1]} ms"))
    return {
        "latency_ms": latency,
        "embed_p50_ms": embed_p50,
        "model_class": cls,
        "guide_ms": list(expected) if expected else None,
        "throttled_words": words,
        "outbox_depth": None if depth is None else int(depth),
        "last_sync_age_s": None if not last_sync else int(now - last_sync),
        "frames_per_s": probe.get("fps"),
        # Without /healthz's JSON nothing says whether the release sends heartbeats.
        "heard": last_heard(heartbeat, now) if status != "no answer" and not status.startswith("HTTP ") else
        {"text": "?", "title": f"/healthz did not answer ({status})", "iso": None, "age_s": None},
        "issues": list(dict.fromkeys(word for _, word, _ in problems if word)),
        "problems": [message for _, _, message in problems if message],
        "flagged": sorted({column for column, _, _ in problems}),
        "emulated": emulated,
    }


def row_of(host: str, hostvars: Any) -> dict[str, Any]:
    """The judged row of a kiosk, or the row saying it could not be read."""
    row = hostvars[host].get("__pi_report_row")
    if row:
        return dict(row)
    return {"host": host, "reachable": False,
            "judged": {"issues": ["unreachable"], "problems": ["unreachable: not read"], "flagged": ["host"]}}


def fleet(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's rows, problems first, and its summary, with the releases the kiosks run and how many run each
    (the fleet's: the one most run, none on a tie). Another release is not a kiosk's problem: a release is built
    per platform, and a board of another one, or with a Coral accelerator, runs a release of its own."""
    releases = Counter(row["kiosk"]["live"] for row in rows if row.get("reachable") and row["kiosk"].get("live"))
    ranked = releases.most_common(2)
    release = ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else None
    judged_rows = sorted(rows, key=lambda row: (not row["judged"]["problems"], row["host"]))
    issues = Counter(issue for row in judged_rows for issue in row["judged"]["issues"])
    troubled = sum(1 for row in judged_rows if row["judged"]["problems"])
    return {"rows": judged_rows, "kiosks": len(judged_rows), "ok": len(judged_rows) - troubled,
            "with_problems": troubled, "issues": issues.most_common(), "release": release,
            "releases": releases.most_common()}


class FilterModule:
    """Ansible filters of the pi_report role."""

    def filters(self) -> dict[str, Any]:
        return {"pi_throttled_words": throttled_words, "pi_stage_latency_ms": stage_latency_ms,
                "pi_kiosk_row": kiosk_row, "pi_report_row_of": row_of, "pi_report_fleet": fleet}
