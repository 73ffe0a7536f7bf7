"""Runs one bash script as root on several emulated Pis at once (`podman exec`, no Python started on
them) and prints {pi: its stdout} as JSON; fails when the script fails on one.

    python on_pis.py SCRIPT PI...
"""
from __future__ import annotations

import json
import subprocess
import sys


def main() -> None:
    script, pis = sys.argv[1], sys.argv[2:]
    runs = {pi: subprocess.Popen(["podman", "exec", pi, "bash", "-c", script],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pi in pis}
    outputs = {pi: run.communicate() for pi, run in runs.items()}
    failed = {pi: err for pi, (_, err) in outputs.items() if runs[pi].returncode != 0}
    print(json.dumps({pi: out for pi, (out, _) in outputs.items()}))
    if failed:
        sys.exit(f"the script failed on {', '.join(failed)}: {failed}")


if __name__ == "__main__":
    main()
