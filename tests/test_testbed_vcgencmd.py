"""The vcgencmd stand-in answers like the firmware tool, from values a test can set."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, load_module

VCGENCMD = ROOT / "testbed/image/rootfs/usr/bin/vcgencmd"
CONFIG = ROOT / "testbed/image/rootfs/boot/firmware/config.txt"
standins = load_module(ROOT / "testbed/standins.py")


@pytest.fixture
def pi(tmp_path: Path) -> dict[str, str]:
    return board(tmp_path, "pi4")


def board(tmp_path: Path, name: str) -> dict[str, str]:
    standins.write_tree(standins.load_profile(name), tmp_path / "pi")
    config = tmp_path / "config.txt"
    config.write_text(CONFIG.read_text())
    return {
        **os.environ,
        "VCGENCMD_STANDIN_STATE": str(tmp_path / "state"),
        "VCGENCMD_STANDIN_BOOT_CONFIG": str(tmp_path / "run/config.txt"),
        "VCGENCMD_STANDIN_CONFIG": str(config),
        "VCGENCMD_STANDIN_MODEL": str(tmp_path / "pi/firmware/devicetree/base/model"),
        "VCGENCMD_STANDIN_CPUFREQ": str(tmp_path / "pi/cpu/cpu0/cpufreq"),
        "VCGENCMD_STANDIN_TRYBOOT_CONFIG": str(tmp_path / "tryboot.txt"),
        "VCGENCMD_STANDIN_TRYBOOT_FLAG": str(tmp_path / "pi/firmware/devicetree/base/chosen/bootloader/tryboot"),
    }


def vcgencmd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VCGENCMD), *args], env=env, capture_output=True, text=True)


def boot(env: dict[str, str]) -> None:
    assert vcgencmd(env, "--snapshot-boot-config").returncode == 0


def test_healthy_defaults(pi: dict[str, str]) -> None:
    boot(pi)
    assert vcgencmd(pi, "get_throttled").stdout == "throttled=0x0\n"
    assert vcgencmd(pi, "measure_temp").stdout == "temp=48.3'C\n"
    assert vcgencmd(pi, "get_config", "arm_freq").stdout == "arm_freq=1800\n"
    assert vcgencmd(pi, "measure_clock", "arm").stdout == "frequency(48)=600000000\n"


def test_answers_set_by_a_test(pi: dict[str, str]) -> None:
    state = Path(pi["VCGENCMD_STANDIN_STATE"])
    state.mkdir()
    (state / "throttled").write_text("0x50005\n")
    (state / "temp").write_text("82.1\n")
    assert vcgencmd(pi, "get_throttled").stdout == "throttled=0x50005\n"
    assert vcgencmd(pi, "measure_temp").stdout == "temp=82.1'C\n"


def test_config_applies_only_after_boot(pi: dict[str, str]) -> None:
    boot(pi)
    config = Path(pi["VCGENCMD_STANDIN_CONFIG"])
    config.write_text(config.read_text() + "arm_freq=2000\nover_voltage=6\n")
    assert vcgencmd(pi, "get_config", "arm_freq").stdout == "arm_freq=1800\n"
    boot(pi)
    assert vcgencmd(pi, "get_config", "arm_freq").stdout == "arm_freq=2000\n"
    assert vcgencmd(pi, "get_config", "over_voltage").stdout == "over_voltage=6\n"


def test_sections_for_other_boards_are_ignored(pi: dict[str, str]) -> None:
    config = Path(pi["VCGENCMD_STANDIN_CONFIG"])
    config.write_text("[pi3]\narm_freq=1300\n[pi4]\ngpu_freq=600\n[cm4]\ngpu_freq=700\n[all]\n")
    boot(pi)
    assert vcgencmd(pi, "get_config", "arm_freq").stdout == "arm_freq=1800\n"
    assert vcgencmd(pi, "get_config", "gpu_freq").stdout == "gpu_freq=600\n"


def test_unknown_command_fails_like_the_firmware(pi: dict[str, str]) -> None:
    result = vcgencmd(pi, "make_coffee")
    assert result.returncode == 255
    assert "Command not registered" in result.stderr


def trial_flag(env: dict[str, str]) -> bytes:
    return Path(env["VCGENCMD_STANDIN_TRYBOOT_FLAG"]).read_bytes()


def reboot_with_tryboot(env: dict[str, str]) -> None:
    """What tryboot-standin.service leaves at the shutdown of `reboot "0 tryboot"`."""
    state = Path(env["VCGENCMD_STANDIN_STATE"])
    state.mkdir(exist_ok=True)
    (state / "tryboot-next").touch()


def test_a_tryboot_reboot_boots_tryboot_txt_once(pi: dict[str, str]) -> None:
    boot(pi)
    assert trial_flag(pi) == b"\0\0\0\0"
    stock = Path(pi["VCGENCMD_STANDIN_CONFIG"]).read_text()
    Path(pi["VCGENCMD_STANDIN_TRYBOOT_CONFIG"]).write_text(stock + "arm_freq=2000\n")
    reboot_with_tryboot(pi)
    boot(pi)
    assert vcgencmd(pi, "get_config", "arm_freq").stdout == "arm_freq=2000\n"
    assert trial_flag(pi) == b"\0\0\0\1"  # big-endian 1, as the bootloader writes it
    boot(pi)  # any later boot, a reset or a power cut included: the flag was cleared before the trial started
    assert vcgencmd(pi, "get_config", "arm_freq").stdout == "arm_freq=1800\n"
    assert trial_flag(pi) == b"\0\0\0\0"


def test_a_trial_the_test_asks_to_hang_is_marked_for_the_watchdog_stand_in(pi: dict[str, str]) -> None:
    hung = Path(pi["VCGENCMD_STANDIN_BOOT_CONFIG"]).parent / "hung"
    Path(pi["VCGENCMD_STANDIN_TRYBOOT_CONFIG"]).write_text("arm_freq=2100\n")
    reboot_with_tryboot(pi)
    (Path(pi["VCGENCMD_STANDIN_STATE"]) / "trial_hangs").write_text("yes\n")
    boot(pi)
    assert hung.exists()
    hung.unlink()  # /run does not survive the watchdog's reset
    boot(pi)
    assert not hung.exists() and trial_flag(pi) == b"\0\0\0\0"


def test_a_bootloader_without_tryboot_ignores_the_flag(tmp_path: Path) -> None:
    env = board(tmp_path, "pi3")
    assert not Path(env["VCGENCMD_STANDIN_TRYBOOT_FLAG"]).exists()
    Path(env["VCGENCMD_STANDIN_TRYBOOT_CONFIG"]).write_text("arm_freq=1500\n")
    reboot_with_tryboot(env)
    boot(env)
    assert vcgencmd(env, "get_config", "arm_freq").stdout == "arm_freq=1400\n"
    assert not (Path(env["VCGENCMD_STANDIN_STATE"]) / "tryboot-next").exists()


WATCHDOG = ROOT / "testbed/image/rootfs/usr/lib/pi-standins/watchdog-standin"


@pytest.mark.parametrize(("boot_config", "system_conf", "resets"), [
    # What pi_overclock sets up: the watchdog's driver in the boot config, systemd feeding it.
    ("dtparam=watchdog=on\n", "[Manager]\nRuntimeWatchdogSec=15\n", True),
    ("dtparam=watchdog=on\n", None, False),
    ("arm_freq=2000\n", "[Manager]\nRuntimeWatchdogSec=15s\n", False),
    ("dtparam=watchdog=on\n", "[Manager]\nRuntimeWatchdogSec=0\n", False),
])
def test_a_hung_boot_is_reset_only_by_a_watchdog_the_board_set_up(
        tmp_path: Path, boot_config: str, system_conf: str | None, resets: bool) -> None:
    (tmp_path / "config.txt").write_text(boot_config)
    if system_conf is not None:
        (tmp_path / "systemd/system.conf.d").mkdir(parents=True)
        (tmp_path / "systemd/system.conf.d/pi-fleet-watchdog.conf").write_text(system_conf)
    # Stand-ins for sleep and systemctl that record what the emulated watchdog would do.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sleep", "systemctl"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*"\n')
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "WATCHDOG_STANDIN_SYSTEMD": str(tmp_path / "systemd"),
           "VCGENCMD_STANDIN_BOOT_CONFIG": str(tmp_path / "config.txt")}
    run = subprocess.run([str(WATCHDOG)], env=env, capture_output=True, text=True, check=True)
    if resets:
        assert run.stdout.splitlines()[1:] == ["sleep 15", "systemctl reboot --force"]
    else:
        assert run.stdout.splitlines()[1:] == ["sleep infinity"], run.stdout
