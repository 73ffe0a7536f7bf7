#!/usr/bin/env python3
"""What a playbook run changed on emulated Pis (resources/rerun_case.yml), read from the controller.

    fingerprint.py mark DIR STATE PI...
    fingerprint.py changes DIR STATE PRUNE NEW_ENTRIES PRUNE_SCRIPT PI...

`mark` records the time (DIR/mark) and each Pi's state: the output of the shell lines STATE, run as root on
every Pi at once (`podman exec`). `changes` prints {pi: what changed since the mark} as JSON: every path whose
file changed (content, mode or owner: ctime) or whose directory gained or lost an entry (mtime), then the
state lines that differ. An empty string means nothing changed.

The walk is done here, natively, over each container's overlay upper directory: every write to a container
lands there, so it holds every path changed since the container started and nothing else (a deleted file is a
whiteout there). Walking the Pi's whole tree under qemu cost seconds per case. Directories are judged by
mtime: the overlay's copy-up gives a directory a new ctime when a file below it is first written, which a
real Pi does not see.
PRUNE: JSON list of paths whose changes do not count (their subtrees included); PRUNE_SCRIPT: shell lines run
on the Pi that print more of them; NEW_ENTRIES: JSON list of directories whose own mtime does not count.
"""
from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Separates the state lines from the further paths to prune in one `podman exec`.
SEPARATOR = "--- pi-fleet fingerprint: prune ---"
ANSIBLE_TEMP = ("(umask 077 && mkdir -p /root/.ansible/tmp)\n"
                "[ ! -d /home/pi ] || install -d -m 0700 -o pi -g pi /home/pi/.ansible /home/pi/.ansible/tmp")


def on_pi(pi: str, script: str) -> str:
    run = subprocess.run(["podman", "exec", pi, "bash", "-c", script], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{pi}: the fingerprint's script failed ({run.returncode}): {run.stderr.strip()}")
    return run.stdout


def upper_dir(pi: str) -> Path:
    found = subprocess.run(["podman", "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", pi],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not found or not Path(found).is_dir():
        raise SystemExit(f"{pi}: no overlay upper directory to read ({found!r})")
    return Path(found)


def changed_paths(upper: Path, since: float, prune: set[str], new_entries: set[str]) -> list[str]:
    """The paths under upper (as the Pi names them) changed after `since`, symbolic links as files."""
    changed = []
    pending = [("/", upper)]
    while pending:
        path, real = pending.pop()
        if os.lstat(real).st_mtime > since and path not in new_entries:
            changed.append(path)
        with os.scandir(real) as entries:
            for entry in entries:
                name = os.path.join(path, entry.name)
                if name in prune or entry.name == "__pycache__":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((name, Path(entry.path)))
                # A whiteout (a character device 0:0) is a deletion: its ctime is when it happened.
                elif entry.stat(follow_symlinks=False).st_ctime > since:
                    changed.append(name)
    return sorted(changed)


def state_lines(script: str) -> str:
    # The state's own failures are part of it (the same before and after), never the script's.
    return f"{{ {script}\n}} 2>&1 || true"


def mark(work: Path, state: str, pis: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(len(pis)) as pool:
        # Ansible's temporary directories made before the mark: their first creation during a case (a task that needs
        # one in spite of pipelining) would show up as a change of the home directory itself.
        list(pool.map(lambda pi: on_pi(pi, ANSIBLE_TEMP), pis))
        (work / "mark").touch()
        states = dict(zip(pis, pool.map(lambda pi: on_pi(pi, state_lines(state)), pis), strict=True))
    (work / "states.json").write_text(json.dumps(states))


def changes(work: Path, state: str, prune: list[str], new_entries: list[str], prune_script: str,
            pis: list[str]) -> None:
    since = (work / "mark").stat().st_mtime
    before = json.loads((work / "states.json").read_text())

    def one(pi: str) -> str:
        out = on_pi(pi, f"{state_lines(state)}\necho '{SEPARATOR}'\n{prune_script or 'true'}")
        after, _, extra = out.partition(SEPARATOR + "\n")
        paths = changed_paths(upper_dir(pi), since, set(prune) | set(extra.split()), set(new_entries))
        diff = [line for line in difflib.unified_diff(before[pi].splitlines(), after.splitlines(), lineterm="", n=0)
                if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
        return "\n".join(paths + [f"state {line}" for line in diff])

    with ThreadPoolExecutor(len(pis)) as pool:
        print(json.dumps(dict(zip(pis, pool.map(one, pis), strict=True))))


def main() -> None:
    match sys.argv[1:]:
        case ["mark", work, state, *pis] if pis:
            mark(Path(work), state, pis)
        case ["changes", work, state, prune, new_entries, prune_script, *pis] if pis:
            changes(Path(work), state, json.loads(prune), json.loads(new_entries), prune_script, pis)
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
