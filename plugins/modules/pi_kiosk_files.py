#!/usr/bin/python
"""Ansible module: the kiosk's directories and small files on a Pi, in one call.

One module run instead of one per directory and two per template: each costs a Python start on the Pi,
seconds on a Pi Zero 2 W."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_files
short_description: Ensure directories and small files (content, owner, group, mode) in one call
author: pi-fleet maintainers
description:
  - One module run instead of one per directory and two per template; each costs a Python start on the Pi,
    seconds on a Pi Zero 2 W.
  - Directories are created (parents too) and given their owner, group and mode; files get their
    content (written to a temporary file, given its owner and mode, then renamed over the old one), owner, group
    and mode, or are removed with O(files[].state=absent).
  - Check mode reports what would change and writes nothing; with C(--diff), every non-secret file's
    before and after.
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The content of O(files) only; O(secret_files) never show theirs.
  platform:
    platforms: posix
options:
  directories:
    description: Directories to ensure, in order (a parent before its children).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The directory; a non-directory already there fails the task.
        type: path
        required: true
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
      mode:
        description: Its mode, as for M(ansible.builtin.file) (quote an octal mode, C("0750")).
        type: raw
        default: "0755"
  files:
    description: Files to ensure, after the directories.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file.
        type: path
        required: true
      state:
        description: V(present) writes it, V(absent) removes it.
        type: str
        choices: [present, absent]
        default: present
      content:
        description: Its content (text).
        type: str
        default: ""
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
      mode:
        description: Its mode, as for M(ansible.builtin.file) (quote an octal mode, C("0640")).
        type: raw
        default: "0644"
  secret_files:
    description:
      - Files as in O(files) whose content is never shown (no diff, masked in the output), after them.
      - A secret file is given its owner and mode before it is renamed into place, so it is never readable by others.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file.
        type: path
        required: true
      state:
        description: V(present) writes it, V(absent) removes it.
        type: str
        choices: [present, absent]
        default: present
      content:
        description: Its content (text), kept out of the output and the logs.
        type: str
        default: ""
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
      mode:
        description: Its mode, as for M(ansible.builtin.file) (quote an octal mode, C("0600")).
        type: raw
        default: "0644"
"""

EXAMPLES = r"""
- name: Create the kiosk's directories, its configuration and its token
  pi_kiosk_files:
    directories:
      - path: /opt/pi-kiosk
      - path: /etc/pi-kiosk
        group: kiosk
        mode: "0750"
    files:
      - path: /etc/pi-kiosk/config.toml
        content: |
          [camera]
          source = "0"
        group: kiosk
        mode: "0640"
      - path: /etc/pi-kiosk/allowed_signers
        state: absent
    secret_files:
      - path: /etc/pi-kiosk/token
        content: "{{ vault_pi_kiosk_server_tokens[inventory_hostname] }}"
        group: kiosk
        mode: "0640"
  register: layout

- name: Say what changed
  ansible.builtin.debug:
    msg: "{{ layout.changed_paths | join(', ') or 'nothing' }}"
"""

RETURN = r"""
changed_paths:
  description:
    - The directories and files that were (in check mode, would be) created, written, removed or given another
      owner, group or mode, in the order of O(directories), O(files), O(secret_files).
  type: list
  elements: str
  returned: always
  sample: [/etc/pi-kiosk, /etc/pi-kiosk/config.toml, /etc/pi-kiosk/token]
"""

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pi_fleet.kiosk.plugins.module_utils.pi_kiosk_store import UnsafePath, open_dir

ATTRIBUTES = {"owner": {"type": "str", "default": "root"}, "group": {"type": "str", "default": "root"}}


# A URL's secrets (an IP camera's): user:password@, and secret-looking query values (pwd=, token=, ...), as the
# kiosk's own redact_url masks them in its logs.
URL_SECRETS = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"']*:(?P<password>[^@\s\"'/]+)@"
                         r"|[?&][^=&\s\"']*(?:pass|pwd|secret|token|key|auth|sig)[^=&\s\"']*=(?P<value>[^&#\s\"']+)",
                         re.IGNORECASE)


def hide_passwords(module: AnsibleModule, text: str) -> str:
    """`text`, whose URL secrets Ansible now masks wherever they would appear in the output (its arguments as
    echoed with -v, the diff)."""
    module.no_log_values.update(m.group("password") or m.group("value") for m in URL_SECRETS.finditer(text))
    return text


def file_options(secret: bool) -> dict[str, Any]:
    return {"path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "content": {"type": "str", "default": "", "no_log": secret},
            **ATTRIBUTES, "mode": {"type": "raw", "default": "0644"}}


def file_args(module: AnsibleModule, spec: dict[str, Any]) -> dict[str, Any]:
    return module.load_file_common_arguments({k: spec[k] for k in ("path", "owner", "group", "mode")})


def ensure_directory(module: AnsibleModule, spec: dict[str, Any]) -> bool:
    changed = False
    try:
        # Its owner and mode are set through the path: never through a link someone other than root placed.
        os.close(open_dir(Path(spec["path"])))
    except FileNotFoundError:
        if os.path.lexists(spec["path"]):
            module.fail_json(msg=f"{spec['path']} is a link to nothing where a directory is expected")
        changed = True
        if module.check_mode:
            return True
        os.makedirs(spec["path"])
    except UnsafePath as exc:
        module.fail_json(msg=f"{exc}. Nothing was changed there.")
    return bool(module.set_fs_attributes_if_different(file_args(module, spec), changed))


def ensure_file(module: AnsibleModule, spec: dict[str, Any], diffs: list[dict[str, str]] | None) -> bool:
    path = spec["path"]
    exists = os.path.lexists(path)
    if spec["state"] == "absent":
        if exists and not module.check_mode:
            os.unlink(path)
        return exists
    want = spec["content"].encode()
    have = None
    if exists:
        with open(path, "rb") as fh:
            have = fh.read()
    if have != want:
        if diffs is not None:
            diffs.append({"before_header": path, "after_header": path,
                          "before": hide_passwords(module, (have or b"").decode(errors="replace")),
                          "after": spec["content"]})
        if module.check_mode:
            return True
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pi-kiosk-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(want)
        # Owner and mode before the rename (a secret is never readable by others, not even for a moment) and
        # after it (atomic_move gives a new file the umask's mode).
        module.set_fs_attributes_if_different(file_args(module, {**spec, "path": tmp}), True)
        module.atomic_move(tmp, path, keep_dest_attrs=False)
        module.set_fs_attributes_if_different(file_args(module, spec), True)
        return True
    return bool(module.set_fs_attributes_if_different(file_args(module, spec), False))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True}, **ATTRIBUTES, "mode": {"type": "raw", "default": "0755"}}},
            "files": {"type": "list", "elements": "dict", "default": [], "options": file_options(secret=False)},
            # Their content is no_log; the rest (paths, owners, modes) is not secret.
            "secret_files": {"type": "list", "elements": "dict", "default": [], "no_log": False,
                             "options": file_options(secret=True)},
        },
        supports_check_mode=True,
    )
    for spec in module.params["files"]:
        hide_passwords(module, spec["content"])
    changed: list[str] = []
    diffs: list[dict[str, str]] = []
    for spec in module.params["directories"]:
        if ensure_directory(module, spec):
            changed.append(spec["path"])
    for spec in module.params["files"]:
        if ensure_file(module, spec, diffs):
            changed.append(spec["path"])
    for spec in module.params["secret_files"]:
        if ensure_file(module, spec, None):
            changed.append(spec["path"])
    result: dict[str, Any] = {"changed": bool(changed), "changed_paths": changed}
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
