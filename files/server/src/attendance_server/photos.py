"""Enrollment from photos with the kiosk's own pipeline (MTCNN, alignment, the embedding model), so the
server's embeddings live in the same space as the kiosks'. Each model is run as its card says (the same card
its kiosks are configured with: alignment template and size, input scaling, normalisation). Needs the photos
extra (pi-fleet-kiosk)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .config import EmbeddingModel


class PhotoError(Exception):
    pass


@cache
def _pipeline(model: Path, card: str, name: str) -> tuple[Any, Any]:
    try:
        from pi_kiosk.cards import resolve
        from pi_kiosk.detect import MtcnnDetector
        from pi_kiosk.embed import OnnxEmbedder
        from pi_kiosk.errors import ModelError
    except ImportError:
        raise PhotoError("photo enrollment needs the kiosk package: pip install 'pi-fleet-server[photos]'") from None
    try:
        return MtcnnDetector(), OnnxEmbedder(model, resolve(card, key=f"models.{name}.card"),
                                             key=f"models.{name}.path")
    except ModelError as exc:  # the card does not fit the model, or the file is not one: the settings' fault
        raise PhotoError(f"the server's settings: {exc}") from None


def embed(models: dict[str, EmbeddingModel], photos: Sequence[Path]) -> dict[str, list[list[float]]]:
    """Each configured model's embeddings of the photos, by the model's sha256."""
    from pi_kiosk.enroll import embed_photos
    from pi_kiosk.errors import EnrollError

    out: dict[str, list[list[float]]] = {}
    for name, model in models.items():
        detector, embedder = _pipeline(model.path, model.card, name)
        try:
            out[embedder.model_sha256] = embed_photos(photos, detector, embedder).tolist()
        except EnrollError as exc:
            raise PhotoError(str(exc)) from None
    return out
