"""The compiled warp and composite (numba) against their torch twins and the per-pixel splat
reference: same routed pixels, depth and source coordinates, bit-for-bit repeatable."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models.geometry.cameras import Camera, axis_angle, intrinsics_from_fov, scale_intrinsics
from models.geometry.warp import (
    depth_edges,
    flying_pixels,
    forward_warp,
    forward_warp_reference,
    forward_warp_torch,
    inverse_depth_range,
    warm_up,
)
from models.geometry.warp_kernels import close_cracks as close_cracks_kernel
from models.geometry.warp_kernels import splat
from models.geometry.zbuffer import NEAR, SAME_SURFACE, close_cracks
from models.memory import SpatialMemory
from tests.helpers import TUM

FIELDS = ("rgb", "depth", "valid", "src_uv", "scale", "stretch", "edge")


def _scene(rng: np.random.Generator, w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 texture (h, w, 3) and depth (h, w): a slanted floor, a far wall, a near box, a thin
    post and a few unknown pixels (every branch of the splat: grazing footprints, edges,
    flying pixels on a ramp, isotropic fallbacks)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = np.where(v > h * 0.55, 1.2 * h / np.maximum(v - h * 0.45, 1), 6.0)
    depth[h // 5 : h // 2, w // 4 : w // 2] = 1.5  # near box
    depth[h // 4 : h // 2 + 1, w // 2 + 3 : w // 2 + 7] = np.linspace(1.5, 5.5, 4)  # a ramp
    depth[:, int(w * 0.8)] = 2.0  # a one-pixel post
    depth[rng.uniform(size=(h, w)) < 0.02] = 0.0
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return torch.from_numpy(rgb), torch.from_numpy(depth.astype(np.float32))


def _motions(rng: np.random.Generator) -> list[np.ndarray]:
    out = [np.eye(4)]
    for k in range(5):
        c2w = np.eye(4)
        c2w[:3, :3] = axis_angle(rng.normal(size=3), rng.uniform(-0.15, 0.15))
        c2w[:3, 3] = rng.uniform(-0.2, 0.2, 3)
        c2w[2, 3] = [0.6, -0.3, 0.1, 0.0, 0.3][k]  # forward (a crop), back, small, pure turn
        out.append(c2w)
    return out


def _assert_same(fast, ref, max_flips: float = 1e-3) -> None:
    """Same routed pixels (a ``max_flips`` share may flip where a threshold is met within
    float rounding), the same depth, source pixel and flags there, colour within rounding."""
    flips = (fast.valid ^ ref.valid).float().mean().item()
    assert flips <= max_flips, f"{flips:.2%} of the pixels routed differently"
    both = fast.valid & ref.valid
    assert both.sum() > 0
    assert torch.allclose(fast.depth[both], ref.depth[both], rtol=1e-6, atol=0)
    assert torch.allclose(fast.src_uv[both], ref.src_uv[both], rtol=0, atol=1e-4)
    assert torch.allclose(fast.rgb[both], ref.rgb[both], rtol=0, atol=1e-5)
    assert torch.allclose(fast.scale[both], ref.scale[both], rtol=1e-5, atol=0)
    assert torch.allclose(fast.stretch[both], ref.stretch[both], rtol=1e-5, atol=1e-6)
    assert torch.equal(fast.edge[both], ref.edge[both])
    assert fast.baseline == ref.baseline


@pytest.mark.parametrize("colour", ["uint8", "float"])
def test_compiled_warp_matches_torch_twin_on_synthetic_scenes(colour):
    w, h = 64, 48
    K = intrinsics_from_fov(w, h, 60.0)
    rng = np.random.default_rng(5)
    rgb, depth = _scene(rng, w, h)
    if colour == "float":
        rgb = rgb.float() / 255
    for c2w in _motions(rng):
        fast = forward_warp(rgb, depth, K, np.eye(4), K, c2w, w, h)
        ref = forward_warp_torch(rgb, depth, K, np.eye(4), K, c2w, w, h)
        _assert_same(fast, ref)


def test_compiled_warp_other_target_size_and_intrinsics():
    """A target with other intrinsics and size than the source (a zoomed, smaller view)."""
    rng = np.random.default_rng(2)
    rgb, depth = _scene(rng, 80, 60)
    K_s = intrinsics_from_fov(80, 60, 70.0)
    K_t = intrinsics_from_fov(56, 40, 50.0)
    for c2w in _motions(rng)[1:4]:
        fast = forward_warp(rgb, depth, K_s, np.eye(4), K_t, c2w, 56, 40)
        ref = forward_warp_torch(rgb, depth, K_s, np.eye(4), K_t, c2w, 56, 40)
        _assert_same(fast, ref)


def test_compiled_splat_matches_per_pixel_reference():
    """The kernel's z-buffer (no flying pixels) against the literal per-pixel footprint rule."""
    w, h = 12, 9
    K = intrinsics_from_fov(w, h, 60.0)
    m_f32 = np.float32
    for seed in range(12):
        rng = np.random.default_rng(seed)
        depth = rng.uniform(1.0, 3.0, (h, w))
        depth[2:6, 3:8] = rng.uniform(0.6, 0.9)
        depth[rng.uniform(size=(h, w)) < 0.05] = 0.0
        c2w = np.eye(4)
        c2w[:3, :3] = axis_angle(rng.normal(size=3), rng.uniform(-0.1, 0.1))
        c2w[:3, 3] = rng.uniform(-0.2, 0.2, 3)
        z_ref = forward_warp_reference(depth, K, np.eye(4), K, c2w, w, h)
        T = np.linalg.inv(c2w)
        M = (T[:3, :3] @ np.linalg.inv(K)).astype(m_f32)
        k = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], m_f32)
        prm = np.array([NEAR, SAME_SURFACE, 1.0, 3, 0.25, 0.0, 0.5], m_f32)
        none = np.zeros((h, w), bool)
        zbuf, _ = splat(
            depth.astype(m_f32), M, T[:3, 3].astype(m_f32), k, none, none.astype(m_f32), w, h, prm
        )
        same = np.isfinite(zbuf) == np.isfinite(z_ref)
        both = np.isfinite(zbuf) & np.isfinite(z_ref)
        close = np.abs(zbuf[both] - z_ref[both]) <= 1e-4 * z_ref[both]
        assert (~same).sum() + (~close).sum() <= 1, f"seed {seed}"
        assert both.sum() > 0.5 * w * h


