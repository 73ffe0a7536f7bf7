"""Top-1 matching of one embedding against the enrolled gallery.

The gallery is one contiguous float32 matrix of L2-normalised rows (several rows may belong to
one person), so matching is a single matrix-vector product into a preallocated score vector and
an argmax. The product runs in ONNX Runtime (one Gemm, input and output bound to the gallery's
buffers), not numpy: numpy's OpenBLAS either runs it on one thread (1.0-1.4 ms for 10,000 x 512
here, 5x ONNX Runtime's 0.25 ms) or with workers that spin ~0.1 s after every product, which
kept a kiosk with a face in view at 112% of a core instead of 8-18%.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from .errors import GalleryError
from .runtime import session_options

F32 = npt.NDArray[np.float32]


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
        self._query: F32 = np.empty((1, matrix.shape[1]), dtype=np.float32)
        self._binding: Any = None  # bound at the first match: most galleries made are merged away

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
        if self._binding is None:
            self._binding = _bind(self.matrix, self._query, self._scores)
        self._query[0] = embedding
        _scorer().run_with_iobinding(self._binding)
        best = int(np.argmax(self._scores))
        score = float(self._scores[best])
        return Match(self.ids[best] if score >= threshold else None, score)


@functools.cache
def _scorer() -> ort.InferenceSession:
    """scores (1 x n) = query (1 x d) . gallery (n x d) transposed, for any n and d."""
    h = onnx.helper
    f = onnx.TensorProto.FLOAT
    graph = h.make_graph([h.make_node("Gemm", ["query", "gallery"], ["scores"], transB=1)], "match",
                         [h.make_tensor_value_info("query", f, [1, "d"]),
                          h.make_tensor_value_info("gallery", f, ["n", "d"])],
                         [h.make_tensor_value_info("scores", f, [1, "n"])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    return ort.InferenceSession(model.SerializeToString(), session_options(0), providers=["CPUExecutionProvider"])


def _bind(matrix: F32, query: F32, scores: F32) -> Any:
    n, d = matrix.shape
    binding = _scorer().io_binding()
    binding.bind_input("query", "cpu", 0, np.float32, [1, d], query.ctypes.data)
    binding.bind_input("gallery", "cpu", 0, np.float32, [n, d], matrix.ctypes.data)
    binding.bind_output("scores", "cpu", 0, np.float32, [1, n], scores.ctypes.data)
    return binding
