"""Lift fidelity: fusion rules against their slow twins, the backdrop shell, the CPU mesh
rasteriser against its twin, and ``loci eval lift`` on a small real-photo world."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.geometry.cameras import intrinsics_from_fov
from models.lift.mesh_render import render_mesh, render_mesh_reference
from models.lift.splat_fusion import (
    View,
    backdrop_keep,
    consensus_colors,
    duplicates,
    duplicates_reference,
    keep_sharpest,
    keep_sharpest_reference,
    see_through,
    see_through_reference,
)
from models.lift.splat_render import render_gaussians
from models.lift.splats import init_from_frames
from tests.helpers import PHOTOS


@pytest.mark.parametrize("seed", range(3))
def test_keep_sharpest_matches_its_twin(seed):
    rng = np.random.default_rng(seed)
    n = 300
    means = rng.uniform(0, 1, (n, 3))
    footprint = rng.uniform(0.01, 0.05, n)
    frame = rng.integers(0, 4, n)
    observed = rng.random(n) < 0.7
    fast = keep_sharpest(means, footprint, frame, 0.2, observed)
    assert np.array_equal(fast, keep_sharpest_reference(means, footprint, frame, 0.2, observed))
    assert 0 < fast.sum() < n


def test_keep_sharpest_prefers_the_photo_then_the_finer_paint():
    means = np.zeros((4, 3)) + 0.05  # one voxel
    footprint = np.array([0.04, 0.01, 0.02, 0.005])
    frame = np.array([0, 3, 1, 2])
    observed = np.array([True, True, False, False])
    keep = keep_sharpest(means, footprint, frame, 0.2, observed)
    assert keep.tolist() == [True, False, False, False]  # observed, earliest frame
    keep = keep_sharpest(means, footprint, frame, 0.2, np.zeros(4, bool))
    assert keep.tolist() == [False, False, False, True]  # all painted: the finest footprint


def test_duplicates_match_their_twin():
    rng = np.random.default_rng(0)
    W, H = 16, 12
    K = intrinsics_from_fov(W, H, 60.0)
    views = []
    for i in range(3):
        c2w = np.eye(4)
        c2w[:3, 3] = [0.1 * i, 0.0, 0.05 * i]
        d = rng.uniform(2.0, 4.0, (H, W))
        d[rng.random((H, W)) < 0.1] = 0.0
        views.append(View(d, K, c2w, rng.random((H, W)) < 0.3))
    means = np.c_[rng.uniform(-1, 1, (200, 2)), rng.uniform(1.5, 4.5, 200)]
    footprint = rng.uniform(0.003, 0.01, 200)
    frame = rng.integers(0, 3, 200)
    painted = rng.random(200) < 0.4
    fast = duplicates(means, footprint, frame, painted, views)
    assert np.array_equal(fast, duplicates_reference(means, footprint, frame, painted, views))
    assert 0 < (fast > 0).sum() < len(fast)


def _random_views(rng, n=3, W=16, H=12):
    K = intrinsics_from_fov(W, H, 60.0)
    views = []
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3, 3] = [0.1 * i, 0.0, 0.05 * i]
        d = rng.uniform(2.0, 4.0, (H, W))
        d[rng.random((H, W)) < 0.1] = 0.0
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        views.append(View(d, K, c2w, None, rgb))
    return views


def _consensus_reference(means, frame, views, far, tol=0.05):
    """The mean colour over the frames that see each point, one point and frame at a time."""
    out = np.zeros((len(means), 3))
    for n, p in enumerate(means):
        cols = []
        for view in views:
            q = np.linalg.inv(view.c2w) @ np.r_[p, 1.0]
            if q[2] <= 1e-6:
                continue
            u = round(q[0] / q[2] * view.K[0, 0] + view.K[0, 2])
            v = round(q[1] / q[2] * view.K[1, 1] + view.K[1, 2])
            H, W = view.depth.shape
            if not (0 <= u < W and 0 <= v < H) or view.depth[v, u] <= 0:
                continue
            di = view.depth[v, u]
            if abs(di - q[2]) <= tol * q[2] or (q[2] >= far and di >= far):
                cols.append(view.rgb[v, u] / 255.0)
        out[n] = np.mean(cols, 0) if cols else 0.0
    return out


@pytest.mark.parametrize("seed", range(2))
def test_see_through_and_consensus_match_their_twins(seed):
    rng = np.random.default_rng(seed)
    views = _random_views(rng)
    # Points on the frames' own surfaces (so some are confirmed) and in free space.
    frame = rng.integers(0, 3, 200)
    means = np.zeros((200, 3))
    for n, fr in enumerate(frame):
        v = views[fr]
        y, x = rng.integers(0, 12), rng.integers(0, 16)
        z = v.depth[y, x] if v.depth[y, x] > 0 else 3.0
        z *= 1.0 if rng.random() < 0.6 else rng.uniform(0.5, 0.9)
        cam = np.array([(x - v.K[0, 2]) / v.K[0, 0] * z, (y - v.K[1, 2]) / v.K[1, 1] * z, z, 1])
        means[n] = (v.c2w @ cam)[:3]
    confirm, through = see_through(means, frame, views)
    ref_c, ref_t = see_through_reference(means, frame, views)
    assert np.array_equal(confirm, ref_c) and np.array_equal(through, ref_t)
    assert (confirm >= 1).all() and (confirm > 1).any() and (through > 0).any()
    fast = consensus_colors(means, frame, None, views, far=3.5)
    assert np.allclose(fast, _consensus_reference(means, frame, views, 3.5), atol=1e-6)


def test_a_ghost_most_frames_see_through_is_dropped_and_colours_meet_halfway():
    """Frame 0 sees a red square 2 m away in front of a grey wall (4 m); frames 1 and 2 see the
    wall there (their square was painted away): the square is a ghost in two views of three and
    goes; where the frames' colours of the wall disagree, the splats take the mean."""
    W, H = 32, 24
    K = intrinsics_from_fov(W, H, 60.0)
    frames = []
    for i, grey in enumerate((100, 120, 140)):
        rgb = np.full((H, W, 3), grey, np.uint8)
        depth = np.full((H, W), 4.0)
        if i == 0:
            rgb[4:20, 6:26] = (220, 30, 30)
            depth[4:20, 6:26] = 2.0
        frames.append((rgb, depth, K, np.eye(4), None))
    g = init_from_frames(frames, far=50.0, dedupe=False)
    r = render_gaussians(g, np.eye(4), K, W, H)["rgb"].astype(int)
    assert np.abs(r[12, 16] - 130).max() <= 3  # no red ghost; frames 1 and 2 meet halfway
    assert np.abs(r[1, 1] - 120).max() <= 3  # the wall all three see: their mean
    kept = init_from_frames(frames, far=50.0, dedupe=False, vote=False, consensus=False)
    assert render_gaussians(kept, np.eye(4), K, W, H)["rgb"][12, 16, 0] > 200  # the ghost


