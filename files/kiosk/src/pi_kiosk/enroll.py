"""Local enrollment from photos: each photo must show exactly one usable face."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .align import Aligner
from .capture import read_image
from .detect import Detector
from .embed import Embedder
from .errors import CaptureError, EnrollError
from .match import Gallery
from .store import load_for_model, load_gallery, locked, model_label, save_gallery

log = logging.getLogger(__name__)


def embed_photos(photos: Sequence[Path], detector: Detector, embedder: Embedder) -> np.ndarray:
    """One embedding per photo; EnrollError names every photo that is not exactly one face."""
    aligner = Aligner(embedder.card)  # the card's crop size and template
    rows = np.empty((len(photos), embedder.dim), dtype=np.float32)
    problems: list[str] = []
    for i, photo in enumerate(photos):
        try:
            image = read_image(photo)
        except CaptureError as exc:
            problems.append(str(exc))
            continue
        faces = detector.detect(image)
        if len(faces) != 1:
            problems.append(f"{photo}: {len(faces)} usable faces found, need exactly one "
                            "(check detector.min_face_size and detector.score_threshold)")
            continue
        rows[i] = embedder.embed(aligner.align(image, faces[0].landmarks))
    if problems:
        raise EnrollError("nothing enrolled:\n  " + "\n  ".join(problems))
    return rows


def load_enrolled(path: Path, embedder: Embedder) -> Gallery:
    """Embeddings enrolled on this kiosk with this model (empty if none)."""
    stored = load_for_model(path, embedder.model_sha256, embedder.card,
                            "re-enroll everyone with this model: pi-kiosk enroll --new-model (keeps that file)")
    return Gallery.empty(embedder.dim, embedder.card) if stored is None else stored.gallery


def set_aside(path: Path, model: str) -> Path:
    """Rename another model's enrollment file to a free name carrying that model's short hash."""
    tag = model[:12] or "no-model"
    n = 0
    while True:
        aside = path.with_name(f"{path.stem}.{tag}{f'.{n}' if n else ''}{path.suffix}")
        try:
            os.link(path, aside)  # unlike a rename, never replaces an existing file
        except FileExistsError:
            n += 1
            continue
        os.unlink(path)
        return aside


def enroll(employee_id: str, photos: Sequence[Path], detector: Detector, embedder: Embedder, path: Path, *,
           replace: bool = False, new_model: bool = False) -> Gallery:
    """Add (or with `replace`, set) the person's embeddings in the local enrollment file.

    A file of another model is refused, or with `new_model` kept beside it (set_aside) and a new
    one started: nothing recorded is lost."""
    if not employee_id.strip():
        raise EnrollError("--id must not be empty")
    if not photos:
        raise EnrollError("give at least one photo")
    rows = embed_photos(photos, detector, embedder)
    with locked(path):  # the service and `pi-kiosk forget` rewrite the file too
        return _add(employee_id, rows, embedder, path, replace, new_model)


def _add(employee_id: str, rows: np.ndarray, embedder: Embedder, path: Path, replace: bool,
         new_model: bool) -> Gallery:
    current = Gallery.empty(embedder.dim, embedder.card)
    if path.exists():
        stored = load_gallery(path, embedder.card)
        if stored.model == embedder.model_sha256:
            current = stored.gallery
        elif not new_model:
            raise EnrollError(f"{path} holds enrollments made with {model_label(stored.model)}, not with the "
                              f"configured model {embedder.model_sha256[:12]}: they cannot be mixed. To start over "
                              "with this model, add --new-model (that file is kept under a name with its model's "
                              "hash) and enroll everyone again")
        else:
            aside = set_aside(path, stored.model)
            log.warning("enrollments of %s kept in %s; starting %s for model %s", model_label(stored.model), aside,
                        path, embedder.model_sha256[:12])
    if replace:
        current = current.without({employee_id})
    updated = current.merged(Gallery([employee_id] * len(rows), rows, embedder.card))
    save_gallery(path, updated, embedder.model_sha256)
    log.info("enrolled %s from %d photo(s); %d people in %s", employee_id, len(rows), updated.people, path)
    return updated
