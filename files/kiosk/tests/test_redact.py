from __future__ import annotations

import pytest

from pi_kiosk.redact import redact_url


@pytest.mark.parametrize(("shown", "expected"), [
    ("rtsp://admin:s3cr3t@10.0.0.5:554/Streaming/Channels/101", "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"),
    ("rtsp://admin:p@ss@cam/x", "rtsp://admin:***@cam/x"),  # an unescaped "@" in the password
    ("rtsp://admin:@cam/x", "rtsp://admin:***@cam/x"),
    ("http://cam/video.cgi?user=admin&pwd=s3cr3t&res=1", "http://cam/video.cgi?user=admin&pwd=***&res=1"),
    ("https://srv/api?access_token=abc", "https://srv/api?access_token=***"),
    ("http://[::1", "http://***"),  # unparsable: nothing after the scheme
    # Nothing secret: unchanged.
    ("rtsp://admin@cam/x", "rtsp://admin@cam/x"),
    ("rtsp://cam.local/stream?channel=1", "rtsp://cam.local/stream?channel=1"),
    ("0", "0"),
    ("/dev/video0", "/dev/video0"),
    ("/srv/demo:clip@2x.mp4", "/srv/demo:clip@2x.mp4"),
])
def test_passwords_and_secret_parameters_are_masked(shown: str, expected: str) -> None:
    assert redact_url(shown) == expected
