"""``loci models``: every backend, its default model id, and whether its weights are here."""

from __future__ import annotations

import argparse


def cmd_models(args: argparse.Namespace) -> int:
    from studio.backends import list_models

    rows = list_models()
    print(f"{'kind':10s} {'backend':18s} {'default model':48s} {'weights':11s} note")
    for r in rows:
        print(
            f"{r['kind']:10s} {r['backend']:18s} {r['default_model']:48s} {r['weights']:11s} "
            f"{r['note']}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` to the ``loci`` parser."""
    mo = sub.add_parser("models", help="backends, default model ids, weights present here")
    mo.set_defaults(func=cmd_models)
