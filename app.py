"""Launch the Loci studio: flags/env -> StudioContext -> studio.build_app(ctx).launch()."""

from __future__ import annotations

import argparse
import logging
import os

# Passive OpenMP waiting before torch loads (the ``studio`` package's docstring has the
# measurement): a long-lived server shares its cores, and a busy-waiting torch collapses then.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from socket import gethostname  # noqa: E402

from studio.app import StudioContext, build_app, launch_kwargs  # noqa: E402
from studio.context import EXECUTORS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The studio's flags (``deploy/`` files are checked against this parser by the tests)."""
    env = os.environ
    p = argparse.ArgumentParser(description="Loci studio")
    # A Space sets GRADIO_SERVER_NAME/PORT (0.0.0.0:7860); SPACE_ID alone also means "listen
    # on every interface", since a Space's proxy reaches the app from outside its container.
    default_host = "0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1"
    p.add_argument(
        "--host",
        default=env.get("LOCI_HOST", env.get("GRADIO_SERVER_NAME", default_host)),
        help="interface to listen on (0.0.0.0 = reachable by colleagues on the network)",
    )
    p.add_argument(
        "--port", type=int, default=int(env.get("LOCI_PORT", env.get("GRADIO_SERVER_PORT", "7860")))
    )
    p.add_argument(
        "--data-dir", default=None, help="database and files (default ./data, $LOCI_DATA_DIR)"
    )
    p.add_argument(
        "--database-url", default=None, help="any SQLAlchemy URL (default SQLite in the data dir)"
    )
    p.add_argument(
        "--width", type=int, default=None, help="working width of generated frames (512)"
    )
    p.add_argument(
        "--depth",
        default=None,
        help="depth backend: auto (default: Depth Anything V2 when available, else layout), "
        "layout (offline), depth-anything-v2",
    )
    p.add_argument(
        "--synthesis",
        default=None,
        help="synthesis backend: reproject (offline), sd-inpaint, video, auto",
    )
    p.add_argument("--lora", default=None, help="a loci train LoRA folder for the painter")
    p.add_argument(
        "--root-path", default=env.get("LOCI_ROOT_PATH"), help="public sub-path behind a proxy"
    )
    p.add_argument("--concurrent-jobs", type=int, default=None,
                   help="generations running at once in this process (local executor, 1)")  # fmt: skip
    # Scaling out (README, "Scaling out"): where jobs run and where files live.
    p.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="local: threads of this process (default); ray: Ray actors")  # fmt: skip
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster: auto, ray://host:10001 (default: start Ray here)")  # fmt: skip
    p.add_argument("--ray-workers", type=int, default=None,
                   help="Ray actors generating (1; a GPU each when the cluster has GPUs)")  # fmt: skip
    p.add_argument("--ray-lift-workers", type=int, default=None,
                   help="Ray CPU actors for lift and export (0: the generating actors do it)")  # fmt: skip
    p.add_argument("--artifacts", default=None,
                   help="file store: a folder or s3://bucket/prefix (default DATA_DIR/artifacts)")  # fmt: skip
    p.add_argument("--instance", default=None,
                   help="this process's stable name (default studio@HOST:PORT)")  # fmt: skip
    p.add_argument("--cache-mb", type=float, default=None,
                   help="bound of derived files in the data dir's cache (2000, $LOCI_CACHE_MB)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    args = build_parser().parse_args(argv)
    # One line per expected refusal (studio.tabs.common.refuse); tracebacks only for bugs.
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    ctx = StudioContext.from_env(
        data_dir=args.data_dir, database_url=args.database_url, width=args.width,
        depth=args.depth, synthesis=args.synthesis, lora=args.lora, artifacts=args.artifacts,
        executor=args.executor, ray_address=args.ray_address, ray_workers=args.ray_workers,
        ray_lift_workers=args.ray_lift_workers,
        concurrent_jobs=args.concurrent_jobs,
        instance=args.instance or env.get("LOCI_INSTANCE") or f"studio@{gethostname()}:{args.port}",
        cache_max_mb=args.cache_mb, root_path=args.root_path,
    )  # fmt: skip
    app = build_app(ctx)
    # Jobs run on the executor's workers (ctx.concurrent_jobs threads, or Ray actors); Gradio
    # handlers only start them and stream their rows, so they never hold a work slot.
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=args.host, server_port=args.port, root_path=args.root_path,
               **launch_kwargs(ctx))  # fmt: skip


if __name__ == "__main__":
    main()
