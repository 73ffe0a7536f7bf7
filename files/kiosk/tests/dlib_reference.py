"""dlib's side of the parity test and of benchmarks/dlib_alignment.py: run by the Python of a
separate venv that has dlib (`dlib-bin`) and numpy only, never imported by the kiosk's.

    PARITY_PYTHON dlib_reference.py REQUEST.npz RESPONSE.npz

REQUEST.npz: `predictor` and `recognizer` (paths of shape_predictor_5_face_landmarks.dat and
dlib_face_recognition_resnet_model_v1.dat, as 0-d string arrays); `image_<i>` (HxWx3 uint8 RGB)
for i = 0..n-1, each optionally with `box_<i>` (x1, y1, x2, y2: the face's box when dlib's HOG
detector finds none); `chip_<j>` (150x150x3 uint8 RGB) for j = 0..m-1.

RESPONSE.npz, per image: `found_<i>` (a face was landmarked), and if so `detected_<i>` (by dlib's
detector, not from the given box), `landmarks_<i>` (dlib's 5
points, 5x2), `chip_<i>` (dlib.get_face_chip(size=150, padding=0.25)), `to_chip_<i>` (2x3: the
image -> chip affine map dlib samples that chip with, as dlib's get_mapping_to_chip builds it) and
`descriptor_<i>` (of that chip); per given chip `chip_descriptor_<j>`; and `dlib_version`.
"""
from __future__ import annotations

import sys

import dlib
import numpy as np

SIZE, PADDING = 150, 0.25


def _rotate(center: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = p - center
    return center + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])


def to_chip(details: dlib.chip_details) -> np.ndarray:
    """dlib's get_mapping_to_chip: the rectangle's rotated corners onto the chip's corners."""
    r = details.rect
    tl, tr, br = (np.array([p.x, p.y]) for p in (r.tl_corner(), r.tr_corner(), r.br_corner()))
    center = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    src = np.array([_rotate(center, p, details.angle) for p in (tl, tr, br)])
    dst = np.array([[0.0, 0.0], [details.cols - 1, 0.0], [details.cols - 1, details.rows - 1]])
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T  # 2x3


def main(request: str, response: str) -> None:
    req = np.load(request, allow_pickle=False)
    predictor = dlib.shape_predictor(str(req["predictor"]))
    recognizer = dlib.face_recognition_model_v1(str(req["recognizer"]))
    detector = dlib.get_frontal_face_detector()
    out: dict[str, np.ndarray] = {"dlib_version": np.array(dlib.__version__)}
    i = 0
    while f"image_{i}" in req:
        image = np.ascontiguousarray(req[f"image_{i}"])
        faces = sorted(detector(image, 0), key=lambda r: -r.area())
        if faces:
            rect = faces[0]
        elif f"box_{i}" in req:
            rect = dlib.rectangle(*(round(float(v)) for v in req[f"box_{i}"]))
        else:
            out[f"found_{i}"] = np.array(False)
            i += 1
            continue
        shape = predictor(image, rect)
        chip = dlib.get_face_chip(image, shape, size=SIZE, padding=PADDING)
        out[f"found_{i}"] = np.array(True)
        out[f"detected_{i}"] = np.array(bool(faces))
        out[f"landmarks_{i}"] = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        out[f"chip_{i}"] = chip
        out[f"to_chip_{i}"] = to_chip(dlib.get_face_chip_details(shape, size=SIZE, padding=PADDING))
        i += 1
    found = [k for k in range(i) if out[f"found_{k}"]]
    given = []
    while f"chip_{len(given)}" in req:
        given.append(np.ascontiguousarray(req[f"chip_{len(given)}"]))
    chips = [out[f"chip_{k}"] for k in found] + given
    # One batch: dlib runs it as one tensor.
    descriptors = [np.array(d, dtype=np.float32) for d in recognizer.compute_face_descriptor(chips)] if chips else []
    for k, d in zip(found, descriptors, strict=False):
        out[f"descriptor_{k}"] = d
    for j, d in enumerate(descriptors[len(found):]):
        out[f"chip_descriptor_{j}"] = d
    np.savez(response, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
