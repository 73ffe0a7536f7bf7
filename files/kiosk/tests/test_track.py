from __future__ import annotations

import cv2
import numpy as np
import pytest

from pi_kiosk.detect import MtcnnDetector
from pi_kiosk.track import Tracker


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
