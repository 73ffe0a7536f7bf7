"""Identify a Raspberry Pi board from /proc/cpuinfo and the device-tree model.

The new-style revision code (bit 23 set) packs the board: bits 4-11 the type, bits 20-22 the RAM
size (256 MB << n), bits 0-3 the PCB revision. See "Raspberry Pi revision codes" in the Raspberry
Pi hardware documentation.
"""
from __future__ import annotations

import re
from typing import Any

# type code -> (family, model name)
BOARD_TYPES: dict[int, tuple[str, str]] = {
    0x00: ("pi1", "Pi 1 Model A"),
    0x01: ("pi1", "Pi 1 Model B"),
    0x02: ("pi1", "Pi 1 Model A+"),
    0x03: ("pi1", "Pi 1 Model B+"),
    0x04: ("pi2", "Pi 2 Model B"),
    0x06: ("pi1", "Compute Module 1"),
    0x08: ("pi3", "Pi 3 Model B"),
    0x09: ("zero", "Pi Zero"),
    0x0A: ("pi3", "Compute Module 3"),
    0x0C: ("zero", "Pi Zero W"),
    0x0D: ("pi3+", "Pi 3 Model B+"),
    0x0E: ("pi3+", "Pi 3 Model A+"),
    0x10: ("pi3+", "Compute Module 3+"),
    0x11: ("pi4", "Pi 4 Model B"),
    0x12: ("zero2w", "Pi Zero 2 W"),
    0x13: ("pi400", "Pi 400"),
    0x14: ("pi4", "Compute Module 4"),
    0x15: ("pi4", "Compute Module 4S"),
    0x17: ("pi5", "Pi 5"),
    0x18: ("pi5", "Compute Module 5"),
    0x19: ("pi5", "Pi 500"),
    0x1A: ("pi5", "Compute Module 5 Lite"),
}

# Device-tree model prefixes, most specific first: the fallback when cpuinfo has no revision.
MODEL_PREFIXES: list[tuple[str, str]] = [
    ("Raspberry Pi 500", "pi5"),
    ("Raspberry Pi 5", "pi5"),
    ("Raspberry Pi Compute Module 5", "pi5"),
    ("Raspberry Pi 400", "pi400"),
    ("Raspberry Pi 4", "pi4"),
    ("Raspberry Pi Compute Module 4", "pi4"),
    ("Raspberry Pi 3 Model B Plus", "pi3+"),
    ("Raspberry Pi 3 Model A Plus", "pi3+"),
    ("Raspberry Pi 3", "pi3"),
    ("Raspberry Pi Zero 2", "zero2w"),
    ("Raspberry Pi Zero", "zero"),
    ("Raspberry Pi 2", "pi2"),
    ("Raspberry Pi Model", "pi1"),
]

REVISION_RE = re.compile(r"^Revision\s*:\s*([0-9a-fA-F]+)\s*$", re.MULTILINE)
PROCESSOR_RE = re.compile(r"^processor\s*:", re.MULTILINE)


def pi_board(cpuinfo: str, model: str = "") -> dict[str, Any]:
    """Return family, model, revision, ram_mb (0 if unknown) and cpu_count for a board."""
    model = model.replace("\0", "").strip()
    cpu_count = len(PROCESSOR_RE.findall(cpuinfo))
    found = REVISION_RE.search(cpuinfo)
    revision = found.group(1).lower() if found else ""
    code = int(revision, 16) if revision else 0
    family, ram_mb = "unknown", 0
    if code & (1 << 23):
        family, name = BOARD_TYPES.get((code >> 4) & 0xFF, ("unknown", ""))
        ram_mb = 256 << ((code >> 20) & 0x7)
        model = model or (f"Raspberry {name}" if name else "")
    if family == "unknown" and model:
        family = next((fam for prefix, fam in MODEL_PREFIXES if model.startswith(prefix)), "unknown")
    return {
        "family": family,
        "model": model,
        "revision": revision,
        "ram_mb": ram_mb,
        "cpu_count": cpu_count,
    }


class FilterModule:
    """Ansible filters of the pi_facts role."""

    def filters(self) -> dict[str, Any]:
        return {"pi_board": pi_board}
