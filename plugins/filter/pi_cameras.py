"""The cameras a Pi sees, from `rpicam-vid --list-cameras` (the rpicam apps, on Raspberry Pi OS bookworm).

The listing is libcamera's: one line per camera, in the order `--camera N` numbers them, as rpicam-apps prints it
(core/options.cpp):

    Available cameras
    -----------------
    0 : imx708 [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)
        Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]

or "No cameras available!". The camera line is printed before the camera is configured, so a camera that a
running kiosk holds is listed too.
"""
from __future__ import annotations

import re
from typing import Any

CAMERA_RE = re.compile(r"^\s*(\d+) : (\S+) \[([^\]]*)\] \((.*)\)\s*$", re.MULTILINE)


def pi_cameras(listing: str) -> list[dict[str, Any]]:
    """Each camera as the kiosk's camera.source names it ("csi:N"), with its sensor and libcamera id."""
    return [{"source": f"csi:{index}", "index": int(index), "sensor": sensor, "format": fmt, "id": camera_id}
            for index, sensor, fmt, camera_id in CAMERA_RE.findall(listing)]


def pi_camera_index(source: str) -> int:
    """The CSI camera a camera.source names ("csi" is camera 0), or -1 for any other source (an int either way:
    Ansible's templating would turn None into a string)."""
    found = re.fullmatch(r"csi(?::(\d+))?", str(source).strip())
    return -1 if found is None else int(found.group(1) or 0)


class FilterModule:
    """Ansible filters of the pi_facts role."""

    def filters(self) -> dict[str, Any]:
        return {"pi_cameras": pi_cameras, "pi_camera_index": pi_camera_index}
