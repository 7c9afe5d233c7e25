"""The studio's own error type and the small helpers every studio module shares."""

from __future__ import annotations

from models.depth import DepthError
from models.geometry.cameras import CameraError
from models.manager import ModelError
from models.paths.trajectory import TrajectoryError
from models.pipeline import PipelineError
from models.synthesis import SynthesisError
from storage.db.errors import Conflict, Forbidden, NotFound
from storage.errors import StorageError

__all__ = ["USER_ERRORS", "StudioError", "clean_id", "error_message", "user_facing"]

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
)


class StudioError(ValueError):
    """A request the studio cannot do, with a message for the person who asked."""


def clean_id(project_id: str | None) -> str:
    """A project id from a form or the API, stripped; StudioError when there is none."""
    pid = (project_id or "").strip()
    if not pid:
        raise StudioError("Open or create a project first.")
    return pid


def error_message(exc: BaseException) -> str:
    """What a failed step records as its error text."""
    if isinstance(exc, GeneratorExit | KeyboardInterrupt):
        return "stopped"
    return str(exc) or type(exc).__name__


def user_facing() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the person using the studio (shown as is)."""
    return (StudioError, NotFound, Forbidden, Conflict, *USER_ERRORS)
