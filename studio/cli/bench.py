"""``loci bench``: the speed suite (medians, ratios to baselines measured in the same run).

The suite lives in :mod:`studio.evaluation.bench`; this module is the command.
"""

from __future__ import annotations

import argparse


def cmd_bench(args: argparse.Namespace) -> int:
    from studio.evaluation.bench import run_bench

    run_bench(out=args.out, quick=args.quick, repeats=args.repeats, baselines=args.baselines)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``loci`` parser."""
    b = sub.add_parser("bench", help="speed suite (medians, ratios to baselines)")
    b.add_argument("--out", default=None, help="write the JSON report here")
    b.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument(
        "--baselines",
        action="store_true",
        help="also splat rendering vs gsplat's torch path, TSDF vs Open3D",
    )
    b.set_defaults(func=cmd_bench)
