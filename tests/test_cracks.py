"""models.geometry.cracks: the crack measure on masks with known counts (and against its slow
twin), crack routing at a depth edge (the far side, never left to the painter), and the
``loci eval routing`` protocol on a real photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.geometry.cameras import Camera, intrinsics_from_fov, look_at
from models.geometry.cracks import crack_pixels, crack_pixels_reference
from models.memory import SpatialMemory

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STREET = DATA / "photos" / "street_london_dav2_demo01.jpg"


def _known_mask() -> tuple[np.ndarray, int, int]:
    """A routed 40x40 mask with holes of known crack counts (1-px, up to 3-px)."""
    valid = np.ones((40, 40), bool)
    valid[10, 5:15] = False  # a 1-px line, 10 long: 10 cracks at any width
    for i in range(6):  # a diagonal 1-px line (8-connected): 6 cracks
        valid[20 + i, 20 + i] = False
    valid[30:32, 5:7] = False  # a 2x2 hole: no 1-px crack, 4 within 3 px
    valid[2:5, 25:33] = False  # a 3-px band, 8 long: 24 within 3 px
    valid[12:24, 28:38] = False  # a 12x10 painted region: none, corners included
    return valid, 10 + 6, 10 + 6 + 4 + 24


def test_crack_pixels_counts_known_holes():
    valid, n1, n3 = _known_mask()
    assert int(crack_pixels(torch.from_numpy(valid), 1).sum()) == n1
    assert int(crack_pixels(torch.from_numpy(valid), 3).sum()) == n3
    assert not crack_pixels(torch.ones(8, 8, dtype=torch.bool), 3).any()
    assert not crack_pixels(torch.zeros(8, 8, dtype=torch.bool), 3).any()


@pytest.mark.parametrize("width", [1, 2, 3])
def test_crack_pixels_matches_reference(width):
    rng = np.random.default_rng(width)
    valid = rng.random((23, 31)) > 0.35
    fast = crack_pixels(torch.from_numpy(valid), width).numpy()
    np.testing.assert_array_equal(fast, crack_pixels_reference(valid, width))
    known, n1, n3 = _known_mask()
    assert int(crack_pixels_reference(known, 1).sum()) == n1
    assert int(crack_pixels_reference(known, 3).sum()) == n3


def test_depth_edge_crack_takes_the_far_side():
    """A near red square before a far blue wall; the first wall column next to the square is
    unknown in the frame (depth 0: never splatted). Seen again from the same camera, that
    column is a crack between the near and the far surface: it is routed from the far one
    (the wall's depth and colour), not left to the painter."""
    W, H = 64, 48
    K = intrinsics_from_fov(W, H, 60.0)
    cam = Camera(
        K, look_at(np.zeros(3), np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])), W, H
    )
    depth = torch.full((H, W), 10.0)
    rgb = torch.zeros(H, W, 3, dtype=torch.uint8)
    rgb[..., 2] = 200
    depth[:, :32] = 2.0
    rgb[:, :32] = torch.tensor([200, 30, 30], dtype=torch.uint8)
    depth[:, 32] = 0.0
    mem = SpatialMemory(point_stride=4, cell_size=8)
    mem.insert(0, cam, rgb, depth)
    corr = mem.correspond(cam, [0])
    rows = slice(4, H - 4)
    assert bool(corr.valid[rows, 32].all())
    np.testing.assert_allclose(corr.depth[rows, 32].numpy(), 10.0, rtol=0.02)
    blue = corr.rgb[rows, 32] * 255
    assert float((blue - torch.tensor([0.0, 0.0, 200.0])).abs().max()) <= 2.0
    assert int(crack_pixels(corr.valid, 1)[rows].sum()) == 0
    # the near square is untouched
    assert bool((corr.depth[rows, 31] == 2.0).all())


@pytest.mark.skipif(not STREET.is_file(), reason="shared street photo absent (../shared/data)")
def test_routing_protocol_on_the_street(tmp_path):
    from studio.evaluation.protocols import EvalOptions, run_eval, summarise

    reps = run_eval("routing", tmp_path, EvalOptions(width=128, frames=5), photos=[STREET.name])
    rep = reps["routing"]
    runs = {r["path"]: r for r in rep["runs"]}
    assert set(runs) == {"forward", "look-around"}
    for r in runs.values():
        assert len(r["per_frame"]) == 4
        for row in r["per_frame"]:
            assert 0 <= row["cracks_1px"] <= row["cracks_3px"]
        assert r["cracks_1px_max"] >= r["cracks_1px_median"]
    assert runs["look-around"]["return_exact"] is True  # a pure rotation back: the photo
    saved = json.loads((tmp_path / "report_routing.json").read_text())
    assert saved["runs"][0]["photo"] == STREET.name and "crack pixel" in saved["definition"]
    assert (tmp_path / "routing_sheet.png").stat().st_size > 1000
    assert "routing" in summarise(reps)


def _tiny_corr(depth: torch.Tensor, rgb: torch.Tensor):
    """A 5x5 correspondence routed everywhere but its centre, from frame 0, whose source pixels
    are far apart (so no crack can be sampled between two of them)."""
    from models.memory import Correspondence

    H, W = depth.shape
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[2, 2] = False
    depth = torch.where(valid, depth, 0.0)
    v, u = torch.meshgrid(torch.arange(H) * 10.0, torch.arange(W) * 10.0, indexing="ij")
    return Correspondence(
        rgb.clone(),
        depth,
        valid,
        torch.where(valid, 0, -1),
        torch.stack([u, v], -1),
        torch.ones(H, W),
        torch.ones(H, W, dtype=torch.bool),
        torch.ones(H, W),
    )


def test_unseen_crack_continues_its_surface_but_not_a_depth_edge():
    """A crack no frame saw (the frame's depth there is 100 m, the crack's 2 m): on one surface
    it continues the surface (median colour of its neighbours, marked not observed, stretch 2,
    half confidence); at a depth edge it stays a hole for the painter."""
    from types import SimpleNamespace

    from models.geometry.cracks import route_cracks

    cam = Camera(intrinsics_from_fov(5, 5, 60.0), np.eye(4), 5, 5)
    frame = SimpleNamespace(
        rgb=torch.zeros(5, 5, 3, dtype=torch.uint8), depth=torch.full((5, 5), 100.0), camera=cam
    )
    rgb = torch.full((5, 5, 3), 0.5)
    rgb[1, 1] = 0.0  # one stray neighbour: outvoted by the median
    corr = _tiny_corr(torch.full((5, 5), 2.0), rgb)
    out = route_cracks(corr, cam, {0: frame}, passes=2)
    assert bool(out.valid[2, 2]) and float(out.depth[2, 2]) == pytest.approx(2.0)
    np.testing.assert_allclose(out.rgb[2, 2].numpy(), 0.5)
    assert not bool(out.observed[2, 2]) and float(out.stretch[2, 2]) >= 2.0
    assert float(out.confidence[2, 2]) == pytest.approx(0.5)
    assert bool(corr.valid[2, 2]) is False  # the input is not changed
    # A depth edge: the crack's only routed neighbours are left (2 m) and right (20 m).
    edge = torch.full((5, 5), 2.0)
    edge[:, 3:] = 20.0
    corr = _tiny_corr(edge, rgb)
    corr.valid[1:4, 1:4] = False
    corr.valid[2, 1] = corr.valid[2, 3] = True
    corr.depth[~corr.valid] = 0.0
    out = route_cracks(corr, cam, {0: frame}, passes=1)
    assert not bool(out.valid[2, 2])
