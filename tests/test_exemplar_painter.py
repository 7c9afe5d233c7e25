"""The exemplar painter on synthetic scenes whose right answer is known: layers, floors, sky,
cracks, almost-unseen frames, memory look-ups, texture."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from models.geometry.cameras import Camera
from models.geometry.fill import fill_depth, inpaint_rgb
from models.metrics.texture import gradient_energy, gradient_energy_ratio, masked_swd
from models.synthesis import SynthesisError, SynthesisRequest, create_synthesis_backend
from models.synthesis.exemplar import PainterConfig, View, paint_exemplar

H, W = 96, 128
F = 100.0
K = np.array([[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1]])
UP = np.array([0.0, -1.0, 0.0])  # level camera: world up is camera -y


def _noise(mean, amp: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = cv2.GaussianBlur(rng.standard_normal((H, W, 3)).astype(np.float32), (0, 0), sigma)
    return np.clip(np.asarray(mean, np.float32) + amp * n / n.std(), 0, 1).astype(np.float32)


def _rays() -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return (u - K[0, 2]) / F, (v - K[1, 2]) / F


def test_disocclusion_is_filled_from_the_far_layer():
    bg, fg = (0.2, 0.3, 0.8), np.array([0.95, 0.5, 0.1], np.float32)
    rgb = _noise(bg, 0.08, 0)
    depth = np.full((H, W), 5.0, np.float32)
    rgb[:, 70:] = fg
    depth[:, 70:] = 1.0
    known = np.ones((H, W), bool)
    known[:, 56:70] = False  # opened behind the near object
    res = paint_exemplar(rgb, known, depth, K, seed=0)
    hole = res.rgb[~known]
    d_fg = np.linalg.norm(hole - fg, axis=-1)
    d_bg = np.linalg.norm(hole - np.array(bg, np.float32), axis=-1)
    assert (d_fg > 0.3).all(), "the near object's colour leaked into the hole behind it"
    assert float(d_bg.mean()) < 0.15
    assert np.array_equal(res.rgb[known], rgb[known])
    assert (res.depth[~known] > 3.5).all()  # the hole continues the far surface


def _room(turn: bool = True):
    """Floor (brown texture) below a wall (grey texture) 6 m ahead; camera 1.6 m up."""
    x, y = _rays()
    z_floor = np.where(y > 1e-6, 1.6 / np.maximum(y, 1e-6), np.inf)
    depth = np.minimum(z_floor, 6.0).astype(np.float32)
    floor = z_floor < 6.0
    rgb = np.where(
        floor[..., None], _noise((0.55, 0.35, 0.2), 0.07, 1), _noise((0.8, 0.8, 0.78), 0.04, 2)
    )
    known = np.ones((H, W), bool)
    if turn:
        known[:, 80:] = False  # the camera turned right: new columns on the right
    return rgb.astype(np.float32), depth, known, floor


def test_floor_continues_as_floor_and_wall_as_wall():
    rgb, depth, known, floor = _room()
    res = paint_exemplar(rgb, known, depth, K, seed=1, up_cam=UP)
    floor_mean, wall_mean = rgb[floor & known].mean(0), rgb[~floor & known].mean(0)
    new = ~known
    # away from the floor line (where a few rows may go either way)
    rows = np.arange(H)[:, None].repeat(W, 1)
    line = int(np.argmax(floor[:, 0]))
    low, high = new & (rows > line + 6), new & (rows < line - 6)
    for sel, want, other in ((low, floor_mean, wall_mean), (high, wall_mean, floor_mean)):
        got = res.rgb[sel].mean(0)
        assert np.linalg.norm(got - want) < 0.5 * np.linalg.norm(got - other)
    assert res.meta.get("floor", 0) > 0 or np.isfinite(res.depth[low]).all()
    # the hole's floor has the floor's depth (decreasing downwards), not a wall's
    below = low[:, 110]
    np.testing.assert_allclose(res.depth[below, 110], depth[below, 110], rtol=0.1)


def test_smooth_sky_stays_smooth_and_ground_gets_texture():
    x, y = _rays()
    sky = y < 0.05
    v = np.arange(H, dtype=np.float32)[:, None, None] / H
    sky_rgb = np.broadcast_to(np.array([0.45, 0.65, 0.95], np.float32) + 0.2 * v, (H, W, 3))
    rgb = np.where(sky[..., None], sky_rgb, _noise((0.35, 0.45, 0.25), 0.12, 3)).astype(np.float32)
    depth = np.where(sky, 1000.0, 1.6 / np.maximum(y, 0.05)).astype(np.float32)
    known = np.ones((H, W), bool)
    known[:, 88:] = False
    res = paint_exemplar(rgb, known, depth, K, seed=2, up_cam=UP)
    new = ~known
    e_sky_seen = gradient_energy(rgb, sky & known)
    e_sky_new = gradient_energy(res.rgb, sky & new & (np.arange(H)[:, None] < 30))
    e_ground_seen = gradient_energy(rgb, ~sky & known)
    e_ground_new = gradient_energy(res.rgb, ~sky & new & (np.arange(H)[:, None] > 60))
    assert e_sky_new < 3 * e_sky_seen + 1e-5, "texture invented in a clear sky"
    assert e_ground_new > 0.5 * e_ground_seen, "the textured ground became a smear"


def test_texture_beats_the_smooth_painter():
    rgb = _noise((0.5, 0.45, 0.4), 0.15, 4)
    depth = np.full((H, W), 3.0, np.float32)
    known = np.ones((H, W), bool)
    known[30:70, 40:96] = False
    res = paint_exemplar(rgb, known, depth, K, seed=3)
    k = torch.from_numpy(known)
    old = inpaint_rgb(torch.from_numpy(rgb), k, fill_depth(torch.from_numpy(depth), k)).numpy()
    new_ratio = gradient_energy_ratio(res.rgb, ~known, known)
    assert new_ratio > 0.6 and gradient_energy_ratio(old, ~known, known) < 0.2
    d_new = masked_swd(res.rgb, rgb, ~known)["swd"]
    d_old = masked_swd(old, rgb, ~known)["swd"]
    assert d_new < 0.7 * d_old


def test_deterministic_under_the_seed():
    rgb, depth, known, _ = _room()
    a = paint_exemplar(rgb, known, depth, K, seed=7, up_cam=UP)
    b = paint_exemplar(rgb, known, depth, K, seed=7, up_cam=UP)
    c = paint_exemplar(rgb, known, depth, K, seed=8, up_cam=UP)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.rgb, c.rgb)


def test_cracks_take_the_cheap_path():
    rgb = _noise((0.5, 0.5, 0.5), 0.1, 5)
    depth = np.full((H, W), 2.0, np.float32)
    known = np.ones((H, W), bool)
    known[:, 40] = False  # a one-pixel crack
    known[50, :] = False
    res = paint_exemplar(rgb, known, depth, K)
    assert res.meta["regions"] == 0 and "levels" not in res.meta
    blur = cv2.blur(rgb, (3, 3))
    assert np.abs(res.rgb[~known] - blur[~known]).max() < 0.2


def test_almost_unseen_view_falls_back_quickly_with_a_note():
    rgb = _noise((0.5, 0.5, 0.5), 0.1, 6)
    depth = np.full((H, W), 2.0, np.float32)
    known = np.zeros((H, W), bool)
    known[:8, :12] = True  # under 1 % seen
    t = time.perf_counter()
    res = paint_exemplar(rgb, known, depth, K)
    assert time.perf_counter() - t < 2.0
    assert "almost nothing" in res.meta["note"]
    assert np.isfinite(res.rgb).all() and np.isfinite(res.depth).all()
    none = paint_exemplar(rgb, np.zeros((H, W), bool), depth, K)
    assert "nothing" in none.meta["note"] and np.allclose(none.rgb, 0.5)


def test_memory_pixels_without_depth_are_looked_up():
    """A sensor hole: the photo saw the colour but has no depth there. The painter continues
    the surface into the hole and reads the photo's real colour instead of inventing one."""
    rgb = _noise((0.4, 0.4, 0.4), 0.1, 7)
    depth = np.full((H, W), 2.0, np.float32)
    known = np.ones((H, W), bool)
    known[30:60, 40:80] = False
    photo = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    photo[30:60, 40:80] = (200, 30, 30)  # what the photo saw there
    photo_depth = depth.copy()
    photo_depth[25:65, 35:85] = 0.0  # ...without depth
    view = View(photo, photo_depth, K, np.eye(4))
    res = paint_exemplar(rgb, known, depth, K, c2w=np.eye(4), views=[view])
    assert res.meta["looked_up"] == pytest.approx((~known).mean())
    inner = np.zeros((H, W), bool)
    inner[32:58, 42:78] = True
    assert np.abs(res.rgb[inner] - np.array([200, 30, 30]) / 255).max() < 1e-3


