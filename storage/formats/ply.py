"""Coloured point clouds as binary PLY (the preview ``pointcloud.ply`` of a world bundle).

Layout is fixed so every viewer and our own reader agree: binary little-endian, one ``vertex``
element with properties exactly ``x y z`` (float32) then ``red green blue`` (uchar), 15 bytes per
point, no faces. An empty cloud (N = 0) is still a valid file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write_bytes
from storage.errors import StorageError

__all__ = ["POINT_DTYPE", "read_pointcloud_ply", "write_pointcloud_ply"]

# Packed record matching the header below (no padding: itemsize 15).
POINT_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _header(count: int) -> bytes:
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by Loci",
        f"element vertex {count}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_pointcloud_ply(path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Write N points atomically. xyz: (N, 3) float (stored float32); rgb: (N, 3) uint8.

    Non-finite points are refused rather than written, because many viewers crash on NaN.
    """
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise StorageError(f"point positions must have shape (N, 3), got {xyz.shape}")
    if rgb.shape != xyz.shape:
        raise StorageError(f"point colours must have shape {xyz.shape}, got {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise StorageError(f"point colours must be uint8, got {rgb.dtype}")
    positions = xyz.astype(np.float32)
    if not np.isfinite(positions).all():
        raise StorageError("point cloud has NaN or infinite coordinates; drop them before saving")
    records = np.empty(len(positions), dtype=POINT_DTYPE)
    for axis, name in enumerate(("x", "y", "z")):
        records[name] = positions[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        records[name] = rgb[:, channel]
    return atomic_write_bytes(path, _header(len(records)) + records.tobytes())


def _parse_header(blob: bytes, name: str) -> tuple[int, int, list[tuple[str, str]], str]:
    """Return (data offset, vertex count, vertex properties as (name, numpy type), format)."""
    end = blob.find(b"end_header")
    if not blob.startswith(b"ply") or end < 0:
        raise StorageError(f"{name} is not a PLY file")
    newline = blob.find(b"\n", end)
    if newline < 0:
        raise StorageError(f"{name}: PLY header is incomplete")
    lines = blob[:end].decode("ascii", errors="replace").splitlines()
    fmt = ""
    count = 0
    props: list[tuple[str, str]] = []
    current = None
    seen_vertex = False
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else ""
        elif words[0] == "element":
            current = words[1] if len(words) > 1 else ""
            if current == "vertex":
                count = int(words[2])
            elif not seen_vertex:
                # Data of an element listed before "vertex" would come first; not our layout.
                raise StorageError(f"{name}: unsupported PLY layout (element '{current}' first)")
            seen_vertex = seen_vertex or current == "vertex"
        elif words[0] == "property" and current == "vertex":
            if words[1] == "list":
                raise StorageError(f"{name}: list properties on vertices are not supported")
            if words[1] not in _PLY_TYPES:
                raise StorageError(f"{name}: unknown PLY property type '{words[1]}'")
            props.append((words[2], _PLY_TYPES[words[1]]))
    return newline + 1, count, props, fmt


def read_pointcloud_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a vertex-only PLY -> (xyz (N, 3) float32, rgb (N, 3) uint8).

    Accepts binary little/big endian and ASCII files with x, y, z and red, green, blue among the
    vertex properties (other properties are ignored); colours default to grey when absent.
    """
    file = Path(path)
    try:
        blob = file.read_bytes()
    except OSError as exc:
        raise StorageError(f"could not read point cloud {file}: {exc.strerror or exc}") from exc
    offset, count, props, fmt = _parse_header(blob, file.name)
    names = [p[0] for p in props]
    if not {"x", "y", "z"} <= set(names):
        raise StorageError(f"{file.name}: the point cloud has no x, y, z coordinates")
    if fmt == "ascii":
        text = blob[offset:].decode("ascii", errors="replace").split()
        values = np.asarray(text[: count * len(props)], dtype=np.float64)
        if values.size != count * len(props):
            raise StorageError(f"{file.name}: the point cloud is truncated")
        table = values.reshape(count, len(props))
        columns = {n: table[:, i] for i, n in enumerate(names)}
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(n, order + t) for n, t in props])
        needed = count * dtype.itemsize
        if len(blob) - offset < needed:
            raise StorageError(f"{file.name}: the point cloud is truncated")
        table = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
        columns = {n: table[n] for n in names}
    else:
        raise StorageError(f"{file.name}: unknown PLY format '{fmt}'")
    xyz = np.stack([columns[a] for a in ("x", "y", "z")], axis=1).astype(np.float32)
    if {"red", "green", "blue"} <= set(names):
        rgb = np.stack([columns[c] for c in ("red", "green", "blue")], axis=1)
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    else:
        rgb = np.full((count, 3), 128, np.uint8)
    return xyz.reshape(count, 3), rgb.reshape(count, 3)
