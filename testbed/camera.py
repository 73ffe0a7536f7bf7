#!/usr/bin/env python3
"""A camera for the emulated Pis: a short video file the kiosk reads in loop mode.

    camera.py OUT.avi            the demo's visits
    camera.py --empty OUT.avi    an empty scene

The visits: a real photo with one face (scikit-image's astronaut.png, the demo's enrolled person) in a
640x480 frame, moving a little as a person in front of a kiosk does, a stretch with nobody there, then a
stranger (the cameraman of scikit-image's camera.png, who is never enrolled) the same way, and nobody
again. The empty scene is what a kiosk sees most of the day: after one detection its motion gate skips
the frames, so an emulated kiosk costs the machine almost nothing (the Molecule scenarios use it; a
visit costs an emulated Pi seconds of CPU per frame). MJPG in AVI: OpenCV writes and reads it everywhere,
with no codec of the system's.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from skimage import data

WIDTH, HEIGHT, FPS = 640, 480, 10
# Short stretches: an emulated Pi takes seconds per frame, and the demo waits for the stranger.
FACE_FRAMES, EMPTY_FRAMES = 10, 5
BACKGROUND = 90


def _moving(person: np.ndarray) -> list[np.ndarray]:
    out = []
    for n in range(FACE_FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
        dx, dy = int(20 * np.sin(n / 5)), int(8 * np.cos(n / 7))
        frame[80 + dy:400 + dy, 160 + dx:480 + dx] = person
        out.append(frame)
    return out


def frames() -> list[np.ndarray]:
    # The astronaut's head and shoulders, scaled by 1.25: the face is about 110 pixels wide, as a
    # person standing half a metre from the kiosk's camera.
    person = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[20:276, 100:356], (320, 320))
    # The cameraman's head, scaled by 2: a face of about the same size.
    stranger = cv2.resize(cv2.cvtColor(data.camera()[40:200, 180:340], cv2.COLOR_GRAY2BGR), (320, 320))
    return _moving(person) + empty_scene() + _moving(stranger) + empty_scene()


def empty_scene() -> list[np.ndarray]:
    return [np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)] * EMPTY_FRAMES


def write(path: Path, video: list[np.ndarray] | None = None) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    for frame in frames() if video is None else video:
        writer.write(frame)
    writer.release()


if __name__ == "__main__":
    match sys.argv[1:]:
        case [out]:
            write(Path(out))
        case ["--empty", out]:
            write(Path(out), empty_scene())
        case _:
            raise SystemExit(__doc__)
