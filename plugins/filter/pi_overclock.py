"""Filters of the pi_overclock role: the block it writes to the boot config, the voltage limits it checks
(over_voltage, or over_voltage_delta on a Pi 5) and what its report says.

Kept here in Python (tested in tests/test_pi_overclock_filters.py) rather than in inline Jinja. The settings arrive
as the play has them (an int, or a string from `-e`) and are written as given; booleans arrive through `| bool`."""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSequence
from typing import Any

# A setting as the play has it: an int from YAML, a string from `-e name=value`.
Setting = int | str


def as_int(value: Any) -> int:
    """Jinja's `| int`: the integer, or 0 when the value is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


def changed(result: Mapping[str, Any]) -> bool:
    """Ansible's `is changed` test on a registered result (a loop's result: whether any item changed)."""
    if "changed" in result:
        return bool(result["changed"])
    items = result.get("results")
    if isinstance(items, MutableSequence) and items and isinstance(items[0], MutableMapping):
        return any(item.get("changed") for item in items)
    return False


def block_lines(arm_freq: Setting, gpu_freq: Setting, over_voltage: Setting, over_voltage_delta: Setting,
                force_turbo: bool, temp_limit: Setting) -> list[str]:
    """The lines of the managed block: its own [all] section, the clocks, the voltage setting unless it is 0
    (over_voltage, or over_voltage_delta on a Pi 5: 0 leaves the voltage to the firmware), force_turbo=1 when set
    and temp_limit unless it is 0 (the firmware's default)."""
    lines = ["[all]", f"arm_freq={arm_freq}", f"gpu_freq={gpu_freq}"]
    if as_int(over_voltage) != 0:
        lines.append(f"over_voltage={over_voltage}")
    if as_int(over_voltage_delta) != 0:
        lines.append(f"over_voltage_delta={over_voltage_delta}")
    if force_turbo:
        lines.append("force_turbo=1")
    if as_int(temp_limit) != 0:
        lines.append(f"temp_limit={temp_limit}")
    return lines


def over_voltage_range(limits: Mapping[str, Any], force_turbo: bool) -> list[int]:
    """The lowest and highest over_voltage the board's limits allow: the higher top only with force_turbo; only 0
    (none written) on a board that takes over_voltage_delta instead."""
    if "over_voltage" not in limits:
        return [0, 0]
    top = limits["over_voltage_force_turbo"] if force_turbo else limits["over_voltage"][1]
    return [limits["over_voltage"][0], top]


def over_voltage_hint(limits: Mapping[str, Any], force_turbo: bool, board: str) -> str:
    """What the refusal of an over_voltage outside the limits adds after the range."""
    if "over_voltage" not in limits:
        return (f" (the {board} firmware takes over_voltage_delta instead: set pi_overclock_over_voltage=0 and"
                " pi_overclock_over_voltage_delta, in microvolts)")
    if force_turbo:
        return " (steps of 0.025 V)"
    return (f" (steps of 0.025 V; up to {limits['over_voltage_force_turbo']} only with"
            " pi_overclock_force_turbo=true)")


def over_voltage_delta_range(limits: Mapping[str, Any]) -> list[int]:
    """The lowest and highest over_voltage_delta the board's limits allow: only 0 (none written) on a board that
    takes over_voltage."""
    return list(limits.get("over_voltage_delta", [0, 0]))


def over_voltage_delta_hint(limits: Mapping[str, Any], board: str) -> str:
    """What the refusal of an over_voltage_delta outside the limits adds after the range."""
    if "over_voltage_delta" not in limits:
        return (f" (the {board} firmware takes over_voltage instead: set pi_overclock_over_voltage_delta=0 and"
                " pi_overclock_over_voltage, in 0.025 V steps)")
    return " microvolts added to the firmware's own voltage (0 writes none)"


def watchdog_note(watchdog: bool) -> str:
    """What the warning on a board without tryboot adds after "a power cycle" when the watchdog is armed."""
    return " (the watchdog resets a board that hangs after it started)" if watchdog else ""


def clocks(enabled: bool, settings: str) -> str:
    """The clocks the report names: the overclock's settings, or stock."""
    if not enabled:
        return "stock clocks (no overclock block)"
    return f"overclock {settings}"


def applied(check_mode: bool, reboot: bool) -> str:
    """How a boot config written without a trial boot takes effect."""
    if check_mode:
        return "written now (check mode: not applied)"
    if reboot:
        return "written now and applied by a reboot"
    return "written now; applied at the next reboot (pi_overclock_reboot=false)"


def outcome(commit: Mapping[str, Any], pending: Mapping[str, Any], write: Mapping[str, Any],
            remove: Mapping[str, Any], check_mode: bool, reboot: bool) -> str:
    """What became of the boot config, from the registered results of the commit after a trial boot, of the
    check-mode look at a pending trial (both {} when trial.yml did not run), of the write and of the removal."""
    if changed(commit):
        return "committed after a healthy trial boot"
    if changed(pending):
        return "to be tried for one boot and committed if healthy (check mode: nothing done)"
    if changed(write) or changed(remove):
        return applied(check_mode, reboot)
    return "already in place"


class FilterModule:
    """Ansible filters of the pi_overclock role."""

    def filters(self) -> dict[str, Any]:
        return {
            "pi_overclock_block_lines": block_lines,
            "pi_overclock_over_voltage_range": over_voltage_range,
            "pi_overclock_over_voltage_hint": over_voltage_hint,
            "pi_overclock_over_voltage_delta_range": over_voltage_delta_range,
            "pi_overclock_over_voltage_delta_hint": over_voltage_delta_hint,
            "pi_overclock_watchdog_note": watchdog_note,
            "pi_overclock_clocks": clocks,
            "pi_overclock_outcome": outcome,
        }
