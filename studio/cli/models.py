"""``loci models``: every backend, its default model id, and whether its weights are here."""

from __future__ import annotations

import argparse


def cmd_models(args: argparse.Namespace) -> int:
    from studio.backends import list_models

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` to the ``loci`` parser."""
    mo = sub.add_parser("models", help="backends, default model ids, weights present here")
    mo.set_defaults(func=cmd_models)
