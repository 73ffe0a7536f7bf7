"""Health and Prometheus metrics on a small localhost HTTP endpoint.

/healthz answers 200 while frames are being processed, and 503 while the camera is missing (the
service waits for it: camera.py) or once no frame has been processed for `stale_seconds` (a stuck
camera or a hung model): a kiosk that sees nothing is not healthy, and a deploy's health gate must
not commit a release it cannot see work. It still answers 200, with status "degraded"
and the reason in words, while the kiosk recognises people but something needs an operator: the
server has refused the token for longer than `auth_degraded_seconds` (nothing reaches it), the
outbox cannot be written (a full disk: events are held in memory), the gallery sync has failed
FAILURES_DEGRADED times in a row or its thread has ended, or the clock is not synchronised (events
wait for it: timekeeping.py). The body also says how the heartbeat to the server fares
(heartbeat.py), which degrades nothing: the server marks a kiosk it does not hear from itself.
/metrics is the Prometheus text format
from prometheus_client. Both are served from one thread of the standard library's HTTP server.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from . import __version__, outbox_writer, sync
from .camera import CameraStatus
from .delivery import STATES, DeliveryStatus
from .heartbeat import HeartbeatStatus
from .outbox_writer import WriteStatus
from .sync import SyncStatus
from .timekeeping import ClockStatus

# Latency buckets from 1 ms to 2.5 s: a Pi Zero 2 W running ResNet-50 still lands in one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # time.monotonic, the clock of DeliveryStatus's times too; a test passes one it moves itself.
        self.clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("kiosk_frames", "Frames taken from the camera", registry=r)
        self.skipped = Counter("kiosk_frames_skipped", "Frames the motion gate kept from detection (an unchanged "
                               "empty scene)", registry=r)
        self.faces = Counter("kiosk_faces", "Faces detected", registry=r)
        self.matches = Counter("kiosk_matches", "Faces matched to an enrolled person", registry=r)
        self.unknowns = Counter("kiosk_unknowns", "Faces below the match threshold", registry=r)
        self.events = Counter("kiosk_attendance_events", "Attendance events recorded (written to the outbox, held "
                              "in memory while it cannot be written, or dropped: kiosk_outbox_dropped_events)",
                              registry=r)
        self.latency = Histogram("kiosk_stage_seconds", "Time per pipeline stage (detect, align, embed, match)",
                                 ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.last_sync = Gauge("kiosk_last_successful_sync_timestamp_seconds",
                               "Unix time of the last successful gallery sync (0: never)", registry=r)
        self.gallery_size = Gauge("kiosk_gallery_embeddings", "Enrolled embeddings in the gallery", registry=r)
        self.last_frame = clock()
        # Until the track_* calls: "ok".
        self.delivery: Callable[[], DeliveryStatus] = DeliveryStatus
        self.writes: Callable[[], WriteStatus] = WriteStatus
        self.sync: Callable[[], SyncStatus] = SyncStatus
        self.camera: Callable[[], CameraStatus] = CameraStatus
        self.clock_status: Callable[[], ClockStatus] = ClockStatus
        self.heartbeat: Callable[[], HeartbeatStatus] = HeartbeatStatus
        self.outbox_depth: Callable[[], int] = lambda: 0
        self.outbox_rejected: Callable[[], int] = lambda: 0

    def observe(self, stage: str, seconds: float) -> None:
        self.latency.labels(stage).observe(seconds)

    def frame_done(self) -> None:
        self.frames.inc()
        self.last_frame = self.clock()

    # Each state is read at scrape time, so its figures are never stale: one collector per concern, registered when
    # the service tracks it (until then /healthz reads the defaults above, and /metrics has none of its figures).

    def track_outbox(self, depth: Callable[[], int], rejected: Callable[[], int],
                     delivery: Callable[[], DeliveryStatus]) -> None:
        self.delivery, self.outbox_depth, self.outbox_rejected = delivery, depth, rejected
        self.registry.register(_Scraped(self._outbox_metrics))

    def track_writes(self, writes: Callable[[], WriteStatus]) -> None:
        self.writes = writes
        self.registry.register(_Scraped(self._writes_metrics))

    def track_sync(self, status: Callable[[], SyncStatus]) -> None:
        self.sync = status
        self.registry.register(_Scraped(self._sync_metrics))

    def track_camera(self, status: Callable[[], CameraStatus]) -> None:
        self.camera = status
        self.registry.register(_Scraped(self._camera_metrics))

    def track_clock(self, status: Callable[[], ClockStatus]) -> None:
        self.clock_status = status
        self.registry.register(_Scraped(self._clock_metrics))

    def track_heartbeat(self, status: Callable[[], HeartbeatStatus]) -> None:
        self.heartbeat = status
        self.registry.register(_Scraped(self._heartbeat_metrics))

    def _outbox_metrics(self) -> Iterator[Metric]:
        status = self.delivery()
        yield GaugeMetricFamily("kiosk_outbox_depth", "Attendance events not yet delivered", value=self.outbox_depth())
        yield GaugeMetricFamily("kiosk_outbox_rejected", "Attendance events the server refused, set aside "
                                "(pi-kiosk outbox list)", value=self.outbox_rejected())
        yield StateSetMetricFamily("kiosk_outbox_delivery", "Attendance delivery: ok, or what blocks it",
                                   {state: state == status.state for state in STATES})
        yield GaugeMetricFamily("kiosk_outbox_blocked_seconds", "Seconds attendance delivery has been blocked "
                                "(0 while it works)", value=status.blocked_seconds(self.clock()))

    def _writes_metrics(self) -> Iterator[Metric]:
        status = self.writes()
        yield StateSetMetricFamily("kiosk_outbox_write", "Writing events to the outbox: ok, disk_full, or error "
                                   "(another write failure)", {s: s == status.state for s in outbox_writer.STATES})
        yield GaugeMetricFamily("kiosk_outbox_held_events", "Attendance events held in memory because the outbox "
                                "cannot be written", value=status.held)
        yield CounterMetricFamily("kiosk_outbox_dropped_events", "Attendance events dropped because "
                                  "outbox.memory_events were held in memory already", value=status.dropped)

    def _sync_metrics(self) -> Iterator[Metric]:
        status = self.sync()
        yield StateSetMetricFamily("kiosk_gallery_sync", "Gallery sync: ok, failing (failed repeatedly) or "
                                   "stopped (its thread ended)", {s: s == status.state for s in sync.STATES})
        yield GaugeMetricFamily("kiosk_gallery_sync_failures", "Consecutive failed gallery syncs",
                                value=status.failures)

    def _camera_metrics(self) -> Iterator[Metric]:
        status = self.camera()
        yield GaugeMetricFamily("kiosk_camera_missing", "1 while the camera is missing (the kiosk waits for it and "
                                "reopens it with backoff), 0 while it delivers frames", value=int(status.missing))
        yield GaugeMetricFamily("kiosk_camera_missing_seconds", "Seconds the camera has been missing (0 while it "
                                "delivers frames)", value=status.missing_seconds(self.clock()))

    def _clock_metrics(self) -> Iterator[Metric]:
        status = self.clock_status()
        yield GaugeMetricFamily("kiosk_clock_synchronized", "1 once the system clock is synchronised in this boot "
                                "(clock.synchronized_path exists), 0 before", value=int(status.synchronized))
        yield GaugeMetricFamily("kiosk_clock_waiting_events", "Attendance events recorded while the clock was not "
                                "synchronised, waiting for it before they are sent", value=status.waiting)

    def _heartbeat_metrics(self) -> Iterator[Metric]:
        status = self.heartbeat()
        yield GaugeMetricFamily("kiosk_heartbeat_last_success_timestamp_seconds", "Unix time the attendance server "
                                "last took a heartbeat (0: never)", value=status.last_ok or 0)
        yield GaugeMetricFamily("kiosk_heartbeat_failures", "Consecutive failed heartbeats (0 while they work)",
                                value=status.failures)


class _Scraped(Collector):
    """Metrics `make` makes when /metrics is read."""

    def __init__(self, make: Callable[[], Iterator[Metric]]) -> None:
        self._make = make

    def collect(self) -> Iterator[Metric]:
        return self._make()


class HealthServer:
    def __init__(self, metrics: Metrics, host: str, port: int, stale_seconds: float, *,
                 auth_degraded_seconds: float, threads: int | None,
                 wall: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.wall = wall  # Unix time, for the times /healthz shows
        self.stale_seconds = stale_seconds
        self.auth_degraded_seconds = auth_degraded_seconds
        self.threads = threads  # the embedding model's ONNX Runtime intra-op threads (None: Edge TPU)
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def healthy(self) -> tuple[bool, dict[str, object]]:
        """(frames are processed, and the camera is there?, the /healthz body): 200 or 503."""
        now = self.metrics.clock()
        age = now - self.metrics.last_frame
        delivery = self.metrics.delivery()
        writes, sync_status = self.metrics.writes(), self.metrics.sync()
        camera, clock = self.metrics.camera(), self.metrics.clock_status()
        body: dict[str, object] = {
            "status": "ok", "seconds_since_last_frame": round(age, 3), "camera": camera.state,
            "delivery": delivery.state, "outbox": writes.state, "sync": sync_status.state,
            "clock": "synchronized" if clock.synchronized else "unsynchronized", "version": __version__,
            "threads": self.threads, "heartbeat": self.metrics.heartbeat().healthz()}
        if camera.missing:
            body.update(status="camera_missing", reason=camera.describe(now, self.wall()))
            return False, body
        if age > self.stale_seconds:
            body.update(status="stale", reason=f"no frame processed for {age:.0f} s "
                                               f"(metrics.stale_seconds = {self.stale_seconds:g})")
            return False, body
        problems: list[str] = []
        auth_seconds = delivery.state_seconds(now) if delivery.state == "auth" else 0.0
        if auth_seconds > self.auth_degraded_seconds:
            problems.append(f"attendance delivery blocked for {auth_seconds:.0f} s by {delivery.detail}: "
                            f"{delivery.hint}")
        if writes.state != "ok":
            problems.append(writes.describe())
        if sync_status.state != "ok":
            problems.append(sync_status.describe())
        if not clock.synchronized:
            problems.append(clock.describe())
        if problems:
            body.update(status="degraded", reason="; ".join(problems))
        return True, body

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
