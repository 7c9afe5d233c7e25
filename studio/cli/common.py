"""What every ``loci`` command shares: the usage error and the progress bar."""

from __future__ import annotations

import math
import sys
from typing import Any


class UsageError(ValueError):
    """A command line that cannot work (contradicting or missing options)."""


def check_numbers(args: Any, limits: dict[str, tuple[float, float]]) -> None:
    """Every numeric option within its ``(lo, hi)`` (None: not given), checked before any work:
    a number from the command line must never size an allocation unchecked."""
    for name, (lo, hi) in limits.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if not (math.isfinite(value) and lo <= value <= hi):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be between {lo:g} and {hi:g}, got {value}")


def progress(total: int, desc: str, enabled: bool, unit: str = "frame"):
    """A tqdm bar on stderr (disabled with ``--quiet``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr)
