"""Triangle-mesh writers: binary glTF (.glb), Wavefront .obj with vertex colours, binary .ply.

Numpy in, files out; every file is written atomically (temp file in the same folder, then
``os.replace``), so a failed export leaves no partial file and never clobbers a good one.

Coordinates are written as given. glTF is Y-up: callers convert Loci world points first (the
conversion lives with the camera conventions, models.geometry.cameras.world_to_gltf; storage does not
import models). Colours are (V, 3) uint8 RGB per vertex, optional, sRGB-encoded like the photos.
glTF's ``COLOR_0`` is *linear* (spec 3.9.2), so the GLB writer converts (:func:`srgb_to_linear`);
written as sRGB bytes, the mesh looks washed out in three.js and every other viewer.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write_bytes
from storage.errors import StorageError

__all__ = ["MeshError", "srgb_to_linear", "write_glb", "write_mesh_ply", "write_obj"]


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


def srgb_to_linear(rgb_u8: np.ndarray) -> np.ndarray:
    """sRGB-encoded uint8 colours -> linear float32 in [0, 1] (the IEC 61966-2-1 curve)."""
    c = np.asarray(rgb_u8, dtype=np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


Part = tuple[str, np.ndarray, np.ndarray, np.ndarray | None]


def write_glb(
    path: str | os.PathLike[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    name: str = "loci_mesh",
    extra: Sequence[Part] = (),
) -> Path:
    """Binary glTF 2.0, one node and mesh per part: POSITION (float), COLOR_0 (linear RGBA as
    normalized uint16), uint32 indices, and one double-sided unlit material (the colours are
    photographs: their light is already in them; viewers without ``KHR_materials_unlit`` fall
    back to a rough, non-metallic surface).

    vertices (V, 3) in glTF's Y-up frame, faces (F, 3) counter-clockwise = front, colors (V, 3)
    sRGB uint8 or None; the node is named ``name``. ``extra``: more parts ``(name, vertices,
    faces, colors)`` written as their own nodes (e.g. a sky backdrop kept apart from the
    surface). Returns the written path.
    """
    parts = [(name, *_validate(vertices, faces, colors))]
    parts += [(n, *_validate(v, f, c)) for n, v, f, c in extra]
    blobs, views, accessors, meshes, offset = [], [], [], [], 0

    def add(blob: bytes, target: int) -> int:
        nonlocal offset
        blobs.append(blob)
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob),
                      "target": target})  # fmt: skip
        offset += len(blob)  # every blob is a multiple of 4 bytes long
        return len(views) - 1

    for part_name, v, f, c in parts:
        accessors.append({"bufferView": add(f.astype("<u4").tobytes(), 34963),
                          "componentType": 5125, "count": int(f.size), "type": "SCALAR",
                          "min": [int(f.min())], "max": [int(f.max())]})  # fmt: skip
        attributes = {"POSITION": len(accessors)}
        accessors.append({"bufferView": add(v.astype("<f4").tobytes(), 34962),
                          "componentType": 5126, "count": len(v), "type": "VEC3",
                          "min": v.min(0).tolist(), "max": v.max(0).tolist()})  # fmt: skip
        if c is not None:
            linear = np.concatenate([srgb_to_linear(c), np.ones((len(c), 1), np.float32)], 1)
            attributes["COLOR_0"] = len(accessors)
            accessors.append({"bufferView": add(np.round(linear * 65535.0).astype("<u2").tobytes(),
                                                34962),
                              "componentType": 5123, "normalized": True, "count": len(v),
                              "type": "VEC4"})  # fmt: skip
        meshes.append({"name": part_name, "primitives": [
            {"attributes": attributes, "indices": attributes["POSITION"] - 1, "mode": 4,
             "material": 0}]})  # fmt: skip
    doc = {
        "asset": {"version": "2.0", "generator": "Loci"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": list(range(len(parts)))}],
        "nodes": [{"name": p[0], "mesh": i} for i, p in enumerate(parts)],
        "meshes": meshes,
        "materials": [{"name": f"{name}_vertex_colours", "doubleSided": True,
                       "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1],
                                                "metallicFactor": 0.0, "roughnessFactor": 1.0},
                       "extensions": {"KHR_materials_unlit": {}}}],
        "buffers": [{"byteLength": offset}],
        "bufferViews": views,
        "accessors": accessors,
    }  # fmt: skip
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary = b"".join(blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    data = (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(binary), b"BIN\x00") + binary)  # fmt: skip
    return atomic_write_bytes(path, data)


def write_obj(
    path: str | os.PathLike[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    name: str = "loci_mesh",
    extra: Sequence[Part] = (),
) -> Path:
    """Wavefront .obj: ``v x y z [r g b]`` (colours as 0..1 floats, the common extension read
    by MeshLab, Blender and trimesh) and 1-based ``f a b c``, one ``o`` object per part (the
    mesh named ``name``, then ``extra`` parts ``(name, vertices, faces, colors)``). No .mtl."""
    parts = [(name, *_validate(vertices, faces, colors))]
    parts += [(n, *_validate(v, f, c)) for n, v, f, c in extra]
    buf = io.BytesIO()
    buf.write(b"# Loci mesh\n")
    base = 1  # OBJ indices are 1-based and global over the file
    for part_name, v, f, c in parts:
        buf.write(f"o {part_name}\n".encode())
        if c is None:
            np.savetxt(buf, v, fmt="v %.6f %.6f %.6f")
        else:
            np.savetxt(buf, np.hstack([v, c / 255.0]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        np.savetxt(buf, f.astype(np.int64) + base, fmt="f %d %d %d")
        base += len(v)
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
