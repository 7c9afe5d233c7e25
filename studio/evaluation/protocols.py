"""``loci eval``: the evaluation protocols, on real data, each writing a JSON report and plots.

* ``posed``: seed with frame 0 of a posed sequence (photo + its depth file when there is one),
  generate at the real poses of the other frames, compare with the real frames (PSNR/SSIM over
  memory-covered pixels and the whole frame, coverage, drift against distance travelled), with
  memory and with ``--no-memory``.
* ``revisit``: loop paths on real photos (out and back, figure-eight): the returning frames
  against the first visit, with and without memory.
* ``depth``: every offline-capable depth backend on the real RGB-D frames (AbsRel, RMSE,
  delta<1.25 after median scaling, and without scaling since ``layout`` claims metric scale),
  and ``layout`` under leave-one-out against two weight-free baselines (``depth_protocol``).
* ``ablations``: retrieved views 1..5, memory insertion stride, depth alignment on/off.
* ``painter``: the exemplar painter against the smooth one (``studio.evaluation.painter``).
* ``routing``: crack pixels left in the routed regions per frame, and the look-around's return
  to the photo's pose (``studio.evaluation.routing_protocol``).

LPIPS and FID need network weights that cannot be downloaded here: pass TorchScript models with
``--lpips-model`` / ``--fid-model`` and they are computed; otherwise the report says they were
skipped and why.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.depth import create_depth_backend
from models.geometry.cameras import Camera, scale_intrinsics
from models.metrics import PerceptualMetrics, psnr, ssim
from models.paths.trajectory import make_preset
from models.paths.waypoints import from_waypoints
from models.pipeline import FrameEvent, PipelineConfig, WorldPipeline
from storage.atomic import atomic_write_json
from storage.formats.images import load_photo
from storage.formats.rgbd import load_posed_sequence
from studio.evaluation.machine import machine_info
from studio.evaluation.plots import PNG_NOTE, save_figure

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_SEQUENCE = DATA / "posed" / "tum_fr3_long_office_household"
DEFAULT_PHOTOS = (
    "interior_living_room_geowizard.jpg",
    "interior_office_03_dsine.png",
    "street_london_dav2_demo01.jpg",
)
LYRA_ANCHORS = {
    "lyra2_revisit_psnr": 14.05,
    "lyra2_revisit_ssim": 0.390,
    "lyra1_dl3dv_psnr": 20.09,
}


@dataclass
class EvalOptions:
    width: int = 512
    frames: int | None = None  # posed: frames used (None = all); revisit: frames per path
    lpips_model: str | None = None
    fid_model: str | None = None
    quick: bool = False


def _finite(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 4)


def _median(xs: Sequence[float]) -> float | None:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    return _finite(statistics.median(vals)) if vals else None


def _compare(gen: FrameEvent, ref: np.ndarray, pm: PerceptualMetrics) -> dict[str, Any]:
    mask = gen.source_mask
    return {
        "psnr_masked": _finite(psnr(gen.rgb, ref, mask)),
        "ssim_masked": _finite(ssim(gen.rgb, ref, mask)),
        "psnr_full": _finite(psnr(gen.rgb, ref)),
        "ssim_full": _finite(ssim(gen.rgb, ref)),
        "coverage": round(gen.memory_coverage, 4),
        "routed_coverage": round(gen.routed_coverage, 4),
        "lpips_full": pm.lpips_distance(gen.rgb, ref),
    }


# ---------------------------------------------------------------------------------------------
# posed sequence


def run_posed(
    seq_dir: Path,
    opts: EvalOptions,
    use_memory: bool,
    pm: PerceptualMetrics,
    config: PipelineConfig | None = None,
) -> dict[str, Any]:
    seq = load_posed_sequence(seq_dir)
    n = len(seq.frames) if opts.frames is None else min(opts.frames, len(seq.frames))
    f0 = seq.frames[0]
    photo = seq.image(0)
    if f0.depth_path is not None:
        depth = create_depth_backend("file", path=f0.depth_path, scale=f0.depth_scale)
    else:
        depth = create_depth_backend("layout")
    cfg = replace(config or PipelineConfig(), width=opts.width, use_memory=use_memory)
    pipe = WorldPipeline(depth=depth, config=cfg)
    world = pipe.seed(photo, f0.K, c2w=f0.c2w)
    cams = [
        Camera(
            scale_intrinsics(f.K, (seq.width, seq.height), (world.width, world.height)),
            f.c2w,
            world.width,
            world.height,
        )
        for f in seq.frames[1:n]
    ]
    rows, gens, reals, masks = [], [], [], []
    dist = 0.0
    prev = world.cameras[0].center
    for i, ev in enumerate(pipe.explore(world, cams), start=1):
        real = cv2.resize(seq.image(i), (world.width, world.height), interpolation=cv2.INTER_AREA)
        dist += float(np.linalg.norm(ev.camera.center - prev))
        prev = ev.camera.center
        row = {
            "index": i,
            "distance_m": round(dist, 4),
            **_compare(ev, real, pm),
            "retrieved": ev.retrieved,
            "ms": round(ev.timings["total"] * 1e3, 1),
        }
        rows.append(row)
        gens.append(ev.rgb)
        reals.append(real)
        masks.append(ev.source_mask)
    return {
        "sequence": str(seq_dir),
        "frames": n,
        "memory": use_memory,
        "depth": depth.name,
        "size": [world.width, world.height],
        "per_frame": rows,
        "median_psnr_masked": _median([r["psnr_masked"] for r in rows]),
        "median_psnr_masked_1_4": _median([r["psnr_masked"] for r in rows[:4]]),
        "median_ssim_masked": _median([r["ssim_masked"] for r in rows]),
        "median_psnr_full": _median([r["psnr_full"] for r in rows]),
        "median_coverage": _median([r["coverage"] for r in rows]),
        "fid": pm.fid_score(gens, reals),
        "_frames": (gens, reals, masks),  # for cross-run comparisons; dropped from the report
    }


def protocol_posed(out: Path, opts: EvalOptions, seq_dir: Path = DEFAULT_SEQUENCE) -> dict:
    pm = PerceptualMetrics(opts.lpips_model, opts.fid_model)
    runs = {
        "memory": run_posed(seq_dir, opts, True, pm),
        "no_memory": run_posed(seq_dir, opts, False, pm),
    }
    # Masked PSNR rewards forgetting: the ablation keeps fewer, easier pixels. On the pixels
    # both runs route from the photo, the comparison is like for like.
    g1, real, m1 = runs["memory"].pop("_frames")
    g2, _, m2 = runs["no_memory"].pop("_frames")
    for i in range(len(g1)):
        common = m1[i] & m2[i]
        runs["memory"]["per_frame"][i]["psnr_common"] = _finite(psnr(g1[i], real[i], common))
        runs["no_memory"]["per_frame"][i]["psnr_common"] = _finite(psnr(g2[i], real[i], common))
        for r in runs.values():
            r["per_frame"][i]["common_coverage"] = round(float(common.mean()), 4)
    for r in runs.values():
        r["median_psnr_common"] = _median([x["psnr_common"] for x in r["per_frame"]])
    save_figure(
        out / "posed_psnr_vs_distance",
        "Posed sequence: masked PSNR against distance",
        "distance travelled (m)",
        "PSNR over memory-covered pixels (dB)",
        {
            k: (
                [r["distance_m"] for r in v["per_frame"]],
                [r["psnr_masked"] for r in v["per_frame"]],
            )
            for k, v in runs.items()
        },
    )
    save_figure(
        out / "posed_coverage",
        "Posed sequence: memory coverage",
        "frame",
        "coverage",
        {
            k: ([r["index"] for r in v["per_frame"]], [r["coverage"] for r in v["per_frame"]])
            for k, v in runs.items()
        },
    )
    return {"protocol": "posed", "runs": runs, "notes": pm.notes}


# ---------------------------------------------------------------------------------------------
# revisit


def figure_eight(
    start: Camera, up: np.ndarray, scene_depth: float, n: int, camera_height: float = 1.6
) -> list[Camera]:
    """A figure-eight on the floor through the start position, then the first frames again.

    Returns n cameras: the eight (closing at the start pose) followed by the first few
    cameras repeated, so the end revisits the beginning.
    """
    r = 0.12 * scene_depth
    t = np.linspace(0, 2 * np.pi, 17)[:-1]
    # Lemniscate of Gerono, x = r sin(2t)/2... scaled: crosses itself at the start.
    xy = np.stack([r * np.sin(2 * t) / 2 * 2, r * np.sin(t) * 1.5], 1)
    xy = np.concatenate([xy, xy[:1]])
    repeat = max(2, n // 6)
    eight = from_waypoints(
        xy, start, up=up, camera_height=camera_height, n_frames=n - repeat, look="fixed"
    )
    cams = list(eight.cameras)
    return cams + cams[:repeat]


def run_revisit(
    photo_path: Path,
    path: str,
    opts: EvalOptions,
    use_memory: bool,
    pm: PerceptualMetrics,
    config: PipelineConfig | None = None,
) -> dict[str, Any]:
    photo = load_photo(photo_path)
    cfg = replace(config or PipelineConfig(), width=opts.width, use_memory=use_memory)
    pipe = WorldPipeline(config=cfg)
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    n = opts.frames or 24
    start = world.cameras[0]
    if path == "loop":
        cams = make_preset("loop", start, n, up=world.up, scene_depth=world.scene_depth).cameras
    else:
        cams = figure_eight(start, world.up, world.scene_depth, n)
    frames = [world.seed_event] + list(pipe.explore(world, cams[1:]))
    # Pairs (first visit, return): the earliest frame with the same pose.
    rows = []
    for j in range(1, len(frames)):
        for i in range(j):
            if np.allclose(frames[i].camera.c2w, frames[j].camera.c2w, atol=1e-9) and j - i > 2:
                rows.append({"first": i, "return": j, **_compare(frames[j], frames[i].rgb, pm)})
                break
    return {
        "photo": photo_path.name,
        "path": path,
        "memory": use_memory,
        "frames": len(frames),
        "pairs": rows,
        "median_psnr_masked": _median([r["psnr_masked"] for r in rows]),
        "median_psnr_full": _median([r["psnr_full"] for r in rows]),
        "median_ssim_full": _median([r["ssim_full"] for r in rows]),
        "median_coverage": _median([r["coverage"] for r in rows]),
        "final_psnr_full": rows[-1]["psnr_full"] if rows else None,
    }


def protocol_revisit(out: Path, opts: EvalOptions, photos: Sequence[str] = DEFAULT_PHOTOS) -> dict:
    pm = PerceptualMetrics(opts.lpips_model, opts.fid_model)
    runs = []
    for name in photos:
        p = Path(name) if Path(name).is_file() else DATA / "photos" / name
        for path in ("loop", "figure-eight"):
            for mem in (True, False):
                runs.append(run_revisit(p, path, opts, mem, pm))
    series: dict[str, tuple[list, list]] = {}
    for r in runs:
        key = f"{r['path']} {'memory' if r['memory'] else 'no memory'}"
        xs, ys = series.setdefault(key, ([], []))
        xs.append(r["photo"][:24])
        ys.append(r["median_psnr_full"])
    save_figure(
        out / "revisit_psnr",
        "Revisit: return vs first visit (full-frame PSNR)",
        "photo",
        "median PSNR (dB)",
        series,
        kind="bar",
    )
    return {"protocol": "revisit", "runs": runs, "notes": pm.notes}


# ---------------------------------------------------------------------------------------------
# depth


def protocol_depth(out: Path, opts: EvalOptions, **kwargs: Any) -> dict:
    """Depth on the real RGB-D frames, ``layout`` under leave-one-out (``depth_protocol``)."""
    from studio.evaluation.depth_protocol import protocol_depth as run

    return run(out, opts, **kwargs)


# ---------------------------------------------------------------------------------------------
# ablations


def protocol_ablations(
    out: Path,
    opts: EvalOptions,
    seq_dir: Path = DEFAULT_SEQUENCE,
    photo: str = "interior_living_room_geowizard.jpg",
) -> dict:
    pm = PerceptualMetrics(None, None)
    posed_opts = replace(opts, frames=opts.frames or 9)
    variants: list[tuple[str, str, PipelineConfig]] = []
    for k in (1, 2, 3, 4, 5):
        variants.append(("retrieved", str(k), PipelineConfig(max_retrieved=k)))
    for s in (1, 2, 4):
        variants.append(("stride", str(s), PipelineConfig(memory_stride=s)))
    for a in (True, False):
        variants.append(("align_depth", str(a), PipelineConfig(align_depth=a)))
    rows = []
    photo_path = DATA / "photos" / photo
    for factor, value, cfg in variants:
        posed = run_posed(seq_dir, posed_opts, True, pm, cfg)
        rev = run_revisit(
            photo_path, "loop", replace(opts, frames=max(8, opts.frames or 16)), True, pm, cfg
        )
        rows.append(
            {
                "factor": factor,
                "value": value,
                "posed_median_psnr_masked": posed["median_psnr_masked"],
                "posed_median_coverage": posed["median_coverage"],
                "posed_median_psnr_full": posed["median_psnr_full"],
                "revisit_median_psnr_full": rev["median_psnr_full"],
                "revisit_median_coverage": rev["median_coverage"],
            }
        )
    for factor in ("retrieved", "stride", "align_depth"):
        sel = [r for r in rows if r["factor"] == factor]
        save_figure(
            out / f"ablation_{factor}",
            f"Ablation: {factor}",
            factor,
            "dB",
            {
                "posed masked PSNR": (
                    [r["value"] for r in sel],
                    [r["posed_median_psnr_masked"] for r in sel],
                ),
                "revisit full PSNR": (
                    [r["value"] for r in sel],
                    [r["revisit_median_psnr_full"] for r in sel],
                ),
            },
        )
    return {"protocol": "ablations", "rows": rows}


def protocol_painter(out: Path, opts: EvalOptions, **kwargs: Any) -> dict:
    """The offline painter, exemplar against smooth (:mod:`studio.evaluation.painter`)."""
    from studio.evaluation.painter import protocol_painter as run

    return run(out, opts, **kwargs)


def protocol_routing(out: Path, opts: EvalOptions, **kwargs: Any) -> dict:
    """Crack pixels per frame and rotation return on outdoor walks (``routing_protocol``)."""
    from studio.evaluation.routing_protocol import protocol_routing as run

    return run(out, opts, **kwargs)


PROTOCOLS = {
    "posed": protocol_posed,
    "revisit": protocol_revisit,
    "depth": protocol_depth,
    "ablations": protocol_ablations,
    "painter": protocol_painter,
    "routing": protocol_routing,
}


def run_eval(protocol: str, out: str | Path, opts: EvalOptions, **kwargs: Any) -> dict:
    """Run one protocol (or "all"), write ``report_<protocol>.json`` and plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(PROTOCOLS) if protocol == "all" else [protocol]
    reports = {}
    PNG_NOTE.clear()
    for name in names:
        print(f"eval: {name} ...", file=sys.stderr, flush=True)
        report = PROTOCOLS[name](out, opts, **kwargs)
        report["machine"] = machine_info()
        report["options"] = {k: v for k, v in vars(opts).items()}
        report["anchors"] = LYRA_ANCHORS
        report["notes"] = report.get("notes", []) + list(PNG_NOTE)
        atomic_write_json(out / f"report_{name}.json", report)
        reports[name] = report
    return reports


