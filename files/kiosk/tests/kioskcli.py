"""Run `pi-kiosk` as the operator or the deploy role does: a separate process."""
from __future__ import annotations

import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pi_kiosk", *args], capture_output=True, text=True, timeout=120)
