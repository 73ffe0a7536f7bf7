#!/usr/bin/python
"""Ansible module: read what the kiosk deployment on a Pi looks like, in one call."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_facts
short_description: Read the Pi's kiosk deployment state (read-only)
author: pi-fleet maintainers
description:
  - Reads, in one call, what a deploy needs to know about a Pi before it changes anything, and changes nothing.
  - The Python platform releases are built for (version, machine, glibc, venv support), so that the controller
    downloads the right wheels; the wheel cache, so that it sends only the wheels the Pi lacks.
  - The releases, the deployment state (live, committed, failed), the models, the free space and the
    service's systemd state.
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  root:
    description: The deployment area (releases, wheel cache, deployed files, C(state.json)).
    type: path
    required: true
  models_dir:
    description: The directory of the content-addressed model files.
    type: path
    required: true
  python:
    description: The interpreter releases are built from; the one whose platform is read.
    type: path
    default: /usr/bin/python3
  unit:
    description: The kiosk's systemd unit.
    type: str
    default: pi-kiosk.service
  allowed_signers:
    description: The allowed_signers file whose keys a release must be signed by (RV(signed) says whether it is there).
    type: path
    default: /etc/pi-kiosk/allowed_signers
  list_cameras:
    description:
      - Also list the CSI cameras with C(rpicam-vid --list-cameras) (RV(cameras)), for a kiosk whose camera is one.
    type: bool
    default: false
seealso:
  - module: pi_kiosk_switch
  - module: pi_kiosk_release
"""

EXAMPLES = r"""
- name: Read the Pi's kiosk deployment
  pi_kiosk_facts:
    root: /opt/pi-kiosk
    models_dir: /opt/pi-kiosk/models
  register: kiosk

- name: Refuse a Pi whose Python cannot build a release
  ansible.builtin.assert:
    that:
      - kiosk.platform.error is not defined
      - kiosk.platform.venv
    fail_msg: "{{ kiosk.platform.error | default('python3-venv is missing') }}"

- name: Say which release is live
  ansible.builtin.debug:
    msg: "{{ kiosk.state.live.release | default(kiosk.current) }}, service {{ kiosk.service.ActiveState }}"
"""

