"""``loci eval lift DIR``: do the world's splats and mesh reproduce its own frames?

Renders the bundle's Gaussian splats (``splats.ply``, lifted on the fly when missing) with the
CPU splat renderer, and its TSDF mesh (``mesh.ply``, lifted on the fly when missing) with the
CPU mesh rasteriser, at every bundle camera, and compares each with the generated frame. Splats:
PSNR and SSIM over the whole frame (sky included: a pixel nothing covers is black, and counts).
Mesh: the surface mesh together with its backdrop part (``backdrop.ply``: sky and far shell),
PSNR and SSIM over the frame's surfaces (nearer than the backdrop) as before, the share of those
surfaces it covers (holes show there), and PSNR over the whole frame (sky included). Writes ``report_lift.json`` and a
contact sheet ``lift_sheet.png`` (generated frame, splats, mesh, for six frames spread over the
path).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.lift.mesh_render import render_mesh
from models.lift.splat_render import render_gaussians
from models.lift.splats import Gaussians
from models.metrics import psnr, ssim
from storage.atomic import atomic_write_json, save_png_atomic
from storage.formats.bundle import read_bundle
from studio.evaluation.machine import machine_info
from studio.exports.lift import FAR_FACTOR, _load_backdrop, _load_mesh, _load_splats, scene_depth

SHEET_FRAMES = 6


def _load(bundle_dir: Path, mesh: bool) -> tuple[Gaussians, tuple | None, str]:

    bundle = read_bundle(bundle_dir)
    source = "bundle" if (bundle.root / "splats.ply").is_file() else "lifted now"
    means, quats, log_scales, opacity_logits, sh0, sh_rest = _load_splats(bundle)
    g = Gaussians(means, quats, log_scales, opacity_logits, sh0, sh_rest)
    return g, (_mesh_with_backdrop(bundle) if mesh else None), source


def _mesh_with_backdrop(bundle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface mesh and backdrop shell as one vertex-coloured mesh (what a viewer shows)."""
    v, f, c = _load_mesh(bundle)
    back = _load_backdrop(bundle)
    if back is None:
        return v, f, c
    return (
        np.concatenate([v, back[0]]),
        np.concatenate([f, back[1] + len(v)]),
        np.concatenate([c, back[2]]),
    )


def _finite(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def evaluate_lift(
    bundle_dir: str | Path, out: str | Path | None = None, mesh: bool = True
) -> dict[str, Any]:
    """Render splats (and the mesh) at every camera of the bundle; write the report and sheet.

    Returns the report: per frame ``splat_psnr``, ``splat_ssim``, ``splat_coverage`` (and the
    ``mesh_`` equivalents), their medians and minima, splat count and timings.
    """
    bundle_dir = Path(bundle_dir)
    out = Path(out) if out is not None else bundle_dir / "eval_lift"
    out.mkdir(parents=True, exist_ok=True)
    bundle = read_bundle(bundle_dir)
    t0 = time.perf_counter()
    g, m, source = _load(bundle_dir, mesh)
    t_load = time.perf_counter() - t0
    W, H = bundle.width, bundle.height
    far = FAR_FACTOR * scene_depth(bundle)  # the lift's backdrop threshold
    rows, renders = [], {}
    for i in bundle.indices:
        ref = bundle.frame_rgb(i)
        K, c2w = bundle.K(i), bundle.c2w(i)
        t = time.perf_counter()
        s = render_gaussians(g, c2w, K, W, H)
        row: dict[str, Any] = {
            "index": i,
            "splat_psnr": _finite(psnr(s["rgb"], ref)),
            "splat_ssim": _finite(ssim(s["rgb"], ref)),
            "splat_coverage": round(float((s["alpha"] > 0.5).mean()), 4),
            "splat_seconds": round(time.perf_counter() - t, 3),
        }
        images = [ref, s["rgb"]]
        if m is not None:
            r = render_mesh(*m, c2w, K, W, H)
            # Judged on the frame's surfaces (nearer than the backdrop: what the TSDF fuses) and
            # how much of them it covers, and over the whole frame with the backdrop part.
            surf = bundle.frame_depth(i) < far
            row.update(
                mesh_psnr=_finite(psnr(r["rgb"], ref, surf)),
                mesh_ssim=_finite(ssim(r["rgb"], ref, surf)),
                mesh_coverage=round(float(r["mask"][surf].mean()) if surf.any() else 0.0, 4),
                mesh_full_psnr=_finite(psnr(r["rgb"], ref)),
                mesh_full_coverage=round(float(r["mask"].mean()), 4),
            )
            images.append(r["rgb"])
        rows.append(row)
        renders[i] = images
    report: dict[str, Any] = {
        "protocol": "lift",
        "bundle": str(bundle_dir),
        "splats": {"count": len(g), "source": source, "load_seconds": round(t_load, 3)},
        "frames": len(rows),
        "per_frame": rows,
    }
    for kind in ("splat", "mesh", "mesh_full") if m is not None else ("splat",):
        vals = [r[f"{kind}_psnr"] for r in rows if r[f"{kind}_psnr"] is not None]
        ssims = [r[f"{kind}_ssim"] for r in rows if r.get(f"{kind}_ssim") is not None]
        report[f"median_{kind}_psnr"] = _finite(statistics.median(vals)) if vals else None
        report[f"min_{kind}_psnr"] = _finite(min(vals)) if vals else None
        if kind != "mesh_full":
            report[f"median_{kind}_ssim"] = _finite(statistics.median(ssims)) if ssims else None
    report["machine"] = machine_info()
    pick = np.unique(np.round(np.linspace(0, len(rows) - 1, SHEET_FRAMES)).astype(int))
    sheet_rows = []
    for k in pick:
        i = rows[k]["index"]
        tiles = [_label(im, txt) for im, txt in zip(renders[i], _titles(rows[k]), strict=False)]
        sheet_rows.append(np.concatenate(tiles, 1))
    save_png_atomic(out / "lift_sheet.png", np.concatenate(sheet_rows, 0))
    report["sheet"] = "lift_sheet.png"
    atomic_write_json(out / "report_lift.json", report)
    return report


def _titles(row: dict[str, Any]) -> list[str]:
    t = [f"frame {row['index']}", f"splats {row['splat_psnr']} dB"]
    if "mesh_psnr" in row:
        t.append(f"mesh {row['mesh_psnr']} dB")
    return t


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(img.copy())
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def summary_line(report: dict[str, Any]) -> str:
    s = (
        f"lift {report['bundle']}: {report['frames']} frames, {report['splats']['count']} "
        f"splats: PSNR median {report['median_splat_psnr']} dB, min {report['min_splat_psnr']}"
    )
    if "median_mesh_psnr" in report:
        s += (
            f" | mesh on surfaces median {report['median_mesh_psnr']} dB, min "
            f"{report['min_mesh_psnr']}; whole frame with backdrop median "
            f"{report['median_mesh_full_psnr']} dB, min {report['min_mesh_full_psnr']}"
        )
    return s


def main_json(report: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in report.items() if k != "per_frame"}, indent=1)
