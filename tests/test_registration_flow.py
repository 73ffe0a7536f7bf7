"""A fresh Pi joins the fleet, end to end: the registration script a first-boot card installs
(roles/pi_firstboot/files/pi-fleet-register) registers with the real attendance server, and inventory/registered.py
lists it in its board group, with its address, for the next ansible-playbook run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pi_firstboot import Pi

from conftest import ROOT

BIN = Path(sys.executable).parent
ADMIN = "admin-token-0123456789"
REGISTRAR = "registration-token-0123456789"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`pi-fleet-server serve` on a free port of 127.0.0.1 with a registration token: its URL."""
    config = tmp_path / "server.toml"
    config.write_text(f'database = "{tmp_path / "attendance.sqlite3"}"\nadmin_token = "{ADMIN}"\n'
                      f'registration_token = "{REGISTRAR}"\n[kiosks]\nkiosk-lobby-01 = "lobby-token-0123456789"\n')
    config.chmod(0o600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(BIN / "pi-fleet-server"), "serve", "--config", str(config), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5).close()
            break
        except OSError:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the attendance server did not start in 60 s"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def register_as(pi: Pi, hostname: str) -> subprocess.CompletedProcess[str]:
    """The script as its unit runs it, on a Pi named `hostname` (a UTS namespace of its own)."""
    env = {**os.environ, "PI_FLEET_REGISTER_CONFIG": str(pi.config), "PI_FLEET_REGISTERED": str(pi.registered),
           "PI_FLEET_DEVICETREE": str(pi.devicetree), "PI_FLEET_CPUINFO": str(pi.cpuinfo),
           "PI_FLEET_HOST_KEY": str(pi.host_key)}
    return subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, sys.executable,
                           str(ROOT / "roles/pi_firstboot/files/pi-fleet-register")],
                          capture_output=True, text=True, env=env, timeout=120)


def test_a_fresh_pi_registers_and_is_in_the_next_runs_inventory(tmp_path: Path, server: str) -> None:
    pi = Pi(tmp_path, server)
    pi.config.write_text(json.dumps({"url": server, "token": REGISTRAR}))
    done = register_as(pi, "kiosk-hall-09")
    assert done.returncode == 0, done.stdout + done.stderr
    assert pi.registered.is_file() and not pi.config.exists()

    listed = subprocess.run([str(BIN / "ansible-inventory"), "-i", "inventory/registered.py", "--list"],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PI_FLEET_SERVER_URL": server, "PI_FLEET_SERVER_TOKEN": ADMIN})
    assert listed.returncode == 0, listed.stderr
    inventory = json.loads(listed.stdout)
    assert inventory["pi4"]["hosts"] == ["kiosk-hall-09"] and inventory["kiosks"]["children"] == ["pi4"]
    assert inventory["_meta"]["hostvars"]["kiosk-hall-09"] == {
        "ansible_host": "127.0.0.1", "pi_registered_serial": "00000000c0ffee42",
        "pi_registered_model": "Raspberry Pi 4 Model B Rev 1.5",
        "pi_registered_host_key": pi.host_key.read_text().strip()}

    # Another card flashed with the same name: the server refuses it and the Pi stops asking (a person decides).
    (tmp_path / "other").mkdir()
    other = Pi(tmp_path / "other", server)
    other.config.write_text(json.dumps({"url": server, "token": REGISTRAR}))
    (other.devicetree / "serial-number").write_bytes(b"00000000aaaa0001\0")
    refused = register_as(other, "kiosk-hall-09")
    assert refused.returncode == 3 and "kiosk-hall-09" in refused.stderr and "00000000c0ffee42" in refused.stderr
    assert not other.registered.exists()
