"""Camera paths drawn on the ground plane (a top-down map) and turned into a :class:`Trajectory`.

Ground coordinates are metres in a :class:`GroundFrame`: the origin is the floor point below the
photo's camera, x points to the camera's right and y straight ahead (both horizontal), and the
third axis is the world ``up``. Waypoints are joined by a centripetal Catmull-Rom spline, sampled
at constant speed; the camera looks along the (smoothed) path and keeps the photo's pitch and roll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from models.geometry.cameras import Camera
from models.paths.trajectory import (
    MAX_FRAMES,
    Trajectory,
    TrajectoryError,
    ease,
    horizontal_axes,
    unit_up,
    yaw_right,
)

DEFAULT_CAMERA_HEIGHT = 1.6
DEFAULT_SPEED = 0.05  # metres per frame: 1.5 m/s at 30 fps, a walking pace
HEADING_SMOOTHING_M = 0.3  # sigma of the Gaussian smoothing of the path direction, metres
EASE_DEG_PER_FRAME = 3.0  # the turn from the photo's heading into the path's, on average
MAX_WAYPOINTS = 1000
MAX_PATH_M = 10_000.0  # longest path (by its waypoints), metres
DENSE_SAMPLES = 2_000_000  # spline samples at most, whatever the path (memory stays bounded)


@dataclass(frozen=True)
class GroundFrame:
    """The floor's coordinate system under the start camera.

    Attributes:
        origin: (3,) world point on the floor directly below the start camera centre.
        right: (3,) unit, horizontal camera x (ground x axis).
        forward: (3,) unit, horizontal camera z (ground y axis).
        up: (3,) unit world up.
        camera_height: metres of the start camera above the floor.
    """

    origin: np.ndarray
    right: np.ndarray
    forward: np.ndarray
    up: np.ndarray
    camera_height: float = DEFAULT_CAMERA_HEIGHT

    @classmethod
    def from_camera(
        cls, start: Camera, up: np.ndarray, camera_height: float = DEFAULT_CAMERA_HEIGHT
    ) -> GroundFrame:
        if not (math.isfinite(camera_height) and camera_height >= 0):
            raise TrajectoryError(f"camera height must be >= 0 metres, got {camera_height!r}")
        u = unit_up(up)
        right, fwd = horizontal_axes(start, u)
        origin = start.c2w[:3, 3] - camera_height * u
        return cls(origin, right, fwd, u, float(camera_height))

    def to_world(self, xy: np.ndarray, height: float | np.ndarray) -> np.ndarray:
        """World points (N, 3) from ground coordinates ``xy`` (N, 2) at ``height`` (scalar or (N,))
        metres above the floor."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        h = np.broadcast_to(np.asarray(height, dtype=np.float64), (len(xy),))
        return (
            self.origin + xy[:, :1] * self.right + xy[:, 1:2] * self.forward + h[:, None] * self.up
        )

    def to_ground(self, xyz_world: np.ndarray) -> np.ndarray:
        """Ground coordinates (N, 2) of world points ``xyz_world`` (N, 3) (height dropped)."""
        d = np.asarray(xyz_world, dtype=np.float64).reshape(-1, 3) - self.origin
        return np.stack([d @ self.right, d @ self.forward], axis=1)

    def height_of(self, xyz_world: np.ndarray) -> np.ndarray:
        """Heights (N,) above the floor of world points (N, 3)."""
        return (np.asarray(xyz_world, dtype=np.float64).reshape(-1, 3) - self.origin) @ self.up


