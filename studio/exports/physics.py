"""Physics exports of a world bundle: USD (Isaac Sim) and MJCF (MuJoCo).

Both read the bundle, convert the world to the simulator's Z-up frame through
:mod:`models.geometry.cameras` (via :mod:`models.lift.physics`), and write through ``storage``. The mesh comes
from the caller (e.g. a TSDF mesh); without one, :func:`depth_mesh` triangulates the frames'
depth maps directly (a per-frame grid, cut at depth edges), which is enough for collisions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.geometry.cameras import (
    Camera,
    c2w_for_gltf_camera,
    transform_points,
    unproject_depth,
    world_to_gltf,
)
from models.lift import physics
from storage.errors import StorageError
from storage.formats.bundle import BundleInfo, read_bundle
from storage.formats.mjcf import write_mjcf
from storage.formats.usd import write_usd
from studio.exports.datasets import staging_dir

__all__ = ["Mesh", "depth_mesh", "export_mjcf", "export_usd", "floor_hint_z"]

Mesh = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # vertices (V,3), faces (F,3), rgb (V,3)
DEFAULT_FPS = 24.0


def _grid_faces(valid: np.ndarray, depth: np.ndarray, edge_rel: float) -> np.ndarray:
    """Triangles (F, 3) of an (h, w) sample grid, two per quad, dropping any triangle with an
    invalid corner or spanning a depth edge (relative depth spread above ``edge_rel``), so
    foreground and background are not joined by a curtain of stretched triangles."""
    h, w = depth.shape
    idx = np.arange(h * w).reshape(h, w)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    dz = depth.ravel()[tris]
    ok = valid.ravel()[tris].all(axis=1)
    spread = (dz.max(axis=1) - dz.min(axis=1)) / np.maximum(dz.min(axis=1), 1e-6)
    return tris[ok & (spread < edge_rel)]


def depth_mesh(
    bundle: BundleInfo, stride: int = 4, max_frames: int = 4, edge_rel: float | None = None
) -> Mesh:
    """A world mesh from the bundle's depth maps: vertices (V, 3) world metres, faces (F, 3),
    colours (V, 3) uint8.

    Every ``stride``-th pixel of up to ``max_frames`` evenly spaced frames (frame 0 always) is
    unprojected; each frame is its own grid mesh. Overlapping sheets are fine for collisions and
    keep this fast; a fused TSDF mesh is better when there is one. ``edge_rel`` defaults to
    ``0.03 * stride`` (a floor seen at a grazing angle stays connected, an object edge is cut).
    """
    edge = 0.03 * stride if edge_rel is None else edge_rel
    indices = bundle.indices
    pick = np.unique(np.linspace(0, len(indices) - 1, min(max_frames, len(indices))).round())
    verts, faces, cols = [], [], []
    offset = 0
    for i in (indices[int(p)] for p in pick):
        depth = bundle.frame_depth(i)[::stride, ::stride]
        rgb = bundle.frame_rgb(i)[::stride, ::stride]
        K = bundle.K(i).copy()
        K[:2] /= stride  # sample (x, y) of the strided grid is pixel (x*s, y*s)
        cam = Camera(bundle.K(i), bundle.c2w(i), bundle.width, bundle.height)
        valid = np.isfinite(depth) & (depth > 0)
        safe = np.where(valid, depth, 1.0).astype(np.float64)
        xyz_world = transform_points(cam.c2w, unproject_depth(safe, K).reshape(-1, 3))
        f = _grid_faces(valid, safe, edge)
        verts.append(xyz_world)
        cols.append(rgb.reshape(-1, 3))
        faces.append(f + offset)
        offset += len(xyz_world)
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    if len(f) == 0:
        raise StorageError("the world's depth maps hold no surface to build a physics mesh from")
    # Drop unreferenced vertices (invalid depth) so exports stay small.
    used, remap = np.unique(f, return_inverse=True)
    return v[used], remap.reshape(-1, 3), np.concatenate(cols)[used].astype(np.uint8)


def floor_hint_z(bundle: BundleInfo, cam0_zup: np.ndarray) -> float | None:
    """Expected floor height in the Z-up frame: first camera height minus the camera height the
    world was scaled with (world.json depth_meta.camera_height_m), or None when unknown."""
    meta = bundle.world.get("depth_meta") or {}
    height = meta.get("camera_height_m")
    if not isinstance(height, (int, float)) or not height > 0:
        return None
    return float(cam0_zup[2, 3]) - float(height)


def _prepare(bundle_dir: str | os.PathLike[str], mesh: Mesh | None):
    bundle = read_bundle(bundle_dir)
    up = np.asarray(bundle.world.get("up", [0.0, -1.0, 0.0]), dtype=np.float64)
    if up.shape != (3,) or not np.isfinite(up).all() or np.linalg.norm(up) < 1e-9:
        raise StorageError("world.json has no valid 'up' vector; cannot align gravity")
    v, f, c = depth_mesh(bundle) if mesh is None else mesh
    c2ws = np.stack([bundle.c2w(i) for i in bundle.indices])
    return bundle, up, np.asarray(v, float), np.asarray(f, np.int64), c, c2ws


def export_usd(
    bundle_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    mesh: Mesh | None = None,
    fps: float = DEFAULT_FPS,
    up_axis: str = "Z",
) -> Path:
    """Write ``out_path`` (.usda/.usdc/.usdz): Z-up stage, UsdPhysics scene, the world mesh as a
    static collider, the camera path as an animated camera. Returns the path.

    ``up_axis="Y"``: the AR variant (Y-up, no physics prims, a vertex-colour material), for AR
    viewers that require Y-up; Isaac Sim takes the Z-up default."""
    bundle, up, v, f, c, c2ws = _prepare(bundle_dir, mesh)
    i0 = bundle.indices[0]
    if up_axis == "Y":
        points = transform_points(world_to_gltf(up), v)
        cams = np.stack([c2w_for_gltf_camera(c2w, up) for c2w in c2ws])
    else:
        points, cams = physics.to_zup(v, up), physics.camera_path_zup(c2ws, up)
    colours = None if c is None else np.asarray(c, np.uint8)
    return write_usd(out_path, points, f, colours, cams, bundle.K(i0), bundle.width,
                     bundle.height, fps=fps, up_axis=up_axis)  # fmt: skip


def export_mjcf(
    bundle_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    mesh: Mesh | None = None,
    cell: float = 0.05,
    method: str = "auto",
    time_budget_s: float = 20.0,
    walker_radius: float | None = 0.1,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/scene.xml``: hfield floor, convex obstacle meshes, one camera per path
    point and (``walker_radius``) a sphere "walker" on x/y/z slide joints with x/y position
    actuators, keyframed at each path point on the floor. Returns the scene.xml path."""
    out_dir = Path(out_dir)
    # Enter the staging folder first: an occupied out_dir is refused before minutes of work.
    with staging_dir(out_dir, overwrite=overwrite) as temp:
        bundle, up, v, f, _, c2ws = _prepare(bundle_dir, mesh)
        vz = physics.to_zup(v, up)
        cams = physics.camera_path_zup(c2ws, up)
        floor_z = physics.estimate_floor_z(
            vz, f, hint_z=floor_hint_z(bundle, cams[0]), below_z=float(cams[:, 2, 3].min())
        )
        hf = physics.heightfield_from_mesh(
            vz, f, cell=cell, floor_z=floor_z, include_xy=cams[:, :2, 3]
        )
        pieces = physics.obstacle_pieces(vz, f, floor_z, method=method, time_budget_s=time_budget_s)
        write_mjcf(
            temp / "scene.xml",
            hf.heights,
            hf.extent(),
            pieces,
            cams,
            K=bundle.K(bundle.indices[0]),
            width=bundle.width,
            height=bundle.height,
            walker_radius=walker_radius,
        )
    return out_dir / "scene.xml"
