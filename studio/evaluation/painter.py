"""``loci eval painter``: does the offline painter paint texture, and does texture cost fidelity?

Three protocols on real data, each comparing the exemplar painter with the earlier smooth
(push-pull + Telea) painter **in the same run**:

* ``tum``: seed with TUM frame 0 and its sensor depth, generate at the real poses of frames
  1..16, and compare with the real frames: full-frame PSNR (also of a 1-pixel forward splat of
  frame 0 + OpenCV Telea inpainting, the naive baseline), the sliced Wasserstein distance of
  7x7 patch distributions (Laplacian bands) between the painted pixels and the real frame's
  same pixels (:func:`models.metrics.texture.masked_swd`, on the pixels both painters painted),
  and the gradient-energy ratio painted/seen.
* ``walks``: 48-frame walks (forward, and a look-around turning to +-40 degrees) on every
  shared photo: painted-vs-seen patch distance and gradient-energy ratio of each frame (no
  ground truth), both against all seen pixels and against the seen pixels beside the paint on
  its depth layer (:func:`models.metrics.texture.background_ring`: a forward walk magnifies
  the near walls that dominate the frame far more than the far layer a disocclusion reveals),
  painting time, frames per second.
* ``turns``: held-out pixels of the photos themselves. Each photo is cropped to 60 % of its
  width; the world is seeded from the crop and the camera turned towards the cropped-off part
  by 10, 20, 30 degrees. A turn in place is a homography, so the full photo is the exact ground
  truth wherever the turned view falls inside it: PSNR and patch distance of the painted pixels
  against it (and of Telea inpainting of the same routed frame).

A contact sheet (``painter_contact_sheet.png``) shows before/after frames for three photos.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.depth import create_depth_backend
from models.geometry.cameras import Camera, intrinsics_from_fov, scale_intrinsics
from models.metrics import psnr
from models.metrics.texture import (
    background_ring,
    gradient_energy,
    gradient_energy_ratio,
    masked_swd,
)
from models.paths.trajectory import make_preset, yaw_right
from models.pipeline import FrameEvent, PipelineConfig, WorldPipeline
from models.synthesis.reproject import ReprojectSynthesis
from storage.formats.images import load_photo
from storage.formats.rgbd import load_posed_sequence, read_depth_png
from studio.evaluation.bench import naive_splat

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_SEQUENCE = DATA / "posed" / "tum_fr3_long_office_household"
PAINTERS = ("exemplar", "smooth")
# Photos whose licences allow showing derived frames (Unsplash License; CC BY 4.0 stated).
SHEET_PHOTOS = (
    "interior_living_room_geowizard.jpg",
    "interior_library_living_room_unsplash_jonathan-borba.jpg",
    "building_colosseum_unsplash_david-kohler.jpg",
)


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _med(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and np.isfinite(x)]
    return _r(statistics.median(vals)) if vals else None


class _Recorder(ReprojectSynthesis):
    """The ``reproject`` backend, remembering which pixels it routed in each frame (the rest
    it painted just now: its own work, as opposed to earlier paint routed since)."""

    def __init__(self, painter: str) -> None:
        super().__init__(painter)
        self.routed: dict[int, np.ndarray] = {}

    def synthesize(self, requests):
        results = super().synthesize(requests)
        for req, res in zip(requests, results, strict=True):
            self.routed[req.index] = res.source_mask.numpy()
        return results


def _pipeline(painter: str, depth=None, width: int = 512) -> WorldPipeline:
    return WorldPipeline(
        depth=depth, synthesis=_Recorder(painter), config=PipelineConfig(width=width)
    )


def _fresh(pipe: WorldPipeline, ev: FrameEvent) -> np.ndarray:
    """(H, W) bool: the pixels painted in this very frame."""
    return ~pipe.synthesis.routed[ev.index]


def energy_vs_truth(img: np.ndarray, real: np.ndarray, mask: np.ndarray) -> float:
    """Gradient energy of ``img`` over that of the aligned ground truth ``real``, both on the
    pixels of ``mask`` (H, W) bool: 1 is the truth's texture strength, near 0 a smear, above 1
    more detail (or noise) than the truth; nan where the truth is flat or the mask empty."""
    e_real = gradient_energy(real, mask)
    if not np.isfinite(e_real) or e_real <= 0:
        return float("nan")
    return gradient_energy(img, mask) / e_real


def splat_telea(rgb0: np.ndarray, d0: np.ndarray, cam0: Camera, cam: Camera) -> np.ndarray:
    """The naive baseline: frame 0 splatted 1 pixel per pixel into ``cam``, holes filled by
    OpenCV Telea inpainting (radius 3) at full size. (H, W, 3) uint8."""
    col, z = naive_splat(rgb0, d0, cam0.K, cam0.c2w, cam.K, cam.c2w, cam.width, cam.height)
    return cv2.inpaint(col, (z <= 0).astype(np.uint8), 3, cv2.INPAINT_TELEA)


# ---------------------------------------------------------------------------------------------
# TUM: real poses, real frames


def tum_painters(seq_dir: Path, width: int = 512, frames: int | None = None) -> dict[str, Any]:
    seq = load_posed_sequence(seq_dir)
    n = len(seq.frames) if frames is None else min(frames + 1, len(seq.frames))
    f0 = seq.frames[0]
    runs: dict[str, list[FrameEvent]] = {}
    pipes: dict[str, WorldPipeline] = {}
    for painter in PAINTERS:
        depth = create_depth_backend("file", path=f0.depth_path, scale=f0.depth_scale)
        pipe = pipes[painter] = _pipeline(painter, depth, width)
        world = pipe.seed(seq.image(0), f0.K, c2w=f0.c2w)
        W, H = world.width, world.height
        cams = [
            Camera(scale_intrinsics(f.K, (seq.width, seq.height), (W, H)), f.c2w, W, H)
            for f in seq.frames[1:n]
        ]
        runs[painter] = list(pipe.explore(world, cams))
    cam0 = world.cameras[0]
    rgb0 = world.seed_event.rgb
    d0 = cv2.resize(
        read_depth_png(f0.depth_path, f0.depth_scale), (W, H), interpolation=cv2.INTER_NEAREST
    )
    rows = []
    for i in range(1, n):
        real = cv2.resize(seq.image(i), (W, H), interpolation=cv2.INTER_AREA)
        new, old = runs["exemplar"][i - 1], runs["smooth"][i - 1]
        base = splat_telea(rgb0, d0, cam0, new.camera)
        common = ~new.source_mask & ~old.source_mask
        row: dict[str, Any] = {"index": i, "painted_common": _r(common.mean())}
        for name, img in (("exemplar", new.rgb), ("smooth", old.rgb), ("splat_telea", base)):
            row[f"psnr_full_{name}"] = _r(psnr(img, real))
            row[f"swd_{name}"] = _r(masked_swd(img, real, common)["swd"])
        for name, ev in (("exemplar", new), ("smooth", old)):
            seen = ev.source_mask
            row[f"grad_ratio_{name}"] = _r(gradient_energy_ratio(ev.rgb, ~seen, seen))
            fresh = _fresh(pipes[name], ev)
            row[f"grad_ratio_fresh_{name}"] = _r(gradient_energy_ratio(ev.rgb, fresh, seen))
            # Against the real frame's same pixels (the issue's "compare the painted pixels
            # with the real frames' same pixels"): the ratio above divides by the routed seen
            # pixels, whose energy on TUM is inflated by routing speckle (sensor-depth noise,
            # magnified frame 0), measured here as seen_energy_vs_truth.
            row[f"grad_vs_truth_{name}"] = _r(energy_vs_truth(ev.rgb, real, ~seen))
            row[f"grad_vs_truth_fresh_{name}"] = _r(energy_vs_truth(ev.rgb, real, fresh))
            row[f"seen_energy_vs_truth_{name}"] = _r(energy_vs_truth(ev.rgb, real, seen))
            row[f"painted_{name}"] = _r(1 - ev.memory_coverage)
            row[f"synth_ms_{name}"] = _r(ev.timings["synthesize"] * 1e3, 1)
        row["grad_ratio_real"] = _r(gradient_energy_ratio(real, common, new.source_mask))
        rows.append(row)
    keys = [k for k in rows[0] if k != "index"]
    summary = {k: _med([r[k] for r in rows]) for k in keys}
    summary["exemplar_beats_splat_telea_psnr"] = sum(
        r["psnr_full_exemplar"] > r["psnr_full_splat_telea"] for r in rows
    )
    summary["exemplar_beats_smooth_swd"] = sum(
        r["swd_exemplar"] is not None
        and r["swd_smooth"] is not None
        and r["swd_exemplar"] < r["swd_smooth"]
        for r in rows
    )
    summary["frames"] = len(rows)
    report = {"sequence": str(seq_dir), "size": [W, H], "per_frame": rows, "median": summary}
    if len(rows) > 8:
        # The composite's coherence pass and the sensor-depth filter were tuned on frames 1..8
        # (9..16 held out); the routed pixels' reliability rule on 1..12 (13..16 held out).
        # Report both splits, besides the 1..16.
        splits = (("1_8", 0, 8), ("9_16", 8, 16), ("1_12", 0, 12), ("13_16", 12, 16))
        for name, a, b in splits:
            if len(rows) > a:
                report[f"median_{name}"] = {k: _med([r[k] for r in rows[a:b]]) for k in keys}
    return report


# ---------------------------------------------------------------------------------------------
# Walks on the shared photos (no ground truth)


def photo_walk(photo_path: Path, path: str, frames: int, width: int = 512) -> dict[str, Any]:
    """One photo, one path, both painters: per-painter medians, and the frames themselves."""
    photo = load_photo(photo_path)
    out: dict[str, Any] = {"photo": photo_path.name, "path": path, "frames": frames}
    for painter in PAINTERS:
        pipe = _pipeline(painter, None, width)
        world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
        cams = make_preset(
            path, world.cameras[0], frames + 1, up=world.up, scene_depth=world.scene_depth
        ).cameras[1:]
        t = time.perf_counter()
        events = list(pipe.explore(world, cams))
        wall = time.perf_counter() - t
        swd, ratio, fresh_ratio, swd_ring, ring_ratio = [], [], [], [], []
        for ev in events:
            painted = ~ev.source_mask
            if painted.mean() >= 0.01:
                swd.append(masked_swd(ev.rgb, ev.rgb, painted, ev.source_mask)["swd"])
                ratio.append(gradient_energy_ratio(ev.rgb, painted, ev.source_mask))
                # ... and against the seen pixels beside the paint on its layer (a forward
                # walk magnifies near walls more than the far layer a disocclusion reveals)
                ring = background_ring(painted, ev.source_mask, ev.depth)
                if ring.sum() >= 200:
                    swd_ring.append(masked_swd(ev.rgb, ev.rgb, painted, ring)["swd"])
                    ring_ratio.append(gradient_energy_ratio(ev.rgb, painted, ring))
            fresh = _fresh(pipe, ev)
            if fresh.mean() >= 0.01:
                fresh_ratio.append(gradient_energy_ratio(ev.rgb, fresh, ev.source_mask))
        synth = [ev.timings["synthesize"] * 1e3 for ev in events]
        out[painter] = {
            "swd_painted_vs_seen": _med(swd),
            "grad_ratio": _med(ratio),
            "grad_ratio_fresh": _med(fresh_ratio),
            "swd_painted_vs_ring": _med(swd_ring),
            "grad_ratio_ring": _med(ring_ratio),
            "frames_scored": len(swd),
            "fps": _r(len(events) / wall, 3),
            "synth_ms_median": _r(statistics.median(synth), 1),
            "synth_ms_max": _r(max(synth), 1),
            "painted_median": _med([1 - ev.memory_coverage for ev in events]),
            "_events": events,
        }
    return out


# ---------------------------------------------------------------------------------------------
# Turns into held-out pixels of the photos (exact ground truth)


def _turned(cam: Camera, up: np.ndarray, deg: float) -> Camera:
    c2w = cam.c2w.copy()
    c2w[:3, :3] = yaw_right(up, np.radians(deg)) @ cam.c2w[:3, :3]
    return Camera(cam.K, c2w, cam.width, cam.height)


def _ground_truth(full: np.ndarray, K_full: np.ndarray, seed: Camera, target: Camera):
    """The full photo seen from ``target`` (same centre as ``seed``): (H, W, 3) uint8 and the
    (H, W) mask of pixels whose ray falls inside it."""
    H, W = target.height, target.width
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(target.K).T
    R = seed.c2w[:3, :3].T @ target.c2w[:3, :3]  # target camera -> seed camera
    d = rays @ R.T
    z = np.maximum(d[..., 2], 1e-9)
    mx = (d[..., 0] / z * K_full[0, 0] + K_full[0, 2]).astype(np.float32)
    my = (d[..., 1] / z * K_full[1, 1] + K_full[1, 2]).astype(np.float32)
    fh, fw = full.shape[:2]
    ok = (d[..., 2] > 0) & (mx >= 0) & (mx <= fw - 1) & (my >= 0) & (my <= fh - 1)
    gt = cv2.remap(full, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return gt, ok


def turn_holdout(
    photo_path: Path, angles: Sequence[float] = (10, 20, 30), keep: float = 0.6, width: int = 512
) -> list[dict[str, Any]]:
    photo = load_photo(photo_path)
    ph, pw = photo.rgb.shape[:2]
    full_w = round(width / keep)
    full_h = round(ph * full_w / pw) // 8 * 8
    full = cv2.resize(photo.rgb, (full_w, full_h), interpolation=cv2.INTER_AREA)
    K_full = intrinsics_from_fov(full_w, full_h, 60.0)
    rows = []
    for side, x0 in (("right", 0), ("left", full_w - width)):
        crop = np.ascontiguousarray(full[:, x0 : x0 + width])
        K = K_full.copy()
        K[0, 2] -= x0
        for deg in angles:
            row: dict[str, Any] = {"photo": photo_path.name, "turn": side, "degrees": deg}
            events = {}
            for painter in PAINTERS:
                pipe = _pipeline(painter, None, width)
                world = pipe.seed(crop, K)
                target = _turned(world.cameras[0], world.up, deg if side == "right" else -deg)
                events[painter] = next(pipe.explore(world, [target]))
            seed_cam = Camera(K_full, world.cameras[0].c2w, full_w, full_h)
            gt, inside = _ground_truth(full, K_full, seed_cam, target)
            new = events["exemplar"]
            routed = new.source_mask
            telea = cv2.inpaint(
                np.where(routed[..., None], new.rgb, 0).astype(np.uint8),
                (~routed).astype(np.uint8),
                3,
                cv2.INPAINT_TELEA,
            )
            scored = ~routed & ~events["smooth"].source_mask & inside
            row["scored_fraction"] = _r(scored.mean())
            for name, img in (
                ("exemplar", new.rgb),
                ("smooth", events["smooth"].rgb),
                ("telea", telea),
            ):
                row[f"psnr_painted_{name}"] = _r(psnr(img, gt, scored))
                row[f"swd_{name}"] = _r(masked_swd(img, gt, scored)["swd"])
                row[f"grad_ratio_{name}"] = _r(gradient_energy_ratio(img, scored, routed))
            row["grad_ratio_truth"] = _r(gradient_energy_ratio(gt, scored, routed))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Contact sheet and the protocol


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (8 + 9 * len(text), 22), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(
    walks: list[dict[str, Any]], path: Path, picks: Sequence[int], tile: int = 384
) -> Path:
    """Rows of (before, after) tiles at frame ``picks`` of each walk: the smooth painter, then
    the exemplar painter, at the same camera. Written as PNG; returns the path."""
    rows = []
    for w in walks:
        tiles = []
        for k in picks:
            for painter, tag in (("smooth", "before"), ("exemplar", "after")):
                events = w[painter]["_events"]
                ev = events[min(k, len(events)) - 1]
                h = round(ev.rgb.shape[0] * tile / ev.rgb.shape[1])
                img = cv2.resize(ev.rgb, (tile, h), interpolation=cv2.INTER_AREA)
                tiles.append(_label(img, f"{w['photo'][:22]} {w['path']} #{ev.index} {tag}"))
        rows.append(np.concatenate(tiles, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    sheet = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError("could not encode the contact sheet")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return path


def protocol_painter(
    out: Path,
    opts: Any,
    seq_dir: Path | None = None,
    photos: Sequence[str] | None = None,
) -> dict[str, Any]:
    """TUM, walks on every photo, held-out turns, and the contact sheet (see module doc)."""
    seq_dir = seq_dir or DEFAULT_SEQUENCE
    photo_dir = DATA / "photos"
    names = (
        list(photos)
        if photos
        else sorted(p.name for p in photo_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    )
    paths = [Path(n) if Path(n).is_file() else photo_dir / n for n in names]
    frames = opts.frames or 48
    report: dict[str, Any] = {"protocol": "painter", "painters": list(PAINTERS)}
    print("eval painter: TUM ...", file=sys.stderr, flush=True)
    report["tum"] = tum_painters(seq_dir, opts.width, None if not opts.quick else 4)
    walks = []
    for p in paths:
        for path in ("forward", "look-around"):
            print(f"eval painter: walk {p.name} {path} ...", file=sys.stderr, flush=True)
            walks.append(photo_walk(p, path, frames, opts.width))
    sheet_walks = [w for w in walks if w["path"] == "look-around" and w["photo"] in SHEET_PHOTOS]
    sheet_walks = sheet_walks or [w for w in walks if w["path"] == "look-around"][:3]
    picks = (max(1, frames // 4), max(1, 3 * frames // 4))
    report["contact_sheet"] = str(
        contact_sheet(sheet_walks, out / "painter_contact_sheet.png", picks)
    )
    for w in walks:
        for painter in PAINTERS:
            w[painter].pop("_events")
    report["walks"] = walks
    turns = []
    for p in paths:
        print(f"eval painter: held-out turns {p.name} ...", file=sys.stderr, flush=True)
        turns += turn_holdout(p, width=opts.width)
    report["turns"] = {
        "per_view": turns,
        "median": {
            k: _med([t[k] for t in turns])
            for k in turns[0]
            if k.startswith(("psnr", "swd", "grad"))
        },
    }
    report["summary"] = _summary(report)
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    walks = report["walks"]

    def better(key: str, lower: bool = True) -> str:
        """Walks where the exemplar painter did better, of those with something painted."""
        scored = [
            w for w in walks if w["exemplar"][key] is not None and w["smooth"][key] is not None
        ]
        wins = sum((w["exemplar"][key] < w["smooth"][key]) == lower for w in scored)
        return f"{wins}/{len(scored)}"

    return {
        "tum": report["tum"]["median"],
        "walks_swd_better": better("swd_painted_vs_seen"),
        "walks_swd_ring_better": better("swd_painted_vs_ring"),
        "walks_grad_ratio_median_exemplar": _med([w["exemplar"]["grad_ratio"] for w in walks]),
        "walks_grad_ratio_median_smooth": _med([w["smooth"]["grad_ratio"] for w in walks]),
        "walks_grad_ratio_fresh_median_exemplar": _med(
            [w["exemplar"]["grad_ratio_fresh"] for w in walks]
        ),
        "turns": report["turns"]["median"],
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline figures of a painter report, a few lines a person reads."""
    t = report["tum"]["median"]
    lines = [
        f"painter TUM 1..{t['frames']}: full PSNR exemplar {t['psnr_full_exemplar']} / smooth "
        f"{t['psnr_full_smooth']} / splat+Telea {t['psnr_full_splat_telea']} dB (exemplar wins "
        f"{t['exemplar_beats_splat_telea_psnr']}/{t['frames']} frames vs splat+Telea); patch "
        f"SWD {t['swd_exemplar']} / {t['swd_smooth']} / {t['swd_splat_telea']} (exemplar lower "
        f"than smooth on {t['exemplar_beats_smooth_swd']}/{t['frames']}); gradient ratio "
        f"{t['grad_ratio_exemplar']} / {t['grad_ratio_smooth']} (real {t['grad_ratio_real']}), "
        f"this frame's paint only {t['grad_ratio_fresh_exemplar']} / "
        f"{t['grad_ratio_fresh_smooth']}",
        f"painter TUM texture against the real frames' same pixels (1 = the truth's): painted "
        f"{t['grad_vs_truth_exemplar']} / {t['grad_vs_truth_smooth']}, this frame's paint "
        f"{t['grad_vs_truth_fresh_exemplar']} / {t['grad_vs_truth_fresh_smooth']}; the routed "
        f"seen pixels {t['seen_energy_vs_truth_exemplar']} (routing speckle inflates the "
        f"painted/seen ratio's denominator)",
    ]
    for name, label in (
        ("median_1_8", "frames 1..8 (coherence tuned on)"),
        ("median_9_16", "9..16"),
        ("median_1_12", "frames 1..12 (reliability rule tuned on)"),
        ("median_13_16", "13..16 (held out)"),
    ):
        if name in report["tum"]:
            m = report["tum"][name]
            lines.append(
                f"painter TUM {label}: gradient ratio {m['grad_ratio_exemplar']}, seen pixels' "
                f"energy / truth {m['seen_energy_vs_truth_exemplar']}, full PSNR "
                f"{m['psnr_full_exemplar']} vs splat+Telea {m['psnr_full_splat_telea']} dB"
            )
    for w in report["walks"]:
        e, s = w["exemplar"], w["smooth"]
        lines.append(
            f"painter walk {w['photo'][:26]:26s} {w['path']:11s}: SWD {e['swd_painted_vs_seen']} "
            f"vs {s['swd_painted_vs_seen']} (beside the paint {e['swd_painted_vs_ring']} vs "
            f"{s['swd_painted_vs_ring']}), gradient ratio {e['grad_ratio']} vs "
            f"{s['grad_ratio']} (fresh {e['grad_ratio_fresh']}, beside "
            f"{e['grad_ratio_ring']} vs {s['grad_ratio_ring']}), {e['fps']} vs {s['fps']} "
            f"frames/s, painting "
            f"{e['synth_ms_median']} vs {s['synth_ms_median']} ms (max {e['synth_ms_max']})"
        )
    m = report["turns"]["median"]
    lines.append(
        f"painter held-out turns: painted-pixel PSNR exemplar {m['psnr_painted_exemplar']} / "
        f"smooth {m['psnr_painted_smooth']} / Telea {m['psnr_painted_telea']} dB, SWD "
        f"{m['swd_exemplar']} / {m['swd_smooth']} / {m['swd_telea']}, gradient ratio "
        f"{m['grad_ratio_exemplar']} (truth {m['grad_ratio_truth']})"
    )
    lines.append(f"painter contact sheet: {report['contact_sheet']}")
    return lines
