"""Physics-ready geometry from a world mesh: Z-up frame, walkable heightfield, convex obstacles.

Simulators want a gravity-aligned Z-up world (USD for Isaac Sim, MuJoCo). MuJoCo collides only
convex shapes: a sphere dropped on a non-convex terrain mesh rests on the mesh's convex hull,
decimetres above the real floor. So the physics scene is split in two:

* the **walkable floor** becomes a heightfield (``hfield``), rasterised from the mesh's
  near-horizontal triangles close to the floor level (see :func:`heightfield_from_mesh`);
* everything else above the floor (walls, furniture) becomes **convex pieces**: coacd, then vhacdx
  when coacd fails, then hulls of small spatial chunks (see :func:`obstacle_pieces`).

All inputs are numpy arrays; the Loci world (OpenCV cameras, arbitrary "up") is converted to
Z-up only through :mod:`models.geometry.cameras`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from models.geometry.cameras import c2w_for_zup_camera, transform_points, world_to_zup

__all__ = [
    "HeightField",
    "camera_path_zup",
    "estimate_floor_z",
    "heightfield_from_mesh",
    "obstacle_pieces",
    "to_zup",
    "walkable_faces",
]


def to_zup(xyz_world: np.ndarray, up: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """World points (N, 3) -> Z-up points (N, 3) float64 (``up`` maps to +Z)."""
    return transform_points(world_to_zup(up, forward), np.asarray(xyz_world, dtype=np.float64))


def camera_path_zup(
    c2ws: np.ndarray, up: np.ndarray, forward: np.ndarray | None = None
) -> np.ndarray:
    """OpenCV c2w (N, 4, 4) -> Z-up camera transforms (N, 4, 4) with OpenGL camera axes
    (camera looks along its -Z, +Y up), as USD and MuJoCo cameras expect."""
    return np.stack([c2w_for_zup_camera(c, up, forward) for c in np.asarray(c2ws, float)])


def _face_normals_areas(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (F, 3) and areas (F,) of triangles."""
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    norm = np.linalg.norm(cross, axis=1)
    return cross / np.maximum(norm, 1e-20)[:, None], 0.5 * norm


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"mesh must be vertices (V, 3) and faces (F, 3), got {v.shape}, {f.shape}")
    if len(f) == 0 or len(v) < 3:
        raise ValueError("the mesh is empty: there is no geometry to build a physics scene from")
    if not np.isfinite(v).all():
        raise ValueError("the mesh has NaN or infinite vertices")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError("mesh faces refer to vertices that do not exist")
    return v, f


def estimate_floor_z(
    vertices_zup: np.ndarray,
    faces: np.ndarray,
    hint_z: float | None = None,
    below_z: float | None = None,
    max_slope_deg: float = 20.0,
    bin_m: float = 0.02,
) -> float:
    """Height of the floor: the lowest strong peak of near-horizontal surface area over z.

    Area-weighted (not vertex-weighted) so a finely tessellated object does not outvote a coarse
    floor. With ``hint_z`` (e.g. first camera height minus the eye height the world was scaled
    with) the strongest peak within 0.4 m of the hint wins; without horizontal area there, the
    hint itself. Without a hint: the lowest bin holding at least 10 % of the strongest bin's area
    (a floor is often half hidden by furniture). ``below_z`` (e.g. the lowest camera) ignores
    horizontal surfaces above it: ceilings are as flat and often larger than the visible floor.
    """
    v, f = _check_mesh(vertices_zup, faces)
    n, area = _face_normals_areas(v, f)
    flat = np.abs(n[:, 2]) >= math.cos(math.radians(max_slope_deg))
    z = v[f[flat]].mean(axis=1)[:, 2]
    w = area[flat]
    if below_z is not None:
        z, w = z[z < below_z], w[z < below_z]
    if hint_z is not None:
        near = np.abs(z - hint_z) < 0.4
        z, w = z[near], w[near]
    if w.sum() <= 0:
        if hint_z is not None:
            return float(hint_z)
        return float(np.percentile(v[:, 2], 2.0))
    lo = z.min()
    idx = np.floor((z - lo) / bin_m).astype(np.int64)
    hist = np.bincount(idx, weights=w)
    # Smooth over +-1 bin: a slightly tilted floor spreads its area over neighbouring bins.
    smooth = np.convolve(hist, [1.0, 1.0, 1.0], mode="same")
    best = (
        int(np.argmax(smooth))
        if hint_z is not None
        else int(np.flatnonzero(smooth >= 0.1 * smooth.max())[0])
    )
    members = idx == best
    return (
        float(np.average(z[members], weights=w[members]))
        if members.any()
        else lo + (best + 0.5) * bin_m
    )


