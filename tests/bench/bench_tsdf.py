"""Benchmark: our sparse TSDF fusion + marching cubes (models/tsdf.py) vs Open3D on real data.

Not collected by pytest (no ``test_`` prefix). Run ``.venv/bin/python tests/bench/bench_tsdf.py`` or
call ``run()`` for a dict of numbers.

Datasets (real geometry, not synthetic):
  * ``tum_frame0``: TUM fr3 long_office_household frame 0, Kinect sensor depth, mocap pose.
  * ``tum_world``: a Loci world generated from that frame with its sensor depth along the real
    TUM camera path (frames 0-5, 640x480): frame 0 is the sensor depth, the others are lifted.
  * ``photo_world``: a world generated from a real photo (orbit, 8 frames, 256 px).

Baseline: Open3D 0.20 ``o3d.t.geometry.VoxelBlockGrid`` (its sparse voxel-block-hashing TSDF,
the successor of ``ScalableTSDFVolume``), CPU, block resolution 8 like ours, the same voxel size,
truncation (4 voxels), depth limit, float depth and colour. The legacy
``pipelines.integration.ScalableTSDFVolume`` returns an *empty* mesh in this Open3D build (also on
a synthetic plane; ``UniformTSDFVolume`` works), so it is run and its face count reported, but
the timing comparison uses VoxelBlockGrid. Meshes are extracted from voxels observed at least
once on both sides (Open3D's default ``weight_threshold=3`` would drop single-view surfaces).

Each timing is the median of ``repeats`` runs of (new volume, integrate all frames, extract the
mesh). Agreement: symmetric Chamfer distance between points sampled on both meshes.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.lift.tsdf import extract_mesh, fuse  # noqa: E402
from tests.helpers import PHOTOS, TUM, tum_depth_path, tum_frame_path, tum_trajectory  # noqa: E402

Frame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _tum_frame0() -> list[Frame]:
    import cv2

    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(tum_frame_path(0))), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(tum_depth_path()), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000.0
    f = cams["frames"][0]
    return [(rgb, depth, np.asarray(f["K"], float), np.asarray(f["c2w"], float))]


def _bundle_frames(directory: Path) -> list[Frame]:
    from storage.formats.bundle import read_bundle

    info = read_bundle(directory)
    return [(info.frame_rgb(i), info.frame_depth(i), info.K(i), info.c2w(i)) for i in info.indices]


def _generate(cache: Path) -> dict[str, Path]:
    """Generate (once, cached) the two worlds; returns name -> bundle folder."""
    from studio.cli import main as loci

    out = {}
    tum_world = cache / "tum_world"
    if not (tum_world / "world.json").is_file():
        traj = cache / "tum_traj.json"
        traj.write_text(json.dumps(tum_trajectory([0, 1, 2, 3, 4, 5])))
        loci(["generate", str(tum_frame_path(0)), "--out", str(tum_world), "--path", str(traj),
              "--depth", "file", "--depth-file", str(tum_depth_path()), "--depth-scale", "5000",
              "--width", "640", "--quiet", "--overwrite"])  # fmt: skip
    out["tum_world"] = tum_world
    photo_world = cache / "photo_world"
    if not (photo_world / "world.json").is_file():
        loci(["generate", str(PHOTOS / "interior_office_03_dsine.png"), "--out", str(photo_world),
              "--path", "orbit", "--frames", "8", "--width", "256", "--quiet", "--overwrite"])  # fmt: skip
    out["photo_world"] = photo_world
    return out


def _ours(frames: list[Frame], voxel: float, max_depth: float) -> tuple[float, float, tuple]:
    t0 = time.perf_counter()
    vol = fuse(frames, voxel, trunc=4 * voxel, max_depth=max_depth)
    t1 = time.perf_counter()
    mesh = extract_mesh(vol)
    return t1 - t0, time.perf_counter() - t1, mesh


def _open3d(frames: list[Frame], voxel: float, max_depth: float) -> tuple[float, float, tuple]:
    import open3d as o3d
    import open3d.core as o3c

    # Images/tensors are converted outside the timed region, as they would be by a caller.
    inputs = []
    for rgb, depth, K, c2w in frames:
        d = np.ascontiguousarray(np.nan_to_num(depth, nan=0.0).astype(np.float32))
        c = np.ascontiguousarray(rgb.astype(np.float32) / 255.0)
        Kt = o3c.Tensor(np.asarray(K, np.float64))
        inputs.append(
            (o3d.t.geometry.Image(d), o3d.t.geometry.Image(c), Kt, o3c.Tensor(np.linalg.inv(c2w)))
        )
    t0 = time.perf_counter()
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)),
        voxel_size=voxel,
        block_resolution=8,
        block_count=100_000,
    )
    for d, c, Kt, w2c in inputs:
        blocks = vbg.compute_unique_block_coordinates(d, Kt, w2c, 1.0, max_depth, 4.0)
        vbg.integrate(blocks, d, c, Kt, w2c, 1.0, max_depth, 4.0)
    t1 = time.perf_counter()
    m = vbg.extract_triangle_mesh(weight_threshold=0.5)
    t2 = time.perf_counter()
    v = m.vertex.positions.numpy().astype(np.float32)
    f = m.triangle.indices.numpy().astype(np.int32)
    return t1 - t0, t2 - t1, (v, f, None)


def _open3d_legacy_faces(frames: list[Frame], voxel: float, max_depth: float) -> int:
    import open3d as o3d

    integ = o3d.pipelines.integration
    vol = integ.ScalableTSDFVolume(
        voxel_length=voxel, sdf_trunc=4 * voxel, color_type=integ.TSDFVolumeColorType.RGB8
    )
    for rgb, depth, K, c2w in frames:
        h, w = depth.shape
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)),
            o3d.geometry.Image(np.ascontiguousarray(np.nan_to_num(depth).astype(np.float32))),
            depth_scale=1.0, depth_trunc=max_depth, convert_rgb_to_intensity=False)  # fmt: skip
        intr = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        vol.integrate(rgbd, intr, np.linalg.inv(c2w))
    return len(vol.extract_triangle_mesh().triangles)


def chamfer(mesh_a: tuple, mesh_b: tuple, n: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Symmetric Chamfer distance (m) between two meshes: ``n`` points sampled uniformly on
    each surface, exact point-to-*surface* distance to the other mesh (Open3D RaycastingScene;
    point-to-sampled-point distances would mostly measure the sampling spacing), then the mean of
    the two directed means. Directed means and medians are returned too."""
    import open3d as o3d
    import trimesh

    def surface_distance(points: np.ndarray, v: np.ndarray, f: np.ndarray) -> np.ndarray:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32))
        )
        return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()

    pts = [
        trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), n, seed=seed)[0]
        for v, f, _ in (mesh_a, mesh_b)
    ]
    a_to_b = surface_distance(pts[0], mesh_b[0], mesh_b[1])
    b_to_a = surface_distance(pts[1], mesh_a[0], mesh_a[1])
    return {
        "chamfer_m": float((a_to_b.mean() + b_to_a.mean()) / 2),
        "ours_to_o3d_mean_m": float(a_to_b.mean()),
        "o3d_to_ours_mean_m": float(b_to_a.mean()),
        "ours_to_o3d_median_m": float(np.median(a_to_b)),
        "o3d_to_ours_median_m": float(np.median(b_to_a)),
    }


