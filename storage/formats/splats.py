"""Gaussian-splat files: INRIA 3DGS ``.ply``, antimatter15 ``.splat``, Niantic ``.spz`` (v3).

numpy in, files out; every write is atomic (temp file + rename). Inputs everywhere (N splats):
means (N, 3) world metres (OpenCV axes: x right, y down, z forward), quats_wxyz (N, 4),
log_scales (N, 3) natural-log std-devs, opacity_logits (N,), sh0 (N, 3) degree-0 SH coefficients,
sh_rest (N, K, 3) higher-order coefficients with K in {3, 8, 15} or None.

- **.ply (INRIA layout)**: binary little-endian float32 properties, in this order:
  ``x y z nx ny nz f_dc_0..2 f_rest_0..3K-1 opacity scale_0..2 rot_0..3``. f_rest is channel-major
  (all K coefficients of red, then green, then blue), opacity a logit, scales logs, rot w,x,y,z.
  This is what the reference 3DGS code, gsplat, nerfstudio, SuperSplat and Gradio's Model3D read.
- **.splat**: 32 bytes per splat, no header: xyz float32, linear scales float32, RGBA uint8
  (colour = clip(0.5 + C0·sh0), alpha = sigmoid(logit)), quaternion w,x,y,z uint8 as q·128+128.
  Sorted by scale volume x opacity, largest first, as the web viewers stream it.
- **.spz v3** (Niantic, MIT): gzip of a 16-byte header (magic 0x5053474e "NGSP", version 3,
  numPoints, shDegree, fractionalBits, flags, reserved) then, attribute by attribute: positions
  (24-bit signed fixed point, 12 fractional bits), alphas (u8 sigmoid), colours (u8,
  sh0·0.15·255 + 127.5), scales (u8, (log + 10)·16), rotations, SH (u8, x·128 + 128, coefficient
  major, RGB innermost). Version 3 stores rotations as "smallest three" in 4 bytes: 2 bits index
  of the largest |component| (x,y,z,w order), then the other three as sign bit + 9-bit magnitude
  scaled by 1/√2 (version 2 stored x,y,z in 3 bytes). SPZ's axes are RUB (x right, y up, z back):
  the writer flips y and z from our RDF frame and the reader flips them back.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from storage.atomic import atomic_write_bytes
from storage.errors import StorageError

__all__ = [
    "SH_C0",
    "SPZ_MAGIC",
    "SplatData",
    "inria_ply_properties",
    "read_inria_ply",
    "read_splat",
    "read_spz",
    "write_inria_ply",
    "write_splat",
    "write_spz",
]

SH_C0 = 0.28209479177387814
SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
SPZ_VERSION = 3
SPZ_FRACTIONAL_BITS = 12
SPZ_COLOR_SCALE = 0.15
_SH_DIM_DEGREE = {0: 0, 3: 1, 8: 2, 15: 3}
# Sign of each SH coefficient (degrees 1..3, standard real-SH order) when y and z flip:
# degree 1 ~ (y, z, x); degree 2 ~ (xy, yz, 3z²-1, xz, x²-y²); degree 3 ~ (y(3x²-y²), xyz,
# y(5z²-1), z(5z²-3), x(5z²-1), z(x²-y²), x(x²-3y²)).
_SH_FLIP_YZ = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float32)
_RDF_TO_RUB = np.array([1.0, -1.0, -1.0], np.float32)

SplatData = dict[str, np.ndarray]  # means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest


def _check(
    means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest=None
) -> tuple[np.ndarray, ...]:
    n = len(means)
    arrays = [
        np.asarray(means, np.float32).reshape(n, 3),
        np.asarray(quats_wxyz, np.float32).reshape(n, 4),
        np.asarray(log_scales, np.float32).reshape(n, 3),
        np.asarray(opacity_logits, np.float32).reshape(n),
        np.asarray(sh0, np.float32).reshape(n, 3),
    ]
    rest = None if sh_rest is None else np.asarray(sh_rest, np.float32)
    if rest is not None and (rest.ndim != 3 or rest.shape[0] != n or rest.shape[2] != 3):
        raise StorageError(f"sh_rest must be (N, K, 3) with N = {n}, got {rest.shape}")
    if rest is not None and rest.shape[1] == 0:
        rest = None
    if not all(np.isfinite(a).all() for a in arrays) or (
        rest is not None and not np.isfinite(rest).all()
    ):
        raise StorageError("the splats contain NaN or infinite values; nothing was written")
    return (*arrays, rest)


# ---------------------------------------------------------------------------------------------
# INRIA .ply


def inria_ply_properties(n_rest: int = 0) -> list[str]:
    """Vertex property names in file order for ``n_rest`` f_rest values (3·K)."""
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def write_inria_ply(
    path: str | os.PathLike[str], means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest=None
) -> Path:
    """Write the INRIA 3DGS layout (see module doc). Returns the path."""
    means, quats, scales, opac, sh0, rest = _check(
        means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest
    )
    n = len(means)
    # Channel-major f_rest: (N, K, 3) -> (N, 3, K) -> (N, 3K), as the reference code saves it.
    rest_flat = (
        np.zeros((n, 0), np.float32) if rest is None else rest.transpose(0, 2, 1).reshape(n, -1)
    )
    names = inria_ply_properties(rest_flat.shape[1])
    cols = [means, np.zeros((n, 3), np.float32), sh0, rest_flat, opac[:, None], scales, quats]
    data = np.ascontiguousarray(np.concatenate(cols, 1), dtype="<f4")
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    return atomic_write_bytes(path, header.encode("ascii") + data.tobytes())


def read_inria_ply(path: str | os.PathLike[str]) -> SplatData:
    """Read a file written in the INRIA layout (float32 vertex properties, any order)."""
    blob = Path(path).read_bytes()
    end = blob.find(b"end_header\n")
    if not blob.startswith(b"ply\n") or end < 0:
        raise StorageError(f"{path} is not a PLY file")
    lines = blob[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise StorageError(f"{path}: only binary little-endian splat PLY files are supported")
    count, names, element = 0, [], None
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            element = parts[1]
            if element == "vertex":
                count = int(parts[2])
            elif int(parts[2]) > 0:
                raise StorageError(f"{path} has '{element}' elements: it is a mesh, not splats")
        elif parts[:1] == ["property"] and element == "vertex":
            if parts[1] not in ("float", "float32"):
                raise StorageError(f"{path}: property {parts[-1]} is not float32")
            names.append(parts[2])
    body = blob[end + len(b"end_header\n") :]
    if len(body) < count * 4 * len(names):
        raise StorageError(f"{path} is truncated")
    table = np.frombuffer(body, "<f4", count * len(names)).reshape(count, len(names))
    col = {name: table[:, i] for i, name in enumerate(names)}
    try:
        pick = lambda *keys: np.stack([col[k] for k in keys], 1).astype(np.float32)  # noqa: E731
        rest_names = sorted((k for k in col if k.startswith("f_rest_")), key=lambda k: int(k[7:]))
        rest = None
        if rest_names:
            rest = pick(*rest_names).reshape(count, 3, -1).transpose(0, 2, 1).copy()
        return {
            "means": pick("x", "y", "z"),
            "quats_wxyz": pick("rot_0", "rot_1", "rot_2", "rot_3"),
            "log_scales": pick("scale_0", "scale_1", "scale_2"),
            "opacity_logits": col["opacity"].astype(np.float32),
            "sh0": pick("f_dc_0", "f_dc_1", "f_dc_2"),
            "sh_rest": rest,
        }
    except KeyError as exc:
        raise StorageError(f"{path} is not a Gaussian-splat PLY (no {exc} property)") from exc


# ---------------------------------------------------------------------------------------------
# antimatter15 .splat

SPLAT_DTYPE = np.dtype(
    [("xyz", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)]
)  # 32 bytes


def write_splat(
    path: str | os.PathLike[str], means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest=None
) -> Path:
    """Write antimatter15 ``.splat`` (32 bytes/splat; view-dependent colour is dropped)."""
    means, quats, scales, opac, sh0, _ = _check(
        means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest
    )
    alpha = 1.0 / (1.0 + np.exp(-opac.astype(np.float64)))
    # Viewers draw big, opaque splats first while the file streams in.
    order = np.argsort(-np.exp(scales.astype(np.float64).sum(1)) * alpha, kind="stable")
    q = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    rec = np.empty(len(means), SPLAT_DTYPE)
    rec["xyz"] = means
    rec["scale"] = np.exp(scales)
    rgb = np.clip(0.5 + SH_C0 * sh0, 0, 1) * 255
    rec["rgba"] = np.round(np.concatenate([rgb, alpha[:, None] * 255], 1)).clip(0, 255)
    rec["rot"] = np.round(q * 128 + 128).clip(0, 255)
    return atomic_write_bytes(path, rec[order].tobytes())


def read_splat(path: str | os.PathLike[str]) -> SplatData:
    """Read a ``.splat``: means, quats_wxyz (normalised), log_scales, opacity_logits, sh0, rgba."""
    blob = Path(path).read_bytes()
    if len(blob) % SPLAT_DTYPE.itemsize:
        raise StorageError(f"{path} is not a .splat file (size is not a multiple of 32 bytes)")
    rec = np.frombuffer(blob, SPLAT_DTYPE)
    q = (rec["rot"].astype(np.float32) - 128) / 128
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    a = np.clip(rec["rgba"][:, 3].astype(np.float64) / 255, 1e-6, 1 - 1e-6)
    return {
        "means": rec["xyz"].astype(np.float32),
        "quats_wxyz": q.astype(np.float32),
        "log_scales": np.log(np.maximum(rec["scale"], 1e-30)).astype(np.float32),
        "opacity_logits": np.log(a / (1 - a)).astype(np.float32),
        "sh0": ((rec["rgba"][:, :3].astype(np.float32) / 255 - 0.5) / SH_C0).astype(np.float32),
        "rgba": rec["rgba"].copy(),
        "sh_rest": None,
    }


# ---------------------------------------------------------------------------------------------
# Niantic .spz (version 3)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _pack_quats_smallest_three(q_xyzw: np.ndarray) -> np.ndarray:
    """(N, 4) x,y,z,w -> (N, 4) bytes: 2-bit largest index, 3 x (sign bit + 9-bit magnitude)."""
    q = q_xyzw / np.maximum(np.linalg.norm(q_xyzw, axis=1, keepdims=True), 1e-12)
    largest = np.argmax(np.abs(q), axis=1)
    negate = q[np.arange(len(q)), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):  # the first stored component ends up in the highest bits
        use = largest != i
        neg = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.floor(511 * np.abs(q[:, i]) / np.sqrt(0.5) + 0.5).astype(np.uint32)
        comp = np.where(use, (comp << 10) | (neg << 9) | np.minimum(mag, 511), comp)
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_quats_smallest_three(packed: np.ndarray) -> np.ndarray:
    """Inverse of ``_pack_quats_smallest_three``: (N, 4) bytes -> (N, 4) x,y,z,w."""
    comp = packed.reshape(-1, 4).copy().view("<u4").reshape(-1).astype(np.uint64)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(comp), 4), np.float64)
    for i in (3, 2, 1, 0):  # lowest bits hold the last stored component
        use = largest != i
        mag = (comp & 511).astype(np.float64)
        neg = ((comp >> 9) & 1).astype(bool)
        val = np.sqrt(0.5) * mag / 511 * np.where(neg, -1, 1)
        q[:, i] = np.where(use, val, 0.0)
        comp = np.where(use, comp >> 10, comp)
    rows = np.arange(len(q))
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1 - (q**2).sum(1)))
    return q


def write_spz(
    path: str | os.PathLike[str], means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest=None,
    antialiased: bool = False,
) -> Path:  # fmt: skip
    """Write Niantic ``.spz`` version 3 (gzip), converting our RDF axes to SPZ's RUB."""
    means, quats, scales, opac, sh0, rest = _check(
        means, quats_wxyz, log_scales, opacity_logits, sh0, sh_rest
    )
    n = len(means)
    k = 0 if rest is None else rest.shape[1]
    if k not in _SH_DIM_DEGREE:
        raise StorageError(f"SPZ stores 0, 3, 8 or 15 SH coefficients per channel, not {k}")
    pos = np.round(means.astype(np.float64) * _RDF_TO_RUB * (1 << SPZ_FRACTIONAL_BITS))
    if np.abs(pos).max(initial=0) >= 1 << 23:
        raise StorageError("the splats reach further than SPZ can store (2048 m from the origin)")
    pos_bytes = pos.astype("<i4").view(np.uint8).reshape(n, 3, 4)[:, :, :3].reshape(-1)
    alphas = _u8(255.0 / (1.0 + np.exp(-opac.astype(np.float64))))
    colors = _u8(sh0 * (SPZ_COLOR_SCALE * 255) + 127.5)
    scale_bytes = _u8((scales + 10.0) * 16.0)
    # A 180° turn about x maps RDF to RUB: quaternion (w, x, -y, -z); SPZ orders it x,y,z,w.
    w, x, y, z = quats.T
    rot_bytes = _pack_quats_smallest_three(np.stack([x, -y, -z, w], 1))
    parts = [pos_bytes, alphas, colors.reshape(-1), scale_bytes.reshape(-1), rot_bytes.reshape(-1)]
    if rest is not None:
        flipped = rest * _SH_FLIP_YZ[:k, None]
        # Default SPZ quantisation: 5 bits for degree 1, 4 bits for higher degrees.
        q = np.round(flipped * 128) + 128
        bucket = np.where(np.arange(k) < 3, 1 << 3, 1 << 4)[None, :, None]
        q = (q + bucket // 2) // bucket * bucket
        parts.append(np.clip(q, 0, 255).astype(np.uint8).reshape(-1))
    header = struct.pack(
        "<IIIBBBB", SPZ_MAGIC, SPZ_VERSION, n, _SH_DIM_DEGREE[k], SPZ_FRACTIONAL_BITS,
        1 if antialiased else 0, 0,
    )  # fmt: skip
    raw = header + b"".join(p.tobytes() for p in parts)
    return atomic_write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0))


