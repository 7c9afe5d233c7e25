"""Geometric reliability of routed pixels (``models.geometry.reliability``) and its use in the
composite: a plane seen head-on from about the same place is routed as before; seen by the
source at 80 degrees across a wide baseline, its pixels would land tens of pixels off, lose to
any better placed claim, and, with no other claim, go to the painter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.geometry.composite import Composite
from models.geometry.reliability import (
    DEPTH_REL_ERROR,
    MIN_RELIABILITY,
    claim_reliability,
    depth_normals,
    landing_error_px,
)
from models.geometry.warp import forward_warp
from tests.test_composite import H as CH
from tests.test_composite import W as CW
from tests.test_composite import _frame_and_warp

W, H, F = 64, 48, 200.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.float64)
PLANE_Z = 2.0  # the plane z = 2 in the world (the target camera's frame)


def _orbit(deg: float, radius: float = PLANE_Z) -> np.ndarray:
    """c2w of a camera looking at (0, 0, 2) from ``radius`` away, ``deg`` off the plane's
    normal (its incidence angle on the plane z = 2 at that point)."""
    t = math.radians(deg)
    centre = np.array([0.0, 0.0, PLANE_Z]) + radius * np.array([math.sin(t), 0.0, -math.cos(t)])
    z = np.array([-math.sin(t), 0.0, math.cos(t)])
    y = np.array([0.0, 1.0, 0.0])
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([np.cross(y, z), y, z], 1)
    c2w[:3, 3] = centre
    return c2w


def _plane_depth(c2w: np.ndarray) -> torch.Tensor:
    """(H, W) z-depth of the plane z = 2 seen by the camera ``c2w`` (0 where not in front)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T @ c2w[:3, :3].T
    t = (PLANE_Z - c2w[2, 3]) / rays[..., 2]
    return torch.from_numpy(np.where(t > 0, t, 0.0).astype(np.float32))


def test_landing_error_matches_the_closed_form():
    """Source 80 degrees off the normal, 2 m from the point, target head-on 2 m away: the
    error is ``f rel r_s / cos(80) * sin(80) / z_t``; seen from the target's centre, 0."""
    t = math.radians(80)
    xyz = torch.tensor([[0.0, 0.0, 2.0]])
    n = torch.tensor([[0.0, 0.0, -1.0]])
    c_s = torch.tensor([2 * math.sin(t), 0.0, 2 - 2 * math.cos(t)])
    err = float(landing_error_px(xyz, n, c_s, F, 0.02))
    assert err == pytest.approx(F * 0.02 * 2 / math.cos(t) * math.sin(t) / 2, rel=1e-4)
    assert float(landing_error_px(xyz, n, torch.zeros(3), F, 0.02)) == 0.0


def test_depth_normals_of_a_slanted_plane():
    depth = _plane_depth(_orbit(60))
    n = depth_normals(depth, K)[10:-10, 10:-10]
    want = torch.from_numpy(_orbit(60)[:3, :3].T @ np.array([0.0, 0.0, 1.0])).float()
    cos = (n * want).sum(-1).abs()
    assert float(cos.min()) > 0.999


