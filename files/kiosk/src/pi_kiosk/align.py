"""Five landmarks -> similarity transform -> the 112x112 face crop ArcFace-family models expect.

A similarity (rotation, uniform scale, translation) keeps the face's proportions, which is what
the recognition models were trained on; resizing the whole frame to 112x112 does not.
"""
from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

SIZE = 112
# The InsightFace/ArcFace 112x112 template: eye, eye, nose tip, mouth corner, mouth corner,
# image left-to-right.
ARCFACE_TEMPLATE: F32 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike = ARCFACE_TEMPLATE) -> F64:
    """Least-squares similarity mapping src points onto dst (Umeyama, 1991), as a 2x3 matrix.

    In 2-D the rotation-and-scale part is [[a, -b], [b, a]] with a closed form: no SVD (LAPACK's
    call overhead was most of the alignment's time), and a proper rotation by construction, so a
    mirrored face is never "aligned" by reflecting it.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(f"expected two matching (N, 2) point sets with N >= 2, got {s.shape} and {d.shape}")
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    spread = float((sc**2).sum())
    if spread / len(s) < 1e-12:
        raise ValueError("landmarks coincide: no transform maps them onto the template")
    a = float((sc * dc).sum()) / spread
    b = float((sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum()) / spread
    matrix = np.array([[a, -b, 0.0], [b, a, 0.0]])
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


class Aligner:
    """Warps faces into one preallocated 112x112 buffer: the next call overwrites it."""

    def __init__(self) -> None:
        self._out: U8 = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)

    def align(self, frame: U8, landmarks: F32) -> U8:
        matrix = similarity_transform(landmarks)
        cv2.warpAffine(frame, matrix, (SIZE, SIZE), dst=self._out, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return self._out
