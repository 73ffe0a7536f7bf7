"""pi_overclock's checks (tasks/validate.yml), run by ansible-playbook on the controller with the board's facts given:
the Pi 5 takes over_voltage_delta (microvolts) and no over_voltage, the other boards the other way round, and every
refusal names the value and what is allowed. Nothing is written: the checks come before anything on a Pi."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PLAYBOOK = """\
- name: Check an overclock against the board
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run pi_overclock's checks
      ansible.builtin.include_role:
        name: pi_overclock
        tasks_from: validate
"""

PI5 = {"pi_facts_board": "pi5", "pi_facts_model": "Raspberry Pi 5 Model B Rev 1.0"}
PI4 = {"pi_facts_board": "pi4", "pi_facts_model": "Raspberry Pi 4 Model B Rev 1.4"}
CONFIRMED = {"pi_overclock_enabled": "true", "pi_overclock_cooling_confirmed": "true"}


def run(tmp_path: Path, **extra_vars: object) -> subprocess.CompletedProcess[str]:
    (tmp_path / "validate.yml").write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1"}
    args = [arg for name, value in {**CONFIRMED, **extra_vars}.items() for arg in ("-e", f"{name}={value}")]
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "validate.yml"), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("settings", [
    {"pi_overclock_arm_freq": 2800, "pi_overclock_gpu_freq": 910, "pi_overclock_over_voltage_delta": 20000},
    {"pi_overclock_arm_freq": 3000, "pi_overclock_gpu_freq": 1000, "pi_overclock_over_voltage_delta": 50000},
    {"pi_overclock_arm_freq": 2600, "pi_overclock_gpu_freq": 500},  # no voltage offset: the firmware's own
], ids=["delta", "tops", "no-offset"])
def test_a_pi5_overclock_within_its_limits_passes(tmp_path: Path, settings: dict[str, int]) -> None:
    proc = run(tmp_path, **PI5, **settings)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("board", "settings", "refusal"), [
    (PI5, {"pi_overclock_arm_freq": 2800, "pi_overclock_over_voltage": 6},
     "pi_overclock_over_voltage=6 is outside the pi5 limits; allowed: only 0 (the pi5 firmware takes "
     "over_voltage_delta instead: set pi_overclock_over_voltage=0 and pi_overclock_over_voltage_delta, in microvolts)"),
    (PI5, {"pi_overclock_arm_freq": 2800, "pi_overclock_over_voltage_delta": 60000},
     "pi_overclock_over_voltage_delta=60000 is outside the pi5 limits; allowed: an integer from 0 to 50000 microvolts"
     " added to the firmware's own voltage (0 writes none)"),
    (PI5, {"pi_overclock_arm_freq": 3100},
     "pi_overclock_arm_freq=3100 is outside the pi5 limits; allowed: an integer from 1500 to 3000 MHz (stock 2400)"),
    (PI4, {"pi_overclock_arm_freq": 2000, "pi_overclock_over_voltage_delta": 20000},
     "pi_overclock_over_voltage_delta=20000 is outside the pi4 limits; allowed: only 0 (the pi4 firmware takes "
     "over_voltage instead: set pi_overclock_over_voltage_delta=0 and pi_overclock_over_voltage, in 0.025 V steps)"),
], ids=["over_voltage-on-pi5", "delta-too-high", "arm_freq-too-high", "delta-on-pi4"])
def test_a_voltage_setting_the_board_does_not_take_is_refused(tmp_path: Path, board: dict[str, str],
                                                              settings: dict[str, int], refusal: str) -> None:
    proc = run(tmp_path, **board, **settings)
    assert proc.returncode != 0
    # The message as the assert prints it: folded onto one line.
    out = " ".join(proc.stdout.split())
    assert refusal in out and "Nothing was written." in out, proc.stdout
