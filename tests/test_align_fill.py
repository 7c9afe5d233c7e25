"""models.geometry.align (robust scale/shift) and models.geometry.fill (push-pull, background-first hole filling)."""

from __future__ import annotations

import pytest
import torch

from models.geometry.align import Alignment, align_scale_shift
from models.geometry.fill import background_known, fill_depth, inpaint_rgb, push_pull

H, W = 48, 64
FAR, NEAR_D = 5.0, 1.0
BG_RGB = torch.tensor([0.1, 0.2, 0.9])
FG_RGB = torch.tensor([0.9, 0.3, 0.1])


def _outlier_problem(frac: float, seed: int = 0, scale: float = 1.7, shift: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(H, W, generator=g) * 4 + 0.5
    target = pred * scale + shift
    out = torch.rand(H, W, generator=g) < frac
    # outliers: wrong by a factor 0.2 .. 0.7 or 1.5 .. 2.5 (occlusion boundaries, bad estimates)
    factor = torch.rand(H, W, generator=g)
    factor = torch.where(factor < 0.5, 0.2 + factor, 1.0 + factor * 1.5 + 0.25)
    target = torch.where(out, target * factor, target)
    return pred, target, out


# ---------------------------------------------------------------------------------------------
# align_scale_shift


@pytest.mark.parametrize("frac", [0.0, 0.15])
def test_align_recovers_scale_shift_with_some_outliers(frac):
    pred, target, _ = _outlier_problem(frac)
    a = align_scale_shift(pred, target, torch.ones(H, W, dtype=torch.bool))
    assert a.method == "trimmed-affine"
    assert a.scale == pytest.approx(1.7, abs=1e-3)
    assert a.shift == pytest.approx(0.3, abs=1e-3)
    assert torch.allclose(a.apply(pred), pred * a.scale + a.shift)


def test_align_recovers_scale_shift_with_30pct_outliers():
    """BUG: the trimmed fit keeps a fixed 80 % of the pixels each round (``keep=0.8``), so with
    30 % outliers a third of them always stays in the fit (breakdown point 20 %)."""
    pred, target, out = _outlier_problem(0.3)
    assert 0.27 < float(out.float().mean()) < 0.33
    a = align_scale_shift(pred, target, torch.ones(H, W, dtype=torch.bool))
    assert a.scale == pytest.approx(1.7, abs=1e-3)
    assert a.shift == pytest.approx(0.3, abs=1e-3)


def test_align_respects_mask_and_invalid_pixels():
    pred, target, out = _outlier_problem(0.5, seed=2)
    target = target.clone()
    target[:5] = 0.0  # unknown reference depth
    pred = pred.clone()
    pred[5:8] = float("nan")
    a = align_scale_shift(pred, target, ~out)  # mask out every outlier: exact fit
    assert a.scale == pytest.approx(1.7, abs=1e-4) and a.shift == pytest.approx(0.3, abs=1e-4)


def test_align_degenerate_inputs_fall_back():
    pred = torch.rand(H, W) + 1.0
    none = torch.zeros(H, W, dtype=torch.bool)
    a = align_scale_shift(pred, pred * 2, none)
    assert a == Alignment(1.0, 0.0, 0, "identity")
    assert torch.equal(a.apply(pred), pred)
    # too few pixels: median ratio, no shift
    few = torch.zeros(H, W, dtype=torch.bool)
    few[0, :10] = True
    a = align_scale_shift(pred, pred * 3.0, few)
    assert a.method == "median" and a.shift == 0.0 and a.scale == pytest.approx(3.0, rel=1e-6)
    # inverted relation (a non-positive scale fits best): median, not a negative scale
    a = align_scale_shift(pred, 10.0 - 3.0 * pred, torch.ones(H, W, dtype=torch.bool))
    assert a.method == "median" and a.scale > 0 and a.shift == 0.0
    # a shift that would make some aligned depth non-positive: median
    p = torch.linspace(0.1, 10.0, H * W).view(H, W)
    t = 0.5 * p - 0.04  # fits exactly, but 0.5 * 0.05 - 0.04 < 0 for small pred
    p_all = p.clone()
    p_all[0, 0] = 0.05  # outside the mask, still a pixel that would go negative
    m = torch.ones(H, W, dtype=torch.bool)
    m[0, 0] = False
    a = align_scale_shift(p_all, t, m)
    assert a.method == "median" and a.shift == 0.0
    assert bool((a.apply(p_all) > 0).all())
    # no valid pixel at all
    a = align_scale_shift(pred, torch.zeros(H, W), torch.ones(H, W, dtype=torch.bool))
    assert a.method == "identity"


# ---------------------------------------------------------------------------------------------
# push_pull


def _ramp() -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    return torch.stack([0.02 * u + 0.01 * v, 1.0 - 0.015 * v], -1)


def test_push_pull_keeps_known_and_fills_ramp():
    ramp = _ramp()
    known = torch.ones(H, W, dtype=torch.bool)
    known[15:30, 20:40] = False
    out = push_pull(ramp, known)
    assert out.shape == ramp.shape
    assert torch.equal(out[known], ramp[known])
    err = (out - ramp).abs()[~known]
    assert float(err.max()) < 0.05  # the ramp spans ~1.7: within 3 %
    assert float(err.mean()) < 0.02
    # the hole values are not just a constant: they follow the ramp
    assert float(out[22, 38, 0] - out[22, 21, 0]) > 0.2


def test_push_pull_single_known_pixel_fills_everything_with_it():
    values = torch.zeros(H, W, 2)
    values[7, 9] = torch.tensor([0.3, 0.7])
    known = torch.zeros(H, W, dtype=torch.bool)
    known[7, 9] = True
    out = push_pull(values, known)
    assert torch.allclose(out, torch.tensor([0.3, 0.7]).expand(H, W, 2), atol=1e-6)


def test_push_pull_single_known_pixel_odd_size():
    """BUG: the pyramid stops when the *smaller* side reaches 1 px (here at 2 x 1), and a top
    cell without any known pixel is filled with 0 (x / w with w = 0): the bottom row stays 0."""
    values = torch.zeros(37, 23, 2)
    values[7, 9] = torch.tensor([0.3, 0.7])
    known = torch.zeros(37, 23, dtype=torch.bool)
    known[7, 9] = True
    out = push_pull(values, known)
    assert torch.allclose(out, torch.tensor([0.3, 0.7]).expand(37, 23, 2), atol=1e-6)


def test_fill_depth_wide_image_unknown_right_strip():
    """BUG (same cause): at 640 x 360 the pyramid stops at 1 x 2 top cells; when the right 128
    columns are unknown (the camera turned right) the right cell has no weight and fill_depth
    returns 1e6 m there (push_pull returns 0)."""
    depth = torch.full((360, 640), 2.0)
    known = torch.ones(360, 640, dtype=torch.bool)
    known[:, 512:] = False
    out = fill_depth(depth, known)
    assert torch.allclose(out, depth, rtol=1e-4), f"max filled depth {float(out.max())}"


def test_push_pull_ignores_values_under_unknown():
    ramp = _ramp()
    known = torch.ones(H, W, dtype=torch.bool)
    known[10:20, 10:20] = False
    garbage = ramp.clone()
    garbage[~known] = 1e6
    assert torch.equal(push_pull(garbage, known), push_pull(ramp, known))


# ---------------------------------------------------------------------------------------------
# Disocclusion: far plane left, near object right, hole in between (opened behind the object)


def _disocclusion(hole: int = 6):
    depth = torch.full((H, W), FAR)
    depth[:, 30:] = NEAR_D
    rgb = torch.zeros(H, W, 3)
    rgb[:, :30] = BG_RGB
    rgb[:, 30:] = FG_RGB
    known = torch.ones(H, W, dtype=torch.bool)
    known[:, 30 - hole : 30] = False
    return depth, rgb, known


def test_background_known_removes_foreground_next_to_narrow_hole_only():
    depth, _, known = _disocclusion(hole=1)
    bg = background_known(depth, known, band=8)
    assert not bg[:, 29].any()  # the hole stays unknown
    assert not bg[:, 30:38].any()  # near pixels within the band are foreground: never sources
    assert bg[:, 21:29].all()  # background within the band next to the hole are sources
    assert not bg[:, :21].any() and not bg[:, 38:].any()  # beyond the band: not sources
    # no hole, or nothing known: unchanged
    full = torch.ones(H, W, dtype=torch.bool)
    assert torch.equal(background_known(depth, full), full)


def test_background_known_removes_foreground_next_to_wide_hole():
    """A hole several px wide: the far depth is carried across it, so the foreground rim on the
    other side is still recognised (a 7x7 window alone would not see the background)."""
    depth, _, known = _disocclusion(hole=6)
    bg = background_known(depth, known, band=8)
    assert bg[:, 16:24].all()
    assert not bg[:, 30:].any(), f"row: {bg[20, 22:40].int().tolist()}"


def test_fill_depth_keeps_known_and_fills_flat_hole():
    depth = torch.full((H, W), 2.5)
    known = torch.ones(H, W, dtype=torch.bool)
    known[10:20, 10:30] = False
    garbage = torch.where(known, depth, torch.zeros_like(depth))
    out = fill_depth(garbage, known)
    assert torch.allclose(out, depth, rtol=1e-5)
    full = torch.ones(H, W, dtype=torch.bool)
    assert torch.equal(fill_depth(depth, full), depth)
    with pytest.raises(ValueError):
        fill_depth(depth, torch.zeros(H, W, dtype=torch.bool))


def test_fill_depth_disocclusion_next_to_background_is_far():
    depth, _, known = _disocclusion()
    out = fill_depth(depth, known)
    assert torch.equal(out[known], depth[known])
    # the hole pixels next to the background side continue it
    assert bool((out[:, 24] > 0.45 * FAR).all())
    # and nothing in the hole is nearer than the near object
    assert bool((out[:, 24:30] >= NEAR_D - 1e-4).all())


def test_fill_depth_disocclusion_is_filled_with_far_depth():
    """BUG: background_known drops only a 3-px band of foreground, and push-pull of inverse depth
    then draws the hole towards the near object (1 / 1 m outweighs 1 / 5 m): the hole behind the
    object gets ~1.2..2.5 m instead of the far 5 m."""
    depth, _, known = _disocclusion()
    out = fill_depth(depth, known)
    hole = out[:, 24:30]
    assert bool((hole > 0.8 * FAR).all()), f"hole row: {out[20, 24:30].tolist()}"


def test_inpaint_rgb_keeps_known_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(H, W, 3, generator=g)
    known = torch.rand(H, W, generator=g) > 0.3
    for depth in (None, torch.rand(H, W, generator=g) + 1.0):
        out = inpaint_rgb(rgb, known, depth)
        assert torch.equal(out[known], rgb[known])
        assert bool((out >= 0).all() and (out <= 1).all())
    # a larger image takes the downscaled Telea path
    rgb = torch.rand(120, 400, 3, generator=g)
    known = torch.ones(120, 400, dtype=torch.bool)
    known[40:80, 100:200] = False
    out = inpaint_rgb(rgb, known)
    assert torch.equal(out[known], rgb[known])
    assert torch.equal(inpaint_rgb(rgb, torch.ones(120, 400, dtype=torch.bool)), rgb)


def test_inpaint_rgb_background_side_of_disocclusion():
    depth, rgb, known = _disocclusion()
    out = inpaint_rgb(rgb, known, depth)
    assert torch.equal(out[known], rgb[known])
    # next to the background the hole continues the background colour
    d_bg = (out[:, 24] - BG_RGB).norm(dim=-1)
    d_fg = (out[:, 24] - FG_RGB).norm(dim=-1)
    assert bool((d_bg < 0.5 * d_fg).all())


def test_inpaint_rgb_disocclusion_is_background_colour():
    """BUG (same root cause as fill_depth): the whole hole behind the object should take the
    background colour; pixels next to the object come out mostly foreground-coloured."""
    depth, rgb, known = _disocclusion()
    out = inpaint_rgb(rgb, known, depth)
    hole = out[:, 24:30]
    d_bg = (hole - BG_RGB).norm(dim=-1)
    d_fg = (hole - FG_RGB).norm(dim=-1)
    assert bool((d_bg < d_fg).all()), f"hole row: {out[20, 24:30].tolist()}"
