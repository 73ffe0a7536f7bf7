"""pi_facts' camera listing (filter plugin pi_cameras): rpicam-vid --list-cameras, named as the kiosk names cameras."""
from __future__ import annotations

import pytest

from conftest import ROOT, load_module

cameras = load_module(ROOT / "plugins/filter/pi_cameras.py")

# Two cameras on a Pi 5, as rpicam-apps prints them (core/options.cpp); the Modes lines are not camera lines.
LISTING = """Available cameras
-----------------
0 : imx708 [4608x2592 10-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a)
    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]
                             2304x1296 [56.03 fps - (0, 0)/4608x2592 crop]

1 : imx219 [3280x2464 8-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@80000/imx219@10)
    Modes: 'SRGGB8' : 640x480 [206.65 fps - (1000, 752)/1280x960 crop]
"""


def test_each_camera_is_named_as_the_kiosk_names_it() -> None:
    found = cameras.pi_cameras(LISTING)
    assert [(c["source"], c["index"], c["sensor"], c["format"]) for c in found] == [
        ("csi:0", 0, "imx708", "4608x2592 10-bit RGGB"), ("csi:1", 1, "imx219", "3280x2464 8-bit RGGB")]
    assert found[1]["id"] == "/base/axi/pcie@120000/rp1/i2c@80000/imx219@10"


@pytest.mark.parametrize("listing", ["No cameras available!", "", "ERROR: *** no cameras available ***"])
def test_no_camera_is_an_empty_list(listing: str) -> None:
    assert cameras.pi_cameras(listing) == []


@pytest.mark.parametrize(("source", "index"), [("csi", 0), ("csi:0", 0), ("csi:1", 1), (" csi:2 ", 2), ("0", -1),
                                               ("/dev/video0", -1), ("csi:x", -1), ("csi:", -1),
                                               ("rtsp://cam/csi:1", -1)])
def test_camera_index_of_a_source(source: str, index: int | -1) -> None:
    assert cameras.pi_camera_index(source) == index
