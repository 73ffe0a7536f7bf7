"""Enrolled embeddings from the server, cached on disk so a kiosk starts and runs offline.

`GET {server}/api/employees/embeddings?model=<sha256 of the embedding model>` answers
    {"model": "<sha256>", "employees": [{"id": "E001", "embeddings": [[0.01, ...], ...]}, ...]}
("model" optional) with an ETag; the next request sends If-None-Match and a 304 costs nothing.
A new answer is validated (the model, when named, is ours; every vector finite, non-zero, of
the model's dimension) before it replaces the cached copy, so a bad response never takes a
working gallery away.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .cards import Card
from .client import ServerClient
from .errors import GalleryError
from .match import Gallery
from .store import load_for_model, save_gallery

log = logging.getLogger(__name__)


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


class GallerySync:
    def __init__(self, server: ServerClient, cache_path: Path, dim: int, model: str, card: Card) -> None:
        self.server = server
        self.card = card  # the model's: how the synced embeddings are matched
        self.url = server.embeddings_url
        self.cache_path = cache_path
        self.dim = dim
        self.model = model  # the embedding model's sha256
        self.etag = ""

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
        resp = self.server.get_embeddings(self.model, self.etag)
        if resp.status_code == 304:
            return None
        resp.raise_for_status()
        try:
            body = resp.json()
        except ValueError:
            raise GalleryError(f"{self.url}: response is not JSON") from None
        if isinstance(body, dict) and "model" in body and body["model"] != self.model:
            raise GalleryError(f"{self.url}: the answer holds embeddings of model {str(body['model'])[:12]!r}, "
                               f"this kiosk's model is {self.model[:12]}; keeping the cached gallery")
        gallery = parse_embeddings(body, self.dim, self.card)
        etag = resp.headers.get("ETag", "")
        save_gallery(self.cache_path, gallery, self.model, etag)
        self.etag = etag
        # Counts only: the embeddings themselves are never logged.
        log.info("gallery synced: %d people, %d embeddings", gallery.people, len(gallery))
        return gallery
