"""What every ``loci`` command shares: the usage error and the progress bar."""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """A command line that cannot work (contradicting or missing options)."""


def progress(total: int, desc: str, enabled: bool, unit: str = "frame"):
    """A tqdm bar on stderr (disabled with ``--quiet``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr)
