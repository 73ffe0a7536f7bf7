"""What `camera.source = "csi"` or `"csi:N"` asks for: a Raspberry Pi camera module, read through rpicam-vid.

Standard library only: the deploy controller validates a configuration with config.py, which uses this,
and has neither OpenCV nor rpicam-vid. The capture itself is rpicam.py.
"""
from __future__ import annotations

import shutil

from .errors import ConfigError

PREFIX = "csi"
TOOL = "rpicam-vid"
PACKAGE = "rpicam-apps-lite"  # Raspberry Pi OS's package of rpicam-vid without the preview window's libraries
MAX_CAMERA = 15
ALLOWED = f'"{PREFIX}" (camera 0) or "{PREFIX}:N" with N a camera number from 0 to {MAX_CAMERA}'
# rpicam-vid's YUV420 rows are as long as the ISP's stride, padding included: a Pi 5's PiSP makes the chroma
# stride a multiple of 64 bytes and the luma stride twice that (libcamera src/libcamera/pipeline/rpi/pisp/pisp.cpp,
# computeOptimalStride; libpisp's compute_optimal_stride aligns to PISP_BACK_END_OUTPUT_MAX_ALIGN = 64), a Pi 4's
# bcm2835-isp the luma stride to 64 bytes (kernel bcm2835-isp-fmts.h, bytesperline_align = 64). rpicam-vid writes the
# buffer whole (rpicam-apps encoder/null_encoder.cpp: the mapped frameSize bytes). A width that is a multiple of 128
# has no padding on either, so the kiosk reads unpadded rows and refuses any other width.
WIDTH_MULTIPLE = 128


def camera_number(source: str) -> int | None:
    """The camera `source` names when it is a CSI camera; None when it is some other kind of source."""
    if source == PREFIX:
        return 0
    if not source.startswith(PREFIX + ":"):
        return None
    number = source.removeprefix(PREFIX + ":")
    if not (number.isascii() and number.isdigit() and int(number) <= MAX_CAMERA):
        raise ConfigError(f"camera.source = {source!r}: expected {ALLOWED}")
    return int(number)


def geometry_problems(width: int, height: int) -> list[str]:
    """What is wrong with camera.width and camera.height for a CSI camera (nothing: an empty list)."""
    problems = []
    if width % WIDTH_MULTIPLE:
        problems.append(f"camera.width = {width}: with a {PREFIX} camera.source, expected a multiple of "
                        f"{WIDTH_MULTIPLE} (320, 640, 1280, 1920, ...): {TOOL} pads the rows of other widths")
    if height % 2:
        problems.append(f"camera.height = {height}: with a {PREFIX} camera.source, expected an even number "
                        "(YUV420 has one chroma row for every two rows)")
    return problems


def require_tool(source: str) -> None:
    """At start-up, on the kiosk: a CSI camera needs rpicam-vid, and its absence is a configuration
    error of one line, not a camera that is waited for forever."""
    if camera_number(source) is not None and shutil.which(TOOL) is None:
        raise ConfigError(f"camera.source = {source!r}: {TOOL} is not on PATH; install the package {PACKAGE}, "
                          f"which provides it")
