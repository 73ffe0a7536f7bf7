"""The pi_overclock role's block, limits and report (plugins/filter/pi_overclock.py).

The expected strings are what the role's inline Jinja produced before it moved here: the same for every case."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from conftest import ROOT, load_module

overclock = load_module(ROOT / "plugins/filter/pi_overclock.py")
LIMITS = yaml.safe_load((ROOT / "roles/pi_overclock/vars/main.yml").read_text())["__pi_overclock_board_limits"]

CHANGED: dict[str, Any] = {"changed": True}
UNCHANGED: dict[str, Any] = {"changed": False}
SKIPPED: dict[str, Any] = {"changed": False, "skipped": True}
# A task that was never run (trial.yml not included): the role passes `| default({})`.
NOT_RUN: dict[str, Any] = {}


@pytest.mark.parametrize(("force_turbo", "temp_limit", "extra"), [
    (False, 0, []),
    (False, 75, ["temp_limit=75"]),
    (False, "0", []),  # -e pi_overclock_temp_limit=0: a string
    (False, "70", ["temp_limit=70"]),
    (True, 0, ["force_turbo=1"]),
    (True, 75, ["force_turbo=1", "temp_limit=75"]),
])
def test_block_lines(force_turbo: bool, temp_limit: int | str, extra: list[str]) -> None:
    lines = overclock.block_lines(2000, gpu_freq=600, over_voltage=6, over_voltage_delta=0, force_turbo=force_turbo,
                                  temp_limit=temp_limit)
    assert lines == ["[all]", "arm_freq=2000", "gpu_freq=600", "over_voltage=6", *extra]


def test_block_lines_write_the_values_as_given() -> None:
    assert overclock.block_lines("1900", gpu_freq="550", over_voltage="-2", over_voltage_delta="0", force_turbo=False,
                                 temp_limit="0") == ["[all]", "arm_freq=1900", "gpu_freq=550", "over_voltage=-2"]


@pytest.mark.parametrize(("over_voltage", "over_voltage_delta", "voltage"), [
    (0, 0, []),  # the firmware scales the voltage itself
    ("0", "0", []),  # -e: strings
    (0, 25000, ["over_voltage_delta=25000"]),
    (0, "50000", ["over_voltage_delta=50000"]),
    (4, 0, ["over_voltage=4"]),
])
def test_block_lines_write_a_voltage_offset_only_when_set(over_voltage: int | str, over_voltage_delta: int | str,
                                                         voltage: list[str]) -> None:
    lines = overclock.block_lines(2800, gpu_freq=910, over_voltage=over_voltage, over_voltage_delta=over_voltage_delta,
                                  force_turbo=False, temp_limit=80)
    assert lines == ["[all]", "arm_freq=2800", "gpu_freq=910", *voltage, "temp_limit=80"]


def test_pi5_block_is_what_the_config_txt_documentation_names() -> None:
    """A Pi 5's block: arm_freq, gpu_freq and over_voltage_delta (microvolts), no over_voltage."""
    assert overclock.block_lines(2800, gpu_freq=900, over_voltage=0, over_voltage_delta=20000, force_turbo=True,
                                 temp_limit=0) == [
        "[all]", "arm_freq=2800", "gpu_freq=900", "over_voltage_delta=20000", "force_turbo=1"]


@pytest.mark.parametrize(("board", "force_turbo", "allowed", "hint"), [
    ("pi4", False, [-16, 6], " (steps of 0.025 V; up to 8 only with pi_overclock_force_turbo=true)"),
    ("pi4", True, [-16, 8], " (steps of 0.025 V)"),
    ("pi400", False, [-16, 6], " (steps of 0.025 V; up to 8 only with pi_overclock_force_turbo=true)"),
    ("pi3+", False, [-16, 4], " (steps of 0.025 V; up to 6 only with pi_overclock_force_turbo=true)"),
    ("pi3+", True, [-16, 6], " (steps of 0.025 V)"),
    ("zero2w", False, [-16, 6], " (steps of 0.025 V; up to 6 only with pi_overclock_force_turbo=true)"),
    ("zero2w", True, [-16, 6], " (steps of 0.025 V)"),
])
def test_over_voltage_top_needs_force_turbo(board: str, force_turbo: bool, allowed: list[int], hint: str) -> None:
    assert overclock.over_voltage_range(LIMITS[board], force_turbo) == allowed
    assert overclock.over_voltage_hint(LIMITS[board], force_turbo, board) == hint
    # These boards take over_voltage: over_voltage_delta must stay 0.
    assert overclock.over_voltage_delta_range(LIMITS[board]) == [0, 0]
    assert overclock.over_voltage_delta_hint(LIMITS[board], board) == (
        f" (the {board} firmware takes over_voltage instead: set pi_overclock_over_voltage_delta=0 and"
        " pi_overclock_over_voltage, in 0.025 V steps)")


