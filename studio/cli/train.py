"""``loci train``: fine-tune a generative painter on posed footage (LoRA, self-augmented
conditioning), and probe drift.

- ``loci train prepare FOOTAGE... --out DATA``: posed footage (TUM folder, COLMAP model,
  nerfstudio transforms.json, cameras_opencv.json, world bundle) -> training samples built
  through the spatial memory exactly as inference routes them; sharded, resumable, previewed;
- ``loci train run DATA --out RUN``: LoRA fine-tuning with a TOML/JSON config plus overrides;
  metrics as JSONL and a plotly curve; checkpoints; ``--resume``;
- ``loci train drift PHOTO --out DIR``: a long walk with and without ``--lora``, and the colour /
  texture drift of its painted regions.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from models.train.config import parse_override
from studio.cli.common import UsageError, progress


# ---------------------------------------------------------------------------------------------
def footage_frames(footage: Any, every: int = 1, max_frames: int | None = None) -> list[Any]:
    """``storage.train.footage.Footage`` -> :class:`models.train.footage.FootageFrame` list
    (every ``every``-th frame, at most ``max_frames``); poses converted to OpenCV c2w."""
    from models.train.footage import FootageFrame, footage_camera

    out = []
    for i in range(0, len(footage.items), max(1, every)):
        it = footage.items[i]
        cam = footage_camera(
            it.K, it.width, it.height, it.pose, it.pose_value, it.pixel_centre, it.pose_weight
        )
        out.append(
            FootageFrame(
                it.name,
                cam,
                lambda i=i: footage.rgb(i),
                (lambda i=i: footage.depth(i)) if it.depth is not None else None,
                (lambda i=i: footage.trust(i)) if it.trust is not None else None,
                it.sparse_xyz,
            )  # fmt: skip
        )
        if max_frames and len(out) >= max_frames:
            break
    return out


def _sequence_names(paths: list[str]) -> list[str]:
    names, seen = [], Counter()
    for p in paths:
        base = Path(p).resolve()
        stem = (base.parent.name if base.is_file() else base.name) or "footage"
        seen[stem] += 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def cmd_prepare(args: argparse.Namespace) -> int:
    from models.pipeline import working_size
    from models.train.samples import SampleBuilder, SampleConfig
    from storage.train.footage import read_footage
    from storage.train.shards import SampleDataset, SampleStore
    from studio.backends import build_depth
    from studio.evaluation.training import sample_preview

    if args.every < 1:
        raise UsageError("--every must be at least 1")
    intr = tuple(args.intrinsics) if args.intrinsics else None
    sources = [read_footage(p, args.format, intr) for p in args.footage]
    frames = [footage_frames(f, args.every, args.max_frames) for f in sources]
    sizes = {working_size(fr[0].camera.width, fr[0].camera.height, args.width) for fr in frames}
    if len(sizes) != 1:
        raise UsageError(
            f"the footage has several aspect ratios (working sizes {sorted(sizes)}); "
            "prepare one dataset per aspect ratio"
        )
    (W, H), = sizes  # fmt: skip
    config = SampleConfig(
        width=args.width, max_retrieved=args.max_retrieved, memory_stride=args.memory_stride,
        min_gap=args.min_gap, min_coverage=args.min_coverage, max_coverage=args.max_coverage,
    )  # fmt: skip
    needs_depth = any(f.load_depth is None for fr in frames for f in fr)
    notes: list[str] = []
    depth = build_depth(args.depth, args.depth_model, notes) if needs_depth else None
    meta = {
        "width": W,
        "height": H,
        "config": {**config.to_dict(), "every": args.every, "depth": depth.name if depth else None},
        "sources": [
            {"path": str(Path(p).resolve()), "kind": s.kind, "frames": len(fr)}
            for p, s, fr in zip(args.footage, sources, frames, strict=True)
        ],  # fmt: skip
    }
    store = SampleStore(args.out, meta, shard_size=args.shard_size, resume=args.resume)
    for note in notes + [n for s in sources for n in s.notes]:
        print(f"note: {note}", file=sys.stderr)
    builder = SampleBuilder(config, depth)
    bar = progress(sum(len(fr) for fr in frames), "preparing", not args.quiet)
    why: Counter = Counter()
    done = store.done_keys
    try:
        for seq, source, fr in zip(_sequence_names(args.footage), sources, frames, strict=True):
            cached = lambda name, seq=seq: store.cached_depth(seq, name)  # noqa: E731
            for step in builder.build(
                seq, fr, metric=source.metric, done=done, cached_depth=cached
            ):
                if step.order == 0:
                    store.save_reference(seq, step.rgb)
                if step.depth is not None and not store.depth_file(seq, step.name).is_file():
                    store.cache_depth(seq, step.name, step.depth)
                if step.sample is not None:
                    store.add(step.sample.arrays(), step.sample.info())
                    why["stored"] += 1
                else:
                    why[step.why] += 1
                bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        print(f"loci: interrupted; {len(store.done_keys) - len(store.pending)} samples are "
              f"stored in {args.out}: run again with --resume to carry on", file=sys.stderr)  # fmt: skip
        return 130
    bar.close()
    store.finish()
    ds = SampleDataset(args.out)
    sample_preview(ds, Path(args.out) / "preview.png")
    psnr = [i["routed_psnr"] for i in ds.infos if i.get("routed_psnr") is not None]
    extra = f", routed PSNR median {np.median(psnr):.1f} dB" if psnr else ""
    print(
        f"wrote {args.out}: {len(ds)} samples at {W}x{H}{extra} "
        f"({'; '.join(f'{k}: {v}' for k, v in why.items())}); preview.png shows them",
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from models.train.config import load_config
    from models.train.trainer import Trainer, build_painter
    from storage.train.shards import SampleDataset
    from studio.evaluation.training import loss_curve

    ds = SampleDataset(args.data)
    if not ds.complete:
        print("note: the dataset is incomplete (loci train prepare was stopped); "
              "training on the samples stored so far", file=sys.stderr)  # fmt: skip
    overrides: dict[str, Any] = {
        "painter": args.painter, "model": args.model, "steps": args.steps,
        "batch_size": args.batch_size, "lr": args.lr, "rank": args.rank,
        "self_aug_p": args.self_aug_p, "seed": args.seed,
        "checkpoint_every": args.checkpoint_every, "device": args.device,
    }  # fmt: skip
    overrides.update(dict(parse_override(s) for s in args.set or []))
    config = load_config(args.config, overrides)
    painter = build_painter(config, (ds.width, ds.height))
    info = {"path": str(Path(args.data).resolve()), "samples": len(ds), "complete": ds.complete}
    trainer = Trainer(config, painter, ds, args.out, info)
    bar = progress(config.steps, "training", not args.quiet, unit="step")
    last: dict[str, float] = {}

    def on_record(rec: dict[str, Any]) -> None:
        if rec["split"] == "info":
            bar.update(rec["step"] - bar.n)
        elif rec["split"] == "train":
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
        elif rec["split"] == "heldout":
            last.setdefault("first", rec["loss"])
            last["final"] = rec["loss"]

    try:
        result = trainer.run(resume=args.resume, on_record=on_record)
    except KeyboardInterrupt:
        bar.close()
        loss_curve(Path(args.out))
        ckpts = trainer.checkpoints()
        where = f"the last checkpoint is {ckpts[-1].name}" if ckpts else "no checkpoint yet"
        print(f"loci: interrupted; {where}: run again with --resume to carry on", file=sys.stderr)
        return 130
    bar.close()
    loss_curve(Path(args.out))
    held = ""
    if "first" in last:
        held = f"; held-out loss {last['first']:.4f} -> {last['final']:.4f}"
    print(
        f"wrote {result.lora} after {result.step} steps on {result.samples['train']} samples "
        f"({result.samples['heldout']} held out, {result.samples['skipped']} skipped){held}; "
        f"curve: {Path(args.out) / 'loss.html'}; use it with --lora {result.lora}",
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------------------------------------
def _num(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def cmd_drift(args: argparse.Namespace) -> int:
    from models.pipeline import PipelineConfig, WorldPipeline
    from storage.formats.images import load_photo
    from studio.backends import build_depth, build_synthesis
    from studio.evaluation.training import drift_probe

    if args.frames < 3:
        raise UsageError("--frames must be at least 3")
    synthesis = args.synthesis or ("auto" if args.lora else "reproject")
    photo = load_photo(args.photo)
    notes: list[str] = []
    depth = build_depth(args.depth, args.depth_model, notes)
    config = PipelineConfig(width=args.width, seed=args.seed)

    def factory(lora: str | None):
        def make():
            synth = build_synthesis(synthesis, args.model, notes, steps=args.steps, lora=lora)
            return WorldPipeline(depth=depth, synthesis=synth, config=config)

        return make

    runs = {"base": factory(None)}
    if args.lora:
        runs["lora"] = factory(args.lora)
    bar = progress(len(runs) * (args.frames - 1), "walking", not args.quiet)
    settings = {"photo": str(args.photo), "synthesis": synthesis, "model": args.model,
                "lora": args.lora, "width": args.width, "seed": args.seed}  # fmt: skip
    report = drift_probe(
        Path(args.out), runs, photo, args.path, args.frames, settings, lambda: bar.update(1)
    )
    bar.close()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for label, run in report["runs"].items():
        s = run["summary"]
        if s.get("delta_e_early_late") is None or s.get("swd_early_late") is None:
            print(f"{label}: painted {s['painted_mean']:.1%} of pixels: too little paint to "
                  "measure drift (try a longer or wider --path, e.g. orbit)", file=sys.stderr)  # fmt: skip
            continue

        print(
            f"{label}: painted {s['painted_mean']:.1%} of pixels; early->late colour shift "
            f"{_num(s['delta_e_early_late'], '.2f')} dE, texture distance "
            f"{_num(s['swd_early_late'], '.4f')} (max along the path "
            f"{_num(s['delta_e_max'], '.2f')} dE, {_num(s['swd_max'], '.4f')})",
            file=sys.stderr,
        )
    print(f"wrote {args.out}/drift.json, drift_sheet.png and plots", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train prepare|run|drift`` to the ``loci`` parser."""
    from models.depth import depth_backend_names
    from models.paths.trajectory import PRESET_NAMES
    from models.synthesis import synthesis_backend_names
    from models.train.painters import painter_names
    from storage.train.footage import FOOTAGE_KINDS

    t = sub.add_parser("train", help="fine-tune a painter on posed footage (LoRA)")
    tsub = t.add_subparsers(dest="train_command", required=True)

    p = tsub.add_parser("prepare", help="posed footage -> training samples (sharded)")
    p.add_argument("footage", nargs="+", help="TUM folder, COLMAP model, transforms.json, "
                   "cameras_opencv.json folder or world bundle")  # fmt: skip
    p.add_argument("--out", required=True, help="dataset folder")
    p.add_argument("--format", choices=FOOTAGE_KINDS, default=None, help="default: detected")
    p.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="pinhole intrinsics for TUM folders other than fr3")  # fmt: skip
    p.add_argument("--width", type=int, default=512, help="working width (as loci generate)")
    p.add_argument("--depth", choices=[*depth_backend_names(), "auto"], default="layout",
                   help="estimates depth for frames without any (default layout)")  # fmt: skip
    p.add_argument("--depth-model", default=None, help="hub id or local dir for --depth")
    p.add_argument("--every", type=int, default=1, help="use every k-th footage frame")
    p.add_argument("--max-frames", type=int, default=None, help="frames per footage at most")
    p.add_argument("--max-retrieved", type=int, default=4, help="memory frames per target")
    p.add_argument("--memory-stride", type=int, default=1, help="every k-th frame joins memory")
    p.add_argument("--min-gap", type=int, default=1, help="history at least N frames back")
    p.add_argument("--min-coverage", type=float, default=0.05)
    p.add_argument("--max-coverage", type=float, default=0.98)
    p.add_argument("--shard-size", type=int, default=32, help="samples per shard file")
    p.add_argument("--resume", action="store_true", help="carry on an interrupted prepare")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare)

    r = tsub.add_parser("run", help="LoRA fine-tuning on a prepared dataset")
    r.add_argument("data", help="dataset folder (loci train prepare --out)")
    r.add_argument("--out", required=True, help="run folder (checkpoints, metrics, lora/)")
    r.add_argument("--config", default=None, help="TOML or JSON settings (see README)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    r.add_argument("--painter", choices=painter_names(), default=None)
    r.add_argument("--model", default=None, help="hub id or local dir of the painter's model")
    r.add_argument("--steps", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--rank", type=int, default=None, help="LoRA rank")
    r.add_argument("--self-aug-p", type=float, default=None,
                   help="probability of self-augmented conditioning (0.7; 0 = plain recipe)")  # fmt: skip
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--checkpoint-every", type=int, default=None)
    r.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)

    d = tsub.add_parser("drift", help="colour/texture drift of painted regions on a long walk")
    d.add_argument("photo")
    d.add_argument("--out", required=True, help="report folder")
    d.add_argument("--lora", default=None, help="a loci train LoRA to compare with the base")
    d.add_argument("--synthesis", choices=[*synthesis_backend_names(), "auto"], default=None,
                   help="painter (default: the LoRA's, else reproject)")  # fmt: skip
    d.add_argument("--model", default=None, help="the painter's model (hub id or local dir)")
    d.add_argument("--steps", type=int, default=None, help="denoising steps")
    d.add_argument("--path", choices=PRESET_NAMES, default="loop", help="walk (default loop)")
    d.add_argument("--frames", type=int, default=200)
    d.add_argument("--width", type=int, default=512)
    d.add_argument("--depth", choices=[*depth_backend_names(), "auto"], default="layout")
    d.add_argument("--depth-model", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_drift)
