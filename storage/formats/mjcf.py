"""MJCF (MuJoCo XML) physics scenes: heightfield floor, convex obstacle meshes, camera path.

MuJoCo collides only convex geometry (a mesh geom collides as its convex hull), so a world is
written as one ``hfield`` for the walkable floor plus one ``mesh`` geom per convex piece. Mesh
vertices are written inline (``<mesh vertex="...">``): one self-contained file, nothing to lose.

Cameras and the optional walker follow the Z-up frame the caller converted to. Camera
orientation is given as ``xyaxes`` (the camera's X and Y axes in world coordinates; MuJoCo
cameras look along their -Z, Y up, the OpenGL axes), so no quaternion maths is needed here.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write_text
from storage.errors import StorageError

__all__ = ["write_mjcf"]

HFIELD_BASE_M = 0.2  # depth of the solid box below the lowest floor sample


def _fmt(values: np.ndarray, digits: int = 5) -> str:
    return " ".join(f"{x:.{digits}f}".rstrip("0").rstrip(".") or "0" for x in np.ravel(values))


def write_mjcf(
    path: str | os.PathLike[str],
    heightfield: np.ndarray,
    hfield_extent: Sequence[float],
    obstacles: Sequence[np.ndarray],
    camera_xforms: np.ndarray,
    K: np.ndarray | None = None,
    width: int | None = None,
    height: int | None = None,
    walker_radius: float | None = None,
    model_name: str = "loci_world",
) -> Path:
    """Write a MuJoCo scene atomically.

    Args:
        heightfield: (R, C) float32 absolute heights in metres (Z up); row r at
            y = y_center - y_half + r * 2 * y_half / (R - 1), column c likewise along x.
        hfield_extent: (x_center, y_center, x_half, y_half) of the grid in metres.
        obstacles: convex pieces, each (n_i, 3) points (MuJoCo uses their hull), n_i >= 4.
        camera_xforms: (N, 4, 4) camera-to-world in the Z-up frame, OpenGL camera axes.
        K, width, height: intrinsics of the path cameras (sets ``fovy``); default 60 degrees.
        walker_radius: when set, adds body "walker" (a sphere of this radius on slide joints
            walker_x/y/z, position actuators on x and y) and a keyframe "path_NNN" per camera
            with the walker on the floor under that camera. Walker qpos is relative to path 0.

    Heights are stored normalised to [0, 1] with ``size[2]`` = max - min and the geom placed at
    z = min: MuJoCo rescales elevation data itself, so this is the one encoding that means the
    same whatever its normalisation rule is.
    """
    h = np.asarray(heightfield, dtype=np.float64)
    if h.ndim != 2 or min(h.shape) < 2:
        raise StorageError(f"heightfield must be a 2-D grid of at least 2x2, got {h.shape}")
    if not np.isfinite(h).all():
        raise StorageError("heightfield has NaN or infinite heights")
    cams = np.asarray(camera_xforms, dtype=np.float64)
    if cams.ndim != 3 or cams.shape[1:] != (4, 4) or not np.isfinite(cams).all():
        raise StorageError(f"camera transforms must be finite (N, 4, 4), got {cams.shape}")
    xc, yc, xh, yh = (float(x) for x in hfield_extent)
    if not (xh > 0 and yh > 0):
        raise StorageError("heightfield extent must have positive half sizes")
    zmin, zmax = float(h.min()), float(h.max())
    span = max(zmax - zmin, 1e-4)  # a perfectly flat floor still needs a positive size
    fovy = 60.0
    if K is not None and height:
        fovy = float(np.degrees(2 * np.arctan(0.5 * height / float(np.asarray(K)[1, 1]))))

    root = ET.Element("mujoco", model=model_name)
    ET.SubElement(root, "compiler", angle="radian", autolimits="true")
    ET.SubElement(root, "option", gravity="0 0 -9.81", timestep="0.002")
    visual = ET.SubElement(root, "visual")
    if width and height:
        ET.SubElement(visual, "global", offwidth=str(int(width)), offheight=str(int(height)))
    asset = ET.SubElement(root, "asset")
    rows, cols = h.shape
    ET.SubElement(
        asset,
        "hfield",
        name="floor",
        nrow=str(rows),
        ncol=str(cols),
        size=_fmt([xh, yh, span, HFIELD_BASE_M]),
        # MuJoCo reads XML elevation rows top-down like an image (first row at +y); our row 0
        # is at -y, hence the flip (checked by loading and reading hfield_data back).
        elevation=_fmt((h[::-1] - zmin) / span),
    )
    world = ET.SubElement(root, "worldbody")
    ET.SubElement(world, "light", name="sun", pos=_fmt([xc, yc, zmax + 5]), dir="0 0 -1")
    ET.SubElement(
        world,
        "geom",
        name="floor",
        type="hfield",
        hfield="floor",
        pos=_fmt([xc, yc, zmin]),
        rgba="0.6 0.6 0.55 1",
    )
    for i, pts in enumerate(obstacles):
        pts = np.asarray(pts, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 4 or not np.isfinite(pts).all():
            raise StorageError(f"obstacle {i} must be finite points (n >= 4, 3), got {pts.shape}")
        ET.SubElement(asset, "mesh", name=f"obstacle_{i:03d}", vertex=_fmt(pts))
        ET.SubElement(
            world,
            "geom",
            name=f"obstacle_{i:03d}",
            type="mesh",
            mesh=f"obstacle_{i:03d}",
            rgba="0.7 0.5 0.4 1",
        )
    for i, T in enumerate(cams):
        ET.SubElement(
            world,
            "camera",
            name=f"path_{i:03d}",
            pos=_fmt(T[:3, 3]),
            xyaxes=_fmt(np.concatenate([T[:3, 0], T[:3, 1]])),
            fovy=_fmt([fovy], 3),
        )
    if walker_radius is not None:
        _add_walker(root, world, cams, h, (xc, yc, xh, yh), float(walker_radius))
    ET.indent(root)
    return atomic_write_text(path, ET.tostring(root, encoding="unicode") + "\n")


def _floor_height(h: np.ndarray, extent: tuple[float, ...], xy: np.ndarray) -> float:
    """Bilinear height of grid ``h`` at ``xy`` (clamped): where the walker stands."""
    xc, yc, xh, yh = extent
    rows, cols = h.shape
    fx = np.clip((xy[0] - (xc - xh)) / (2 * xh) * (cols - 1), 0, cols - 1 - 1e-9)
    fy = np.clip((xy[1] - (yc - yh)) / (2 * yh) * (rows - 1), 0, rows - 1 - 1e-9)
    c0, r0 = int(fx), int(fy)
    tx, ty = fx - c0, fy - r0
    c1, r1 = min(c0 + 1, cols - 1), min(r0 + 1, rows - 1)
    top = h[r0, c0] * (1 - tx) + h[r0, c1] * tx
    bottom = h[r1, c0] * (1 - tx) + h[r1, c1] * tx
    return float(top * (1 - ty) + bottom * ty)


def _add_walker(
    root: ET.Element,
    world: ET.Element,
    cams: np.ndarray,
    h: np.ndarray,
    extent: tuple[float, ...],
    radius: float,
) -> None:
    """A sphere on x/y/z slides: x/y driven by position servos, z free under gravity, so it
    follows the path on the floor and any obstacle in the way shows up as a contact."""
    ground = np.array(
        [[T[0, 3], T[1, 3], _floor_height(h, extent, T[:2, 3]) + radius] for T in cams]
    )
    body = ET.SubElement(world, "body", name="walker", pos=_fmt(ground[0]))
    # x/y damping 40 = 2 sqrt(kp * mass): the servo is critically damped, no overshoot into
    # obstacles beside the path; z is lightly damped so the walker settles onto the floor.
    for axis, vec, damping in (("x", "1 0 0", 40), ("y", "0 1 0", 40), ("z", "0 0 1", 5)):
        ET.SubElement(
            body, "joint", name=f"walker_{axis}", type="slide", axis=vec, damping=str(damping)
        )
    # Nearly frictionless (priority makes its friction win over the floor's): Coulomb friction
    # against the servo would leave it mu * m * g / kp (2.5 cm) short of every waypoint.
    ET.SubElement(
        body,
        "geom",
        name="walker",
        type="sphere",
        size=_fmt([radius]),
        mass="1",
        priority="1",
        friction="0.01 0.005 0.0001",
        rgba="0.2 0.6 1 1",
    )
    actuators = ET.SubElement(root, "actuator")
    for axis in ("x", "y"):
        ET.SubElement(
            actuators, "position", name=f"walker_{axis}", joint=f"walker_{axis}", kp="400"
        )
    keys = ET.SubElement(root, "keyframe")
    for i, p in enumerate(ground):
        rel = p - ground[0]
        ET.SubElement(keys, "key", name=f"path_{i:03d}", qpos=_fmt(rel), ctrl=_fmt(rel[:2]))
