"""The walk behind every Molecule failure case (molecule/resources/fingerprint.py): what counts as a change."""
from __future__ import annotations

import time
from pathlib import Path

from conftest import ROOT, load_module

fingerprint = load_module(ROOT / "molecule/resources/fingerprint.py")


def tree(root: Path) -> float:
    """An upper directory as a container left it, and a mark taken after it was written."""
    for path in ("opt/pi-kiosk/releases/old", "etc/pi-kiosk", "var/lib/pi-kiosk", "usr/lib/python3/__pycache__"):
        (root / path).mkdir(parents=True)
    (root / "etc/pi-kiosk/config.toml").write_text("[camera]\n")
    (root / "opt/pi-kiosk/current").symlink_to("releases/old")
    # As fingerprint.py marks the time: a file's times, which the kernel keeps with a coarse clock.
    time.sleep(0.05)
    mark = root.parent / "mark"
    mark.touch()
    time.sleep(0.05)
    return mark.stat().st_mtime


def test_nothing_written_since_the_mark_is_no_change(tmp_path: Path) -> None:
    since = tree(tmp_path)
    assert fingerprint.changed_paths(tmp_path, since, set(), set()) == []


def test_a_file_its_mode_a_new_entry_and_a_relinked_link_are_changes(tmp_path: Path) -> None:
    since = tree(tmp_path)
    (tmp_path / "etc/pi-kiosk/config.toml").chmod(0o600)
    (tmp_path / "opt/pi-kiosk/releases/new").mkdir()
    (tmp_path / "opt/pi-kiosk/current").unlink()
    (tmp_path / "opt/pi-kiosk/current").symlink_to("releases/new")
    assert fingerprint.changed_paths(tmp_path, since, set(), set()) == [
        "/etc/pi-kiosk/config.toml", "/opt/pi-kiosk", "/opt/pi-kiosk/current", "/opt/pi-kiosk/releases",
        "/opt/pi-kiosk/releases/new"]


def test_pruned_paths_new_entries_and_bytecode_do_not_count(tmp_path: Path) -> None:
    since = tree(tmp_path)
    (tmp_path / "var/lib/pi-kiosk/outbox.sqlite3").write_text("events")
    (tmp_path / "usr/lib/python3/__pycache__/x.pyc").write_text("bytecode")
    (tmp_path / "opt/pi-kiosk/releases/new").mkdir()
    changed = fingerprint.changed_paths(tmp_path, since, {"/var/lib/pi-kiosk", "/opt/pi-kiosk/releases/new"},
                                        {"/opt/pi-kiosk/releases"})
    assert changed == []
