#!/usr/bin/python
"""Ansible module: set a sysfs attribute now, with check mode and diff that tell the truth."""
from __future__ import annotations

DOCUMENTATION = r"""
module: sysfs_attribute
short_description: Set a sysfs attribute (CPU governor, IO scheduler, ...) if it differs
description:
  - Reads the attribute, compares it with O(value) and writes it only when it differs.
  - Understands selector files such as C(queue/scheduler) that list every choice with the
    active one in brackets ("[mq-deadline] kyber bfq none").
  - Fails, naming the value and the allowed ones, when O(value) is not offered.
  - The change lasts until the next boot; persistence is the caller's job (udev, systemd).
options:
  path:
    description: The sysfs file.
    type: path
    required: true
  value:
    description: The value to select.
    type: str
    required: true
  choices_from:
    description: A file listing the allowed values (e.g. C(scaling_available_governors)).
    type: path
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule


def parse(text: str) -> tuple[str, list[str]]:
    """Return the active value and, for selector files, the offered ones."""
    words = text.split()
    if any(w.startswith("[") for w in words):
        return next(w.strip("[]") for w in words if w.startswith("[")), [w.strip("[]") for w in words]
    return text.strip(), []


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "value": {"type": "str", "required": True},
            "choices_from": {"type": "path"},
        },
        supports_check_mode=True,
    )
    path = Path(module.params["path"])
    value = module.params["value"]
    try:
        active, offered = parse(path.read_text())
        if module.params["choices_from"]:
            offered = Path(module.params["choices_from"]).read_text().split()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {exc.filename}: {exc.strerror}")
    if offered and value not in offered:
        module.fail_json(msg=f"{path}: {value!r} is not offered here; allowed: {', '.join(offered)}")

    result = {
        "changed": active != value,
        "path": str(path),
        "before": active,
        "value": value,
        "diff": {"before": active + "\n", "after": value + "\n", "before_header": str(path), "after_header": str(path)},
    }
    if result["changed"] and not module.check_mode:
        try:
            path.write_text(value + "\n")
        except OSError as exc:
            module.fail_json(msg=f"the kernel refused {value!r} for {path}: {exc.strerror}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
