"""Embedding files on disk: biometric data, so owner-only (0600) and replaced atomically.

A write goes to a temporary file in the same directory, is fsynced, renamed over the old file
and the directory fsynced: after a power cut the file is either the old or the new version,
never a torn one, and a kiosk can always start offline from the last good copy.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import GalleryError
from .match import Gallery


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_gallery(path: Path, gallery: Gallery, etag: str = "") -> None:
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(gallery.ids, dtype=np.str_), vectors=gallery.matrix, etag=np.str_(etag))
    write_private(path, buf.getvalue())


def load_gallery(path: Path) -> tuple[Gallery, str]:
    """(gallery, etag) from a file written by save_gallery."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            vectors = data["vectors"]
            etag = str(data["etag"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise GalleryError(f"{path}: not a readable embeddings file: {exc}") from None
    if vectors.ndim != 2:
        raise GalleryError(f"{path}: embeddings have shape {vectors.shape}, expected (rows, dim)")
    return Gallery(ids, vectors), etag
