"""The running kiosk: capture -> motion gate -> pipeline -> cooldown -> outbox, with sync, sender, heartbeat and
health threads.

Erasure (erase.py) reaches the service two ways: the sync thread gets the server's tombstones, and another process
(`pi-kiosk forget`) rewrites the embeddings files, which the frame loop notices (their inode and mtime, checked once
a second) and reloads. Either way the person leaves the gallery at once, and the frame loop, which alone owns the
cooldown and the events held in memory, drops them there before its next frame, and from the outbox once more (an
event recorded between the erasure and that frame)."""
from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np
import requests

from .camera import CameraWait
from .capture import frames
from .config import Config
from .cooldown import Cooldown
from .enroll import load_enrolled
from .erase import erase_stored, totals
from .errors import GalleryError
from .heartbeat import Heartbeat
from .metrics import HealthServer, Metrics
from .motion import MotionGate
from .notify import Notifier
from .outbox import Outbox, Sender
from .outbox_writer import OutboxWriter
from .pipeline import Recognition
from .recognizer import assemble
from .sync import FAILURES_DEGRADED, SyncStatus
from .timekeeping import ClockStatus, Timekeeper

log = logging.getLogger(__name__)

# How often the frame loop looks whether another process changed the embeddings files.
STORES_CHECK_SECONDS = 1.0


