"""The studio's own error type and the small helpers every studio module shares."""

from __future__ import annotations

import math
from typing import Any

from models.depth import DepthError
from models.geometry.cameras import CameraError
from models.manager import ModelError
from models.paths.trajectory import TrajectoryError
from models.pipeline import PipelineError
from models.synthesis import SynthesisError
from models.train.denoiser import TrainError
from models.train.footage import FootageError
from storage.db.errors import Conflict, Forbidden, NotFound
from storage.errors import StorageError

__all__ = [
    "USER_ERRORS",
    "StudioError",
    "checked_number",
    "clean_id",
    "error_message",
    "user_facing",
]

# Errors that mean "the input is bad": the CLI reports them as one line (exit status 2), the
# studio shows their message as is.
USER_ERRORS: tuple[type[BaseException], ...] = (
    StorageError,
    DepthError,
    SynthesisError,
    TrajectoryError,
    PipelineError,
    CameraError,
    ModelError,
    TrainError,
    FootageError,
)


class StudioError(ValueError):
    """A request the studio cannot do, with a message for the person who asked."""


def clean_id(project_id: str | None) -> str:
    """A project id from a form or the API, stripped; StudioError when there is none."""
    pid = (project_id or "").strip()
    if not pid:
        raise StudioError("Open or create a project first.")
    return pid


def checked_number(value: Any, what: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    """``value`` (from a form or the API: a number, a numeric string...) as a float, or an int
    when ``integer``, within ``[lo, hi]``; a StudioError that says the range otherwise. The
    server checks every number itself: UI limits are not a check (the API bypasses them)."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise StudioError(f"{what} must be a number, not {str(value)[:40]!r}.") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise StudioError(f"{what} must be between {lo:g} and {hi:g}; got {str(value)[:40]}.")
    if integer:
        if x != math.floor(x):
            raise StudioError(f"{what} must be a whole number; got {value}.")
        return int(x)
    return x


def error_message(exc: BaseException) -> str:
    """What a failed step records as its error text."""
    if isinstance(exc, GeneratorExit | KeyboardInterrupt):
        return "stopped"
    return str(exc) or type(exc).__name__


def user_facing() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the person using the studio (shown as is)."""
    return (StudioError, NotFound, Forbidden, Conflict, *USER_ERRORS)
