"""Five landmarks -> similarity transform -> the face crop the embedding model expects.

The crop's size and the template the landmarks are mapped onto come from the model's card
(cards.py): 112x112 and InsightFace's template for ArcFace-contract models, 150x150 and a template
fitted to dlib's chips for dlib's ResNet. A similarity (rotation, uniform scale, translation) keeps
the face's proportions, which is what the recognition models were trained on; resizing the whole
frame to the model's size does not.
"""
from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from .cards import Card, builtin

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

# The arcface card's template (eye, eye, nose tip, mouth corner, mouth corner, image left to right),
# for tools that compare templates; the aligner reads its own card's.
ARCFACE_TEMPLATE: F32 = np.array(builtin("arcface").template, dtype=np.float32)


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> F64:
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
    """Warps faces onto the card's template into one preallocated buffer of the card's input size
    (height x width x 3, BGR like the frame): the next call overwrites it."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.size = card.size  # (width, height), as OpenCV takes it
        self.template: F64 = np.array(card.template, dtype=np.float64)
        self._out: U8 = np.zeros((card.height, card.width, 3), dtype=np.uint8)

    def align(self, frame: U8, landmarks: F32) -> U8:
        matrix = similarity_transform(landmarks, self.template)
        cv2.warpAffine(frame, matrix, self.size, dst=self._out, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return self._out
