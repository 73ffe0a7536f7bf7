from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pi_kiosk.align import Aligner
from pi_kiosk.cards import builtin
from pi_kiosk.detect import MtcnnDetector
from pi_kiosk.embed import OnnxEmbedder
from pi_kiosk.match import Gallery
from pi_kiosk.pipeline import Pipeline
from pi_kiosk.track import Tracker

ARCFACE = builtin("arcface")


class Counting(MtcnnDetector):
    """The real detector, counting full cascades and tracked passes."""

    def __init__(self) -> None:
        super().__init__(min_face_size=40)
        self.calls: list[str] = []

    def detect(self, frame: np.ndarray, near: np.ndarray | None = None) -> list:  # type: ignore[override]
        self.calls.append("full" if near is None else "tracked")
        return super().detect(frame, near)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
                          borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def detector() -> Counting:
    return Counting()


def test_a_found_face_is_followed_without_the_pyramid_and_lands_where_the_full_cascade_puts_it(
        detector: Counting, astronaut: np.ndarray) -> None:
    tracker = Tracker(detector, full_every=5)
    truth = MtcnnDetector.detect(detector, astronaut)[0].landmarks
    moves = [(4 * i, 2 * i) for i in range(6)]  # she moves a little each frame
    frames = [shifted(astronaut, dx, dy) for dx, dy in moves]
    detector.calls.clear()
    tracked = [tracker.detect(f) for f in frames]
    assert detector.calls == ["full", "tracked", "tracked", "tracked", "tracked", "full"]
    full = [MtcnnDetector.detect(detector, f) for f in frames]
    assert [len(faces) for faces in tracked] == [len(faces) for faces in full] == [1] * 6
    # Her landmarks moved with her: the tracked ones are as close to where they are as the full cascade's
    # own (which wander by a pixel or two from frame to frame), so the alignment is as good.
    full_error = max(np.abs(f[0].landmarks - move - truth).max() for f, move in zip(full, moves, strict=True))
    tracked_error = max(np.abs(f[0].landmarks - move - truth).max() for f, move in zip(tracked, moves, strict=True))
    assert tracked_error <= full_error + 0.5, (tracked_error, full_error)


def test_a_lost_face_runs_the_full_cascade_in_the_same_frame(detector: Counting, astronaut: np.ndarray) -> None:
    tracker = Tracker(detector, full_every=5)
    assert len(tracker.detect(astronaut)) == 1
    detector.calls.clear()
    empty = cv2.GaussianBlur(astronaut, (0, 0), 25)
    assert tracker.detect(empty) == []
    assert detector.calls == ["tracked", "full"]
    detector.calls.clear()
    assert len(tracker.detect(astronaut)) == 1  # nothing tracked: found again by the full cascade
    assert detector.calls == ["full"]


def test_full_every_one_is_the_full_cascade_on_every_frame(detector: Counting, astronaut: np.ndarray) -> None:
    tracker = Tracker(detector, full_every=1)
    detector.calls.clear()
    for _ in range(3):
        tracker.detect(astronaut)
    assert detector.calls == ["full"] * 3


class CountingEmbedder:
    """The real embedder, counting the faces it embeds."""

    def __init__(self, model: Path) -> None:
        self.inner = OnnxEmbedder(model, ARCFACE)
        self.card, self.dim, self.model_sha256, self.threads = (
            self.inner.card, self.inner.dim, self.inner.model_sha256, self.inner.threads)
        self.calls = 0

    def embed(self, face: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.embed(face)


def stream_of(astronaut: np.ndarray) -> list[np.ndarray]:
    return [shifted(astronaut, 3 * i, i) for i in range(7)]


def test_a_recognised_face_keeps_her_identity_while_followed_and_is_matched_afresh_by_the_full_cascade(
        detector: Counting, astronaut: np.ndarray, mobilefacenet: Path) -> None:
    embedder = CountingEmbedder(mobilefacenet)
    frame = astronaut
    face = MtcnnDetector.detect(detector, frame)[0]
    her = embedder.embed(Aligner(ARCFACE).align(frame, face.landmarks)).copy()
    pipeline = Pipeline(Tracker(detector, full_every=5), embedder, Gallery(["E1"], her[None], ARCFACE), 0.4)
    embedder.calls = 0
    detector.calls.clear()
    results = [pipeline.process(f) for f in stream_of(astronaut)]
    assert detector.calls == ["full"] + ["tracked"] * 4 + ["full", "tracked"]
    assert embedder.calls == 2  # the two full cascades, not the five frames she was followed in
    assert [[r.match.employee_id for r in rs] for rs in results] == [["E1"]] * 7
    # The boxes are this frame's (she moved), only the identity is carried.
    assert results[3][0].face.box[0] > results[0][0].face.box[0] + 5


def test_a_face_that_matched_nobody_is_embedded_on_every_frame(
        detector: Counting, astronaut: np.ndarray, mobilefacenet: Path) -> None:
    embedder = CountingEmbedder(mobilefacenet)
    pipeline = Pipeline(Tracker(detector, full_every=5), embedder, Gallery.empty(embedder.dim, ARCFACE), 0.4)
    embedder.calls = 0
    results = [pipeline.process(f) for f in stream_of(astronaut)]
    assert embedder.calls == 7
    assert [[r.match.employee_id for r in rs] for rs in results] == [[None]] * 7


def test_photos_are_embedded_every_time(detector: Counting, astronaut: np.ndarray, mobilefacenet: Path) -> None:
    embedder = CountingEmbedder(mobilefacenet)
    face = MtcnnDetector.detect(detector, astronaut)[0]
    her = embedder.embed(Aligner(ARCFACE).align(astronaut, face.landmarks)).copy()
    pipeline = Pipeline(detector, embedder, Gallery(["E1"], her[None], ARCFACE), 0.4)  # no Tracker: unrelated photos
    embedder.calls = 0
    for f in stream_of(astronaut)[:3]:
        assert [r.match.employee_id for r in pipeline.process(f)] == ["E1"]
    assert embedder.calls == 3