@pytest.mark.parametrize(
    "deg,radius,expect",
    [(0, PLANE_Z - 0.05, "reliable"), (80, 3.0, "dropped"), (60, 3.0, "weaker"), (40, 2.0, "ok")],
)
def test_plane_head_on_vs_grazing(deg, radius, expect):
    """The target looks at the plane head-on from 2 m. A source 5 cm behind it routes exactly
    (reliability about 1); one that saw the plane at 80 degrees from 3 m away would land its
    pixels about 35 px off at f = 200 (below MIN_RELIABILITY: painted); at 60 degrees from 3 m,
    about 10 px: weaker but kept; at 40 degrees from 2 m, about 3 px: within EXACT_PX."""
    c2w_src, c2w_tgt = _orbit(deg, radius), np.eye(4)
    depth = _plane_depth(c2w_src)
    rgb = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0))
    w = forward_warp(rgb, depth, K, c2w_src, K, c2w_tgt, W, H)
    assert bool(w.valid.any())
    rel = claim_reliability(w, depth, K, c2w_src, K, c2w_tgt)
    vals = rel[w.valid]
    med = float(vals.median())
    if expect == "reliable":
        assert med > 0.95
    elif expect == "ok":
        assert med > 0.9
    elif expect == "dropped":
        # incidence runs from about 71 to 89 degrees across the source's field of view
        assert med < MIN_RELIABILITY / 2 and float((vals < MIN_RELIABILITY).float().mean()) > 0.7
    else:
        assert MIN_RELIABILITY < med < 0.8
    assert bool((rel[~w.valid] == 1.0).all())  # no claim, no doubt
    if deg == 0:
        # the error model's scale: rel error of the depth at 2 m, f = 200, parallax ~ 0
        assert DEPTH_REL_ERROR * F < 10


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_better_placed_claim_wins_on_one_surface(reference, order):
    """Two frames see one wall; frame 0 has the better pixels (confidence) but saw the wall at
    a grazing angle (reliability 0.2), frame 1 is well placed: frame 1 wins, in either order,
    in the kernel and its torch twin."""
    wall = np.full((CH, CW), 2.0, np.float32)
    claims = {
        0: (_frame_and_warp(0.2, wall, np.full((CH, CW), 1.0, np.float32), 0.5), 0.2),
        1: (_frame_and_warp(0.8, wall, np.full((CH, CW), 0.7, np.float32), 0.5), 1.0),
    }
    comp = Composite(CW, CH, f_t=50.0, reference=reference)
    for fid in order:
        (frame, warp), r = claims[fid]
        comp.add(fid, warp, frame, torch.full((CH, CW), r))
    assert bool((comp.src == 1).all())
    comp.cohere()
    assert bool((comp.src == 1).all())
    assert torch.allclose(comp.reliability(), torch.ones(CH, CW))


@pytest.mark.parametrize("reference", [False, True])
def test_pixels_without_a_reliable_claim_are_handed_to_the_painter(reference):
    wall = np.full((CH, CW), 2.0, np.float32)
    frame, warp = _frame_and_warp(0.5, wall, np.full((CH, CW), 1.0, np.float32), 0.5)
    rel = torch.ones(CH, CW)
    rel[10:20, 30:40] = 0.004  # e.g. a grazing patch seen across the room
    comp = Composite(CW, CH, f_t=50.0, reference=reference)
    comp.add(0, warp, frame, rel)
    comp.cohere()
    dropped = comp.drop_unreliable(MIN_RELIABILITY)
    assert int(dropped.sum()) == 100 and bool(dropped[10:20, 30:40].all())
    assert bool((comp.depth[dropped] == 0).all()) and bool((comp.src[dropped] == -1).all())
    assert bool((comp.depth[~dropped] == 2.0).all())


def test_reliability_kernel_equals_torch_twin():
    """Random reliabilities over two overlapping frames at two depths: the compiled composite
    and its torch twin agree (claim by claim, after cohere and the drop)."""
    rng = np.random.default_rng(3)
    rels = [torch.from_numpy(rng.uniform(0.0, 1.0, (CH, CW)).astype(np.float32)) for _ in "ab"]
    outs = []
    for reference in (False, True):
        comp = Composite(CW, CH, f_t=50.0, reference=reference)
        for fid, colour, z in ((0, 0.3, 2.0), (1, 0.7, 1.9)):
            depth = np.full((CH, CW), z, np.float32)
            frame, warp = _frame_and_warp(colour, depth, np.full((CH, CW), 0.9, np.float32), 0.5)
            comp.add(fid, warp, frame, rels[fid])
        comp.cohere()
        comp.drop_unreliable(MIN_RELIABILITY * 20)
        outs.append((comp.src.clone(), comp.depth.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_reliability_compiled_equals_torch_twin():
    """An oblique, off-centre view of a slanted plane (all terms at work): the compiled pass and
    the torch form agree pixel by pixel."""
    c2w_src, c2w_tgt = _orbit(55), _orbit(-20, 1.7)
    depth = _plane_depth(c2w_src)
    w = forward_warp(torch.rand(H, W, 3), depth, K, c2w_src, K, c2w_tgt, W, H)
    assert int(w.valid.sum()) > 500
    fast = claim_reliability(w, depth, K, c2w_src, K, c2w_tgt)
    slow = claim_reliability(w, depth, K, c2w_src, K, c2w_tgt, reference=True)
    assert float((fast - slow).abs().max()) < 1e-4
    assert float(fast[w.valid].std()) > 0.01  # not a constant map