def test_compiled_crack_closing_matches_torch():
    rng = np.random.default_rng(0)
    z = rng.uniform(1.0, 1.2, (30, 40)).astype(np.float32)
    z[rng.uniform(size=z.shape) < 0.3] = np.inf
    z[10:20, 10] = 5.0  # another surface: not a pair with its neighbours
    ref = close_cracks(torch.from_numpy(z)).numpy()
    out = close_cracks_kernel(z, np.float32(1.3))
    assert np.array_equal(np.isfinite(out), np.isfinite(ref))
    assert np.allclose(out[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-6)


def test_compiled_warp_is_repeatable_bit_for_bit():
    rng = np.random.default_rng(9)
    rgb, depth = _scene(rng, 64, 48)
    K = intrinsics_from_fov(64, 48, 60.0)
    c2w = _motions(rng)[1]
    a = forward_warp(rgb, depth, K, np.eye(4), K, c2w, 64, 48)
    b = forward_warp(rgb, depth, K, np.eye(4), K, c2w, 64, 48)
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_warm_up_compiles_in_the_background():
    thread = warm_up(background=True)
    if thread is not None:
        thread.join(timeout=600)
    assert warm_up(background=True) is None  # done: no second thread


def _tum(width: int = 128, height: int = 96):
    import cv2

    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    frames = cams["frames"][:6]
    f0 = frames[0]
    rgb = cv2.resize(cv2.imread(str(TUM / f0["file"]))[..., ::-1], (width, height))
    d = cv2.imread(str(TUM / f0["depth"]), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000
    d = cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST)
    K = scale_intrinsics(np.array(f0["K"]), (640, 480), (width, height))
    poses = [np.array(f["c2w"]) for f in frames]
    return torch.from_numpy(np.ascontiguousarray(rgb)), torch.from_numpy(d), K, poses


@pytest.mark.skipif(not TUM.is_dir(), reason="TUM sequence not present")
def test_compiled_warp_matches_torch_twin_on_tum_sensor_depth():
    """Real Kinect depth (holes, flying pixels, noise) and real poses: frame 0 into 1..5."""
    rgb, d, K, poses = _tum()
    edges = depth_edges(d)
    kw = dict(edges=edges, flying=flying_pixels(d, edges), inv_range=inverse_depth_range(d))
    for c2w in poses[1:]:
        fast = forward_warp(rgb, d, K, poses[0], K, c2w, 128, 96, **kw)
        ref = forward_warp_torch(rgb, d, K, poses[0], K, c2w, 128, 96, **kw)
        _assert_same(fast, ref)


@pytest.mark.skipif(not TUM.is_dir(), reason="TUM sequence not present")
def test_compiled_correspondence_matches_torch_twin_on_tum():
    """Memory of TUM frames 0, 2, 4 (sensor depth) seen from frames 1, 3, 5: the composite of
    the compiled warps equals the torch one (a pixel may switch frames on a quality tie)."""
    rgb, d, K, poses = _tum()
    mem = SpatialMemory(point_stride=4, cell_size=8)
    painted = torch.zeros(96, 128, dtype=torch.bool)
    painted[30:70, 40:100] = True  # earlier paint in frame 2: copied, not resampled, and weaker
    for i in (0, 2, 4):
        # each frame re-uses frame 0's texture and depth at its own pose: real geometry, real
        # holes, three sources that overlap and disagree slightly
        conf = torch.where(painted, 0.4, 1.0) if i == 2 else None
        obs = ~painted if i == 2 else None
        mem.insert(i, Camera(K, poses[i], 128, 96), rgb, d, conf, obs)
    for i in (1, 3, 5):
        cam = Camera(K, poses[i], 128, 96)
        ids = [0, 2, 4]
        fast = mem.correspond(cam, ids)
        ref = mem.correspond(cam, ids, reference=True)
        flips = (fast.valid ^ ref.valid).float().mean().item()
        assert flips <= 1e-3
        both = fast.valid & ref.valid
        assert (fast.source_frame[both] != ref.source_frame[both]).float().mean() <= 1e-3
        same = both & (fast.source_frame == ref.source_frame)
        assert torch.allclose(fast.depth[same], ref.depth[same], rtol=1e-6, atol=0)
        assert torch.allclose(fast.rgb[same], ref.rgb[same], rtol=0, atol=1e-5)
        assert torch.allclose(fast.source_uv[same], ref.source_uv[same], rtol=0, atol=1e-4)
        assert torch.equal(fast.observed[same], ref.observed[same])
        assert math.isclose(fast.coverage, ref.coverage, abs_tol=1e-3)
        assert bool((~fast.observed[fast.valid]).any())  # the paint took part


@pytest.mark.parametrize("size", [(96, 128), (5, 5), (4, 9), (2, 3), (1, 7)])
def test_compiled_frame_quantities_match_torch_twins(size):
    """Depth edges, flying pixels and the inverse-depth range of a memory frame: the kernels
    equal their torch twins bit for bit (synthetic ramps and holes; tiny frames' borders)."""
    h, w = size
    rng = np.random.default_rng(h * 100 + w)
    if h >= 20:
        depth = _scene(rng, w, h)[1]
    else:
        depth = torch.from_numpy(rng.uniform(0.5, 9.0, (h, w)).astype(np.float32))
        depth[torch.from_numpy(rng.uniform(size=(h, w)) < 0.2)] = 0.0
    _assert_frame_quantities(depth)


def _assert_frame_quantities(depth: torch.Tensor) -> None:
    edges = depth_edges(depth)
    assert torch.equal(edges, depth_edges(depth, reference=True))
    assert torch.equal(flying_pixels(depth, edges), flying_pixels(depth, edges, reference=True))
    assert torch.equal(inverse_depth_range(depth), inverse_depth_range(depth, reference=True))


@pytest.mark.skipif(not TUM.is_dir(), reason="TUM sequence not present")
def test_compiled_frame_quantities_match_torch_twins_on_tum_sensor_depth():
    _, d, _, _ = _tum(320, 240)
    assert bool(flying_pixels(d).any())  # real sensor depth has them
    _assert_frame_quantities(d)


def test_parallel_warps_equal_lone_calls(monkeypatch):
    """Several frames warped at once in threads (the kernels release the GIL): each result is
    the lone call's, bit for bit, in order; the torch twins run one at a time."""
    import models.geometry.warp as warp_module

    monkeypatch.setattr(warp_module, "WARP_THREADS", 2)
    rng = np.random.default_rng(7)
    K = intrinsics_from_fov(96, 64, 60.0)
    jobs = []
    for c2w in _motions(rng)[1:]:
        rgb, depth = _scene(rng, 96, 64)
        jobs.append(dict(rgb=rgb, depth=depth, K_src=K, c2w_src=np.eye(4)))
        jobs[-1].update(K_tgt=K, c2w_tgt=c2w, width=96, height=64)
    lone = [forward_warp(**j) for j in jobs]
    for _ in range(3):
        for a, b in zip(warp_module.forward_warps(jobs), lone, strict=True):
            for name in FIELDS:
                assert torch.equal(getattr(a, name), getattr(b, name)), name
    ref = list(warp_module.forward_warps(jobs[:2], reference=True))
    _assert_same(lone[1], ref[1])


@pytest.mark.parametrize("u8", [True, False])
def test_bilinear_inside_equals_the_bounded_form(u8):
    """The backward sample's fast path (all four corners inside the source, no bound checks)
    gives the bounded form's value bit for bit, for colour, depth and the edge flag."""
    from models.geometry.warp_kernels import _bilinear, _bilinear_inside

    rng = np.random.default_rng(3)
    Hs, Ws = 7, 9
    rgb = rng.integers(0, 256, (Hs, Ws, 3), dtype=np.uint8)
    rgb = rgb if u8 else (rgb / 255.0).astype(np.float32)
    depth = rng.uniform(0.5, 5.0, (Hs, Ws)).astype(np.float32)
    edges = rng.uniform(size=(Hs, Ws)) < 0.3
    f32 = np.float32
    for _ in range(200):
        ix, iy = f32(rng.uniform(0, Ws - 1)), f32(rng.uniform(0, Hs - 1))
        x0, y0 = min(int(np.floor(ix)), Ws - 2), min(int(np.floor(iy)), Hs - 2)
        w_, n_ = ix - f32(x0), iy - f32(y0)
        e_, s_ = f32(1) - w_, f32(1) - n_
        wts = (s_ * e_, s_ * w_, n_ * e_, n_ * w_)
        for c in range(5):
            a = _bilinear(rgb, depth, edges, u8, c, x0, y0, *wts)
            b = _bilinear_inside(rgb, depth, edges, u8, c, x0, y0, *wts)
            assert np.float32(a).tobytes() == np.float32(b).tobytes()
