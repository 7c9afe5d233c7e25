"""The far backdrop and sky as a mesh: a depth-displaced shell built from the frames' far pixels.

A TSDF fuses surfaces, not the sky: voxels at 150 m would cost more than the whole street and
their surface would be noise. The splats keep such pixels as a far shell
(``models.lift.splat_fusion.backdrop_keep``); this is the mesh's counterpart, a separate mesh
part so a physics export never collides with the sky.

Each frame's backdrop pixels (depth at or beyond ``far``) are sampled on a grid every ``stride``
pixels; the grid nodes are lifted to 3-D at their own depth (clipped to [far, max_range]) and
neighbouring nodes become two triangles per grid cell, coloured with the pixel colours (a node
whose own pixel is not backdrop takes the mean backdrop colour around it: a leaf's colour put
150 m away would show beside the tree from every other camera). The
backdrop mask is widened by ``grow`` nodes, with those nodes pushed out to the nearest backdrop
depth, so the shell reaches under the surface mesh's silhouettes (no black crack where the TSDF
stops half a voxel short of an edge). Frames are added in order (the photo first): a later
frame adds only the cells whose corners were not all seen as backdrop by an earlier frame
(tested by projecting the shell points into the earlier cameras), and is pushed back by a tiny
factor so that where two frames overlap the earlier one is usually in front (shells of turned
cameras are tilted to each other, so along the one-cell seam either may show).
:func:`backdrop_consensus` then gives every vertex the mean colour of the frames that see it
as backdrop. Both have slow twins for the tests.

Conventions (models.geometry.cameras): OpenCV cameras, ``c2w`` 4x4, ``K`` 3x3, z-depth metres.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from models.geometry.cameras import invert_pose, project_points, transform_points

__all__ = [
    "backdrop_consensus",
    "backdrop_consensus_reference",
    "backdrop_mesh",
    "backdrop_mesh_reference",
]

Frame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Mesh = tuple[np.ndarray, np.ndarray, np.ndarray]

# Each later frame's shell sits this much farther per frame index: earlier frames win overlaps.
_PUSH = 1e-3


def _max_filter(a: np.ndarray, r: int) -> np.ndarray:
    """Max over a (2r+1)^2 window (edges replicated); a (H, W)."""
    out = a.copy()
    pad = np.pad(a, r, mode="edge")
    h, w = a.shape
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            np.maximum(out, pad[dy : dy + h, dx : dx + w], out=out)
    return out


def _grid(size: int, stride: int) -> np.ndarray:
    """Node pixels 0, stride, ... with the last pixel always included (edges reached)."""
    g = np.arange(0, size, stride)
    return g if g[-1] == size - 1 else np.append(g, size - 1)


def _positions(nodes: np.ndarray) -> np.ndarray:
    """Image coordinates of grid nodes: the border nodes sit on the image's outer edge (-0.5,
    size - 0.5), so the shell covers the border pixels' centres, not just touches them."""
    pos = nodes.astype(np.float64)
    pos[0] -= 0.5
    pos[-1] += 0.5
    return pos


