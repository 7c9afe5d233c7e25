"""Reports of ``loci train``: the dataset preview, the loss curve, and the drift probe.

* :func:`sample_preview`: a contact sheet of stored samples (target, the routed condition with
  its holes in magenta, the pixels the loss trusts), so a user sees what the painter learns from;
* :func:`loss_curve`: ``metrics.jsonl`` -> plotly curves (train loss and its running mean,
  held-out loss with clean and with self-augmented histories);
* :func:`drift_probe`: a long walk generated with and without a LoRA, the colour/texture drift
  of painted regions along it (``models.train.drift``), a contact sheet and plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from storage.atomic import atomic_write_json, save_png_atomic
from studio.evaluation.plots import save_figure

HOLE = np.array([255, 0, 255], np.uint8)


def grid(
    rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str] = (), tile: int = 256
) -> np.ndarray:
    """Tiles (H, W, 3) uint8, resized to ``tile`` px wide, in rows; ``labels`` head the columns."""
    out = []
    for row in rows:
        tiles = []
        for img in row:
            img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
            h = max(1, round(img.shape[0] * tile / img.shape[1]))
            tiles.append(cv2.resize(img, (tile, h), interpolation=cv2.INTER_NEAREST))
        hmax = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, hmax - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
        out.append(np.concatenate(tiles, 1))
    sheet = np.concatenate(out, 0)
    if labels:
        head = np.full((22, sheet.shape[1], 3), 255, np.uint8)
        for i, text in enumerate(labels):
            cv2.putText(
                head, text, (6 + i * tile, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
            )
        sheet = np.concatenate([head, sheet], 0)
    return sheet


def sample_preview(dataset: Any, path: Path, count: int = 6) -> Path | None:
    """Contact sheet of ``count`` samples spread over ``dataset``: target | condition | trust."""
    n = len(dataset)
    if n == 0:
        return None
    rows = []
    for i in sorted({round(k * (n - 1) / max(1, count - 1)) for k in range(min(count, n))}):
        s = dataset[i]
        cond = (np.clip(s["warped_rgb"], 0, 1) * 255).round().astype(np.uint8)
        cond[~s["valid"]] = HOLE
        trust = s["target"].copy()
        trust[~s["trust"]] = trust[~s["trust"]] // 4
        rows.append([s["target"], cond, trust])
    labels = ["target", "routed condition (holes magenta)", "trusted by the loss"]
    return save_png_atomic(path, grid(rows, labels))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def loss_curve(run_dir: Path) -> list[Path]:
    """``loss.html`` (+ png) in ``run_dir`` from its metrics.jsonl."""
    recs = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in recs if r.get("split") == "train"]
    held = [r for r in recs if r.get("split") == "heldout" and "loss" in r]
    series: dict[str, tuple[list, list]] = {}
    if train:
        xs = [r["step"] for r in train]
        ys = [r["loss"] for r in train]
        ema, acc = [], None
        for y in ys:
            acc = y if acc is None else 0.9 * acc + 0.1 * y
            ema.append(acc)
        series["train loss"] = (xs, ys)
        series["train loss (running mean)"] = (xs, ema)
    if held:
        series["held-out loss"] = ([r["step"] for r in held], [r["loss"] for r in held])
        series["held-out loss, self-augmented history"] = (
            [r["step"] for r in held], [r["loss_selfaug"] for r in held],
        )  # fmt: skip
    if not series:
        return []
    return save_figure(run_dir / "loss", "loci train: loss", "step", "loss", series)


# ---------------------------------------------------------------------------------------------
def walk_frames(
    pipe: Any, photo: Any, path: str, frames: int, on_frame: Callable[[], None] | None = None
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Generate a ``path`` preset walk of ``frames`` frames (the photo first) from ``photo``
    (a storage Photo); returns the seed frame and [(rgb, painted)] of the others."""
    from models.paths.trajectory import make_preset

    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    cams = make_preset(path, world.cameras[0], frames, up=world.up, scene_depth=world.scene_depth)
    out = []
    for ev in pipe.explore(world, cams.cameras[1:]):
        out.append((ev.rgb, ~ev.source_mask))
        if on_frame:
            on_frame()
    return world.seed_event.rgb, out


def drift_probe(
    out: Path,
    runs: dict[str, Callable[[], Any]],
    photo: Any,
    path: str = "loop",
    frames: int = 200,
    settings: dict[str, Any] | None = None,
    on_frame: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run each labelled pipeline factory in ``runs`` on the same walk and write ``drift.json``,
    ``drift_color.html`` / ``drift_texture.html`` (+ png) and ``drift_sheet.png`` into ``out``."""
    from models.train.drift import drift_report

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"settings": {**(settings or {}), "path": path, "frames": frames}}
    walks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    report["runs"] = {}
    for label, make in runs.items():
        t0 = time.perf_counter()
        seed_rgb, walk = walk_frames(make(), photo, path, frames, on_frame)
        dr = drift_report(walk, photo=seed_rgb)
        walks[label] = walk
        report["runs"][label] = {"summary": dr.summary, "per_frame": dr.per_frame,
                                 "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    atomic_write_json(out / "drift.json", report)
    for key, title in (("delta_e", "colour shift of painted regions (Delta E vs early paint)"),
                       ("swd", "texture distance of painted regions (patch SWD vs early paint)")):  # fmt: skip
        series = {}
        for label, run in report["runs"].items():
            pts = [(r["index"], r[key]) for r in run["per_frame"] if r[key] is not None]
            series[label] = ([p[0] for p in pts], [p[1] for p in pts])
        stem = "drift_color" if key == "delta_e" else "drift_texture"
        save_figure(out / stem, title, "frame", key, series)
    labels = list(walks)
    n = len(next(iter(walks.values())))
    rows = []
    for i in sorted({round(k * (n - 1) / 5) for k in range(6)}):
        row = []
        for label in labels:
            rgb, painted = walks[label][i]
            row.append(rgb)
        rgb, painted = walks[labels[-1]][i]
        row.append(np.where(painted[..., None], HOLE, rgb // 3 + 100))
        rows.append(row)
    save_png_atomic(out / "drift_sheet.png", grid(rows, [*labels, f"painted ({labels[-1]})"]))
    return report
