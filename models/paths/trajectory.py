"""Camera paths: the ``trajectory.json`` contract and the preset paths.

A :class:`Trajectory` is a list of :class:`~models.geometry.cameras.Camera` of one image size, in the
OpenCV ``c2w`` convention of :mod:`models.geometry.cameras`. ``to_dict`` / ``from_dict`` read and write
the ``trajectory.json`` format of DESIGN.md::

    {"convention": "opencv_c2w", "width": 640, "height": 480,
     "frames": [{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "c2w": [[...4x4...]]}, ...]}

Presets (:func:`make_preset`) start exactly at the photo's camera and move in the horizontal plane
(orthogonal to the world ``up``), so the eye height stays constant. Paths drawn on the ground
plane live in :mod:`models.paths.waypoints`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.geometry.cameras import Camera, CameraError, axis_angle, opengl_to_opencv_c2w

CONVENTION = "opencv_c2w"
PRESET_NAMES: tuple[str, ...] = ("forward", "orbit", "look-around", "dolly", "loop")
ROTATION_TOL = 1e-4
#: The most cameras any path may have (checked before anything is allocated; callers such as the
#: studio pass a lower ``max_frames``).
MAX_FRAMES = 20_000


class TrajectoryError(ValueError):
    """A camera path that cannot be used; the message says what is wrong in plain words."""


@dataclass
class Trajectory:
    """A camera path: cameras of one image size, in order.

    Attributes:
        cameras: list of :class:`Camera`, at least one, all ``width`` x ``height``.
    """

    cameras: list[Camera]

    def __post_init__(self) -> None:
        self.cameras = list(self.cameras)
        if not self.cameras:
            raise TrajectoryError("a camera path needs at least one camera")
        w, h = self.cameras[0].width, self.cameras[0].height
        for i, cam in enumerate(self.cameras):
            if not isinstance(cam, Camera):
                raise TrajectoryError(f"frame {i} is not a Camera (got {type(cam).__name__})")
            if (cam.width, cam.height) != (w, h):
                raise TrajectoryError(
                    f"frame {i} has image size {cam.width}x{cam.height}, but the path's first "
                    f"frame has {w}x{h}; all frames of a path must have the same size"
                )

    @property
    def width(self) -> int:
        return self.cameras[0].width

    @property
    def height(self) -> int:
        return self.cameras[0].height

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, i: int) -> Camera:
        return self.cameras[i]

    def __iter__(self) -> Iterator[Camera]:
        return iter(self.cameras)

    @property
    def centers(self) -> np.ndarray:
        """(N, 3) camera centres in world coordinates."""
        return np.stack([c.c2w[:3, 3] for c in self.cameras])

    @property
    def c2ws(self) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses."""
        return np.stack([c.c2w for c in self.cameras])

    def path_length(self) -> float:
        """Sum of the distances between consecutive camera centres, in metres."""
        return float(np.linalg.norm(np.diff(self.centers, axis=0), axis=1).sum())

    def resized(self, width: int, height: int) -> Trajectory:
        """The same path for images of ``width`` x ``height`` (every K scaled)."""
        return Trajectory([c.resized(width, height) for c in self.cameras])

    def validate_starts_at(
        self, camera: Camera, pos_tol_m: float = 1e-3, rot_tol_deg: float = 0.1
    ) -> None:
        """Raise :class:`TrajectoryError` unless the first pose is ``camera``'s pose.

        ``pos_tol_m``: allowed distance between centres (metres); ``rot_tol_deg``: allowed angle
        of the relative rotation (degrees). Intrinsics are not compared.
        """
        first = self.cameras[0].c2w
        dist = float(np.linalg.norm(first[:3, 3] - camera.c2w[:3, 3]))
        angle = rotation_angle_deg(first[:3, :3], camera.c2w[:3, :3])
        if dist > pos_tol_m or angle > rot_tol_deg:
            raise TrajectoryError(
                "the first camera of the path is not the photo's camera "
                f"(it is {dist:.3g} m away and turned by {angle:.3g} degrees; allowed: "
                f"{pos_tol_m:g} m and {rot_tol_deg:g} degrees)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The ``trajectory.json`` object (plain lists and numbers)."""
        return {
            "convention": CONVENTION,
            "width": self.width,
            "height": self.height,
            "frames": [c.to_dict() for c in self.cameras],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Trajectory:
        """Parse and validate a ``trajectory.json`` object (``opengl_c2w`` is converted)."""
        if not isinstance(d, dict):
            raise TrajectoryError("a trajectory must be a JSON object with 'frames' in it")
        convention = d.get("convention", None)
        if convention not in (CONVENTION, "opengl_c2w"):
            raise TrajectoryError(
                f"unknown camera convention {convention!r}; use 'opencv_c2w' "
                "(x right, y down, z forward) or 'opengl_c2w' (x right, y up, z backward)"
            )
        width, height = (
            _positive_int(d.get("width"), "width"),
            _positive_int(d.get("height"), "height"),
        )
        frames = d.get("frames")
        if not isinstance(frames, list) or not frames:
            raise TrajectoryError("the trajectory has no frames; it needs at least one camera")
        cameras = []
        for i, fr in enumerate(frames):
            if not isinstance(fr, dict) or "K" not in fr or "c2w" not in fr:
                raise TrajectoryError(f"frame {i} must be an object with 'K' and 'c2w'")
            K = _matrix(fr["K"], (3, 3), f"frame {i}: K")
            c2w = _matrix(fr["c2w"], (4, 4), f"frame {i}: c2w")
            if K[0, 0] <= 0 or K[1, 1] <= 0:
                raise TrajectoryError(f"frame {i}: the focal lengths in K must be positive")
            if not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6):
                raise TrajectoryError(f"frame {i}: the last row of c2w must be [0, 0, 0, 1]")
            R = c2w[:3, :3]
            if not np.allclose(R @ R.T, np.eye(3), atol=ROTATION_TOL) or np.linalg.det(R) < 0:
                raise TrajectoryError(
                    f"frame {i}: the rotation part of c2w is not a rotation (it stretches, "
                    "shears or mirrors the camera)"
                )
            if convention == "opengl_c2w":
                c2w = opengl_to_opencv_c2w(c2w)
            try:
                cameras.append(Camera(K, c2w, width, height))
            except CameraError as e:
                raise TrajectoryError(f"frame {i}: {e}") from e
        return cls(cameras)

    def save(self, path: str | Path) -> None:
        """Write ``trajectory.json``."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read and validate ``trajectory.json``."""
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise TrajectoryError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d)


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise TrajectoryError(f"{name} must be a positive whole number of pixels, got {v!r}")
    if v <= 0 or int(v) != v:
        raise TrajectoryError(f"{name} must be a positive whole number of pixels, got {v!r}")
    return int(v)


