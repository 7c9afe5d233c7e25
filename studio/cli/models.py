"""``loci models``: every backend, its default model id, and whether its weights are here."""

from __future__ import annotations

import argparse


def cmd_models(args: argparse.Namespace) -> int:
    from studio.backends import list_models

    if args.vram_gb is not None:
        return _plans(args.vram_gb)
    rows = list_models()
    print(f"{'kind':10s} {'backend':18s} {'default model':46s} {'weights':11s} {'size':24s} note")
    for r in rows:
        print(
            f"{r['kind']:10s} {r['backend']:18s} {r['default_model']:46s} {r['weights']:11s} "
            f"{r['size']:24s} {r['note']}"
        )
    for r in rows:
        if r["where"] != "-":
            print(f"{r['backend']} weights: {r['where']}")
    print(
        "sizes: parameters (main model + text/image encoders and VAE); GB for bf16 weights. "
        "Weights load from the Hugging Face cache or a folder given with --model."
    )
    return 0


def _plans(budget_gb: float) -> int:
    from studio.evaluation.bench_painters import painter_plans

    print(f"VRAM plans for a {budget_gb:g} GiB GPU (estimates from the published configs; "
          "1 context + 16 new frames per chunk, 30 steps, guidance on):")  # fmt: skip
    print(f"{'model':38s} {'size':>9s} {'placement':14s} {'tiling':6s} {'peak GiB':>8s} "
          f"{'host GiB':>8s} {'s/frame':>7s}")  # fmt: skip
    for r in painter_plans(budget_gb):
        if "error" in r:
            print(f"{r['model']:38s} {r['size']:>9s} does not fit: {r['error'][:60]}...")
            continue
        print(f"{r['model']:38s} {r['size']:>9s} {r['mode']:14s} "
              f"{'on' if r['vae_tiling'] else 'off':6s} {r['peak_gb']:8.1f} {r['host_gb']:8.1f} "
              f"{r['s_per_frame']:7.1f}")  # fmt: skip
    print("time: counted FLOPs at an assumed 100 TFLOP/s effective bf16 (an RTX 4090-class card)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` to the ``loci`` parser."""
    mo = sub.add_parser("models", help="backends, default model ids, weights present here")
    mo.add_argument("--vram-gb", type=float, default=None,
                    help="print the VRAM planner's estimates for the Wan painters at this budget")  # fmt: skip
    mo.set_defaults(func=cmd_models)
