"""Launch the Loci studio: flags/env -> StudioContext -> studio.build_app(ctx).launch()."""

from __future__ import annotations

import argparse
import os

# The studio shares its cores between the web server, sessions and generation jobs. OpenMP's
# default busy-waiting then collapses torch throughput (measured: 2.5 frames/s against 6.2 with
# PASSIVE when another process holds a core; PASSIVE costs 30 % on an idle machine, which
# is why the CLI keeps the default). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from studio.app import StudioContext, build_app, launch_kwargs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    p = argparse.ArgumentParser(description="Loci studio")
    p.add_argument(
        "--host", default=env.get("LOCI_HOST", env.get("GRADIO_SERVER_NAME", "127.0.0.1"))
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
        "--depth", default=None, help="depth backend: layout (offline), depth-anything-v2, auto"
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
    p.add_argument("--concurrent-jobs", type=int, default=1, help="generations running at once")
    args = p.parse_args(argv)
    ctx = StudioContext.from_env(
        data_dir=args.data_dir, database_url=args.database_url, width=args.width,
        depth=args.depth, synthesis=args.synthesis, lora=args.lora,
    )  # fmt: skip
    app = build_app(ctx)
    # Generations share one named slot (see studio/tabs/generate.py); everything else (polls,
    # cancels, previews) runs beside them.
    app.queue(default_concurrency_limit=4)
    for dep in app.fns.values():
        if dep.concurrency_id == "generation":
            dep.concurrency_limit = args.concurrent_jobs
    app.launch(server_name=args.host, server_port=args.port, root_path=args.root_path,
               **launch_kwargs(ctx))  # fmt: skip


if __name__ == "__main__":
    main()
