"""Ansible callback: one table of every host's outcome at the end of each rollout, also when the run halted."""
from __future__ import annotations

DOCUMENTATION = r"""
name: pi_rollout_report
type: notification
short_description: The per-kiosk report of a pi-fleet rollout (playbooks/deploy.yml, playbooks/upgrade.yml)
description:
  - Active for any playbook beside this directory, silent unless the pi_rollout role's pre-flight ran (it names the
    rollout's kind, hosts and report file in the fact pi_rollout_plan, and each host's live release in pi_rollout_live).
  - Each host's outcome is the fact pi_kiosk_outcome the pi_kiosk role records (deploy, health entry points); until
    then, the host's latest failure, or its unreachability.
  - "At the end of the rollout (when the run names the next one, or ends, also after a halt), prints one line
    per kiosk: deployed, upgraded, unchanged, rolled back (with the failed phase and reason), failed,
    unreachable, or not attempted (the run halted before its batch), and its live release; and writes the
    same as JSON. A run that upgrades the OS and then deploys (site.yml) gets one report each."
"""

import json
import os
import tempfile
from datetime import UTC, datetime
from typing import Any

from ansible.plugins.callback import CallbackBase

WIDTH = {"host": 24, "outcome": 14, "live": 22}
# Per kind of rollout: the report's title and what a kiosk the run never reached kept.
TITLE = {"deploy": "PI-KIOSK ROLLOUT REPORT", "upgrade": "PI-KIOSK UPGRADE REPORT"}
KEPT = {"deploy": ("kept their release", "its release is unchanged"),
        "upgrade": ("were not upgraded", "it was not upgraded")}


def _message(result: dict[str, Any]) -> str:
    return " ".join(str(result.get("msg") or result.get("reason") or "unknown error").split())


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "pi_rollout_report"
    # On by itself for the playbooks beside it: the report is part of the deploy, not an option.
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self) -> None:
        super().__init__()
        self.rollout: dict[str, Any] | None = None
        self._begin()

    def _begin(self) -> None:
        self.started = datetime.now(UTC)
        self.hosts: dict[str, dict[str, Any]] = {}
        self.live_before: dict[str, str | None] = {}
        # Hosts whose outcome is settled: the role recorded it, or the host was unreachable. The task that
        # fails a rolled back kiosk, or counts an unreachable one, does not replace it.
        self.settled: set[str] = set()

    def _record(self, host: str, entry: dict[str, Any], settle: bool = False) -> None:
        if host not in self.settled:
            self.hosts[host] = entry
        if settle:
            self.settled.add(host)

    def v2_runner_on_ok(self, result: Any) -> None:
        host, data = result._host.get_name(), result._result
        facts = data.get("ansible_facts") or {}
        if "pi_rollout_plan" in facts:
            # The run names its next rollout: the last one is over.
            self._finish()
            self._begin()
            self.rollout = dict(facts["pi_rollout_plan"])
        if "pi_rollout_live" in facts:
            self.live_before[host] = facts["pi_rollout_live"]
        if "pi_kiosk_outcome" in facts:
            self._record(host, dict(facts["pi_kiosk_outcome"]), settle=True)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        # Until the role records an outcome, a host's latest failure is its outcome (a rescued one included).
        self._record(result._host.get_name(), {"outcome": "failed", "phase": result._task.get_name(),
                                               "reason": _message(result._result)})

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result._host.get_name(), {"outcome": "unreachable", "phase": result._task.get_name(),
                                               "reason": _message(result._result)}, settle=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.rollout is None:
            return
        kind = str(self.rollout.get("kind") or "deploy")
        rows = [self._row(host, KEPT[kind][1]) for host in self.rollout["hosts"]]
        halted = any(row["outcome"] == "not attempted" for row in rows)
        report = {
            "kind": kind,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "check_mode": bool(self.rollout.get("check_mode")),
            "serial": self.rollout.get("serial"),
            "max_fail_percentage": self.rollout.get("max_fail_percentage"),
            "halted": halted,
            "kiosks": rows,
        }
        path = str(self.rollout["report_file"])
        written = self._write(path, report)
        self.rollout = None
        self._display.banner(TITLE[kind])
        mode = " (check mode: nothing changed)" if report["check_mode"] else ""
        state = f"HALTED: kiosks marked 'not attempted' {KEPT[kind][0]}" if halted else "complete"
        self._display.display(f"serial {report['serial']}, max_fail_percentage {report['max_fail_percentage']}: "
                              f"{state}{mode}")
        self._display.display(f"{'KIOSK':<{WIDTH['host']}} {'OUTCOME':<{WIDTH['outcome']}} "
                              f"{'LIVE RELEASE':<{WIDTH['live']}} DETAIL")
        for row in rows:
            detail = row.get("detail") or ""
            if row.get("phase"):
                detail = f"{row['phase']}: {row.get('reason', '')}"
            self._display.display(f"{row['host']:<{WIDTH['host']}} {row['outcome']:<{WIDTH['outcome']}} "
                                  f"{row.get('live') or '-':<{WIDTH['live']}} {detail}")
        self._display.display(f"report written to {path}" if written is True
                              else f"report NOT written to {path}: {written}")

    def _row(self, host: str, kept: str) -> dict[str, Any]:
        entry = self.hosts.get(host)
        if entry is None:
            return {"host": host, "outcome": "not attempted", "release": None, "live": self.live_before.get(host),
                    "detail": f"the run halted before this kiosk's batch: {kept}"}
        row = {"host": host, "release": None, "live": self.live_before.get(host), **entry}
        if row["outcome"] == "unreachable":
            row["live"] = None
        return row

    @staticmethod
    def _write(path: str, report: dict[str, Any]) -> bool | str:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(report, out, indent=2)
                out.write("\n")
            os.replace(tmp, path)
        except OSError as exc:
            return str(exc)
        return True
