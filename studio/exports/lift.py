"""``loci lift`` and ``loci export``: a world bundle -> splats, mesh, and every export format.

Lifting writes into the bundle, each file atomically: ``splats.ply`` (INRIA 3DGS layout, world
frame), ``mesh.ply`` (TSDF surface mesh, world frame, vertex colours: what physics collides with),
``backdrop.ply`` (the sky and far backdrop as a shell mesh, when the world has one) and
``lift.json`` (parameters and timings). Exports read those when present and lift on the fly otherwise, convert through
``models.geometry.cameras`` (glTF Y-up, USD/MuJoCo Z-up, OpenGL for nerfstudio) and write via ``storage``.
"""

from __future__ import annotations

import json
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
from models.lift.backdrop import backdrop_consensus, backdrop_mesh
from models.lift.splat_colors import solve_colors
from models.lift.splats import Gaussians, init_from_frames
from models.lift.tsdf import decimate, extract_mesh, fuse
from storage.atomic import atomic_write_json
from storage.errors import BundleError, StorageError
from storage.formats.bundle import BundleInfo, read_bundle
from storage.formats.mesh import write_glb, write_mesh_ply, write_obj
from storage.formats.splats import read_inria_ply, write_inria_ply, write_splat, write_spz

BACKDROP_FILE = "backdrop.ply"
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


