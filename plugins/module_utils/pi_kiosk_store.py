"""The kiosk's deployment area on a Pi, shared by the pi_kiosk modules.

    ROOT/releases/<id>/         a virtualenv built at its final path; complete once MARKER exists
    ROOT/current -> releases/<id>   switched by an atomic rename
    ROOT/wheels/<sha256>/<file> the content-addressed wheel cache (a release ships only what is missing)
    ROOT/files/<sha256>         content-addressed copies of deployed files (config, token, unit)
    ROOT/state.json             the live deployment, the committed ones (oldest first), failed attempts, and a
                                switch under way (written before it starts, cleared when it is done)

A deployment is a release id plus the sha256 of each deployed file. It is committed only after
the health gate passed; rollback and pruning follow the order of commits, never file times.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MARKER = ".pi-kiosk-release"
STATE_VERSION = 1


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, uid: int = -1, gid: int = -1) -> None:
    """Replace `path` by `data`: after a power cut it is the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def install_copy(src: Path, dest: Path) -> None:
    """Copy `src` over `dest` atomically, with the source's mode and owner."""
    st = src.stat()
    write_atomic(dest, src.read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid)


def symlink_atomic(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


class Store:
    def __init__(self, root: str | Path, secrets: Iterable[str] = ()) -> None:
        self.root = Path(root)
        # Deployed paths that hold secrets: installed, never kept in files/ nor recorded in the state.
        self.secrets = frozenset(secrets)
        self.releases = self.root / "releases"
        self.current = self.root / "current"
        self.wheels = self.root / "wheels"
        self.pip = self.root / "pip"
        self.files = self.root / "files"
        self.state_path = self.root / "state.json"

    # -- releases and wheels -------------------------------------------------------------------
    def release_dir(self, release: str) -> Path:
        return self.releases / release

    def release_complete(self, release: str) -> bool:
        return (self.release_dir(release) / MARKER).is_file()

    def release_ids(self) -> tuple[list[str], list[str]]:
        """(complete, partial) release ids."""
        if not self.releases.is_dir():
            return [], []
        complete, partial = [], []
        for entry in sorted(self.releases.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                (complete if self.release_complete(entry.name) else partial).append(entry.name)
        return complete, partial

    def current_release(self) -> str | None:
        if not self.current.is_symlink():
            return None
        return Path(os.readlink(self.current)).name

    def wheel_path(self, sha256: str, filename: str) -> Path:
        return self.wheels / sha256 / filename

    def wheel_hashes(self) -> list[str]:
        if not self.wheels.is_dir():
            return []
        return sorted(d.name for d in self.wheels.iterdir()
                      if d.is_dir() and not d.name.startswith(".") and any(d.glob("*.whl")))

    # -- deployed files ------------------------------------------------------------------------
    def stored_file(self, sha256: str) -> Path:
        return self.files / sha256

    def keep_file(self, src: Path) -> str:
        """Copy a candidate into the file store (mode and owner kept); its sha256."""
        sha = sha256_file(src)
        dest = self.stored_file(sha)
        self.files.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.files.chmod(0o700)  # as made by versions that left it open to all
        if not dest.exists():
            install_copy(src, dest)
        return sha

    # -- state ---------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("version", STATE_VERSION)
        state.setdefault("live", None)
        state.setdefault("committed", [])
        state.setdefault("failed", [])
        state.setdefault("switching", None)
        for dep in [state["live"], state["switching"], *state["committed"], *state["failed"]]:
            if dep:
                dep["files"] = {path: sha for path, sha in dep["files"].items() if path not in self.secrets}
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.state_path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(), 0o600)


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two deployments are the same when release and files agree (times do not count)."""
    return bool(a and b) and a["release"] == b["release"] and a["files"] == b["files"]  # type: ignore[index]


def last_known_good(state: dict[str, Any], other_than: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newest committed deployment that differs from `other_than` (by commit order)."""
    for dep in reversed(state["committed"]):
        if not same(dep, other_than):
            return dep  # type: ignore[no-any-return]
    return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class UnsafePath(ValueError):
    """A path root must not act on: a symlink someone other than root could have placed, where a directory is
    expected."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's ELOOP limit


def _trusted_link(link: os.stat_result, parent: os.stat_result) -> bool:
    """sshd's StrictModes rule: root follows a link only if root made it in a directory only root can change."""
    return link.st_uid == 0 and parent.st_uid == 0 and not parent.st_mode & 0o022


def open_dir(path: Path) -> int:
    """A descriptor of the directory `path`, reached one component at a time from / without following a link that
    anyone but root could have placed (a service user renaming its `models` and linking another directory in its
    place must not make root list or delete there). Raises UnsafePath, or FileNotFoundError when it is absent."""
    parts = list(Path(os.path.abspath(path)).parts[1:])
    done = Path("/")
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    try:
        while parts:
            part = parts.pop(0)
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if not _trusted_link(st, os.fstat(fd)):
                    raise UnsafePath(f"{path}: {done / part} is a symlink that a user other than root could have "
                                     "placed; refusing to follow it as root (replace it with a directory)")
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePath(f"{path}: too many levels of symlinks")
                target = Path(os.path.normpath(done / os.readlink(part, dir_fd=fd)))
                os.close(fd)
                fd = os.open("/", _DIR_FLAGS)
                done, parts = Path("/"), list(target.parts[1:]) + parts
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{path}: {done / part} is not a directory")
            child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, done = child, done / part
    except BaseException:
        os.close(fd)
        raise
    return fd


def list_dir(path: Path) -> list[str]:
    """The names in directory `path` (none when it is absent), read through open_dir."""
    try:
        fd = open_dir(path)
    except FileNotFoundError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove `path` (a file, a link or a whole tree) without following any link on the way: its parent is opened
    through open_dir, the tree removed relative to it (shutil.rmtree with dir_fd never follows links)."""
    try:
        fd = open_dir(path.parent)
    except FileNotFoundError:
        return
    try:
        st = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path.name, dir_fd=fd)
        else:
            os.unlink(path.name, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