def _version(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now: a rewrite (a new file renamed over it) changes its inode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class Service:
    def __init__(self, cfg: Config, clock: Timekeeper | None = None) -> None:
        """`clock`: the system's clocks, or a test's."""
        self.cfg = cfg
        self.clock = clock or Timekeeper(cfg.clock.synchronized_path)
        self.notifier = Notifier(clock=self.clock.monotonic)
        self.notifier.status("loading models")
        self.metrics = Metrics(self.clock.monotonic)
        recognizer = assemble(cfg, stream=True, observe=self.metrics.observe)
        self.server, self.sync, self.enrolled, self.pipeline = (
            recognizer.server, recognizer.sync, recognizer.enrolled, recognizer.pipeline)
        embedder, gallery = self.pipeline.embedder, self.pipeline.gallery
        self.sync.on_erased = self._erased_by_server
        # The sync thread and the frame loop each change the gallery files and what was loaded from them.
        self._stores_lock = threading.Lock()
        self._stores = self._stores_version()  # as this process last read or wrote them
        self._stores_check_at = 0.0
        self._erased: set[str] = set()  # erased by the sync, still to be dropped by the frame loop
        self._erased_lock = threading.Lock()
        # Warm-up: first runs allocate and plan; READY=1 should mean frames are processed at full speed.
        self.pipeline.detector.detect(np.zeros((cfg.camera.height, cfg.camera.width, 3), dtype=np.uint8))
        self.metrics.gallery_size.set(len(gallery))
        self.outbox = Outbox(cfg.outbox.path)
        estimated = self.outbox.estimate_earlier_boots(self.clock.boot_id)
        if estimated:
            log.warning("%d attendance event(s) recorded in an earlier boot whose clock was never synchronised: "
                        "sent with the time that clock showed, flagged TS1_estimated", estimated)
        self.sender = Sender(self.outbox, self.server, retry_initial=cfg.outbox.retry_initial_seconds,
                             retry_max=cfg.outbox.retry_max_seconds,
                             on_change=lambda status: self.notifier.status(f"running; delivery {status.describe()}"),
                             clock=self.clock.monotonic, timekeeper=self.clock, keep_days=cfg.outbox.keep_days)
        self.metrics.track_outbox(self.outbox.depth, self.outbox.rejected_count, lambda: self.sender.status)
        self.writer = OutboxWriter(self.outbox, cfg.outbox.memory_events, on_written=self.sender.wake,
                                   clock=self.clock.monotonic)
        self.metrics.track_writes(lambda: self.writer.status)
        self.metrics.track_sync(self.sync_status)
        self.metrics.track_clock(self.clock_status)
        self._sync_failures, self._sync_error = 0, ""
        self._sync_thread = threading.Thread(target=self._sync_loop, name="sync", daemon=True)
        self._sync_done = False  # set when the loop ends as configured, not by an exception
        self.cooldown = Cooldown(cfg.report.cooldown_seconds, self.clock.monotonic)
        self._remember_reported()
        self.gate = MotionGate(cfg.camera.motion_threshold, cfg.camera.motion_recheck_seconds)
        self.stop_event = threading.Event()
        # Waits on the stop event in real time, as the sync does, not on the (test's) clock: a fake clock's
        # waits move time for every thread.
        self.heartbeat = Heartbeat(self.server, self.metrics, self.clock, embedder.model_sha256,
                                   cfg.heartbeat.interval_seconds, self.stop_event.wait)
        self.metrics.track_heartbeat(lambda: self.heartbeat.status)
        # Waiting for a missing camera feeds the watchdog: only a hung frame loop gets the service restarted.
        self.camera = CameraWait(cfg.camera.source, clock=self.clock.monotonic,
                                 wait=functools.partial(self.clock.wait, self.stop_event),
                                 heartbeat=self.notifier.watchdog)
        self.metrics.track_camera(lambda: self.camera.status)
        self.summary = (f"{embedder.dim}-d embeddings of model {embedder.model_sha256[:12]}, "
                        f"{gallery.people} people enrolled")
        log.info("models loaded: %s", self.summary)
        log.info("card %s; matching at %g", embedder.card.describe(), self.pipeline.threshold)

    def _remember_reported(self) -> None:
        """Whom the outbox holds an event of within the cooldown (any state: pending, delivered, rejected)
        is not reported again by this start. Only events whose age a clock can tell count (timekeeping.py):
        of this boot, or of an earlier one with the clock synchronised then and now."""
        remembered = set()
        for employee, stamp in self.outbox.reported():
            age = self.clock.age(stamp)
            if age is not None and self.cooldown.remember(employee, age):
                remembered.add(employee)
        if remembered:
            log.info("cooldown: %d person(s) reported within the last %g s are not reported again yet",
                     len(remembered), self.cooldown.seconds)

    def report(self, results: list[Recognition]) -> None:
        for r in results:
            self.metrics.faces.inc()
            employee = r.match.employee_id
            if employee is None:
                self.metrics.unknowns.inc()
                continue
            self.metrics.matches.inc()
            if self.cooldown.should_report(employee):
                self.writer.record(employee, self.cfg.report.status, self.clock.stamp())
                self.metrics.events.inc()
                log.info("attendance: %s (score %.2f)", employee, r.match.score)

    def sync_once(self) -> None:
        with self._stores_lock:
            self._sync()

    def _sync(self) -> None:
        try:
            fresh = self.sync.fetch()
        except (requests.RequestException, GalleryError, OSError, sqlite3.Error) as exc:
            self._sync_failed(str(exc))
            log.warning("gallery sync failed (%d in a row), keeping the current gallery: %s", self._sync_failures, exc)
            return
        except Exception as exc:  # a bug, not the server: logged with its traceback, and the thread goes on
            self._sync_failed(f"{type(exc).__name__}: {exc}")
            log.exception("gallery sync failed unexpectedly (%d in a row), keeping the current gallery",
                          self._sync_failures)
            return
        self._sync_failures, self._sync_error = 0, ""
        self.metrics.last_sync.set(self.clock.wall())
        if fresh is not None:
            self.pipeline.gallery = fresh.merged(self.enrolled)
            self.metrics.gallery_size.set(len(self.pipeline.gallery))
            self._stores = self._stores_version()

    def _stores_version(self) -> tuple[tuple[int, int] | None, ...]:
        return tuple(_version(path) for path in (self.cfg.sync.cache_path, self.cfg.sync.enrolled_path))

    def _erased_by_server(self, ids: frozenset[str]) -> None:
        """The sync thread, with an answer's tombstones, before the answer is cached."""
        self.pipeline.gallery = self.pipeline.gallery.without(ids)  # recognised no more, from the next face on
        self.enrolled = self.enrolled.without(ids)
        found = erase_stored(ids, self.cfg.sync, self.outbox)
        if found:
            log.info("erased on the server, erased here: %s", totals(found))
        with self._erased_lock:
            self._erased |= ids

    def _catch_up(self) -> None:
        """The frame loop, before a frame: drop whom the sync erased, and reload the embeddings files once another
        process changed them (skipped while the sync thread holds them: looked at again a second later)."""
        self._drop_erased()
        now = self.clock.monotonic()
        if now < self._stores_check_at:
            return
        self._stores_check_at = now + STORES_CHECK_SECONDS
        if self._stores_version() != self._stores and self._stores_lock.acquire(blocking=False):
            try:
                self._reload_stores()
            finally:
                self._stores_lock.release()

    def _drop_erased(self) -> None:
        if not self._erased:
            return
        with self._erased_lock:
            ids, self._erased = frozenset(self._erased), set()
        self._forget_in_memory(ids)

    def _reload_stores(self) -> None:
        """Another process (`pi-kiosk forget`, `enroll`) rewrote the embeddings files: whoever left them is erased."""
        self._stores = self._stores_version()  # before reading: a change made meanwhile is seen at the next check
        try:
            enrolled = load_enrolled(self.cfg.sync.enrolled_path, self.pipeline.embedder)
            gallery = self.sync.load_cached().merged(enrolled)
        except (GalleryError, OSError) as exc:
            log.warning("the embeddings files changed, but could not be read again (keeping the gallery): %s", exc)
            return
        removed = frozenset(self.pipeline.gallery.ids) - frozenset(gallery.ids)
        self.pipeline.gallery, self.enrolled = gallery, enrolled
        self.metrics.gallery_size.set(len(gallery))
        log.info("embeddings files changed by another process: %d people in the gallery, %d erased", gallery.people,
                 len(removed))
        self._forget_in_memory(removed)

    def _forget_in_memory(self, ids: frozenset[str]) -> None:
        """The frame loop's part of an erasure: the cooldown, the events held in memory, the outbox once more."""
        if not ids:
            return
        self.cooldown.forget(ids)
        dropped = self.writer.drop(ids)
        try:
            found = self.outbox.forget(ids)
        except sqlite3.Error as exc:  # a failing disk: the next answer with the tombstones retries
            log.warning("could not erase from the outbox: %s", exc)
            return
        late = sum(sum(events.values()) for events in found.values())
        if dropped or late:
            log.info("erasure: %d event(s) held in memory dropped, %d recorded meanwhile deleted", dropped, late)

    def _sync_failed(self, error: str) -> None:
        self._sync_failures += 1
        self._sync_error = error[:300]

    def sync_status(self) -> SyncStatus:
        """For /healthz and /metrics (read from their thread)."""
        thread = self._sync_thread
        if thread.ident is not None and not thread.is_alive() and not self._sync_done:
            return SyncStatus("stopped", self._sync_failures, self._sync_error)
        state = "failing" if self._sync_failures >= FAILURES_DEGRADED else "ok"
        return SyncStatus(state, self._sync_failures, self._sync_error)

    def clock_status(self) -> ClockStatus:
        """For /healthz and /metrics (read from their thread)."""
        return self.clock.status(self.outbox.unsynchronized())

    def _sync_loop(self) -> None:
        while not self.stop_event.is_set():
            self.sync_once()
            if self.cfg.sync.interval_seconds == 0:
                break
            self.stop_event.wait(self.cfg.sync.interval_seconds)
        self._sync_done = True

    def stop(self) -> None:
        self.stop_event.set()
        self.sender.wake()

    def run(self) -> None:
        cam, met = self.cfg.camera, self.cfg.metrics
        health = HealthServer(self.metrics, met.host, met.port, met.stale_seconds,
                              auth_degraded_seconds=self.cfg.outbox.auth_degraded_seconds,
                              threads=self.pipeline.embedder.threads, wall=self.clock.wall)
        health.start()
        log.info("health and metrics on http://%s:%d/", met.host, health.port)
        sender = threading.Thread(target=self.sender.run, args=(self.stop_event,), name="sender")
        heartbeat = threading.Thread(target=self.heartbeat.run, args=(health.healthy,), name="heartbeat", daemon=True)
        for worker in (sender, self._sync_thread, heartbeat):
            worker.start()
        self.notifier.ready(f"running; {self.summary}; health on http://{met.host}:{health.port}/healthz")
        min_interval = 1.0 / cam.max_fps if cam.max_fps > 0 else 0.0
        clock = self.clock
        try:
            next_frame = clock.monotonic()
            for frame in frames(cam.source, width=cam.width, height=cam.height, fps=cam.max_fps, loop=cam.loop,
                                camera=self.camera):
                if self.stop_event.is_set():
                    break
                self._catch_up()
                self.writer.retry()
                now = clock.monotonic()
                if self.gate.should_process(frame, now):
                    results = self.pipeline.process(frame)
                    self.gate.processed(bool(results), now)
                    self.report(results)
                else:
                    self.metrics.skipped.inc()
                self.metrics.frame_done()
                self.notifier.watchdog()
                if min_interval:
                    next_frame += min_interval
                    delay = next_frame - clock.monotonic()
                    if delay > 0:
                        clock.wait(self.stop_event, delay)
                    else:
                        next_frame = clock.monotonic()
        finally:
            self.notifier.stopping()
            self._drop_erased()  # none of them is written by the last try
            self.writer.close()  # before the sender's last pass, which sends what it writes
            self.stop()
            for worker in (sender, heartbeat):
                worker.join(timeout=self.cfg.server.timeout_seconds + 5)
            health.stop()
            self.outbox.close()