def _bench_one(frames: list[Frame], voxel: float, max_depth: float, repeats: int) -> dict[str, Any]:
    ours, o3d_t = [], []
    for _ in range(repeats):  # interleaved so drifts in machine load hit both sides alike
        ours.append(_ours(frames, voxel, max_depth))
        o3d_t.append(_open3d(frames, voxel, max_depth))
    med = statistics.median
    ours_total = med(a + b for a, b, _ in ours)
    o3d_total = med(a + b for a, b, _ in o3d_t)
    res: dict[str, Any] = {
        "frames": len(frames),
        "size": f"{frames[0][1].shape[1]}x{frames[0][1].shape[0]}",
        "voxel_m": voxel,
        "trunc_m": 4 * voxel,
        "max_depth_m": max_depth,
        "ours_integrate_s": med(a for a, _, _ in ours),
        "ours_extract_s": med(b for _, b, _ in ours),
        "ours_total_s": ours_total,
        "o3d_integrate_s": med(a for a, _, _ in o3d_t),
        "o3d_extract_s": med(b for _, b, _ in o3d_t),
        "o3d_total_s": o3d_total,
        "speedup_vs_o3d": o3d_total / ours_total,
        "ours_faces": int(len(ours[-1][2][1])),
        "o3d_faces": int(len(o3d_t[-1][2][1])),
        "o3d_legacy_scalable_faces": _open3d_legacy_faces(frames, voxel, max_depth),
    }
    res.update(chamfer(ours[-1][2], o3d_t[-1][2]))
    res["chamfer_voxels"] = res["chamfer_m"] / voxel
    return res


def run(repeats: int = 5, cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run all datasets; returns {dataset: numbers}. ``cache`` keeps the generated worlds
    (default: $LOCI_BENCH_CACHE or a fresh temp folder)."""
    cache_dir = Path(
        cache or os.environ.get("LOCI_BENCH_CACHE") or tempfile.mkdtemp(prefix="loci_bench_tsdf_")
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    worlds = _generate(cache_dir)
    results: dict[str, Any] = {}
    results["tum_frame0"] = _bench_one(_tum_frame0(), 0.01, 6.0, repeats)
    results["tum_world"] = _bench_one(_bundle_frames(worlds["tum_world"]), 0.01, 6.0, repeats)
    photo = _bundle_frames(worlds["photo_world"])
    far = float(np.median([np.median(d[d > 0]) for _, d, _, _ in photo])) * 10.0
    results["photo_world"] = _bench_one(photo, 0.02, far, repeats)
    return results


if __name__ == "__main__":
    out = run()
    for name, r in out.items():
        print(f"== {name}")
        for k, v in r.items():
            print(f"  {k:28s} {v:.4f}" if isinstance(v, float) else f"  {k:28s} {v}")
