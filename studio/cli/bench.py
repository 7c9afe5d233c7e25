"""``loci bench``: the speed suite (medians, ratios to baselines measured in the same run), or
with ``--synthesis NAME [--model DIR]`` the cost of one painter per frame.

The suites live in :mod:`studio.evaluation.bench` and :mod:`studio.evaluation.bench_painters`; this
module is the command.
"""

from __future__ import annotations

import argparse


def cmd_bench(args: argparse.Namespace) -> int:
    if args.executor:
        return _bench_executor(args)
    if args.synthesis:
        from studio.cli.world import painter_options
        from studio.evaluation.bench_painters import run_painter_bench

        run_painter_bench(
            args.synthesis,
            args.model,
            out=args.out,
            frames=args.frames,
            width=args.width,
            photo=args.photo,
            options={k: v for k, v in painter_options(args).items() if v is not None},
        )
        return 0
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
    p = b.add_argument_group("one painter (loci bench --synthesis vace --model DIR)")
    p.add_argument("--synthesis", default=None, help="bench this painter instead of the suite")
    p.add_argument("--model", default=None, help="hub id or local folder of the painter's model")
    p.add_argument("--frames", type=int, default=32, help="frames of the forward walk (32)")
    p.add_argument("--width", type=int, default=512, help="working width (512)")
    p.add_argument("--photo", default=None, help="photo to start from (a shared living room)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--preset", choices=["fast", "default", "quality"], default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--flow-shift", type=float, default=None)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--run-area", default=None, help="trained (default), native, or pixels")
    p.add_argument("--offload", default=None,
                   choices=["auto", "gpu", "text-offload", "model-offload", "group-offload"])  # fmt: skip
    p.add_argument("--vram-gb", type=float, default=None)
    p.add_argument("--force-cpu", action="store_true")
    b.set_defaults(func=cmd_bench)
