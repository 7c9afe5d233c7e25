"""``loci bench``: the speed suite, on real photos and the real TUM sequence.

Every figure is a median over repeats, and where a baseline exists it is measured in the same
run and reported as a ratio (machine noise cancels out of ratios, not out of wall times):

* seed: photo -> frame 0 (depth, memory insertion) at 512 px;
* exploration: frames/s along a forward walk, against a memory-less naive baseline (one
  1-pixel forward splat of the previous frame + OpenCV inpainting);
* warp: our forward-backward warp against the naive 1-pixel splat, on TUM frame 0 -> 2, and
  the correspondence (warp, composite, crack routing) against its torch twins;
* retrieval: 100 / 1k / 10k memory frames (synthetic: real retrieval cost, tiny images),
  against brute force (no frustum culling);
* peak memory of a long walkthrough (a separate process, so the figure is its own);
* painter: forward walks on the shared photos with the exemplar painter and the earlier
  smooth painter in the same run (frames/s, the painter's share of each frame), and the worst
  frame of a 40-degree turn on an indoor and an outdoor photo.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from models.geometry.cameras import Camera, intrinsics_from_fov, look_at, scale_intrinsics
from models.geometry.warp import forward_warp, forward_warp_torch
from models.memory import SpatialMemory
from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from storage.formats.images import load_photo
from studio.evaluation.machine import machine_info

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
PHOTO = DATA / "photos" / "interior_office_03_dsine.png"
TUM = DATA / "posed" / "tum_fr3_long_office_household"


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def naive_splat(rgb: np.ndarray, depth: np.ndarray, K_s, c2w_s, K_t, c2w_t, W: int, H: int):
    """Baseline: every source pixel to its nearest target pixel, z-buffered. (H, W, 3), (H, W)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    z = depth.reshape(-1)
    pts = np.stack(
        [
            (u.reshape(-1) - K_s[0, 2]) / K_s[0, 0] * z,
            (v.reshape(-1) - K_s[1, 2]) / K_s[1, 1] * z,
            z,
        ],
        -1,
    )
    T = np.linalg.inv(c2w_t) @ c2w_s
    q = pts @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
    ok = (z > 0) & (q[:, 2] > 1e-3)
    px = np.round(q[:, 0] / np.maximum(q[:, 2], 1e-6) * K_t[0, 0] + K_t[0, 2]).astype(np.int64)
    py = np.round(q[:, 1] / np.maximum(q[:, 2], 1e-6) * K_t[1, 1] + K_t[1, 2]).astype(np.int64)
    ok &= (px >= 0) & (px < W) & (py >= 0) & (py < H)
    idx = py[ok] * W + px[ok]
    zz = q[ok, 2]
    order = np.argsort(-zz, kind="stable")  # far first: the nearest is written last and wins
    zbuf = np.zeros(H * W, np.float32)
    col = np.zeros((H * W, 3), np.uint8)
    zbuf[idx[order]] = zz[order]
    col[idx[order]] = rgb.reshape(-1, 3)[ok][order]
    return col.reshape(H, W, 3), zbuf.reshape(H, W)