def test_backdrop_keeps_one_direction_from_the_first_frame():
    dirs = np.array([[0.0, 0, 1], [0.0, 0, 1], [0.0, 0.5, 0.866]])
    keep = backdrop_keep(dirs, np.full(3, 0.01), np.array([2, 0, 1]))
    assert keep.tolist() == [False, True, True]


def test_sky_is_kept_as_a_backdrop_shell_not_a_black_hole():
    W, H = 32, 24
    K = intrinsics_from_fov(W, H, 60.0)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:12] = (120, 170, 230)  # sky
    rgb[12:] = (90, 90, 90)
    depth = np.where(np.arange(H)[:, None] < 12, 150.0, 4.0) * np.ones((H, W))
    g = init_from_frames([(rgb, depth, K, np.eye(4), None)], far=40.0)
    r = render_gaussians(g, np.eye(4), K, W, H)
    assert r["alpha"][:12].min() > 0.95  # the sky rows are covered
    assert np.abs(r["rgb"][2:10].astype(int) - rgb[2:10]).max() <= 12
    # and the old behaviour (far pixels dropped) leaves a hole there
    hole = init_from_frames([(rgb, np.where(depth < 40, depth, 0.0), K, np.eye(4), None)])
    assert render_gaussians(hole, np.eye(4), K, W, H)["alpha"][:10].max() < 0.5


def test_mesh_rasteriser_matches_its_twin():
    rng = np.random.default_rng(0)
    K = np.array([[12.0, 0, 8], [0, 12, 6], [0, 0, 1]])
    for _ in range(4):
        V = np.c_[rng.uniform(-1, 1, (12, 2)), rng.uniform(1.5, 4, 12)]
        F = rng.integers(0, 12, (10, 3))
        C = rng.integers(0, 255, (12, 3)).astype(np.uint8)
        a = render_mesh(V, F, C, np.eye(4), K, 17, 13)
        b = render_mesh_reference(V, F, C, np.eye(4), K, 17, 13)
        assert np.array_equal(a["mask"], b["mask"])
        np.testing.assert_allclose(a["depth"], b["depth"], rtol=1e-5)
        assert np.abs(a["rgb"].astype(int) - b["rgb"]).max() <= 1


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="shared photos not present")
def test_eval_lift_on_a_small_world(tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "w"
    args = ["generate", str(PHOTOS / "street_london_dav2_demo01.jpg"), "--out", str(out),
            "--frames", "4", "--width", "128", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert main(["eval", "lift", str(out)]) == 0
    assert "splats" in capsys.readouterr().out
    report = json.loads((out / "eval_lift" / "report_lift.json").read_text())
    assert report["frames"] == 4 and len(report["per_frame"]) == 4
    # the street's sky is in the splats: every frame is covered, no black hole
    assert min(r["splat_coverage"] for r in report["per_frame"]) > 0.97
    assert report["median_splat_psnr"] > 20 and report["median_mesh_psnr"] > 15
    assert (out / "eval_lift" / "lift_sheet.png").stat().st_size > 10_000
    assert main(["eval", "lift", str(tmp_path / "nothing")]) == 2
