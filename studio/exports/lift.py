"""``loci lift`` and ``loci export``: a world bundle -> splats, mesh, and every export format.

Lifting writes into the bundle, each file atomically: ``splats.ply`` (INRIA 3DGS layout, world
frame), ``mesh.ply`` (TSDF mesh, world frame, vertex colours) and ``lift.json`` (parameters and
timings). Exports read those when present and lift on the fly otherwise, convert through
``models.geometry.cameras`` (glTF Y-up, USD/MuJoCo Z-up, OpenGL for nerfstudio) and write via ``storage``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.geometry.cameras import transform_points, world_to_gltf
from models.lift.splat_colors import solve_colors
from models.lift.splats import Gaussians, init_from_frames
from models.lift.tsdf import decimate, extract_mesh, fuse
from storage.atomic import atomic_write_json
from storage.errors import BundleError, StorageError
from storage.formats.bundle import BundleInfo, read_bundle
from storage.formats.mesh import write_glb, write_mesh_ply, write_obj
from storage.formats.splats import read_inria_ply, write_inria_ply, write_splat, write_spz

SPLAT_FORMATS = ("ply", "splat", "spz")
MESH_FORMATS = ("glb", "obj")
# "usdz-ar" is the Y-up USDZ AR viewers require; "usd"/"usdz" are Z-up for Isaac Sim.
FORMATS = (*SPLAT_FORMATS, *MESH_FORMATS, "usd", "usdz", "usdz-ar", "mjcf", "nerfstudio",
           "colmap", "mp4")  # fmt: skip
FOLDER_FORMATS = ("mjcf", "nerfstudio", "colmap")
# Conjugate-gradient steps of the colour solve (two active-set rounds): 10 and 20 gave the same
# median on the street walk, and the solve is most of the lift's time.
COLOR_ITERS = 10


def export_filename(fmt: str) -> str:
    """The file (or folder) name a format is written under: ``world.<ext>`` or the folder."""
    if fmt in FOLDER_FORMATS:
        return fmt
    return "world." + {"usd": "usda", "usdz-ar": "usdz"}.get(fmt, fmt)


Progress = Callable[[str], None]


def _check_depth(bundle: BundleInfo, i: int) -> np.ndarray:
    d = bundle.frame_depth(i)
    if not np.isfinite(d).all():
        raise BundleError(f"frame {i} of {bundle.root} has NaN or infinite depth")
    if not (d > 0).any():
        raise BundleError(f"frame {i} of {bundle.root} has no valid depth")
    return d


def lift_frames(bundle: BundleInfo, max_frames: int = 24) -> list[int]:
    """Frames to lift: memory frames (all when none is marked), evenly thinned to ``max_frames``
    (frame 0, the photo, always)."""
    idx = [i for i in bundle.indices if bundle.frame(i).get("in_memory", True)] or bundle.indices
    if len(idx) > max_frames:
        keep = np.unique(np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(int))
        idx = [idx[k] for k in keep]
    return idx


def scene_depth(bundle: BundleInfo) -> float:
    d = _check_depth(bundle, bundle.indices[0])
    return float(np.median(d[d > 0]))


def make_splats(
    bundle: BundleInfo,
    stride: int = 1,
    max_frames: int = 24,
    solve: bool = True,
    sh_degree: int = 0,
    progress: Progress | None = None,
) -> Gaussians:
    """Gaussians of the bundle's lift frames (world frame): surfaces fused keeping the sharpest
    observation, and sky / far backdrop (beyond 10x the photo's median depth) as a shell, so a
    render at any of the world's cameras has no hole where the sky was. With ``solve`` the
    colours (and degree-1 SH with ``sh_degree=1``) are then solved by least squares against the
    frames (``models.lift.splat_colors``), bounded to [0, 1]."""
    idx = lift_frames(bundle, max_frames)
    frames = [
        (bundle.frame_rgb(i), _check_depth(bundle, i), bundle.K(i), bundle.c2w(i), None)
        for i in idx
    ]
    observed = [bundle.frame_source_mask(i) for i in idx]
    # Every pixel, small nearly opaque discs: fusion keeps about one Gaussian per pixel of the
    # best view, and a render at a frame's camera keeps its detail (stride 2 with wider discs
    # lost 2-5 dB on the street walk). Discs of 0.6 px with the colour solve (which sharpens
    # what the overlap blurs): 0.4 / 0.5 / 0.6 / 0.7 px gave 26.0 / 27.7 / 28.1 / 28.0 dB median
    # on the street walk; without the solve 0.5 px was best.
    g = init_from_frames(
        frames,
        stride=stride,
        footprint_scale=0.6 if solve else 0.5,
        base_opacity=0.99,
        far=10.0 * scene_depth(bundle),
        observed=observed,
    )
    if solve:
        g = solve_colors(g, frames, sh_degree=sh_degree, iters=COLOR_ITERS, progress=progress)
    return g


def make_mesh(
    bundle: BundleInfo,
    voxel: float | None = None,
    max_frames: int = 24,
    target_faces: int | None = 400_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TSDF mesh of the bundle (world frame): vertices (V, 3), faces (F, 3), colours (V, 3).

    A given ``voxel`` must lie within [scene depth / 400, scene depth / 5]: finer grids grow
    with the square of the resolution (about 0.6 GB at depth / 300 for 8 frames at 256 px)."""
    depth = scene_depth(bundle)
    if voxel is not None and not (math.isfinite(voxel) and depth / 400 <= voxel <= depth / 5):
        raise StorageError(
            f"the voxel size must be between {depth / 400:.4f} and {depth / 5:.2f} m for this "
            f"world (its median depth is {depth:.2f} m), got {voxel}"
        )
    voxel = voxel or float(np.clip(depth / 150.0, 0.01, 0.2))
    frames = [
        (bundle.frame_rgb(i), _check_depth(bundle, i), bundle.K(i), bundle.c2w(i))
        for i in lift_frames(bundle, max_frames)
    ]
    v, f, c = extract_mesh(fuse(frames, voxel_size=voxel))
    if len(f) == 0:
        raise BundleError(f"the mesh of {bundle.root} is empty (no surface was observed)")
    if target_faces and len(f) > target_faces:
        v, f, c = decimate(v, f, target_faces, colors=c)
    return v, f, c


def lift_bundle(
    bundle_dir: str | os.PathLike[str],
    splats: bool = True,
    mesh: bool = True,
    voxel: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write ``splats.ply`` / ``mesh.ply`` / ``lift.json`` into the bundle; returns lift.json."""
    bundle = read_bundle(bundle_dir)
    say = progress or (lambda _msg: None)
    info: dict[str, Any] = {"frames": lift_frames(bundle)}
    if splats:
        say("splats")
        t = time.perf_counter()
        g = make_splats(bundle, progress=say)
        write_inria_ply(
            bundle.root / "splats.ply",
            g.means,
            g.quats,
            g.log_scales,
            g.opacity_logits,
            g.sh0,
            g.sh_rest,
        )
        info["splats"] = {
            "file": "splats.ply",
            "count": len(g),
            "colors": f"least squares against the frames ({COLOR_ITERS} CG steps)",
            "seconds": time.perf_counter() - t,
        }
    if mesh:
        say("mesh")
        t = time.perf_counter()
        v, f, c = make_mesh(bundle, voxel)
        write_mesh_ply(bundle.root / "mesh.ply", v, f, c)
        info["mesh"] = {
            "file": "mesh.ply",
            "vertices": len(v),
            "faces": len(f),
            "seconds": time.perf_counter() - t,
        }
    atomic_write_json(bundle.root / "lift.json", info)
    return info


def _load_mesh(bundle: BundleInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = bundle.root / "mesh.ply"
    if not path.is_file():
        return make_mesh(bundle)
    import trimesh

    damaged = BundleError(f"{path} is damaged or incomplete; run `loci lift {bundle.root}` again")
    try:
        m = trimesh.load(path, process=False, force="mesh")
        v, f = np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)
        colors = np.asarray(m.visual.vertex_colors)[:, :3].astype(np.uint8)
    except Exception as exc:  # any reader failure on a bad file is the user's damaged bundle
        raise damaged from exc
    if (len(f) == 0 or v.ndim != 2 or not np.isfinite(v).all() or f.min() < 0
            or f.max() >= len(v) or len(colors) != len(v)):  # fmt: skip
        raise damaged
    return v, f.astype(np.int32), colors


def _load_splats(bundle: BundleInfo) -> tuple:
    path = bundle.root / "splats.ply"
    if not path.is_file():
        g = make_splats(bundle)
        return g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, g.sh_rest
    s = read_inria_ply(path)
    return (
        s["means"],
        s["quats_wxyz"],
        s["log_scales"],
        s["opacity_logits"],
        s["sh0"],
        s.get("sh_rest"),
    )


def export_bundle(
    bundle_dir: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | None = None
) -> Path:
    """Export the bundle in ``fmt`` to ``out`` (default ``DIR/exports/world.<fmt>`` or a folder
    for multi-file formats). Returns the written path."""
    if fmt not in FORMATS:
        raise StorageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    bundle = read_bundle(bundle_dir)
    # USD as a text layer (readable, diffable); folder formats as a folder.
    out = Path(out) if out else bundle.root / "exports" / export_filename(fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt in SPLAT_FORMATS:
        writer = {"ply": write_inria_ply, "splat": write_splat, "spz": write_spz}[fmt]
        return writer(out, *_load_splats(bundle))
    if fmt in MESH_FORMATS:
        v, f, c = _load_mesh(bundle)
        # glTF is Y-up; OBJ has no axis convention, and tools read it as Y-up too.
        v_yup = transform_points(
            world_to_gltf(np.asarray(bundle.world["up"])), v.astype(np.float64)
        )
        writer = write_glb if fmt == "glb" else write_obj
        return writer(out, v_yup.astype(np.float32), f, c)
    if fmt in ("usd", "usdz", "usdz-ar", "mjcf"):
        try:
            from studio.exports.physics import export_mjcf, export_usd

            if fmt == "mjcf":
                import mujoco  # noqa: F401  (fail here, before any work, when missing)
            else:
                import pxr  # noqa: F401
        except ImportError as e:
            raise StorageError(
                f"{fmt} export needs the physics extra: pip install -e '.[physics]' ({e})"
            ) from e
        if fmt == "mjcf":
            return export_mjcf(bundle.root, out, mesh=_load_mesh(bundle), overwrite=True)
        up_axis = "Y" if fmt == "usdz-ar" else "Z"
        return export_usd(bundle.root, out, mesh=_load_mesh(bundle), up_axis=up_axis)
    if fmt == "nerfstudio":
        from studio.exports.datasets import export_nerfstudio

        return export_nerfstudio(bundle.root, out, overwrite=True)
    if fmt == "colmap":
        from studio.exports.datasets import export_colmap

        return export_colmap(bundle.root, out, overwrite=True)
    # mp4: the walkthrough, copied atomically.
    src = bundle.root / "video.mp4"
    if not src.is_file():
        raise BundleError(f"{bundle.root} has no video.mp4")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:10]}.partial")  # concurrent exports
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