def _tum_pair(width: int = 512, height: int = 384):
    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    f0, f2 = cams["frames"][0], cams["frames"][2]
    rgb = cv2.resize(
        cv2.imread(str(TUM / f0["file"]))[..., ::-1], (width, height), interpolation=cv2.INTER_AREA
    )
    depth = cv2.imread(str(TUM / f0["depth"]), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000
    depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    K = scale_intrinsics(np.array(f0["K"]), (640, 480), (width, height))
    return np.ascontiguousarray(rgb), depth, K, np.array(f0["c2w"]), np.array(f2["c2w"])


def bench_warp(repeats: int) -> dict:
    rgb, depth, K, c0, c2 = _tum_pair()
    t_rgb = torch.from_numpy(rgb).float() / 255
    t_d = torch.from_numpy(depth)
    ours = _median_time(lambda: forward_warp(t_rgb, t_d, K, c0, K, c2, 512, 384), repeats)
    # The torch twin the compiled warp is tested against: what the kernels buy.
    ref = _median_time(lambda: forward_warp_torch(t_rgb, t_d, K, c0, K, c2, 512, 384), repeats)
    naive = _median_time(lambda: naive_splat(rgb, depth, K, c0, K, c2, 512, 384), repeats)
    # The whole correspondence (warp, composite, crack routing) against its torch twins.
    mem, cam = SpatialMemory(), Camera(K, c2, 512, 384)
    mem.insert(0, Camera(K, c0, 512, 384), torch.from_numpy(rgb), t_d)
    corr = _median_time(lambda: mem.correspond(cam, [0]), repeats)
    corr_ref = _median_time(lambda: mem.correspond(cam, [0], reference=True), repeats)
    return {
        "correspond_ms": corr * 1e3,
        "correspond_torch_ms": corr_ref * 1e3,
        "warp_ms": ours * 1e3,
        "warp_torch_ms": ref * 1e3,
        "ratio_vs_torch": ours / ref,
        "naive_splat_ms": naive * 1e3,
        "ratio_vs_naive": ours / naive,
    }


def bench_seed_and_explore(repeats: int, frames: int) -> dict:
    photo = load_photo(PHOTO)
    pipe = WorldPipeline(config=PipelineConfig(width=512))
    seed_s = _median_time(lambda: pipe.seed(photo.rgb), repeats)
    per_frame, wall_fps = [], []
    for _ in range(max(1, repeats // 2)):
        world = pipe.seed(photo.rgb)
        traj = make_preset(
            "forward", world.cameras[0], frames + 1, up=world.up, scene_depth=world.scene_depth
        )
        t = time.perf_counter()
        events = list(pipe.explore(world, traj.cameras[1:]))
        wall_fps.append(len(events) / (time.perf_counter() - t))
        per_frame += [e.timings for e in events]
    steps = {k: statistics.median(t[k] for t in per_frame) * 1e3 for k in per_frame[0]}

    # Baseline: no memory, no retrieval, a naive splat of the previous frame + Telea inpainting.
    world = pipe.seed(photo.rgb)
    traj = make_preset(
        "forward", world.cameras[0], frames + 1, up=world.up, scene_depth=world.scene_depth
    )

    def naive_walk() -> None:
        rgb, depth, cam = world.seed_event.rgb, world.seed_event.depth, world.cameras[0]
        for c in traj.cameras[1:]:
            col, z = naive_splat(rgb, depth, cam.K, cam.c2w, c.K, c.c2w, c.width, c.height)
            hole = (z <= 0).astype(np.uint8)
            rgb = cv2.inpaint(col, hole, 3, cv2.INPAINT_TELEA)
            depth = np.where(z > 0, z, np.median(z[z > 0])).astype(np.float32)
            cam = c

    naive_s = _median_time(naive_walk, max(1, repeats // 2), warmup=0)
    f = world.memory.frames[0]
    frame_bytes = sum(
        t.numel() * t.element_size()
        for t in (f.rgb, f.depth, f.confidence, f.observed, f.edges, f.points_world, f.points_conf)
    )
    return {
        "memory_frame_mb": frame_bytes / 2**20,
        "seed_s": seed_s,
        "explore_fps_wall": statistics.median(wall_fps),
        "explore_ms_per_frame_steps": steps,
        "naive_fps": frames / naive_s,
        "ratio_fps_vs_naive": statistics.median(wall_fps) / (frames / naive_s),
        "frames": frames,
        "size": [world.width, world.height],
    }


INDOOR = DATA / "photos" / "interior_living_room_geowizard.jpg"
OUTDOOR = DATA / "photos" / "street_london_dav2_demo01.jpg"


def _walk(photo_path: Path, painter: str, path: str, frames: int) -> tuple[float, list[dict]]:
    """Frames/s (wall) and per-frame step timings of one walk with one painter."""
    from models.synthesis.reproject import ReprojectSynthesis

    photo = load_photo(photo_path)
    pipe = WorldPipeline(synthesis=ReprojectSynthesis(painter), config=PipelineConfig(width=512))
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    n = frames + 1 if path == "forward" else 4 * frames  # look-around: 40 degrees at n / 4
    cams = make_preset(path, world.cameras[0], n, up=world.up, scene_depth=world.scene_depth)
    t = time.perf_counter()
    events = list(pipe.explore(world, cams.cameras[1 : frames + 1]))
    return len(events) / (time.perf_counter() - t), [e.timings for e in events]


def bench_painter(frames: int, photos: list[Path]) -> dict:
    """Forward walks (``frames`` frames) on ``photos`` and a 40-degree turn on an indoor and an
    outdoor photo, each with both painters in the same run. The painter's share is the median
    over frames of painting time / frame time."""
    out: dict = {"forward": {}, "turn_40deg": {}}
    for p in photos:
        row: dict = {}
        for painter in ("exemplar", "smooth"):
            fps, tim = _walk(p, painter, "forward", frames)
            row[painter] = {
                "fps_wall": fps,
                "fps_median_frame": 1.0 / statistics.median(t["total"] for t in tim),
                "synthesize_ms_median": statistics.median(t["synthesize"] for t in tim) * 1e3,
                "correspond_ms_median": statistics.median(t["correspond"] for t in tim) * 1e3,
                "painter_share": statistics.median(t["synthesize"] / t["total"] for t in tim),
            }
        row["fps_ratio_vs_smooth"] = row["exemplar"]["fps_wall"] / row["smooth"]["fps_wall"]
        out["forward"][p.name] = row
    for p in (INDOOR, OUTDOOR):
        row = {}
        for painter in ("exemplar", "smooth"):
            _, tim = _walk(p, painter, "look-around", 12)  # turning right, up to 40 degrees
            worst = max(tim, key=lambda t: t["total"])
            row[painter] = {
                "worst_frame_ms": worst["total"] * 1e3,
                "worst_synthesize_ms": max(t["synthesize"] for t in tim) * 1e3,
                "painter_share_worst_frame": worst["synthesize"] / worst["total"],
            }
        out["turn_40deg"][p.name] = row
    return out


def synthetic_memory(n: int, seed: int = 0) -> tuple[SpatialMemory, list[Camera]]:
    """A memory of ``n`` frames along a random walk through a 20 x 20 m room with 3 m walls.

    Frames are 64x48 with point stride 2, i.e. 768 retrieval points each: the same retrieval
    load as 512x384 frames at stride 16, without gigabytes of pixels.
    """
    rng = np.random.default_rng(seed)
    W, H = 64, 48
    K = intrinsics_from_fov(W, H, 60.0)
    mem = SpatialMemory(point_stride=2, cell_size=16)
    pos = np.array([0.0, -1.6, 0.0])
    heading = 0.0
    cams = []
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    for i in range(n):
        heading += rng.normal(0, 0.15)
        step = np.array([math.sin(heading), 0.0, math.cos(heading)]) * 0.1
        if np.abs(pos + step)[[0, 2]].max() > 9.0:
            heading += math.pi
            step = -step
        pos = pos + step
        c2w = look_at(
            pos,
            pos + np.array([math.sin(heading), 0.05, math.cos(heading)]),
            np.array([0.0, -1.0, 0.0]),
        )
        cam = Camera(K, c2w, W, H)
        # Depth to the room's walls, floor (y = 0) and ceiling (y = -3): ray/box intersection.
        d_world = rays @ c2w[:3, :3].T
        t = np.full((H, W), np.inf)
        for axis, lo, hi in ((0, -10.0, 10.0), (1, -3.0, 0.0), (2, -10.0, 10.0)):
            comp = d_world[..., axis]
            with np.errstate(divide="ignore"):
                for bound in (lo, hi):
                    tt = (bound - pos[axis]) / comp
                    t = np.where((tt > 0) & (tt < t), tt, t)
        depth = torch.from_numpy(np.minimum(t, 50.0).astype(np.float32))
        rgb = torch.from_numpy(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        mem.insert(i, cam, rgb, depth)
        cams.append(cam)
    return mem, cams


def bench_retrieval(sizes: list[int], repeats: int) -> dict:
    out = {}
    for n in sizes:
        mem, cams = synthetic_memory(n)
        # Targets: 512x384 cameras at poses from the walk (revisits), a few of them.
        rng = np.random.default_rng(1)
        targets = [
            Camera(intrinsics_from_fov(512, 384, 60.0), cams[int(i)].c2w, 512, 384)
            for i in rng.integers(0, n, 5)
        ]
        ours = statistics.median(
            _median_time(lambda t=t, m=mem: m.retrieve(t), repeats) for t in targets
        )
        brute = statistics.median(
            _median_time(lambda t=t, m=mem: m.retrieve(t, cull=False), max(1, repeats // 2))
            for t in targets[:3]
        )
        out[str(n)] = {
            "retrieve_ms": ours * 1e3,
            "brute_force_ms": brute * 1e3,
            "ratio_vs_brute": ours / brute,
        }
    return out


def _loci(*argv: str) -> None:
    """Run a ``loci`` command in a child process (the suite is not part of the CLI's imports)."""
    subprocess.run(
        [sys.executable, "-m", "studio.cli", *argv, "--quiet"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def bench_peak_memory(frames: int) -> dict:
    """Peak RSS of `loci generate` over a ``frames``-frame walk, in its own process."""
    with tempfile.TemporaryDirectory() as d:
        code = (
            "import sys; from studio.cli import main; "  # its own process: VmHWM is its own
            f"rc = main(['generate', {str(PHOTO)!r}, '--out', {d + '/w'!r}, '--path', 'loop', "
            f"'--frames', '{frames}', '--quiet']); "
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') "
            "if l.startswith('VmHWM'))); sys.exit(rc)"
        )
        t = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        wall = time.perf_counter() - t
        peak_kb = int(res.stdout.strip().splitlines()[-1])
    return {
        "frames": frames,
        "peak_rss_mb": peak_kb / 1024,
        "wall_s": wall,
        "fps_incl_writing": frames / wall,
    }


def bench_lift_export(repeats: int) -> dict:
    """Lift (splats, mesh) and every export of a 12-frame 512 px world: median seconds."""
    from studio.exports.lift import FORMATS, export_bundle, lift_bundle, make_mesh, make_splats

    with tempfile.TemporaryDirectory() as d:
        world = Path(d) / "w"
        _loci("generate", str(PHOTO), "--out", str(world), "--path", "orbit", "--frames", "12")
        from storage.formats.bundle import read_bundle

        bundle = read_bundle(world)
        out = {
            "splats_s": _median_time(lambda: make_splats(bundle), repeats),
            "mesh_s": _median_time(lambda: make_mesh(bundle), repeats),
        }
        lift_bundle(world)
        for fmt in FORMATS:
            target = (
                Path(d)
                / "exports"
                / (
                    fmt
                    if fmt in ("mjcf", "nerfstudio", "colmap")
                    else f"world.{'usda' if fmt == 'usd' else fmt}"
                )
            )
            out[f"export_{fmt}_s"] = _median_time(
                lambda f=fmt, t=target: export_bundle(world, f, t),
                max(1, repeats // 2),
                warmup=0,
            )
    return out


def bench_baselines(repeats: int) -> dict:
    """Optional outside baselines (need the source tree's tests/bench and gsplat / open3d)."""
    out: dict = {}
    if (ROOT / "tests" / "bench").is_dir() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # a source checkout: its benchmarks are importable
    try:
        from tests.bench import bench_splat_render

        out["splat_render"] = bench_splat_render.run(runs=repeats, threads=1)
    except Exception as e:  # gsplat missing, or not a source checkout
        out["splat_render"] = {"skipped": f"{type(e).__name__}: {e}"}
    try:
        from tests.bench import bench_tsdf

        out["tsdf"] = bench_tsdf.run(repeats=repeats)
    except Exception as e:  # open3d missing, or not a source checkout
        out["tsdf"] = {"skipped": f"{type(e).__name__}: {e}"}
    return out


def run_bench(
    out: str | None = None, quick: bool = False, repeats: int = 5, baselines: bool = False
) -> dict:
    """Run the suite, print a table, optionally write the JSON report to ``out``."""
    if quick:
        repeats = min(repeats, 3)
    report = {"machine": machine_info(), "repeats": repeats}
    steps = [
        ("warp", lambda: bench_warp(repeats)),
        ("pipeline", lambda: bench_seed_and_explore(repeats, 10 if quick else 30)),
        (
            "retrieval",
            lambda: bench_retrieval([100, 1000] if quick else [100, 1000, 10000], repeats),
        ),
        ("peak_memory", lambda: bench_peak_memory(40 if quick else 300)),
        ("lift_export", lambda: bench_lift_export(1 if quick else 3)),
        (
            "painter",
            lambda: bench_painter(
                10 if quick else 30,
                [INDOOR, OUTDOOR] if quick else sorted(DATA.joinpath("photos").glob("*.[jp][pn]g")),
            ),
        ),
    ]
    if baselines:
        steps.append(("baselines", lambda: bench_baselines(repeats)))
    for name, fn in steps:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        report[name] = fn()
    report["peak_memory"]["self_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(format_report(report))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    return report


def format_report(r: dict) -> str:
    p, w = r["pipeline"], r["warp"]
    lines = [
        f"machine: {r['machine']['platform']}, {r['machine']['cpu_count']} cpu, torch "
        f"{r['machine']['torch']} ({r['machine']['torch_threads']} threads), {r['machine']['date']}",
        f"{'metric':44s} {'median':>12s} {'baseline':>12s} {'ratio':>8s}",
        f"{'seed (s, 512 px)':44s} {p['seed_s']:12.3f} {'':>12s} {'':>8s}",
        f"{'memory per frame (MB, 512x384)':44s} {p.get('memory_frame_mb', 0):12.2f}",
        f"{'explore (frames/s, forward walk)':44s} {p['explore_fps_wall']:12.2f} "
        f"{p['naive_fps']:12.2f} {p['ratio_fps_vs_naive']:8.2f}",
        f"{'warp TUM 0->2 (ms) vs naive splat':44s} {w['warp_ms']:12.1f} "
        f"{w['naive_splat_ms']:12.1f} {w['ratio_vs_naive']:8.2f}",
    ]
    if "warp_torch_ms" in w:
        lines.append(
            f"{'warp TUM 0->2 (ms) vs its torch twin':44s} {w['warp_ms']:12.1f} "
            f"{w['warp_torch_ms']:12.1f} {w['ratio_vs_torch']:8.2f}"
        )
    if "correspond_torch_ms" in w:
        lines.append(
            f"{'correspond TUM 0->2 (ms) vs torch twins':44s} {w['correspond_ms']:12.1f} "
            f"{w['correspond_torch_ms']:12.1f} {w['correspond_ms'] / w['correspond_torch_ms']:8.2f}"
        )
    for k, v in p["explore_ms_per_frame_steps"].items():
        lines.append(f"{'  per frame: ' + k + ' (ms)':44s} {v:12.1f}")
    for n, v in r["retrieval"].items():
        lines.append(
            f"{'retrieval, ' + n + ' frames (ms) vs brute force':44s} "
            f"{v['retrieve_ms']:12.2f} {v['brute_force_ms']:12.2f} "
            f"{v['ratio_vs_brute']:8.3f}"
        )
    m = r["peak_memory"]
    lines.append(
        f"{'peak RSS, ' + str(m['frames']) + '-frame walk (MB)':44s} {m['peak_rss_mb']:12.0f}"
    )
    for k, v in r.get("lift_export", {}).items():
        lines.append(f"{'lift/export, 12 frames: ' + k:44s} {v:12.3f}")
    for name, row in r.get("painter", {}).get("forward", {}).items():
        e, s = row["exemplar"], row["smooth"]
        lines.append(
            f"{'forward walk (frames/s) ' + name[:20]:44s} {e['fps_wall']:12.2f} "
            f"{s['fps_wall']:12.2f} {row['fps_ratio_vs_smooth']:8.2f}  median frame "
            f"{e['fps_median_frame']:.1f}/s, painter share {e['painter_share']:.0%} "
            f"(smooth {s['painter_share']:.0%}), correspondence "
            f"{e.get('correspond_ms_median', 0):.0f} ms"
        )
    for name, row in r.get("painter", {}).get("turn_40deg", {}).items():
        e, s = row["exemplar"], row["smooth"]
        lines.append(
            f"{'40-degree turn, worst frame (ms) ' + name[:12]:44s} {e['worst_frame_ms']:12.0f} "
            f"{s['worst_frame_ms']:12.0f} {e['worst_frame_ms'] / s['worst_frame_ms']:8.2f}  "
            f"painting {e['worst_synthesize_ms']:.0f} ms"
        )
    b = r.get("baselines", {})
    sr = b.get("splat_render", {})
    if "speedup" in sr:
        lines.append(
            f"{'splat render ~50k @512x384 (s) vs gsplat torch':44s} "
            f"{sr['ours_median_s']:12.3f} {sr['gsplat_torch_median_s']:12.3f} "
            f"{1 / sr['speedup']:8.2f}"
        )
    elif sr:
        lines.append(f"splat render baseline: {sr.get('skipped')}")
    for name, v in b.get("tsdf", {}).items():
        if isinstance(v, dict) and "ours_total_s" in v:
            lines.append(
                f"{'tsdf+mc ' + name + ' (s) vs Open3D':44s} {v['ours_total_s']:12.2f} "
                f"{v['o3d_total_s']:12.2f} {1 / v['speedup_vs_o3d']:8.2f}"
                f"  chamfer {v['chamfer_m'] * 1000:.1f} mm"
            )
        elif name == "skipped":
            lines.append(f"tsdf baseline: {v}")
    return "\n".join(lines)
