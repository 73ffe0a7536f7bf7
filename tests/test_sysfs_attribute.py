"""library/sysfs_attribute: every file judged before any is written, one call for a glob of them."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, load_module

sysfs = load_module(ROOT / "library/sysfs_attribute.py")


def disks(tmp_path: Path, **schedulers: str) -> str:
    for disk, text in schedulers.items():
        (tmp_path / disk / "queue").mkdir(parents=True)
        (tmp_path / disk / "queue/scheduler").write_text(text + "\n")
    return str(tmp_path / "*/queue/scheduler")


def test_a_glob_is_judged_whole_and_only_differing_files_change(tmp_path: Path) -> None:
    pattern = disks(tmp_path, mmcblk0="[mq-deadline] kyber none", sda="mq-deadline kyber [none]")
    entries = sysfs.plan([pattern], "none", None)
    assert [(Path(e["path"]).parts[-3], e["before"], e["changed"]) for e in entries] == [
        ("mmcblk0", "mq-deadline", True), ("sda", "none", False)]
    assert sysfs.refused(entries, "none") == ""
    sysfs.apply(entries, "none")
    assert (tmp_path / "mmcblk0/queue/scheduler").read_text() == "none\n"
    assert (tmp_path / "sda/queue/scheduler").read_text() == "mq-deadline kyber [none]\n"  # not written


def test_a_value_one_file_lacks_is_refused_naming_it_and_what_it_allows(tmp_path: Path) -> None:
    pattern = disks(tmp_path, mmcblk0="[mq-deadline] kyber bfq none", sda="[mq-deadline] none")
    entries = sysfs.plan([pattern], "bfq", None)
    assert sysfs.refused(entries, "bfq") == (
        f"{tmp_path}/sda/queue/scheduler: 'bfq' is not offered here; allowed: mq-deadline, none")
    assert [e["offered"] for e in entries] == [["mq-deadline", "kyber", "bfq", "none"], ["mq-deadline", "none"]]


def test_choices_from_a_relative_name_is_read_beside_each_file(tmp_path: Path) -> None:
    for policy in ("policy0", "policy4"):
        (tmp_path / policy).mkdir()
        (tmp_path / policy / "scaling_governor").write_text("ondemand\n")
        (tmp_path / policy / "scaling_available_governors").write_text("ondemand performance\n")
    entries = sysfs.plan([str(tmp_path / "policy*/scaling_governor")], "turbo", "scaling_available_governors")
    assert "policy0/scaling_governor: 'turbo' is not offered here; allowed: ondemand, performance" in sysfs.refused(
        entries, "turbo")


def test_a_missing_file_or_a_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(sysfs.SysfsError, match=r"cannot read .*/absent"):
        sysfs.plan([str(tmp_path / "absent")], "x", None)
    assert sysfs.plan([str(tmp_path / "sd*/queue/scheduler")], "none", None) == []
