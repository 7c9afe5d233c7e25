"""Coherent source selection in the memory composite (``Composite.cohere``): on a surface two
frames both see, neighbouring pixels come from one frame (no speckle), occlusion decisions stay
as they were, and the compiled pass equals its torch twin."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.geometry.composite import Composite

H = W = 40
BOX = (slice(12, 24), slice(12, 24))


def _frame_and_warp(colour: float, depth: np.ndarray, conf: np.ndarray, baseline: float):
    """A memory frame (H, W) seen through an identity warp: source pixel = target pixel."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    frame = SimpleNamespace(
        rgb=torch.full((H, W, 3), round(colour * 255), dtype=torch.uint8),
        depth=torch.from_numpy(depth),
        confidence=torch.from_numpy(conf).half(),
        observed=torch.ones(H, W, dtype=torch.bool),
    )
    warp = SimpleNamespace(
        rgb=torch.full((H, W, 3), colour),
        depth=torch.from_numpy(depth),
        valid=torch.ones(H, W, dtype=torch.bool),
        src_uv=torch.from_numpy(np.stack([u, v], -1)),
        stretch=torch.ones(H, W),
        edge=torch.zeros(H, W, dtype=torch.bool),
        baseline=baseline,
    )
    return frame, warp


def _composite(reference: bool, cohere: bool, seed: int = 0) -> Composite:
    """Frame 0 (dark) and frame 1 (bright) see one wall at 2 m; frame 1 alone also sees a box
    at 1 m in front of it. Frame 1's confidence flips at random (pixel by pixel) between a
    bit better and a bit worse than frame 0's: per pixel, it wins about 30 % of the wall."""
    rng = np.random.default_rng(seed)
    wall = np.full((H, W), 2.0, np.float32)
    with_box = wall.copy()
    with_box[BOX] = 1.0
    conf1 = np.where(rng.uniform(size=(H, W)) < 0.3, 1.0, 0.85).astype(np.float32)
    comp = Composite(W, H, f_t=50.0, reference=reference)
    for fid, colour, depth, conf in ((0, 0.2, wall, np.full((H, W), 0.9, np.float32)),
                                     (1, 0.8, with_box, conf1)):  # fmt: skip
        frame, warp = _frame_and_warp(colour, depth, conf, baseline=0.5)
        comp.add(fid, warp, frame)
    if cohere:
        comp.cohere()
    return comp


@pytest.mark.parametrize("reference", [False, True])
def test_cohere_removes_source_speckle_on_one_surface_and_keeps_occluders(reference):
    before = _composite(reference, cohere=False)
    after = _composite(reference, cohere=True)
    wall = torch.ones(H, W, dtype=torch.bool)
    wall[BOX] = False
    speckle_before = (before.src[wall] == 1).float().mean().item()
    assert 0.2 < speckle_before < 0.4  # the per-pixel choice is speckle
    assert (after.src[wall] == 1).float().mean().item() < 0.01  # the wall is frame 0's
    # the box only frame 1 sees stays frame 1's, at its depth, with its colour
    assert bool((after.src[BOX] == 1).all()) and bool((after.depth[BOX] == 1.0).all())
    assert torch.allclose(after.rgb[BOX], torch.tensor(0.8))
    # switched pixels carry their new frame's claim in full (colour, depth, confidence)
    sw = wall & (after.src == 0)
    assert torch.allclose(after.rgb[sw], torch.tensor(0.2)) and bool((after.depth[sw] == 2).all())
    assert torch.allclose(after.conf[sw], torch.tensor(0.9), atol=1e-3)  # float16 confidence


def test_cohere_compiled_equals_torch_twin():
    for seed in range(3):
        fast = _composite(False, cohere=True, seed=seed)
        assert torch.equal(fast.base_px, _composite(True, cohere=True, seed=seed).base_px)
        ref = _composite(True, cohere=True, seed=seed)
        assert torch.equal(fast.src, ref.src)
        assert torch.allclose(fast.rgb, ref.rgb, atol=1e-6)
        assert torch.equal(fast.depth, ref.depth) and torch.equal(fast.uv, ref.uv)
        assert torch.allclose(fast.conf, ref.conf) and torch.equal(fast.observed, ref.observed)


