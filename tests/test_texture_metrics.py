"""models.metrics.texture: patch-distribution distance and gradient-energy ratio."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from models.metrics.texture import (
    background_ring,
    gradient_energy,
    gradient_energy_ratio,
    laplacian_pyramid,
    masked_swd,
    sliced_wasserstein,
)

H, W = 96, 128


def _texture(seed: int = 0) -> np.ndarray:
    """A stationary texture: band-limited coloured noise plus stripes, uint8."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((H, W, 3)).astype(np.float32), (0, 0), 1.0)
    v, u = np.mgrid[0:H, 0:W]
    stripes = 0.5 + 0.5 * np.sin(u / 3.0 + v / 7.0)
    img = 0.35 + 0.4 * (noise - noise.mean()) / noise.std() * 0.25 + 0.25 * stripes[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[20:76, 40:100] = True
    return m


def test_identical_images_have_zero_distance():
    img = _texture()
    r = masked_swd(img, img, _mask())
    assert r["swd"] == 0.0 and len(r["per_level"]) == 3 and r["patches"] > 1000


def test_copied_texture_is_closer_than_a_smear():
    """The property the painter is judged on: texture copied from elsewhere (not pixel
    aligned) has the reference's patch distribution; a smear of the same colours does not."""
    real = _texture(0)
    other = _texture(1)  # the same texture, another realisation: what a copy looks like
    smear = cv2.GaussianBlur(real, (0, 0), 6.0)
    flat = np.broadcast_to(real.reshape(-1, 3).mean(0).astype(np.uint8), real.shape).copy()
    m = _mask()
    d_copy = masked_swd(other, real, m)["swd"]
    d_smear = masked_swd(smear, real, m)["swd"]
    d_flat = masked_swd(flat, real, m)["swd"]
    assert d_copy < 0.5 * d_smear
    assert d_smear < d_flat * 1.5  # both are far; the flat fill is not closer than the smear
    # colour shifts count: the patches are normalised with the reference's statistics
    shifted = np.clip(other.astype(int) + 60, 0, 255).astype(np.uint8)
    assert masked_swd(shifted, real, m)["swd"] > 2 * d_copy


def test_swd_is_deterministic_and_uses_reference_mask():
    real, other = _texture(0), _texture(2)
    m = _mask()
    a = masked_swd(other, real, m, seed=3)
    assert a == masked_swd(other, real, m, seed=3)
    # different masks for image and reference (painted pixels vs the seen ones)
    seen = ~m
    r = masked_swd(real, real, m, reference_mask=seen)
    assert 0 < r["swd"] < masked_swd(cv2.GaussianBlur(real, (0, 0), 6), real, m, seen)["swd"]
    # an empty mask has no distance
    assert math.isnan(masked_swd(real, real, np.zeros((H, W), bool))["swd"])


def test_sliced_wasserstein_of_shifted_points():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 4))
    assert sliced_wasserstein(a, a) == 0.0
    # shifting every point by d along one axis: W1 along direction u is |u . d|
    d = np.array([1.0, 0, 0, 0])
    sw = sliced_wasserstein(a, a + d, n_dirs=2048)
    # E|u_1| for u uniform on the unit sphere in 4-D: Gamma(2) / (sqrt(pi) Gamma(2.5)) = 0.4244
    assert sw == pytest.approx(0.4244, rel=0.05)


def test_laplacian_pyramid_reconstructs():
    img = _texture()
    bands = laplacian_pyramid(img, 3)
    rec = bands[-1]
    for b in reversed(bands[:-1]):
        rec = cv2.pyrUp(rec, dstsize=(b.shape[1], b.shape[0])) + b
    np.testing.assert_allclose(rec, img.astype(np.float32) / 255, atol=1e-5)


def test_gradient_energy_ratio_smear_near_zero_texture_near_one():
    real = _texture()
    m = _mask()
    painted_texture = real.copy()
    painted_texture[m] = _texture(5)[m]
    smear = real.copy()
    smear[m] = cv2.GaussianBlur(real, (0, 0), 8.0)[m]
    assert gradient_energy_ratio(painted_texture, m, ~m) == pytest.approx(1.0, abs=0.25)
    assert gradient_energy_ratio(smear, m, ~m) < 0.1
    # the seam at the mask border does not count (only pixels whose 3x3 lies inside)
    step = np.zeros((H, W, 3), np.uint8)
    step[m] = 255
    assert gradient_energy(step, m) == 0.0
    assert math.isnan(gradient_energy_ratio(step, m, np.zeros((H, W), bool)))


def test_energy_vs_truth_reads_texture_against_the_aligned_real_frame():
    """TUM's texture figure against the real frame's same pixels: the truth itself is 1, a
    blurred copy (a smear) far below, added noise above, a flat truth gives nan."""
    from studio.evaluation.painter import energy_vs_truth

    rng = np.random.default_rng(0)
    real = cv2.GaussianBlur(rng.random((64, 80, 3)).astype(np.float32), (0, 0), 1.0)
    mask = np.zeros((64, 80), bool)
    mask[8:56, 10:70] = True
    assert energy_vs_truth(real, real, mask) == pytest.approx(1.0)
    smear = cv2.GaussianBlur(real, (0, 0), 4.0)
    assert energy_vs_truth(smear, real, mask) < 0.1
    noisy = np.clip(real + 0.1 * rng.standard_normal(real.shape), 0, 1).astype(np.float32)
    assert energy_vs_truth(noisy, real, mask) > 2.0
    assert np.isnan(energy_vs_truth(real, np.full_like(real, 0.5), mask))


def _ring_reference(painted, seen, depth, width, tol):
    """Slow twin of background_ring: for every seen pixel, the nearest painted pixel by brute
    force (Euclidean; ties by scan order), then the same two tests."""
    H, W = painted.shape
    pts = np.argwhere(painted)
    out = np.zeros((H, W), bool)
    for y in range(H):
        for x in range(W):
            if not seen[y, x] or painted[y, x]:
                continue
            d2 = ((pts - (y, x)) ** 2).sum(1)
            k = int(np.argmin(d2))
            near = depth[pts[k][0], pts[k][1]]
            out[y, x] = d2[k] <= width**2 and depth[y, x] >= near * math.exp(-tol)
    return out


def test_background_ring_keeps_the_layer_behind_the_paint_beside_it():
    painted = np.zeros((40, 60), bool)
    painted[10:30, 25:32] = True
    depth = np.full((40, 60), 5.0, np.float32)
    depth[:, 15:25] = 1.0  # an object in front, left of the hole
    seen = ~painted
    ring = background_ring(painted, seen, depth, width=6)
    assert ring[20, 33:38].all() and not ring[20, 39:].any()  # 6 px on the far side
    assert not ring[:, 15:25].any()  # the object in front is not what the hole continues
    assert not ring[painted].any()
    # Against the brute-force twin (the transform's 5x5 mask is a close approximation of
    # Euclidean distance: the two may differ only at the ring's outer edge).
    inner = _ring_reference(painted, seen, depth, 5, 0.15)
    outer = _ring_reference(painted, seen, depth, 7, 0.15)
    assert ring[inner].all() and not ring[~outer].any()
    assert not background_ring(np.zeros_like(painted), seen, depth).any()
