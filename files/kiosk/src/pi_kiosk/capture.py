"""Frames from a camera index, a device path, a stream URL, a Raspberry Pi camera module (CSI, through
rpicam-vid: rpicam.py), or a video or image file."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from . import csi
from .camera import CameraWait
from .errors import CaptureError
from .redact import redact_url
from .rpicam import RpicamVid

U8 = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
# How long FFmpeg may block opening or reading a stream URL (its default is 30 s, the deploy's
# WatchdogSec), and rpicam-vid may send nothing: the watchdog cannot be pinged meanwhile, so this
# must stay under WatchdogSec / 2.
STREAM_TIMEOUT_MS = 10_000
# The frame rate asked of a CSI camera when camera.max_fps is 0 (rpicam-vid's own default), and the least asked of it:
# a kiosk that processes a frame every 20 s still needs frames well within STREAM_TIMEOUT_MS, or a live camera would
# look stopped (the frames between are skipped, rpicam.py), and sensors have a slowest rate of their own.
CSI_DEFAULT_FPS = 30.0
CSI_MIN_FPS = 1.0


@dataclass(frozen=True)
class Source:
    kind: str  # "index", "device", "url", "csi", "image", "video"
    target: str  # for "csi", the camera's number

    @property
    def live(self) -> bool:
        return self.kind in ("index", "device", "url", "csi")


def classify(source: str) -> Source:
    """What `camera.source` names; CaptureError if it names nothing usable (ConfigError for a "csi:"
    that names no camera)."""
    camera = csi.camera_number(source)
    if camera is not None:
        return Source("csi", str(camera))
    if source.isdigit():
        return Source("index", source)
    if source.startswith(URL_SCHEMES):
        return Source("url", source)
    if source.startswith("/dev/"):
        return Source("device", source)
    path = Path(source)
    if not path.is_file():
        raise CaptureError(f"camera.source = {redact_url(source)!r}: no such file; expected a camera index (0), "
                           "a device path (/dev/video0), an rtsp:// or http(s):// URL, 'csi' or 'csi:N' (a Raspberry "
                           "Pi camera module), or a video or image file")
    return Source("image" if path.suffix.lower() in IMAGE_SUFFIXES else "video", source)


def read_image(path: Path) -> U8:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CaptureError(f"{path}: not an image OpenCV can read")
    return np.asarray(image, dtype=np.uint8)


def _open(src: Source, width: int, height: int, fps: float) -> cv2.VideoCapture | RpicamVid:
    if src.kind == "csi":
        return RpicamVid(int(src.target), width, height, max(fps, CSI_MIN_FPS) if fps else CSI_DEFAULT_FPS,
                         STREAM_TIMEOUT_MS / 1000)
    if src.kind == "index":
        cap = cv2.VideoCapture(int(src.target))
    elif src.kind == "url":
        cap = cv2.VideoCapture(src.target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
    else:
        cap = cv2.VideoCapture(src.target)
    if src.kind in ("index", "device"):
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
    return cap


def frames(source: str, *, width: int = 640, height: int = 480, fps: float = 0.0, loop: bool = False,
           camera: CameraWait | None = None) -> Iterator[U8]:
    """BGR frames until the source ends. A live source never ends: while it cannot be opened or
    delivers nothing, `camera` waits between attempts (camera.py; until the service stops, which
    ends the frames at once). Files end at their last frame, or start over when `loop` is set.
    `fps`: the rate asked of a CSI camera (0: its default). A frame may be overwritten by the next
    one (a CSI camera's are, in one buffer): copy what must outlive the iteration."""
    src = classify(source)
    if src.kind == "image":
        image = read_image(Path(src.target))
        yield image
        while loop:
            yield image
        return
    shown = redact_url(source)  # what errors may show of it
    camera = camera or CameraWait(source)
    while True:
        cap = _open(src, width, height, fps)
        opened, delivered = cap.isOpened(), 0
        try:
            while opened:
                ok, frame = cap.read()
                if not ok:
                    break
                if delivered == 0:
                    camera.found()
                delivered += 1
                yield np.asarray(frame, dtype=np.uint8)
        finally:
            cap.release()
        if not src.live:
            if not opened:
                raise CaptureError(f"camera.source = {shown!r}: OpenCV cannot open this video")
            if delivered == 0:
                raise CaptureError(f"camera.source = {shown!r}: the video has no readable frames")
            if not loop:
                return
        elif delivered == 0:
            if camera.failed(_problem(cap, opened)):
                return
        elif camera.interrupted():
            return


def _problem(cap: cv2.VideoCapture | RpicamVid, opened: bool) -> str:
    """What an attempt that delivered no frame found: rpicam-vid says it on stderr, OpenCV does not."""
    if isinstance(cap, RpicamVid):
        return cap.problem
    return "it cannot be opened" if not opened else "it opens but delivers no frames"
