#!/usr/bin/python
"""Ansible module: the kiosk's deploy gate, before the switch (smoke test) and after it (health)."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_gate
short_description: Smoke-test a kiosk release, or restart the kiosk and hold it to its health
author: pi-fleet maintainers
description:
  - The deploy's gate, run on the Pi. A failure names its phase and reason (RV(phase), RV(reason)), which the
    role's rescue records and reports.
  - V(smoke) runs the oneshot unit O(unit) (C(pi-kiosk check) in the candidate release, with the
    service's own sandbox) and fails with the reason it printed, or the signal that killed it.
  - V(live) restarts (or starts) the service O(unit) and fails unless systemd reports it ready within
    O(timeout) seconds, and then, for O(window) seconds, C(/healthz) answers 200 with the expected
    version, the frames counter of C(/metrics) rises and systemd neither restarts it nor sees its
    main process change.
  - V(watch) holds the running service to the same health without restarting it, after a change that is not a
    deploy (an OS upgrade and its reboot). A unit that is not installed passes (RV(installed) false); one
    that is neither running nor enabled fails at once, as nothing would start it.
  - V(probe) only reads the service's state and C(/healthz) once, without restarting (what a run that changes
    nothing reports).
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: partial
    details:
      - V(probe) runs in check mode; the other modes do nothing and return RV(skipped_in_check_mode).
      - V(live) then reports the restart it would make as a change.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: A host run by systemd.
options:
  mode:
    description: What to do (see the description).
    type: str
    choices: [smoke, live, watch, probe]
    required: true
  unit:
    description: The unit; the smoke-test unit for V(smoke), the kiosk's service otherwise.
    type: str
    required: true
  url:
    description: Base URL of the service's C(/healthz) and C(/metrics) (modes V(live), V(watch), V(probe)).
    type: str
    default: "http://127.0.0.1:9108"
  timeout:
    description: Seconds the service has to become ready (V(live), V(watch)), or the smoke test to finish (V(smoke)).
    type: int
    default: 120
  window:
    description: Seconds the service must stay healthy once it is ready (V(live), V(watch)).
    type: int
    default: 30
  expect_version:
    description: The version C(/healthz) must report (V(live)); empty accepts any.
    type: str
    default: ""
  daemon_reload:
    description: Reload systemd's units before the restart (V(live)), when the unit file changed.
    type: bool
    default: false
notes:
  - V(live) and V(watch) take at least O(window) seconds.
seealso:
  - module: pi_kiosk_switch
"""

EXAMPLES = r"""
- name: Smoke-test the candidate release before it goes live
  pi_kiosk_gate:
    mode: smoke
    unit: pi-kiosk-check@0.2.0-c12577f42026.service
    timeout: 180

- name: Restart the kiosk and hold it to its health
  pi_kiosk_gate:
    mode: live
    unit: pi-kiosk.service
    url: http://127.0.0.1:9108
    timeout: 180
    window: 30
    expect_version: 0.2.0
    daemon_reload: true
  register: health

- name: Report how it started
  ansible.builtin.debug:
    msg: >-
      ready in {{ health.ready_seconds }} s, {{ health.fps }} frames/s,
      version {{ health.healthz.version }}, {{ health.healthz.threads }} threads

- name: Hold the running kiosk to its health after an OS upgrade, without restarting it
  pi_kiosk_gate:
    mode: watch
    unit: pi-kiosk.service
    timeout: 180
    window: 30
  register: watched

- name: Read the kiosk's state (changes nothing)
  pi_kiosk_gate:
    mode: probe
    unit: pi-kiosk.service
  register: probed

- name: Report it
  ansible.builtin.debug:
    msg: >-
      {{ 'no kiosk installed' if not watched.installed else 'healthy' }};
      service {{ probed.active }}, /healthz {{ probed.healthz.status | default(probed.healthz_status) }}
"""