@pytest.mark.parametrize("force_turbo", [False, True])
def test_pi5_takes_over_voltage_delta_and_no_over_voltage(force_turbo: bool) -> None:
    pi5 = LIMITS["pi5"]
    assert overclock.over_voltage_delta_range(pi5) == [0, 50000]
    assert overclock.over_voltage_delta_hint(pi5, "pi5") == (
        " microvolts added to the firmware's own voltage (0 writes none)")
    assert overclock.over_voltage_range(pi5, force_turbo) == [0, 0]
    assert overclock.over_voltage_hint(pi5, force_turbo, "pi5") == (
        " (the pi5 firmware takes over_voltage_delta instead: set pi_overclock_over_voltage=0 and"
        " pi_overclock_over_voltage_delta, in microvolts)")


def test_pi5_limits_follow_the_documentation_and_the_firmware_cap() -> None:
    """Stock 2400 and arm_freq_min 1500 (config.txt documentation), 3000 the firmware's cap; a supported board."""
    pi5 = LIMITS["pi5"]
    assert pi5["supported"] and pi5["stock_arm_freq"] == 2400
    assert pi5["arm_freq"] == [1500, 3000] and pi5["gpu_freq"] == [500, 1000]
    assert "over_voltage" not in pi5


def test_watchdog_note() -> None:
    assert overclock.watchdog_note(True) == " (the watchdog resets a board that hangs after it started)"
    assert overclock.watchdog_note(False) == ""


def test_clocks() -> None:
    assert overclock.clocks(True, "arm_freq=2000 gpu_freq=500 over_voltage=6") == (
        "overclock arm_freq=2000 gpu_freq=500 over_voltage=6")
    assert overclock.clocks(True, "arm_freq=2800 gpu_freq=910 over_voltage_delta=20000") == (
        "overclock arm_freq=2800 gpu_freq=910 over_voltage_delta=20000")
    assert overclock.clocks(False, "arm_freq=2000 gpu_freq=500 over_voltage=6") == "stock clocks (no overclock block)"


@pytest.mark.parametrize(("commit", "pending", "write", "remove", "check_mode", "reboot", "outcome"), [
    # A trial boot that passed wins over everything.
    (CHANGED, CHANGED, CHANGED, SKIPPED, False, True, "committed after a healthy trial boot"),
    (CHANGED, NOT_RUN, SKIPPED, SKIPPED, True, False, "committed after a healthy trial boot"),
    # A trial check mode left out.
    (SKIPPED, CHANGED, SKIPPED, SKIPPED, True, True,
     "to be tried for one boot and committed if healthy (check mode: nothing done)"),
    (NOT_RUN, CHANGED, CHANGED, SKIPPED, False, True,
     "to be tried for one boot and committed if healthy (check mode: nothing done)"),
    # Written (or removed) without a trial.
    (NOT_RUN, NOT_RUN, CHANGED, SKIPPED, True, True, "written now (check mode: not applied)"),
    (NOT_RUN, UNCHANGED, SKIPPED, CHANGED, True, False, "written now (check mode: not applied)"),
    (NOT_RUN, NOT_RUN, CHANGED, SKIPPED, False, True, "written now and applied by a reboot"),
    (SKIPPED, UNCHANGED, SKIPPED, CHANGED, False, True, "written now and applied by a reboot"),
    (NOT_RUN, NOT_RUN, CHANGED, SKIPPED, False, False,
     "written now; applied at the next reboot (pi_overclock_reboot=false)"),
    # Nothing to do.
    (NOT_RUN, NOT_RUN, SKIPPED, SKIPPED, False, True, "already in place"),
    (SKIPPED, UNCHANGED, UNCHANGED, SKIPPED, True, False, "already in place"),
])
def test_outcome(commit: dict[str, Any], pending: dict[str, Any], write: dict[str, Any], remove: dict[str, Any],
                 check_mode: bool, reboot: bool, outcome: str) -> None:
    assert overclock.outcome(commit, pending=pending, write=write, remove=remove, check_mode=check_mode,
                             reboot=reboot) == outcome


def test_changed_reads_a_registered_result_as_ansibles_changed_test_does() -> None:
    assert overclock.changed({"changed": True}) is True
    assert overclock.changed({"changed": False, "skipped": True}) is False
    assert overclock.changed({}) is False
    # A loop's result without a changed key of its own: changed when any item changed.
    assert overclock.changed({"results": [{"changed": False}, {"changed": True}]}) is True
    assert overclock.changed({"results": [{"changed": False}]}) is False


def test_the_filters_are_role_prefixed() -> None:
    names = overclock.FilterModule().filters()
    assert names and all(name.startswith("pi_overclock_") for name in names)