def posed_frames(
    bundle: BundleInfo, max_frames: int = 24
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(rgb, depth, K, c2w)`` of each of :func:`lift_frames` (depth checked): what the mesh
    and its backdrop are built from."""
    return [
        (bundle.frame_rgb(i), _check_depth(bundle, i), bundle.K(i), bundle.c2w(i))
        for i in lift_frames(bundle, max_frames)
    ]


def scene_depth(bundle: BundleInfo) -> float:
    d = _check_depth(bundle, bundle.indices[0])
    return float(np.median(d[d > 0]))


# Depth from which a pixel is sky / far backdrop, in multiples of the photo's median depth: the
# splats' far shell, the mesh's backdrop part and the TSDF's far limit all use it, so every
# pixel ends in exactly one of them.
FAR_FACTOR = 10.0
# The TSDF's truncation band grows with depth (models.lift.tsdf): max(4 voxels, REL_TRUNC * z),
# up to MAX_BAND_VOXELS (the blocks a far pixel touches grow with its band: uncapped, a sky
# fused as a surface at 150 m took 6 GB).
REL_TRUNC = 0.05
MAX_BAND_VOXELS = 16
# Default voxel: this many pixel footprints at the photo's median depth (depth / fx), so the
# mesh resolves what the frames resolve at any image size (1.8 px: 20.6 dB on the street walk at
# 600k faces, against 18.6 dB for the former depth / 150 = 3 px at 400k faces).
VOXEL_PIXELS = 1.8
# Face budget of the surface mesh (vertex-clustering decimation beyond it).
TARGET_FACES = 600_000
# Beyond the depth where a pixel covers this many voxels, pixels go to the backdrop shell.
FAR_PIXEL_VOXELS = 3.0
# Passes of models.lift.tsdf_mesh.fill_unobserved before meshing (closes one-voxel cracks).
MESH_FILL = 1


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
        far=FAR_FACTOR * scene_depth(bundle),
        observed=observed,
    )
    if solve:
        g = solve_colors(g, frames, sh_degree=sh_degree, iters=COLOR_ITERS, progress=progress)
    return g


def mesh_voxel(bundle: BundleInfo, voxel: float | None = None) -> float:
    """The TSDF voxel (metres): ``voxel`` checked against the world's scale, or by default
    ``VOXEL_PIXELS`` pixel footprints at the photo's median depth."""
    depth = scene_depth(bundle)
    if voxel is not None and not (math.isfinite(voxel) and depth / 400 <= voxel <= depth / 5):
        raise StorageError(
            f"the voxel size must be between {depth / 400:.4f} and {depth / 5:.2f} m for this "
            f"world (its median depth is {depth:.2f} m), got {voxel}"
        )
    if voxel:
        return float(voxel)
    fx = float(bundle.K(bundle.indices[0])[0, 0])
    return float(np.clip(VOXEL_PIXELS * depth / fx, depth / 400, depth / 5))


def mesh_far(bundle: BundleInfo, voxel: float) -> float:
    """Depth (metres) from which pixels go to the backdrop shell instead of the TSDF: the lift's
    backdrop threshold (``FAR_FACTOR`` x the photo's median depth), or nearer, where a pixel
    covers more than ``FAR_PIXEL_VOXELS`` voxels: the uniform grid would spend most of its blocks
    on surfaces it cannot resolve (a layout sky at 150 m behind a field 26 m away took 3 GB and
    80 s), while the shell keeps them at pixel resolution."""
    fx = float(bundle.K(bundle.indices[0])[0, 0])
    return min(FAR_FACTOR * scene_depth(bundle), FAR_PIXEL_VOXELS * voxel * fx)


def make_mesh(
    bundle: BundleInfo,
    voxel: float | None = None,
    max_frames: int = 24,
    target_faces: int | None = TARGET_FACES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TSDF surface mesh of the bundle (world frame): vertices (V, 3), faces (F, 3), colours
    (V, 3) uint8.

    The voxel is ``mesh_voxel`` (a given ``voxel`` must lie within [scene depth / 400, scene
    depth / 5]: finer grids grow with the square of the resolution); depths beyond ``mesh_far``
    are the backdrop (``make_backdrop``), not the surface. The surface is decimated to
    ``target_faces`` (None: never)."""
    voxel = mesh_voxel(bundle, voxel)
    frames = posed_frames(bundle, max_frames)
    # One far limit for every frame (not each frame's own median): what is beyond it is the
    # backdrop part (make_backdrop), so the two never overlap or leave a gap in depth.
    volume = fuse(frames, voxel_size=voxel, max_depth=mesh_far(bundle, voxel),
                  rel_trunc=REL_TRUNC, max_band=MAX_BAND_VOXELS * voxel)  # fmt: skip
    v, f, c = extract_mesh(volume, fill=MESH_FILL)
    if len(f) == 0:
        raise BundleError(f"the mesh of {bundle.root} is empty (no surface was observed)")
    if target_faces and len(f) > target_faces:
        v, f, c = decimate(v, f, target_faces, colors=c)
    return v, f, c


def make_backdrop(
    bundle: BundleInfo, voxel: float | None = None, max_frames: int = 24
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The sky and far backdrop (depth beyond ``mesh_far``) as a textured shell mesh (world
    frame, models.lift.backdrop), separate from the surface mesh so physics never uses it.
    ``voxel``: the surface mesh's (default ``mesh_voxel``). None when nothing is that far."""
    frames = posed_frames(bundle, max_frames)
    far = mesh_far(bundle, mesh_voxel(bundle, voxel))
    back = backdrop_mesh(frames, far=far)
    if back is None:
        return None
    # Mean colour of the frames that see each point as backdrop: each frame paints its own sky
    # (street walk: +2.0 to +2.7 dB on the sky of frames 6-23, -1.3 dB at the photo, 40 dB).
    return back[0], back[1], backdrop_consensus(back[0], back[2], frames, far)


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
        say("backdrop")
        t = time.perf_counter()
        back = make_backdrop(bundle, voxel)
        # None: nothing is far (a room); a stale backdrop of an earlier lift must not stay.
        info["backdrop"] = None
        if back is None:
            (bundle.root / BACKDROP_FILE).unlink(missing_ok=True)
        else:
            write_mesh_ply(bundle.root / BACKDROP_FILE, *back)
            info["backdrop"] = {"file": BACKDROP_FILE, "vertices": len(back[0]),
                                "faces": len(back[1]), "seconds": time.perf_counter() - t}  # fmt: skip
    atomic_write_json(bundle.root / "lift.json", info)
    return info


def _load_backdrop(bundle: BundleInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The backdrop part: ``backdrop.ply`` of the lift; None when the lift found no backdrop;
    made now when the bundle was never lifted (or lifted before backdrops existed)."""
    if (bundle.root / BACKDROP_FILE).is_file():
        return _read_mesh_ply(bundle, BACKDROP_FILE)
    lifted = bundle.root / "lift.json"
    if lifted.is_file() and "backdrop" in json.loads(lifted.read_text()):
        return None
    return make_backdrop(bundle)


def _load_mesh(bundle: BundleInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface mesh (what physics collides with): ``mesh.ply``, or lifted now."""
    if not (bundle.root / "mesh.ply").is_file():
        return make_mesh(bundle)
    return _read_mesh_ply(bundle, "mesh.ply")


def _read_mesh_ply(bundle: BundleInfo, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = bundle.root / name
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
        to_yup = world_to_gltf(np.asarray(bundle.world["up"]))
        v, f, c = _load_mesh(bundle)
        back = _load_backdrop(bundle)
        # glTF is Y-up; OBJ has no axis convention, and tools read it as Y-up too. The backdrop
        # (sky, far shell) is its own node / object, so tools can hide or drop it.
        extra = [] if back is None else [
            ("backdrop", transform_points(to_yup, back[0].astype(np.float64)).astype(np.float32),
             back[1], back[2])
        ]  # fmt: skip
        writer = write_glb if fmt == "glb" else write_obj
        v_yup = transform_points(to_yup, v.astype(np.float64)).astype(np.float32)
        return writer(out, v_yup, f, c, name="surface", extra=extra)
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
