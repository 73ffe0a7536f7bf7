from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import requests
from fakeserver import FakeServer

from pi_kiosk.errors import GalleryError
from pi_kiosk.store import load_gallery
from pi_kiosk.sync import GallerySync, parse_embeddings

DIM = 8


def body(*people: tuple[str, int]) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {"employees": [{"id": pid, "embeddings": rng.standard_normal((n, DIM)).tolist()} for pid, n in people]}


def test_first_sync_caches_privately_then_etag_makes_it_free(tmp_path: Path, server: FakeServer) -> None:
    server.embeddings = body(("E001", 2), ("E002", 1))
    cache = tmp_path / "state" / "gallery.npz"
    sync = GallerySync(server.url, cache, DIM, token="t0k")
    gallery = sync.fetch()
    assert gallery is not None and gallery.ids == ("E001", "E001", "E002")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert [p.name for p in cache.parent.iterdir()] == ["gallery.npz"]  # no temp file left behind
    assert server.gets[0]["Authorization"] == "Bearer t0k" and "If-None-Match" not in server.gets[0]
    assert sync.fetch() is None  # unchanged: 304
    assert server.gets[1]["If-None-Match"] == '"v1"'


def test_a_restarted_kiosk_starts_offline_from_the_cache(tmp_path: Path, server: FakeServer) -> None:
    server.embeddings = body(("E001", 1))
    cache = tmp_path / "gallery.npz"
    online = GallerySync(server.url, cache, DIM)
    expected = online.fetch()
    assert expected is not None
    offline = GallerySync("http://127.0.0.1:9", cache, DIM)
    gallery = offline.load_cached()
    assert gallery.ids == ("E001",)
    np.testing.assert_allclose(gallery.matrix, expected.matrix, rtol=1e-6)
    assert offline.etag == '"v1"'  # and the next sync asks If-None-Match
    with pytest.raises(requests.ConnectionError):
        offline.fetch()


def test_changed_gallery_replaces_the_cache(tmp_path: Path, server: FakeServer) -> None:
    cache = tmp_path / "gallery.npz"
    sync = GallerySync(server.url, cache, DIM)
    server.embeddings = body(("E001", 1))
    sync.fetch()
    server.embeddings, server.etag = body(("E001", 1), ("E003", 1)), '"v2"'
    gallery = sync.fetch()
    assert gallery is not None and gallery.people == 2
    assert load_gallery(cache)[1] == '"v2"'


def test_a_bad_answer_keeps_the_old_cache(tmp_path: Path, server: FakeServer) -> None:
    cache = tmp_path / "gallery.npz"
    sync = GallerySync(server.url, cache, DIM)
    server.embeddings = body(("E001", 1))
    sync.fetch()
    before = cache.read_bytes()
    server.embeddings, server.etag = {"employees": [{"id": "E009", "embeddings": [[1.0, 2.0]]}]}, '"v2"'
    with pytest.raises(GalleryError, match=r"employees\[0\] \(E009\): embedding of length 2, the model produces 8"):
        sync.fetch()
    assert cache.read_bytes() == before
    assert sync.etag == '"v1"'


def test_no_cache_means_an_empty_gallery(tmp_path: Path) -> None:
    gallery = GallerySync("http://x", tmp_path / "none.npz", DIM).load_cached()
    assert len(gallery) == 0 and gallery.dim == DIM


def test_cache_from_another_model_is_ignored(tmp_path: Path, server: FakeServer) -> None:
    server.embeddings = body(("E001", 1))
    GallerySync(server.url, tmp_path / "g.npz", DIM).fetch()
    sync = GallerySync(server.url, tmp_path / "g.npz", 512)
    assert len(sync.load_cached()) == 0 and sync.etag == ""


def test_corrupt_cache_is_reported(tmp_path: Path) -> None:
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(GalleryError, match="not a readable embeddings file"):
        GallerySync("http://x", tmp_path / "g.npz", DIM).load_cached()


@pytest.mark.parametrize(("doc", "message"), [
    ([], '"employees" list'),
    ({"employees": [{"id": 5, "embeddings": [[0.0] * DIM]}]}, r'employees\[0\]: .*non-empty string "id"'),
    ({"employees": [{"id": "E1", "embeddings": []}]}, "must be a non-empty list"),
    ({"employees": [{"id": "E1", "embeddings": [["a"] * DIM]}]}, "only numbers"),
    ({"employees": [{"id": "E1", "embeddings": [[0.0] * DIM]}]}, "all zeros"),
])
def test_parse_rejects_malformed_documents(doc: object, message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        parse_embeddings(doc, DIM)


def test_parse_accepts_an_empty_fleet() -> None:
    assert len(parse_embeddings({"employees": []}, DIM)) == 0
