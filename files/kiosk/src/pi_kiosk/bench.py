"""`pi-kiosk bench`: per-stage latency and frames per second on this device, with its config."""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import numpy.typing as npt

from .cards import Card
from .cards import threshold as card_threshold
from .detect import Detector
from .embed import Embedder
from .match import Gallery
from .pipeline import STAGES, Pipeline

U8 = npt.NDArray[np.uint8]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    p50, p95 = np.percentile(np.asarray(samples) * 1000.0, [50, 95])
    return float(p50), float(p95)


def random_gallery(size: int, dim: int, card: Card, seed: int = 1) -> Gallery:
    """`size` random enrolled embeddings: matching cost depends on the count, not the values."""
    vectors = np.random.default_rng(seed).standard_normal((size, dim)).astype(np.float32)
    return Gallery([f"E{i:05d}" for i in range(size)], vectors, card)


def run(frame: U8, detector: Detector, embedder: Embedder, *, frames: int = 50, gallery_size: int = 1000,
        threshold: float | None = None) -> str:
    """`threshold`: matching.threshold, or None for the card's published one."""
    samples: dict[str, list[float]] = defaultdict(list)
    card = embedder.card
    pipeline = Pipeline(detector, embedder, random_gallery(gallery_size, embedder.dim, card),
                        card_threshold(card, threshold),
                        lambda stage, seconds: samples[stage].append(seconds))
    faces = len(pipeline.process(frame))  # warm-up: first runs allocate and plan
    samples.clear()
    totals: list[float] = []
    for _ in range(frames):
        t0 = time.perf_counter()
        pipeline.process(frame)
        totals.append(time.perf_counter() - t0)
    lines = [f"frame {frame.shape[1]}x{frame.shape[0]}, {faces} face(s), {embedder.dim}-d embeddings "
             f"({card.origin}: {card.width}x{card.height}, {card.metric}), gallery of {gallery_size}, {frames} frames",
             f"{'stage':<8} {'p50 ms':>8} {'p95 ms':>8}"]
    for stage in (*STAGES, "frame"):
        data = totals if stage == "frame" else samples.get(stage)
        if data:
            p50, p95 = percentiles(data)
            lines.append(f"{stage:<8} {p50:8.2f} {p95:8.2f}")
    lines.append(f"frames/s {len(totals) / sum(totals):.1f}")
    return "\n".join(lines)
