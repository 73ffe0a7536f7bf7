"""The rollout (roles/pi_rollout: the pre-flight and the start of each batch) and its report
(plugins/callback/pi_rollout_report.py), run by ansible-playbook against kiosks that are this machine (local
connection) and one that cannot be reached.

The canary batches are a stand-in that records outcomes as the pi_kiosk role does (pi_kiosk_outcome, then a failed
task for a rolled back or unhealthy kiosk); the real role, playbooks/deploy.yml and playbooks/upgrade.yml run in
molecule/fleet."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import COLLECTIONS, ROOT

# As playbooks/deploy.yml and playbooks/upgrade.yml have them.
PREFLIGHT = """
- name: Check the kiosks before the {kind}
  hosts: kiosks
  gather_facts: false
  max_fail_percentage: "{{{{ pi_rollout_max_fail_percentage }}}}"
  roles:
    - role: pi_fleet.kiosk.pi_rollout
      vars:
        pi_rollout_kind: {kind}
"""

# A kiosk whose fake is "broken" fails: a deploy rolls it back, an upgrade leaves it failed (as health.yml does).
BATCHES = {
    "deploy": """
        - name: Record a deployment
          ansible.builtin.set_fact:
            pi_kiosk_outcome: {outcome: deployed, release: 0.2.0-new, live: 0.2.0-new, detail: deployed now}
      rescue:
        - name: Record a rollback
          ansible.builtin.set_fact:
            pi_kiosk_outcome:
              {outcome: rolled back, release: 0.2.0-new, live: 0.1.0-old, phase: health, reason: no frames}
""",
    "upgrade": """
        - name: Record an upgrade
          ansible.builtin.set_fact:
            pi_kiosk_outcome: {outcome: upgraded, detail: "apt full-upgrade applied, rebooted"}
      rescue:
        - name: Record the unhealthy kiosk
          ansible.builtin.set_fact:
            pi_kiosk_outcome: {outcome: failed, phase: ready, reason: pi-kiosk.service failed}
