"""The fleet report's judgements (plugins/filter/pi_report.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, load_module

report = load_module(ROOT / "plugins/filter/pi_report.py")

METRICS = """# HELP kiosk_stage_seconds Time per pipeline stage
# TYPE kiosk_stage_seconds histogram
kiosk_stage_seconds_bucket{le="0.05",stage="embed"} 0.0
kiosk_stage_seconds_bucket{le="0.1",stage="embed"} 10.0
kiosk_stage_seconds_bucket{le="0.2",stage="embed"} 90.0
kiosk_stage_seconds_bucket{le="+Inf",stage="embed"} 100.0
kiosk_stage_seconds_count{stage="embed"} 100.0
kiosk_stage_seconds_bucket{le="0.05",stage="detect"} 0.0
kiosk_stage_seconds_bucket{le="+Inf",stage="detect"} 0.0
kiosk_outbox_depth 3.0
kiosk_outbox_blocked_seconds 120.0
kiosk_last_successful_sync_timestamp_seconds 1000.0
"""


def test_throttled_flags_are_words() -> None:
    assert report.throttled_words("throttled=0x0") == []
    assert report.throttled_words("throttled=0x50005") == [
        "under-voltage now", "throttled now", "under-voltage since boot", "throttled since boot"]


def test_latency_quantiles_follow_prometheus_interpolation() -> None:
    latency = report.stage_latency_ms(METRICS)
    # p50: rank 50 falls in (0.1, 0.2] holding 10..90: 0.1 + 0.1 * 40/80 = 0.15 s.
    # p95: rank 95 is past the last finite bucket (0.2 s holds 90 of 100): at least 200 ms.
    assert latency["embed"] == {"p50": 150.0, "p50_over": False, "p95": 200.0, "p95_over": True}
    assert latency["detect"] == {"p50": None, "p50_over": False, "p95": None, "p95_over": False}


def test_a_quantile_beyond_the_last_bucket_says_so() -> None:
    slow = ('kiosk_stage_seconds_bucket{le="2.5",stage="embed"} 1.0\n'
            'kiosk_stage_seconds_bucket{le="+Inf",stage="embed"} 10.0\n')
    assert report.stage_latency_ms(slow)["embed"] == {"p50": 2500.0, "p50_over": True, "p95": 2500.0, "p95_over": True}


def test_a_kiosk_with_problems_shows_each_of_them() -> None:
    probe = {"metrics": METRICS, "throttled": "throttled=0x4", "healthz": {"status": "stale", "reason": "no frame"},
             "restarts": 2, "live": "0.2.0-b", "last_known_good": "0.2.0-a", "model_size": 5_000_000}
    row = report.kiosk_row(probe, "pi4", False, now=1000.0 + 7200)
    assert row["model_class"] == "mobilefacenet" and row["guide_ms"] == [100, 150]
    assert row["problems"] == [
        "throttled: throttled now", "unhealthy: stale no frame", "restarted 2 time(s)",
        "outbox growing: 3 event(s) waiting", "gallery sync stale: 120 min ago",
        "release 0.2.0-b is not the last known good (0.2.0-a)"]
    assert row["embed_p50_ms"] == 150.0  # the top of the guide's range: not slow


@pytest.mark.parametrize(("board", "p50_bucket", "slow"), [("pi4", "0.2", True), ("zero2w", "0.2", False)])
def test_slow_embedding_is_judged_against_the_boards_guide_range(board: str, p50_bucket: str, slow: bool) -> None:
    metrics = (f'kiosk_stage_seconds_bucket{{le="0.16",stage="embed"}} 0.0\n'
               f'kiosk_stage_seconds_bucket{{le="{p50_bucket}",stage="embed"}} 10.0\n'
               "kiosk_last_successful_sync_timestamp_seconds 1000.0\n")
    probe = {"metrics": metrics, "healthz": {"status": "ok"}, "model_size": 5_000_000}
    row = report.kiosk_row(probe, board, False, now=1000.0)
    assert any(p.startswith("embedding") for p in row["problems"]) is slow
    # An emulated Pi's latency is not a Pi's: never judged.
    assert report.kiosk_row(probe, board, True, now=1000.0)["problems"] == []


SYNCED = "kiosk_last_successful_sync_timestamp_seconds 1000.0\n"


@pytest.mark.parametrize(("kiosk", "issues", "flagged"), [
    ({"healthz": {"status": "ok"}}, [], []),
    ({"active": "failed", "healthz": {"status": "no answer", "reason": "connection refused"}},
     ["service failed"], ["health", "service"]),
    ({"healthz": {"status": "camera_missing", "camera": "missing", "reason": "camera /dev/video0 missing"}},
     ["camera missing"], ["health"]),
    # A degraded kiosk is said by its fields: their words, its reason once.
    ({"healthz": {"status": "degraded", "clock": "unsynchronized", "outbox": "disk_full", "reason": "..."}},
     ["clock not synchronised", "disk full"], ["clock", "health", "outbox"]),
    ({"healthz": {"status": "degraded", "reason": "something new"}}, ["degraded"], ["health"]),
    ({"healthz": {"status": "ok", "delivery": "network", "heartbeat": {"last_ok": None, "failures": 2,
                                                                       "error": "timed out"}}},
     ["delivery failing", "heartbeat failing"], ["delivery", "heartbeat"]),
    ({"throttled": "throttled=0x20000", "healthz": {"status": "ok"}}, ["throttled"], ["throttled"]),
])
def test_the_status_says_each_problem_in_a_few_words(kiosk: dict[str, object], issues: list[str],
                                                     flagged: list[str]) -> None:
    row = report.kiosk_row({"metrics": SYNCED, **kiosk}, "pi4", False, now=1000.0)
    assert (row["issues"], row["flagged"]) == (issues, flagged)
    assert bool(row["problems"]) is bool(issues)


@pytest.mark.parametrize(("healthz", "text", "title"), [
    ({"status": "ok", "heartbeat": {"last_ok": "2027-01-15T07:58:00+00:00", "failures": 0, "error": ""}},
     "2 min ago", "2027-01-15 07:58:00 UTC"),
    ({"status": "ok", "heartbeat": {"last_ok": "2027-01-15T09:58:00+02:00", "failures": 0}},
     "2 min ago", "2027-01-15 07:58:00 UTC"),
    ({"status": "ok", "heartbeat": {"last_ok": "2027-01-13T08:00:00Z", "failures": 0}}, "2 d ago",
     "2027-01-13 08:00:00 UTC"),
    ({"status": "ok", "heartbeat": {"last_ok": None, "failures": 0}}, "never",
     "no heartbeat has reached the attendance server"),
    ({"status": "ok"}, "—", "this release's /healthz has no heartbeat"),
    ({"status": "no answer", "reason": "refused"}, "?", "/healthz did not answer (no answer)"),
])
def test_last_heard(healthz: dict[str, object], text: str, title: str) -> None:
    now = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    heard = report.kiosk_row({"metrics": SYNCED, "healthz": healthz}, "pi4", False, now=now)["heard"]
    assert (heard["text"], heard["title"]) == (text, title)


def row(host: str, live: str, **probe: object) -> dict[str, object]:
    kiosk = {"live": live, "last_known_good": live, "metrics": SYNCED, "healthz": {"status": "ok"}, **probe}
    return {"host": host, "reachable": True, "kiosk": kiosk, "judged": report.kiosk_row(kiosk, "pi4", False, 1000.0)}


def test_the_fleet_puts_problems_first_and_counts_the_releases() -> None:
    """Another release is no kiosk's problem (a Coral Pi's or another platform's release is its own): counted."""
    fleet = report.fleet([row("a", "1.0"), row("b", "0.9"), row("c", "1.0", restarts=1), row("d", "1.0"),
                          report.row_of("e", {"e": {}})])
    assert [r["host"] for r in fleet["rows"]] == ["c", "e", "a", "b", "d"]
    assert fleet["rows"][3]["judged"]["issues"] == [] and fleet["rows"][3]["judged"]["flagged"] == []
    assert {k: fleet[k] for k in ("kiosks", "ok", "with_problems", "release", "releases")} == {
        "kiosks": 5, "ok": 3, "with_problems": 2, "release": "1.0", "releases": [("1.0", 3), ("0.9", 1)]}
    assert fleet["issues"] == [("restarting", 1), ("unreachable", 1)]


