#!/usr/bin/python
"""Ansible module: everything the fleet report shows about one Pi, read in one Python process."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_report_probe
short_description: Read a kiosk's system and service state for the fleet report (read-only)
description:
  - OS, kernel, CPU governor, swap, IO schedulers, the overclock block of the boot config, vcgencmd's
    throttling flags, temperature and clock; the kiosk's live and last known good release, service state and
    restarts, /healthz, /metrics (twice, window seconds apart, for frames/s), the model's size and whether it
    is quantised, and the service sandbox's exposure (systemd-analyze security). Changes nothing.
options:
  boot_config: {description: The boot partition's config.txt., type: path, required: true}
  overclock_block:
    description: The overclock block's name in its BEGIN and END lines.
    type: str
    default: pi-fleet pi_overclock
  state_file: {description: The kiosk deployment's state., type: path, default: /opt/pi-kiosk/state.json}
  config_file: {description: The kiosk's live configuration., type: path, default: /etc/pi-kiosk/config.toml}
  unit: {description: The kiosk's systemd unit., type: str, default: pi-kiosk.service}
  url: {description: The kiosk's health and metrics endpoint., type: str, default: "http://127.0.0.1:9108"}
  window: {description: Seconds between the two /metrics reads (frames/s)., type: float, default: 5}
"""

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from typing import Any

from ansible.module_utils.basic import AnsibleModule

QUANTIZED_OPS = (b"QLinearConv", b"QuantizeLinear", b"MatMulInteger", b"ConvInteger")


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def run(*argv: str) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else None


def os_name() -> str:
    release = read("/etc/os-release") or ""
    found = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', release, re.MULTILINE)
    return found.group(1) if found else "unknown"


def swap() -> list[dict[str, Any]]:
    lines = (read("/proc/swaps") or "").splitlines()[1:]
    return [{"name": f[0], "type": "zram" if "zram" in f[0] else f[1], "size_mb": int(f[2]) // 1024}
            for f in (line.split() for line in lines) if len(f) >= 3]


def schedulers() -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob("/sys/block/*/queue/scheduler")):
        device = path.split("/")[3]
        if device.startswith(("loop", "ram", "zram")):
            continue
        active = re.search(r"\[([^]]+)\]", read(path) or "")
        out[device] = active.group(1) if active else "none"
    return out


def overclock(config: str, name: str) -> list[str]:
    """The settings between the block's "# BEGIN <name>" and "# END <name>" lines (pi_overclock's marker)."""
    lines = (read(config) or "").splitlines()
    begin = next((n for n, line in enumerate(lines) if line.startswith(f"# BEGIN {name}")), None)
    end = next((n for n, line in enumerate(lines) if line.startswith(f"# END {name}")), None)
    if begin is None or end is None:
        return []
    return [line for line in lines[begin + 1:end] if line.strip() and not line.startswith("#")]


def fetch(url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        return None, str(exc)


def frames(metrics: str) -> float | None:
    found = re.search(r"^kiosk_frames_total ([0-9.e+]+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else None


def kiosk(p: dict[str, Any]) -> dict[str, Any]:
    try:
        with open(p["state_file"]) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {}
    committed = state.get("committed") or []
    show = run("systemctl", "show", p["unit"], "--property=ActiveState,SubState,NRestarts") or ""
    service = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    status, body = fetch(p["url"] + "/healthz")
    try:
        healthz = json.loads(body) if status is not None else {"status": "no answer", "reason": body}
    except ValueError:
        healthz = {"status": f"HTTP {status}", "reason": body[:200]}
    _, first = fetch(p["url"] + "/metrics")
    time.sleep(p["window"])
    _, metrics = fetch(p["url"] + "/metrics")
    before, after = frames(first), frames(metrics)
    model: dict[str, Any] = {}
    try:
        with open(p["config_file"], "rb") as fh:
            path = tomllib.load(fh).get("embedder", {}).get("model_path", "")
        with open(path, "rb") as fh:
            data = fh.read()
        model = {"path": path, "size": len(data), "quantized": any(op in data for op in QUANTIZED_OPS)}
    except (OSError, tomllib.TOMLDecodeError):
        pass
    security = run("systemd-analyze", "security", "--no-pager", p["unit"]) or ""
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)
    return {
        "live": (state.get("live") or {}).get("release"),
        "last_known_good": committed[-1]["release"] if committed else None,
        "active": service.get("ActiveState", "unknown"),
        "restarts": int(service.get("NRestarts") or 0),
        "healthz": healthz,
        "metrics": metrics if after is not None else "",
        "fps": None if before is None or after is None else round((after - before) / p["window"], 2),
        "model_size": model.get("size"),
        "model_quantized": model.get("quantized", False),
        "exposure": float(exposure.group(1)) if exposure else None,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "boot_config": {"type": "path", "required": True},
            "overclock_block": {"type": "str", "default": "pi-fleet pi_overclock"},
            "state_file": {"type": "path", "default": "/opt/pi-kiosk/state.json"},
            "config_file": {"type": "path", "default": "/etc/pi-kiosk/config.toml"},
            "unit": {"type": "str", "default": "pi-kiosk.service"},
            "url": {"type": "str", "default": "http://127.0.0.1:9108"},
            "window": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    p = module.params
    governor = read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    module.exit_json(
        changed=False,
        os=os_name(),
        kernel=platform.release(),
        governor=governor,
        swap=swap(),
        schedulers=schedulers(),
        overclock=overclock(p["boot_config"], p["overclock_block"]),
        throttled=run("vcgencmd", "get_throttled"),
        temperature=run("vcgencmd", "measure_temp"),
        arm_freq=run("vcgencmd", "measure_clock", "arm"),
        kiosk=kiosk(p),
        uptime_s=int(float((read("/proc/uptime") or "0").split()[0])),
        load=os.getloadavg()[0],
    )


if __name__ == "__main__":
    main()
