from __future__ import annotations

import itertools
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from fakeserver import FakeServer

from pi_kiosk.cards import builtin
from pi_kiosk.client import ServerClient
from pi_kiosk.errors import GalleryError
from pi_kiosk.store import load_gallery
from pi_kiosk.sync import GallerySync, parse_embeddings

ARCFACE = builtin("arcface")
DIM = 8
MODEL = "a" * 64  # the embedding model's sha256
OTHER = "b" * 64  # another model with the same dimension


def body(*people: tuple[str, int]) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {"employees": [{"id": pid, "embeddings": rng.standard_normal((n, DIM)).tolist()} for pid, n in people]}


def test_first_sync_caches_privately_then_etag_makes_it_free(tmp_path: Path, server: FakeServer) -> None:
    server.embeddings = body(("E001", 2), ("E002", 1))
    cache = tmp_path / "state" / "gallery.npz"
    sync = GallerySync(ServerClient(server.url, token="t0k"), cache, DIM, MODEL, ARCFACE)
    gallery = sync.fetch()
    assert gallery is not None and gallery.ids == ("E001", "E001", "E002")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert [p.name for p in cache.parent.iterdir()] == ["gallery.npz"]  # no temp file left behind
    assert server.gets[0]["Authorization"] == "Bearer t0k" and "If-None-Match" not in server.gets[0]
    assert sync.fetch() is None  # unchanged: 304
    assert server.gets[1]["If-None-Match"] == '"v1"'


def test_a_restarted_kiosk_starts_offline_from_the_cache(tmp_path: Path, server: FakeServer, refused_url: str) -> None:
    server.embeddings = body(("E001", 1))
    cache = tmp_path / "gallery.npz"
    online = GallerySync(ServerClient(server.url), cache, DIM, MODEL, ARCFACE)
    expected = online.fetch()
    assert expected is not None
    offline = GallerySync(ServerClient(refused_url), cache, DIM, MODEL, ARCFACE)
    gallery = offline.load_cached()
    assert gallery.ids == ("E001",)
    np.testing.assert_allclose(gallery.matrix, expected.matrix, rtol=1e-6)
    assert offline.etag == '"v1"'  # and the next sync asks If-None-Match
    with pytest.raises(requests.ConnectionError):
        offline.fetch()


def test_changed_gallery_replaces_the_cache(tmp_path: Path, server: FakeServer) -> None:
    cache = tmp_path / "gallery.npz"
    sync = GallerySync(ServerClient(server.url), cache, DIM, MODEL, ARCFACE)
    server.embeddings = body(("E001", 1))
    sync.fetch()
    server.embeddings, server.etag = body(("E001", 1), ("E003", 1)), '"v2"'
    gallery = sync.fetch()
    assert gallery is not None and gallery.people == 2
    assert load_gallery(cache, ARCFACE).etag == '"v2"'


def test_a_bad_answer_keeps_the_old_cache(tmp_path: Path, server: FakeServer) -> None:
    cache = tmp_path / "gallery.npz"
    sync = GallerySync(ServerClient(server.url), cache, DIM, MODEL, ARCFACE)
    server.embeddings = body(("E001", 1))
    sync.fetch()
    before = cache.read_bytes()
    server.embeddings, server.etag = {"employees": [{"id": "E009", "embeddings": [[1.0, 2.0]]}]}, '"v2"'
    with pytest.raises(GalleryError, match=r"employees\[0\] \(E009\): embedding of length 2, the model produces 8"):
        sync.fetch()
    assert cache.read_bytes() == before
    assert sync.etag == '"v1"'


def test_no_cache_means_an_empty_gallery(tmp_path: Path) -> None:
    gallery = GallerySync(ServerClient("http://x"), tmp_path / "none.npz", DIM, MODEL, ARCFACE).load_cached()
    assert len(gallery) == 0 and gallery.dim == DIM


