"""The ``loci`` command line, one module per command group.

- :mod:`studio.cli.world`: ``generate`` (photo + path -> world bundle), ``lift``, ``export``;
- :mod:`studio.cli.eval`: ``eval`` (protocols on real data);
- :mod:`studio.cli.bench`: ``bench`` (the speed suite);
- :mod:`studio.cli.models`: ``models`` (backends and their weights);
- :mod:`studio.cli.train`: ``train prepare|run|drift`` (fine-tuning a painter, drift probe).

Bad input (any of :data:`studio.errors.USER_ERRORS` or a :class:`UsageError`) exits with status 2
and one line that says what to fix; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys

from studio.cli import bench, eval, models, train, world
from studio.cli.common import UsageError
from studio.errors import USER_ERRORS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loci", description="One photo -> an explorable 3D world.")
    sub = p.add_subparsers(dest="command", required=True)
    world.register(sub)
    eval.register(sub)
    models.register(sub)
    bench.register(sub)
    train.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, *USER_ERRORS) as e:
        print(f"loci: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loci: interrupted; nothing was written", file=sys.stderr)
        return 130
