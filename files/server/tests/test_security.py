"""The security review's items: bodies refused before they are read (no token, above the route's limit), photos
refused before they are decoded, state-changing requests from another site's page refused, tokens found by a keyed
hash, a settings file others may read refused."""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import ADMIN, DOOR, LOBBY, MODEL_A, bearer, png
from fastapi import FastAPI
from fastapi.testclient import TestClient

from attendance_server import photos
from attendance_server.app import create_app
from attendance_server.cli import main
from attendance_server.config import ConfigError, EmbeddingModel, Limits, Settings, load, parse

MiB = 1024 * 1024
# Small limits, so that a test's bodies above them stay small.
LIMITS = Limits(body_bytes=4096, photos=2, photo_bytes=8192, photo_pixels=1_000_000)
PHOTOS = "/api/employees/E001/photos"
EMBEDDINGS = "/api/employees/E001/embeddings"


def settings_for(database: Path | str, **extra: Any) -> Settings:
    # A model never loaded: these tests replace the pipeline (`decoded`) or send it no photo.
    return Settings(database, ADMIN, {"lobby": LOBBY, "door": DOOR},
                    {"m": EmbeddingModel(Path(__file__), "arcface")}, **extra)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The photos that reached the pipeline (which decodes them); each gets an embedding of MODEL_A."""
    reached: list[Path] = []

    def embed(_: object, paths: list[Path]) -> dict[str, list[list[float]]]:
        reached.extend(paths)
        return {MODEL_A: [[1.0, 0.0] for _ in paths]}

    monkeypatch.setattr(photos, "embed", embed)
    return reached


@pytest.fixture
def guarded(database: Path | str, decoded: list[Path]) -> Iterator[FastAPI]:
    """A server with LIMITS, its photo pipeline replaced by `decoded`, on each backend."""
    app = create_app(settings_for(database, limits=LIMITS))
    yield app
    app.state.store.close()


def send(app: FastAPI, path: str, headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, int]:
    """POSTs straight to the ASGI app: (the status, how many body bytes the app asked for). The body is handed
    over one chunk at a time, only when the app asks for it, so a body never read costs nothing."""
    read = status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        chunk = next(chunks, None)
        read += len(chunk or b"")
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def respond(message: dict[str, Any]) -> None:
        nonlocal status
        status = message.get("status", status)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, respond))
    return status, read


def mebibytes(n: int) -> Iterator[bytes]:
    return itertools.repeat(bytes(MiB), n)


@pytest.mark.parametrize("path", [PHOTOS, EMBEDDINGS, "/toon/attendance"])
@pytest.mark.parametrize("token", ["", "wrong-token-0123456789"])
def test_a_body_without_a_valid_token_is_refused_unread(guarded: FastAPI, path: str, token: str) -> None:
    """The review saw a 400 MB POST without a token read whole (49 MB -> 818 MB resident), then answered 422."""
    headers = {"Content-Type": "multipart/form-data; boundary=x", **(bearer(token) if token else {})}
    assert send(guarded, path, {**headers, "Content-Length": str(400 * MiB)}, mebibytes(400)) == (401, 0)
    assert send(guarded, path, headers, mebibytes(400)) == (401, 0)  # chunked: no Content-Length


# What each route reads: JSON, or a photo form whose part runs on (the parser stores it until the limit is hit).
BODIES = {EMBEDDINGS: ("application/json", b'{"model": "'),
          PHOTOS: ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="photos"; '
                                                      b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n')}


@pytest.mark.parametrize(("path", "limit"), [(EMBEDDINGS, LIMITS.body_bytes), (PHOTOS, LIMITS.upload_bytes)])
def test_a_body_above_its_routes_limit_is_refused_with_413(guarded: FastAPI, path: str, limit: int) -> None:
    content_type, start = BODIES[path]
    headers = {**bearer(ADMIN), "Content-Type": content_type}
    # Announced: refused before a byte is read.
    assert send(guarded, path, {**headers, "Content-Length": str(limit + 1)}, mebibytes(1)) == (413, 0)
    # Chunked: read until the limit is passed, no further.
    status, read = send(guarded, path, headers, itertools.chain([start], itertools.repeat(bytes(1000), 400 * 1000)))
    assert status == 413 and limit < read <= limit + 1000


def test_a_photo_upload_may_be_larger_than_other_bodies(guarded: FastAPI, decoded: list[Path]) -> None:
    client = TestClient(guarded)
    # Two photos of about 4 kB: more than body_bytes, within upload_bytes.
    big = [("photos", (f"{n}.png", png(32, 32) + bytes(LIMITS.photo_bytes // 2), "image/png")) for n in range(2)]
    assert client.post(PHOTOS, files=big, headers=bearer(ADMIN)).json() == {"employee": "E001",
                                                                            "embeddings": {MODEL_A: 2}}
    assert len(decoded) == 2
    r = client.post(EMBEDDINGS, headers=bearer(ADMIN), json={"model": MODEL_A, "embeddings": [[1.0] * 2000]})
    assert r.status_code == 413  # about 8 kB of JSON


def test_photos_above_the_limits_are_refused_before_they_are_decoded(guarded: FastAPI, decoded: list[Path]) -> None:
    client = TestClient(guarded)

    def upload(*files: tuple[str, bytes]) -> tuple[int, str]:
        r = client.post(PHOTOS, headers=bearer(ADMIN), files=[("photos", (n, d, "image/png")) for n, d in files])
        return r.status_code, r.json()["detail"]

    assert upload(*[(f"{n}.png", png(32, 32)) for n in range(3)]) == (
        413, "3 photos: at most 2 per request (limits.photos); send the others in another request")
    assert upload(("big.png", png(32, 32) + bytes(LIMITS.photo_bytes))) == (
        413, "photo 0.png (big.png): more than 8192 bytes (limits.photo_bytes)")
    assert upload(("a.png", png(32, 32)), ("b.gif", b"GIF89a" + bytes(100))) == (
        415, "photo 1.gif (b.gif): not a JPEG or PNG image (the formats photos are taken in)")
    assert decoded == []


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is made to declare width x height."""
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(("name", "data", "size"), [
    ("bomb.png", png(100_000, 100_000), "100000x100000"),  # 10 gigapixels, 10 GB decoded, in under 200 bytes
    ("bomb.jpg", jpeg_declaring(65_000, 65_000), "65000x65000"),
    ("wide.png", png(1001, 1000), "1001x1000"),  # one more than the limit
])
def test_a_decompression_bomb_is_refused_before_it_is_decoded(guarded: FastAPI, decoded: list[Path], name: str,
                                                              data: bytes, size: str) -> None:
    assert len(data) < 1000
    r = TestClient(guarded).post(PHOTOS, headers=bearer(ADMIN), files=[("photos", (name, data, "image/png"))])
    assert r.status_code == 413
    assert r.json()["detail"] == (f"photo 0{name[-4:]} ({name}): {size} pixels, more than 1000000 "
                                  "(limits.photo_pixels); scale it down")
    assert decoded == []


