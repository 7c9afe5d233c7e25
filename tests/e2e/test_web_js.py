"""The browser's own geometry against its Python references, run in the real Chromium.

``loci-map.js`` simplifies strokes, previews the path the server will plan and estimates how
much of each view memory knows, all without a server round trip; here each function runs in the
page (the module is served from ``studio/web/assets`` by a Playwright route, no studio server)
and is compared with :mod:`studio.worldmap` and :func:`models.paths.waypoints.from_waypoints`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.geometry.cameras import Camera, intrinsics_from_fov
from models.paths.trajectory import yaw_right
from models.paths.waypoints import GroundFrame, from_waypoints
from studio.web.routes import ASSETS
from studio.worldmap import MapView, coverage_estimate, known_grid, simplify_polyline

ORIGIN = "http://loci.test"


@pytest.fixture(scope="module")
def js(browser):
    """A page with ``loci-map.js`` imported as ``window.M``."""
    context = browser.new_context()
    page = context.new_page()

    def serve(route):
        name = route.request.url.split(ORIGIN + "/", 1)[1].split("?")[0] or "index.html"
        if name == "index.html":
            route.fulfill(body="<!doctype html><title>js</title>", content_type="text/html")
        elif (ASSETS / name).is_file():
            route.fulfill(body=(ASSETS / name).read_bytes(), content_type="text/javascript")
        else:
            route.fulfill(status=404)

    page.route(ORIGIN + "/**", serve)
    page.goto(ORIGIN + "/index.html")
    page.evaluate("async () => { window.M = await import('/loci-map.js'); }")
    yield page
    context.close()


def test_stroke_simplification_matches_the_reference(js):
    rng = np.random.default_rng(3)
    for trial in range(6):
        n = int(rng.integers(3, 300))
        walk = np.cumsum(rng.normal(0, 0.05, (n, 2)), axis=0)
        tol = float(rng.uniform(0.005, 0.1))
        got = js.evaluate("([p, t]) => M.simplify(p, t)", [walk.tolist(), tol])
        ref = simplify_polyline(walk, tol)
        assert np.allclose(got, ref, atol=1e-12), trial


def _start_camera(xy, heading, up, gf0: GroundFrame, photo: Camera) -> Camera:
    c2w = np.eye(4)
    c2w[:3, :3] = yaw_right(up, heading) @ photo.c2w[:3, :3]
    c2w[:3, 3] = gf0.to_world(np.array([xy]), gf0.camera_height)[0]
    return photo.with_pose(c2w)


@pytest.mark.parametrize(
    ("start_xy", "start_heading", "look", "speed"),
    [((0.0, 0.0), 0.0, "path", 0.0), ((1.0, 2.0), 0.5, "path", 0.0),
     ((0.0, 0.0), 0.0, "fixed", 0.0), ((0.5, -0.5), -1.2, "path", 0.07)],
)  # fmt: skip
def test_path_preview_matches_the_server_plan(js, start_xy, start_heading, look, speed):
    """What the map previews while drawing is where the server puts the cameras."""
    up = np.array([0.0, -1.0, 0.0])
    photo = Camera(intrinsics_from_fov(64, 48, 60), np.eye(4), 64, 48)
    gf0 = GroundFrame.from_camera(photo, up, 1.6)
    start = _start_camera(start_xy, start_heading, up, gf0, photo)
    wp_map = np.array([[0.6, 2.5], [1.8, 3.0], [1.2, 4.4], [-0.5, 3.8]])
    gfs = GroundFrame.from_camera(start, up, 1.6)
    n_kw = {"speed": speed} if speed else {"n_frames": 30}
    traj = from_waypoints(gfs.to_ground(gf0.to_world(wp_map, 0.0)), start, up=up,
                          camera_height=1.6, look=look, **n_kw)  # fmt: skip
    c2w = np.stack([c.c2w for c in traj])
    xy_ref = gf0.to_ground(c2w[:, :3, 3])
    fwd = c2w[:, :3, 2]
    head_ref = np.arctan2(fwd @ gf0.right, fwd @ gf0.forward)
    got = js.evaluate(
        "([s, w, o]) => M.previewPath(s, w, o)",
        [[*start_xy, start_heading], wp_map.tolist(), {"frames": 30, "speed": speed, "look": look}],
    )
    xy = np.array(got["xy"])
    assert xy.shape == xy_ref.shape
    assert np.abs(xy - xy_ref).max() < 0.01  # metres
    dh = (np.array(got["headings"]) - head_ref + math.pi) % (2 * math.pi) - math.pi
    assert np.degrees(np.abs(dh)).max() < 1.0


def test_coverage_estimate_matches_the_reference(js):
    rng = np.random.default_rng(5)
    t = rng.uniform(-0.6, 0.6, 400)
    walls = np.concatenate([np.stack([4 * t, np.full(400, 3.0)], 1),
                            np.stack([np.full(400, -2.5), 3 + 3 * t], 1)])  # fmt: skip
    cams = np.array([[0.0, 0.0], [0.2, 0.8]])
    heads = np.array([0.0, -0.3])
    view = MapView.fit(walls, cams, size=512, margin=0.35)
    hfov = math.radians(60)
    grid = known_grid(view, walls, cams, heads, hfov, n=96)
    extent = {"x0": view.x0, "y1": view.y1, "span": view.scale * view.size}
    poses = [(float(x), float(y), float(h)) for x, y, h in
             zip(rng.uniform(-2, 2, 25), rng.uniform(-1, 3, 25), rng.uniform(-3, 3, 25), strict=True)]  # fmt: skip
    sight = {"eye_height": 1.4, "vfov_rad": 0.8, "pitch_rad": -0.1}
    got = js.evaluate(
        "([g, n, e, poses, hfov, s]) => poses.map(([x, y, h]) =>"
        " M.coverageEstimate(Uint8Array.from(g), n, e, x, y, h, hfov, 24, 8,"
        " s.eye_height, s.vfov_rad, s.pitch_rad))",
        [grid.reshape(-1).tolist(), 96, extent, poses, hfov, sight],
    )
    ref = [coverage_estimate(grid, view, (x, y), h, hfov, **sight) for x, y, h in poses]
    # A ray may end one march step apart where a cell boundary falls between two float paths.
    assert np.abs(np.array(got) - np.array(ref)).max() <= 1 / 24 + 1e-9
    assert np.mean(np.array(got) == np.array(ref)) > 0.9
    assert 0 < np.mean(ref) < 1  # the poses see some known and some unknown
