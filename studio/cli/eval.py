"""``loci eval``: the evaluation protocols on real data (JSON reports and plots).

The protocols themselves live in :mod:`studio.evaluation.protocols` (and ``lift_protocol``,
``depth_protocol``); this module is the command. ``loci eval lift DIR`` judges one world's
splats and mesh against its own frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio.cli.common import UsageError


def cmd_eval(args: argparse.Namespace) -> int:
    from studio.evaluation.protocols import DEFAULT_SEQUENCE, EvalOptions, run_eval, summarise

    if args.protocol == "lift":
        return _eval_lift(args)
    if args.target is not None:
        raise UsageError(f"a world folder goes with 'loci eval lift DIR', not '{args.protocol}'")
    if args.out is None:
        raise UsageError("--out DIR is required (where report_*.json and plots go)")

    opts = EvalOptions(
        width=args.width,
        frames=args.frames,
        lpips_model=args.lpips_model,
        fid_model=args.fid_model,
        quick=args.quick,
    )
    kwargs = {}
    if args.sequence and args.protocol in ("posed", "ablations", "painter"):
        kwargs["seq_dir"] = Path(args.sequence)
    if args.photos and args.protocol in ("revisit", "painter", "routing"):
        kwargs["photos"] = args.photos
    if args.protocol == "all" and (args.sequence or args.photos):
        raise UsageError("--sequence/--photos go with a single protocol, not 'all'")
    seq = Path(args.sequence) if args.sequence else DEFAULT_SEQUENCE
    if args.protocol in ("posed", "ablations", "painter", "all") and not seq.is_dir():
        raise UsageError(f"posed sequence folder not found: {seq}")
    reports = run_eval(args.protocol, args.out, opts, **kwargs)
    print(summarise(reports))
    print(f"reports and plots in {args.out}", file=sys.stderr)
    return 0


def _eval_lift(args: argparse.Namespace) -> int:
    """``loci eval lift DIR``: splats and mesh rendered at every camera of the world."""
    from storage.errors import BundleError
    from studio.evaluation.lift_protocol import evaluate_lift, summary_line

    if args.target is None:
        raise UsageError("loci eval lift needs a world folder: loci eval lift DIR [--out OUT]")
    if not (Path(args.target) / "world.json").is_file():
        raise BundleError(f"{args.target} is not a Loci world (no world.json)")
    out = Path(args.out) if args.out else Path(args.target) / "eval_lift"
    report = evaluate_lift(args.target, out, mesh=not args.no_mesh)
    print(summary_line(report))
    print(f"report and contact sheet in {out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``loci`` parser."""
    e = sub.add_parser("eval", help="evaluation protocols on real data (JSON + plots)")
    e.add_argument(
        "protocol",
        choices=["posed", "revisit", "depth", "ablations", "painter", "routing", "lift", "all"],
    )
    e.add_argument("target", nargs="?", default=None, help="lift: the world folder to evaluate")
    e.add_argument("--out", default=None, help="folder for report_*.json and plots")
    e.add_argument("--no-mesh", action="store_true", help="lift: splats only")
    e.add_argument("--sequence", default=None, help="posed sequence folder (cameras_opencv.json)")
    e.add_argument(
        "--photos",
        nargs="*",
        default=None,
        help="photos for the revisit / painter / routing protocols",
    )
    e.add_argument("--frames", type=int, default=None, help="frames per sequence / path")
    e.add_argument(
        "--quick", action="store_true", help="painter: 4 TUM frames (a smoke run, not the report)"
    )
    e.add_argument("--width", type=int, default=512)
    e.add_argument("--lpips-model", default=None, help="TorchScript LPIPS module (optional)")
    e.add_argument("--fid-model", default=None, help="TorchScript feature extractor for FID")
    e.set_defaults(func=cmd_eval)