def test_image_size_is_read_from_real_files_headers() -> None:
    image = np.zeros((23, 37, 3), np.uint8)
    progressive = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    for data in (cv2.imencode(".png", image)[1], cv2.imencode(".jpg", image)[1],
                 cv2.imencode(".jpg", image, progressive)[1]):
        assert photos.image_size(data.tobytes()) == (37, 23)
    assert photos.image_size(png(3, 2)) == (3, 2)
    # A JPEG cut before its frame header, a BMP, nothing: no size.
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    assert photos.image_size(jpeg[:jpeg.index(b"\xff\xc0")]) is None
    assert photos.image_size(cv2.imencode(".bmp", image)[1].tobytes()) is None
    assert photos.image_size(b"") is None


@pytest.mark.parametrize(("setting", "message"), [
    ({"limits": {"photos": 0}}, "limits.photos must be a whole number from 1, got 0"),
    ({"limits": {"body_bytes": "2M"}}, "limits.body_bytes must be a whole number from 1, got '2M'"),
    ({"limits": {"photo_bytes": True}}, "limits.photo_bytes must be a whole number from 1, got True"),
    ({"limits": {"photo_pixels": 2**31}},
     "limits.photo_pixels must be a whole number from 1 to 1073741824, got 2147483648"),
    ({"limits": {"pixels": 1}}, "unknown limits pixels (allowed: body_bytes, photos, photo_bytes, photo_pixels)"),
    ({"limits": 5}, "[limits] must be a table of body_bytes, photos, photo_bytes, photo_pixels"),
    ({"trusted_origins": "https://a.example"}, "trusted_origins must be a list of origins"),
    ({"trusted_origins": ["https://a.example/"]}, "trusted_origins: 'https://a.example/' is not an origin"),
    ({"trusted_origins": ["a.example"]}, "trusted_origins: 'a.example' is not an origin"),
    ({"trusted_origins": ["ftp://a.example"]}, "trusted_origins: 'ftp://a.example' is not an origin"),
    ({"trusted_origins": ["https://u@a.example"]}, "trusted_origins: 'https://u@a.example' is not an origin"),
    ({"trusted_origins": ["https://a.example:99999"]}, "trusted_origins: 'https://a.example:99999' is not an origin"),
])
def test_bad_limits_and_origins_are_named(setting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}, **setting}, "server.toml")


