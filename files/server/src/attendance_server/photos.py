"""Enrollment from photos with the kiosk's own pipeline (MTCNN, alignment, the embedding model), so the
server's embeddings live in the same space as the kiosks'. Each model is run as its card says (the same card
its kiosks are configured with: alignment template and size, input scaling, normalisation). Needs the photos
extra (pi-fleet-kiosk); `image_size` does not."""
from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .config import EmbeddingModel

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG's start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC, which share the range): the frame's size.
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and the restart markers (and SOI, already passed).
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class PhotoError(Exception):
    pass


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG file declares in its header, read without decoding anything; None for any
    other file. Not OpenCV: it has no header-only read, and its own cap (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 pixels
    by default: gigabytes) is read from the environment once, by whichever import of cv2 comes first, and a photo
    above it fails as an unreadable one. Only these two formats, not OpenCV's dozen: fewer decoders see uploads."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":  # IHDR: always the first chunk
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The first frame header's size, walking the segments from the start (fill bytes skipped); None when the
    file ends, or its scan starts, before one."""
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        if marker == 0xDA:  # start of scan: no frame header before the image data
            return None
        if marker == 0xFF:
            at += 1
        elif marker in JPEG_STANDALONE:
            at += 2
        else:
            at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return None


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


def model_names(models: dict[str, EmbeddingModel]) -> dict[str, str]:
    """Each configured model's name by its file's sha256, which names its embeddings in the database: the pages
    show names, not hashes. {} without the photos extra; a model file that cannot be read is left out."""
    try:
        from pi_kiosk.runtime import file_sha256
    except ImportError:
        return {}
    names = {}
    for name, model in models.items():
        try:
            names[file_sha256(model.path)] = name
        except OSError:
            continue
    return names
