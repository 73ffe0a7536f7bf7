"""What the server's tests share: tokens, a fresh database on each backend (SQLite, and PostgreSQL in a throwaway
cluster of this session's own), a client of a fresh server on it, a photo file of any declared size, the kiosk's
pipeline with a small model and a photo of one face (the photos extra), a browser's headers."""
from __future__ import annotations

import base64
import importlib.util
import itertools
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from attendance_server import pg_cluster
from attendance_server.app import create_app
from attendance_server.config import EmbeddingModel, Settings
from attendance_server.store import Store

ADMIN = "admin-token-0123456789"
LOBBY = "lobby-token-0123456789"
DOOR = "door-token-01234567890"
MODEL_A = "a" * 64
MODEL_B = "b" * 64


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PG_PASSWORD = pg_cluster.PASSWORD


@pytest.fixture(scope="session")
def postgresql() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for this session (attendance_server.pg_cluster): the URL of its `postgres`
    database, as the user who may create databases; stopped and removed at the end."""
    try:
        with pg_cluster.throwaway_cluster() as cluster:
            yield cluster.url
    except pg_cluster.ClusterError as exc:
        pytest.fail(f"the server's tests on PostgreSQL: {exc}", pytrace=False)


NUMBERS = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """A fresh database: a SQLite file's path, or the URL of a new PostgreSQL database (dropped afterwards, with
    whatever connections a test left open to it)."""
    if request.param == "sqlite":
        yield tmp_path / "attendance.sqlite3"
        return
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg is needed for the server's tests on PostgreSQL: scripts/bootstrap --dev installs it "
                    "(requirements/dev.txt)", pytrace=False)
    server: str = request.getfixturevalue("postgresql")
    name = f"test_{next(NUMBERS)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


@pytest.fixture
def client(database: Path | str) -> Iterator[TestClient]:
    settings = Settings(database, ADMIN, {"lobby": LOBBY, "door": DOOR})
    client = TestClient(create_app(settings))
    yield client
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    store.close()


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
