"""systemd's notification protocol (sd_notify) without libsystemd: datagrams to $NOTIFY_SOCKET.

With `Type=notify` systemd considers the service started at READY=1, shows STATUS= in
`systemctl status`, and with `WatchdogSec=` restarts it when WATCHDOG=1 pings stop. Outside
systemd (no NOTIFY_SOCKET) every call does nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.monotonic) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is neither a socket path nor an abstract socket name (@...); "
                        "systemd notifications are off", address)
            address = ""
        # "@name" is a socket in Linux's abstract namespace, whose addresses start with a NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(environ)
        self._clock = clock
        self._last_ping = -float("inf")
        self._failed = False

    def notify(self, *assignments: str) -> None:
        """Send one message, e.g. notify("READY=1", "STATUS=running")."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._failed:  # once: the watchdog would repeat it every few seconds
                log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
            self._failed = True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        """Ping the watchdog, at most every WATCHDOG_USEC / 2: called from the frame loop (and while it
        waits for a missing camera), so a camera read or an inference that hangs stops the pings and
        systemd restarts the service."""
        if self.watchdog_interval is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings, or None when systemd set no watchdog for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