RETURN = r"""
platform:
  description:
    - The platform of O(python), which names the wheels a release needs.
    - Only RV(platform.error) when O(python) cannot run.
  type: dict
  returned: always
  contains:
    python:
      description: Its version, major.minor.
      type: str
      sample: "3.11"
    implementation:
      description: Its implementation.
      type: str
      sample: cpython
    machine:
      description: The machine its userland is built for (C(armv7l) or C(armv6l) for a 32-bit one).
      type: str
      sample: aarch64
    glibc:
      description: The C library's version.
      type: str
      sample: "2.36"
    venv:
      description: Whether it can create virtualenvs (Debian's C(python3-venv) installed).
      type: bool
      sample: true
    error:
      description: Why O(python) cannot run (missing, not executable, or its error output).
      type: str
      returned: when O(python) cannot run
      sample: /usr/bin/python3 does not exist or is not executable
wheels:
  description: The sha256 of every wheel in the Pi's content-addressed wheel cache (C(ROOT/wheels)).
  type: list
  elements: str
  returned: always
  sample: [0f3c7a52b0d4d2e1a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6]
releases:
  description: The complete releases (their marker file written), by name.
  type: list
  elements: str
  returned: always
  sample: [0.2.0-11ccb633dd26, 0.2.0-c12577f42026]
partial_releases:
  description: Release directories without their marker (a build that did not finish), rebuilt when needed.
  type: list
  elements: str
  returned: always
  sample: []
current:
  description: The release C(ROOT/current) points at; null when there is none.
  type: str
  returned: always
  sample: 0.2.0-c12577f42026
state:
  description: The deployment state (C(ROOT/state.json)); no live deployment and empty lists before the first deploy.
  type: dict
  returned: always
  contains:
    version:
      description: The state file's format.
      type: int
      sample: 1
    live:
      description: The deployment that is live, committed or not; null before the first.
      type: dict
      contains:
        release:
          description: Its release id.
          type: str
          sample: 0.2.0-c12577f42026
        files:
          description: Each deployed path and the sha256 of its content.
          type: dict
          sample: {/etc/pi-kiosk/config.toml: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}
        at:
          description: When it went live (UTC).
          type: str
          sample: "2026-11-26T14:49:48Z"
    committed:
      description: The deployments that passed the health gate, oldest first (the order rollback and pruning follow).
      type: list
      elements: dict
      contains:
        release:
          description: Its release id.
          type: str
        files:
          description: Each deployed path and the sha256 of its content.
          type: dict
        at:
          description: When it was committed (UTC).
          type: str
    failed:
      description: The last 10 deployments that failed their gate after going live, oldest first.
      type: list
      elements: dict
      contains:
        release:
          description: Its release id.
          type: str
        files:
          description: Each deployed path and the sha256 of its content.
          type: dict
        phase:
          description: Where it failed (e.g. C(health)).
          type: str
        reason:
          description: Why (at most 2000 characters).
          type: str
        at:
          description: When it was rolled back (UTC).
          type: str
models:
  description: The file names in O(models_dir) (each the model's sha256 and its extension).
  type: list
  elements: str
  returned: always
  sample: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.onnx]
signed:
  description: Whether the Pi accepts only signed releases (O(allowed_signers) exists).
  type: bool
  returned: always
  sample: false
free_mb:
  description:
    - Megabytes free (for an unprivileged user) on the file system of O(root), or of its nearest existing parent.
  type: int
  returned: always
  sample: 20480
service:
  description: The systemd properties of O(unit), as C(systemctl show) prints them (strings).
  type: dict
  returned: always
  contains:
    LoadState:
      description: C(loaded), or C(not-found) for a Pi without the kiosk.
      type: str
      sample: loaded
    ActiveState:
      description: C(active), C(activating), C(inactive), C(failed), ...
      type: str
      sample: active
    SubState:
      description: The unit type's own state.
      type: str
      sample: running
    NRestarts:
      description: How many times systemd restarted it since it was started.
      type: str
      sample: "0"
    MainPID:
      description: Its main process, C(0) when none.
      type: str
      sample: "812"
    MemoryCurrent:
      description: The memory its control group uses, in bytes, or C([not set]) (not running, or not accounted).
      type: str
      sample: "187432960"
cameras:
  description:
    - What C(rpicam-vid --list-cameras) printed (the pi_facts role's pi_cameras filter reads it); null when
      O(list_cameras) is false or C(rpicam-vid) is not installed.
  type: str
  returned: always
  sample: "Available cameras\n-----------------\n0 : imx708 [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)"
"""

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pi_fleet.kiosk.plugins.module_utils.pi_kiosk_store import Store

PLATFORM_PROBE = """
import json, platform, sys
try:
    import ensurepip, venv
    venv_ok = True
except ImportError:
    venv_ok = False
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "implementation": sys.implementation.name,
                  "machine": platform.machine(), "glibc": platform.libc_ver()[1], "venv": venv_ok}))
"""
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "NRestarts", "MainPID", "MemoryCurrent")


def platform_of(python: str) -> dict[str, Any]:
    if not os.access(python, os.X_OK):
        return {"error": f"{python} does not exist or is not executable"}
    proc = subprocess.run([python, "-c", PLATFORM_PROBE], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-500:]}
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def unit_state(unit: str) -> dict[str, str]:
    proc = subprocess.run(["systemctl", "show", unit, *(f"--property={p}" for p in UNIT_PROPERTIES)],
                          capture_output=True, text=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def camera_listing() -> str | None:
    """libcamera's camera list (its log lines on stderr are not part of it); None without rpicam-vid."""
    tool = shutil.which("rpicam-vid")
    if tool is None:
        return None
    try:
        proc = subprocess.run([tool, "--list-cameras"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "models_dir": {"type": "path", "required": True},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "unit": {"type": "str", "default": "pi-kiosk.service"},
            "allowed_signers": {"type": "path", "default": "/etc/pi-kiosk/allowed_signers"},
            "list_cameras": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    store = Store(p["root"])
    complete, partial = store.release_ids()
    models = Path(p["models_dir"])
    existing = next(parent for parent in (store.root, *store.root.parents) if parent.exists())
    fs = os.statvfs(existing)
    module.exit_json(
        changed=False,
        platform=platform_of(p["python"]),
        wheels=store.wheel_hashes(),
        releases=complete,
        partial_releases=partial,
        current=store.current_release(),
        state=store.read_state(),
        models=sorted(f.name for f in models.iterdir()) if models.is_dir() else [],
        free_mb=fs.f_bavail * fs.f_frsize // (1 << 20),
        signed=os.path.isfile(p["allowed_signers"]),
        service=unit_state(p["unit"]),
        cameras=camera_listing() if p["list_cameras"] else None,
    )


if __name__ == "__main__":
    main()
