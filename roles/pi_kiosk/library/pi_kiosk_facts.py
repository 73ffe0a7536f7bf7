#!/usr/bin/python
"""Ansible module: read what the kiosk deployment on a Pi looks like, in one call."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_facts
short_description: Read the Pi's kiosk deployment state (read-only)
description:
  - The Python platform releases are built for (version, machine, glibc, venv support), the wheel cache,
    the releases, the deployment state (live, committed, failed), the models, the free space and the
    service's systemd state. Changes nothing.
options:
  root: {description: The deployment area., type: path, required: true}
  models_dir: {description: Content-addressed model files., type: path, required: true}
  python: {description: The interpreter releases are built from., type: path, default: /usr/bin/python3}
  unit: {description: The kiosk's systemd unit., type: str, default: pi-kiosk.service}
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pi_kiosk_store import Store

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
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "NRestarts", "MainPID")


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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "models_dir": {"type": "path", "required": True},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "unit": {"type": "str", "default": "pi-kiosk.service"},
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
        service=unit_state(p["unit"]),
    )


if __name__ == "__main__":
    main()
