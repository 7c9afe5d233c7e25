"""Meshes from a sparse TSDF (models/tsdf.py): marching cubes on padded dense tiles, vertex
colours, welding, and decimation by vertex clustering.

Why tiles: one dense grid over the whole bounding box of a long camera path can need billions of
voxels, while per-block marching cubes means thousands of tiny calls (Python overhead) and
duplicated seam vertices. A tile of up to ``tile_blocks``^3 blocks, cropped to the bounding box of
its blocks and padded with the first voxel layer of its +x/+y/+z neighbours, keeps memory bounded
(128^3 voxels for 16^3 blocks of 8^3) and the number of calls small; cubes at a seam read their
real corner values from the padding, and each cube belongs to exactly one tile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from skimage import measure

if TYPE_CHECKING:
    from models.lift.tsdf import TSDFVolume

# tsdf value of a voxel never observed (real values are in [-1, 1]).
UNOBSERVED = 2.0

__all__ = [
    "UNOBSERVED",
    "decimate",
    "extract_mesh",
    "extract_mesh_reference",
    "fill_unobserved",
    "volume_to_dense",
]

Mesh = tuple[np.ndarray, np.ndarray, np.ndarray]


def volume_to_dense(
    volume: TSDFVolume, origin_index: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """Dense tsdf (X, Y, Z) float32 of the voxels with global lattice index in
    [origin, origin + shape); ``UNOBSERVED`` (2.0) where never observed or not allocated."""
    b = volume.block_size
    origin_index = np.asarray(origin_index, np.int64)
    keys, tsdf, _, _ = volume.active()
    lo_blk = np.floor_divide(origin_index, b)
    hi_blk = np.floor_divide(origin_index + np.asarray(shape) - 1, b)
    nblk = hi_blk - lo_blk + 1
    sel = np.flatnonzero(np.all((keys >= lo_blk) & (keys <= hi_blk), axis=1))
    rel = keys[sel] - lo_blk
    grid = np.full(tuple(nblk * b), UNOBSERVED, np.float32)
    # Scatter whole blocks through a (nx, ny, nz, b, b, b) *view* of the voxel-ordered grid:
    # no transpose copy of the whole grid afterwards.
    view = grid.reshape(nblk[0], b, nblk[1], b, nblk[2], b).transpose(0, 2, 4, 1, 3, 5)
    view[rel[:, 0], rel[:, 1], rel[:, 2]] = tsdf[sel]
    off = origin_index - lo_blk * b
    return grid[off[0] : off[0] + shape[0], off[1] : off[1] + shape[1], off[2] : off[2] + shape[2]]


def fill_unobserved(tsdf: np.ndarray, iterations: int) -> np.ndarray:
    """Close cracks: ``iterations`` passes in which every unobserved voxel (``UNOBSERVED``) with
    observed 6-neighbours takes their mean. tsdf (X, Y, Z) float32 -> a new array.

    Why: a cube is meshed only when its 8 corners were observed, so a surface stops up to a voxel
    short of an occlusion edge (the far wall behind a lamp post, the post's own silhouette) and
    the render shows a crack of background colour or black there. One pass extends observed
    values by one voxel: the far surface reaches under the occluder and the near one closes its
    rim, while space no camera came near stays empty (no phantom walls beyond a voxel).
    """
    t = np.asarray(tsdf, np.float32).copy()
    for _ in range(iterations):
        ok = t <= 1.0
        vals = np.where(ok, t, 0.0).astype(np.float32)
        total = np.zeros_like(t)
        count = np.zeros_like(t)
        for axis in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            total[tuple(hi)] += vals[tuple(lo)]  # neighbour at -1 along the axis
            count[tuple(hi)] += ok[tuple(lo)]
            total[tuple(lo)] += vals[tuple(hi)]  # neighbour at +1
            count[tuple(lo)] += ok[tuple(hi)]
        grow = ~ok & (count > 0)
        t[grow] = total[grow] / count[grow]
    return t


def _march(tsdf: np.ndarray, owned: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching cubes on one dense grid. ``owned`` (3,) = number of cube origins per axis that
    this grid is responsible for. Returns vertices (grid index units, float64) and faces."""
    if min(tsdf.shape) < 2:
        return None
    ok = tsdf <= 1.0  # observed at least once (UNOBSERVED = 2)
    # A cube is meshed only if its 8 corners were all observed; skimage's mask for the cube with
    # origin (i, j, k) sits at [i+1, j+1, k+1] (checked in tests against the dense reference).
    cube = ok[:-1, :-1, :-1] & ok[1:, :-1, :-1] & ok[:-1, 1:, :-1] & ok[:-1, :-1, 1:]
    cube &= ok[1:, 1:, :-1] & ok[1:, :-1, 1:] & ok[:-1, 1:, 1:] & ok[1:, 1:, 1:]
    cube[owned[0] :, :, :] = False
    cube[:, owned[1] :, :] = False
    cube[:, :, owned[2] :] = False
    if not cube.any():
        return None
    mask = np.zeros(tsdf.shape, bool)
    mask[1:, 1:, 1:] = cube
    try:
        # skimage's default winding ("descent") makes counter-clockwise faces look towards the
        # larger values, i.e. the observed free space (tsdf > 0): faces face the cameras.
        verts, faces, _, _ = measure.marching_cubes(
            tsdf, 0.0, mask=mask, gradient_direction="descent", allow_degenerate=False
        )
    except (RuntimeError, ValueError):  # no zero crossing in this grid
        return None
    return verts.astype(np.float64), faces


def _voxel_colors(volume: TSDFVolume, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float colours and (N,) weights (0 = never observed or not allocated) of voxels at
    global lattice indices (N, 3) int64."""
    b = volume.block_size
    blk = np.floor_divide(index, b)
    local = index - blk * b
    bi = volume.lookup(blk)
    at = (np.maximum(bi, 0), local[:, 0], local[:, 1], local[:, 2])
    return volume.color[at], np.where(bi >= 0, volume.weight[at], 0.0)


def _vertex_colors(volume: TSDFVolume, verts: np.ndarray) -> np.ndarray:
    """(V, 3) uint8 colours of marching-cubes vertices (V, 3) in global index units.

    Each vertex lies on a cube edge between two observed voxels (integer on two axes, fraction
    t on the third): its colour is the linear blend of those two voxels, read sparsely."""
    a = np.floor(verts).astype(np.int64)
    frac = verts - a
    axis = np.argmax(frac, axis=1)
    t = frac[np.arange(len(verts)), axis][:, None]
    b_idx = a.copy()
    b_idx[np.arange(len(verts)), axis] += (t[:, 0] > 0).astype(np.int64)
    ca, wa = _voxel_colors(volume, a)
    cb, wb = _voxel_colors(volume, b_idx)
    # A voxel filled by ``fill_unobserved`` has no colour: the observed end gives it alone.
    wa, wb = (1 - t) * (wa[:, None] > 0), t * (wb[:, None] > 0)
    total = wa + wb
    cols = (wa * ca + wb * cb) / np.maximum(total, 1e-12)
    lost = np.flatnonzero(total[:, 0] <= 0)
    if lost.size:  # both ends filled: the mean observed colour of their 6-neighbours
        acc, n = np.zeros((lost.size, 3)), np.zeros((lost.size, 1))
        for end in (a[lost], b_idx[lost]):
            for step in np.concatenate([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)]):
                c, w = _voxel_colors(volume, end + step)
                acc += c * (w[:, None] > 0)
                n += w[:, None] > 0
        cols[lost] = np.where(n > 0, acc / np.maximum(n, 1), 128.0)
    return np.clip(np.rint(cols), 0, 255).astype(np.uint8)


def _finish(volume: TSDFVolume, parts: list[tuple[np.ndarray, np.ndarray]], seam: int) -> Mesh:
    """Concatenate per-tile meshes (vertices in global index units), weld the vertices on tile
    seams (every ``seam`` voxels), colour, and scale to metres. ValueError if no surface."""
    if not parts:
        raise ValueError("the fused volume has no surface (no zero crossing was observed)")
    verts = np.concatenate([p[0] for p in parts])
    offsets = np.cumsum([0] + [len(p[0]) for p in parts])[:-1]
    faces = np.concatenate([p[1] + o for p, o in zip(parts, offsets, strict=True)]).astype(np.int64)
    if len(parts) > 1:
        # Neighbouring tiles interpolate a seam edge from the same two values, so positions agree
        # up to float rounding: a 1/1024-voxel lattice welds them without merging distinct ones.
        on_seam = np.flatnonzero(np.any(np.mod(verts, seam) == 0, axis=1))
        q = np.round(verts[on_seam] * 1024).astype(np.int64)
        _, first, inv = np.unique(q, axis=0, return_index=True, return_inverse=True)
        remap = np.arange(len(verts))
        remap[on_seam] = on_seam[first][inv.reshape(-1)]
        faces = remap[faces]
        good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
        faces = faces[good & (faces[:, 0] != faces[:, 2])]
        used = np.zeros(len(verts), bool)
        used[faces.ravel()] = True
        compact = np.cumsum(used) - 1
        verts, faces = verts[used], compact[faces]
    colors = _vertex_colors(volume, verts)
    return (verts * volume.voxel_size).astype(np.float32), faces.astype(np.int32), colors


def extract_mesh(volume: TSDFVolume, tile_blocks: int = 16, fill: int = 0) -> Mesh:
    """Triangle mesh of the zero level set of a sparse TSDF.

    ``fill``: passes of ``fill_unobserved`` before meshing (each tile is loaded ``fill`` voxels
    wider on every side, so tiles agree with one dense grid exactly). Returns vertices (V, 3)
    float32 world metres, faces (F, 3) int32 (wound counter-clockwise seen from the observed
    side), colors (V, 3) uint8. Raises ValueError when the volume holds no surface.
    """
    b = volume.block_size
    keys = volume.active()[0].astype(np.int64)
    if len(keys) == 0:
        raise ValueError("the fused volume is empty")
    tiles = np.floor_divide(keys, tile_blocks)
    _, inverse = np.unique(tiles, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    parts = []
    for group in np.split(order, bounds):
        mine = keys[group]
        lo = mine.min(0) * b
        owned = (mine.max(0) + 1) * b - lo  # cube origins this tile owns, per axis
        shape = tuple(int(s) for s in owned + 1)  # + the neighbours' first voxel layer
        res = _march(_dense_filled(volume, lo, shape, fill), owned)
        if res is not None:
            parts.append((res[0] + lo, res[1]))
    return _finish(volume, parts, tile_blocks * b)


def _dense_filled(
    volume: TSDFVolume, lo: np.ndarray, shape: tuple[int, ...], fill: int
) -> np.ndarray:
    """``volume_to_dense`` of [lo, lo + shape) after ``fill`` passes of ``fill_unobserved``,
    computed on a grid ``fill`` voxels wider on every side (exact at the crop's border)."""
    if fill <= 0:
        return volume_to_dense(volume, lo, shape)  # type: ignore[arg-type]
    wide = tuple(int(s) + 2 * fill for s in shape)
    grid = fill_unobserved(volume_to_dense(volume, np.asarray(lo) - fill, wide), fill)  # type: ignore[arg-type]
    return grid[fill:-fill, fill:-fill, fill:-fill]


def extract_mesh_reference(volume: TSDFVolume, fill: int = 0) -> Mesh:
    """Slow obvious twin of ``extract_mesh``: one dense grid over the whole bounding box, one
    marching-cubes call, no tiles and no welding. Same outputs; for tests on small volumes."""
    b = volume.block_size
    keys = volume.active()[0].astype(np.int64)
    if len(keys) == 0:
        raise ValueError("the fused volume is empty")
    lo = keys.min(0) * b
    shape = tuple(int(s) for s in (keys.max(0) + 1) * b - lo)
    res = _march(_dense_filled(volume, lo, shape, fill), np.asarray(shape))
    return _finish(volume, [] if res is None else [(res[0] + lo, res[1])], 1)


def decimate(
    vertices: np.ndarray, faces: np.ndarray, target_faces: int, colors: np.ndarray | None = None
) -> Mesh:
    """Reduce a mesh to at most ``target_faces`` faces by vertex clustering.

    Vertices are snapped to a cubic grid, each occupied cell becomes one vertex at the mean
    position (and mean colour) of its members, and faces that collapse are dropped. The cell size
    starts from the mean face area, grows by 25 % until the face budget is met, and is then
    bisected between the last two sizes (the result lands just under the budget). Vertex
    clustering is robust on the non-manifold bits TSDF meshes have; quadric edge collapse keeps
    sharp features better but needs a compiled extension this project does not depend on.
    vertices (V, 3), faces (F, 3), colors (V, 3) uint8 or None -> same layout, colors None ->
    uint8 grey.
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    colors = np.full((len(vertices), 3), 200, np.uint8) if colors is None else np.asarray(colors)
    if target_faces < 1:
        raise ValueError("target_faces must be at least 1")
    if len(faces) <= target_faces:
        return vertices.astype(np.float32), faces.astype(np.int32), colors.astype(np.uint8)
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    # A cell of edge c holds ~c^2 / area_per_face faces: pick c for the ratio, then refine.
    cell = float(np.sqrt(max(area.sum(), 1e-12) / target_faces)) * 0.75
    lo = vertices.min(0)

    def cluster(cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = np.floor((vertices - lo) / cell).astype(np.int64)
        # One int64 key per cell (21 bits per axis) makes np.unique 1-D: several times faster
        # than unique rows on 1M+ vertices, and the same cells.
        if q.max() < (1 << 21):
            key = (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]
            _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        else:  # a scene over 2M cells wide: unique rows (slower, same result)
            _, inverse, counts = np.unique(q, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        new_faces = inverse[faces]
        good = (new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2])
        good &= new_faces[:, 0] != new_faces[:, 2]
        new_faces = new_faces[good]
        # Faces of a collapsed strip coincide: keep one per vertex triple (in any order).
        tri = np.sort(new_faces, 1)
        n = len(counts)
        if n < (1 << 21):
            _, first = np.unique((tri[:, 0] * n + tri[:, 1]) * n + tri[:, 2], return_index=True)
        else:
            _, first = np.unique(tri, axis=0, return_index=True)
        return new_faces[np.sort(first)], inverse, counts

    # Grow the cell by 25 % until the budget is met, then bisect between the last two sizes
    # (4 steps): the result lands within a few per cent under the budget, not up to 40 %.
    small, result = None, cluster(cell)
    for _ in range(60):
        if len(result[0]) <= target_faces:
            break
        small, cell = cell, cell * 1.25
        result = cluster(cell)
    if small is not None:
        big = cell
        for _ in range(4):
            mid = float(np.sqrt(small * big))
            trial = cluster(mid)
            if len(trial[0]) <= target_faces:
                big, result = mid, trial
            else:
                small = mid
    new_faces, inverse, counts = result
    n = len(counts)
    # Per-cell means (bincount: an order of magnitude faster than np.add.at on 1M vertices).
    new_v = np.stack([np.bincount(inverse, vertices[:, k], n) for k in range(3)], 1)
    new_c = np.stack(
        [np.bincount(inverse, colors[:, k].astype(np.float64), n) for k in range(3)], 1
    )
    new_v /= counts[:, None]
    new_c /= counts[:, None]
    # Drop cells no face uses any more, renumbering the rest.
    used = np.zeros(n, bool)
    used[new_faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return (
        new_v[used].astype(np.float32),
        remap[new_faces].astype(np.int32),
        np.clip(np.rint(new_c[used]), 0, 255).astype(np.uint8),
    )
