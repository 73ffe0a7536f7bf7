"""What the server's tests share: tokens, a client of a fresh server, a photo file of any declared size, the
kiosk's pipeline with a small model and a photo of one face (the photos extra), a browser's headers."""
from __future__ import annotations

import base64
import importlib.util
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from attendance_server.app import create_app
from attendance_server.config import EmbeddingModel, Settings

ADMIN = "admin-token-0123456789"
LOBBY = "lobby-token-0123456789"
DOOR = "door-token-01234567890"
MODEL_A = "a" * 64
MODEL_B = "b" * 64


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = Settings(tmp_path / "attendance.sqlite3", ADMIN, {"lobby": LOBBY, "door": DOOR})
    return TestClient(create_app(settings))


def png(width: int, height: int) -> bytes:
    """A PNG file declaring width x height grey pixels, with their first row only: a few dozen bytes whatever
    size it declares (a decoder would allocate them all, then find the rest missing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, not interlaced
    first_row = zlib.compress(bytes(1 + width))  # filter byte, then the row's pixels
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", first_row) + chunk(b"IEND", b"")


def basic(token: str = ADMIN) -> dict[str, str]:
    """A browser's login to the pages: HTTP Basic, any user name, the token as password."""
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{token}".encode()).decode()}


# What a browser adds to a form posted from one of the server's own pages (the test client's origin).
SAME_ORIGIN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}


def astronaut() -> bytes:
    """scikit-image's astronaut: a PNG of one face, read without importing scikit-image."""
    skimage = importlib.util.find_spec("skimage")
    if skimage is None or not skimage.submodule_search_locations:
        pytest.skip("scikit-image's astronaut photo is not installed")
    return (Path(next(iter(skimage.submodule_search_locations))) / "data" / "astronaut.png").read_bytes()


@pytest.fixture(scope="session")
def face_model(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingModel:
    """A small model (random weights, its real shapes) for the kiosk's pipeline, as the photos extra runs it."""
    synthetic = pytest.importorskip("pi_kiosk.synthetic")
    return EmbeddingModel(synthetic.cached("mobilefacenet", tmp_path_factory.mktemp("models")), "arcface")
