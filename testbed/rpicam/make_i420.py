#!/usr/bin/env python3
"""A camera for the rpicam-vid stand-in (testbed/rpicam/rpicam-vid), made on the controller.

    make_i420.py SOURCE OUTDIR [--camera N] [--width 640] [--height 480] [--frames K] [--exit-after-frames K]

SOURCE, a video or an image, resized to WIDTHxHEIGHT, becomes OUTDIR/csi<N>.i420 (raw I420 frames,
unpadded, back to back: the stand-in pads rows as rpicam-vid does) and OUTDIR/csi<N>.json.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np


def to_i420(frame: np.ndarray, width: int, height: int) -> bytes:
    """A BGR frame as I420 of WIDTHxHEIGHT (both even: YUV420 halves them)."""
    if width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: I420 needs an even width and height")
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return bytes(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


def write_camera(folder: Path, number: int, frames: Iterable[np.ndarray], width: int, height: int,
                 exit_after_frames: int | None = None) -> None:
    """csi<number>.i420 first, then the .json: the stand-in sees the camera only once both exist."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"".join(to_i420(f, width, height) for f in frames)
    if not data:
        raise ValueError("no frames")
    (folder / f"csi{number}.i420").write_bytes(data)
    meta: dict[str, object] = {"width": width, "height": height, "sensor": "imx708"}
    if exit_after_frames is not None:
        meta["exit_after_frames"] = exit_after_frames
    (folder / f"csi{number}.json").write_text(json.dumps(meta) + "\n")


def read_frames(source: Path, limit: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(source))
    frames: list[np.ndarray] = []
    try:
        while len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:  # an image OpenCV's video reader did not take
        image = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{source}: not a video or image OpenCV can read")
        frames.append(image)
    return frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path)
    p.add_argument("outdir", type=Path)
    p.add_argument("--camera", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=300, help="at most this many frames of a video")
    p.add_argument("--exit-after-frames", type=int, help="the stand-in's stream dies after this many frames")
    args = p.parse_args()
    write_camera(args.outdir, args.camera, read_frames(args.source, args.frames), args.width, args.height,
                 args.exit_after_frames)


if __name__ == "__main__":
    main()
