"""The pi_swap role's report line (plugins/filter/pi_swap.py).

The expected strings are what the role's inline Jinja produced before it moved here: the same for every case."""
from __future__ import annotations

import pytest

from conftest import ROOT, load_module

swap = load_module(ROOT / "plugins/filter/pi_swap.py")

# cat /proc/swaps: a header, then one line per active swap area.
HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"
DPHYS = "/var/swap                               file\t\t1048572\t\t0\t\t-2"
ZRAM = "/dev/zram0                              partition\t1048572\t0\t\t100"
IN_CONTAINER = ("not applied now: a container cannot switch swap (the host kernel decides), "
                "active from the next boot on a Pi")


@pytest.mark.parametrize(("backend", "size_mb", "what"), [
    ("dphys", 1024, "dphys 1024 MB"),
    ("zram", "512", "zram 512 MB"),
    ("none", 1024, "none"),
])
def test_what(backend: str, size_mb: int | str, what: str) -> None:
    assert swap.what(backend, size_mb) == what


def test_persistence() -> None:
    assert swap.persistence(True) == "written persistently"
    assert swap.persistence(False) == "already persistent"


@pytest.mark.parametrize(("in_container", "proc_swaps", "now"), [
    (False, [HEADER, DPHYS, ZRAM], "active now: /var/swap, /dev/zram0"),
    (False, [HEADER, DPHYS], "active now: /var/swap"),
    (False, [HEADER], "active now: no swap"),
    (False, [], "active now: no swap"),
    (True, [HEADER, DPHYS], IN_CONTAINER),
    (True, [HEADER], IN_CONTAINER),
])
def test_active_now(in_container: bool, proc_swaps: list[str], now: str) -> None:
    assert swap.active_now(in_container, proc_swaps) == now


@pytest.mark.parametrize(("backend", "changed", "in_container", "proc_swaps", "check_mode", "line"), [
    ("dphys", True, False, [HEADER, DPHYS], False, "Swap dphys 1024 MB: written persistently; active now: /var/swap."),
    ("zram", False, False, [HEADER, DPHYS, ZRAM], False,
     "Swap zram 1024 MB: already persistent; active now: /var/swap, /dev/zram0."),
    ("none", True, False, [HEADER], True,
     "(check mode, nothing changed) Swap none: written persistently; active now: no swap."),
    ("dphys", False, True, [HEADER, DPHYS], True,
     f"(check mode, nothing changed) Swap dphys 1024 MB: already persistent; {IN_CONTAINER}."),
])
def test_report(backend: str, changed: bool, in_container: bool, proc_swaps: list[str], check_mode: bool,
                line: str) -> None:
    assert swap.report(backend, size_mb=1024, changed=changed, in_container=in_container, proc_swaps=proc_swaps,
                       check_mode=check_mode) == line


def test_the_filters_are_role_prefixed() -> None:
    names = swap.FilterModule().filters()
    assert names and all(name.startswith("pi_swap_") for name in names)
