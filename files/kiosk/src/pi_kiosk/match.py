"""Top-1 matching of one embedding against the enrolled gallery.

The gallery is one contiguous float32 matrix of L2-normalised rows (several rows may belong to
one person), so matching is a single matrix-vector product and an argmax.

A large gallery is memory-bound: 10,000 x 512 float32 is 20 MB read per face, which another
process can slow several-fold (and a Pi 4 has a few GB/s). From COARSE_MIN_ROWS rows on, the
product is first done on an int8 copy (a quarter of the traffic) by ONNX Runtime's integer GEMV.
Each int8 score comes with a bound on its rounding error, so the rows that could still be the
best are known exactly; only those are scored in float32. The result is the same top-1 and the
same float32 cosine as the plain product, at a fraction of the memory traffic.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import GalleryError
from .runtime import open_session

F32 = npt.NDArray[np.float32]
DEFAULT_THRESHOLD = 0.40
COARSE_MIN_ROWS = 2048  # below this the float32 product is as fast


@functools.cache
def _int8_dot() -> Any:
    """ONNX Runtime session for uint8[1, D] x int8[D, N] -> int32[1, N] (a 162-byte shipped graph)."""
    with resources.as_file(resources.files("pi_kiosk") / "models" / "gallery_int8_dot.onnx") as path:
        return open_session(path, key="bundled gallery_int8_dot.onnx", threads=1)


class _Int8Rows:
    """Rows quantised to int8 with one scale per row, laid out for ONNX Runtime's MatMulInteger."""

    def __init__(self, matrix: F32) -> None:
        rows, dim = matrix.shape
        scale = np.abs(matrix).max(axis=1) / np.float32(127)
        q = np.rint(matrix / scale[:, None]).astype(np.int8)
        self._rows_t = np.ascontiguousarray(q.T)
        self._scale = scale.astype(np.float32)
        # The probe is uint8 with zero point 128: subtract 128 * row sum from each product.
        self._offset = 128 * q.sum(axis=1, dtype=np.int32)
        # |exact - approx| <= probe_step * (L1(row) / 2 + 3 * dim * row_step / 4) + row_step * L1(probe) / 2,
        # from rounding each element by at most half a step on both sides.
        self._bound_probe = (np.abs(matrix).sum(axis=1) / 2 + 0.75 * dim * scale).astype(np.float32)
        self._probe = np.empty((1, dim), dtype=np.uint8)
        self._approx = np.empty(rows, dtype=np.float32)
        self._error = np.empty(rows, dtype=np.float32)
        self._tmp = np.empty(rows, dtype=np.float32)
        self._session = _int8_dot()

    def candidates(self, embedding: F32) -> npt.NDArray[np.intp]:
        """Every row whose exact score may be the highest (usually one or a handful)."""
        peak = float(np.abs(embedding).max())
        if peak == 0:
            return np.arange(self._approx.shape[0], dtype=np.intp)
        step = peak / 127
        np.clip(np.rint(embedding * np.float32(1 / step)) + 128, 0, 255, out=self._probe[0], casting="unsafe")
        dots = self._session.run(None, {"probe": self._probe, "rows_t": self._rows_t})[0][0]
        np.subtract(dots, self._offset, out=dots)
        np.multiply(dots, self._scale, out=self._approx)
        self._approx *= np.float32(step)
        np.multiply(self._bound_probe, np.float32(step), out=self._error)
        np.multiply(self._scale, np.float32(np.abs(embedding).sum() / 2), out=self._tmp)
        self._error += self._tmp
        self._error += np.float32(1e-5)  # float32 rounding of the sums themselves
        floor = float((self._approx - self._error).max())
        np.add(self._approx, self._error, out=self._tmp)
        return np.flatnonzero(self._tmp >= floor)


@dataclass(frozen=True)
class Match:
    employee_id: str | None  # None: unknown (below the threshold, or nobody enrolled)
    score: float  # cosine similarity of the best row; -1.0 when the gallery is empty


class Gallery:
    def __init__(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        matrix = np.array(vectors, dtype=np.float32, order="C", ndmin=2)
        if matrix.shape[0] != len(ids):
            raise GalleryError(f"{len(ids)} ids but {matrix.shape[0]} embeddings")
        if matrix.ndim != 2:
            raise GalleryError(f"embeddings must form a 2-D matrix, got shape {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
            raise GalleryError(f"embedding {bad} (id {ids[bad]!r}) contains NaN or infinity")
        norms = np.linalg.norm(matrix, axis=1)
        if np.any(norms == 0):
            bad = int(np.flatnonzero(norms == 0)[0])
            raise GalleryError(f"embedding {bad} (id {ids[bad]!r}) is all zeros")
        for i, employee in enumerate(ids):
            if not employee:
                raise GalleryError(f"embedding {i} has an empty employee id")
        matrix /= norms[:, None]
        self.ids: tuple[str, ...] = tuple(ids)
        self.matrix: F32 = matrix
        self._scores: F32 = np.empty(len(ids), dtype=np.float32)
        self._int8 = _Int8Rows(matrix) if len(ids) >= COARSE_MIN_ROWS else None

    @classmethod
    def empty(cls, dim: int) -> Gallery:
        return cls([], np.empty((0, dim), dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def people(self) -> int:
        return len(set(self.ids))

    def merged(self, other: Gallery) -> Gallery:
        if not len(other):
            return self
        if not len(self):
            return other
        if other.dim != self.dim:
            raise GalleryError(f"cannot merge {other.dim}-d embeddings into a {self.dim}-d gallery")
        return Gallery(self.ids + other.ids, np.concatenate([self.matrix, other.matrix]))

    def match(self, embedding: F32, threshold: float) -> Match:
        """Best row for an L2-normalised embedding; a score equal to the threshold matches."""
        if not self.ids:
            return Match(None, -1.0)
        if self._int8 is None:
            np.dot(self.matrix, embedding, out=self._scores)
            best = int(np.argmax(self._scores))
            score = float(self._scores[best])
        else:
            rows = self._int8.candidates(embedding)
            exact = self.matrix[rows] @ embedding
            pick = int(np.argmax(exact))
            best, score = int(rows[pick]), float(exact[pick])
        return Match(self.ids[best] if score >= threshold else None, score)
