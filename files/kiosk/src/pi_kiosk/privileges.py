"""Commands that write the service's files refuse to run as root.

The service runs as its own system user (the deploy role's `pi_kiosk_user`), which owns its
state (the outbox, the synced gallery, `enrolled.npz`) and its cache (ONNX Runtime's optimised
models in `embedder.cache_dir`). Run as root, a command that writes there leaves root-owned files
the service can no longer replace or write (it fails at its next start or write), and has root
open and write files in directories that user controls, where a planted symlink redirects root's
write anywhere. Such a command stops before it reads a model or opens a file, naming the user to
run it as: the owner of the service's state directory (the outbox's).
"""
from __future__ import annotations

import os
import pwd
import shlex
from collections.abc import Sequence
from pathlib import Path

from . import config
from .errors import KioskError, RootError


def refuse_root(command: str, argv: Sequence[str], writes: str, config_path: Path) -> None:
    """RootError if running as root; `writes` says what `command` would write."""
    if os.geteuid() != 0:
        return
    user = service_user(config_path) or "SERVICE-USER"
    raise RootError(f"{command}: refusing to run as root: it writes {writes}, which must stay the "
                    f"service user's; run it as that user: runuser -u {user} -- pi-kiosk {shlex.join(argv)}")


def service_user(config_path: Path) -> str | None:
    """The owner of the configured outbox's directory, if that is a user other than root."""
    try:
        owner = config.load(config_path).outbox.path.parent.stat().st_uid
        return pwd.getpwuid(owner).pw_name if owner != 0 else None
    except (KioskError, OSError, KeyError):  # no such file or directory, an invalid config, an unnamed uid
        return None
