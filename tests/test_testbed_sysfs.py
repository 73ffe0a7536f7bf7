"""The sysfs stand-in daemon gives plain files the kernel's write semantics."""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, load_module

DAEMON = ROOT / "testbed/image/rootfs/usr/lib/pi-standins/sysfs-standin"
standins = load_module(ROOT / "testbed/standins.py")


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    standins.write_tree(standins.load_profile("pi4"), tmp_path / "pi")
    with subprocess.Popen(
        [sys.executable, str(DAEMON), "--cpu", str(tmp_path / "pi/cpu"),
         "--block", str(tmp_path / "pi/block"), "--state", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
    ) as daemon:
        try:
            wait_until_watching(daemon)
            yield tmp_path / "pi"
        finally:
            daemon.terminate()
            daemon.wait(timeout=5)


def wait_until_watching(daemon: subprocess.Popen[bytes]) -> None:
    """Read the daemon's output up to the line it prints once its inotify watches are set."""
    assert daemon.stdout is not None
    fd = daemon.stdout.fileno()
    output = b""
    deadline = time.monotonic() + 60  # bounds a failing test only
    while not re.search(rb"^watching \d+ files$", output, re.MULTILINE):
        assert time.monotonic() < deadline, f"the daemon never said it was watching; it said {output!r}"
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"the daemon exited ({daemon.wait()}); it said {output!r}"
            output += chunk


def settle(path: Path, expected: str) -> str:
    deadline = time.monotonic() + 30  # waits only for a daemon that does not answer (a failing test)
    while (value := path.read_text().strip()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_performance_governor_runs_at_max_frequency(tree: Path) -> None:
    policy = tree / "cpu/cpufreq/policy0"
    (tree / "cpu/cpu2/cpufreq/scaling_governor").write_text("performance\n")
    assert settle(policy / "scaling_cur_freq", "1800000") == "1800000"
    (policy / "scaling_governor").write_text("powersave\n")
    assert settle(policy / "scaling_cur_freq", "600000") == "600000"


def test_unavailable_governor_is_rejected(tree: Path) -> None:
    governor = tree / "cpu/cpu0/cpufreq/scaling_governor"
    governor.write_text("turbo\n")
    assert settle(governor, "ondemand") == "ondemand"


def test_scheduler_write_reads_back_in_kernel_format(tree: Path) -> None:
    scheduler = tree / "block/mmcblk0/queue/scheduler"
    scheduler.write_text("bfq\n")
    assert settle(scheduler, "mq-deadline kyber [bfq] none") == "mq-deadline kyber [bfq] none"


def test_legacy_deadline_selects_mq_deadline(tree: Path) -> None:
    scheduler = tree / "block/sda/queue/scheduler"
    scheduler.write_text("none\n")
    settle(scheduler, "mq-deadline kyber bfq [none]")
    scheduler.write_text("deadline\n")
    assert settle(scheduler, "[mq-deadline] kyber bfq none") == "[mq-deadline] kyber bfq none"


def test_unknown_scheduler_is_rejected(tree: Path) -> None:
    scheduler = tree / "block/mmcblk0/queue/scheduler"
    scheduler.write_text("cfq\n")
    assert settle(scheduler, "[mq-deadline] kyber bfq none") == "[mq-deadline] kyber bfq none"


def test_value_written_while_stopped_is_checked_at_start(tmp_path: Path) -> None:
    standins.write_tree(standins.load_profile("pi3"), tmp_path / "pi")
    args = [sys.executable, str(DAEMON), "--cpu", str(tmp_path / "pi/cpu"),
            "--block", str(tmp_path / "pi/block"), "--state", str(tmp_path / "state"), "--once"]
    subprocess.run(args, check=True)  # remembers the available schedulers
    scheduler = tmp_path / "pi/block/mmcblk0/queue/scheduler"
    scheduler.write_text("kyber\n")
    subprocess.run(args, check=True)
    assert scheduler.read_text().strip() == "mq-deadline [kyber] bfq none"
