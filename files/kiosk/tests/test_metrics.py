from __future__ import annotations

import json
import time

import pytest
import requests

from pi_kiosk.metrics import HealthServer, Metrics


@pytest.fixture
def health() -> HealthServer:
    metrics = Metrics()
    server = HealthServer(metrics, "127.0.0.1", 0, stale_seconds=0.3)
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def test_healthz_follows_frame_processing(health: HealthServer) -> None:
    url = f"http://127.0.0.1:{health.port}/healthz"
    health.metrics.frame_done()
    ok = requests.get(url, timeout=5)
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    time.sleep(0.4)
    stale = requests.get(url, timeout=5)
    assert stale.status_code == 503 and json.loads(stale.text)["status"] == "stale"


def test_metrics_are_prometheus_text(health: HealthServer) -> None:
    m = health.metrics
    m.frame_done()
    m.faces.inc(2)
    m.matches.inc()
    m.unknowns.inc()
    m.observe("embed", 0.004)
    m.last_sync.set(1700000000)
    m.track_outbox(lambda: 7)
    resp = requests.get(f"http://127.0.0.1:{health.port}/metrics", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = resp.text
    for line in ["kiosk_frames_total 1.0", "kiosk_faces_total 2.0", "kiosk_matches_total 1.0",
                 "kiosk_unknowns_total 1.0", "kiosk_outbox_depth 7.0",
                 'kiosk_stage_seconds_bucket{le="0.005",stage="embed"} 1.0',
                 "kiosk_last_successful_sync_timestamp_seconds 1.7e+09"]:
        assert line in text, line


def test_other_paths_are_404(health: HealthServer) -> None:
    assert requests.get(f"http://127.0.0.1:{health.port}/", timeout=5).status_code == 404
