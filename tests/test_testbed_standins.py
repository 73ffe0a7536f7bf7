"""The emulated boards' stand-in trees (testbed/standins.py) describe the board they claim."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, load_module

standins = load_module(ROOT / "testbed/standins.py")
pi_board = load_module(ROOT / "plugins/filter/pi_board.py").pi_board

EXPECTED = {"pi5": ("pi5", 4096), "pi4": ("pi4", 4096), "pi3": ("pi3+", 1024), "pizero2": ("zero2w", 512)}


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_tree_identifies_as_its_board(board: str, tmp_path: Path) -> None:
    profile = standins.load_profile(board)
    standins.write_tree(profile, tmp_path)
    model = (tmp_path / "firmware/devicetree/base/model").read_bytes()
    assert model.endswith(b"\0")
    found = pi_board((tmp_path / "cpuinfo").read_text(), model.decode())
    assert (found["family"], found["ram_mb"], found["cpu_count"]) == (*EXPECTED[board], 4)
    assert found["model"] == profile["model"]


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_meminfo_shows_the_boards_ram_and_default_swap(board: str, tmp_path: Path) -> None:
    standins.write_tree(standins.load_profile(board), tmp_path)
    rows = dict(line.split(":") for line in (tmp_path / "meminfo").read_text().splitlines())
    total_mb = int(rows["MemTotal"].split()[0]) // 1024
    # As on a real board: a little under the RAM the revision code names, the firmware keeps the rest.
    assert EXPECTED[board][1] * 0.9 < total_mb < EXPECTED[board][1]
    assert rows["SwapTotal"].split() == ["102400", "kB"]


def test_cores_share_one_writable_cpufreq_policy(tmp_path: Path) -> None:
    standins.write_tree(standins.load_profile("pi4"), tmp_path)
    cpu = tmp_path / "cpu"
    (cpu / "cpu0/cpufreq/scaling_governor").write_text("performance\n")
    assert (cpu / "cpu3/cpufreq/scaling_governor").read_text() == "performance\n"
    assert (cpu / "online").read_text() == "0-3\n"
    assert "performance" in (cpu / "cpufreq/policy0/scaling_available_governors").read_text().split()
    assert (cpu / "cpu2/topology/core_siblings_list").read_text() == "0-3\n"


def test_rewriting_a_tree_starts_fresh(tmp_path: Path) -> None:
    profile = standins.load_profile("pizero2")
    standins.write_tree(profile, tmp_path)
    (tmp_path / "block/mmcblk0/queue/scheduler").write_text("bfq\n")
    standins.write_tree(profile, tmp_path)
    assert (tmp_path / "block/mmcblk0/queue/scheduler").read_text() == "[mq-deadline] kyber bfq none\n"


def test_unknown_board_names_the_known_ones() -> None:
    with pytest.raises(SystemExit, match=r"unknown board profile 'pi9'; known profiles: pi3, pi4, pi5, pizero2"):
        standins.load_profile("pi9")


@pytest.mark.parametrize("board, tryboot", [("pi5", True), ("pi4", True), ("pi3", False), ("pizero2", False)])
def test_only_the_eeprom_bootloaders_report_tryboot(board: str, tryboot: bool, tmp_path: Path) -> None:
    standins.write_tree(standins.load_profile(board), tmp_path)
    flag = tmp_path / "firmware/devicetree/base/chosen/bootloader/tryboot"
    assert flag.exists() == tryboot
    if tryboot:
        assert flag.read_bytes() == b"\0\0\0\0"  # not a trial boot until a reboot "0 tryboot"


def test_the_clock_is_shown_synchronised_as_systemd_timesyncd_shows_it(tmp_path: Path) -> None:
    """The kiosk trusts the clock once /run/systemd/timesync/synchronized exists; a container's clock is the host's."""
    standins.write_tree(standins.load_profile("pi4"), tmp_path)
    assert (tmp_path / "timesync/synchronized").is_file()
    mounts = (ROOT / "testbed/tasks/start_pis.yml").read_text()
    assert "/timesync:/run/systemd/timesync:ro" in mounts


def test_pi5_cpuinfo_shows_four_cortex_a76_cores_and_its_revision(tmp_path: Path) -> None:
    """BCM2712: 4 x Cortex-A76 (CPU part 0xd0b, r4p1), revision c04170 (Pi 5, 4 GB, rev 1.0)."""
    standins.write_tree(standins.load_profile("pi5"), tmp_path)
    cpuinfo = (tmp_path / "cpuinfo").read_text()
    assert cpuinfo.count("CPU part\t: 0xd0b\n") == 4 and cpuinfo.count("CPU variant\t: 0x4\n") == 4
    assert "Revision\t: c04170\n" in cpuinfo and "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n" in cpuinfo
    found = pi_board(cpuinfo)  # the revision code alone, without the device-tree model
    assert (found["family"], found["ram_mb"], found["cpu_count"], found["model"]) == ("pi5", 4096, 4, "Raspberry Pi 5")
    compatible = (tmp_path / "firmware/devicetree/base/compatible").read_bytes()
    assert compatible == b"raspberrypi,5-model-b\0brcm,bcm2712\0"
    policy = tmp_path / "cpu/cpufreq/policy0"
    assert [(policy / f).read_text() for f in ("scaling_min_freq", "scaling_max_freq", "scaling_cur_freq")] == [
        "1500000\n", "2400000\n", "1500000\n"]
    assert (tmp_path / "block/nvme0n1/queue/scheduler").read_text() == "[none] mq-deadline kyber bfq\n"
    assert (tmp_path / "block/mmcblk0/queue/scheduler").read_text() == "[mq-deadline] kyber bfq none\n"


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_only_a_board_with_a_real_time_clock_has_its_node(board: str, tmp_path: Path) -> None:
    """The Pi 5's rpi_rtc device-tree node, which pi_facts reads; no other board has one."""
    profile = standins.load_profile(board)
    standins.write_tree(profile, tmp_path)
    nodes = sorted(tmp_path.glob("firmware/devicetree/base/soc*/rpi_rtc/compatible"))
    if board == "pi5":
        assert profile["rtc"] == "rpi-rtc"
        assert [n.read_bytes() for n in nodes] == [b"raspberrypi,rpi-rtc\0"]
    else:
        assert "rtc" not in profile and nodes == []
