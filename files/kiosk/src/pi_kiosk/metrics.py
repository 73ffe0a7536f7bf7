"""Health and Prometheus metrics on a small localhost HTTP endpoint.

/healthz answers 200 while frames are being processed and 503 once none has been for
`stale_seconds` (a stuck camera or a hung model); /metrics is the Prometheus text format from
prometheus_client. Both are served from one thread of the standard library's HTTP server.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 1 ms to 2.5 s: a Pi Zero 2 W running ResNet-50 still lands in one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("kiosk_frames", "Frames processed", registry=r)
        self.faces = Counter("kiosk_faces", "Faces detected", registry=r)
        self.matches = Counter("kiosk_matches", "Faces matched to an enrolled person", registry=r)
        self.unknowns = Counter("kiosk_unknowns", "Faces below the match threshold", registry=r)
        self.events = Counter("kiosk_attendance_events", "Attendance events written to the outbox", registry=r)
        self.latency = Histogram("kiosk_stage_seconds", "Time per pipeline stage (detect, align, embed, match)",
                                 ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.outbox_depth = Gauge("kiosk_outbox_depth", "Attendance events not yet delivered", registry=r)
        self.last_sync = Gauge("kiosk_last_successful_sync_timestamp_seconds",
                               "Unix time of the last successful gallery sync (0: never)", registry=r)
        self.gallery_size = Gauge("kiosk_gallery_embeddings", "Enrolled embeddings in the gallery", registry=r)
        self.last_frame = time.monotonic()

    def observe(self, stage: str, seconds: float) -> None:
        self.latency.labels(stage).observe(seconds)

    def frame_done(self) -> None:
        self.frames.inc()
        self.last_frame = time.monotonic()

    def track_outbox(self, depth: Callable[[], int]) -> None:
        # Read at scrape time, so the figure is never stale.
        self.outbox_depth.set_function(lambda: float(depth()))


class HealthServer:
    def __init__(self, metrics: Metrics, host: str, port: int, stale_seconds: float) -> None:
        self.metrics = metrics
        self.stale_seconds = stale_seconds
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def healthy(self) -> tuple[bool, dict[str, float | str]]:
        age = time.monotonic() - self.metrics.last_frame
        ok = age <= self.stale_seconds
        return ok, {"status": "ok" if ok else "stale", "seconds_since_last_frame": round(age, 3)}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(owner.metrics.registry))
            elif self.path == "/healthz":
                ok, body = owner.healthy()
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the journal

    return Handler
