"""Run `pi-kiosk` as the operator or the deploy role does: a separate process, as the service's user.

The commands that write the service's files refuse root (privileges.py), and the tests run as
root (the CI machine's user). As root, the command runs with the uid and gid of `nobody` instead,
keeping one capability, CAP_DAC_OVERRIDE, so that it can still read and write the test's
root-owned temporary files: its euid is really not 0, so the refusal is not in play. Its HOME is
nobody's (`/nonexistent`), like the deploy role's service user's.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import sys

NOBODY = 65534
AS_SERVICE_USER = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=+dac_override",
                   "--ambient-caps=+dac_override", "--", "env", f"HOME={pwd.getpwuid(NOBODY).pw_dir}"]


def command(*args: str) -> list[str]:
    """The command line of `pi-kiosk *args` as the service's user."""
    kiosk = [sys.executable, "-m", "pi_kiosk", *args]
    return ["setpriv", *AS_SERVICE_USER, *kiosk] if os.geteuid() == 0 else kiosk


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=120)


def cli_as_root(*args: str) -> subprocess.CompletedProcess[str]:
    """`pi-kiosk *args` as the test's own user (root on CI)."""
    return subprocess.run([sys.executable, "-m", "pi_kiosk", *args], capture_output=True, text=True, timeout=120)
