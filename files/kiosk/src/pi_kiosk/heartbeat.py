"""The heartbeat: every `heartbeat.interval_seconds` the kiosk tells the attendance server it is alive
and how it is (`POST /api/kiosk/heartbeat`), so that the server can show every kiosk with "last
heard" and page someone when one goes quiet.

Its own daemon thread, never the frame loop's: it reads snapshots (/healthz's body, the camera's and
the clock's status, the outbox's counts), each taken without a lock held across the request. Unlike
attendance events nothing is queued: only the latest state matters, so a failed heartbeat is simply
retried with the state of the next interval, and after an outage one heartbeat is sent, not a
backlog. A failure is logged once per streak of failures, and once more when it works again.

The body names the deployed release, the model, the health in words, and the Pi's temperature and
throttling read from sysfs (the sandboxed service runs no `vcgencmd`). The kiosk's wall clock may not
be synchronised (timekeeping.py): `sent_at` comes with the boot id and the seconds since boot, and
the server takes its own time as "last heard".
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from . import __version__
from .client import ServerClient
from .delivery import Verdict, judge, unreachable
from .redact import redact_url
from .timekeeping import Timekeeper, local_iso

if TYPE_CHECKING:  # metrics.py imports HeartbeatStatus from here
    from .metrics import Metrics

log = logging.getLogger(__name__)

THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
# The firmware's get_throttled bits, as `vcgencmd get_throttled` gives them (the kernel's firmware driver).
THROTTLED_PATH = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

# HealthServer.healthy(): (frames processed?, the /healthz body).
Health = Callable[[], tuple[bool, dict[str, object]]]


@dataclass(frozen=True)
class HeartbeatStatus:
    """A snapshot, replaced whole on change, so the health thread reads it without a lock."""

    last_ok: float | None = None  # Unix time the server last took a heartbeat; None: not yet
    failures: int = 0  # consecutive failed heartbeats
    error: str = ""  # the last failure's, while failing

    def healthz(self) -> dict[str, object]:
        return {"last_ok": None if self.last_ok is None else local_iso(self.last_ok), "failures": self.failures,
                "error": self.error}


def deployed_release(prefix: str = sys.prefix) -> str | None:
    """The release this process runs: the deploy role builds each release as a virtualenv at
    /opt/pi-kiosk/releases/<id> (the kiosk version and a hash of what it installs) and the service
    runs its interpreter, also through the `current` link. None when not run from a release."""
    path = Path(prefix).resolve()
    return path.name if path.parent.name == "releases" else None


def soc_temperature(path: Path = THERMAL_PATH) -> float | None:
    """The SoC's temperature in °C (the kernel gives millidegrees); None without that sensor."""
    try:
        return round(int(path.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def throttled(path: Path = THROTTLED_PATH) -> int | None:
    """The firmware's get_throttled bits (0-3: under-voltage, frequency capped, throttled, soft temperature
    limit now; 16-19: the same since boot); None off a Pi. The kernel writes them in hex."""
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def _describe(verdict: Verdict) -> str:
    return f"{verdict.detail}: {verdict.hint}" if verdict.hint else verdict.detail


class Heartbeat:
    """`run(health)` in its own thread; `status` may be read from any thread. `wait(seconds)` sleeps and
    says whether the service is stopping."""

    def __init__(self, server: ServerClient, metrics: Metrics, clock: Timekeeper, model_sha256: str,
                 interval: float, wait: Callable[[float], bool], *, release: str | None = None,
                 thermal_path: Path = THERMAL_PATH, throttled_path: Path = THROTTLED_PATH) -> None:
        self.server, self.metrics, self.clock = server, metrics, clock
        self.model_sha256, self.interval, self._wait = model_sha256, interval, wait
        self.release = deployed_release() if release is None else release
        self.thermal_path, self.throttled_path = thermal_path, throttled_path
        self.url = redact_url(server.heartbeat_url)  # for messages
        self.status = HeartbeatStatus()

    def body(self, health: Health) -> dict[str, Any]:
        _, snapshot = health()
        camera, clock = self.metrics.camera(), self.metrics.clock_status()
        return {
            "release": self.release, "version": __version__, "model_sha256": self.model_sha256,
            "status": snapshot["status"], "reason": snapshot.get("reason", ""),
            "camera": camera.state, "camera_problem": camera.problem,
            "clock_synchronized": clock.synchronized, "clock_waiting_events": clock.waiting,
            "outbox_depth": self.metrics.outbox_depth(), "outbox_rejected": self.metrics.outbox_rejected(),
            "seconds_since_last_frame": snapshot["seconds_since_last_frame"],
            "temperature_celsius": soc_temperature(self.thermal_path), "throttled": throttled(self.throttled_path),
            "sent_at": local_iso(self.clock.wall()), "boot_id": self.clock.boot_id,
            "boot_seconds": round(self.clock.monotonic(), 3),
        }

    def beat(self, health: Health) -> bool:
        """One heartbeat with the state of now; whether the server took it."""
        try:
            answer = self.server.post_heartbeat(self.body(health))
        except requests.RequestException as exc:
            return self._failed(_describe(unreachable(exc)))
        except Exception as exc:  # a bug, not the server: logged with its traceback, and the thread goes on
            return self._failed(f"{type(exc).__name__}: {exc}"[:300], traceback=True)
        if not 200 <= answer.status_code < 300:
            return self._failed(_describe(judge(answer.status_code)))
        if self.status.failures:
            log.info("heartbeat to %s works again after %d failed one(s)", self.url, self.status.failures)
        self.status = HeartbeatStatus(self.clock.wall())
        return True

    def _failed(self, error: str, *, traceback: bool = False) -> bool:
        old = self.status
        if not old.failures:  # once per streak: a server away for a day is not 1440 lines
            log.warning("heartbeat to %s failed (%s); trying again every %g s with the state of then, "
                        "logged again once it works", self.url, error, self.interval, exc_info=traceback)
        self.status = HeartbeatStatus(old.last_ok, old.failures + 1, error)
        return False

    def run(self, health: Health) -> None:
        """A heartbeat at once, then one every interval until the service stops."""
        while True:
            self.beat(health)
            if self._wait(self.interval):
                return
