from __future__ import annotations

import numpy as np
import pytest

from pi_kiosk.cards import builtin
from pi_kiosk.errors import GalleryError
from pi_kiosk.match import Gallery, Match

ARCFACE = builtin("arcface")
DEFAULT_THRESHOLD = ARCFACE.threshold  # the one default, in the arcface card


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_rows_are_normalised_into_one_float32_matrix() -> None:
    g = Gallery(["A", "B"], [[3.0, 4.0], [0.0, 2.0]], ARCFACE)
    assert g.matrix.dtype == np.float32 and g.matrix.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(g.matrix, axis=1), 1.0, rtol=1e-6)


def test_top1_over_several_rows_per_person() -> None:
    g = Gallery(["A", "A", "B"], [[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], ARCFACE)
    m = g.match(unit(0.7, 0.7, 0.1), 0.4)
    assert m.employee_id == "A"
    assert m.score == pytest.approx(float(unit(0.8, 0.6, 0) @ unit(0.7, 0.7, 0.1)), abs=1e-6)
    assert g.match(unit(0, 0.1, 1), 0.4).employee_id == "B"
    assert g.people == 2 and len(g) == 3


def test_threshold_edges() -> None:
    g = Gallery(["A"], [[1.0, 0.0]], ARCFACE)
    probe = np.array([0.5, np.sqrt(0.75)], dtype=np.float32)  # cosine exactly 0.5 in float32
    score = float(g.matrix[0] @ probe)
    assert g.match(probe, score).employee_id == "A"  # equal to the threshold: a match
    assert g.match(probe, np.nextafter(np.float32(score), np.float32(1))).employee_id is None
    assert g.match(unit(-1, 0), -1.0).employee_id == "A"  # -1 accepts everything
    unknown = g.match(unit(0, 1), 0.4)
    assert unknown.employee_id is None and unknown.score == pytest.approx(0.0, abs=1e-6)


def test_default_threshold_is_stricter_than_the_guides() -> None:
    guide_cosine = 2 * 0.55 - 1  # (cos + 1) / 2 > 0.55  <=>  cos > 0.10
    g = Gallery(["A"], [[1.0, 0.0]], ARCFACE)
    stranger = unit(0.2, 0.98)  # cosine ~0.2: a different person for ArcFace-family models
    by_the_guide = g.match(stranger, guide_cosine)
    assert by_the_guide.employee_id == "A" and (by_the_guide.score + 1) / 2 > 0.55  # the guide's rule takes him
    assert g.match(stranger, DEFAULT_THRESHOLD).employee_id is None


def test_empty_gallery_is_always_unknown() -> None:
    m = Gallery.empty(512, ARCFACE).match(unit(*([1.0] * 512)), 0.4)
    assert m.employee_id is None and m.score == -1.0


@pytest.mark.parametrize(("ids", "rows", "message"), [
    (["A"], [[0.0, 0.0]], "embedding 0 .id 'A'. is all zeros"),
    (["A", "B"], [[1.0, 0.0], [np.nan, 1.0]], "embedding 1 .id 'B'. contains NaN"),
    (["A"], [[1.0, 0.0], [0.0, 1.0]], "1 ids but 2 embeddings"),
    ([""], [[1.0, 0.0]], "empty employee id"),
])
def test_bad_galleries_are_refused(ids: list[str], rows: list[list[float]], message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        Gallery(ids, rows, ARCFACE)


def test_merging_checks_dimensions() -> None:
    a, b = Gallery(["A"], [[1.0, 0.0]], ARCFACE), Gallery(["B"], [[0.0, 1.0]], ARCFACE)
    assert a.merged(b).ids == ("A", "B")
    assert Gallery.empty(2, ARCFACE).merged(a) is a
    with pytest.raises(GalleryError, match="cannot merge 3-d"):
        a.merged(Gallery(["C"], [[1.0, 0.0, 0.0]], ARCFACE))


def test_matching_10000_is_one_matrix_vector_product() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((10_000, 512)).astype(np.float32)
    g = Gallery([f"E{i}" for i in range(10_000)], rows, ARCFACE)
    probe = g.matrix[1234] + np.float32(0.01) * rng.standard_normal(512).astype(np.float32)
    probe /= np.linalg.norm(probe)
    assert g.match(probe, 0.4).employee_id == "E1234"


@pytest.mark.parametrize("rows, dim", [(1, 128), (3, 512), (10_000, 512)])
def test_the_scores_are_the_cosine_similarities_numpy_computes(rows: int, dim: int) -> None:
    rng = np.random.default_rng(rows)
    g = Gallery([f"E{i}" for i in range(rows)], rng.standard_normal((rows, dim)).astype(np.float32), ARCFACE)
    probe = rng.standard_normal(dim).astype(np.float32)
    probe /= np.linalg.norm(probe)
    expected = g.matrix @ probe
    match = g.match(probe, -1.0)
    assert match.employee_id == f"E{int(np.argmax(expected))}"
    assert match.score == pytest.approx(float(expected.max()), abs=1e-5)


def test_galleries_alive_side_by_side_each_match_against_their_own_rows() -> None:
    a = Gallery(["A1", "A2"], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], ARCFACE)
    b = Gallery(["B1"], [[0.0, 0.0, 1.0]], ARCFACE)
    probe = np.array([0.0, 0.6, 0.8], dtype=np.float32)
    for _ in range(2):  # alternating: each keeps its own bound buffers
        assert a.match(probe, 0.0) == Match("A2", pytest.approx(0.6))
        assert b.match(probe, 0.0) == Match("B1", pytest.approx(0.8))
