#!/usr/bin/python
"""Ansible module: switch the kiosk's live deployment, commit it, or roll it back."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_switch
short_description: Switch, commit or roll back the kiosk deployment on a Pi
author: pi-fleet maintainers
description:
  - A deployment is a release (a virtualenv under C(ROOT/releases)) plus deployed files (config, token,
    systemd unit), each kept content-addressed in C(ROOT/files) so that any committed deployment can be
    restored byte for byte.
  - V(live) makes a deployment live. Each file is installed by an atomic rename, C(current) is switched by an
    atomic rename, and the deployment is recorded as live but not yet committed.
  - V(committed) records the live deployment as committed (it passed the health gate) and prunes the releases,
    files, wheels and models no kept deployment uses. The deployments of the O(keep) newest code releases are kept,
    and the live and the last known good one whatever O(keep); failed ones take no keep slot.
  - V(rolled_back) restores the newest committed deployment other than the one undone (the live one, or a switch
    cut short; commit order, never file times), or the committed release O(rollback_to), and records the failed
    attempt with O(phase) and O(reason). The history is a stack the operator moves down; what was above the target
    leaves it (a release rolled back from is not good again until it is deployed again).
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: With O(state=live), a release or candidate file not there yet is what the run would build first, a change.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  root:
    description: The deployment area.
    type: path
    required: true
  state:
    description: What to do (see the description).
    type: str
    choices: [live, committed, rolled_back]
    required: true
  release:
    description: Release id to make live; required with O(state=live).
    type: str
  files:
    description: Deployed path to candidate path, for O(state=live); the candidates are the rendered files.
    type: dict
    default: {}
  keep:
    description:
      - Code releases whose committed deployments are kept (O(state=committed)); configuration changes of one release
        count once; the live and the last known good deployment stay besides. The history keeps only what is kept.
    type: int
    default: 3
  models_dir:
    description:
      - The content-addressed model files, pruned with the deployments (a model whose path no kept deployment's files
        name).
      - Opened as every directory this module acts on, without following a link anyone but root could have placed
        (such a link fails the task, nothing is removed).
    type: path
  retired_models_dirs:
    description:
      - Models directories older deployments used, pruned the same way and removed once nothing in them is used.
      - A link in place of one (the service user's doing, when it is in the service's own directory) is removed,
        never followed.
    type: list
    elements: path
    default: []
  secrets:
    description:
      - Deployed paths among O(files) that hold secrets (the server token). They are installed from their candidate as
        they are, never copied into the store nor recorded by their sha256 in the history, so no rollback ever brings
        back a rotated-away secret; entries an older version of this module recorded for them are forgotten.
    type: list
    elements: path
    default: []
  rollback_to:
    description: Release id to roll back to (O(state=rolled_back)); empty picks the last known good one.
    type: str
    default: ""
  phase:
    description: Where the failed attempt failed (O(state=rolled_back)), recorded with it.
    type: str
    default: ""
  reason:
    description: Why the failed attempt failed (O(state=rolled_back)), recorded with it.
    type: str
    default: ""
seealso:
  - module: pi_kiosk_gate
  - module: pi_kiosk_facts
"""

EXAMPLES = r"""
- name: Switch to the candidate (atomic renames)
  pi_kiosk_switch:
    root: /opt/pi-kiosk
    state: live
    release: 0.2.0-c12577f42026
    files:
      /etc/pi-kiosk/config.toml: /opt/pi-kiosk/candidate/config.toml
      /etc/pi-kiosk/token: /opt/pi-kiosk/candidate/token
      /etc/systemd/system/pi-kiosk.service: /opt/pi-kiosk/candidate/pi-kiosk.service
    secrets: [/etc/pi-kiosk/token]
  register: switched

- name: Commit it once it passed the health gate, and prune
  pi_kiosk_switch:
    root: /opt/pi-kiosk
    state: committed
    keep: 3
    models_dir: /opt/pi-kiosk/models
    retired_models_dirs: [/var/lib/pi-kiosk/models]
  register: committed

- name: Go back to the last known good deployment
  pi_kiosk_switch:
    root: /opt/pi-kiosk
    state: rolled_back
    phase: health
    reason: no frames processed during the 30 s window
  register: rolled_back

- name: Report
  ansible.builtin.debug:
    msg: >-
      files {{ switched.changed_files | join(', ') or 'unchanged' }};
      pruned {{ committed.pruned.releases | join(', ') or 'nothing' }};
      rolled back from {{ rolled_back.previous.release }} to {{ rolled_back.deployment.release }}
"""