def test_cohere_keeps_a_real_boundary_between_two_frames():
    """Two frames each seeing half of a wall (a straight source boundary, not speckle): the
    boundary stays where it was."""
    comp = Composite(W, H, f_t=50.0)
    depth = np.full((H, W), 2.0, np.float32)
    for fid, half in ((0, slice(0, W // 2)), (1, slice(W // 2, W))):
        frame, warp = _frame_and_warp(0.3 + 0.4 * fid, depth, np.ones((H, W), np.float32), 0.5)
        valid = torch.zeros(H, W, dtype=torch.bool)
        valid[:, half] = True
        warp.valid = valid
        comp.add(fid, warp, frame)
    src = comp.src.clone()
    comp.cohere()
    assert torch.equal(comp.src, src)


@pytest.mark.parametrize("reference", [False, True])
def test_cohere_removes_layer_specks_but_keeps_a_thin_line(reference):
    """Frame 1 claims a two-pixel speck and a one-pixel-wide line in front of a wall frame 0
    sees well. The speck (noise: sensor depth warped to an oblique view) goes back to the wall
    behind it; the line (a real thin structure: 5 supporting pixels in its window) stays."""
    wall = np.full((H, W), 2.0, np.float32)
    near = wall.copy()
    near[5, 5:7] = 1.0  # the speck
    near[5:36, 30] = 1.0  # the line
    conf1 = np.where(near < 2, 1.0, 0.5).astype(np.float32)  # frame 0 owns the wall
    comp = Composite(W, H, f_t=50.0, reference=reference)
    for fid, colour, depth, conf in ((0, 0.2, wall, np.ones((H, W), np.float32)),
                                     (1, 0.8, near, conf1)):  # fmt: skip
        frame, warp = _frame_and_warp(colour, depth, conf, baseline=0.5)
        comp.add(fid, warp, frame)
    assert bool((comp.src[5, 5:7] == 1).all()) and bool((comp.src[5:36, 30] == 1).all())
    comp.cohere()
    assert bool((comp.src[5, 5:7] == 0).all()) and bool((comp.depth[5, 5:7] == 2.0).all())
    assert torch.allclose(comp.rgb[5, 5:7], torch.tensor(0.2))
    # the line keeps its pixels (its two ends may each shorten by a pixel per pass)
    assert bool((comp.src[9:32, 30] == 1).all()) and bool((comp.depth[9:32, 30] == 1.0).all())
    assert int((comp.src == 1).sum()) >= 23


def test_cohere_keeps_pixels_seen_along_the_targets_rays():
    """A frame taken from the target's own centre (baseline 0: a pure rotation back to it) is
    exact: its pixels keep their claim whatever their neighbours vote."""
    wall = np.full((H, W), 2.0, np.float32)
    comp = Composite(W, H, f_t=50.0)
    conf0 = np.where(np.random.default_rng(1).uniform(size=(H, W)) < 0.3, 1.0, 0.5)
    for fid, conf, base in ((0, conf0.astype(np.float32), 0.0), (1, np.full((H, W), 0.9, np.float32), 0.5)):  # fmt: skip
        frame, warp = _frame_and_warp(0.2 + 0.6 * fid, wall, conf, baseline=base)
        comp.add(fid, warp, frame)
    src = comp.src.clone()
    assert 0.2 < (src == 0).float().mean().item() < 0.4
    comp.cohere()
    assert torch.equal(comp.src[src == 0], src[src == 0])  # frame 0's exact pixels stay


def _speckled(reference: bool, h: int = 160, w: int = 48, seed: int = 0) -> Composite:
    """Three frames over a sloped wall with a box (noisy depth, confidences flipping pixel by
    pixel, holes): tall enough for the coherence pass's row bands."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    comp = Composite(w, h, f_t=50.0, reference=reference)
    for fid in (3, 7, 5):
        depth = (2.0 + 0.004 * v + rng.normal(0, 0.01, (h, w))).astype(np.float32)
        depth[40:90, 10 + fid : 30 + fid] = 1.0  # a box each frame sees a bit shifted
        valid = rng.uniform(size=(h, w)) > 0.05
        warp = SimpleNamespace(
            rgb=torch.from_numpy(rng.uniform(size=(h, w, 3)).astype(np.float32)),
            depth=torch.from_numpy(np.where(valid, depth, 0).astype(np.float32)),
            valid=torch.from_numpy(valid),
            src_uv=torch.from_numpy(np.stack([u, v], -1) + fid / 10),
            stretch=torch.from_numpy(rng.uniform(0.8, 1.2, (h, w)).astype(np.float32)),
            edge=torch.zeros(h, w, dtype=torch.bool),
            baseline=0.1 * fid,
        )
        frame = SimpleNamespace(
            rgb=torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
            depth=torch.from_numpy(depth),
            confidence=torch.from_numpy(rng.uniform(0.7, 1.0, (h, w)).astype(np.float32)),
            observed=torch.from_numpy(rng.uniform(size=(h, w)) > 0.2),
        )
        comp.add(fid, warp, frame)
    return comp


def test_cohere_row_bands_in_threads_equal_one_pass_and_torch_twin():
    """The pass decided in row bands on a thread pool gives the one-thread result bit for bit
    (decisions read snapshots only), and both equal the torch twin."""
    from concurrent.futures import ThreadPoolExecutor

    names = ("rgb", "depth", "src", "uv", "conf", "observed", "stretch", "base_px")
    with ThreadPoolExecutor(3) as pool:
        for seed in range(2):
            one, banded, ref = _speckled(False, seed=seed), _speckled(False, seed=seed), None
            before = one.src.clone()
            one.cohere()
            banded.cohere(pool=pool)
            ref = _speckled(True, seed=seed)
            ref.cohere()
            assert (one.src != before).float().mean() > 0.01  # the pass did switch pixels
            for n in names:
                assert torch.equal(getattr(one, n), getattr(banded, n)), n
            assert torch.equal(one.src, ref.src) and torch.equal(one.depth, ref.depth)
            assert torch.equal(one.uv, ref.uv) and torch.equal(one.base_px, ref.base_px)
            assert torch.equal(one.observed, ref.observed) and torch.equal(one.rgb, ref.rgb)


def test_warm_up_compiles_every_coherence_kernel_a_composite_calls():
    """After the warp warm-up, a composite that switches pixels compiles nothing new (the
    first composite of a session does not wait for the compiler)."""
    from models.geometry import composite
    from models.geometry.warp import warm_up

    warm_up()
    kernels = ("cohere_kernel", "cohere_apply", "frame_index", "flat_picks", "composite_kernel")
    before = {k: list(getattr(composite, k).signatures) for k in kernels}
    assert all(before.values()), before
    comp = _speckled(False)
    comp.cohere()
    assert {k: list(getattr(composite, k).signatures) for k in kernels} == before
