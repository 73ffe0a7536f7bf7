from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from pi_kiosk.camera import CameraWait
from pi_kiosk.capture import Source, classify, frames
from pi_kiosk.errors import CaptureError


def test_classify_every_kind_of_source(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    assert classify("0").kind == "index"
    assert classify("/dev/video2").kind == "device"
    assert classify("rtsp://cam.local/stream").kind == "url"
    assert classify("csi") == Source("csi", "0") and classify("csi:1") == Source("csi", "1")
    assert classify(str(tmp_path / "a.jpg")).kind == "image"
    assert classify(str(tmp_path / "b.mp4")).kind == "video"
    with pytest.raises(CaptureError, match=r"camera.source = '/nope.avi': no such file; expected a camera index"):
        classify("/nope.avi")
    with pytest.raises(CaptureError, match=r"^camera.source = 'rtmp://cam:\*\*\*@10.0.0.5/live': no such file"):
        classify("rtmp://cam:s3cr3t@10.0.0.5/live")  # a scheme OpenCV is not given: the password stays hidden


def test_image_file_once_or_looped(astronaut_path: Path) -> None:
    assert len(list(frames(str(astronaut_path)))) == 1
    looped = list(itertools.islice(frames(str(astronaut_path), loop=True), 5))
    assert len(looped) == 5 and looped[0].shape == (512, 512, 3)


def write_video(path: Path, count: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(count):
        writer.write(np.full((48, 64, 3), i * 20, dtype=np.uint8))
    writer.release()


def test_video_file_plays_to_the_end_or_loops(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    write_video(video, 4)
    played = list(frames(str(video)))
    assert len(played) == 4 and played[0].shape == (48, 64, 3)
    assert played[3].mean() > played[0].mean()
    assert len(list(itertools.islice(frames(str(video), loop=True), 10))) == 10


def test_unreadable_files_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CaptureError, match="not an image OpenCV can read"):
        next(frames(str(tmp_path / "bad.png")))
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(CaptureError, match=r"cannot open this video|no readable frames"):
        next(frames(str(tmp_path / "bad.avi")))


def test_a_live_source_that_is_away_stops_reconnecting_when_told(refused_url: str) -> None:
    stop = threading.Event()
    stop.set()  # a service told to stop while its camera is away stops at once, not after the next retry
    source = refused_url.replace("http://", "rtsp://") + "/stream"
    assert list(frames(source, camera=CameraWait(source, wait=stop.wait))) == []