def summarise(reports: dict[str, dict]) -> str:
    """A few lines a person reads: the headline figures of each report."""
    lines = []
    if "posed" in reports:
        for k, r in reports["posed"]["runs"].items():
            per = " ".join(f"{x['psnr_masked']}" for x in r["per_frame"][:8])
            lines.append(
                f"posed {k:9s}: masked PSNR frames 1..: {per} | median "
                f"{r['median_psnr_masked']} dB, coverage {r['median_coverage']}, "
                f"on common pixels {r['median_psnr_common']} dB, full frame "
                f"{r['median_psnr_full']} dB"
            )
    if "routing" in reports:
        from studio.evaluation.routing_protocol import summary_lines

        lines += summary_lines(reports["routing"])
    if "revisit" in reports:
        for r in reports["revisit"]["runs"]:
            lines.append(
                f"revisit {r['photo'][:28]:28s} {r['path']:12s} "
                f"{'memory' if r['memory'] else 'no-mem':6s}: full PSNR "
                f"{r['median_psnr_full']} masked {r['median_psnr_masked']} SSIM "
                f"{r['median_ssim_full']} cov {r['median_coverage']}"
            )
    if "depth" in reports:
        from studio.evaluation.depth_protocol import summary_lines as depth_lines

        lines.extend(depth_lines(reports["depth"]))
    if "painter" in reports:
        from studio.evaluation.painter import summary_lines as painter_lines

        lines.extend(painter_lines(reports["painter"]))
    if "ablations" in reports:
        for r in reports["ablations"]["rows"]:
            lines.append(
                f"ablation {r['factor']}={r['value']}: posed masked "
                f"{r['posed_median_psnr_masked']} cov {r['posed_median_coverage']} | "
                f"revisit full {r['revisit_median_psnr_full']}"
            )
    return "\n".join(lines)
