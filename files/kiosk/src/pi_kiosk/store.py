"""Embedding files on disk: biometric data, so owner-only (0600) and replaced atomically.

A write goes to a temporary file in the same directory, is fsynced, renamed over the old file
and the directory fsynced: after a power cut the file is either the old or the new version,
never a torn one, and a kiosk can always start offline from the last good copy. Each file
records the sha256 of the embedding model whose vectors it holds.

A file that is read, changed and written back (an enrollment added, a person erased) is changed under
`locked(path)`: the service (erasures from the sync) and the commands (`enroll`, `forget`) may do so at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cards import Card
from .errors import GalleryError
from .match import Gallery

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for a read-modify-write of `path`: an flock on the empty file `.<name>.lock` beside it
    (a lock on `path` itself would be lost when the write renames a new file over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_ids(path: Path, ids: Collection[str]) -> dict[str, int]:
    """Rewrite an embeddings file of any model without the rows of `ids` (under locked(path)); returns the rows
    removed per id. Arrays are copied as stored, never renormalised: the other people's rows stay bit for bit."""
    with locked(path):
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise GalleryError(f"{path}: not a readable embeddings file: {exc}") from None
        stored = [str(i) for i in arrays["ids"]]
        removed = {employee: stored.count(employee) for employee in set(ids) & set(stored)}
        if removed:
            keep = [n for n, employee in enumerate(stored) if employee not in removed]
            arrays["ids"], arrays["vectors"] = arrays["ids"][keep], arrays["vectors"][keep]
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            write_private(path, buf.getvalue())
    return removed


@dataclass(frozen=True)
class StoredGallery:
    gallery: Gallery
    model: str  # sha256 of the model that computed the vectors; "" in files of pi-kiosk 0.1
    etag: str = ""


def model_label(sha256: str) -> str:
    return f"model {sha256[:12]}" if sha256 else "an unrecorded model (a file of pi-kiosk 0.1)"


def save_gallery(path: Path, gallery: Gallery, model: str, etag: str = "") -> None:
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(gallery.ids, dtype=np.str_), vectors=gallery.matrix, model=np.str_(model),
             etag=np.str_(etag))
    write_private(path, buf.getvalue())


def load_gallery(path: Path, card: Card) -> StoredGallery:
    """The file's embeddings as a gallery matched by `card` (the card of the model they are checked
    against: load_for_model)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            vectors = data["vectors"]
            model = str(data["model"]) if "model" in data.files else ""
            etag = str(data["etag"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise GalleryError(f"{path}: not a readable embeddings file: {exc}") from None
    if vectors.ndim != 2:
        raise GalleryError(f"{path}: embeddings have shape {vectors.shape}, expected (rows, dim)")
    return StoredGallery(Gallery(ids, vectors, card), model, etag)


def load_for_model(path: Path, model: str, card: Card, remedy: str) -> StoredGallery | None:
    """The file's embeddings if it exists and was written for `model`. A file of another model
    (vectors of another space: strangers could match) is not used, and one warning says so and
    what to do (`remedy`); the file itself is left alone."""
    if not path.exists():
        return None
    stored = load_gallery(path, card)
    if stored.model != model:
        log.warning("%s holds embeddings of %s, not of the configured model %s: not used; %s",
                    path, model_label(stored.model), model[:12], remedy)
        return None
    return stored