def test_limits_and_origins_are_read() -> None:
    settings = parse({"database": "x.db", "admin_token": ADMIN, "kiosks": {"a": LOBBY}, "limits": {"photos": 3},
                      "trusted_origins": ["https://Attendance.example:443", "http://10.0.0.5:8080"]}, "server.toml")
    assert settings.limits == Limits(photos=3)
    assert settings.trusted_origins == {"https://attendance.example", "http://10.0.0.5:8080"}


# Cross-site requests: what a browser sends along from a hostile page, and what is not a browser's.
@pytest.mark.parametrize(("headers", "status"), [
    ({}, 201),                                                      # the kiosks, curl, scripts
    ({"Sec-Fetch-Site": "same-origin"}, 201),                       # the server's own page
    ({"Sec-Fetch-Site": "none"}, 201),                              # the user's own request (a typed URL)
    ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://other.testserver"}, 403),  # another page of the site
    ({"Origin": "https://evil.example"}, 403),                      # a browser without Sec-Fetch-Site
    ({"Origin": "null"}, 403),                                      # a sandboxed frame, a file:// page
    ({"Origin": "http://testserver"}, 201),                         # the server's own origin, from its Host
    ({"Origin": "https://attendance.example"}, 201),                # trusted: the server behind its proxy
    ({"Sec-Fetch-Site": "cross-site", "Origin": "https://attendance.example"}, 201),  # a trusted site's page
])
def test_a_state_changing_request_from_another_sites_page_is_refused(
        tmp_path: Path, headers: dict[str, str], status: int) -> None:
    client = TestClient(create_app(settings_for(tmp_path / "attendance.sqlite3", trusted_origins=frozenset({"https://attendance.example"}))))
    r = client.post(EMBEDDINGS, json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]},
                    headers={**bearer(ADMIN), **headers})
    assert r.status_code == status, r.text
    listed = client.get("/api/employees", headers={**bearer(ADMIN), **headers})  # reading: never refused
    assert listed.status_code == 200 and ("E001" in listed.json()["employees"]) == (status == 201)
    if status == 403:
        assert "refused: a state-changing request from another site's page" in r.json()["detail"]
        # Deleting, with or without a valid token: refused before the token is looked at.
        assert client.delete("/api/employees/E001", headers=headers).status_code == 403


def test_the_origin_is_the_servers_own_behind_its_port_and_scheme(tmp_path: Path) -> None:
    client = TestClient(create_app(settings_for(tmp_path / "attendance.sqlite3")), base_url="https://attendance.example:8443")
    own = {**bearer(ADMIN), "Origin": "https://attendance.example:8443"}
    assert client.post(EMBEDDINGS, json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]}, headers=own).status_code == 201
    other = {**own, "Origin": "http://attendance.example:8443"}
    assert client.delete("/api/employees/E001", headers=other).status_code == 403


def test_a_token_is_found_by_its_keyed_hash_at_one_hash_per_request_whatever_the_fleet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One keyed hash of the given token and a lookup: a fleet of 2,000 kiosks costs a request what 2 do (comparing
    every token did not), and timing tells nothing of which token, or how much of one, matched (the key is this
    process's own: the table holds no token, and another process's table hashes them otherwise)."""
    small = settings_for(tmp_path / "attendance.sqlite3")
    large = dataclasses.replace(small, kiosk_tokens={f"k{n}": f"kiosk-token-{n:08d}-{'x' * 16}" for n in range(2000)})
    cases = ((small, ADMIN, "admin"), (small, DOOR, "kiosk:door"),
             (large, "kiosk-token-00001999-" + "x" * 16, "kiosk:k1999"), (large, "unknown-token-0123456789", None))
    for settings, token, who in cases:
        assert settings.principal(token) == who  # the table is made at the first request
    hashed: list[bytes] = []
    real = hmac.digest
    monkeypatch.setattr(hmac, "digest", lambda key, msg, algo: hashed.append(msg) or real(key, msg, algo))
    for settings, token, who in cases:
        assert settings.principal(token) == who
    monkeypatch.undo()
    assert hashed == [token.encode() for _, token, _ in cases]
    _, table = small._holders
    assert not {t.encode() for t in (ADMIN, LOBBY, DOOR)} & set(table)
    again = dataclasses.replace(small)
    assert again.principal(LOBBY) == "kiosk:lobby" and set(again._holders[1]).isdisjoint(table)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_settings_file_others_may_read_stops_the_server(tmp_path: Path, mode: int,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'database = "{tmp_path}/a.sqlite3"\nadmin_token = "{ADMIN}"\n[kiosks]\nlobby = "{LOBBY}"\n')
    os.chmod(config, mode)
    message = f"{config}: mode {mode:04o} lets group or others at the tokens it holds: chmod 600 {config}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(config)
    assert main(["check", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err
    os.chmod(config, 0o600)
    assert load(config).kiosk_tokens == {"lobby": LOBBY}
