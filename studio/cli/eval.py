"""``loci eval``: the evaluation protocols on real data (JSON reports and plots).

The protocols themselves live in :mod:`studio.evaluation.protocols`; this module is the command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio.cli.common import UsageError


def cmd_eval(args: argparse.Namespace) -> int:
    from studio.evaluation.protocols import DEFAULT_SEQUENCE, EvalOptions, run_eval, summarise

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
    if args.photos and args.protocol in ("revisit", "painter"):
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``loci`` parser."""
    e = sub.add_parser("eval", help="evaluation protocols on real data (JSON + plots)")
    e.add_argument("protocol", choices=["posed", "revisit", "depth", "ablations", "painter", "all"])
    e.add_argument("--out", required=True, help="folder for report_*.json and plots")
    e.add_argument("--sequence", default=None, help="posed sequence folder (cameras_opencv.json)")
    e.add_argument(
        "--photos", nargs="*", default=None, help="photos for the revisit / painter protocols"
    )
    e.add_argument("--frames", type=int, default=None, help="frames per sequence / path")
    e.add_argument(
        "--quick", action="store_true", help="painter: 4 TUM frames (a smoke run, not the report)"
    )
    e.add_argument("--width", type=int, default=512)
    e.add_argument("--lpips-model", default=None, help="TorchScript LPIPS module (optional)")
    e.add_argument("--fid-model", default=None, help="TorchScript feature extractor for FID")
    e.set_defaults(func=cmd_eval)
