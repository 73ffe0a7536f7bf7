"""Frames from a camera index, a device path, a stream URL, or a video or image file."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from .errors import CaptureError
from .redact import redact_url

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
RECONNECT_SECONDS = 2.0


@dataclass(frozen=True)
class Source:
    kind: str  # "index", "device", "url", "image", "video"
    target: str

    @property
    def live(self) -> bool:
        return self.kind in ("index", "device", "url")


def classify(source: str) -> Source:
    """What `camera.source` names; CaptureError if it names nothing usable."""
    if source.isdigit():
        return Source("index", source)
    if source.startswith(URL_SCHEMES):
        return Source("url", source)
    if source.startswith("/dev/"):
        return Source("device", source)
    path = Path(source)
    if not path.is_file():
        raise CaptureError(f"camera.source = {redact_url(source)!r}: no such file; expected a camera index (0), "
                           "a device path (/dev/video0), an rtsp:// or http(s):// URL, or a video or image file")
    return Source("image" if path.suffix.lower() in IMAGE_SUFFIXES else "video", source)


def read_image(path: Path) -> U8:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CaptureError(f"{path}: not an image OpenCV can read")
    return np.asarray(image, dtype=np.uint8)


def _open(src: Source, width: int, height: int) -> cv2.VideoCapture:
    if src.kind == "index":
        cap = cv2.VideoCapture(int(src.target))
    elif src.kind == "url":
        cap = cv2.VideoCapture(src.target, cv2.CAP_FFMPEG)
    else:
        cap = cv2.VideoCapture(src.target)
    if src.kind in ("index", "device"):
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
    return cap


def frames(source: str, *, width: int = 640, height: int = 480, loop: bool = False,
           stop: threading.Event | None = None) -> Iterator[U8]:
    """BGR frames until the source ends. Live sources reconnect after a failure instead of
    ending (until `stop` is set: a service told to stop while its camera is away stops at once);
    files end at their last frame, or start over when `loop` is set."""
    src = classify(source)
    shown = redact_url(source)  # what logs and errors may show of it
    stop = stop or threading.Event()
    if src.kind == "image":
        image = read_image(Path(src.target))
        yield image
        while loop:
            yield image
        return
    while True:
        cap = _open(src, width, height)
        if not cap.isOpened():
            cap.release()
            if not src.live:
                raise CaptureError(f"camera.source = {shown!r}: OpenCV cannot open this video")
            log.warning("camera %s not available; retrying in %.0f s", shown, RECONNECT_SECONDS)
            if stop.wait(RECONNECT_SECONDS):
                return
            continue
        delivered = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                delivered += 1
                yield np.asarray(frame, dtype=np.uint8)
        finally:
            cap.release()
        if not src.live and delivered == 0:
            raise CaptureError(f"camera.source = {shown!r}: the video has no readable frames")
        if src.live:
            log.warning("camera %s stopped delivering frames; reconnecting", shown)
            if stop.wait(RECONNECT_SECONDS):
                return
        elif not loop:
            return
