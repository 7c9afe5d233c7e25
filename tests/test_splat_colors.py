"""Least-squares splat colours (models.lift.splat_colors) and view-dependent (SH degree 1) renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lift.splat_colors import blend_matrix, solve_colors, solve_colors_reference
from models.lift.splat_render import render, render_gaussians, render_reference
from models.lift.splats import SH_C0, Gaussians, init_from_frames, rgb_to_sh0, sh_basis
from models.metrics import psnr
from storage.formats.bundle import read_bundle
from storage.formats.splats import read_inria_ply, read_spz, write_inria_ply, write_spz
from tests.helpers import PHOTOS


def scene(n: int = 60, seed: int = 0) -> Gaussians:
    """Small splats in front of the cameras, overlapping (so colours blend)."""
    rng = np.random.default_rng(seed)
    means = np.c_[rng.uniform(-0.6, 0.6, n), rng.uniform(-0.4, 0.4, n), rng.uniform(2, 3, n)]
    return Gaussians(
        means=means.astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.uniform(-2.6, -1.8, (n, 3)).astype(np.float32),
        opacity_logits=rng.uniform(0, 4, n).astype(np.float32),
        sh0=rgb_to_sh0(rng.uniform(0.2, 0.8, (n, 3))),
    )


def cameras(k: int = 3, width: int = 24, height: int = 16):
    K = np.array([[20.0, 0, width / 2 - 0.5], [0, 20.0, height / 2 - 0.5], [0, 0, 1]])
    out = []
    for i in range(k):
        c2w = np.eye(4)
        c2w[:3, 3] = [0.3 * (i - (k - 1) / 2), 0.05 * i, 0.0]
        out.append((K, c2w, width, height))
    return out


def frames_of(g: Gaussians, cams) -> list:
    return [
        (render_gaussians(g, c2w, K, w, h)["rgb"], np.ones((h, w)), K, c2w, None)
        for K, c2w, w, h in cams
    ]


def test_blend_matrix_reproduces_the_render():
    g = scene()
    for K, c2w, w, h in cameras():
        W = blend_matrix(g, c2w, K, w, h)
        colors = np.clip(g.sh0 * SH_C0 + 0.5, 0, None)
        rgb = render(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, c2w, K, w, h)["rgb"]
        assert W.shape == (w * h, len(g)) and W.nnz > 0
        # Weights under CONTRIB_MIN are left out: a small, bounded difference.
        diff = np.abs(W @ colors - rgb.numpy().reshape(-1, 3))
        assert diff.mean() < 1e-3 and diff.max() < 0.02
        # And the weights are the slow twin's: its alpha is the row sum.
        ref = render_reference(
            g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, c2w, K, w, h
        )
        assert np.abs(np.asarray(W.sum(1)).reshape(h, w) - ref["alpha"]).max() < 0.02


def test_solve_matches_the_dense_reference_and_recovers_colours():
    truth = scene(seed=1)
    cams = cameras()
    frames = frames_of(truth, cams)
    grey = Gaussians(truth.means, truth.quats, truth.log_scales, truth.opacity_logits,
                     np.zeros_like(truth.sh0))  # fmt: skip
    solved = solve_colors(grey, frames, iters=300, rounds=1)  # plain CG: the exact minimiser
    ref = np.clip(solve_colors_reference(grey, frames), 0, 1)
    seen = np.asarray(sum(blend_matrix(grey, c2w, K, w, h).sum(0) for K, c2w, w, h in cams))
    seen = seen.reshape(-1) > 0.3  # well-seen splats: their colour is determined
    assert seen.sum() > 20
    assert np.abs(solved.rgb - ref).max() < 2e-3
    # With a faint ridge the well-seen splats get their true colours back (8-bit frames).
    exact = solve_colors(grey, frames, iters=300, ridge=1e-4)
    assert np.abs(exact.rgb[seen] - truth.rgb[seen]).mean() < 0.03
    # It renders the frames better than the start (and than the truth's mean colour).
    for (rgb, _, K, c2w, _), (_, _, w, h) in zip(frames, cams, strict=True):
        err = [
            np.abs(render_gaussians(gs, c2w, K, w, h)["rgb"].astype(float) - rgb).mean()
            for gs in (solved, grey)
        ]
        assert err[0] < 0.5 * err[1]
    # Deterministic.
    assert np.array_equal(solve_colors(grey, frames, iters=300, rounds=1).sh0, solved.sh0)
    # Held to [0, 1] (what viewers show), the active set fits the frames at least as well.
    bounded = solve_colors(grey, frames, iters=300, rounds=3)
    assert bounded.rgb.min() >= 0 and bounded.rgb.max() <= 1

    def sse(gs: Gaussians) -> float:
        return sum(
            ((render_gaussians(gs, c2w, K, w, h)["rgb"].astype(float) - f[0]) ** 2).sum()
            for f, (K, c2w, w, h) in zip(frames, cams, strict=True)
        )

    assert sse(bounded) <= sse(solved) * 1.001


def test_sh1_render_matches_manual_colours_and_follows_view_dependent_frames():
    g = scene(seed=2)
    rng = np.random.default_rng(3)
    rest = rng.normal(0, 0.3, (len(g), 3, 3)).astype(np.float32)
    view_dep = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, rest)
    K, c2w, w, h = cameras()[0]
    # The renderer's SH colour is the 3DGS formula, evaluated per splat from the camera centre.
    d = g.means - c2w[:3, 3]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    manual = g.sh0 * SH_C0 + 0.5 + np.einsum("kn,nkc->nc", np.stack(sh_basis(d, 3)), rest)
    ref = render_reference(g.means, g.quats, g.log_scales, g.opacity_logits,
                           rgb_to_sh0(np.clip(manual, 0, None)), c2w, K, w, h)  # fmt: skip
    with torch.no_grad():
        out = render(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, c2w, K, w, h,
                     sh_rest=rest)  # fmt: skip
    assert np.abs(out["rgb"].numpy() - ref["rgb"]).max() < 1e-4
    # Frames with view-dependent colour: degree 1 fits them better than one colour per splat.
    cams = cameras(5)
    frames = frames_of(view_dep, cams)
    flat = solve_colors(g, frames, sh_degree=0, iters=200)
    sh1 = solve_colors(g, frames, sh_degree=1, iters=200, ridge_sh=1e-3)
    assert sh1.sh_rest.shape == (len(g), 3, 3)

    def mse(gs: Gaussians) -> float:
        return float(np.mean([
            ((render_gaussians(gs, c2w, K, w, h)["rgb"].astype(float) - f[0]) ** 2).mean()
            for f, (K, c2w, w, h) in zip(frames, cams, strict=True)
        ]))  # fmt: skip

    assert mse(sh1) < 0.7 * mse(flat)


def test_sh1_survives_ply_and_spz(tmp_path):
    g = scene(seed=4)
    rest = np.random.default_rng(5).normal(0, 0.2, (len(g), 3, 3)).astype(np.float32)
    args = (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, rest)
    ply = read_inria_ply(write_inria_ply(tmp_path / "s.ply", *args))
    assert np.array_equal(ply["sh_rest"], rest)
    spz = read_spz(write_spz(tmp_path / "s.spz", *args))
    assert spz["sh_rest"].shape == rest.shape
    # SPZ quantises degree 1 to 5 bits, and turns the axes (RDF -> RUB and back): same colours.
    K, c2w, w, h = cameras()[0]
    a = render_gaussians(Gaussians(*args), c2w, K, w, h)["rgb"].astype(float)
    b = render_gaussians(Gaussians(spz["means"], spz["quats_wxyz"], spz["log_scales"],
                                   spz["opacity_logits"], spz["sh0"], spz["sh_rest"]),
                         c2w, K, w, h)["rgb"].astype(float)  # fmt: skip
    assert np.abs(a - b).mean() < 3.0


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="shared photos not present")
def test_solved_colours_reproduce_a_street_walk_and_its_unseen_cameras(tmp_path):
    """The lift's default (colour solve) against the plain fused colours, on a real photo's
    forward walk: better at the cameras it was fitted to, and at cameras it never saw."""
    from studio.cli import main
    from studio.exports.lift import _check_depth, make_splats

    out = tmp_path / "w"
    args = ["generate", str(PHOTOS / "street_london_dav2_demo01.jpg"), "--out", str(out),
            "--path", "forward", "--frames", "6", "--width", "160", "--quiet"]  # fmt: skip
    assert main(args) == 0
    b = read_bundle(out)

    def median_psnr(g: Gaussians, indices) -> float:
        return float(np.median([
            psnr(render_gaussians(g, b.c2w(i), b.K(i), b.width, b.height)["rgb"], b.frame_rgb(i))
            for i in indices
        ]))  # fmt: skip

    plain, solved = make_splats(b, solve=False), make_splats(b)
    assert len(solved) > 0.9 * len(plain)
    assert median_psnr(solved, b.indices) > median_psnr(plain, b.indices) + 1.0
    # Held-out cameras: splats and colours from the even frames only, scored at the odd ones.
    fit = b.indices[::2]
    frames = [(b.frame_rgb(i), _check_depth(b, i), b.K(i), b.c2w(i), None) for i in fit]
    far = 10.0 * float(np.median(b.frame_depth(0)[b.frame_depth(0) > 0]))
    obs = [b.frame_source_mask(i) for i in fit]
    base = init_from_frames(frames, footprint_scale=0.5, base_opacity=0.99, far=far, observed=obs)
    g = init_from_frames(frames, footprint_scale=0.6, base_opacity=0.99, far=far, observed=obs)
    held = b.indices[1::2]
    assert median_psnr(solve_colors(g, frames, iters=10), held) > median_psnr(base, held) + 0.5


def test_refine_renders_the_view_dependent_colour_it_keeps():
    from models.lift.splat_refine import refine

    g = scene(seed=6)
    rest = np.random.default_rng(7).normal(0, 0.3, (len(g), 3, 3)).astype(np.float32)
    truth = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, rest)
    frames = frames_of(truth, cameras())
    out = refine(truth, frames, steps=3, lr=1e-3, device="cpu")
    # The CPU path renders with the SH term (shapes must line up) and hands it back unchanged.
    assert np.array_equal(out.sh_rest, rest) and np.isfinite(out.sh0).all()
