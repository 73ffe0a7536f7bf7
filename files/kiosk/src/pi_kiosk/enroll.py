"""Local enrollment from photos: each photo must show exactly one usable face."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .align import Aligner
from .capture import read_image
from .detect import Detector
from .embed import Embedder
from .errors import CaptureError, EnrollError
from .match import Gallery
from .store import load_gallery, save_gallery

log = logging.getLogger(__name__)


def embed_photos(photos: Sequence[Path], detector: Detector, embedder: Embedder) -> np.ndarray:
    """One embedding per photo; EnrollError names every photo that is not exactly one face."""
    aligner = Aligner()
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


def enroll(employee_id: str, photos: Sequence[Path], detector: Detector, embedder: Embedder, path: Path,
           replace: bool = False) -> Gallery:
    """Add (or with `replace`, set) the person's embeddings in the local enrollment file."""
    if not employee_id.strip():
        raise EnrollError("--id must not be empty")
    if not photos:
        raise EnrollError("give at least one photo")
    rows = embed_photos(photos, detector, embedder)
    current = load_gallery(path)[0] if path.exists() else Gallery.empty(embedder.dim)
    if len(current) and current.dim != embedder.dim:
        raise EnrollError(f"{path} holds {current.dim}-d embeddings but the model produces {embedder.dim}-d")
    if replace and len(current):
        keep = [i for i, e in enumerate(current.ids) if e != employee_id]
        current = Gallery([current.ids[i] for i in keep], current.matrix[keep])
    updated = current.merged(Gallery([employee_id] * len(photos), rows))
    save_gallery(path, updated)
    log.info("enrolled %s from %d photo(s); %d people in %s", employee_id, len(photos), updated.people, path)
    return updated
