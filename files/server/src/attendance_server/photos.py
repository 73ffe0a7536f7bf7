"""Enrollment from photos with the kiosk's own pipeline (MTCNN, alignment, the embedding model), so the
server's embeddings live in the same space as the kiosks'. Needs the photos extra (pi-fleet-kiosk)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any


class PhotoError(Exception):
    pass


@cache
def _pipeline(model: Path) -> tuple[Any, Any]:
    try:
        from pi_kiosk.detect import MtcnnDetector
        from pi_kiosk.embed import OnnxEmbedder
    except ImportError:
        raise PhotoError("photo enrollment needs the kiosk package: pip install 'pi-fleet-server[photos]'") from None
    return MtcnnDetector(), OnnxEmbedder(model)


def embed(models: dict[str, Path], photos: Sequence[Path]) -> dict[str, list[list[float]]]:
    """Each configured model's embeddings of the photos, by the model's sha256."""
    from pi_kiosk.enroll import embed_photos
    from pi_kiosk.errors import EnrollError

    out: dict[str, list[list[float]]] = {}
    for model in models.values():
        detector, embedder = _pipeline(model)
        try:
            out[embedder.model_sha256] = embed_photos(photos, detector, embedder).tolist()
        except EnrollError as exc:
            raise PhotoError(str(exc)) from None
    return out
