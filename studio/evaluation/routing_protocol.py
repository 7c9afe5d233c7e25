"""``loci eval routing``: cracks left in the routed regions, and pure rotations returning exactly.

For each photo, a ``forward`` walk and a ``look-around`` (turn right, left, back to the photo's
pose) with the default offline pipeline (``layout`` depth, the ``reproject`` painter). Per
frame it counts the **crack pixels** of the routed mask (what the correspondence handed the
painter as seen), as :func:`models.geometry.cracks.crack_pixels` defines them: unrouted pixels
on a run of at most ``w`` unrouted pixels along a row, a column or a diagonal with routed pixels
at both ends; ``w`` = 1 (``cracks_1px``: the 8-neighbourhood is routed on opposite sides) and
``w`` = 3 (``cracks_3px``: holes up to 3 px across). The look-around's last frame is compared
with the photo (``return_psnr``: a pure rotation back to the start must give the photo back).
Writes ``report_routing.json`` and ``routing_sheet.png`` (each walk's frame with the most 1-px
cracks, painted pixels tinted blue and cracks red, with a 4x crop around the densest ones).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from models.geometry.cracks import crack_pixels
from models.metrics import psnr
from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from models.synthesis.base import SynthesisRequest, SynthesisResult
from storage.atomic import save_png_atomic
from storage.formats.images import load_photo

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # as in ``protocols``
ROUTING_PHOTOS = (
    "street_london_dav2_demo01.jpg",
    "building_colosseum_unsplash_david-kohler.jpg",
    "building_facade_lightglue_DSC_0410.jpg",
    "landscape_sunflower_field_dav2_demo02.jpg",
)
ROUTING_PATHS = ("forward", "look-around")


class _Recorder:
    """A synthesis backend that passes through to ``inner`` and keeps each request's routed
    mask (what the correspondence handed the painter as seen)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.chunk_size = inner.chunk_size
        self.routed: list[np.ndarray] = []

    def synthesize(self, requests: list[SynthesisRequest]) -> list[SynthesisResult]:
        self.routed += [r.valid.numpy().copy() for r in requests]
        return self.inner.synthesize(requests)


def crack_counts(routed: np.ndarray) -> dict[str, int]:
    """Crack pixels of a routed mask (H, W) bool: 1-px and up to 3-px wide."""
    valid = torch.from_numpy(np.asarray(routed, bool))
    return {
        "cracks_1px": int(crack_pixels(valid, 1).sum()),
        "cracks_3px": int(crack_pixels(valid, 3).sum()),
    }


def crack_overlay(rgb: np.ndarray, routed: np.ndarray, scale: int = 4) -> np.ndarray:
    """(H, 2W, 3) uint8: the frame with painted pixels tinted blue and 1-px cracks red, beside a
    ``scale`` x nearest-neighbour crop around the densest cracks (the crop at the same size)."""
    vis = rgb.copy()
    painted = ~routed
    vis[painted] = (vis[painted] * 0.5 + np.array([0, 0, 120])).astype(np.uint8)
    cracks = crack_pixels(torch.from_numpy(routed), 1).numpy()
    vis[cracks] = (255, 0, 0)
    H, W = routed.shape
    h, w = max(1, H // scale), max(1, W // scale)
    density = cv2.blur(cracks.astype(np.float32), (w, h))
    cy, cx = np.unravel_index(int(density.argmax()), density.shape)
    y0, x0 = int(np.clip(cy - h // 2, 0, H - h)), int(np.clip(cx - w // 2, 0, W - w))
    crop = cv2.resize(vis[y0 : y0 + h, x0 : x0 + w], (W, H), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([vis, crop], 1)


def run_routing(photo_path: Path, path: str, width: int, frames: int) -> dict[str, Any]:
    """One walk: per-frame crack counts and painted share; ``return_psnr`` for look-arounds."""
    photo = load_photo(photo_path)
    pipe = WorldPipeline(config=replace(PipelineConfig(), width=width))
    rec = _Recorder(pipe.synthesis)
    pipe.synthesis = rec
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    cams = make_preset(path, world.cameras[0], frames, up=world.up, scene_depth=world.scene_depth)
    events = [world.seed_event] + list(pipe.explore(world, cams.cameras[1:]))
    rows = []
    for ev, routed in zip(events[1:], rec.routed, strict=True):
        rows.append(
            {
                "index": ev.index,
                **crack_counts(routed),
                "painted": round(float((~routed).mean()), 5),
                "correspond_ms": round(ev.timings["correspond"] * 1e3, 1),
            }
        )
    c1 = [r["cracks_1px"] for r in rows] or [0]
    c3 = [r["cracks_3px"] for r in rows] or [0]
    report: dict[str, Any] = {
        "photo": photo_path.name,
        "path": path,
        "frames": len(events),
        "size": [world.width, world.height],
        "per_frame": rows,
        "cracks_1px_median": statistics.median(c1),
        "cracks_1px_max": max(c1),
        "cracks_3px_median": statistics.median(c3),
        "cracks_3px_max": max(c3),
    }
    if path == "look-around" and np.allclose(events[-1].camera.c2w, events[0].camera.c2w):
        p = psnr(events[-1].rgb, events[0].rgb)
        report["return_psnr"] = None if not np.isfinite(p) else round(float(p), 3)
        report["return_exact"] = bool(np.array_equal(events[-1].rgb, events[0].rgb))
    worst = int(np.argmax(c1)) if rows else 0
    if rows:
        report["_sheet"] = crack_overlay(events[worst + 1].rgb, rec.routed[worst])
    return report


def protocol_routing(out: Path, opts: Any, photos: Sequence[str] = ROUTING_PHOTOS) -> dict:
    """Every photo, forward and look-around: crack counts per frame and rotation return."""
    runs, sheets = [], []
    n = opts.frames or 24
    for name in photos:
        p = Path(name) if Path(name).is_file() else DATA / "photos" / name
        for path in ROUTING_PATHS:
            r = run_routing(p, path, opts.width, n)
            sheet = r.pop("_sheet", None)
            if sheet is not None:
                label = f"{p.name[:40]} {path}: frame with most 1-px cracks"
                sheet = sheet.copy()
                cv2.putText(sheet, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0))
                sheets.append(sheet)
            runs.append(r)
    if sheets:
        w = max(s.shape[1] for s in sheets)
        padded = [np.pad(s, ((0, 4), (0, w - s.shape[1]), (0, 0))) for s in sheets]
        save_png_atomic(out / "routing_sheet.png", np.concatenate(padded, 0))
    return {
        "protocol": "routing",
        "definition": (
            "crack pixel: an unrouted pixel on a run of at most w unrouted pixels along a row, "
            "column or diagonal with routed pixels at both ends (w=1: routed on opposite sides "
            "of its 8-neighbourhood); counted on the routed mask the painter receives"
        ),
        "runs": runs,
    }


def summary_lines(report: dict) -> list[str]:
    """One line per walk for ``loci eval`` output."""
    lines = []
    for r in report["runs"]:
        ret = ""
        if "return_psnr" in r:
            exact = r["return_psnr"] is None
            ret = " return to the photo: " + ("exact" if exact else f"{r['return_psnr']} dB")
        lines.append(
            f"routing {r['photo'][:28]:28s} {r['path']:12s} cracks 1px median "
            f"{r['cracks_1px_median']} max {r['cracks_1px_max']}, <=3px median "
            f"{r['cracks_3px_median']} max {r['cracks_3px_max']}{ret}"
        )
    return lines
