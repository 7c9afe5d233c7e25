"""Tests for models.paths.trajectory (the trajectory.json contract, presets) and models.paths.waypoints."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from models.geometry.cameras import (
    Camera,
    axis_angle,
    intrinsics_from_fov,
    look_at,
    opencv_to_opengl_c2w,
)
from models.paths.trajectory import (
    PRESET_NAMES,
    Trajectory,
    TrajectoryError,
    make_preset,
    rotation_angle_deg,
)
from models.paths.waypoints import GroundFrame, catmull_rom, from_waypoints

W, H = 64, 48
UP_LEVEL = np.array([0.0, -1.0, 0.0])


def _camera(c2w: np.ndarray | None = None) -> Camera:
    return Camera(intrinsics_from_fov(W, H, 60.0), np.eye(4) if c2w is None else c2w, W, H)


def _tilted_camera() -> tuple[Camera, np.ndarray]:
    """A camera pitched down 15 deg, rolled 3 deg, in a world whose up is not an axis."""
    R_world = axis_angle([0.3, 1.0, -0.2], 0.7)
    up = R_world @ UP_LEVEL
    R_cam = R_world @ axis_angle([1.0, 0, 0], math.radians(-15)) @ axis_angle([0, 0, 1.0], 0.05)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R_cam, [0.4, -1.2, 2.5]
    return _camera(c2w), up


def _heading_deg(traj: Trajectory, gf: GroundFrame) -> np.ndarray:
    """Heading of each camera's view on the ground map, degrees (0 = ahead, + = right)."""
    z = traj.c2ws[:, :3, 2]
    return np.degrees(np.arctan2(z @ gf.right, z @ gf.forward))


def _traj(n: int = 3) -> Trajectory:
    start, up = _tilted_camera()
    return make_preset("orbit", start, n, up=up, scene_depth=3.0)


# ---------------------------------------------------------------------------------------------
# trajectory.json


def test_round_trip_is_exact():
    traj = _traj(5)
    d = json.loads(json.dumps(traj.to_dict()))
    assert d["convention"] == "opencv_c2w" and d["width"] == W and d["height"] == H
    assert len(d["frames"]) == 5 and np.shape(d["frames"][0]["c2w"]) == (4, 4)
    back = Trajectory.from_dict(d)
    assert len(back) == 5 and (back.width, back.height) == (W, H)
    for a, b in zip(traj, back, strict=True):
        assert np.array_equal(a.c2w, b.c2w) and np.array_equal(a.K, b.K)


def test_save_load(tmp_path):
    traj = _traj(4)
    traj.save(tmp_path / "trajectory.json")
    back = Trajectory.load(tmp_path / "trajectory.json")
    assert np.array_equal(back.c2ws, traj.c2ws)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TrajectoryError, match="not valid JSON"):
        Trajectory.load(tmp_path / "bad.json")


def test_opengl_convention_is_converted():
    traj = _traj(3)
    d = traj.to_dict()
    d["convention"] = "opengl_c2w"
    for fr, cam in zip(d["frames"], traj, strict=True):
        fr["c2w"] = opencv_to_opengl_c2w(cam.c2w).tolist()
    back = Trajectory.from_dict(d)
    np.testing.assert_allclose(back.c2ws, traj.c2ws, atol=1e-12)
    # Without the conversion the viewing direction would be flipped.
    assert np.dot(back[1].forward, traj[1].forward) > 0.999


