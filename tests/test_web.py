"""What the browser components are given: cameras in three.js terms that draw exactly what the
OpenCV cameras see, compact splats, the known-floor grid and its coverage estimate, stroke
simplification, and the map/scene payloads (plain JSON). The JavaScript that consumes them is
checked against these references in tests/e2e/test_web_js.py; the pages in tests/e2e."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.geometry.cameras import (
    c2w_for_gltf_camera,
    gl_projection,
    intrinsics_from_fov,
    invert_pose,
    look_at,
    project_points,
    spz_to_gltf,
    transform_points,
)
from storage.formats.splats import read_spz, write_inria_ply
from studio.web.scene import scene_payload, web_splat_subset, write_web_splats
from studio.worldmap import (
    FREE,
    SURFACE,
    MapView,
    coverage_estimate,
    known_grid,
    simplify_polyline,
)


def _three_pixels(X_world, c2w, K, up, width, height):
    """Pixels of world points as the browser draws them: the SPZ file's axes (y, z flipped),
    the splat matrix, the camera's matrixWorld and projection, the viewport transform."""
    X_spz = np.asarray(X_world) * np.array([1.0, -1.0, -1.0])
    X_three = transform_points(spz_to_gltf(up), X_spz)
    view = invert_pose(c2w_for_gltf_camera(c2w, up))
    clip = (
        np.c_[transform_points(view, X_three), np.ones(len(X_three))]
        @ gl_projection(K, width, height).T
    )
    ndc = clip[:, :3] / clip[:, 3:]
    u = (ndc[:, 0] + 1) / 2 * width - 0.5  # OpenCV pixel centres sit at integers
    v = (1 - ndc[:, 1]) / 2 * height - 0.5
    return np.stack([u, v], 1), ndc[:, 2]


def test_browser_cameras_draw_exactly_what_the_opencv_cameras_see():
    rng = np.random.default_rng(0)
    width, height = 512, 384
    K = intrinsics_from_fov(width, height, 63.0)
    K[0, 2] += 7.3  # an off-centre principal point must survive too
    K[1, 2] -= 4.1
    up = np.array([0.05, -0.99, 0.1])
    up /= np.linalg.norm(up)
    for _ in range(5):
        eye = rng.normal(0, 2, 3)
        c2w = look_at(eye, eye + rng.normal(0, 1, 3) + [0, 0, 3], up)
        X_cam = np.c_[rng.uniform(-2, 2, (50, 2)), rng.uniform(0.5, 9, 50)]
        X_world = transform_points(c2w, X_cam)
        uv_cv, z = project_points(X_cam, K)
        uv_three, ndc_z = _three_pixels(X_world, c2w, K, up, width, height)
        assert np.abs(uv_three - uv_cv).max() < 1e-6
        assert (np.abs(ndc_z) < 1).all()  # inside the near/far range: nothing is clipped


def test_browser_frame_is_gravity_aligned_and_projection_rejects_bad_planes():
    up = np.array([0.0, -1.0, 0.0])
    c2w = np.eye(4)
    M = c2w_for_gltf_camera(c2w, up)
    assert np.allclose(M[:3, 1], [0, 1, 0])  # the photo's camera up is the viewer's +y
    assert np.allclose(M[:3, 2], [0, 0, 1])  # it looks along -z (three.js)
    from models.geometry.cameras import CameraError

    with pytest.raises(CameraError):
        gl_projection(np.eye(3), 10, 10, near=1.0, far=0.5)


def test_scene_payload_is_plain_json_in_three_js_order():
    K = intrinsics_from_fov(64, 48, 60)
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    meta = {"up": [0, -1, 0], "width": 64, "height": 48, "scene_depth": np.float64(2.5)}
    scene = scene_payload(meta, [(K, c2w)], splats_url="a.spz", mesh_url="b.glb",
                          frame_urls=[{"rgb": "f.png", "mask": "m.png"}])  # fmt: skip
    text = json.dumps(scene)  # plain types only
    back = json.loads(text)
    m = np.array(back["cameras"][0]["c2w"]).reshape(4, 4).T  # column-major
    assert np.allclose(m, c2w_for_gltf_camera(c2w, np.array(meta["up"])), atol=1e-6)
    assert back["splats"]["url"] == "a.spz" and back["mesh"]["url"] == "b.glb"
    assert back["width"] == 64 and back["scene_depth"] == 2.5


