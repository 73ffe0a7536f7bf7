#!/usr/bin/env python3
"""Write the files that make an emulated container look like one Raspberry Pi board.

    standins.py BOARD DEST

BOARD names a profile in testbed/boards/ (pi5, pi4, pi3, pizero2, ...). DEST gets a fresh tree that the
container start bind-mounts:

    DEST/cpuinfo   -> /proc/cpuinfo (read-only)
    DEST/meminfo   -> /proc/meminfo (read-only: the board's RAM and Raspberry Pi OS's default swap)
    DEST/firmware  -> /sys/firmware (devicetree/base/{model,compatible,serial-number},
                      chosen/bootloader/tryboot on boards whose bootloader has it, and the on-board real-time
                      clock's node on boards whose profile names one: rtc: rpi-rtc on the Pi 5)
    DEST/cpu       -> /sys/devices/system/cpu (topology + one shared cpufreq policy, writable)
    DEST/block     -> /sys/block (queue/scheduler per device, writable)
    DEST/timesync  -> /run/systemd/timesync (read-only): its "synchronized" file, which systemd-timesyncd
                      writes once the clock is synchronised; timesyncd does not run in a container, whose
                      clock is the host's (synchronised), so the kiosk's clock check sees what a synced Pi shows
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

BOARDS = Path(__file__).resolve().parent / "boards"


def load_profile(board: str) -> dict[str, Any]:
    path = BOARDS / f"{board}.yml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BOARDS.glob("*.yml")))
        raise SystemExit(f"unknown board profile {board!r}; known profiles: {known}")
    profile: dict[str, Any] = yaml.safe_load(path.read_text())
    return profile


def cpuinfo(profile: dict[str, Any]) -> str:
    cpu = profile["cpu"]
    blocks = [
        f"processor\t: {n}\n"
        f"BogoMIPS\t: {cpu['bogomips']}\n"
        f"Features\t: {cpu.get('features', 'fp asimd evtstrm crc32 cpuid')}\n"
        "CPU implementer\t: 0x41\n"
        "CPU architecture: 8\n"
        f"CPU variant\t: {cpu.get('variant', '0x0')}\n"
        f"CPU part\t: {cpu['part']}\n"
        f"CPU revision\t: {cpu['revision']}\n"
        for n in range(cpu["count"])
    ]
    trailer = (
        f"Revision\t: {profile['revision']}\n"
        f"Serial\t\t: {profile['serial']}\n"
        f"Model\t\t: {profile['model']}\n"
    )
    return "\n".join(blocks) + "\n" + trailer


def meminfo(profile: dict[str, Any]) -> str:
    """The board's /proc/meminfo: RAM from the revision code, less what the firmware keeps (as a
    real board reports it), and the swap the profile says the image boots with."""
    ram_kb = (256 << ((int(profile["revision"], 16) >> 20) & 0x7)) * 1024
    total = ram_kb - profile["memory"]["firmware_reserved_mb"] * 1024
    swap = profile["memory"]["swap_mb"] * 1024
    rows = {"MemTotal": total, "MemFree": total * 3 // 4, "MemAvailable": total * 4 // 5, "Buffers": 0,
            "Cached": total // 10, "SwapCached": 0, "SwapTotal": swap, "SwapFree": swap}
    return "".join(f"{key + ':':<16}{value:>8} kB\n" for key, value in rows.items())


def put(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def write_tree(profile: dict[str, Any], dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    put(dest / "cpuinfo", cpuinfo(profile))
    put(dest / "meminfo", meminfo(profile))

    base = dest / "firmware" / "devicetree" / "base"
    # Device-tree strings are NUL-terminated, lists NUL-separated, as on a real board.
    put(base / "model", profile["model"].encode() + b"\0")
    put(base / "compatible", b"".join(c.encode() + b"\0" for c in profile["compatible"]))
    put(base / "serial-number", profile["serial"].encode() + b"\0")
    if profile.get("tryboot"):
        # The bootloader's report (Pi 4 and later): 1 during a boot started by `reboot "0 tryboot"`, else 0.
        # A 32-bit big-endian cell, as in the firmware's device tree; the vcgencmd stand-in sets it at boot.
        put(base / "chosen" / "bootloader" / "tryboot", b"\0\0\0\0")
    if profile.get("rtc"):
        # The Pi 5's on-board real-time clock as its device tree describes it (the node the rpi-rtc driver binds to).
        # Not a /sys/class/rtc tree: a container cannot mount one where the host kernel has no RTC class.
        put(base / "soc@107c000000" / "rpi_rtc" / "compatible", b"raspberrypi,rpi-rtc\0")
        put(base / "soc@107c000000" / "rpi_rtc" / "status", b"okay\0")

    cpu = profile["cpu"]
    count = cpu["count"]
    span = f"0-{count - 1}"
    root = dest / "cpu"
    for name, value in {"possible": span, "present": span, "online": span, "kernel_max": "255"}.items():
        put(root / name, value + "\n")
    policy = root / "cpufreq" / "policy0"
    start_freq = cpu["max_khz"] if cpu["governor"] == "performance" else cpu["min_khz"]
    for name, value in {
        "scaling_governor": cpu["governor"],
        "scaling_available_governors": " ".join(cpu["governors"]),
        "scaling_driver": "cpufreq-dt",
        "cpuinfo_min_freq": cpu["min_khz"],
        "cpuinfo_max_freq": cpu["max_khz"],
        "scaling_min_freq": cpu["min_khz"],
        "scaling_max_freq": cpu["max_khz"],
        "scaling_cur_freq": start_freq,
        "scaling_available_frequencies": f"{cpu['min_khz']} {cpu['max_khz']}",
        "related_cpus": " ".join(map(str, range(count))),
        "affected_cpus": " ".join(map(str, range(count))),
    }.items():
        put(policy / name, f"{value}\n")
    for n in range(count):
        topology = root / f"cpu{n}" / "topology"
        for name, value in {
            "core_id": str(n),
            "physical_package_id": "0",
            "core_siblings_list": span,
            "thread_siblings_list": str(n),
        }.items():
            put(topology / name, value + "\n")
        if n:
            put(root / f"cpu{n}" / "online", "1\n")
        # All cores share one policy, so (as on a Pi) every cpuN/cpufreq is the same directory.
        (root / f"cpu{n}" / "cpufreq").symlink_to("../cpufreq/policy0")

    for device, schedulers in profile["block"].items():
        queue = dest / "block" / device / "queue"
        put(queue / "scheduler", schedulers + "\n")
        put(queue / "rotational", "0\n")

    put(dest / "timesync" / "synchronized", "")


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    write_tree(load_profile(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv)