def _bad(mutate) -> dict:
    d = copy.deepcopy(_traj(3).to_dict())
    mutate(d)
    return d


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(convention="blender"), "convention"),
        (lambda d: d.pop("convention"), "convention"),
        (lambda d: d.update(width=0), "width"),
        (lambda d: d.update(height=-3), "height"),
        (lambda d: d.update(width=64.5), "width"),
        (lambda d: d.update(width="64"), "width"),
        (lambda d: d.update(height=True), "height"),
        (lambda d: d.update(frames=[]), "at least one"),
        (lambda d: d.pop("frames"), "at least one"),
        (lambda d: d["frames"][1].pop("K"), "frame 1"),
        (lambda d: d["frames"][2]["K"].__setitem__(0, [float("nan"), 0, 1]), "frame 2: K.*NaN"),
        (lambda d: d["frames"][1]["c2w"][0].__setitem__(3, float("inf")), "frame 1: c2w.*NaN"),
        (lambda d: d["frames"][0].update(K=[[1, 0], [0, 1]]), "frame 0: K must be 3x3"),
        (lambda d: d["frames"][2].update(c2w=np.eye(3).tolist()), "frame 2: c2w must be 4x4"),
        (lambda d: d["frames"][1].update(c2w=[["a"] * 4] * 4), "frame 1: c2w"),
        (lambda d: d["frames"][1].update(c2w=np.diag([1.0, 1, 1.01, 1]).tolist()), "frame 1.*rot"),
        (lambda d: d["frames"][2].update(c2w=np.diag([1.0, 1, -1, 1]).tolist()), "frame 2.*rot"),
        (lambda d: d["frames"][0]["c2w"].__setitem__(3, [0, 0, 1, 1]), "frame 0.*last row"),
        (lambda d: d["frames"][1]["K"][0].__setitem__(0, -5.0), "frame 1.*focal"),
    ],
)
def test_from_dict_rejects(mutate, message):
    with pytest.raises(TrajectoryError, match=message):
        Trajectory.from_dict(_bad(mutate))


def test_from_dict_rejects_non_object():
    with pytest.raises(TrajectoryError):
        Trajectory.from_dict([1, 2, 3])


def test_small_rotation_noise_is_accepted():
    d = _traj(2).to_dict()
    d["frames"][1]["c2w"][0][0] += 1e-6
    assert len(Trajectory.from_dict(d)) == 2


def test_constructor_checks_sizes():
    cam = _camera()
    with pytest.raises(TrajectoryError, match="at least one"):
        Trajectory([])
    with pytest.raises(TrajectoryError, match="frame 1.*size"):
        Trajectory([cam, cam.resized(32, 24)])