def test_no_release_is_the_fleets_on_a_tie() -> None:
    fleet = report.fleet([row("a", "1.0"), row("b", "0.9")])
    assert fleet["release"] is None and fleet["with_problems"] == 0
    assert fleet["releases"] == [("1.0", 1), ("0.9", 1)]


def test_model_classes() -> None:
    assert report.model_class(5_000_000, False) == "mobilefacenet"
    assert report.model_class(170_000_000, False) == "arcface-fp32"
    assert report.model_class(43_000_000, True) == "arcface-int8"


@pytest.mark.parametrize(("extra", "expect"), [
    ("pi_report_window_seconds=0", "pi_report_window_seconds=0 (allowed: 1 to 60)"),
    # Its own refusal: a failed validation also prints the whole spec, which names every input.
    ("pi_report_window_seconds=soon", "argument 'pi_report_window_seconds' is of type str and we were unable"),
    ("pi_report_kiosk_url=http://127.0.0.1:9108/metrics", "(allowed: http(s)://host:port, no path)"),
])
def test_bad_settings_stop_the_report_before_any_pi_is_read(extra: str, expect: str, tmp_path: Path) -> None:
    playbook = tmp_path / "report.yml"
    playbook.write_text(f"- hosts: localhost\n  gather_facts: false\n  roles: [{{role: {ROOT / 'roles/pi_report'}}}]\n")
    run = subprocess.run([Path(sys.executable).parent / "ansible-playbook", "-i", "localhost,", "-c", "local",
                          str(playbook), "-e", extra], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0
    assert expect in run.stdout + run.stderr
    assert "Read the Pi's system and recognizer state" not in run.stdout