RETURN = r"""
deployment:
  description:
    - With O(state=live), the deployment made live (in check mode, the one that would be).
    - With O(state=committed), the live deployment just committed.
    - With O(state=rolled_back), the committed deployment restored.
  type: dict
  returned: success
  contains:
    release:
      description: Its release id.
      type: str
      sample: 0.2.0-c12577f42026
    files:
      description:
        - Each deployed path and the sha256 of its content (empty in check mode for a candidate not rendered yet).
      type: dict
      sample: {/etc/pi-kiosk/config.toml: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}
    at:
      description: When it went live (O(state=committed)), or when it was committed (O(state=rolled_back)); UTC.
      type: str
      returned: O(state=committed) and O(state=rolled_back)
      sample: "2026-11-26T14:49:48Z"
previous:
  description: The deployment that was live before the task (release, files, at); null when none was.
  type: dict
  returned: O(state=live) and O(state=rolled_back)
  contains:
    release:
      description: Its release id.
      type: str
      sample: 0.2.0-11ccb633dd26
    files:
      description: Each deployed path and the sha256 of its content.
      type: dict
    at:
      description: When it went live (UTC).
      type: str
interrupted:
  description: Whether a switch of an earlier run was cut short (power, SSH lost); O(state=live) completes it.
  type: bool
  returned: with O(state=live), when the release is complete
  sample: false
uncommitted:
  description:
    - Whether the live deployment (before this task) never passed its gate (went live in a run that did not finish);
      the role gates it, or rolls it back, even when nothing changes.
  type: bool
  returned: with O(state=live), when the release is complete
  sample: false
left_history:
  description: With O(state=rolled_back), the releases above the target that left the history.
  type: list
  elements: str
  returned: with O(state=rolled_back)
  sample: [0.2.0-0c2f5e7a1b3d]
changed_files:
  description: The deployed paths whose content changed (in check mode, would change).
  type: list
  elements: str
  returned: O(state=live) and O(state=rolled_back)
  sample: [/etc/pi-kiosk/config.toml]
release_switched:
  description: Whether C(current) points (or would point) at another release.
  type: bool
  returned: O(state=live)
  sample: true
pruned:
  description: What the commit removed (in check mode, would remove).
  type: dict
  returned: O(state=committed)
  contains:
    releases:
      description: Release ids.
      type: list
      elements: str
      sample: [0.2.0-0c2f5e7a1b3d]
    files:
      description: Stored deployed files, by sha256.
      type: list
      elements: str
      sample: []
    wheels:
      description: Cached wheels, by sha256.
      type: list
      elements: str
      sample: []
    models:
      description: >-
        Paths of model and card files in O(models_dir) and O(retired_models_dirs), and of retired directories.
      type: list
      elements: str
      sample: []
"""

import json
import re
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pi_fleet.kiosk.plugins.module_utils.pi_kiosk_store import (
    MARKER,
    Store,
    install_copy,
    last_known_good,
    list_dir,
    now,
    remove_tree,
    same,
    sha256_file,
    symlink_atomic,
)

SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
FAILED_KEPT = 10


def files_to_install(store: Store, files: dict[str, str]) -> list[str]:
    """Deployed paths whose content differs from the deployment's."""
    return sorted(dest for dest, sha in files.items()
                  if not Path(dest).is_file() or sha256_file(Path(dest)) != sha)


def activate(store: Store, dep: dict[str, Any], check: bool) -> list[str]:
    """Install the deployment's files and point `current` at its release; the paths that changed."""
    changed = files_to_install(store, dep["files"])
    if check:
        return changed
    for dest in changed:
        install_copy(store.stored_file(dep["files"][dest]), Path(dest))
    if store.current_release() != dep["release"]:
        symlink_atomic(f"releases/{dep['release']}", store.current)
    return changed


