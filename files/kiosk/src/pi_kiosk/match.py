"""Top-1 matching of one embedding against the enrolled gallery, by the card's metric.

The gallery is one contiguous float32 matrix (several rows may belong to one person), so matching
is a single matrix-vector product into a preallocated score vector and an argmax. The product runs
in ONNX Runtime (one Gemm, inputs and output bound to the gallery's buffers), not numpy: numpy's
OpenBLAS either runs it on one thread (1.0-1.4 ms for 10,000 x 512 here, 5x ONNX Runtime's
0.25 ms) or with workers that spin ~0.1 s after every product, which kept a kiosk with a face in
view at 112% of a core instead of 8-18%.

Cosine (rows and query L2-normalised): scores = query . rows, the best is the largest, a match at
or above the threshold. Euclidean (dlib: distance below 0.6 is the same person): as
||q - b||^2 = ||q||^2 + ||b||^2 - 2 q.b and ||q||^2 is the same for every row, the nearest row is
the argmax of q.b - ||b||^2 / 2: the same Gemm, then one in-place add of -||b||^2 / 2, precomputed
once per gallery (Gemm's own C input doubled the product's time in ONNX Runtime: 0.29 -> 0.50 ms
for 10,000 x 128 here, against 0.30 ms with the add). The best row's distance is then computed
directly from the two vectors (into a preallocated buffer), so the decision is dlib's rule on the
exact distance, not on the expansion's rounding. Rows are L2-normalised when the card says so
(cosine always), and kept as they are otherwise (dlib's raw descriptors).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from .cards import Card
from .errors import GalleryError
from .runtime import session_options

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Match:
    employee_id: str | None  # None: unknown (beyond the threshold, or nobody enrolled)
    # The card's measure for the best row: cosine similarity (-1.0 when the gallery is empty) or
    # Euclidean distance (infinity when it is empty).
    score: float


class Gallery:
    def __init__(self, ids: Sequence[str], vectors: npt.ArrayLike, card: Card) -> None:
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
        if card.l2_normalize:
            matrix /= norms[:, None]
        self.card = card
        self.ids: tuple[str, ...] = tuple(ids)
        self._people = frozenset(self.ids)
        self.matrix: F32 = matrix
        self._euclidean = card.metric == "euclidean"
        # -||b||^2 / 2 per row: computed once per gallery, never per frame.
        self._half_norms: F32 = ((np.einsum("ij,ij->i", matrix, matrix) * np.float32(-0.5)).astype(np.float32)
                                 if self._euclidean else np.empty(0, dtype=np.float32))
        self._scores: F32 = np.empty(len(ids), dtype=np.float32)
        self._query: F32 = np.empty((1, matrix.shape[1]), dtype=np.float32)
        self._diff: F32 = np.empty(matrix.shape[1], dtype=np.float32)
        self._binding: Any = None  # bound at the first match: most galleries made are merged away

    @classmethod
    def empty(cls, dim: int, card: Card) -> Gallery:
        return cls([], np.empty((0, dim), dtype=np.float32), card)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def people(self) -> int:
        return len(self._people)

    def __contains__(self, employee_id: object) -> bool:
        return employee_id in self._people

    def without(self, ids: Collection[str]) -> Gallery:
        """This gallery less the rows of `ids` (itself when it holds none of them)."""
        if self._people.isdisjoint(ids):
            return self
        keep = [n for n, employee in enumerate(self.ids) if employee not in ids]
        return Gallery([self.ids[n] for n in keep], self.matrix[keep], self.card)

    def merged(self, other: Gallery) -> Gallery:
        if (other.card.metric, other.card.l2_normalize) != (self.card.metric, self.card.l2_normalize):
            raise GalleryError(f"cannot merge embeddings of {other.card.origin} into a gallery of {self.card.origin}")
        if not len(other):
            return self
        if not len(self):
            return other
        if other.dim != self.dim:
            raise GalleryError(f"cannot merge {other.dim}-d embeddings into a {self.dim}-d gallery")
        return Gallery(self.ids + other.ids, np.concatenate([self.matrix, other.matrix]), self.card)

    def match(self, embedding: F32, threshold: float) -> Match:
        """Best row for an embedding from the card's embedder, by the card's rule: a cosine similarity
        at or above the threshold, or a Euclidean distance below it, matches."""
        if not self.ids:
            return Match(None, self.card.worst_score)
        if self._binding is None:
            self._binding = _bind(self.matrix, self._query, self._scores)
        self._query[0] = embedding
        _scorer().run_with_iobinding(self._binding)
        if self._euclidean:
            np.add(self._scores, self._half_norms, out=self._scores)  # q.b - ||b||^2 / 2: the nearest is largest
        best = int(np.argmax(self._scores))
        if self._euclidean:
            diff = np.subtract(self._query[0], self.matrix[best], out=self._diff)
            score = math.sqrt(float(diff.dot(diff)))
            matched = score < threshold
        else:
            score = float(self._scores[best])
            matched = score >= threshold
        return Match(self.ids[best] if matched else None, score)


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