def _nodes(rgb: np.ndarray, depth: np.ndarray, far: float, stride: int, grow: int) -> tuple:
    """Grid nodes of one frame: us (nx,), vs (ny,) node pixels, z (ny, nx) shell depth (0 = not
    backdrop), colour (ny, nx, 3) float."""
    us, vs = _grid(depth.shape[1], stride), _grid(depth.shape[0], stride)
    d = np.asarray(depth, np.float64)
    d = np.where(np.isfinite(d), d, 0.0)
    back = d >= far
    # A node is backdrop when any pixel within stride // 2 is (thin sky gaps between leaves
    # count); widened by ``grow`` nodes, each taking the largest backdrop depth around it.
    r = stride // 2
    node_z = _max_filter(np.where(back, d, 0.0), r)[np.ix_(vs, us)]
    if grow > 0:
        node_z = _max_filter(node_z, grow)
    # Colour: the node's pixel where that is backdrop, else the mean backdrop colour around it
    # (a leaf's colour 150 m away would show beside the tree from every other camera).
    reach = r + grow * stride
    size = (2 * reach + 1, 2 * reach + 1)
    box = dict(ddepth=-1, ksize=size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    w = cv2.boxFilter(back.astype(np.float32), **box)
    mean = cv2.boxFilter(np.asarray(rgb, np.float32) * back[..., None], **box)
    mean /= np.maximum(w, 1e-6)[..., None]
    col = np.where(back[..., None], np.asarray(rgb, np.float32), mean)[np.ix_(vs, us)]
    return us, vs, node_z, col


def _covered(xyz_world: np.ndarray, seen: list[tuple]) -> np.ndarray:
    """(N,) bool: the points fall on a backdrop node region of an earlier frame."""
    hit = np.zeros(len(xyz_world), bool)
    for K, c2w, width, height, stride, mask in seen:
        uv, z = project_points(transform_points(invert_pose(c2w), xyz_world), K)
        u, v = uv[:, 0], uv[:, 1]
        ok = z > 1e-6
        ok &= (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
        # Nearest node of that frame's grid (its last node sits at the last pixel).
        iu = np.clip(np.rint(np.where(ok, u, 0) / stride).astype(np.int64), 0, mask.shape[1] - 1)
        iv = np.clip(np.rint(np.where(ok, v, 0) / stride).astype(np.int64), 0, mask.shape[0] - 1)
        hit |= ok & mask[iv, iu]
    return hit


def backdrop_mesh(
    frames: Sequence[Frame],
    far: float,
    stride: int = 2,
    grow: int = 2,
    max_range: float | None = None,
) -> Mesh | None:
    """The far shell of posed frames ``(rgb (H, W, 3) uint8, depth (H, W) m, K, c2w)``.

    ``far``: depth (metres) from which a pixel is backdrop (the lift's threshold, 10x the photo's
    median depth); ``max_range`` clips sky depths (default 4 x far: a metric model's sky can be
    at infinity). Returns vertices (V, 3) float32 world metres, faces (F, 3) int32 (facing the
    cameras), colours (V, 3) uint8; None when no frame has backdrop pixels.
    """
    if not (np.isfinite(far) and far > 0):
        raise ValueError(f"far must be a positive depth in metres, got {far}")
    if stride < 1 or grow < 0:
        raise ValueError("stride must be >= 1 and grow >= 0")
    top = 4.0 * far if max_range is None else float(max_range)
    verts, faces, cols, seen = [], [], [], []
    count = 0
    for j, (rgb, depth, K, c2w) in enumerate(frames):
        K = np.asarray(K, np.float64)
        c2w = np.asarray(c2w, np.float64)
        us, vs, z, node_rgb = _nodes(rgb, depth, far, stride, grow)
        mask = z > 0
        if not mask.any():
            continue
        z = np.clip(z, far, top) * (1.0 + _PUSH * j)
        uu, vv = np.meshgrid(_positions(us), _positions(vs))
        xyz_cam = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], -1)
        xyz = transform_points(c2w, xyz_cam.reshape(-1, 3))
        ny, nx = mask.shape
        new = mask.reshape(-1) & ~_covered(xyz, seen) if seen else mask.reshape(-1)
        new = new.reshape(ny, nx)
        # Cells (ny-1, nx-1): all four corners backdrop and at least one not seen before.
        cell = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
        cell &= new[:-1, :-1] | new[1:, :-1] | new[:-1, 1:] | new[1:, 1:]
        cy, cx = np.nonzero(cell)
        seen.append((K, c2w, depth.shape[1], depth.shape[0], stride, mask))
        if len(cy) == 0:
            continue
        a = cy * nx + cx  # top-left node of each cell
        b, c, d = a + 1, a + nx, a + nx + 1
        # OpenCV image axes (x right, y down): (a, c, b) is counter-clockwise seen from the
        # camera, i.e. the front face looks back at it.
        tri = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
        used = np.unique(tri)
        remap = np.full(ny * nx, -1, np.int64)
        remap[used] = np.arange(len(used)) + count
        verts.append(xyz[used])
        cols.append(node_rgb.reshape(-1, 3)[used])
        faces.append(remap[tri])
        count += len(used)
    if not faces:
        return None
    return (
        np.concatenate(verts).astype(np.float32),
        np.concatenate(faces).astype(np.int32),
        np.clip(np.rint(np.concatenate(cols)), 0, 255).astype(np.uint8),
    )


