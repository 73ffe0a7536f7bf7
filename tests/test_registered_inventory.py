"""inventory/registered.py: the Pis that registered themselves with the attendance server, as Ansible reads them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, QuietHandler, serving

BIN = Path(sys.executable).parent
ADMIN = "admin-token-0123456789"
REGISTRATIONS = [
    {"serial": "10000000a1b2c3d4", "hostname": "kiosk-lobby-07", "model": "Raspberry Pi 4 Model B Rev 1.4",
     "revision": "c03114", "address": "192.0.2.17", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE root@kiosk",
     "first_seen": "2026-12-01T08:00:00+00:00", "last_seen": "2026-12-01T08:00:00+00:00"},
    {"serial": "00000000e5f6a7b8", "hostname": "kiosk-door-02", "model": "Raspberry Pi Zero 2 W Rev 1.0",
     "revision": "902120", "address": "2001:db8::2", "host_key": None,
     "first_seen": "2026-12-02T08:00:00+00:00", "last_seen": "2026-12-02T08:00:00+00:00"},
    {"serial": "00000000c0ffee00", "hostname": "kiosk-gate-05", "model": "Raspberry Pi 5 Model B Rev 1.0",
     "revision": "c04170", "address": "192.0.2.55", "host_key": None,
     "first_seen": "2026-12-03T08:00:00+00:00", "last_seen": "2026-12-03T08:00:00+00:00"},
    # A Pi 2: no board group takes it (pi_facts would refuse it), so it is listed apart, not among the kiosks.
    {"serial": "00000000deadbeef", "hostname": "old-pi", "model": "Raspberry Pi 2 Model B Rev 1.1",
     "revision": "a01041", "address": "192.0.2.99", "host_key": None,
     "first_seen": "2026-12-04T08:00:00+00:00", "last_seen": "2026-12-04T08:00:00+00:00"},
]


class FakeServer:
    """The attendance server's GET /api/registrations, answering the admin token only."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {ADMIN}":
                    self.send_error(403, "this needs the admin token")
                    return
                self.reply(200, json.dumps({"registrations": REGISTRATIONS}).encode())

        self.handler = Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    with serving(fake.handler) as fake.url:
        yield fake


def ansible_inventory(*sources: str, **env: str) -> subprocess.CompletedProcess[str]:
    args = [str(BIN / "ansible-inventory"), "--list"]
    for source in sources:
        args += ["-i", source]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})


def test_each_registered_pi_is_a_kiosk_in_its_board_group_with_its_address(server: FakeServer) -> None:
    run = ansible_inventory("inventory/registered.py", PI_FLEET_SERVER_URL=server.url + "/",
                            PI_FLEET_SERVER_TOKEN=ADMIN)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert sorted(found["kiosks"]["children"]) == ["pi4", "pi5", "pizero2"]
    assert found["pi4"]["hosts"] == ["kiosk-lobby-07"] and found["pizero2"]["hosts"] == ["kiosk-door-02"]
    assert found["pi5"]["hosts"] == ["kiosk-gate-05"]
    assert found["registered_unsupported"]["hosts"] == ["old-pi"]
    lobby = found["_meta"]["hostvars"]["kiosk-lobby-07"]
    assert (lobby["ansible_host"], lobby["pi_registered_serial"]) == ("192.0.2.17", "10000000a1b2c3d4")
    assert lobby["pi_registered_host_key"].startswith("ssh-ed25519 ")
    assert found["_meta"]["hostvars"]["kiosk-door-02"]["ansible_host"] == "2001:db8::2"
    assert server.requests == ["/api/registrations"]


def test_a_sites_group_vars_apply_to_the_registered_pis(server: FakeServer) -> None:
    """Given beside the site's inventory directory, its per-board group_vars land on the registered Pis."""
    run = ansible_inventory("inventory/example", "inventory/registered.py", PI_FLEET_SERVER_URL=server.url,
                            PI_FLEET_SERVER_TOKEN=ADMIN)
    assert run.returncode == 0, run.stderr
    hostvars = json.loads(run.stdout)["_meta"]["hostvars"]
    example_pizero2 = hostvars["kiosk-side-door-01"]  # the example inventory's own Pi Zero 2 W
    assert hostvars["kiosk-door-02"]["pi_swap_size_mb"] == example_pizero2["pi_swap_size_mb"]


@pytest.mark.parametrize("env, message", [
    ({}, "set PI_FLEET_SERVER_URL (the attendance server, http:// or https://) and PI_FLEET_SERVER_TOKEN"),
    ({"PI_FLEET_SERVER_URL": "attendance.example.com", "PI_FLEET_SERVER_TOKEN": ADMIN}, "set PI_FLEET_SERVER_URL"),
    ({"PI_FLEET_SERVER_URL": "{server}", "PI_FLEET_SERVER_TOKEN": "kiosk-token-0123456789"},
     "answered 403 this needs the admin token (PI_FLEET_SERVER_TOKEN must be the admin token)"),
    ({"PI_FLEET_SERVER_URL": "http://127.0.0.1:9", "PI_FLEET_SERVER_TOKEN": ADMIN},
     "cannot read the registrations from http://127.0.0.1:9/api/registrations"),
])
def test_a_missing_setting_a_wrong_token_or_no_server_is_said_in_one_line(
        server: FakeServer, env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PI_FLEET_SERVER_")}
    given = {k: v.replace("{server}", server.url) for k, v in env.items()}
    run = subprocess.run([sys.executable, str(ROOT / "inventory/registered.py"), "--list"], capture_output=True,
                         text=True, env={**clean, **given})
    assert run.returncode != 0 and message in run.stderr and run.stdout == ""
