"""The pi_facts role's board identification (filter plugin pi_board)."""
from __future__ import annotations

import pytest

from conftest import ROOT, load_module

pi_board = load_module(ROOT / "plugins/filter/pi_board.py").pi_board

CPUINFO = "processor\t: 0\nprocessor\t: 1\nprocessor\t: 2\nprocessor\t: 3\n\nRevision\t: {rev}\nModel\t\t: x\n"


@pytest.mark.parametrize(
    ("revision", "family", "ram_mb"),
    [
        ("c03114", "pi4", 4096),
        ("d03115", "pi4", 8192),
        ("a03111", "pi4", 1024),
        ("c03130", "pi400", 4096),
        ("a020d3", "pi3+", 1024),
        ("a02082", "pi3", 1024),
        ("902120", "zero2w", 512),
        ("9000c1", "zero", 512),
        ("c04170", "pi5", 4096),
        ("d04170", "pi5", 8192),
        ("a03140", "pi4", 1024),  # Compute Module 4
    ],
)
def test_revision_code_gives_family_and_ram(revision: str, family: str, ram_mb: int) -> None:
    board = pi_board(CPUINFO.format(rev=revision))
    assert (board["family"], board["ram_mb"], board["revision"], board["cpu_count"]) == (family, ram_mb, revision, 4)


def test_device_tree_model_wins_for_the_model_name() -> None:
    board = pi_board(CPUINFO.format(rev="c03114"), "Raspberry Pi 4 Model B Rev 1.4\0")
    assert board["model"] == "Raspberry Pi 4 Model B Rev 1.4"


def test_model_name_is_derived_from_the_revision_without_device_tree() -> None:
    assert pi_board(CPUINFO.format(rev="902120"))["model"] == "Raspberry Pi Zero 2 W"


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "pi3+"),
        ("Raspberry Pi 3 Model B Rev 1.2", "pi3"),
        ("Raspberry Pi Zero 2 W Rev 1.0", "zero2w"),
        ("Raspberry Pi Zero W Rev 1.1", "zero"),
        ("Raspberry Pi 400 Rev 1.0", "pi400"),
        ("Raspberry Pi 5 Model B Rev 1.0", "pi5"),
        ("Raspberry Pi Model B Plus Rev 1.2", "pi1"),
        ("Raspberry Pi 9 Model Z", "unknown"),
    ],
)
def test_device_tree_model_identifies_boards_without_revision(model: str, family: str) -> None:
    assert pi_board("processor\t: 0\n", model)["family"] == family


def test_x86_host_is_unknown() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n" * 2
    board = pi_board(cpuinfo, "")
    assert board == {"family": "unknown", "model": "", "revision": "", "ram_mb": 0, "cpu_count": 2}


def test_old_style_revision_is_not_decoded_as_new_style() -> None:
    # Pi 1 Model B rev 2 (old-style code, bit 23 clear): no RAM bits to decode.
    board = pi_board("processor\t: 0\nRevision\t: 000e\n", "Raspberry Pi Model B Rev 2")
    assert (board["family"], board["ram_mb"]) == ("pi1", 0)