def backdrop_consensus(
    vertices: np.ndarray, colors: np.ndarray, frames: Sequence[Frame], far: float
) -> np.ndarray:
    """(V, 3) uint8: each shell vertex's mean colour over the frames that see backdrop where it
    projects (nearest pixel, depth >= ``far``); its own colour where none does.

    The frames paint the sky independently (a later frame's sky is brighter or has other
    clouds); one shell can only meet them halfway, and the mean is the colour with the least
    squared error over them (as the splats' consensus colours, models.lift.splat_fusion).
    """
    xyz = np.asarray(vertices, np.float64)
    total = np.zeros((len(xyz), 3))
    count = np.zeros(len(xyz))
    for rgb, depth, K, c2w in frames:
        uv, z = project_points(transform_points(invert_pose(c2w), xyz), K)
        u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
        height, width = depth.shape
        ok = (z > 1e-6) & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
        idx = np.flatnonzero(ok)
        pu, pv = u[idx].astype(np.int64), v[idx].astype(np.int64)
        d = np.asarray(depth)[pv, pu]
        sees = np.isfinite(d) & (d >= far)
        idx, pu, pv = idx[sees], pu[sees], pv[sees]
        total[idx] += np.asarray(rgb, np.float64)[pv, pu]
        count[idx] += 1
    out = np.asarray(colors, np.float64).copy()
    seen = count > 0
    out[seen] = total[seen] / count[seen, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def backdrop_consensus_reference(
    vertices: np.ndarray, colors: np.ndarray, frames: Sequence[Frame], far: float
) -> np.ndarray:
    """Slow twin of :func:`backdrop_consensus`: one vertex and one frame at a time."""
    out = np.asarray(colors, np.float64).copy()
    for n, p in enumerate(np.asarray(vertices, np.float64)):
        seen = []
        for rgb, depth, K, c2w in frames:
            x, y, z, _ = np.linalg.inv(np.asarray(c2w, np.float64)) @ np.append(p, 1.0)
            if z <= 1e-6:
                continue
            u, v = round(x / z * K[0][0] + K[0][2]), round(y / z * K[1][1] + K[1][2])
            if 0 <= u < depth.shape[1] and 0 <= v < depth.shape[0] and depth[v, u] >= far:
                seen.append(np.asarray(rgb, np.float64)[v, u])
        if seen:
            out[n] = np.mean(seen, axis=0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def backdrop_mesh_reference(frames: Sequence[Frame], far: float, stride: int = 2) -> Mesh | None:
    """Slow obvious twin of :func:`backdrop_mesh` with ``grow=0`` for a single frame or frames
    that do not overlap: one loop step per grid node and per grid cell. For small images."""
    top = 4.0 * far
    verts: list[np.ndarray] = []
    faces: list[list[int]] = []
    cols: list[np.ndarray] = []
    r = stride // 2
    for j, (rgb, depth, K, c2w) in enumerate(frames):
        height, width = depth.shape
        us, vs = _grid(width, stride), _grid(height, stride)
        pu, pv = _positions(us), _positions(vs)
        # Node (iy, ix) is backdrop if a pixel within r of it is; its depth is their maximum.
        node_z = np.zeros((len(vs), len(us)))
        node_rgb = np.zeros((len(vs), len(us), 3))
        for iy, v in enumerate(vs):
            for ix, u in enumerate(us):
                rows = slice(max(v - r, 0), min(v + r, height - 1) + 1)
                cols_ = slice(max(u - r, 0), min(u + r, width - 1) + 1)
                win = np.asarray(depth, np.float64)[rows, cols_]
                far_px = np.isfinite(win) & (win >= far)
                node_z[iy, ix] = win[far_px].max() if far_px.any() else 0.0
                # Own colour when the node's pixel is backdrop, else the backdrop pixels' mean.
                own = float(depth[v, u])
                if np.isfinite(own) and own >= far:
                    node_rgb[iy, ix] = rgb[v, u]
                elif far_px.any():
                    node_rgb[iy, ix] = np.asarray(rgb, np.float64)[rows, cols_][far_px].mean(0)
        index: dict[tuple[int, int], int] = {}
        for iy in range(len(vs) - 1):
            for ix in range(len(us) - 1):
                corners = [(iy, ix), (iy, ix + 1), (iy + 1, ix), (iy + 1, ix + 1)]
                if not all(node_z[q] > 0 for q in corners):
                    continue
                for q in corners:
                    if q not in index:
                        z = min(max(node_z[q], far), top) * (1.0 + _PUSH * j)
                        x = (pu[q[1]] - K[0][2]) / K[0][0] * z
                        y = (pv[q[0]] - K[1][2]) / K[1][1] * z
                        p = np.asarray(c2w, np.float64) @ np.array([x, y, z, 1.0])
                        index[q] = len(verts)
                        verts.append(p[:3])
                        cols.append(node_rgb[q])
                a, b, c, d = (index[q] for q in corners)
                faces += [[a, c, b], [b, c, d]]
    if not faces:
        return None
    return (
        np.asarray(verts, np.float32),
        np.asarray(faces, np.int32),
        np.clip(np.rint(np.asarray(cols)), 0, 255).astype(np.uint8),
    )