def test_backend_routes_seen_pixels_and_validates_options():
    rgb, depth, known, _ = _room()
    cam = Camera(K, np.eye(4), W, H)
    req = SynthesisRequest(
        3, cam, torch.from_numpy(rgb), torch.from_numpy(np.where(known, depth, 0)),
        torch.from_numpy(known), seed=5, up=UP,
    )  # fmt: skip
    backend = create_synthesis_backend("reproject")
    assert backend.painter == "exemplar"
    (res,) = backend.synthesize([req])
    assert torch.equal(res.source_mask, req.valid)
    assert torch.equal(res.rgb[req.valid], req.warped_rgb[req.valid])
    assert res.depth_hint is not None and bool((res.depth_hint > 0).all())
    smooth = create_synthesis_backend("reproject", painter="smooth")
    (old,) = smooth.synthesize([req])
    assert torch.equal(old.rgb[req.valid], req.warped_rgb[req.valid])
    with pytest.raises(SynthesisError, match="painter"):
        create_synthesis_backend("reproject", painter="magic")
    with pytest.raises(SynthesisError):
        create_synthesis_backend("reproject", painter="smooth", patch=5)
    assert create_synthesis_backend("reproject", patch=5).config == PainterConfig(patch=5)


def test_background_warm_up_starts_no_thread_once_warm():
    from models.synthesis.exemplar import warm_up

    thread = warm_up(background=True)
    if thread is not None:
        thread.join(timeout=300)
    assert warm_up(background=True) is None
