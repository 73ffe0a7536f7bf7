from __future__ import annotations

import cv2
import numpy as np
import pytest

from pi_kiosk.align import ARCFACE_TEMPLATE, Aligner, similarity_transform
from pi_kiosk.cards import builtin

ARCFACE = builtin("arcface")
SIZE = ARCFACE.width


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize(("scale", "degrees", "tx", "ty"), [(1, 0, 0, 0), (2.5, 30, 200, 80), (0.7, -45, 10, 300)])
def test_recovers_the_inverse_of_a_known_similarity(scale: float, degrees: float, tx: float, ty: float) -> None:
    forward = similarity(scale, degrees, tx, ty)
    landmarks = apply(forward, ARCFACE_TEMPLATE.astype(np.float64))
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(apply(matrix, landmarks), ARCFACE_TEMPLATE, atol=1e-4)
    # The estimate is the exact inverse: the scale part is 1/scale.
    assert np.linalg.det(matrix[:, :2]) == pytest.approx(1 / scale**2, rel=1e-6)


def test_least_squares_under_noise_keeps_a_similarity() -> None:
    rng = np.random.default_rng(0)
    landmarks = apply(similarity(3, 10, 100, 50), ARCFACE_TEMPLATE.astype(np.float64)) + rng.normal(0, 1.5, (5, 2))
    m = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    a, b = m[0, 0], m[0, 1]
    assert m[1, 1] == pytest.approx(a) and m[1, 0] == pytest.approx(-b)  # rotation + uniform scale only
    assert np.abs(apply(m, landmarks) - ARCFACE_TEMPLATE).max() < 2.0


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The general (any dimension) Umeyama estimate with an SVD, restricted to proper rotations."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(dc.T @ sc / len(src))
    sign = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum()) / float((sc**2).sum() / len(src))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def test_closed_form_equals_the_svd_solution() -> None:
    rng = np.random.default_rng(1)
    template = ARCFACE_TEMPLATE.astype(np.float64)
    for k in range(200):
        points = rng.uniform(0, 640, (5, 2)) * (np.array([-1, 1]) if k % 3 == 0 else 1)  # some mirrored
        np.testing.assert_allclose(similarity_transform(points, ARCFACE_TEMPLATE), umeyama(points, template), atol=1e-9)


def test_mirrored_landmarks_are_not_reflected() -> None:
    mirrored = ARCFACE_TEMPLATE * np.array([-1, 1]) + np.array([SIZE, 0])
    m = similarity_transform(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0  # a proper rotation, never a reflection


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.full((5, 2), 7.0), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity_transform(np.zeros((5, 3)), ARCFACE_TEMPLATE)


def test_warp_puts_landmarks_on_the_template_and_reuses_its_buffer() -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    landmarks = apply(similarity(2.0, 20, 250, 120), ARCFACE_TEMPLATE.astype(np.float64))
    for x, y in landmarks:
        cv2.circle(frame, (round(x), round(y)), 4, (255, 255, 255), -1)
    aligner = Aligner(ARCFACE)
    out = aligner.align(frame, landmarks.astype(np.float32))
    assert out.shape == (SIZE, SIZE, 3)
    gray = out[:, :, 0].astype(float)
    for x, y in ARCFACE_TEMPLATE:
        assert gray[round(y), round(x)] > 200, f"no dot at template point ({x}, {y})"
    assert gray.mean() < 40  # only the dots, not a resized frame
    again = aligner.align(frame, landmarks.astype(np.float32))
    assert again is out
