"""plugins/modules/sysfs_attribute: every file judged before any is written, one call for a glob of them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, load_module

sysfs = load_module(ROOT / "plugins/modules/sysfs_attribute.py")


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


def run_module(tmp_path: Path, check_mode: bool, **args: object) -> dict[str, Any]:
    """The module as Ansible runs it: its arguments as JSON, its result on stdout."""
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode,
                                                           "_ansible_diff": True}}))
    done = subprocess.run([sys.executable, str(ROOT / "plugins/modules/sysfs_attribute.py"), str(argfile)],
                          capture_output=True, text=True, check=False)
    return json.loads(done.stdout)


def test_check_mode_writes_nothing_and_reports_the_change_with_its_diff(tmp_path: Path) -> None:
    pattern = disks(tmp_path, mmcblk0="[mq-deadline] kyber none", sda="mq-deadline kyber [none]")
    result = run_module(tmp_path, True, path=[pattern], value="none")
    assert result["changed"] is True
    assert result["diff"] == [{"before": "mq-deadline\n", "after": "none\n",
                               "before_header": f"{tmp_path}/mmcblk0/queue/scheduler",
                               "after_header": f"{tmp_path}/mmcblk0/queue/scheduler"}]
    assert (tmp_path / "mmcblk0/queue/scheduler").read_text() == "[mq-deadline] kyber none\n"  # not written
    # The same call for real writes what check mode predicted, and a second one has nothing to do.
    assert run_module(tmp_path, False, path=[pattern], value="none")["changed"] is True
    assert (tmp_path / "mmcblk0/queue/scheduler").read_text() == "none\n"
    assert run_module(tmp_path, False, path=[pattern], value="none")["changed"] is False


def test_a_refused_value_writes_nothing_and_returns_every_files_state(tmp_path: Path) -> None:
    pattern = disks(tmp_path, mmcblk0="[mq-deadline] kyber bfq none", sda="[mq-deadline] none")
    result = run_module(tmp_path, False, path=[pattern], value="bfq")
    assert result["failed"] is True
    assert "sda/queue/scheduler: 'bfq' is not offered here" in str(result["msg"])
    assert [a["offered"] for a in result["attributes"]] == [
        ["mq-deadline", "kyber", "bfq", "none"], ["mq-deadline", "none"]]
    assert (tmp_path / "mmcblk0/queue/scheduler").read_text() == "[mq-deadline] kyber bfq none\n"
