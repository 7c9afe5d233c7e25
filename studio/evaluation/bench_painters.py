"""``loci bench --synthesis NAME --model DIR``: what one weight-backed painter costs per frame.

A forward walk on a real photo is generated with the painter, chunk by chunk as the studio does.
Reported, as medians over chunks (the first chunk, which pays for prompt encoding and kernel
warm-up, is reported on its own): seconds per frame in the painter and for the whole loop, and
peak memory (CUDA: ``max_memory_allocated`` against the VRAM plan's estimate; CPU: the
process's peak RSS). The offline ``reproject`` painter runs the same walk in the same run as the
baseline. On a CPU with the tiny test models this measures plumbing only; with CUDA and real
weights it is the real figure.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from storage.formats.images import load_photo
from studio.evaluation.machine import machine_info

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT.parent / "shared" / "data" / "photos" / "interior_living_room_geowizard.jpg"


def _walk(pipe: WorldPipeline, photo, frames: int) -> tuple[list[Any], float]:
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    traj = make_preset("forward", world.cameras[0], frames + 1, up=world.up,
                       scene_depth=world.scene_depth)  # fmt: skip
    t0 = time.perf_counter()
    events = list(pipe.explore(world, traj.cameras[1:]))
    return events, time.perf_counter() - t0


def bench_painter(
    name: str,
    model: str | None,
    *,
    frames: int = 32,
    width: int = 512,
    photo: str | Path | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-frame time and peak memory of painter ``name`` on a ``frames``-frame forward walk."""
    from studio.backends import build_synthesis

    image = load_photo(photo or PHOTO)
    notes: list[str] = []
    t0 = time.perf_counter()
    backend = build_synthesis(name, model, notes, **(options or {}))
    load_s = time.perf_counter() - t0
    chunks: list[tuple[int, float]] = []
    inner = backend.synthesize

    def timed(requests):
        t = time.perf_counter()
        out = inner(requests)
        chunks.append((len(requests), time.perf_counter() - t))
        return out

    backend.synthesize = timed  # an instance attribute shadows the method
    cuda = str(getattr(backend, "device", "cpu")).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    config = PipelineConfig(width=width)
    events, wall = _walk(WorldPipeline(synthesis=backend, config=config), image, frames)
    per_frame = [s / n for n, s in chunks]
    steady = per_frame[1:] or per_frame
    report: dict[str, Any] = {
        "machine": machine_info(),
        "painter": getattr(backend, "info", {"backend": name, "model": model}),
        "frames": len(events),
        "size": [events[0].rgb.shape[1], events[0].rgb.shape[0]],
        "load_s": load_s,
        "chunks": len(chunks),
        "first_chunk_s_per_frame": per_frame[0],
        "painter_s_per_frame": statistics.median(steady),
        "loop_s_per_frame": wall / len(events),
        "device": "cuda" if cuda else "cpu",
        "notes": notes,
    }
    if cuda:
        report["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 2**30
        report["peak_vram_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    plan = getattr(backend, "plan", None)
    if plan is not None:
        report["plan"] = plan.as_dict()
        report["plan_s_per_frame"] = plan.seconds_per_chunk / backend.chunk_size
    baseline, base_wall = _walk(WorldPipeline(config=config), image, frames)
    report["reproject_s_per_frame"] = base_wall / len(baseline)
    report["ratio_vs_reproject"] = report["loop_s_per_frame"] / report["reproject_s_per_frame"]
    return report


def format_painter_report(r: dict[str, Any]) -> str:
    p = r["painter"]
    lines = [
        f"painter {p.get('backend')} ({p.get('model')}), {r['frames']} frames at "
        f"{r['size'][0]}x{r['size'][1]} on {r['device']}, {r['chunks']} chunks"
        + (f", {p.get('steps')} steps" if "steps" in p else ""),
        f"{'metric':44s} {'value':>12s}",
        f"{'load (s)':44s} {r['load_s']:12.2f}",
        f"{'first chunk (s per frame)':44s} {r['first_chunk_s_per_frame']:12.3f}",
        f"{'painter, median later chunks (s per frame)':44s} {r['painter_s_per_frame']:12.3f}",
        f"{'whole loop (s per frame)':44s} {r['loop_s_per_frame']:12.3f}",
        f"{'reproject, same walk (s per frame)':44s} {r['reproject_s_per_frame']:12.4f}",
        f"{'ratio to reproject':44s} {r['ratio_vs_reproject']:12.1f}",
    ]
    if "peak_vram_gb" in r:
        lines.append(f"{'peak VRAM allocated (GiB)':44s} {r['peak_vram_gb']:12.2f}")
    lines.append(f"{'peak RSS of this process (MB)':44s} {r['peak_rss_mb']:12.0f}")
    if "plan" in r:
        lines.append(
            f"{'plan: ' + r['plan']['mode'] + ', estimated s per frame / peak GiB':44s} "
            f"{r['plan_s_per_frame']:12.3f} {r['plan']['peak_gb']:8.2f}"
        )
    if r["device"] == "cpu":
        lines.append("(CPU: a plumbing figure; the real figure needs CUDA and real weights)")
    return "\n".join(lines)


def run_painter_bench(name: str, model: str | None, out: str | None = None, **kw: Any) -> dict:
    """Run :func:`bench_painter`, print the table, optionally write the JSON report."""
    import json

    print(f"bench: painter {name} ...", file=sys.stderr, flush=True)
    report = bench_painter(name, model, **kw)
    print(format_painter_report(report))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, default=str))
    return report


def painter_plans(budget_gb: float = 24.0, steps: int = 30) -> list[dict[str, Any]]:
    """The VRAM planner's estimates for the published Wan models (from their configs, no
    weights), for a default chunk (1 context + 16 targets) of a 4:3 world at each model's
    trained area, and for the issue's 832x480 reference size."""
    from models.manager import ModelError
    from models.synthesis import vram
    from models.synthesis.wan import TRAINED_AREA, run_size, wan_frames
    from models.synthesis.wan_i2v import TI2V_AREA

    rows = []
    for model_id in vram.PUBLISHED:
        spec = vram.published_spec(model_id)
        vace = "VACE" in model_id
        area = TI2V_AREA if spec.per_token_timesteps else TRAINED_AREA
        for size in (run_size(4, 3, spec.multiple, area), (832, 480)):
            work = vram.Workload(*size, wan_frames(17), int(vace), steps, True, 2 if vace else 1)
            row = {"model": model_id, "size": f"{size[0]}x{size[1]}", "frames": work.frames,
                   "steps": steps, "budget_gb": budget_gb}  # fmt: skip
            try:
                p = vram.plan(spec, work, device="cuda", budget_gb=budget_gb)
                row.update(p.as_dict(), s_per_frame=round(p.seconds_per_chunk / 16, 2))
            except ModelError as e:
                row.update(mode="does not fit", error=str(e))
            rows.append(row)
    return rows
