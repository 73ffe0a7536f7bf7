#!/usr/bin/python
"""Ansible module: everything the fleet report shows about one Pi, read in one Python process."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_report_probe
short_description: Read a kiosk's system and service state for the fleet report (read-only)
author: pi-fleet maintainers
description:
  - Everything the fleet report shows about one Pi, read in one Python process (each module call costs a Python
    start, seconds on a Pi Zero). Changes nothing.
  - OS, kernel, CPU governor, swap, IO schedulers, the overclock block of the boot config, vcgencmd's
    throttling flags, temperature and clock.
  - The kiosk's live and last known good release, service state and restarts, C(/healthz), C(/metrics) (twice,
    O(window) seconds apart, for frames/s), the model's size and whether it is quantised, and the service
    sandbox's exposure (C(systemd-analyze security)).
  - What cannot be read (no vcgencmd, no kiosk, a service that does not answer) is returned as null or empty, so
    that the report shows every Pi.
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
  boot_config:
    description: The boot partition's C(config.txt), where the overclock block is read.
    type: path
    required: true
  overclock_block:
    description: The overclock block's name in its C(# BEGIN) and C(# END) lines (the marker of the pi_overclock role).
    type: str
    default: pi-fleet pi_overclock
  state_file:
    description: The kiosk deployment's state (live and committed releases).
    type: path
    default: /opt/pi-kiosk/state.json
  config_file:
    description: The kiosk's live configuration, where the model's path is read.
    type: path
    default: /etc/pi-kiosk/config.toml
  unit:
    description: The kiosk's systemd unit.
    type: str
    default: pi-kiosk.service
  url:
    description: The kiosk's health and metrics endpoint (C(/healthz), C(/metrics) below it).
    type: str
    default: "http://127.0.0.1:9108"
  window:
    description: Seconds between the two C(/metrics) reads (frames/s); the task takes at least that long.
    type: float
    default: 5
"""

EXAMPLES = r"""
- name: Read the Pi's system and recognizer state
  pi_report_probe:
    boot_config: /boot/firmware/config.txt
    url: http://127.0.0.1:9108
    window: 5
  register: probe

- name: Show the kiosk's side of it
  ansible.builtin.debug:
    msg: >-
      {{ probe.kiosk.live }} ({{ probe.kiosk.active }}, {{ probe.kiosk.restarts }} restarts),
      {{ probe.kiosk.fps }} frames/s, throttled {{ probe.throttled }}, governor {{ probe.governor }}
"""

RETURN = r"""
os:
  description: The OS's C(PRETTY_NAME) (C(/etc/os-release)), C(unknown) without one.
  type: str
  returned: always
  sample: Debian GNU/Linux 12 (bookworm)
kernel:
  description: The kernel's release.
  type: str
  returned: always
  sample: 6.6.51+rpt-rpi-v8
governor:
  description: CPU 0's frequency governor; null without cpufreq.
  type: str
  returned: always
  sample: performance
swap:
  description: The active swap devices and files.
  type: list
  elements: dict
  returned: always
  contains:
    name:
      description: The device or file.
      type: str
      sample: /var/swap
    type:
      description: V(zram), or the kernel's type (V(file), V(partition)).
      type: str
      sample: file
    size_mb:
      description: Its size in MB.
      type: int
      sample: 2048
schedulers:
  description: Each block device's active IO scheduler (loop, ram and zram devices left out), by device name.
  type: dict
  returned: always
  sample: {mmcblk0: mq-deadline}
overclock:
  description: The settings inside the overclock block of O(boot_config); empty without the block.
  type: list
  elements: str
  returned: always
  sample: [arm_freq=2000, over_voltage_delta=50000]
throttled:
  description: C(vcgencmd get_throttled)'s answer; null without vcgencmd.
  type: str
  returned: always
  sample: throttled=0x0
temperature:
  description: C(vcgencmd measure_temp)'s answer; null without vcgencmd.
  type: str
  returned: always
  sample: temp=48.2'C
arm_freq:
  description: C(vcgencmd measure_clock arm)'s answer; null without vcgencmd.
  type: str
  returned: always
  sample: frequency(48)=1800000000
kiosk:
  description: The kiosk's deployment and service.
  type: dict
  returned: always
  contains:
    live:
      description: The live release; null without a deployment.
      type: str
      sample: 0.2.0-c12577f42026
    last_known_good:
      description: The newest committed release (it passed the health gate); null when none has.
      type: str
      sample: 0.2.0-c12577f42026
    active:
      description: The service's systemd ActiveState, C(unknown) when it cannot be read.
      type: str
      sample: active
    restarts:
      description: How many times systemd restarted it.
      type: int
      sample: 0
    healthz:
      description:
        - The C(/healthz) JSON body (keys as the kiosk writes them, RV(kiosk.healthz.status) at least).
        - V(no answer) or V(HTTP <status>) as the status, and the reason, when it did not answer with JSON.
      type: dict
      contains:
        status:
          description: V(ok), V(degraded), V(stale), V(no answer) or V(HTTP <status>).
          type: str
          sample: ok
        reason:
          description: Why it is not V(ok).
          type: str
        camera:
          description: V(ok) or V(missing) (the fleet report's "camera missing").
          type: str
          sample: ok
        clock:
          description: V(synchronized) or V(unsynchronized) (the fleet report's "clock not synchronised").
          type: str
          sample: synchronized
        delivery:
          description: Attendance delivery to the server, V(ok) or what blocks it (V(network), V(server), V(auth),
            V(routing), V(unexpected)).
          type: str
          sample: ok
        outbox:
          description: Writing events to the outbox, V(ok), V(disk_full) or V(error).
          type: str
          sample: ok
        sync:
          description: The gallery sync, V(ok), V(failing) or V(stopped).
          type: str
          sample: ok
        heartbeat:
          description:
            - The kiosk's heartbeats to the attendance server, from releases that send them (absent before); the
              fleet report's "last heard".
          type: dict
          contains:
            last_ok:
              description: When a heartbeat last reached the server (ISO-8601), null when none has.
              type: str
              sample: "2027-01-15T07:58:00+00:00"
            failures:
              description: Heartbeats failed in a row since.
              type: int
              sample: 0
            error:
              description: The last failure's error.
              type: str
    metrics:
      description: The second C(/metrics) read (Prometheus text); empty when it had no frames counter.
      type: str
    fps:
      description: Frames per second between the two reads; null when either lacked the frames counter.
      type: float
      sample: 0.1
    model_size:
      description: The embedding model's size in bytes; null when the configuration or the model cannot be read.
      type: int
      sample: 4932012
    model_quantized:
      description: Whether the model holds quantised (INT8) operators.
      type: bool
      sample: false
    exposure:
      description: The service's overall exposure level (C(systemd-analyze security)); null when it cannot be read.
      type: float
      sample: 1.4
uptime_s:
  description: Seconds since boot.
  type: int
  returned: always
  sample: 86400
load:
  description: The one-minute load average.
  type: float
  returned: always
  sample: 0.42
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
