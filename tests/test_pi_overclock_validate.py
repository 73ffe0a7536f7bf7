"""pi_overclock's checks (tasks/validate.yml), run by ansible-playbook on the controller with the board's facts given:
the Pi 5 takes over_voltage_delta (microvolts) and no over_voltage, the other boards the other way round, and every
refusal names the value and what is allowed. Nothing is written: the checks come before anything on a Pi."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PLAYBOOK = """\
- name: Check an overclock against the board
  hosts: all
  gather_facts: false
  tasks:
    - name: Run pi_overclock's checks
      ansible.builtin.include_role:
        name: pi_fleet.kiosk.pi_overclock
        tasks_from: validate
"""

PI5 = {"pi_facts_board": "pi5", "pi_facts_model": "Raspberry Pi 5 Model B Rev 1.0"}
PI4 = {"pi_facts_board": "pi4", "pi_facts_model": "Raspberry Pi 4 Model B Rev 1.4"}
CONFIRMED = {"pi_overclock_enabled": "true", "pi_overclock_cooling_confirmed": "true"}


PASSING = {
    "delta": {"pi_overclock_arm_freq": 2800, "pi_overclock_gpu_freq": 910, "pi_overclock_over_voltage_delta": 20000},
    "tops": {"pi_overclock_arm_freq": 3000, "pi_overclock_gpu_freq": 1000, "pi_overclock_over_voltage_delta": 50000},
    "no-offset": {"pi_overclock_arm_freq": 2600, "pi_overclock_gpu_freq": 500},  # no voltage offset: the firmware's own
}
REFUSED = {
    "over_voltage-on-pi5": (PI5, {"pi_overclock_arm_freq": 2800, "pi_overclock_over_voltage": 6},
                            "pi_overclock_over_voltage=6 is outside the pi5 limits; allowed: only 0 (the pi5 firmware "
                            "takes over_voltage_delta instead: set pi_overclock_over_voltage=0 and "
                            "pi_overclock_over_voltage_delta, in microvolts)"),
    "delta-too-high": (PI5, {"pi_overclock_arm_freq": 2800, "pi_overclock_over_voltage_delta": 60000},
                       "pi_overclock_over_voltage_delta=60000 is outside the pi5 limits; allowed: an integer from 0 to "
                       "50000 microvolts added to the firmware's own voltage (0 writes none)"),
    "arm_freq-too-high": (PI5, {"pi_overclock_arm_freq": 3100},
                          "pi_overclock_arm_freq=3100 is outside the pi5 limits; allowed: an integer from 1500 to 3000 "
                          "MHz (stock 2400)"),
    "delta-on-pi4": (PI4, {"pi_overclock_arm_freq": 2000, "pi_overclock_over_voltage_delta": 20000},
                     "pi_overclock_over_voltage_delta=20000 is outside the pi4 limits; allowed: only 0 (the pi4 "
                     "firmware takes over_voltage instead: set pi_overclock_over_voltage_delta=0 and "
                     "pi_overclock_over_voltage, in 0.025 V steps)"),
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every case at once, one host of the inventory each (one ansible-playbook run: each costs seconds): the
    run's output, and each host's recap line."""
    tmp = tmp_path_factory.mktemp("validate")
    (tmp / "validate.yml").write_text(PLAYBOOK)
    hosts = {name: {**CONFIRMED, **PI5, **settings} for name, settings in PASSING.items()}
    hosts |= {name: {**CONFIRMED, **board, **settings} for name, (board, settings, _) in REFUSED.items()}
    inventory = {"all": {"hosts": {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                          **values} for name, values in hosts.items()}}}
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LOCAL_TEMP": str(tmp / "tmp"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp / "inventory.json"),
                           str(tmp / "validate.yml")], capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    # The messages as the assert prints them, folded onto one line: each names its host.
    return {"output": " ".join(proc.stdout.split())} | {name: next(
        (line for line in proc.stdout.splitlines() if line.startswith(name + " ") and "failed=" in line), "")
        for name in hosts}


@pytest.mark.parametrize("case", PASSING)
def test_a_pi5_overclock_within_its_limits_passes(outcome: dict[str, str], case: str) -> None:
    assert "failed=0" in outcome[case], outcome["output"]


@pytest.mark.parametrize("case", REFUSED)
def test_a_voltage_setting_the_board_does_not_take_is_refused(outcome: dict[str, str], case: str) -> None:
    refusal = REFUSED[case][2]
    assert "failed=1" in outcome[case]
    assert f"Refusing to overclock {case}: {refusal}. Nothing was written." in outcome["output"]