def go_live(store: Store, release: str, candidates: dict[str, str], check: bool) -> dict[str, Any]:
    state = store.read_state()
    previous = state["live"]
    missing = [c for c in candidates.values() if not Path(c).is_file()]
    if not store.release_complete(release) or missing:
        if check:  # what this run would build or render first: a switch it would make
            return {"changed": True, "changed_files": sorted(candidates), "previous": previous,
                    "deployment": {"release": release, "files": {}}, "release_switched": True}
        if missing:
            raise ValueError(f"candidate files missing: {', '.join(missing)}")
        raise ValueError(f"release {release} is not complete in {store.releases}: build it first")
    desired = {"release": release, "files": {dest: sha256_file(Path(c)) for dest, c in sorted(candidates.items())
                                             if dest not in store.secrets}}
    # Secrets are installed as they are, never kept in the store or the history (a rollback never brings one back).
    new_secrets = sorted(dest for dest, c in candidates.items()
                         if dest in store.secrets
                         and (not Path(dest).is_file() or Path(dest).read_bytes() != Path(c).read_bytes()))
    if not check:
        for dest, candidate in candidates.items():
            if dest not in store.secrets:
                store.keep_file(Path(candidate))
    switching = store.current_release() != release
    changed_files = sorted(files_to_install(store, desired["files"]) + new_secrets)
    interrupted = state["switching"] is not None
    changed = bool(changed_files) or switching or not same(previous, desired) or interrupted
    if changed and not check:
        # The intent first: a switch cut short (power, SSH) is known as such to the next run, which completes it and
        # gates it (or rolls back).
        state["switching"] = {**desired, "at": now()}
        store.write_state(state)
        for dest in new_secrets:
            install_copy(Path(candidates[dest]), Path(dest))
        activate(store, desired, check)
        state.update(live={**desired, "at": now()}, switching=None)
        store.write_state(state)
    return {"changed": changed, "changed_files": changed_files, "previous": previous, "deployment": desired,
            "release_switched": switching, "interrupted": interrupted,
            "uncommitted": previous is not None and not any(same(previous, d) for d in state["committed"])}


def kept_deployments(state: dict[str, Any], keep: int) -> list[dict[str, Any]]:
    """The committed deployments of the `keep` newest code releases (a configuration change is no new release), plus
    the live one and the last known good one whatever `keep` is (with keep=1 the kept release is the live one, and the
    last known good, older, must stay for a rollback)."""
    newest = list(dict.fromkeys(d["release"] for d in reversed(state["committed"])))[:max(keep, 0)]
    kept = [d for d in state["committed"] if d["release"] in newest]
    live = state["live"]
    for dep in (live, last_known_good(state, live)):
        if dep and not any(same(dep, d) for d in kept):
            kept.append(dep)
    return kept


def release_wheels(store: Store, release: str) -> set[str]:
    try:
        info = json.loads((store.release_dir(release) / MARKER).read_text())
    except (OSError, ValueError):
        return set()
    return set(info.get("wheels", []))


def prune(store: Store, state: dict[str, Any], keep: int, models_dirs: list[Path], check: bool
          ) -> dict[str, list[str]]:
    """Remove what no kept deployment uses. A model (or card file) is used while a kept deployment's files name its
    path; a models directory that older releases used (models_dirs after the first) goes once it is empty."""
    kept = kept_deployments(state, keep)
    # The history holds only what can still be gone back to.
    state["committed"] = [d for d in state["committed"] if any(same(d, k) for k in kept)]
    releases = {d["release"] for d in kept}
    file_shas = {sha for d in kept for sha in d["files"].values()}
    wheels = set().union(*(release_wheels(store, r) for r in releases)) if releases else set()
    texts = [store.stored_file(sha).read_text(errors="replace") for sha in file_shas
             if store.stored_file(sha).is_file()]
    pruned: dict[str, list[str]] = {
        "releases": [n for n in list_dir(store.releases) if n not in releases],
        "files": [n for n in list_dir(store.files) if n not in file_shas],
        "wheels": [n for n in list_dir(store.wheels) if n not in wheels],
        "models": [str(d / n) for d in models_dirs if not d.is_symlink() or d == models_dirs[0]
                   for n in list_dir(d) if not any(str(d / n) in text for text in texts)],
    }
    # A retired directory goes once nothing in it is used; a link in its place (the service user's doing) is
    # removed, never followed.
    unused = set(pruned["models"])
    pruned["models"] += [str(d) for d in models_dirs[1:]
                         if d.is_symlink() or (d.exists() and all(str(d / n) in unused for n in list_dir(d)))]
    if not check:
        for kind, base in (("releases", store.releases), ("files", store.files), ("wheels", store.wheels)):
            for name in pruned[kind]:
                remove_tree(base / name)
        for path in pruned["models"]:
            remove_tree(Path(path))
    return pruned