def test_resized_scales_every_K():
    traj = _traj(3)
    small = traj.resized(W // 2, H // 2)
    assert (small.width, small.height) == (W // 2, H // 2)
    for a, b in zip(traj, small, strict=True):
        assert b.K[0, 0] == pytest.approx(a.K[0, 0] / 2)
        assert b.K[0, 2] == pytest.approx((a.K[0, 2] + 0.5) / 2 - 0.5)
        assert np.array_equal(a.c2w, b.c2w)


def test_path_length():
    cams = [_camera(look_at([x, 0, 0], [x, 0, 1], UP_LEVEL)) for x in (0.0, 1.0, 3.0)]
    assert Trajectory(cams).path_length() == pytest.approx(3.0)
    assert Trajectory(cams[:1]).path_length() == 0.0


def test_validate_starts_at():
    start, up = _tilted_camera()
    traj = make_preset("forward", start, 5, up=up, scene_depth=2.0)
    traj.validate_starts_at(start)
    moved = start.with_pose(traj[1].c2w)
    with pytest.raises(TrajectoryError, match="not the photo's camera"):
        traj.validate_starts_at(moved)
    turned = start.with_pose(make_preset("look-around", start, 9, up=up, scene_depth=1.0)[1].c2w)
    with pytest.raises(TrajectoryError, match="not the photo's camera"):
        traj.validate_starts_at(turned, pos_tol_m=1.0, rot_tol_deg=1.0)
    traj.validate_starts_at(moved, pos_tol_m=1.0)


# ---------------------------------------------------------------------------------------------
# Presets


@pytest.fixture(params=["level", "tilted"])
def start_up(request):
    if request.param == "level":
        return _camera(), UP_LEVEL
    return _tilted_camera()


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_preset_starts_at_start_and_keeps_eye_height(name, n, start_up):
    start, up = start_up
    traj = make_preset(name, start, n, up=up, scene_depth=4.0)
    assert len(traj) == n and (traj.width, traj.height) == (W, H)
    assert np.array_equal(traj[0].c2w, start.c2w) and np.array_equal(traj[0].K, start.K)
    heights = traj.centers @ (up / np.linalg.norm(up))
    assert np.abs(heights - heights[0]).max() < 1e-9
    for cam in traj:
        assert np.array_equal(cam.K, start.K)
    if n >= 7 and name != "look-around":
        assert traj.path_length() > 0.5


@pytest.mark.parametrize("name", ["forward", "look-around", "dolly", "loop"])
def test_presets_keep_pitch_and_roll(name, start_up):
    start, up = start_up
    traj = make_preset(name, start, 11, up=up, scene_depth=4.0)
    # Angle between each camera axis and up is the start's (only yaw about up changes).
    np.testing.assert_allclose(
        traj.c2ws[:, :3, :3].transpose(0, 2, 1) @ up,
        np.tile(start.c2w[:3, :3].T @ up, (11, 1)),
        atol=1e-12,
    )


def test_forward_walks_ahead(start_up):
    start, up = start_up
    traj = make_preset("forward", start, 11, up=up, scene_depth=5.0)
    d = traj.centers - start.center
    assert np.linalg.norm(d[-1]) == pytest.approx(2.0)
    fwd_h = start.forward - np.dot(start.forward, up) * up
    fwd_h /= np.linalg.norm(fwd_h)
    np.testing.assert_allclose(d[-1] / 2.0, fwd_h, atol=1e-12)  # horizontal part of the view
    assert traj.path_length() == pytest.approx(2.0)
    stepped = make_preset("forward", start, 11, up=up, scene_depth=5.0, step=0.1)
    assert stepped.path_length() == pytest.approx(1.0)
    assert np.allclose(np.linalg.norm(np.diff(stepped.centers, axis=0), axis=1), 0.1)


def test_orbit_looks_at_pivot(start_up):
    start, up = start_up
    traj = make_preset("orbit", start, 25, up=up, scene_depth=5.0)
    pivot = start.center + 3.0 * start.forward
    for cam in traj:
        to_pivot = (pivot - cam.center) / np.linalg.norm(pivot - cam.center)
        assert np.dot(to_pivot, cam.forward) > 1 - 1e-9
        assert np.linalg.norm(pivot - cam.center) == pytest.approx(3.0)
    angles = [rotation_angle_deg(start.c2w[:3, :3], c.c2w[:3, :3]) for c in traj]
    assert max(angles) == pytest.approx(25.0, abs=0.5)


def test_look_around_turns_in_place(start_up):
    start, up = start_up
    traj = make_preset("look-around", start, 41, up=up, scene_depth=5.0)
    assert np.abs(traj.centers - start.center).max() == 0.0
    gf = GroundFrame.from_camera(start, up)
    heading = _heading_deg(traj, gf)
    assert heading.max() == pytest.approx(40.0, abs=1e-6)
    assert heading.min() == pytest.approx(-40.0, abs=1e-6)
    assert np.argmax(heading) < np.argmin(heading)  # right first
    assert abs(heading[-1]) < 1e-9 and np.abs(np.diff(heading)).max() < 8.0


def test_dolly_trucks_right_and_back(start_up):
    start, up = start_up
    traj = make_preset("dolly", start, 21, up=up, scene_depth=4.0)
    d = traj.centers - start.center
    gf = GroundFrame.from_camera(start, up)
    np.testing.assert_allclose(d @ gf.forward, 0.0, atol=1e-12)
    lateral = d @ gf.right
    assert lateral.max() == pytest.approx(1.0, rel=1e-3) and lateral.min() > -1e-9
    assert np.linalg.norm(d[-1]) < 1e-9
    assert np.all(traj.c2ws[:, :3, :3] == start.c2w[:3, :3])


@pytest.mark.parametrize("n", [2, 5, 6, 31])
def test_loop_returns_exactly(n, start_up):
    start, up = start_up
    traj = make_preset("loop", start, n, up=up, scene_depth=4.0)
    assert np.array_equal(traj[-1].c2w, start.c2w)
    for i in range(n):  # mirrored in time
        assert np.array_equal(traj[i].c2w, traj[n - 1 - i].c2w)
    if n > 2:
        assert np.linalg.norm(traj.centers - start.center, axis=1).max() == pytest.approx(1.6)


def test_preset_errors():
    start = _camera()
    with pytest.raises(TrajectoryError, match="forward, orbit"):
        make_preset("spiral", start, 5, up=UP_LEVEL, scene_depth=2.0)
    for n in (0, -1):
        with pytest.raises(TrajectoryError, match="at least 1 frame"):
            make_preset("forward", start, n, up=UP_LEVEL, scene_depth=2.0)
    for depth in (0.0, -1.0, float("nan")):
        with pytest.raises(TrajectoryError, match="scene_depth"):
            make_preset("forward", start, 5, up=UP_LEVEL, scene_depth=depth)
    with pytest.raises(TrajectoryError, match="step"):
        make_preset("forward", start, 5, up=UP_LEVEL, scene_depth=2.0, step=0.0)
    with pytest.raises(TrajectoryError, match="up vector"):
        make_preset("forward", start, 5, up=np.zeros(3), scene_depth=2.0)


# ---------------------------------------------------------------------------------------------
# Ground frame and waypoints


def test_ground_frame_round_trip(start_up):
    start, up = start_up
    gf = GroundFrame.from_camera(start, up, camera_height=1.5)
    np.testing.assert_allclose(gf.to_world(np.zeros((1, 2)), 1.5)[0], start.center, atol=1e-12)
    assert np.dot(gf.forward, start.forward) > 0 and abs(np.dot(gf.forward, gf.up)) < 1e-12
    assert np.dot(gf.right, start.c2w[:3, 0]) > 0.9
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(20, 2)) * 3
    h = rng.uniform(0, 2, size=20)
    xyz = gf.to_world(xy, h)
    np.testing.assert_allclose(gf.to_ground(xyz), xy, atol=1e-12)
    np.testing.assert_allclose(gf.height_of(xyz), h, atol=1e-12)
    # Points in front of the camera have positive ground y.
    assert gf.to_ground(start.center + 2 * start.forward)[0, 1] > 0


def test_catmull_rom_interpolates():
    pts = np.array([[0.0, 0], [1, 0.1], [1.5, 2], [4, 2]])
    dense = catmull_rom(pts, 32)
    for p in pts:
        assert np.linalg.norm(dense - p, axis=1).min() < 1e-12
    assert np.array_equal(dense[0], pts[0]) and np.array_equal(dense[-1], pts[-1])


def _spacing(traj: Trajectory) -> np.ndarray:
    return np.linalg.norm(np.diff(traj.centers, axis=0), axis=1)


def test_waypoints_pass_through_and_constant_speed(start_up):
    start, up = start_up
    gf = GroundFrame.from_camera(start, up)
    wp = np.array([[0.0, 0.0], [0.5, 2.0], [-1.0, 3.0], [0.0, 5.0]])
    traj = from_waypoints(wp, start, up=up, speed=0.05)
    step = _spacing(traj)
    assert step.std() / step.mean() < 0.02
    assert step.mean() == pytest.approx(0.05, rel=0.05)
    ground = gf.to_ground(traj.centers)
    for p in wp:
        assert np.linalg.norm(ground - p, axis=1).min() < 0.05
    np.testing.assert_allclose(gf.height_of(traj.centers), 1.6, atol=1e-9)
    assert np.array_equal(traj[0].c2w, start.c2w)
    assert np.linalg.norm(ground[-1] - wp[-1]) < 1e-9


def test_waypoints_heading_follows_straight_segment(start_up):
    start, up = start_up
    gf = GroundFrame.from_camera(start, up)
    # Walk diagonally to the right: heading should settle at +45 degrees.
    traj = from_waypoints(np.array([[0.0, 0.0], [3.0, 3.0]]), start, up=up, n_frames=60)
    heading = _heading_deg(traj, gf)
    assert heading[0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(heading[20:], 45.0, atol=0.5)
    assert np.abs(np.diff(heading)).max() < 6.0
    # The start camera's pitch and roll relative to the horizon are kept.
    np.testing.assert_allclose(
        traj.c2ws[:, :3, :3].transpose(0, 2, 1) @ gf.up,
        np.tile(start.c2w[:3, :3].T @ gf.up, (60, 1)),
        atol=1e-12,
    )


def test_waypoints_l_shape_has_no_heading_jump(start_up):
    start, up = start_up
    gf = GroundFrame.from_camera(start, up)
    wp = np.array([[0.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    traj = from_waypoints(wp, start, up=up, speed=0.05)
    heading = _heading_deg(traj, gf)
    assert np.abs(np.diff(heading)).max() < 6.0
    assert abs(heading[5]) < 10.0 and heading[-1] == pytest.approx(90.0, abs=10.0)
    step = _spacing(traj)
    assert step.std() / step.mean() < 0.02


def test_waypoints_start_elsewhere_prepends_camera_and_eases(start_up):
    start, up = start_up
    gf = GroundFrame.from_camera(start, up)
    # The path starts behind-right: the camera first has to turn around.
    traj = from_waypoints(np.array([[2.0, -1.0], [3.0, -4.0]]), start, up=up, speed=0.05)
    assert np.array_equal(traj[0].c2w, start.c2w)
    assert np.abs(np.diff(_heading_deg(traj, gf))).max() < 6.0
    ground = gf.to_ground(traj.centers)
    assert np.linalg.norm(ground - [2.0, -1.0], axis=1).min() < 0.05


def test_waypoints_options(start_up):
    start, up = start_up
    gf = GroundFrame.from_camera(start, up)
    wp = np.array([[1.0, 1.0], [2.0, 4.0]])
    fixed = from_waypoints(wp, start, up=up, n_frames=20, look="fixed", start_at_camera=False)
    assert len(fixed) == 20
    assert np.all(fixed.c2ws[:, :3, :3] == start.c2w[:3, :3])
    np.testing.assert_allclose(gf.to_ground(fixed.centers)[[0, -1]], wp, atol=1e-9)
    low = from_waypoints(wp, start, up=up, n_frames=40, eye_height=1.0)
    h = gf.height_of(low.centers)
    assert h[0] == pytest.approx(1.6) and np.allclose(h[20:], 1.0)
    single = from_waypoints(np.zeros((1, 2)), start, up=up)
    assert len(single) == 1 and np.array_equal(single[0].c2w, start.c2w)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(waypoints_xy=np.zeros((0, 2))), "at least one waypoint"),
        (dict(waypoints_xy=np.zeros((3,))), r"\(N, 2\)"),
        (dict(waypoints_xy=np.array([[0.0, 0], [np.nan, 1]])), "NaN"),
        (dict(waypoints_xy=np.zeros((3, 2)), n_frames=10), "same place"),
        (dict(waypoints_xy=np.ones((2, 2)), speed=0.0), "speed"),
        (dict(waypoints_xy=np.ones((2, 2)), speed=-1.0), "speed"),
        (dict(waypoints_xy=np.ones((2, 2)), n_frames=0), "at least 1 frame"),
        (dict(waypoints_xy=np.ones((2, 2)), n_frames=5, speed=0.1), "not both"),
        (dict(waypoints_xy=np.ones((2, 2)), look="sideways"), "look"),
    ],
)
def test_waypoint_errors(kwargs, message):
    with pytest.raises(TrajectoryError, match=message):
        from_waypoints(start=_camera(), up=UP_LEVEL, **kwargs)


def test_waypoints_tight_jog_is_smoothed():
    start = _camera()
    gf = GroundFrame.from_camera(start, UP_LEVEL)
    # A 30 cm side-step between two straight stretches: the raw spline turns >100 degrees there.
    wp = np.array([[0.0, 0.0], [0.0, 2.0], [0.3, 2.0], [0.3, 4.0]])
    heading = _heading_deg(from_waypoints(wp, start, up=UP_LEVEL, speed=0.05), gf)
    assert np.abs(np.diff(heading)).max() < 8.0
    assert np.abs(heading).max() < 60.0
