"""``loci eval depth``: depth backends on real RGB-D frames, and ``layout`` under leave-one-out.

Every offline-capable backend is scored on the shared RGB-D frames (NYU, KITTI, TUM frame 0,
SUN3D): AbsRel, RMSE and delta<1.25 after median scaling, and as estimated (``layout`` claims
metric scale). Two weight-free baselines are scored alongside on the same pixels: a constant
depth and a level ground plane with the horizon at the image centre.

``layout`` has a few free settings (how clearly floor-like the floor must look, the indoor far
limit). Figures tuned on the frames they are reported on do not carry over to unseen data, so
the headline is **leave-one-out**: for each frame, the setting with the best mean score on the
*other* frames is chosen, and only the held-out frame's numbers enter the report. The score of
a setting is ``AbsRel - delta1`` (lower is better), averaged over frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.depth import create_depth_backend
from models.depth.layout import LayoutDepth, ground_plane_depth
from models.metrics.depth import depth_metrics
from storage.formats.rgbd import RGBDFrame, load_rgbd_benchmark
from studio.evaluation.plots import save_figure

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# The free settings of ``layout`` searched under leave-one-out (defaults are in the grid).
LAYOUT_GRID: dict[str, Sequence[Any]] = {
    "floor_bias": (0.1, 0.2, 0.3),
    "max_depth_indoor": (4.0, 6.0, 8.0),  # leave-one-out chose 4 on every fold: the default
    "max_depth_outdoor": (25.0, 50.0),
}
KEYS = ("abs_rel", "rmse", "delta1")


def _scores(pred: np.ndarray, f: RGBDFrame) -> dict[str, dict[str, float]]:
    scaled = depth_metrics(pred, f.depth, median_scale=True)
    raw = depth_metrics(pred, f.depth, median_scale=False)
    return {
        "median_scaled": {k: round(scaled[k], 4) for k in KEYS},
        "metric": {k: round(raw[k], 4) for k in KEYS},
    }


def baselines(f: RGBDFrame) -> dict[str, dict[str, float]]:
    """Median-scaled AbsRel/RMSE/delta1 of a constant depth and of a level ground plane."""
    H, W = f.depth.shape
    return {
        "constant": _scores(np.ones((H, W), np.float32), f)["median_scaled"],
        "plane": _scores(ground_plane_depth(W, H, f.K), f)["median_scaled"],
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in KEYS}


def leave_one_out(
    frames: Sequence[RGBDFrame], grid: dict[str, Sequence[Any]] | None = None
) -> dict[str, Any]:
    """Leave-one-out evaluation of ``layout`` over ``frames`` (see the module docstring).

    Returns per held-out frame the chosen setting and its scores (median-scaled and metric),
    their means, the baselines' means, and every setting's in-sample mean for reference.
    """
    grid = LAYOUT_GRID if grid is None else grid
    names = list(grid)
    settings = [dict(zip(names, vals, strict=True)) for vals in itertools.product(*grid.values())]
    table = []  # table[s][i]: scores of setting s on frame i
    for opts in settings:
        be = LayoutDepth(**opts)
        table.append([_scores(be.estimate(f.rgb, f.K).depth, f) for f in frames])

    def score(s: int, i: int) -> float:
        m = table[s][i]["median_scaled"]
        return m["abs_rel"] - m["delta1"]

    rows = []
    for i, f in enumerate(frames):
        others = [j for j in range(len(frames)) if j != i]
        best = min(range(len(settings)), key=lambda s: (np.mean([score(s, j) for j in others]), s))
        rows.append({"frame": f.name, "setting": settings[best], **table[best][i], **baselines(f)})
    held_out = {
        kind: _mean([r[kind] for r in rows])
        for kind in ("median_scaled", "metric", "constant", "plane")
    }
    in_sample = [
        {"setting": opts, "median_scaled": _mean([t["median_scaled"] for t in table[s]])}
        for s, opts in enumerate(settings)
    ]
    beats = all(
        held_out["median_scaled"]["abs_rel"] < held_out[b]["abs_rel"]
        and held_out["median_scaled"]["delta1"] > held_out[b]["delta1"]
        for b in ("constant", "plane")
    )
    return {
        "per_frame": rows,
        "held_out_mean": held_out,
        "beats_both_baselines": beats,
        "in_sample": in_sample,
        "grid": {k: list(v) for k, v in grid.items()},
    }


def protocol_depth(
    out: Path,
    opts: Any,
    rgbd_root: Path | None = None,
    backends: Sequence[str] = ("layout",),
) -> dict[str, Any]:
    """Every backend in ``backends`` with its defaults on the RGB-D frames, plus leave-one-out
    for ``layout``; writes a bar plot of held-out AbsRel per frame against the baselines."""
    frames = load_rgbd_benchmark(rgbd_root or DATA / "rgbd")
    results: dict[str, Any] = {}
    for name in backends:
        backend = create_depth_backend(name)
        rows = [{"frame": f.name, **_scores(backend.estimate(f.rgb, f.K).depth, f)} for f in frames]
        results[name] = {
            "per_frame": rows,
            "mean": {kind: _mean([r[kind] for r in rows]) for kind in ("median_scaled", "metric")},
        }
    loo = leave_one_out(frames)
    series = {
        "layout (held out)": [r["median_scaled"]["abs_rel"] for r in loo["per_frame"]],
        "ground plane": [r["plane"]["abs_rel"] for r in loo["per_frame"]],
        "constant": [r["constant"]["abs_rel"] for r in loo["per_frame"]],
    }
    names = [r["frame"] for r in loo["per_frame"]]
    save_figure(
        out / "depth_absrel",
        "Depth: AbsRel per frame (median-scaled), layout held out",
        "frame",
        "AbsRel",
        {k: (names, v) for k, v in series.items()},
        kind="bar",
    )
    return {
        "protocol": "depth",
        "frames": len(frames),
        "backends": results,
        "layout_leave_one_out": loo,
        "notes": [
            "layout_leave_one_out: each frame scored with the setting chosen on the other "
            f"{len(frames) - 1} frames; baselines are weight-free (constant, level ground plane)",
            "depth-anything-v2 and other weight-backed backends need weights; run them where "
            "weights exist",
        ],
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Headline lines of a depth report."""
    lines = [
        f"depth {n}: median-scaled {v['mean']['median_scaled']}, metric {v['mean']['metric']}"
        for n, v in report["backends"].items()
    ]
    loo = report.get("layout_leave_one_out")
    if loo:
        m = loo["held_out_mean"]
        lines.append(
            "depth layout leave-one-out (held out): "
            f"AbsRel {m['median_scaled']['abs_rel']} delta1 {m['median_scaled']['delta1']} | "
            f"plane {m['plane']['abs_rel']} / {m['plane']['delta1']} | constant "
            f"{m['constant']['abs_rel']} / {m['constant']['delta1']} | metric AbsRel "
            f"{m['metric']['abs_rel']} | beats both: {loo['beats_both_baselines']}"
        )
    return lines