def commit(store: Store, keep: int, models_dirs: list[Path], check: bool) -> dict[str, Any]:
    state = store.read_state()
    live = state["live"]
    if not live:
        raise ValueError("nothing is live: there is no deployment to commit")
    already = bool(state["committed"]) and same(state["committed"][-1], live)
    if not already:
        state["committed"] = [d for d in state["committed"] if not same(d, live)]
        state["committed"].append({"release": live["release"], "files": live["files"], "at": now()})
    pruned = prune(store, state, keep, models_dirs, check)
    changed = not already or any(pruned.values())
    if changed and not check:
        store.write_state(state)
    return {"changed": changed, "deployment": live, "pruned": pruned}


def roll_back(store: Store, rollback_to: str, phase: str, reason: str, check: bool) -> dict[str, Any]:
    """Go down the history: to the newest committed deployment other than the one undone (or to `rollback_to`). What
    was above the target leaves the history: a release rolled back from is not good again until it is deployed again."""
    state = store.read_state()
    live, committed = state["live"], state["committed"]
    # What is undone: a switch cut short (its files may be live, its state not yet), or else the live deployment.
    undone = state["switching"] or live
    if rollback_to:
        matches = [i for i, d in enumerate(committed) if d["release"] == rollback_to]
        if not matches:
            known = ", ".join(d["release"] for d in committed) or "none"
            raise ValueError(f"pi_kiosk_rollback_to={rollback_to} is not a committed release here; committed: {known}")
        index = matches[-1]
    else:
        index = next((i for i in reversed(range(len(committed))) if not same(committed[i], undone)), -1)
        if index < 0:
            raise ValueError("there is no committed deployment to roll back to (none passed the health gate yet, "
                             "the live one is the only one, or the ones before it were rolled back from)")
    target = committed[index]
    if not store.release_complete(target["release"]):
        raise ValueError(f"release {target['release']} is gone from {store.releases}: cannot roll back to it")
    switching = store.current_release() != target["release"]
    changed_files = activate(store, target, check)
    left = committed[index + 1:]
    changed = (bool(changed_files) or switching or not same(live, target) or state["switching"] is not None
               or bool(left))
    if not check and changed:
        if undone and not any(same(undone, d) for d in committed):
            state["failed"] = (state["failed"] + [{**undone, "phase": phase, "reason": reason[:2000], "at": now()}]
                               )[-FAILED_KEPT:]
        state.update(live={"release": target["release"], "files": target["files"], "at": now()}, switching=None,
                     committed=committed[:index + 1])
        store.write_state(state)
    return {"changed": changed, "deployment": target, "previous": live, "changed_files": changed_files,
            "left_history": [d["release"] for d in left]}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "state": {"type": "str", "required": True, "choices": ["live", "committed", "rolled_back"]},
            "release": {"type": "str"},
            "files": {"type": "dict", "default": {}},
            "keep": {"type": "int", "default": 3},
            "models_dir": {"type": "path"},
            "retired_models_dirs": {"type": "list", "elements": "path", "default": []},
            "rollback_to": {"type": "str", "default": ""},
            "phase": {"type": "str", "default": ""},
            "reason": {"type": "str", "default": ""},
            "secrets": {"type": "list", "elements": "path", "default": [], "no_log": False},
        },
        required_if=[("state", "live", ["release"])],
        supports_check_mode=True,
    )
    p = module.params
    store = Store(p["root"], secrets=p["secrets"])
    try:
        if p["state"] == "live":
            result = go_live(store, p["release"], p["files"], module.check_mode)
        elif p["state"] == "committed":
            models_dirs = [Path(d) for d in [p["models_dir"], *p["retired_models_dirs"]] if d]
            result = commit(store, p["keep"], models_dirs, module.check_mode)
        else:
            result = roll_back(store, p["rollback_to"], p["phase"], p["reason"], module.check_mode)
    except (ValueError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
