"""What the browser's 3D world view is given: cameras in three.js terms, compact splats, and
cheap previews of a world that is still being generated. No Gradio here (the service uses it).

The view works in the glTF Y-up frame (:func:`models.geometry.cameras.world_to_gltf`): gravity
is +y, so fly and orbit navigation stay level, and the exported GLB mesh needs no transform. Each
camera goes as its three.js ``matrixWorld`` (:func:`c2w_for_gltf_camera`, OpenGL camera axes)
and a projection matrix made from its own ``K`` (:func:`gl_projection`), so a render at camera N
lines up pixel for pixel with generated frame N. Splats go as SPZ (RUB axes by its spec) with the
matrix :func:`spz_to_gltf`. Matrices are flattened column-major, as three.js ``fromArray`` reads.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.geometry.cameras import c2w_for_gltf_camera, gl_projection, spz_to_gltf
from storage.formats.splats import read_inria_ply, write_spz

__all__ = [
    "MAX_WEB_SPLATS",
    "column_major",
    "preview_spz_b64",
    "scene_payload",
    "web_splat_subset",
    "write_web_splats",
]

#: Splats sent to a browser at most (about 11 bytes each as SPZ: a few MB). The full set stays
#: in the .ply export; software WebGL draws 400k splats in well under a second per frame.
MAX_WEB_SPLATS = 400_000


def column_major(m: np.ndarray, digits: int = 6) -> list[float]:
    """A 4x4 matrix as three.js ``Matrix4.fromArray`` reads it (column-major), rounded."""
    return [round(float(v), digits) for v in np.asarray(m, np.float64).T.reshape(-1)]


def web_splat_subset(opacity_logits: np.ndarray, log_scales: np.ndarray, keep: int) -> np.ndarray:
    """Indices (sorted) of the ``keep`` splats that matter most on screen: opacity times the
    area of the two largest axes. Deterministic (stable order, ties to the lower index)."""
    n = len(opacity_logits)
    if keep >= n:
        return np.arange(n)
    opacity = 1.0 / (1.0 + np.exp(-np.asarray(opacity_logits, np.float64)))
    s = np.sort(np.asarray(log_scales, np.float64), axis=1)
    weight = opacity * np.exp(s[:, 1] + s[:, 2])
    order = np.argsort(-weight, kind="stable")
    return np.sort(order[:keep])


def write_web_splats(
    ply_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
    max_splats: int = MAX_WEB_SPLATS,
) -> dict[str, int]:  # fmt: skip
    """The browser's copy of a world's splats: SPZ v3 (degree-0 colour), at most ``max_splats``.

    Returns {"count": splats written, "of": splats in the .ply, "bytes": file size}.
    """
    g = read_inria_ply(ply_path)
    n = len(g["means"])
    idx = web_splat_subset(g["opacity_logits"], g["log_scales"], max_splats)
    path = write_spz(out_path, g["means"][idx], g["quats_wxyz"][idx], g["log_scales"][idx],
                     g["opacity_logits"][idx], g["sh0"][idx])  # fmt: skip
    return {"count": int(len(idx)), "of": int(n), "bytes": Path(path).stat().st_size}


def camera_payload(
    K: np.ndarray, c2w: np.ndarray, up: np.ndarray, width: int, height: int, near: float,
    far: float,
) -> dict[str, list[float]]:  # fmt: skip
    """One camera for the view: three.js matrixWorld and projection, column-major."""
    return {
        "c2w": column_major(c2w_for_gltf_camera(np.asarray(c2w, float), up)),
        "proj": column_major(gl_projection(K, width, height, near, far), 8),
    }


def scene_payload(
    meta: dict[str, Any],
    cameras: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    splats_url: str | None = None,
    mesh_url: str | None = None,
    frame_urls: Sequence[dict[str, str]] = (),
    chunks: Sequence[dict[str, Any]] = (),
    message: str = "",
) -> dict[str, Any]:
    """The ``scene`` prop of the 3D view (see ``loci-view.js``).

    meta: the world's metadata (``up``, ``width``, ``height``, ``scene_depth``); cameras:
    (K (3, 3), c2w (4, 4)) per frame, OpenCV; splats_url: an SPZ (or INRIA .ply) of the world's
    splats; mesh_url: its GLB (glTF frame); frame_urls: per frame {"rgb", "mask"} image URLs;
    chunks: live previews {"spz": base64, ...}; message: a line shown over the view.
    """
    up = np.asarray(meta["up"], float)
    width, height = int(meta["width"]), int(meta["height"])
    depth = float(meta.get("scene_depth") or 3.0)
    near, far = max(0.005, 0.002 * depth), max(100.0, 200.0 * depth)
    spz_matrix = column_major(spz_to_gltf(up))
    return {
        "width": width,
        "height": height,
        "scene_depth": round(depth, 4),
        "cameras": [camera_payload(K, c2w, up, width, height, near, far) for K, c2w in cameras],
        "splats": {"url": splats_url, "matrix": spz_matrix} if splats_url else None,
        "mesh": {"url": mesh_url} if mesh_url else None,
        "frames": list(frame_urls),
        "chunks": [{"matrix": spz_matrix, **c} for c in chunks],
        "message": message,
    }


def preview_spz_b64(
    frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], stride: int = 8
) -> str:
    """A cheap lift of a few frames for the live view: pixel-aligned splats every ``stride``
    pixels (no refinement), as base64 SPZ. frames: (rgb (H, W, 3) uint8, depth (H, W) metres,
    K, c2w). About 3k splats per 512x384 frame at stride 8, some 30 KB per frame."""
    from models.lift.splats import init_from_frames

    scene_depth = np.median([np.median(d[d > 0]) for _, d, _, _ in frames if (d > 0).any()])
    far = 10.0 * float(scene_depth)  # the sky backdrop would bury the preview (as in the lift)
    g = init_from_frames(
        [(rgb, np.where(d < far, d, 0.0).astype(np.float32), K, c2w, None)
         for rgb, d, K, c2w in frames],
        stride=stride,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="loci-preview-") as tmp:
        path = write_spz(Path(tmp) / "chunk.spz", g.means, g.quats, g.log_scales,
                         g.opacity_logits, g.sh0)  # fmt: skip
        return base64.b64encode(Path(path).read_bytes()).decode()
