"""Launch the Loci studio: flags/env -> StudioContext -> studio.build_app(ctx).launch()."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The studio shares its cores between the web server, sessions and generation jobs. OpenMP's
# default busy-waiting then collapses torch throughput (measured: 2.5 frames/s against 6.2 with
# PASSIVE when another process holds a core; PASSIVE costs 30 % on an idle machine, which
# is why the CLI keeps the default). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from studio.app import StudioContext, build_app  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Loci studio")
    p.add_argument("--host", default=os.environ.get("LOCI_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LOCI_PORT", "7860")))
    p.add_argument("--data-dir", default=os.environ.get("LOCI_DATA_DIR", "data"))
    p.add_argument("--width", type=int, default=512, help="working width of generated frames")
    args = p.parse_args(argv)
    ctx = StudioContext(data_dir=Path(args.data_dir).absolute(), width=args.width)
    build_app(ctx).queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(ctx.data_dir)]
    )


if __name__ == "__main__":
    main()