def read_spz(path: str | os.PathLike[str]) -> SplatData:
    """Read ``.spz`` versions 2 and 3 (gzip), returning our RDF axes. Also returns "header"."""
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except (OSError, EOFError) as exc:
        raise StorageError(f"{path} is not a gzip-compressed .spz file ({exc})") from exc
    if len(raw) < 16:
        raise StorageError(f"{path} is truncated")
    magic, version, n, degree, frac, flags, _ = struct.unpack_from("<IIIBBBB", raw)
    if magic != SPZ_MAGIC:
        raise StorageError(f"{path} is not an .spz file (bad magic)")
    if version not in (2, 3):
        raise StorageError(
            f"{path} is .spz version {version}; this reader handles versions 2 and 3"
        )
    k = {0: 0, 1: 3, 2: 8, 3: 15}.get(degree)
    if k is None or flags & 2:
        raise StorageError(f"{path} uses SPZ features this reader does not handle")
    rot_len = 4 if version >= 3 else 3
    sizes = [n * 9, n, n * 3, n * 3, n * rot_len, n * k * 3]
    if len(raw) < 16 + sum(sizes):
        raise StorageError(f"{path} is truncated")
    off, chunks = 16, []
    for s in sizes:
        chunks.append(np.frombuffer(raw, np.uint8, s, off))
        off += s
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = chunks
    p = pos_b.reshape(n * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = (fixed.reshape(n, 3) / float(1 << frac)) * _RDF_TO_RUB
    a = np.clip(alpha_b.astype(np.float64) / 255, 1e-6, 1 - 1e-6)
    if version >= 3:
        q = _unpack_quats_smallest_three(rot_b)
    else:
        xyz = rot_b.reshape(n, 3).astype(np.float64) / 127.5 - 1
        q = np.concatenate([xyz, np.sqrt(np.maximum(0, 1 - (xyz**2).sum(1)))[:, None]], 1)
    quats = np.stack([q[:, 3], q[:, 0], -q[:, 1], -q[:, 2]], 1)
    quats *= np.where(quats[:, :1] < 0, -1.0, 1.0)
    rest = None
    if k:
        rest = (sh_b.reshape(n, k, 3).astype(np.float32) - 128) / 128 * _SH_FLIP_YZ[:k, None]
    return {
        "means": means.astype(np.float32),
        "quats_wxyz": quats.astype(np.float32),
        "log_scales": (scale_b.reshape(n, 3).astype(np.float32) / 16 - 10),
        "opacity_logits": np.log(a / (1 - a)).astype(np.float32),
        "sh0": ((color_b.reshape(n, 3).astype(np.float32) / 255 - 0.5) / SPZ_COLOR_SCALE),
        "sh_rest": rest,
        "header": np.array([magic, version, n, degree, frac, flags], np.int64),
    }
