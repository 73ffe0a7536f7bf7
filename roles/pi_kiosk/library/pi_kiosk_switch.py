#!/usr/bin/python
"""Ansible module: switch the kiosk's live deployment, commit it, or roll it back."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_switch
short_description: Switch, commit or roll back the kiosk deployment on a Pi
description:
  - A deployment is a release (a virtualenv under ROOT/releases) plus deployed files (config, token,
    systemd unit), each kept content-addressed in ROOT/files so that any committed deployment can be
    restored byte for byte.
  - C(live) makes a deployment live: files installed by atomic rename, C(current) switched by an atomic
    rename, the deployment recorded as live but not yet committed.
  - C(committed) records the live deployment as committed (it passed the health gate) and prunes what
    no kept deployment uses; the live and the last-known-good deployments are never pruned, failed
    ones take no keep slot.
  - C(rolled_back) restores the newest committed deployment other than the live one (commit order,
    never file times), or the committed release O(rollback_to), and records the failed attempt.
options:
  root: {description: The deployment area., type: path, required: true}
  state: {description: What to do., type: str, choices: [live, committed, rolled_back], required: true}
  release: {description: Release id to make live (state=live)., type: str}
  files: {description: Deployed path -> candidate path (state=live)., type: dict, default: {}}
  keep: {description: Committed deployments to keep (state=committed)., type: int, default: 3}
  models_dir: {description: Content-addressed model files, pruned with the deployments., type: path}
  rollback_to:
    description: Release id to roll back to (state=rolled_back); empty picks the last known good.
    type: str
    default: ""
  phase: {description: Where the failed attempt failed (state=rolled_back)., type: str, default: ""}
  reason: {description: Why the failed attempt failed (state=rolled_back)., type: str, default: ""}
"""

import json
import re
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pi_kiosk_store import (
    MARKER,
    Store,
    install_copy,
    last_known_good,
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
    desired = {"release": release,
               "files": {dest: sha256_file(Path(c)) for dest, c in sorted(candidates.items())}}
    if not check:
        for candidate in candidates.values():
            store.keep_file(Path(candidate))
    switching = store.current_release() != release
    changed_files = activate(store, desired, check)
    changed = bool(changed_files) or switching or not same(state["live"], desired)
    if changed and not check:
        state["live"] = {**desired, "at": now()}
        store.write_state(state)
    return {"changed": changed, "changed_files": changed_files, "previous": previous, "deployment": desired,
            "release_switched": switching}


def kept_deployments(state: dict[str, Any], keep: int) -> list[dict[str, Any]]:
    kept = state["committed"][-keep:] if keep > 0 else []
    live = state["live"]
    return kept + ([live] if live and not any(same(live, d) for d in kept) else [])


def release_wheels(store: Store, release: str) -> set[str]:
    try:
        info = json.loads((store.release_dir(release) / MARKER).read_text())
    except (OSError, ValueError):
        return set()
    return set(info.get("wheels", []))


def prune(store: Store, state: dict[str, Any], keep: int, models_dir: Path | None, check: bool) -> dict[str, list[str]]:
    kept = kept_deployments(state, keep)
    releases = {d["release"] for d in kept}
    file_shas = {sha for d in kept for sha in d["files"].values()}
    wheels = set().union(*(release_wheels(store, r) for r in releases)) if releases else set()
    referenced = set()
    for sha in file_shas:
        path = store.stored_file(sha)
        if path.is_file():
            referenced |= set(SHA256.findall(path.read_text(errors="replace")))
    pruned: dict[str, list[str]] = {"releases": [], "files": [], "wheels": [], "models": []}
    if store.releases.is_dir():
        pruned["releases"] = sorted(p.name for p in store.releases.iterdir() if p.name not in releases)
    if store.files.is_dir():
        pruned["files"] = sorted(p.name for p in store.files.iterdir() if p.name not in file_shas)
    if store.wheels.is_dir():
        pruned["wheels"] = sorted(p.name for p in store.wheels.iterdir() if p.name not in wheels)
    if models_dir and models_dir.is_dir():
        pruned["models"] = sorted(p.name for p in models_dir.iterdir() if p.name.split(".")[0] not in referenced)
    if not check:
        for kind, base in (("releases", store.releases), ("files", store.files), ("wheels", store.wheels),
                           ("models", models_dir)):
            for name in pruned[kind]:
                remove_tree(base / name)  # type: ignore[operator]
    return pruned


def commit(store: Store, keep: int, models_dir: Path | None, check: bool) -> dict[str, Any]:
    state = store.read_state()
    live = state["live"]
    if not live:
        raise ValueError("nothing is live: there is no deployment to commit")
    already = bool(state["committed"]) and same(state["committed"][-1], live)
    if not already:
        state["committed"] = [d for d in state["committed"] if not same(d, live)]
        state["committed"].append({"release": live["release"], "files": live["files"], "at": now()})
    pruned = prune(store, state, keep, models_dir, check)
    changed = not already or any(pruned.values())
    if changed and not check:
        store.write_state(state)
    return {"changed": changed, "deployment": live, "pruned": pruned}


def roll_back(store: Store, rollback_to: str, phase: str, reason: str, check: bool) -> dict[str, Any]:
    state = store.read_state()
    live = state["live"]
    if rollback_to:
        matches = [d for d in state["committed"] if d["release"] == rollback_to]
        if not matches:
            known = ", ".join(d["release"] for d in state["committed"]) or "none"
            raise ValueError(f"pi_kiosk_rollback_to={rollback_to} is not a committed release here; committed: {known}")
        target = matches[-1]
    else:
        target = last_known_good(state, live)
        if target is None:
            raise ValueError("there is no committed deployment to roll back to (none passed the health gate yet, "
                             "or the live one is the only one)")
    if not store.release_complete(target["release"]):
        raise ValueError(f"release {target['release']} is gone from {store.releases}: cannot roll back to it")
    switching = store.current_release() != target["release"]
    changed_files = activate(store, target, check)
    changed = bool(changed_files) or switching or not same(live, target)
    if not check and changed:
        committed = any(same(live, d) for d in state["committed"])
        if live and not committed:
            state["failed"] = (state["failed"] + [{**live, "phase": phase, "reason": reason[:2000], "at": now()}]
                               )[-FAILED_KEPT:]
        state["live"] = {"release": target["release"], "files": target["files"], "at": now()}
        store.write_state(state)
    return {"changed": changed, "deployment": target, "previous": live, "changed_files": changed_files}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "state": {"type": "str", "required": True, "choices": ["live", "committed", "rolled_back"]},
            "release": {"type": "str"},
            "files": {"type": "dict", "default": {}},
            "keep": {"type": "int", "default": 3},
            "models_dir": {"type": "path"},
            "rollback_to": {"type": "str", "default": ""},
            "phase": {"type": "str", "default": ""},
            "reason": {"type": "str", "default": ""},
        },
        required_if=[("state", "live", ["release"])],
        supports_check_mode=True,
    )
    p = module.params
    store = Store(p["root"])
    try:
        if p["state"] == "live":
            result = go_live(store, p["release"], p["files"], module.check_mode)
        elif p["state"] == "committed":
            result = commit(store, p["keep"], Path(p["models_dir"]) if p["models_dir"] else None, module.check_mode)
        else:
            result = roll_back(store, p["rollback_to"], p["phase"], p["reason"], module.check_mode)
    except (ValueError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
