"""Filters of the pi_swap role: its report line, from the settings, whether the persistent settings changed and
/proc/swaps.

Kept here in Python (tested in tests/test_pi_swap_filters.py) rather than in inline Jinja."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IN_CONTAINER = ("not applied now: a container cannot switch swap (the host kernel decides), "
                "active from the next boot on a Pi")


def what(backend: str, size_mb: int | str) -> str:
    """The swap asked for: the backend, with its size unless it is none."""
    return str(backend) if backend == "none" else f"{backend} {size_mb} MB"


def persistence(changed: bool) -> str:
    """Whether this run wrote the persistent settings."""
    return "written persistently" if changed else "already persistent"


def active_now(in_container: bool, proc_swaps: Sequence[str]) -> str:
    """The swap active now, by the first column of /proc/swaps' lines after its header; a container's swap is
    its host's."""
    if in_container:
        return IN_CONTAINER
    names = [(line.split() or [""])[0] for line in proc_swaps[1:]]
    return "active now: " + (", ".join(names) or "no swap")


def report(backend: str, size_mb: int | str, changed: bool, in_container: bool, proc_swaps: Sequence[str],
           check_mode: bool) -> str:
    """The role's report line."""
    prefix = "(check mode, nothing changed) " if check_mode else ""
    return (f"{prefix}Swap {what(backend, size_mb)}: {persistence(changed)}; "
            f"{active_now(in_container, proc_swaps)}.")


class FilterModule:
    """Ansible filters of the pi_swap role."""

    def filters(self) -> dict[str, Any]:
        return {"pi_swap_report": report}