RETURN = r"""
installed:
  description: Whether O(unit) is installed; a Pi without the kiosk passes V(watch) with false.
  type: bool
  returned: O(mode=watch), outside check mode
  sample: true
ready_seconds:
  description: Seconds from the restart (or the start of the watch) until systemd reported the service ready.
  type: float
  returned: O(mode=live), and O(mode=watch) on an installed kiosk
  sample: 10.7
frames:
  description: Frames the service processed during the window (C(kiosk_frames_total) of C(/metrics)).
  type: float
  returned: O(mode=live), and O(mode=watch) on an installed kiosk
  sample: 2.0
fps:
  description: Those frames per second of the window.
  type: float
  returned: O(mode=live), and O(mode=watch) on an installed kiosk
  sample: 0.07
healthz:
  description:
    - The service's C(/healthz) answer, the last one of the window (modes V(live), V(watch)).
    - With O(mode=probe), the JSON body when C(/healthz) answered 200 or 503, otherwise (a string) the start of
      whatever answered or why nothing did.
  type: raw
  returned: O(mode=live) and O(mode=probe), and O(mode=watch) on an installed kiosk
  contains:
    status:
      description: >-
        V(ok), V(degraded) (the kiosk recognises people but something needs attention, said in C(reason): delivery
        blocked, events held in memory on a full disk, the gallery sync failing, the clock not synchronised),
        V(stale) (no frame for too long, with a 503) or V(camera_missing) (the camera cannot be opened, with a 503: the
        kiosk waits for it and recovers by itself, but a deploy does not commit a kiosk that sees nothing).
      type: str
      sample: ok
    reason:
      description: Why it is not V(ok).
      type: str
      returned: when the status is not V(ok)
    version:
      description: The kiosk's version.
      type: str
      sample: 0.2.0
    threads:
      description: ONNX Runtime's intra-op threads of the embedding model; null on the Edge TPU.
      type: int
      sample: 4
    seconds_since_last_frame:
      description: Seconds since the last frame was processed.
      type: float
      sample: 0.4
    delivery:
      description: The attendance delivery's state (V(ok), or what blocks it).
      type: str
      sample: ok
active:
  description: The service's systemd ActiveState.
  type: str
  returned: O(mode=probe)
  sample: active
restarts:
  description: How many times systemd restarted the service (NRestarts, as C(systemctl show) prints it).
  type: str
  returned: O(mode=probe)
  sample: "0"
healthz_status:
  description: The HTTP status C(/healthz) answered, 0 when nothing answered.
  type: int
  returned: O(mode=probe)
  sample: 200
seconds:
  description: Seconds the smoke test took.
  type: float
  returned: O(mode=smoke), on success
  sample: 21.3
output:
  description: What the smoke test printed (its journal).
  type: list
  elements: str
  returned: O(mode=smoke), on success
  sample: ["ok: config /opt/pi-kiosk/candidate/config.toml"]
skipped_in_check_mode:
  description: Set in check mode, where every mode but V(probe) does nothing.
  type: bool
  returned: in check mode, except with O(mode=probe)
  sample: true
phase:
  description: Where the gate failed.
  type: str
  returned: failure
  choices: [smoke test, start, ready, stability, health]
  sample: health
reason:
  description:
    - Why it failed, with what the unit's last run printed and how it ended (the signal that killed it, or its
      exit status) where that explains it.
  type: str
  returned: failure
  sample: "no frames processed during the 30 s window (kiosk_frames_total 12.0 -> 12.0): is the camera delivering?"
"""

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from ansible.module_utils.basic import AnsibleModule

FRAMES = re.compile(r"^kiosk_frames_total\s+([0-9.e+]+)$", re.MULTILINE)
POLL_SECONDS = 2.0
# CLD_KILLED and CLD_DUMPED: ExecMainStatus is then the signal's number.
KILLED_CODES = {"2", "3", "killed", "dumped"}
SIGNAL_HINTS = {
    "SIGILL": "illegal instruction: a library in the release (e.g. this onnxruntime build) does not run on this CPU",
    "SIGABRT": "aborted",
    "SIGSEGV": "segmentation fault",
    "SIGKILL": "killed (out of memory? MemoryMax, or the watchdog)",
    "SIGSYS": "a system call refused by the unit's SystemCallFilter",
}


class GateError(Exception):
    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(f"{phase}: {reason}")
        self.phase = phase
        self.reason = reason


def systemctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=timeout)


def show(unit: str, *props: str) -> dict[str, str]:
    out = systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(invocation: str, lines: int = 15) -> list[str]:
    if not invocation:
        return []
    proc = subprocess.run(["journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "--output=cat", "--no-pager",
                           f"--lines={lines}"], capture_output=True, text=True)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def why(unit: str) -> str:
    """What the unit's last run printed (its own one-line errors first) and how it ended."""
    info = show(unit, "Result", "ExecMainCode", "ExecMainStatus", "InvocationID")
    lines = journal(info.get("InvocationID", ""))
    own = [line for line in lines if line.startswith("pi-kiosk:") or "Error" in line or "error" in line]
    text = " | ".join((own or lines)[-4:])
    end = f"result {info.get('Result', '?')}"
    if info.get("ExecMainCode") in KILLED_CODES and info.get("ExecMainStatus", "").isdigit():
        name = signal.Signals(int(info["ExecMainStatus"])).name
        end = f"killed by {name} ({SIGNAL_HINTS.get(name, 'signal')})"
    elif info.get("ExecMainStatus", "0") not in ("", "0"):
        end += f", exit status {info['ExecMainStatus']}"
    return f"{text} [{end}]" if text else f"[{end}]"


