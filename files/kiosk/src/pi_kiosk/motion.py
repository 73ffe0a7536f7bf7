"""A cheap motion gate before detection: an idle kiosk costs almost nothing.

Detection is most of a frame's cost and an attendance kiosk stares at an empty scene most of the day.
Each frame is shrunk to a small grey thumbnail (a fraction of a millisecond, in buffers made once)
and compared with the thumbnail of the last frame detection ran on. Detection is skipped while the
scene has not changed since a frame in which it found no face, and never for longer than
`recheck_seconds` (slow light changes, a face that somehow entered without enough change). While a
face is in view every frame is processed, so a person who stands still is still recognised.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
# 80 x 60: a face entering a 640 x 480 view changes hundreds of these pixels; sensor noise averages out.
THUMBNAIL = (80, 60)


class MotionGate:
    def __init__(self, threshold: float, recheck_seconds: float) -> None:
        """`threshold`: mean absolute difference (0-255 grey levels) that counts as motion; 0 disables the gate."""
        self.threshold = threshold
        self.recheck_seconds = recheck_seconds
        self._small = np.empty((THUMBNAIL[1], THUMBNAIL[0], 3), np.uint8)
        self._grey = np.empty(THUMBNAIL[::-1], np.uint8)
        self._reference = np.empty_like(self._grey)
        self._idle = False  # the reference frame was processed and had no face
        self._processed_at = -math.inf

    def should_process(self, frame: U8, now: float) -> bool:
        """Whether detection must run on `frame`; when it does, report the outcome with processed()."""
        if self.threshold <= 0:
            return True
        cv2.resize(frame, THUMBNAIL, dst=self._small, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY, dst=self._grey)
        if not self._idle or now - self._processed_at >= self.recheck_seconds:
            return True
        return cv2.norm(self._grey, self._reference, cv2.NORM_L1) / self._grey.size >= self.threshold

    def processed(self, faces_found: bool, now: float) -> None:
        """Detection ran on the frame should_process() last saw: it becomes the reference."""
        if self.threshold <= 0:
            return
        self._reference[...] = self._grey
        self._idle = not faces_found
        self._processed_at = now
