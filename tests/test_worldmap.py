"""The top-down map: pixel <-> ground round trips, fitting, and what gets drawn where."""

from __future__ import annotations

import numpy as np

from studio.worldmap import MapView, render_map


def test_pixels_and_ground_round_trip_and_north_is_up():
    view = MapView.fit(np.array([[-2.0, 0.0], [3.0, 6.0]]), size=400)
    for xy in ([0.0, 0.0], [1.5, 4.2], [-1.0, 5.5]):
        px = view.to_pixels(np.array([xy]))[0]
        back = view.to_ground(px[0] - 0.5, px[1] - 0.5)  # to_ground takes a pixel's index
        assert np.allclose(back, xy, atol=1e-9)
    a = view.to_pixels(np.array([[0.0, 0.0], [0.0, 1.0]]))
    assert a[1, 1] < a[0, 1]  # further ahead is higher up the image
    assert view.contains(np.array([[0.0, 0.0]]))[0]
    assert not view.contains(np.array([[100.0, 0.0]]), slack=0.5)[0]


def test_fit_keeps_cameras_inside_even_when_points_are_far():
    pts = np.random.default_rng(0).normal(0, 1, (500, 2))
    cams = np.array([[8.0, 9.0]])
    view = MapView.fit(pts, cams)
    assert view.contains(cams)[0]


def test_render_draws_points_cameras_and_waypoints_where_they_are():
    view = MapView.fit(np.array([[-1.0, -1.0], [1.0, 3.0]]), size=200)
    pts = np.array([[0.5, 2.0]])
    img = render_map(view, pts, np.array([[0, 255, 0]], np.uint8), np.array([[0.0, 0.0]]),
                     np.array([0.0]), waypoints_xy=np.array([[-0.5, 1.0]]))  # fmt: skip
    c, r = np.round(view.to_pixels(pts)[0]).astype(int)
    assert tuple(img[r, c]) == (0, 255, 0)
    cw, rw = np.round(view.to_pixels(np.array([[-0.5, 1.0]]))[0]).astype(int)
    assert img[rw, cw, 0] > 200 and img[rw, cw, 1] < 120  # the red waypoint dot