""",
}

BATCH_PLAY = """
- name: Roll out the {kind} (stand-in)
  hosts: kiosks
  gather_facts: false
  serial: "{{{{ pi_rollout_serial }}}}"
  max_fail_percentage: "{{{{ pi_rollout_max_fail_percentage }}}}"
  pre_tasks:
    - name: Count a kiosk lost since the pre-flight
      ansible.builtin.import_role:
        name: pi_fleet.kiosk.pi_rollout
        tasks_from: batch
  tasks:
    - name: Name the batch
      ansible.builtin.debug:
        msg: "batch of {{{{ ansible_play_batch | length }}}}"
      run_once: true

    - name: Lose a kiosk after the pre-flight (the test's lose_flag)
      ansible.builtin.copy:
        content: down
        dest: "{{{{ lose_flag }}}}"
        mode: "0644"
      delegate_to: localhost
      when: loses_another | default(false)

    - name: Roll out or fail
      block:
        - name: Pass or fail the health gate
          ansible.builtin.fail:
            msg: the health gate failed
          when: fake == 'broken'
{outcomes}
        - name: Fail the host
          ansible.builtin.fail:
            msg: the kiosk failed its gate
"""


def stand_in(*kinds: str) -> str:
    """A playbook of one rollout per kind, as playbooks/deploy.yml (and playbooks/upgrade.yml) has it."""
    return "".join(PREFLIGHT.format(kind=kind) + BATCH_PLAY.format(kind=kind, outcomes=BATCHES[kind]) for kind in kinds)


def run(tmp_path: Path, hosts: dict[str, dict[str, Any]], *extra: str, kinds: tuple[str, ...] = ("deploy",),
        environment: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Any]:
    inventory = {"kiosks": {"hosts": hosts}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    (tmp_path / "deploy.yml").write_text(stand_in(*kinds))
    report = tmp_path / "report.json"
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_CACHE_PLUGIN": "memory", **(environment or {})}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.json"),
         str(tmp_path / "deploy.yml"), "-e", f"pi_rollout_report_file={report}",
         "-e", f"pi_rollout_live_link={tmp_path / 'current'}", *extra],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    return proc, json.loads(report.read_text()) if report.is_file() else None


def local(fake: str = "ok") -> dict[str, Any]:
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "fake": fake}


@pytest.fixture
def unreachable() -> Iterator[dict[str, Any]]:
    """A kiosk behind a port that refuses connections: bound by this test and never listening."""
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        yield {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": refusing.getsockname()[1],
               "ansible_user": "nobody", "fake": "ok",
               "ansible_ssh_common_args": "-o ConnectTimeout=3 -o StrictHostKeyChecking=no"}


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {row["host"]: row["outcome"] for row in report["kiosks"]}


def batches(proc: subprocess.CompletedProcess[str]) -> list[int]:
    return [int(n) for n in re.findall(r"msg: batch of (\d+)", proc.stdout)]


def test_a_canary_failure_halts_the_rollout_and_the_report_says_where(tmp_path: Path) -> None:
    hosts = {"k1": local(), "k2": local("broken"), "k3": local(), "k4": local(), "k5": local()}
    proc, report = run(tmp_path, hosts, "-e", '{"pi_rollout_serial": [1, "40%"]}')
    assert proc.returncode != 0, proc.stdout
    # Batches: 1 kiosk, then 40% of 5 = 2: k2 fails beside k3, which finishes; the rest of the run halts.
    assert outcomes(report) == {"k1": "deployed", "k2": "rolled back", "k3": "deployed",
                                "k4": "not attempted", "k5": "not attempted"}, proc.stdout
    k2 = report["kiosks"][1]
    assert (k2["live"], k2["phase"], k2["reason"]) == ("0.1.0-old", "health", "no frames")
    assert report["halted"] is True and report["serial"] == [1, "40%"] and report["max_fail_percentage"] == 0
    assert "PI-KIOSK ROLLOUT REPORT" in proc.stdout and "HALTED" in proc.stdout
    assert "k2                       rolled back    0.1.0-old              health: no frames" in proc.stdout


def test_a_rollout_whose_report_is_off_is_refused_before_any_batch(tmp_path: Path) -> None:
    """An installed collection's run whose ansible.cfg lacks the callback: no rollout without its report."""
    proc, report = run(tmp_path, {"k1": local(), "k2": local()},
                       environment={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer"})
    assert proc.returncode != 0 and report is None, proc.stdout
    assert 'not enabled (callbacks_enabled: ["ansible.posix.timer"])' in proc.stdout, proc.stdout
    assert "add pi_fleet.kiosk.pi_rollout_report to callbacks_enabled" in proc.stdout
    assert batches(proc) == [], proc.stdout


def test_the_batches_are_ansibles_arithmetic_on_forty_kiosks(tmp_path: Path) -> None:
    # The README's example: 1, then 25% of 40 = 10, then the rest (the last entry repeats until all are done).
    proc, report = run(tmp_path, {f"k{n:02d}": local() for n in range(40)})
    assert proc.returncode == 0, proc.stdout
    assert batches(proc) == [1, 10, 29], proc.stdout
    assert set(outcomes(report).values()) == {"deployed"}


def test_two_failures_in_a_batch_of_two_halt_at_fifty_percent(tmp_path: Path) -> None:
    hosts = {"k1": local("broken"), "k2": local("broken"), "k3": local(), "k4": local()}
    proc, report = run(tmp_path, hosts, "-e", '{"pi_rollout_serial": ["50%"], "pi_rollout_max_fail_percentage": 50}')
    assert proc.returncode != 0, proc.stdout
    assert outcomes(report) == {"k1": "rolled back", "k2": "rolled back", "k3": "not attempted",
                                "k4": "not attempted"}, proc.stdout
    assert report["halted"] is True


def test_a_batch_in_which_every_kiosk_failed_halts_whatever_the_threshold(tmp_path: Path) -> None:
    hosts = {"k1": local("broken"), "k2": local(), "k3": local()}
    proc, report = run(tmp_path, hosts, "-e", '{"pi_rollout_serial": [1], "pi_rollout_max_fail_percentage": 100}')
    assert proc.returncode != 0, proc.stdout
    assert outcomes(report) == {"k1": "rolled back", "k2": "not attempted", "k3": "not attempted"}, proc.stdout


def test_a_kiosk_not_attempted_shows_the_release_the_pre_flight_read(tmp_path: Path) -> None:
    (tmp_path / "current").symlink_to("releases/0.1.0-old")
    proc, report = run(tmp_path, {"k1": local("broken"), "k2": local()})
    assert outcomes(report) == {"k1": "rolled back", "k2": "not attempted"}, proc.stdout
    assert report["kiosks"][1]["live"] == "0.1.0-old"
    assert "k2                       not attempted  0.1.0-old" in proc.stdout


def test_a_kiosk_lost_after_the_pre_flight_counts_at_its_batch(tmp_path: Path, unreachable: dict[str, Any]) -> None:
    flag = tmp_path / "lost"
    # Reachable (local) until the canary's batch writes the flag, unreachable (the refusing port) after.
    connection = f"{{{{ 'ssh' if lookup('ansible.builtin.file', '{flag}', errors='ignore') == 'down' else 'local' }}}}"
    lost = {**unreachable, "ansible_connection": connection, "ansible_python_interpreter": sys.executable}
    proc, report = run(tmp_path, {"k1": {**local(), "loses_another": True}, "lost": lost, "k3": local()},
                       "-e", f"lose_flag={flag}", "-e", '{"pi_rollout_serial": [1]}')
    assert proc.returncode != 0, proc.stdout
    assert outcomes(report) == {"k1": "deployed", "lost": "unreachable", "k3": "not attempted"}, proc.stdout
    assert "it counts as a failed host of the rollout" in proc.stdout


def test_a_batch_size_given_as_key_value_works(tmp_path: Path) -> None:
    proc, report = run(tmp_path, {"k1": local(), "k2": local(), "k3": local()}, "-e", "pi_rollout_serial=2")
    assert proc.returncode == 0, proc.stdout
    assert report["serial"] == "2" and set(outcomes(report).values()) == {"deployed"}


def test_a_failure_share_within_the_threshold_lets_the_rollout_go_on(tmp_path: Path) -> None:
    hosts = {"k1": local(), "k2": local("broken"), "k3": local(), "k4": local()}
    # 50% of 4 = 2 per batch; one failure in a batch of two is 50%, not more than 50: no halt.
    proc, report = run(tmp_path, hosts, "-e", '{"pi_rollout_serial": ["50%"], "pi_rollout_max_fail_percentage": 50}')
    assert outcomes(report) == {"k1": "deployed", "k2": "rolled back", "k3": "deployed", "k4": "deployed"}, proc.stdout
    assert report["halted"] is False and "complete" in proc.stdout


def test_an_unreachable_kiosk_counts_and_halts_before_any_change(tmp_path: Path,
                                                                unreachable: dict[str, Any]) -> None:
    (tmp_path / "current").symlink_to("releases/0.1.0-old")
    proc, report = run(tmp_path, {"k1": local(), "gone": unreachable, "k3": local()})
    assert proc.returncode != 0
    assert outcomes(report) == {"k1": "not attempted", "gone": "unreachable", "k3": "not attempted"}, proc.stdout
    assert report["kiosks"][1]["live"] is None and report["kiosks"][1]["reason"]
    # The pre-flight read the others' releases before the unreachable one ended the play.
    assert [report["kiosks"][0]["live"], report["kiosks"][2]["live"]] == ["0.1.0-old", "0.1.0-old"]
    assert "it counts as a failed host of the rollout" in proc.stdout


def test_an_unreachable_kiosk_can_be_left_out_instead(tmp_path: Path, unreachable: dict[str, Any]) -> None:
    proc, report = run(tmp_path, {"k1": local(), "gone": unreachable, "k3": local()},
                       "-e", '{"pi_rollout_unreachable_is_failure": false, "pi_rollout_serial": ["100%"]}')
    # Ansible's own rule: an unreachable host halts the run only when its whole batch is unreachable.
    assert outcomes(report) == {"k1": "deployed", "gone": "unreachable", "k3": "deployed"}, proc.stdout


@pytest.mark.parametrize(("extra", "bad"), [
    ('{"pi_rollout_serial": [0, "25%"]}', 'pi_rollout_serial=[0, "25%"]'),
    ('{"pi_rollout_serial": ["150%"]}', 'pi_rollout_serial=["150%"]'),
    ("pi_rollout_max_fail_percentage=101", "pi_rollout_max_fail_percentage=101"),
    ("pi_rollout_serial=1,25%", 'pi_rollout_serial="1,25%"'),
])
def test_bad_rollout_settings_are_named_before_anything_runs(tmp_path: Path, extra: str, bad: str) -> None:
    proc, report = run(tmp_path, {"k1": local(), "k2": local()}, "-e", extra)
    assert proc.returncode != 0
    assert bad in proc.stdout and "Nothing was changed" in proc.stdout, proc.stdout
    # Refused before the rollout was named: no report of a rollout that never began.
    assert report is None


def test_an_unhealthy_kiosk_after_its_upgrade_halts_the_upgrade(tmp_path: Path) -> None:
    hosts = {"k1": local("broken"), "k2": local(), "k3": local()}
    proc, report = run(tmp_path, hosts, kinds=("upgrade",))
    assert proc.returncode != 0, proc.stdout
    assert outcomes(report) == {"k1": "failed", "k2": "not attempted", "k3": "not attempted"}, proc.stdout
    assert report["kind"] == "upgrade" and report["halted"] is True
    assert (report["kiosks"][0]["phase"], report["kiosks"][0]["reason"]) == ("ready", "pi-kiosk.service failed")
    assert report["kiosks"][1]["detail"] == "the run halted before this kiosk's batch: it was not upgraded"
    assert "PI-KIOSK UPGRADE REPORT" in proc.stdout and "ROLLOUT REPORT" not in proc.stdout
    assert "HALTED: kiosks marked 'not attempted' were not upgraded" in proc.stdout


def test_each_rollout_of_a_run_gets_its_own_report(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # site.yml's order: the OS upgrade, then the deploy; the default report files, one per rollout.
    proc, _ = run(tmp_path, {"k1": local(), "k2": local()},
                  "-e", f"pi_rollout_report_file= pi_rollout_report_dir={cache}/reports", kinds=("upgrade", "deploy"))
    assert proc.returncode == 0, proc.stdout
    reports = {path.name.split("-")[0]: json.loads(path.read_text()) for path in (cache / "reports").iterdir()}
    assert sorted(reports) == ["deploy", "upgrade"], proc.stdout
    assert set(outcomes(reports["upgrade"]).values()) == {"upgraded"}
    assert set(outcomes(reports["deploy"]).values()) == {"deployed"}
    assert reports["upgrade"]["finished"] <= reports["deploy"]["started"]
    # Each report is printed when its rollout is over: the upgrade's before the deploy's batches run.
    upgrade_at = proc.stdout.index("PI-KIOSK UPGRADE REPORT")
    assert upgrade_at < proc.stdout.index("Roll out the deploy") < proc.stdout.index("PI-KIOSK ROLLOUT REPORT")


def test_the_report_is_silent_for_other_playbooks(tmp_path: Path) -> None:
    (tmp_path / "other.yml").write_text(textwrap.dedent("""
        - name: Something else
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Say hello
              ansible.builtin.debug: {msg: hello}
    """))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
           "ANSIBLE_CALLBACKS_ENABLED": "pi_fleet.kiosk.pi_rollout_report"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(tmp_path / "other.yml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "ROLLOUT REPORT" not in proc.stdout