def walkable_faces(
    vertices_zup: np.ndarray,
    faces: np.ndarray,
    floor_z: float,
    step_height: float = 0.15,
    max_slope_deg: float = 30.0,
) -> np.ndarray:
    """(F,) bool: triangles that are floor a ground robot walks on.

    Near-horizontal (|normal z| >= cos ``max_slope_deg``; the sign is ignored because depth-map
    triangulations do not promise a winding) and entirely within ``step_height`` of ``floor_z``.
    Table tops and ceilings are horizontal too but fail the height test: they stay obstacles.
    """
    v, f = _check_mesh(vertices_zup, faces)
    n, _ = _face_normals_areas(v, f)
    z = v[f][:, :, 2]
    flat = np.abs(n[:, 2]) >= math.cos(math.radians(max_slope_deg))
    low = (z.max(axis=1) <= floor_z + step_height) & (z.min(axis=1) >= floor_z - step_height)
    return flat & low


@dataclass(frozen=True)
class HeightField:
    """A regular elevation grid in the Z-up frame.

    Attributes:
        heights: (R, C) float32 absolute z in metres; row r is at y = y_min + r * cell, column c
            at x = x_min + c * cell (samples on cell corners, as MuJoCo's hfield).
        observed: (R, C) bool, True where a floor triangle was rasterised (others are filled
            from the nearest observed cell).
        x_min, y_min, cell: grid origin and spacing in metres.
    """

    heights: np.ndarray
    observed: np.ndarray
    x_min: float
    y_min: float
    cell: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.heights.shape  # type: ignore[return-value]

    def extent(self) -> tuple[float, float, float, float]:
        """(x_center, y_center, x_half, y_half): the hfield geom position and MuJoCo radii."""
        rows, cols = self.heights.shape
        x_half = 0.5 * (cols - 1) * self.cell
        y_half = 0.5 * (rows - 1) * self.cell
        return self.x_min + x_half, self.y_min + y_half, x_half, y_half

    def height_at(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear height (N,) at points (N, 2) (clamped to the grid)."""
        xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))
        rows, cols = self.heights.shape
        fx = np.clip((xy[:, 0] - self.x_min) / self.cell, 0, cols - 1 - 1e-9)
        fy = np.clip((xy[:, 1] - self.y_min) / self.cell, 0, rows - 1 - 1e-9)
        c0, r0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
        tx, ty = fx - c0, fy - r0
        h = self.heights.astype(np.float64)
        c1, r1 = np.minimum(c0 + 1, cols - 1), np.minimum(r0 + 1, rows - 1)
        top = h[r0, c0] * (1 - tx) + h[r0, c1] * tx
        bottom = h[r1, c0] * (1 - tx) + h[r1, c1] * tx
        return top * (1 - ty) + bottom * ty


def _sample_triangles(v: np.ndarray, f: np.ndarray, spacing: float) -> np.ndarray:
    """Points (M, 3) covering triangles with at most ``spacing`` between samples.

    A regular barycentric lattice per triangle (deterministic, unlike random sampling), with
    the subdivision count chosen from the longest edge; triangles are grouped by count so the
    work stays vectorised.
    """
    tri = v[f]  # (F, 3, 3)
    edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max(axis=1)
    steps = np.clip(np.ceil(edges / spacing), 1, 64).astype(np.int64)
    out = [tri.reshape(-1, 3)]
    for k in np.unique(steps):
        if k <= 1:
            continue
        i, j = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
        keep = i + j <= k
        bary = np.stack([i[keep], j[keep], k - i[keep] - j[keep]], axis=1) / k  # (B, 3)
        sel = tri[steps == k]  # (T, 3, 3)
        out.append(np.einsum("bk,tkd->tbd", bary, sel).reshape(-1, 3))
    return np.concatenate(out)


def _corner_heights(
    tri: np.ndarray, lo: np.ndarray, cell: float, rows: int, cols: int
) -> np.ndarray:
    """(rows, cols) highest z of the triangles (T, 3, 3) exactly at each grid corner, -inf where
    no triangle covers it. Exact (barycentric) rather than nearest-sample: on a sloped floor a
    max over samples within half a cell would lift the floor by slope * cell / 2."""
    out = np.full((rows, cols), -np.inf)
    g = (tri[:, :, :2] - lo) / cell  # grid coordinates of the corners
    c0 = np.clip(np.ceil(g[:, :, 0].min(axis=1)), 0, cols - 1).astype(np.int64)
    c1 = np.clip(np.floor(g[:, :, 0].max(axis=1)), -1, cols - 1).astype(np.int64)
    r0 = np.clip(np.ceil(g[:, :, 1].min(axis=1)), 0, rows - 1).astype(np.int64)
    r1 = np.clip(np.floor(g[:, :, 1].max(axis=1)), -1, rows - 1).astype(np.int64)
    nc, nr = np.maximum(c1 - c0 + 1, 0), np.maximum(r1 - r0 + 1, 0)
    count = nc * nr
    if count.sum() == 0:
        return out
    t = np.repeat(np.arange(len(tri)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    cc = c0[t] + k % nc[t]
    rr = r0[t] + k // nc[t]
    a, b, c = g[t, 0], g[t, 1], g[t, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    l1 = ((cc - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (rr - a[:, 1])) / det
    l2 = ((b[:, 0] - a[:, 0]) * (rr - a[:, 1]) - (cc - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
    eps = 1e-9
    inside = ok & (l1 >= -eps) & (l2 >= -eps) & (l1 + l2 <= 1 + eps)
    z = tri[t, 0, 2] + l1 * (tri[t, 1, 2] - tri[t, 0, 2]) + l2 * (tri[t, 2, 2] - tri[t, 0, 2])
    np.maximum.at(out, (rr[inside], cc[inside]), z[inside])
    return out


def heightfield_from_mesh(
    vertices_zup: np.ndarray,
    faces: np.ndarray,
    cell: float = 0.05,
    floor_z: float | None = None,
    step_height: float = 0.15,
    max_slope_deg: float = 30.0,
    margin: float = 0.5,
    include_xy: np.ndarray | None = None,
    max_cells: int = 1024,
) -> HeightField:
    """Rasterise the walkable surface of a Z-up mesh into a heightfield.

    Which surface: the triangles :func:`walkable_faces` accepts (near-horizontal, within
    ``step_height`` of ``floor_z``). Each grid corner takes the highest such triangle's z exactly
    at the corner (:func:`_corner_heights`; triangles smaller than a cell contribute their
    samples to the nearest corner). So a rug or a low step is kept, but a table top (far above)
    or a wall (vertical) is not: those are obstacles, handled as convex pieces. Cells the floor
    was never seen in (under furniture, outside the views) take the nearest observed cell's
    height, or ``floor_z`` when no floor was seen at all.

    Args:
        vertices_zup: (V, 3) metres, Z up. faces: (F, 3) int.
        cell: grid spacing in metres (enlarged if the grid would exceed ``max_cells`` a side).
        floor_z: floor height; estimated with :func:`estimate_floor_z` when None.
        margin: metres of grid added around the geometry (and around ``include_xy``).
        include_xy: (M, 2) points that must lie inside the grid (e.g. the camera path).
    """
    from scipy import ndimage

    v, f = _check_mesh(vertices_zup, faces)
    if not cell > 0:
        raise ValueError(f"heightfield cell must be positive, got {cell}")
    if floor_z is None:
        floor_z = estimate_floor_z(v, f)
    xy = v[:, :2]
    if include_xy is not None and len(include_xy):
        xy = np.concatenate([xy, np.asarray(include_xy, float).reshape(-1, 2)])
    lo = xy.min(axis=0) - margin
    hi = xy.max(axis=0) + margin
    cell = max(float(cell), float((hi - lo).max()) / (max_cells - 1))
    cols, rows = (np.ceil((hi - lo) / cell).astype(int) + 1).tolist()

    walk = walkable_faces(v, f, floor_z, step_height, max_slope_deg)
    heights = np.full((rows, cols), -np.inf)
    if walk.any():
        exact = _corner_heights(v[f[walk]], lo, cell, rows, cols)
        # Triangles smaller than a cell may contain no grid corner: their samples go to the
        # nearest corner, used only where no triangle covers the corner exactly.
        pts = _sample_triangles(v, f[walk], 0.5 * cell)
        c = np.clip(np.rint((pts[:, 0] - lo[0]) / cell).astype(int), 0, cols - 1)
        r = np.clip(np.rint((pts[:, 1] - lo[1]) / cell).astype(int), 0, rows - 1)
        np.maximum.at(heights, (r, c), pts[:, 2])
        heights = np.where(np.isfinite(exact), exact, heights)
    observed = np.isfinite(heights)
    if observed.any():
        # Nearest observed cell for every hole: a flat floor continues under the furniture.
        _, (ri, ci) = ndimage.distance_transform_edt(~observed, return_indices=True)
        heights = heights[ri, ci]
    else:
        heights[:] = floor_z
    return HeightField(heights.astype(np.float32), observed, float(lo[0]), float(lo[1]), cell)


# ---------------------------------------------------------------------------------------------
# Obstacles as convex pieces


def _components(f: np.ndarray, n_vertices: int) -> np.ndarray:
    """Connected-component label (F,) of each face (faces sharing a vertex are connected)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_faces = len(f)
    rows = np.repeat(np.arange(n_faces), 3)
    inc = coo_matrix((np.ones(rows.size), (rows, f.ravel())), shape=(n_faces, n_vertices)).tocsr()
    _, labels = connected_components(inc @ inc.T, directed=False)
    return labels


def _thicken(points: np.ndarray, min_thickness: float) -> np.ndarray | None:
    """Points of a piece, padded along its thinnest axis so its hull has volume.

    A piece of a single depth sheet (a wall patch) is flat; MuJoCo's qhull refuses flat meshes
    and a zero-volume hull has no inertia. Returns None for pieces too small to matter.
    """
    centre = points.mean(axis=0)
    _, s, vt = np.linalg.svd(points - centre, full_matrices=False)
    proj = (points - centre) @ vt.T
    spans = proj.max(axis=0) - proj.min(axis=0)
    if spans[0] < 1e-3:  # a point or a sliver: nothing to collide with
        return None
    pad = np.zeros(3)
    if spans[2] < min_thickness:
        pad = vt[2] * 0.5 * (min_thickness - spans[2])
    if spans[1] < min_thickness:
        pad = pad + vt[1] * 0.5 * (min_thickness - spans[1])
    if not pad.any():
        return points
    return np.concatenate([points + pad, points - pad])


def _hull_vertices(points: np.ndarray) -> np.ndarray | None:
    from scipy.spatial import ConvexHull, QhullError

    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return None


def _chunk_hulls(v: np.ndarray, f: np.ndarray, chunk: float) -> list[np.ndarray]:
    """Convex hulls of the triangle samples in each ``chunk``-sized cube: bounded error
    (a hull can only fill space within its cube), bounded time, always available."""
    pts = _sample_triangles(v, f, 0.5 * chunk)
    keys = np.floor(pts / chunk).astype(np.int64)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    splits = np.flatnonzero(np.diff(inv[order])) + 1
    return [pts[idx] for idx in np.split(order, splits) if len(idx) >= 4]


def _decompose(
    v: np.ndarray, f: np.ndarray, method: str, max_pieces: int, threshold: float
) -> list[np.ndarray]:
    """Convex pieces of one component with coacd or vhacdx (raises if the library fails)."""
    if method == "coacd":
        import coacd

        coacd.set_log_level("error")
        parts = coacd.run_coacd(
            coacd.Mesh(v, f.astype(np.int32)),
            threshold=threshold,
            max_convex_hull=max_pieces,
            preprocess_resolution=30,
            resolution=500,
            mcts_nodes=10,
            mcts_iterations=40,
            mcts_max_depth=2,
            seed=0,
        )
        return [np.asarray(p[0], dtype=np.float64) for p in parts]
    import vhacdx

    parts = vhacdx.compute_vhacd(v, f.astype(np.uint32), maxConvexHulls=max_pieces)
    return [np.asarray(p[0], dtype=np.float64) for p in parts]


def obstacle_pieces(
    vertices_zup: np.ndarray,
    faces: np.ndarray,
    floor_z: float,
    clearance: float = 0.05,
    max_height: float | None = 2.2,
    step_height: float = 0.15,
    method: str = "auto",
    time_budget_s: float = 20.0,
    chunk: float = 0.5,
    min_thickness: float = 0.03,
    max_pieces_per_component: int = 16,
    threshold: float = 0.05,
) -> list[np.ndarray]:
    """Everything above the floor as a list of convex pieces, each its points (n_i, 3).

    Obstacle triangles: not walkable (see :func:`walkable_faces`), reaching higher than
    ``floor_z + clearance``, and not entirely above ``floor_z + max_height`` (ceilings and high
    walls cost decomposition time and a ground robot never reaches them; None keeps all).
    Connected components smaller than ``chunk`` are taken as their hull. Larger ones are
    decomposed with coacd (``method="auto"`` or ``"coacd"``), vhacdx when coacd fails
    (``"vhacdx"`` forces it), and hulls of ``chunk``-sized cubes once ``time_budget_s`` is spent
    or both libraries fail (``"chunks"`` forces it). Every piece gets at least ``min_thickness``
    so a simulator accepts it. The result is deterministic for a given method.
    """
    v, f = _check_mesh(vertices_zup, faces)
    if method not in ("auto", "coacd", "vhacdx", "chunks"):
        raise ValueError(f"unknown decomposition method {method!r}")
    z = v[f][:, :, 2]
    keep = ~walkable_faces(v, f, floor_z, step_height) & (z.max(axis=1) > floor_z + clearance)
    if max_height is not None:
        keep &= z.min(axis=1) < floor_z + max_height
    f = f[keep]
    if len(f) == 0:
        return []
    labels = _components(f, len(v))
    start = time.monotonic()
    raw: list[np.ndarray] = []
    # Largest components first: they matter most and get the decomposition budget.
    for label in np.argsort(-np.bincount(labels)):
        cf = f[labels == label]
        used, remap = np.unique(cf, return_inverse=True)
        cv, cf = v[used], remap.reshape(-1, 3)
        if float((cv.max(axis=0) - cv.min(axis=0)).max()) <= chunk:
            raw.append(cv)
            continue
        pieces: list[np.ndarray] = []
        libs = {"auto": ["coacd", "vhacdx"], "coacd": ["coacd", "vhacdx"]}.get(method, [method])
        for lib in libs:
            if lib == "chunks" or time.monotonic() - start > time_budget_s:
                break
            try:
                pieces = _decompose(cv, cf, lib, max_pieces_per_component, threshold)
                break
            except Exception:  # noqa: BLE001  (a failing native library falls back, never stops)
                pieces = []
        raw.extend(pieces or _chunk_hulls(cv, cf, chunk))
    out = []
    for pts in raw:
        thick = _thicken(np.asarray(pts, float), min_thickness)
        hull = None if thick is None else _hull_vertices(thick)
        if hull is not None and len(hull) >= 4:
            out.append(hull)
    return out
