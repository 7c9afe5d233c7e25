"""Benchmark: our CPU splat renderer vs gsplat's pure-PyTorch path, 50k splats at 512x384.

Not collected by pytest (name does not start with ``test_``). Run:
``.venv/bin/python tests/bench/bench_splat_render.py``; ``run()`` returns the numbers as a dict.

The scene is real: pixel-aligned splats (stride 2, ~49k) from a 512x384 world generated from a
real photo, rendered from the world's second camera. The baseline is gsplat's
``_quat_scale_to_covar_preci`` + ``_fully_fused_projection`` (the pure-PyTorch reference of its
CUDA kernels) and a straightforward compositor written here: per 16x16 tile, the Gaussians whose
radius box touches it (boolean mask), depth-sorted, composited densely with a cumulative product.
(gsplat's own ``_isect_tiles`` is a Python loop per Gaussian and would only make it slower.)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="loci-torch-ext-"))
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PHOTO = ROOT.parent / "shared" / "data" / "photos" / "interior_office_03_dsine.png"


def make_scene(workdir: Path):
    from models.lift.splats import depth_edge_confidence, init_from_frames
    from storage.formats.bundle import read_bundle
    from studio.cli import main

    out = workdir / "world512"
    args = ["generate", str(PHOTO), "--out", str(out), "--path", "orbit", "--frames", "2"]
    main(args + ["--width", "512", "--quiet"])
    b = read_bundle(out)
    i0, i1 = b.indices[:2]
    depth = b.frame_depth(i0)
    frame = (b.frame_rgb(i0), depth, b.K(i0), b.c2w(i0), depth_edge_confidence(depth))
    g = init_from_frames([frame], stride=2, voxel=0)
    return g, b.c2w(i1), b.K(i1), b.width, b.height


def gsplat_torch_render(g, c2w, K, width, height, tile=16):
    """gsplat's pure-PyTorch projection + a straightforward per-tile compositor."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    means = torch.from_numpy(g.means)
    covars, _ = _quat_scale_to_covar_preci(
        torch.from_numpy(g.quats), torch.from_numpy(g.log_scales).exp(), compute_preci=False
    )
    viewmat = torch.linalg.inv(torch.from_numpy(c2w)).float()[None]
    Ks = torch.from_numpy(K).float()[None]
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmat, Ks, width, height
    )
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    opac = torch.sigmoid(torch.from_numpy(g.opacity_logits))
    colors = (torch.from_numpy(g.sh0) * 0.28209479177387814 + 0.5).clamp_min(0)
    order = torch.argsort(depths)
    vis = order[(radii[order] > 0).all(-1)]
    m, r = means2d[vis], radii[vis].float()
    image = torch.zeros(height, width, 3)
    ys, xs = torch.meshgrid(torch.arange(tile) + 0.5, torch.arange(tile) + 0.5, indexing="ij")
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            hit = (
                (m[:, 0] + r[:, 0] >= tx) & (m[:, 0] - r[:, 0] < tx + tile)
                & (m[:, 1] + r[:, 1] >= ty) & (m[:, 1] - r[:, 1] < ty + tile)
            )  # fmt: skip
            ids = vis[hit]
            if len(ids) == 0:
                continue
            dx = (xs.reshape(-1, 1) + tx) - means2d[ids, 0]
            dy = (ys.reshape(-1, 1) + ty) - means2d[ids, 1]
            a, b, c = conics[ids].unbind(-1)
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = (opac[ids] * torch.exp(-sigma)).clamp_max(0.99)
            alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, 0.0)
            trans = torch.cumprod(1 - alpha, -1)
            before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], -1)
            w = alpha * before * (trans > 1e-4)
            rgb = (w @ colors[ids]).reshape(tile, tile, 3)
            image[ty : ty + tile, tx : tx + tile] = rgb[: height - ty, : width - tx]
    return image


def ours_render(g, c2w, K, width, height):
    from models.lift.splat_render import render

    with torch.no_grad():
        return render(
            g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, c2w, K, width, height
        )["rgb"]


def _median_time(fn, runs: int) -> tuple[float, list[float], float]:
    """Median wall seconds, all wall times, median CPU seconds (robust when the machine is shared)."""
    times, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), times, statistics.median(cpu)


def run(runs: int = 5, threads: int = 1) -> dict:
    """Median wall seconds of both renderers on the same splats/camera, the ratio and the PSNR
    between their images (they differ by gsplat's 3.33σ radius cut vs our opacity-aware one)."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        g, c2w, K, width, height = make_scene(Path(tmp))
    args = (g, c2w, K, width, height)
    ours_render(*args)  # warm-up (allocator, thread pool)
    ours, ours_all, ours_cpu = _median_time(lambda: ours_render(*args), runs)
    # gsplat centres pixels at +0.5; shift K so both render the same image.
    K_gs = K.copy()
    K_gs[:2, 2] += 0.5
    base, base_all, base_cpu = _median_time(
        lambda: gsplat_torch_render(g, c2w, K_gs, width, height), runs
    )
    a = ours_render(*args).clamp(0, 1).numpy()
    b = gsplat_torch_render(g, c2w, K_gs, width, height).clamp(0, 1).numpy()
    mse = float(((a - b) ** 2).mean())
    return {
        "splats": len(g),
        "size": f"{width}x{height}",
        "threads": threads,
        "ours_median_s": round(ours, 4),
        "gsplat_torch_median_s": round(base, 4),
        "speedup": round(base / ours, 2),
        "ours_median_cpu_s": round(ours_cpu, 4),
        "gsplat_torch_median_cpu_s": round(base_cpu, 4),
        "speedup_cpu_time": round(base_cpu / ours_cpu, 2),
        "ours_runs_s": [round(t, 4) for t in ours_all],
        "gsplat_torch_runs_s": [round(t, 4) for t in base_all],
        "psnr_ours_vs_gsplat_torch_db": float(round(10 * np.log10(1 / max(mse, 1e-12)), 2)),
    }


if __name__ == "__main__":
    print(run(threads=int(os.environ.get("LOCI_BENCH_THREADS", "1"))))
