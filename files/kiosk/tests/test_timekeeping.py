"""Whether the clock can be trusted (the seam: a file), and how long ago something happened, across boots."""
from __future__ import annotations

from pathlib import Path

from fakeclock import FakeTime

from pi_kiosk.timekeeping import BOOT_ID_PATH, ClockStatus, Stamp, Timekeeper, duration


def test_the_clock_is_synchronised_once_the_file_exists_and_stays_so(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    keeper = Timekeeper(str(flag), boot_id="b")
    assert not keeper.synchronized() and not keeper.stamp().synchronized
    flag.touch()  # what systemd-timesyncd does once it has synchronised the clock
    assert keeper.synchronized() and keeper.stamp().synchronized
    flag.unlink()
    assert keeper.synchronized()  # for the rest of the boot (the file only goes when /run is emptied)
    assert Timekeeper("", boot_id="b").synchronized()  # clock.synchronized_path = "": the clock is trusted


def test_the_boot_id_is_the_kernels() -> None:
    assert Timekeeper().boot_id == BOOT_ID_PATH.read_text().strip() != ""


def test_a_moment_of_this_boot_is_placed_exactly_once_the_clock_jumps_at_sync(tmp_path: Path) -> None:
    clock = FakeTime(str(tmp_path / "synchronized"), wall=1_700_000_000.0)  # fake-hwclock: days behind
    stamp = clock.stamp()
    clock.advance(125.5)
    clock.step(3 * 86400 + 17.25)  # NTP sets the clock: the truth was 3 days and 17.25 s later
    assert clock.wall_at(stamp.boot_seconds) == 1_700_000_000.0 + 3 * 86400 + 17.25


def test_an_age_is_known_within_a_boot_or_between_synchronised_clocks(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    now = FakeTime(str(flag), "boot-2", wall=1_800_000_000.0, boot=50.0)
    this_boot = Stamp(1_234.0, synchronized=False, boot_id="boot-2", boot_seconds=20.0)
    assert now.age(this_boot) == 30.0  # the wall clocks say nothing: CLOCK_BOOTTIME does
    earlier_true = Stamp(1_800_000_000.0 - 600, synchronized=True, boot_id="boot-1", boot_seconds=9000.0)
    earlier_guess = Stamp(1_800_000_000.0 - 600, synchronized=False, boot_id="boot-1", boot_seconds=9000.0)
    assert now.age(earlier_true) is None  # the clock now is not synchronised: its 600 s mean nothing
    flag.touch()
    assert now.age(earlier_true) == 600.0
    assert now.age(earlier_guess) is None  # that boot's clock was not: no clock can tell


def test_the_clocks_status_in_words() -> None:
    status = ClockStatus(synchronized=False, boot_seconds=725, waiting=3,
                         path="/run/systemd/timesync/synchronized")
    assert status.describe() == ("clock not synchronised for 12 min 5 s (no /run/systemd/timesync/synchronized): "
                                 "3 attendance event(s) waiting for it")
    assert [duration(s) for s in (40, 725, 7500)] == ["40 s", "12 min 5 s", "2 h 5 min"]