def catmull_rom(points: np.ndarray, samples_per_segment: int = 64) -> np.ndarray:
    """Dense samples (M, D) of the centripetal Catmull-Rom spline through ``points`` (N, D).

    Consecutive points must differ. The ends are extended by mirrored phantom points, so the
    spline passes through every point including the first and last.
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 1:
        return p.copy()
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    out = [p[:1]]
    u = np.linspace(0.0, 1.0, samples_per_segment + 1)[1:, None]
    for i in range(len(p) - 1):
        P0, P1, P2, P3 = ext[i : i + 4]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(P1 - P0), 1e-12) ** 0.5
        t2 = t1 + max(np.linalg.norm(P2 - P1), 1e-12) ** 0.5
        t3 = t2 + max(np.linalg.norm(P3 - P2), 1e-12) ** 0.5
        t = t1 + u * (t2 - t1)
        A1 = (t1 - t) / (t1 - t0) * P0 + (t - t0) / (t1 - t0) * P1
        A2 = (t2 - t) / (t2 - t1) * P1 + (t - t1) / (t2 - t1) * P2
        A3 = (t3 - t) / (t3 - t2) * P2 + (t - t2) / (t3 - t2) * P3
        B1 = (t2 - t) / (t2 - t0) * A1 + (t - t0) / (t2 - t0) * A2
        B2 = (t3 - t) / (t3 - t1) * A2 + (t - t1) / (t3 - t1) * A3
        C = (t2 - t) / (t2 - t1) * B1 + (t - t1) / (t2 - t1) * B2
        C[-1] = P2  # exact at the waypoint
        out.append(C)
    return np.concatenate(out)


def from_waypoints(
    waypoints_xy: np.ndarray,
    start: Camera,
    *,
    up: np.ndarray,
    camera_height: float = DEFAULT_CAMERA_HEIGHT,
    eye_height: float | None = None,
    n_frames: int | None = None,
    speed: float | None = None,
    look: str = "path",
    start_at_camera: bool = True,
    max_frames: int = MAX_FRAMES,
) -> Trajectory:
    """A camera path through ground-plane waypoints.

    Every limit is checked arithmetically before anything is allocated: at most
    ``MAX_WAYPOINTS`` waypoints, ``MAX_PATH_M`` metres along them, and ``max_frames`` cameras
    (with ``speed``, the waypoints' polyline, which the spline never undercuts, gives a lower
    bound on the frames before the spline is built).

    Args:
        waypoints_xy: (N, 2) ground coordinates in metres (see :class:`GroundFrame`), N >= 1.
        start: the photo's camera (K, image size, pitch and roll are kept).
        up: (3,) world up vector.
        camera_height: the photo camera's height above the floor, metres.
        eye_height: the path's eye height above the floor (default ``camera_height``); with
            ``start_at_camera`` the height eases from the photo's to this one at the start.
        n_frames: number of cameras; or give ``speed`` (metres per frame, default 0.05), not both.
        look: "path" (look along the smoothed path direction) or "fixed" (keep the photo's view
            direction).
        start_at_camera: the path begins at the photo's camera (its ground position is prepended
            when the first waypoint is elsewhere) and the first camera is exactly ``start``.
        max_frames: the most cameras the path may have (at most ``MAX_FRAMES``).
    """
    if np.size(waypoints_xy) > 2 * MAX_WAYPOINTS:
        raise TrajectoryError(f"a path has at most {MAX_WAYPOINTS} waypoints")
    wp = np.asarray(waypoints_xy, dtype=np.float64)
    if wp.ndim != 2 or wp.shape[1] != 2:
        raise TrajectoryError(f"waypoints must be an (N, 2) array of x, y metres, got {wp.shape}")
    if len(wp) < 1:
        raise TrajectoryError("a path needs at least one waypoint")
    if not np.isfinite(wp).all():
        raise TrajectoryError("waypoints contain NaN or infinite values")
    if look not in ("path", "fixed"):
        raise TrajectoryError(f"look must be 'path' or 'fixed', got {look!r}")
    if n_frames is not None and speed is not None:
        raise TrajectoryError("give either the number of frames or the speed, not both")
    if n_frames is not None and (
        isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1
    ):
        raise TrajectoryError(f"a path needs at least 1 frame, got n_frames={n_frames!r}")
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise TrajectoryError(f"speed must be a positive number of metres per frame, got {speed!r}")
    max_frames = min(int(max_frames), MAX_FRAMES)
    if n_frames is not None and n_frames > max_frames:
        raise TrajectoryError(f"a path has at most {max_frames} frames, got {n_frames}")
    gf = GroundFrame.from_camera(start, up, camera_height)
    eye = camera_height if eye_height is None else float(eye_height)
    if not (math.isfinite(eye) and eye >= 0):
        raise TrajectoryError(f"eye height must be >= 0 metres, got {eye_height!r}")

    if start_at_camera and np.linalg.norm(wp[0]) > 1e-9:
        wp = np.concatenate([np.zeros((1, 2)), wp])
    keep = np.concatenate([[True], np.linalg.norm(np.diff(wp, axis=0), axis=1) > 1e-9])
    wp = wp[keep]
    chord = float(np.linalg.norm(np.diff(wp, axis=0), axis=1).sum())
    if chord > MAX_PATH_M:
        raise TrajectoryError(f"the path is {chord:.0f} m long; the most is {MAX_PATH_M:.0f} m")
    if n_frames is None and chord / (speed or DEFAULT_SPEED) + 1 > max_frames:
        raise TrajectoryError(
            f"that path needs at least {chord / (speed or DEFAULT_SPEED) + 1:.0f} frames at "
            f"{speed or DEFAULT_SPEED:g} m per frame; the limit is {max_frames}: walk faster or "
            "shorten the path"
        )
    if len(wp) == 1:
        if n_frames is not None and n_frames > 1:
            raise TrajectoryError(
                "all waypoints are at the same place, so there is no path to move along"
            )
        return Trajectory([_first_camera(start, gf, wp[0], eye, start_at_camera)])

    # Dense spline, then a uniform arc-length grid on it.
    per_segment = min(int(40 * _max_seg(wp)) + 1, DENSE_SAMPLES // (len(wp) - 1))
    dense = catmull_rom(wp, samples_per_segment=max(64, per_segment))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    L = float(arc[-1])
    n_grid = min(max(256, int(math.ceil(L / 0.005)) + 1), DENSE_SAMPLES)
    s_grid = np.linspace(0.0, L, n_grid)
    grid = np.stack([np.interp(s_grid, arc, dense[:, k]) for k in range(2)], axis=1)

    n = int(n_frames) if n_frames is not None else max(2, round(L / (speed or DEFAULT_SPEED)) + 1)
    if n > max_frames:  # the spline is longer than its polyline: the exact count, still cheap
        raise TrajectoryError(
            f"that path needs {n} frames at {speed or DEFAULT_SPEED:g} m per frame; the limit is "
            f"{max_frames}: walk faster or shorten the path"
        )
    s_frames = np.linspace(0.0, L, n) if n > 1 else np.zeros(1)
    xy = np.stack([np.interp(s_frames, s_grid, grid[:, k]) for k in range(2)], axis=1)

    # Heading (radians, 0 = the photo's forward, positive = to the right) from smoothed tangents.
    if look == "path":
        tangent = np.gradient(grid, s_grid, axis=0)
        sigma = min(HEADING_SMOOTHING_M, L / 6.0) / (L / (n_grid - 1))
        smooth = gaussian_filter1d(tangent, sigma, axis=0, mode="nearest")
        norm = np.linalg.norm(smooth, axis=1, keepdims=True)
        smooth = np.where(norm > 1e-9, smooth / np.maximum(norm, 1e-12), tangent)
        psi_grid = np.unwrap(np.arctan2(smooth[:, 0], smooth[:, 1]))
        psi = np.interp(s_frames, s_grid, psi_grid)
    else:
        psi = np.zeros(n)
    height = np.full(n, eye)
    if start_at_camera and n > 1:
        psi = psi - 2 * np.pi * np.round(psi[0] / (2 * np.pi))  # start turn within +-180 deg
        n_ease = max(int(math.ceil(abs(math.degrees(psi[0])) / EASE_DEG_PER_FRAME)), 8)
        w = ease(np.arange(n) / min(n_ease, n - 1))
        psi = w * psi
        height = camera_height + w * (eye - camera_height)

    centers = gf.to_world(xy, height)
    R0 = start.c2w[:3, :3]
    cams = []
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3, :3] = yaw_right(gf.up, float(psi[i])) @ R0
        c2w[:3, 3] = centers[i]
        cams.append(start.with_pose(c2w))
    if start_at_camera:
        cams[0] = start
    return Trajectory(cams)


def _max_seg(wp: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(wp, axis=0), axis=1).max())


def _first_camera(
    start: Camera, gf: GroundFrame, xy: np.ndarray, eye: float, start_at_camera: bool
) -> Camera:
    if start_at_camera:
        return start
    c2w = start.c2w.copy()
    c2w[:3, 3] = gf.to_world(xy[None], eye)[0]
    return start.with_pose(c2w)
