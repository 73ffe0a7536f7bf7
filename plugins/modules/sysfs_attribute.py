#!/usr/bin/python
"""Ansible module: set sysfs attributes now, with check mode and diff that tell the truth."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sysfs_attribute
short_description: Set sysfs attributes (CPU governor, IO scheduler, ...) where they differ
author: pi-fleet maintainers
description:
  - Reads each attribute, compares it with O(value) and writes it only when it differs.
  - Understands selector files such as C(queue/scheduler) that list every choice with the
    active one in brackets (C([mq-deadline] kyber bfq none)).
  - Every file is read and judged before any is written; one that does not offer O(value)
    fails the task, naming the value and the allowed ones, and nothing is written (the result's
    RV(attributes) still lists every file's state).
  - One call for all the files (each module call starts a Python on the host, seconds on a Pi Zero).
  - The change lasts until the next boot; persistence is the caller's job (udev, systemd).
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: One before and after per file that changes.
  platform:
    platforms: posix
options:
  path:
    description:
      - The sysfs file, or a glob of them (C(/sys/block/mmcblk*/queue/scheduler)); a list for several.
      - A glob that matches nothing is no error (RV(attributes) is then empty); a plain path that does not exist is.
    type: list
    elements: str
    required: true
  value:
    description: The value to select.
    type: str
    required: true
  choices_from:
    description:
      - A file listing the allowed values (e.g. C(scaling_available_governors)); a relative name is
        read beside each file.
      - Without it, a selector file allows the values it lists, and a free-form file any value.
    type: str
notes:
  - Writing sysfs needs root (C(become)); the kernel may still refuse a value it listed, which fails the task.
"""

EXAMPLES = r"""
- name: Select mq-deadline on every SD card and USB disk
  sysfs_attribute:
    path:
      - /sys/block/mmcblk*/queue/scheduler
      - /sys/block/sd*/queue/scheduler
    value: mq-deadline
  register: iosched

- name: Name the disks that were switched
  ansible.builtin.debug:
    msg: "{{ iosched.attributes | selectattr('changed') | map(attribute='path') | list }}"

- name: Judge (check mode writes nothing) the CPU governor of every frequency policy
  sysfs_attribute:
    path: /sys/devices/system/cpu/cpufreq/policy*/scaling_governor
    value: performance
    choices_from: scaling_available_governors
  check_mode: true
  register: governor

- name: Say what the first policy offers
  ansible.builtin.debug:
    msg: "{{ governor.attributes[0].offered | join(', ') }}"
"""

RETURN = r"""
attributes:
  description:
    - Each file matched, in path order, with its value before the task and whether it changes.
    - Also returned when a file does not offer O(value) (or the kernel refuses it), so that a caller can word
      the error for its own setting.
  type: list
  elements: dict
  returned: success, and when a file does not offer or refuses O(value)
  contains:
    path:
      description: The file.
      type: str
      sample: /sys/block/mmcblk0/queue/scheduler
    before:
      description: Its active value before the task (for a selector file, the bracketed one).
      type: str
      sample: kyber
    offered:
      description:
        - The values it allows (read from O(choices_from), or a selector file's list); empty for a free-form file.
      type: list
      elements: str
      sample: [mq-deadline, kyber, bfq, none]
    changed:
      description: Whether it differs from O(value), and so is written (outside check mode).
      type: bool
      sample: true
value:
  description: The value selected (O(value)).
  type: str
  returned: success
  sample: mq-deadline
"""

import glob
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule


class SysfsError(Exception):
    pass


def parse(text: str) -> tuple[str, list[str]]:
    """Return the active value and, for selector files, the offered ones."""
    words = text.split()
    if any(w.startswith("[") for w in words):
        return next(w.strip("[]") for w in words if w.startswith("[")), [w.strip("[]") for w in words]
    return text.strip(), []


def plan(patterns: list[str], value: str, choices_from: str | None) -> list[dict[str, Any]]:
    """Each matched file's state (`offered`: the values it allows, [] for a free-form file);
    SysfsError when one cannot be read."""
    paths = sorted({p for pattern in patterns for p in (glob.glob(pattern) if glob.has_magic(pattern) else [pattern])})
    entries = []
    for path in map(Path, paths):
        try:
            active, offered = parse(path.read_text())
            if choices_from:
                offered = (path.parent / choices_from).read_text().split()
        except OSError as exc:
            raise SysfsError(f"cannot read {exc.filename}: {exc.strerror}") from None
        entries.append({"path": str(path), "before": active, "offered": offered, "changed": active != value})
    return entries


def refused(entries: list[dict[str, Any]], value: str) -> str:
    """Why `value` cannot be set, naming each file that does not offer it ("" when all do)."""
    return "; ".join(f"{e['path']}: {value!r} is not offered here; allowed: {', '.join(e['offered'])}"
                     for e in entries if e["offered"] and value not in e["offered"])


def apply(entries: list[dict[str, Any]], value: str) -> None:
    for entry in entries:
        if entry["changed"]:
            try:
                Path(entry["path"]).write_text(value + "\n")
            except OSError as exc:
                raise SysfsError(f"the kernel refused {value!r} for {entry['path']}: {exc.strerror}") from None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "list", "elements": "str", "required": True},
            "value": {"type": "str", "required": True},
            "choices_from": {"type": "str"},
        },
        supports_check_mode=True,
    )
    value = module.params["value"]
    try:
        entries = plan(module.params["path"], value, module.params["choices_from"])
    except SysfsError as exc:
        module.fail_json(msg=str(exc))
    problem = refused(entries, value)
    if problem:
        # Nothing written; the files' states let a caller word the error for its own setting.
        module.fail_json(msg=problem, attributes=entries)
    changing = [e for e in entries if e["changed"]]
    result = {
        "changed": bool(changing),
        "attributes": entries,
        "value": value,
        "diff": [{"before": e["before"] + "\n", "after": value + "\n", "before_header": e["path"],
                  "after_header": e["path"]} for e in changing],
    }
    if changing and not module.check_mode:
        try:
            apply(entries, value)
        except SysfsError as exc:
            module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