def test_cache_of_another_model_with_the_same_dimension_is_not_used(tmp_path: Path, server: FakeServer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    server.embeddings = body(("E001", 1))
    cache = tmp_path / "g.npz"
    GallerySync(ServerClient(server.url), cache, DIM, OTHER, ARCFACE).fetch()
    before = cache.read_bytes()
    sync = GallerySync(ServerClient(server.url), cache, DIM, MODEL, ARCFACE)
    with caplog.at_level(logging.WARNING):
        assert len(sync.load_cached()) == 0
    assert sync.etag == ""
    (warning,) = caplog.records
    assert f"holds embeddings of model {OTHER[:12]}, not of the configured model {MODEL[:12]}" in warning.message
    assert "fetched again for this model on the next sync" in warning.message
    assert cache.read_bytes() == before  # not deleted: it is replaced by the next sync
    assert sync.fetch() is not None
    assert "If-None-Match" not in server.gets[-1]  # the other model's ETag is never sent
    assert load_gallery(cache, ARCFACE).model == MODEL


def test_cache_of_pi_kiosk_0_1_records_no_model_and_is_not_used(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "g.npz"
    rows = np.random.default_rng(0).standard_normal((1, DIM))
    np.savez(cache, ids=np.asarray(["E001"]), vectors=rows.astype(np.float32), etag=np.str_('"v1"'))  # 0.1's format
    with caplog.at_level(logging.WARNING):
        assert len(GallerySync(ServerClient("http://x"), cache, DIM, MODEL, ARCFACE).load_cached()) == 0
    assert "an unrecorded model (a file of pi-kiosk 0.1)" in caplog.text


def test_the_request_names_the_model(tmp_path: Path, server: FakeServer) -> None:
    GallerySync(ServerClient(server.url), tmp_path / "g.npz", DIM, MODEL, ARCFACE).fetch()
    assert server.get_queries == [{"model": [MODEL]}]


def test_an_answer_for_another_model_is_refused(tmp_path: Path, server: FakeServer) -> None:
    cache = tmp_path / "g.npz"
    sync = GallerySync(ServerClient(server.url), cache, DIM, MODEL, ARCFACE)
    server.embeddings = {"model": MODEL, **body(("E001", 1))}
    assert sync.fetch() is not None
    before = cache.read_bytes()
    server.embeddings, server.etag = {"model": OTHER, **body(("E002", 1))}, '"v2"'
    with pytest.raises(GalleryError, match=f"embeddings of model '{OTHER[:12]}', this kiosk's model is {MODEL[:12]}"):
        sync.fetch()
    assert cache.read_bytes() == before and sync.etag == '"v1"'


def test_probe_reads_the_status_without_the_gallery(tmp_path: Path, server: FakeServer) -> None:
    sync = GallerySync(ServerClient(server.url, token="t0k"), tmp_path / "g.npz", DIM, MODEL, ARCFACE)
    assert sync.probe() == 200
    server.get_status = 401
    assert sync.probe() == 401
    assert server.gets[-1]["Authorization"] == "Bearer t0k" and server.get_queries[-1] == {"model": [MODEL]}
    assert not (tmp_path / "g.npz").exists()


def test_corrupt_cache_is_reported(tmp_path: Path) -> None:
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(GalleryError, match="not a readable embeddings file"):
        GallerySync(ServerClient("http://x"), tmp_path / "g.npz", DIM, MODEL, ARCFACE).load_cached()


@pytest.mark.parametrize(("doc", "message"), [
    ([], '"employees" list'),
    ({"employees": [{"id": 5, "embeddings": [[0.0] * DIM]}]}, r'employees\[0\]: .*non-empty string "id"'),
    ({"employees": [{"id": "E1", "embeddings": []}]}, "must be a non-empty list"),
    ({"employees": [{"id": "E1", "embeddings": [["a"] * DIM]}]}, "only numbers"),
    ({"employees": [{"id": "E1", "embeddings": [[0.0] * DIM]}]}, "all zeros"),
])
def test_parse_rejects_malformed_documents(doc: object, message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        parse_embeddings(doc, DIM, ARCFACE)


def test_parse_accepts_an_empty_fleet() -> None:
    assert len(parse_embeddings({"employees": []}, DIM, ARCFACE)) == 0


# What a broken or hostile server can send to break the parser, and what it raises there.
BAD_ANSWERS = {
    "nested JSON (RecursionError)": b"[" * 100_000 + b"]" * 100_000,
    "huge integers (OverflowError)": b'{"employees": [{"id": "E1", "embeddings": [[' + b", ".join([b"9" * 400] * DIM)
                                     + b"]]}]}",
    "more than 4,300 digits (ValueError)": b'{"employees": [{"id": "E1", "embeddings": [[' + b"1" * 5000 + b"]]}]}",
    "a huge model name": b'{"model": ' + b"7" * 5000 + b', "employees": []}',
    "not JSON": b"<html>proxy error</html>",
    "not UTF-8": b'{"employees": ["\xff"]}',
}


@pytest.mark.parametrize("answer", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_a_bad_answer_is_a_gallery_error_and_the_last_good_gallery_stays(tmp_path: Path, server: FakeServer,
                                                                         answer: bytes) -> None:
    cache = tmp_path / "g.npz"
    sync = GallerySync(ServerClient(server.url), cache, DIM, MODEL, ARCFACE)
    server.embeddings = body(("E001", 1))
    assert sync.fetch() is not None
    before = cache.read_bytes()
    server.get_body, server.etag = answer, '"v2"'
    with pytest.raises(GalleryError, match=f"^{server.url}/api/employees/embeddings: bad answer: [A-Za-z]+Error: "):
        sync.fetch()
    assert cache.read_bytes() == before and sync.etag == '"v1"'


def test_an_answer_past_the_size_limit_is_refused(tmp_path: Path, server: FakeServer) -> None:
    sync = GallerySync(ServerClient(server.url), tmp_path / "g.npz", DIM, MODEL, ARCFACE, max_bytes=1_000_000)
    server.embeddings = body(*((f"E{i:04d}", 1) for i in range(3000)))  # ~0.5 MB: within the limit
    assert sync.fetch() is not None
    server.embeddings, server.etag = body(*((f"E{i:04d}", 2) for i in range(6000))), '"v2"'  # ~2 MB
    with pytest.raises(GalleryError, match=r"bad answer: larger than sync.max_response_mb = 1 MB$"):
        sync.fetch()
    assert sync.etag == '"v1"'


class EndlessAnswer:
    """A 200 whose body never ends (a hostile server, or a proxy gone wrong), counting what is read."""

    status_code = 200

    def __init__(self) -> None:
        self.read = 0

    def __enter__(self) -> EndlessAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def raise_for_status(self) -> None:
        pass

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        for _ in itertools.count():
            self.read += chunk_size
            yield b" " * chunk_size


def test_the_body_is_read_in_chunks_and_abandoned_at_the_limit(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client = ServerClient("http://srv")
    answer = EndlessAnswer()
    monkeypatch.setattr(client, "get_embeddings", lambda *args, **kwargs: answer)
    sync = GallerySync(client, tmp_path / "g.npz", DIM, MODEL, ARCFACE, max_bytes=5_000_000)
    with pytest.raises(GalleryError, match=r"larger than sync\.max_response_mb = 5 MB"):
        sync.fetch()
    assert 5_000_000 < answer.read <= 5_000_000 + (1 << 16)
