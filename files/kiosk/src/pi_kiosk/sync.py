"""Enrolled embeddings from the server, cached on disk so a kiosk starts and runs offline.

`GET {server}/api/employees/embeddings?model=<sha256 of the embedding model>` answers
    {"model": "<sha256>", "employees": [{"id": "E001", "embeddings": [[0.01, ...], ...]}, ...]}
("model" optional) with an ETag; the next request sends If-None-Match and a 304 costs nothing. Its optional
"erased": ["E007", ...] lists the people erased on the server lately (its tombstones): each answer's are handed
to `on_erased` (the service erases them from everything the kiosk stores: erase.py) before the new gallery is
cached, so that a kiosk stopped in between meets them again (its ETag is still the old one).
A new answer is validated (the model, when named, is ours; every vector finite, non-zero, of
the model's dimension) before it replaces the cached copy, so a bad response never takes a
working gallery away. "Bad" includes what a broken or hostile server can send to break the
parser: a body past `sync.max_response_mb` (read in chunks and abandoned there, so it never
fills memory: parsing peaks near 3.6x the body's size, Python's lists of floats), JSON nested
too deep (RecursionError), numbers too large (OverflowError, or ValueError past Python's 4,300
digits). Each is a GalleryError naming it, and the sync goes on at its next interval.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from .cards import Card
from .client import ServerClient
from .config import SyncConfig
from .errors import GalleryError
from .match import Gallery
from .redact import redact_url
from .store import load_for_model, save_gallery

log = logging.getLogger(__name__)

MB = 1_000_000
CHUNK_BYTES = 1 << 16
# What parsing and validating an answer can raise besides GalleryError: all of it says the answer is bad.
BAD_ANSWER = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)
STATES = ("ok", "failing", "stopped")
# Consecutive failed syncs after which /healthz says "degraded" (at the default interval, 15 minutes
# without a gallery update): one failure is a blip the next sync mends.
FAILURES_DEGRADED = 3


@dataclass(frozen=True)
class SyncStatus:
    state: str = "ok"  # one of STATES
    failures: int = 0  # consecutive failed syncs
    error: str = ""  # the last failure's, while failing

    def describe(self) -> str:
        if self.state == "stopped":
            return f"gallery sync stopped: its thread ended (last error: {self.error or 'none'})"
        return (f"gallery sync failed {self.failures} times in a row (last: {self.error}), recognising with the "
                "last good gallery")


def parse_embeddings(body: Any, dim: int, card: Card) -> Gallery:
    """Gallery from the server's JSON; GalleryError names the first bad entry."""
    if not isinstance(body, dict) or not isinstance(body.get("employees"), list):
        raise GalleryError('expected a JSON object with an "employees" list')
    ids: list[str] = []
    rows: list[Any] = []
    for n, entry in enumerate(body["employees"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise GalleryError(f'employees[{n}]: expected an object with a non-empty string "id"')
        vectors = entry.get("embeddings")
        if not isinstance(vectors, list) or not vectors:
            raise GalleryError(f'employees[{n}] ({entry["id"]}): "embeddings" must be a non-empty list')
        for v in vectors:
            if not isinstance(v, list) or len(v) != dim:
                got = len(v) if isinstance(v, list) else type(v).__name__
                raise GalleryError(f"employees[{n}] ({entry['id']}): embedding of length {got}, "
                                   f"the model produces {dim}")
            ids.append(entry["id"])
            rows.append(v)
    if not ids:
        return Gallery.empty(dim, card)
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise GalleryError("embeddings must contain only numbers") from None
    return Gallery(ids, matrix, card)


def parse_erased(body: dict[str, Any]) -> frozenset[str]:
    """The answer's tombstones (none when it has no "erased": a server without erasure)."""
    erased = body.get("erased", [])
    if not isinstance(erased, list) or not all(isinstance(e, str) and e for e in erased):
        raise GalleryError('"erased" must be a list of non-empty string ids')
    return frozenset(erased)


class GallerySync:
    def __init__(self, server: ServerClient, cache_path: Path, dim: int, model: str, card: Card, *,
                 max_bytes: int = SyncConfig.max_response_mb * MB,
                 on_erased: Callable[[frozenset[str]], None] | None = None) -> None:
        self.server = server
        self.card = card  # the model's: how the synced embeddings are matched
        self.url = redact_url(server.embeddings_url)  # for messages
        self.max_bytes = max_bytes
        self.cache_path = cache_path
        self.dim = dim
        self.model = model  # the embedding model's sha256
        self.etag = ""
        self.on_erased = on_erased  # called with an answer's tombstones before it is cached

    def load_cached(self) -> Gallery:
        """The last gallery synced for this model, or an empty one (first start, or a new model)."""
        stored = load_for_model(self.cache_path, self.model, self.card,
                                "it is fetched again for this model on the next sync")
        if stored is None:
            return Gallery.empty(self.dim, self.card)
        self.etag = stored.etag  # only an ETag of this model's gallery is ever sent
        return stored.gallery

    def probe(self) -> int:
        """The HTTP status a sync would get now, without downloading the gallery (pi-kiosk check)."""
        with self.server.get_embeddings(self.model, self.etag, stream=True) as resp:
            return resp.status_code

    def fetch(self) -> Gallery | None:
        """A new gallery, or None if unchanged (304). Raises requests/GalleryError on failure."""
        with self.server.get_embeddings(self.model, self.etag, stream=True) as resp:
            if resp.status_code == 304:
                return None
            resp.raise_for_status()
            data = self._read(resp)
            etag = resp.headers.get("ETag", "")
        try:
            body = json.loads(data)
            if isinstance(body, dict) and "model" in body and body["model"] != self.model:
                raise GalleryError(f"{self.url}: the answer holds embeddings of model {str(body['model'])[:12]!r}, "
                                   f"this kiosk's model is {self.model[:12]}; keeping the cached gallery")
            gallery = parse_embeddings(body, self.dim, self.card)
            erased = parse_erased(body)
        except BAD_ANSWER as exc:
            raise GalleryError(f"{self.url}: bad answer: {type(exc).__name__}: {str(exc)[:200]}") from None
        if erased:
            gallery = gallery.without(erased)  # an id both enrolled and erased in one answer: the erasure wins
            if self.on_erased is not None:
                self.on_erased(erased)
        save_gallery(self.cache_path, gallery, self.model, etag)
        self.etag = etag
        # Counts only: the embeddings themselves are never logged.
        log.info("gallery synced: %d people, %d embeddings", gallery.people, len(gallery))
        return gallery

    def _read(self, resp: requests.Response) -> bytearray:
        """The body, decoded, up to max_bytes; past it the download is abandoned."""
        data = bytearray()
        for chunk in resp.iter_content(CHUNK_BYTES):
            data += chunk
            if len(data) > self.max_bytes:
                raise GalleryError(f"{self.url}: bad answer: larger than sync.max_response_mb = "
                                   f"{self.max_bytes / MB:g} MB")
        return data
