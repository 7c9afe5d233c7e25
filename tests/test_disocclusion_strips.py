"""A strip opened beside a near pole takes the surface behind the pole, not the sky above it.

The scene (known answer): sky (150 m) above a textured mid-depth wall (8 m), a road (3 m) at the
bottom, and a near pole (2 m) reaching up into the sky. The camera moved, opening a strip on the
pole's right from high in the sky down to the road. Along each row the strip is crossed from the
pole to the wall (or to the sky, on the rows where the sky is beside it); along its columns from
the sky to the road. Only the rows tell what the strip reveals: the wall's depth and colour below
the sky line, the sky's above it, never the pole's.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.geometry.fill import (
    background_known,
    fill_depth,
    hole_crossings,
    hole_crossings_reference,
    inpaint_rgb,
)
from models.synthesis.exemplar import paint_exemplar

H, W = 64, 80
K = np.array([[70.0, 0, W / 2 - 0.5], [0, 70.0, H / 2 - 0.5], [0, 0, 1]])
SKY_ROW, ROAD_ROW = 22, 54  # wall from SKY_ROW, road from ROAD_ROW
POLE = slice(34, 38)
STRIP = slice(38, 45)  # hole columns, rows TOP..ROAD_ROW
TOP = 6
SKY_D, WALL_D, ROAD_D, POLE_D = 150.0, 8.0, 3.0, 2.0
SKY_RGB = np.array([0.75, 0.85, 0.97], np.float32)
WALL_RGB = np.array([0.25, 0.45, 0.2], np.float32)
POLE_RGB = np.array([0.1, 0.1, 0.1], np.float32)


def _scene():
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.standard_normal((H, W, 3)).astype(np.float32), (0, 0), 1.0)
    tex = 0.08 * tex / tex.std()
    rgb = np.empty((H, W, 3), np.float32)
    depth = np.empty((H, W), np.float32)
    rgb[:SKY_ROW], depth[:SKY_ROW] = SKY_RGB, SKY_D
    rgb[SKY_ROW:], depth[SKY_ROW:] = WALL_RGB + tex[SKY_ROW:], WALL_D
    rgb[ROAD_ROW:], depth[ROAD_ROW:] = 0.4 + tex[ROAD_ROW:], ROAD_D
    rgb[TOP - 4 :, POLE], depth[TOP - 4 :, POLE] = POLE_RGB, POLE_D
    known = np.ones((H, W), bool)
    known[TOP:ROAD_ROW, STRIP] = False
    return np.clip(rgb, 0, 1), depth, known


def _wall_rows(values: np.ndarray) -> np.ndarray:
    """The strip's pixels on rows where the wall (not the sky) is beside it, away from the sky
    line (within a half-size patch radius of it, 6 px, rows may go either way)."""
    return values[SKY_ROW + 6 : ROAD_ROW, STRIP]


def _closer_to_wall(rgb: np.ndarray) -> np.ndarray:
    return np.linalg.norm(rgb - WALL_RGB, axis=-1) < np.linalg.norm(rgb - SKY_RGB, axis=-1)


def test_crossings_take_the_row_beside_the_pole():
    rgb, depth, known = _scene()
    far, occluder = hole_crossings(depth, known)
    assert np.all(_wall_rows(far) == WALL_D)  # the row (pole -> wall), not the column (sky)
    assert np.all(far[TOP : SKY_ROW - 1, STRIP] == SKY_D)  # the sky where it is beside it
    assert np.all(far[known] == 0)
    # the pole's edge occludes the wall (and the sky above it); the wall never occludes
    assert np.all(occluder[SKY_ROW:ROAD_ROW, POLE.stop - 1] == WALL_D)
    assert np.all(occluder[SKY_ROW:ROAD_ROW, STRIP.stop] == 0)
    assert np.all(occluder[ROAD_ROW, STRIP] == 0)  # the road below is not the sky's occluder
    # one-sided holes (a turn: new columns at the frame's edge) are no disocclusion
    turn = np.ones((H, W), bool)
    turn[:, 60:] = False
    far, occluder = hole_crossings(depth, turn)
    assert not far.any() and not occluder.any()


def test_compiled_crossings_equal_the_numpy_twin():
    """The compiled scans give the numpy twin's bits: the strip scene, and random holes, depths
    (some unknown) and span limits."""
    _, depth, known = _scene()
    fast, slow = hole_crossings(depth, known), hole_crossings_reference(depth, known)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))
    rng = np.random.default_rng(7)
    for trial in range(20):
        h, w = (int(n) for n in rng.integers(3, 50, 2))
        d = rng.uniform(0.5, 30.0, (h, w)).astype(np.float32)
        d[rng.random((h, w)) < 0.05] = 0.0
        k = rng.random((h, w)) > rng.uniform(0.05, 0.9)
        span = None if trial % 2 else int(rng.integers(0, 12))
        fast, slow = hole_crossings(d, k, 0.08, span), hole_crossings_reference(d, k, 0.08, span)
        assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True)), trial


@pytest.mark.parametrize("kernels", ["compiled", "reference"])
def test_painter_strip_takes_the_wall_not_the_sky(kernels):
    rgb, depth, known = _scene()
    res = paint_exemplar(rgb, known, depth, K, seed=0, kernels=kernels)
    d = _wall_rows(res.depth)
    assert np.all((d > WALL_D / 1.3) & (d < WALL_D * 1.3)), f"strip depth {np.median(d):.1f} m"
    wall = _closer_to_wall(_wall_rows(res.rgb))
    assert wall.mean() > 0.95, f"{1 - wall.mean():.0%} of the strip below the sky line is sky"
    # never the pole: nothing in the strip has its colour or is as near as it
    assert (np.linalg.norm(res.rgb[TOP:ROAD_ROW, STRIP] - POLE_RGB, axis=-1) > 0.15).all()
    assert (res.depth[TOP:ROAD_ROW, STRIP] > 1.5 * POLE_D).all()
    # the sky where the sky is beside the strip (rows well above the wall)
    assert (res.depth[TOP : SKY_ROW - 3, STRIP] > 0.5 * SKY_D).all()
    assert np.array_equal(res.rgb[known], rgb[known])
    if kernels == "reference":  # the compiled kernels paint the same strip
        fast = paint_exemplar(rgb, known, depth, K, seed=0, kernels="compiled")
        np.testing.assert_allclose(fast.rgb, res.rgb, atol=1e-5)


def test_smooth_fill_strip_takes_the_wall_not_the_sky():
    rgb, depth, known = _scene()
    d_t, k_t = torch.from_numpy(depth), torch.from_numpy(known)
    filled = fill_depth(d_t, k_t).numpy()
    d = _wall_rows(filled)
    assert np.all((d > WALL_D / 1.3) & (d < WALL_D * 1.3)), f"strip depth {np.median(d):.1f} m"
    assert (filled[TOP:ROAD_ROW, STRIP] > 1.5 * POLE_D).all()
    # the wall beside the strip (even a few px under the sky) is a colour source, the pole not
    src = background_known(d_t, k_t).numpy()
    assert src[SKY_ROW + 1 : ROAD_ROW, STRIP.stop : STRIP.stop + 4].all()
    assert not src[TOP - 4 :, POLE].any()
    out = inpaint_rgb(torch.from_numpy(rgb), k_t, torch.from_numpy(filled)).numpy()
    wall = _closer_to_wall(_wall_rows(out))
    assert wall.mean() > 0.95, f"{1 - wall.mean():.0%} of the strip below the sky line is sky"
