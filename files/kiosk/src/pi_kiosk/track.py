"""Face tracking for a camera stream: the full MTCNN cascade only when it is needed.

A kiosk sees the same person in frame after frame. Once a face is found, the next frames run only
MTCNN's two later stages (R-Net, O-Net) around where it was, skipping P-Net's image pyramid, which
is most of the detection cost. The full cascade runs again every `full_every` frames (someone new
may have stepped in) and at once when a tracked face is lost. `followed` tells the pipeline that
the faces it got are the previous frame's, in the same order: it keeps their identities.
"""
from __future__ import annotations

import numpy as np

from .detect import U8, Face, MtcnnDetector


class Tracker:
    def __init__(self, detector: MtcnnDetector, full_every: int) -> None:
        self.detector = detector
        self.full_every = full_every
        self._faces: list[Face] = []
        self._since_full = 0
        self.followed = False  # the last detect() followed the previous frame's faces, index for index

    def detect(self, frame: U8) -> list[Face]:
        if self._faces and self._since_full < self.full_every:
            faces = self.detector.detect(frame, near=np.stack([f.box for f in self._faces]))
            if len(faces) == len(self._faces):
                self._faces = faces
                self._since_full += 1
                self.followed = True
                return faces
        self._faces = self.detector.detect(frame)
        self._since_full = 1
        self.followed = False
        return self._faces