def _matrix(v: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        m = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TrajectoryError(f"{what} must be a {shape[0]}x{shape[1]} matrix of numbers") from e
    if m.shape != shape:
        raise TrajectoryError(f"{what} must be {shape[0]}x{shape[1]}, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise TrajectoryError(f"{what} contains NaN or infinite values")
    return m


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle in degrees of the rotation taking ``R_a`` (3, 3) to ``R_b`` (3, 3)."""
    c = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


# ---------------------------------------------------------------------------------------------
# Horizontal frame of a camera


def unit_up(up: Any) -> np.ndarray:
    """``up`` (3,) as a unit float64 vector; TrajectoryError if unusable."""
    u = np.asarray(up, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(u)) if u.shape == (3,) else 0.0
    if u.shape != (3,) or not np.isfinite(u).all() or n < 1e-9:
        raise TrajectoryError(f"the up vector must be 3 finite numbers, not all zero; got {up!r}")
    return u / n


def horizontal_axes(start: Camera, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, forward), each (3,): the start camera's x and z axes flattened onto the ground.

    ``up`` must be unit. right = forward x up, so (right, forward, up) is right-handed.
    """
    R = start.c2w[:3, :3]
    fwd = R[:, 2] - np.dot(R[:, 2], up) * up
    if np.linalg.norm(fwd) < 1e-6:  # looking straight up or down: use the image's x axis
        right = R[:, 0] - np.dot(R[:, 0], up) * up
        if np.linalg.norm(right) < 1e-6:
            raise TrajectoryError("the camera's axes are both vertical; cannot find the ground")
        fwd = np.cross(up, right)
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    return right, fwd


def yaw_right(up: np.ndarray, angle_rad: float) -> np.ndarray:
    """(3, 3) rotation turning the view to the right by ``angle_rad`` about ``up``."""
    return axis_angle(up, -angle_rad)


def ease(t: np.ndarray | float) -> np.ndarray:
    """Cosine ease-in-out from 0 (t=0) to 1 (t=1)."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def _pose(R: np.ndarray, center: np.ndarray) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R, center
    return c2w


# ---------------------------------------------------------------------------------------------
# Presets


def make_preset(
    name: str,
    start: Camera,
    n_frames: int,
    *,
    up: np.ndarray,
    scene_depth: float,
    step: float | None = None,
) -> Trajectory:
    """A preset camera path of ``n_frames`` cameras whose first camera is exactly ``start``.

    Args:
        name: one of :data:`PRESET_NAMES`:
            "forward" walk straight ahead (horizontally), 0.4 * scene_depth in total;
            "orbit" swing around a point 0.6 * scene_depth ahead on the view ray, +-25 degrees
            about ``up``, always looking at it;
            "look-around" turn in place right to 40 degrees, left to -40, back to 0;
            "dolly" slide right by 0.25 * scene_depth and back, orientation fixed;
            "loop" walk forward 0.4 * scene_depth and back; the last pose equals ``start``'s.
        start: the photo's camera; every camera keeps its K and image size.
        n_frames: number of cameras, >= 1.
        up: (3,) world up vector (about [0, -1, 0] for a level photo).
        scene_depth: typical depth of the scene in metres (e.g. the median depth), > 0.
        step: metres between consecutive frames for "forward", "loop" and "dolly" (replaces the
            default distance); ignored by "orbit" and "look-around".
    """
    if name not in _PRESETS:
        raise TrajectoryError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, int | np.integer) or n_frames < 1:
        raise TrajectoryError(f"a path needs at least 1 frame, got n_frames={n_frames!r}")
    if n_frames > MAX_FRAMES:
        raise TrajectoryError(f"a path has at most {MAX_FRAMES} frames, got {n_frames}")
    if not (isinstance(scene_depth, int | float) and math.isfinite(scene_depth)) or (
        scene_depth <= 0
    ):
        raise TrajectoryError(f"scene_depth must be a positive distance, got {scene_depth!r}")
    if step is not None and not (math.isfinite(step) and step > 0):
        raise TrajectoryError(f"step must be a positive distance per frame, got {step!r}")
    u = unit_up(up)
    right, fwd = horizontal_axes(start, u)
    R0, c0 = start.c2w[:3, :3], start.c2w[:3, 3]
    n = int(n_frames)
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    c2ws = _PRESETS[name](start, t, u, right, fwd, R0, c0, float(scene_depth), step)
    cams = [start] + [start.with_pose(c2w) for c2w in c2ws[1:]]
    if name == "loop":
        cams[-1] = start
    return Trajectory(cams)


def _forward(start, t, up, right, fwd, R0, c0, depth, step) -> list[np.ndarray]:
    dist = 0.4 * depth if step is None else step * (len(t) - 1)
    return [_pose(R0, c0 + dist * ti * fwd) for ti in t]


def _orbit(start, t, up, right, fwd, R0, c0, depth, step) -> list[np.ndarray]:
    pivot = c0 + 0.6 * depth * start.c2w[:3, 2]
    out = []
    for ti in t:
        Ry = yaw_right(up, math.radians(25.0) * math.sin(2 * math.pi * ti))
        out.append(_pose(Ry @ R0, pivot + Ry @ (c0 - pivot)))
    return out


def _look_around(start, t, up, right, fwd, R0, c0, depth, step) -> list[np.ndarray]:
    keys = np.array([0.0, 40.0, 0.0, -40.0, 0.0])
    out = []
    for ti in t:
        seg = min(int(ti * 4), 3)
        a = keys[seg] + (keys[seg + 1] - keys[seg]) * float(ease(ti * 4 - seg))
        out.append(_pose(yaw_right(up, math.radians(a)) @ R0, c0.copy()))
    return out


def _dolly(start, t, up, right, fwd, R0, c0, depth, step) -> list[np.ndarray]:
    # Out and back is 2 * amplitude long; with ``step`` that total is step * (n - 1).
    amp = 0.25 * depth if step is None else step * (len(t) - 1) / 2.0
    return [
        _pose(R0, c0 + amp * float(ease(2.0 * ti if ti <= 0.5 else 2.0 - 2.0 * ti)) * right)
        for ti in t
    ]


def _loop(start, t, up, right, fwd, R0, c0, depth, step) -> list[np.ndarray]:
    n = len(t)
    k = n // 2  # out-path poses 0..k (odd n) or 0..k-1 (even n, the far pose is shown twice)
    m = k + 1 if n % 2 else k
    dist = 0.4 * depth if step is None else step * (n - 1) / 2.0
    s = np.linspace(0.0, 1.0, m) if m > 1 else np.zeros(1)
    out = [_pose(R0, c0 + dist * float(ease(si)) * fwd) for si in s]
    back = out[:-1][::-1] if n % 2 else out[::-1]
    return out + back


_PRESETS: dict[str, Callable[..., list[np.ndarray]]] = {
    "forward": _forward,
    "orbit": _orbit,
    "look-around": _look_around,
    "dolly": _dolly,
    "loop": _loop,
}
