"""``loci bench``: the speed suite (medians, ratios to baselines measured in the same run).

The suite lives in :mod:`studio.evaluation.bench`; this module is the command.
"""

from __future__ import annotations

import argparse


def cmd_bench(args: argparse.Namespace) -> int:
    if args.executor:
        return _bench_executor(args)
    from studio.evaluation.bench import run_bench

    run_bench(out=args.out, quick=args.quick, repeats=args.repeats, baselines=args.baselines)
    return 0


def _bench_executor(args: argparse.Namespace) -> int:
    from studio.cli.common import UsageError

    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise UsageError("--executor ray needs Ray: pip install 'loci[scale]'") from exc
    from storage.atomic import atomic_write_json
    from studio.evaluation.bench_executors import format_executor_report, run_executor_bench

    report = run_executor_bench(
        args.executor, repeats=min(args.repeats, 2) if args.quick else args.repeats,
        frames=8 if args.quick else 16, database_url=args.database_url,
        artifacts=args.artifacts, ray_address=args.ray_address,
    )  # fmt: skip
    print(format_executor_report(report))
    if args.out:
        atomic_write_json(args.out, report)
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
    b.add_argument("--executor", choices=["ray"], default=None,
                   help="instead: Ray actors vs local threads (overhead, throughput, memory)")  # fmt: skip
    b.add_argument("--database-url", default=None, help="with --executor: the shared database")
    b.add_argument("--artifacts", default=None, help="with --executor: folder or s3:// URL")
    b.add_argument("--ray-address", default=None, help="with --executor: a Ray cluster")
    b.set_defaults(func=cmd_bench)
