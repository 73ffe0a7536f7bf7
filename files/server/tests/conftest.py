"""What the server's tests share: tokens, a client of a fresh server, a photo file of any declared size."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from attendance_server.app import create_app
from attendance_server.config import Settings

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
