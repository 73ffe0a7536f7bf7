"""The recognizer assembled from its configuration, in one place for the service and the CLI:
the models, the attendance server's client, the gallery (synced and enrolled) and the pipeline."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import cards, csi
from .client import ServerClient
from .config import Config, server_token
from .detect import Detector, MtcnnDetector, load_detector
from .embed import Embedder, load_embedder
from .enroll import load_enrolled
from .match import Gallery
from .pipeline import Pipeline, no_timing
from .sync import MB, GallerySync
from .track import Tracker


def load_models(cfg: Config) -> tuple[Detector, Embedder]:
    """The detector and the embedder (which runs one inference at load)."""
    embedder = load_embedder(cfg.embedder)
    return load_detector(cfg.detector), embedder


@dataclass
class Recognizer:
    server: ServerClient
    sync: GallerySync
    enrolled: Gallery  # enrolled on this kiosk (pi-kiosk enroll): merged into every synced gallery
    pipeline: Pipeline


def assemble(cfg: Config, *, offline: bool = False, stream: bool = False,
             observe: Callable[[str, float], None] = no_timing) -> Recognizer:
    """Models loaded, the cached gallery merged with the kiosk's own enrollments. `offline`: no token
    is read (a deploy's smoke test runs before the token file is in place). `stream`: frames of one
    camera, so MTCNN follows the faces it found (never for photos, which are unrelated to each other).
    What the kiosk lacks for its camera is refused first, before the models take their time."""
    csi.require_tool(cfg.camera.source)
    detector, embedder = load_models(cfg)
    if stream and isinstance(detector, MtcnnDetector):
        detector = Tracker(detector, cfg.detector.track_frames)
    server = ServerClient(cfg.server.url, token="" if offline else server_token(cfg.server),
                          timeout=cfg.server.timeout_seconds)
    sync = GallerySync(server, cfg.sync.cache_path, embedder.dim, embedder.model_sha256, embedder.card,
                       max_bytes=cfg.sync.max_response_mb * MB)
    enrolled = load_enrolled(cfg.sync.enrolled_path, embedder)
    gallery = sync.load_cached().merged(enrolled)
    return Recognizer(server, sync, enrolled, Pipeline(detector, embedder, gallery, threshold(cfg, embedder), observe))


def threshold(cfg: Config, embedder: Embedder) -> float:
    """matching.threshold, or the card's published one; in the card's metric."""
    return cards.threshold(embedder.card, cfg.matching.threshold)
