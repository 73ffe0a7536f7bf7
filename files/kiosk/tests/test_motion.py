from __future__ import annotations

import cv2
import numpy as np

from pi_kiosk.motion import MotionGate


def scene(seed: int = 0, noise: float = 2.0) -> np.ndarray:
    """A textured empty 640x480 scene with sensor-like noise."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(np.random.default_rng(42).integers(0, 255, (480, 640, 3), dtype=np.uint8), (31, 31), 0)
    return np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)


def with_person(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    cv2.ellipse(out, (320, 220), (90, 120), 0, 0, 360, (150, 170, 210), -1)  # a head and shoulders
    cv2.rectangle(out, (180, 330), (460, 480), (60, 60, 120), -1)
    return out


def test_an_empty_unchanged_scene_is_skipped_after_one_processed_frame() -> None:
    gate = MotionGate(threshold=3.0, recheck_seconds=2.0)
    assert gate.should_process(scene(0), now=0.0)
    gate.processed(faces_found=False, now=0.0)
    assert [gate.should_process(scene(i), now=0.1 * i) for i in range(1, 19)] == [False] * 18


def test_a_person_entering_is_processed_on_the_first_frame_they_appear_in() -> None:
    gate = MotionGate(threshold=3.0, recheck_seconds=2.0)
    assert gate.should_process(scene(0), now=0.0)
    gate.processed(faces_found=False, now=0.0)
    assert not gate.should_process(scene(1), now=0.1)
    assert gate.should_process(with_person(scene(2)), now=0.2)


def test_every_frame_is_processed_while_a_face_is_in_view_even_standing_still() -> None:
    gate = MotionGate(threshold=3.0, recheck_seconds=2.0)
    still = with_person(scene(0))
    for i in range(5):
        assert gate.should_process(still, now=0.1 * i)
        gate.processed(faces_found=True, now=0.1 * i)


def test_an_idle_scene_is_rechecked_after_recheck_seconds() -> None:
    gate = MotionGate(threshold=3.0, recheck_seconds=2.0)
    gate.should_process(scene(0), now=0.0)
    gate.processed(faces_found=False, now=0.0)
    assert not gate.should_process(scene(1), now=1.9)
    assert gate.should_process(scene(2), now=2.0)


def test_slow_change_accumulates_against_the_last_processed_frame() -> None:
    # A person walking in slowly: each frame differs little from the one before, but the reference is
    # the last frame detection ran on, so the change adds up until it counts.
    gate = MotionGate(threshold=3.0, recheck_seconds=60.0)
    empty, person = scene(0, noise=0), with_person(scene(0, noise=0))
    gate.should_process(empty, now=0.0)
    gate.processed(faces_found=False, now=0.0)
    verdicts = [gate.should_process(cv2.addWeighted(empty, 1 - a, person, a, 0), now=0.1 * i)
                for i, a in enumerate(np.linspace(0.05, 1.0, 20), start=1)]
    assert not verdicts[0] and any(verdicts)


def test_threshold_zero_disables_the_gate() -> None:
    gate = MotionGate(threshold=0, recheck_seconds=2.0)
    gate.processed(faces_found=False, now=0.0)
    assert all(gate.should_process(scene(0), now=0.1 * i) for i in range(5))