def smoke(unit: str, timeout: int) -> dict[str, Any]:
    # The smoke-test unit may have changed with this deploy; reloading is cheap, a stale unit is not.
    systemctl("daemon-reload")
    systemctl("reset-failed", unit)
    start = time.monotonic()
    try:
        proc = systemctl("start", unit, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        systemctl("stop", unit)
        raise GateError("smoke test", f"{unit} did not finish within {timeout} s") from None
    if proc.returncode != 0:
        raise GateError("smoke test", why(unit))
    info = show(unit, "InvocationID")
    return {"seconds": round(time.monotonic() - start, 1), "output": journal(info.get("InvocationID", ""))}


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def frames(url: str) -> float | None:
    status, body = fetch(url + "/metrics")
    found = FRAMES.search(body) if status == 200 else None
    return float(found.group(1)) if found else None


def health(url: str, expect_version: str) -> dict[str, Any]:
    status, body = fetch(url + "/healthz")
    if status != 200:
        raise GateError("health", f"/healthz answered {status or 'nothing'}: {body[:300]}")
    info: dict[str, Any] = json.loads(body)
    if expect_version and info.get("version") != expect_version:
        raise GateError("health", f"/healthz reports version {info.get('version')}, the release is {expect_version}")
    return info


def wait_ready(unit: str, timeout: int) -> tuple[float, dict[str, str]]:
    start = time.monotonic()
    props = ("ActiveState", "SubState", "NRestarts", "MainPID", "Result")
    while True:
        state = show(unit, *props)
        if state.get("ActiveState") == "active":
            return time.monotonic() - start, state
        if state.get("ActiveState") == "failed" or time.monotonic() - start > timeout:
            what = ("failed" if state.get("ActiveState") == "failed"
                    else f"not ready within {timeout} s ({state.get('ActiveState')}/{state.get('SubState')})")
            raise GateError("ready", f"{unit} {what}: {why(unit)}")
        time.sleep(1.0)


def restart(unit: str, daemon_reload: bool) -> None:
    if daemon_reload:
        systemctl("daemon-reload")
    systemctl("enable", unit)
    systemctl("reset-failed", unit)
    proc = systemctl("restart", "--no-block", unit)
    if proc.returncode != 0:
        raise GateError("start", proc.stderr.strip())


def watch(unit: str, url: str, timeout: int, window: int) -> dict[str, Any]:
    state = show(unit, "LoadState", "UnitFileState", "ActiveState")
    if state.get("LoadState") == "not-found":
        return {"installed": False}
    if state.get("UnitFileState") != "enabled" and state.get("ActiveState") in ("inactive", "failed"):
        raise GateError("ready", f"{unit} is {state.get('ActiveState')} and not enabled (nothing starts it): "
                                 f"{why(unit)}")
    return {"installed": True, **hold(unit, url, timeout, window, "")}


def hold(unit: str, url: str, timeout: int, window: int, expect_version: str) -> dict[str, Any]:
    ready, state = wait_ready(unit, timeout)
    first = None
    deadline = time.monotonic() + window
    info: dict[str, Any] = {}
    while True:
        now = show(unit, "ActiveState", "NRestarts", "MainPID")
        if now.get("NRestarts") != state.get("NRestarts") or now.get("MainPID") != state.get("MainPID"):
            raise GateError("stability", f"{unit} restarted during the {window} s window: {why(unit)}")
        if now.get("ActiveState") != "active":
            raise GateError("stability", f"{unit} is {now.get('ActiveState')} during the window: {why(unit)}")
        try:
            info = health(url, expect_version)
        except GateError:
            if time.monotonic() < deadline:  # the HTTP endpoint may come up a moment after READY
                time.sleep(POLL_SECONDS)
                continue
            raise
        count = frames(url)
        # Two readings at least: a poll slower than the window (a loaded Pi Zero) must not fail a healthy kiosk.
        if first is None:
            first = count
        elif time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    if first is None or count is None or count <= first:
        raise GateError("health", f"no frames processed during the {window} s window (kiosk_frames_total "
                                  f"{first} -> {count}): is the camera delivering?")
    return {"ready_seconds": round(ready, 1), "frames": count - first, "fps": round((count - first) / window, 2),
            "healthz": info}


def probe(unit: str, url: str) -> dict[str, Any]:
    state = show(unit, "ActiveState", "NRestarts")
    status, body = fetch(url + "/healthz")
    return {"active": state.get("ActiveState"), "restarts": state.get("NRestarts"), "healthz_status": status,
            "healthz": json.loads(body) if status in (200, 503) else body[:300]}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "required": True, "choices": ["smoke", "live", "watch", "probe"]},
            "unit": {"type": "str", "required": True},
            "url": {"type": "str", "default": "http://127.0.0.1:9108"},
            "timeout": {"type": "int", "default": 120},
            "window": {"type": "int", "default": 30},
            "expect_version": {"type": "str", "default": ""},
            "daemon_reload": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["mode"] == "probe":
        module.exit_json(changed=False, **probe(p["unit"], p["url"].rstrip("/")))
    if module.check_mode:
        module.exit_json(changed=p["mode"] == "live", skipped_in_check_mode=True)
    try:
        if p["mode"] == "smoke":
            module.exit_json(changed=False, **smoke(p["unit"], p["timeout"]))
        url = p["url"].rstrip("/")
        if p["mode"] == "watch":
            module.exit_json(changed=False, **watch(p["unit"], url, p["timeout"], p["window"]))
        restart(p["unit"], p["daemon_reload"])
        module.exit_json(changed=True, **hold(p["unit"], url, p["timeout"], p["window"], p["expect_version"]))
    except GateError as exc:
        module.fail_json(msg=str(exc), phase=exc.phase, reason=exc.reason)


if __name__ == "__main__":
    main()
