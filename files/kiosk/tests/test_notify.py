"""systemd notifications over a real AF_UNIX datagram socket."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pi_kiosk.notify import Notifier


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """(NOTIFY_SOCKET value, the bound socket) in Linux's abstract namespace."""
    name = f"pi-kiosk-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield "@" + name, sock


def received(sock: socket.socket) -> list[str]:
    """Every message waiting on the socket."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(5)


def test_ready_status_and_stopping_reach_an_abstract_socket(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    n = Notifier({"NOTIFY_SOCKET": address})
    n.status("loading models")
    n.ready("running")
    n.stopping()
    assert received(sock) == ["STATUS=loading models", "READY=1\nSTATUS=running", "STOPPING=1\nSTATUS=stopping"]


def test_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        Notifier({"NOTIFY_SOCKET": str(path)}).ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_watchdog_pings_at_most_every_half_period(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    now = [100.0]
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())},
                 clock=lambda: now[0])
    assert n.watchdog_interval == 5.0
    pinged = []
    for t in (100.0, 101.0, 104.9, 105.0, 109.0, 110.0):
        now[0] = t
        n.watchdog()
        pinged.append(len(received(sock)))
    assert pinged == [1, 0, 0, 1, 0, 1]


@pytest.mark.parametrize("environ", [
    {},  # not under systemd
    {"WATCHDOG_USEC": "10000000"},  # a watchdog but nowhere to send to
])
def test_without_notify_socket_nothing_is_tried(environ: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(environ)
    n.ready("up")
    n.watchdog()
    assert n.address == "" and caplog.records == []  # a send would have failed and been logged


@pytest.mark.parametrize("environ", [
    {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"},  # the watchdog is another process's
    {"WATCHDOG_USEC": "0"},
    {},
])
def test_no_watchdog_pings_unless_systemd_asks_this_process(environ: dict[str, str],
                                                            abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    n = Notifier({"NOTIFY_SOCKET": address, **environ})
    n.watchdog()
    assert n.watchdog_interval is None and received(sock) == []


def test_a_vanished_socket_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": f"@pi-kiosk-test-nobody-{uuid.uuid4().hex}"})
    n.status("a")
    n.status("b")
    assert len(caplog.records) == 1 and "cannot notify systemd at @pi-kiosk-test-nobody" in caplog.text
