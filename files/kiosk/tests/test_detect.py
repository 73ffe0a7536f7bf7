from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import pytest

from pi_kiosk.config import DetectorConfig
from pi_kiosk.detect import MtcnnDetector, load_detector, nms
from pi_kiosk.errors import ModelError


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    return MtcnnDetector(min_face_size=40, score_threshold=0.9)


def test_finds_the_one_face_in_the_astronaut_photo(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    # Eileen Collins' face: box around x 180-265, y 60-175 in the 512x512 photo.
    x1, y1, x2, y2 = face.box
    assert 165 < x1 < 195 and 245 < x2 < 280 and 45 < y1 < 75 and 160 < y2 < 190
    eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # image left-to-right
    assert np.all((eyes[:, 1] > 95) & (eyes[:, 1] < 110))
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    assert eyes[0, 0] < nose[0] < eyes[1, 0]
    assert np.linalg.norm(eyes[0] - [203, 100]) < 6 and np.linalg.norm(eyes[1] - [246, 102]) < 6


def test_finds_it_in_a_640x480_kiosk_frame(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, 80:560] = cv2.resize(astronaut, (480, 480))
    faces = detector.detect(frame)
    assert len(faces) == 1
    cx = (faces[0].box[0] + faces[0].box[2]) / 2
    assert 80 + 200 < cx < 80 + 220  # face centre x ~224 of 512, scaled 480/512, shifted by 80


def test_no_face_in_noise_or_flat_frames(detector: MtcnnDetector) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
    assert detector.detect(np.full((480, 640, 3), 128, dtype=np.uint8)) == []


def test_min_face_size_and_score_are_settings(astronaut: np.ndarray) -> None:
    assert MtcnnDetector(min_face_size=150).detect(astronaut) == []  # the face is ~90 px
    assert len(MtcnnDetector(min_face_size=60).detect(astronaut)) == 1
    assert MtcnnDetector(min_face_size=40, score_threshold=1.0).detect(astronaut) == []


def test_rejects_a_frame_that_is_not_bgr(detector: MtcnnDetector) -> None:
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        detector.detect(np.zeros((100, 100), dtype=np.uint8))


def test_nms_union_and_min() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 2, 6, 6]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)
    assert nms(boxes, scores, 0.5, "union").tolist() == [3, 0, 2]
    # "min" divides by the smaller box: the small box inside the big one suppresses it.
    assert nms(boxes, scores, 0.5, "min").tolist() == [3, 2]


def reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str) -> list[int]:
    """Greedy NMS written plainly, one box at a time."""
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep: list[int] = []
    for i in np.argsort(scores)[::-1]:
        ok = True
        for j in keep:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1)
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1)
            denom = min(area[i], area[j]) if mode == "min" else area[i] + area[j] - w * h
            ok = ok and w * h / denom <= threshold
        if ok:
            keep.append(int(i))
    return keep


@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_matches_the_plain_greedy_algorithm(mode: Literal["union", "min"]) -> None:
    rng = np.random.default_rng(4)
    for n in (0, 1, 2, 40, 300):
        corner = rng.uniform(0, 200, (n, 2))
        boxes = np.hstack([corner, corner + rng.uniform(5, 60, (n, 2))]).astype(np.float32)
        scores = rng.permutation(n).astype(np.float32)  # distinct: the order is unambiguous
        assert nms(boxes, scores, 0.5, mode).tolist() == reference_nms(boxes, scores, 0.5, mode)


def test_yunet_needs_its_model_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = DetectorConfig(backend="yunet", model_path=tmp_path / "yunet.onnx")
    with pytest.raises(ModelError, match=r"detector.model_path = .*yunet.onnx'?: model file not found"):
        load_detector(cfg)


def test_yunet_refuses_a_file_that_is_not_a_yunet_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "yunet.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(ModelError, match="not a YuNet model OpenCV can load"):
        load_detector(DetectorConfig(backend="yunet", model_path=bad))
