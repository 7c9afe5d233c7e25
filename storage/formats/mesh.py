"""Triangle-mesh writers: binary glTF (.glb), Wavefront .obj with vertex colours, binary .ply.

Numpy in, files out; every file is written atomically (temp file in the same folder, then
``os.replace``), so a failed export leaves no partial file and never clobbers a good one.

Coordinates are written as given. glTF is Y-up: callers convert Loci world points first (the
conversion lives with the camera conventions, models.geometry.cameras.world_to_gltf; storage does not
import models). Colours are (V, 3) uint8 RGB per vertex, optional.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write_bytes
from storage.errors import StorageError

__all__ = ["MeshError", "write_glb", "write_mesh_ply", "write_obj"]


class MeshError(StorageError):
    """A mesh cannot be written: empty, NaN coordinates, bad face indices or colours."""


def _validate(
    vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check and normalise: vertices (V, 3) float32, faces (F, 3) int32, colors (V, 3) uint8."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise MeshError(f"the mesh has no vertices (expected shape (V, 3), got {v.shape})")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise MeshError(
            "the mesh has no faces, so there is nothing to export (the fused depth produced no "
            "surface: try a larger voxel size or a world with more frames)"
        )
    if not np.all(np.isfinite(v)):
        raise MeshError("the mesh has NaN or infinite vertex coordinates")
    if not np.issubdtype(f.dtype, np.integer) or f.min() < 0 or f.max() >= len(v):
        raise MeshError(f"face indices must be integers in [0, {len(v) - 1}]")
    c = None
    if colors is not None:
        c = np.asarray(colors)
        if c.shape != (len(v), 3):
            raise MeshError(f"colours must be (V, 3) = ({len(v)}, 3), got {c.shape}")
        if c.dtype != np.uint8:
            raise MeshError(f"colours must be uint8 RGB, got {c.dtype}")
    return v.astype(np.float32), f.astype(np.int32), c


def write_glb(
    path: str | os.PathLike[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    name: str = "loci_mesh",
) -> Path:
    """Binary glTF 2.0 with one mesh: POSITION, COLOR_0 (RGBA uint8, normalized), indices.

    vertices (V, 3) in glTF's Y-up frame, faces (F, 3) counter-clockwise = front, colors (V, 3)
    uint8 or None. The node is named ``name``. Returns the written path.
    """
    import trimesh

    v, f, c = _validate(vertices, faces, colors)
    rgba = None if c is None else np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1)
    # process=False keeps vertices/faces exactly as given (no merging or reordering).
    mesh = trimesh.Trimesh(vertices=v, faces=f, vertex_colors=rgba, process=False)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name=name, geom_name=name)
    data = scene.export(file_type="glb")
    return atomic_write_bytes(path, data)


def write_obj(
    path: str | os.PathLike[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
) -> Path:
    """Wavefront .obj: ``v x y z [r g b]`` (colours as 0..1 floats, the common extension read
    by MeshLab, Blender and trimesh) and 1-based ``f a b c``. No .mtl is written."""
    v, f, c = _validate(vertices, faces, colors)
    buf = io.BytesIO()
    buf.write(b"# Loci mesh\n")
    if c is None:
        np.savetxt(buf, v, fmt="v %.6f %.6f %.6f")
    else:
        np.savetxt(buf, np.hstack([v, c / 255.0]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
    np.savetxt(buf, f.astype(np.int64) + 1, fmt="f %d %d %d")
    return atomic_write_bytes(path, buf.getvalue())


def write_mesh_ply(
    path: str | os.PathLike[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
) -> Path:
    """Binary little-endian .ply: vertex x y z (float) [red green blue (uchar)], face
    ``list uchar int vertex_indices``."""
    v, f, c = _validate(vertices, faces, colors)
    vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if c is not None:
        vfields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vrec = np.empty(len(v), dtype=vfields)
    vrec["x"], vrec["y"], vrec["z"] = v[:, 0], v[:, 1], v[:, 2]
    if c is not None:
        vrec["red"], vrec["green"], vrec["blue"] = c[:, 0], c[:, 1], c[:, 2]
    frec = np.empty(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    frec["n"] = 3
    frec["idx"] = f
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        "comment Loci mesh",
        f"element vertex {len(v)}",
    ]
    lines += [f"property float {n}" for n in ("x", "y", "z")]
    if c is not None:
        lines += [f"property uchar {n}" for n in ("red", "green", "blue")]
    lines += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    header = ("\n".join(lines) + "\n").encode("ascii")
    return atomic_write_bytes(path, header + vrec.tobytes() + frec.tobytes())
