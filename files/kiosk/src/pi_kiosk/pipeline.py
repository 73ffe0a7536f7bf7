"""One frame through detect -> align -> embed -> match, with each stage timed.

On a camera stream (a Tracker as detector) a face followed from the previous frame keeps the
identity it was matched to, without a new embedding: the same person, followed for at most
detector.track_frames - 1 frames before the full cascade finds her again and she is matched
afresh. A face that matched nobody is embedded on every frame, so that she is recognised as soon
as she faces the camera.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .align import Aligner
from .detect import Detector, Face
from .embed import Embedder
from .match import Gallery, Match
from .track import Tracker

U8 = npt.NDArray[np.uint8]
STAGES = ("detect", "align", "embed", "match")


@dataclass(frozen=True)
class Recognition:
    face: Face
    match: Match


def no_timing(stage: str, seconds: float) -> None:
    """The default observer: stage timings go nowhere."""
    pass


class Pipeline:
    def __init__(self, detector: Detector, embedder: Embedder, gallery: Gallery, threshold: float,
                 observe: Callable[[str, float], None] = no_timing) -> None:
        self.detector = detector
        self.embedder = embedder
        self.aligner = Aligner(embedder.card)  # the embedder's card: its crop size and template
        # Replaced whole by the sync thread; a reference swap is atomic, so no lock is needed.
        self.gallery = gallery
        self.threshold = threshold  # in the card's metric (cards.threshold)
        self.observe = observe
        self._previous: list[Recognition] = []

    def process(self, frame: U8) -> list[Recognition]:
        clock = time.perf_counter
        t0 = clock()
        faces = self.detector.detect(frame)
        t1 = clock()
        self.observe("detect", t1 - t0)
        gallery = self.gallery
        followed = self._previous if isinstance(self.detector, Tracker) and self.detector.followed else []
        results: list[Recognition] = []
        for i, face in enumerate(faces):
            # Only while the gallery still holds the person: one erased meanwhile is not reported again.
            if i < len(followed) and followed[i].match.employee_id in gallery:
                results.append(Recognition(face, followed[i].match))
                continue
            t0 = clock()
            aligned = self.aligner.align(frame, face.landmarks)
            t1 = clock()
            embedding = self.embedder.embed(aligned)
            t2 = clock()
            match = gallery.match(embedding, self.threshold)
            t3 = clock()
            self.observe("align", t1 - t0)
            self.observe("embed", t2 - t1)
            self.observe("match", t3 - t2)
            results.append(Recognition(face, match))
        self._previous = results
        return results