def _gaussians(n, rng):
    means = rng.normal(0, 1, (n, 3)).astype(np.float32)
    quats = rng.normal(0, 1, (n, 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats *= np.where(quats[:, :1] < 0, -1, 1)
    log_scales = rng.uniform(-5, -2, (n, 3)).astype(np.float32)
    opac = rng.normal(0, 2, n).astype(np.float32)
    sh0 = rng.normal(0, 0.5, (n, 3)).astype(np.float32)
    return means, quats, log_scales, opac, sh0


def test_web_splats_keep_the_splats_that_matter_most_and_read_back(tmp_path):
    rng = np.random.default_rng(1)
    g = _gaussians(5000, rng)
    ply = write_inria_ply(tmp_path / "s.ply", *g)
    full = write_web_splats(ply, tmp_path / "full.spz")
    assert full["count"] == full["of"] == 5000 and full["bytes"] < ply.stat().st_size / 3
    small = write_web_splats(ply, tmp_path / "small.spz", max_splats=1000)
    assert small["count"] == 1000 and small["of"] == 5000
    back = read_spz(tmp_path / "small.spz")
    idx = web_splat_subset(g[3], g[2], 1000)
    assert np.abs(back["means"] - g[0][idx]).max() < 1e-3
    # The reference of "matters most": opacity x area of the two largest axes, brute force.
    opacity = 1 / (1 + np.exp(-g[3].astype(np.float64)))
    area = [math.exp(sorted(s)[1] + sorted(s)[2]) for s in g[2].astype(np.float64)]
    weight = opacity * np.array(area)
    assert weight[idx].min() >= np.sort(weight)[-1000] - 1e-12


def test_simplify_keeps_order_ends_and_stays_within_tolerance():
    t = np.linspace(0, 2 * np.pi, 400)
    stroke = np.stack([t, np.sin(t)], 1)
    tol = 0.02
    simple = simplify_polyline(stroke, tol)
    assert 5 < len(simple) < 60
    assert np.allclose(simple[0], stroke[0]) and np.allclose(simple[-1], stroke[-1])
    assert (np.diff(simple[:, 0]) > 0).all()  # drawing order kept

    def dist_to_polyline(p, line):
        best = np.inf
        for a, b in zip(line[:-1], line[1:], strict=True):
            s = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
            best = min(best, np.linalg.norm(p - a - s * (b - a)))
        return best

    assert max(dist_to_polyline(p, simple) for p in stroke) <= tol + 1e-9
    assert len(simplify_polyline(np.zeros((5, 2)), tol)) == 2  # a zero-length stroke: its ends


def test_known_grid_and_coverage_estimate_on_a_room():
    # A 4 m square room seen by one camera at its centre looking north (+y).
    wall = np.concatenate([np.stack([np.linspace(-2, 2, 200), np.full(200, 2.0)], 1),
                           np.stack([np.full(200, -2.0), np.linspace(-2, 2, 200)], 1),
                           np.stack([np.full(200, 2.0), np.linspace(-2, 2, 200)], 1)])  # fmt: skip
    view = MapView.fit(wall, np.zeros((1, 2)), size=256, margin=0.3)
    hfov = math.radians(70)
    grid = known_grid(view, wall, np.zeros((1, 2)), np.zeros(1), hfov, n=64)
    assert (grid == SURFACE).sum() > 30 and (grid == FREE).sum() > 100
    # Looking where the camera looked: all known; turned around (south): nothing known.
    assert coverage_estimate(grid, view, (0.0, 0.0), 0.0, hfov) == 1.0
    assert coverage_estimate(grid, view, (0.0, 0.0), math.pi, hfov) == 0.0
    half = coverage_estimate(grid, view, (0.0, 0.0), math.radians(35), hfov)  # half overlaps
    assert 0.35 < half < 0.65, half


def test_memory_preview_hatches_what_memory_has_not_seen():
    from studio.previews import blind_warnings, unknown_overlay

    rgb = np.full((8, 8, 3), 100, np.uint8)
    known = np.zeros((8, 8), bool)
    known[:, :4] = True
    out = unknown_overlay(rgb, known)
    assert (out[:, :4] == 100).all() and (out[:, 4:, 2] > out[:, 4:, 1]).all()
    w = blind_warnings([1.0, 0.9, 0.1, 0.05], {"mode": "waypoints", "look": "path"})
    assert len(w) == 1 and "2 of 4 views" in w[0] and 'Look to "fixed"' in w[0]
    assert "fewer frames" in blind_warnings([1.0, 0.0], {"mode": "preset"})[0]
    assert blind_warnings([1.0, 0.5], {"mode": "preset"}) == []
