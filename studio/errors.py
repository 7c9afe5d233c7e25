"""The studio's own error type and the small helpers every studio module shares."""

from __future__ import annotations

__all__ = ["StudioError", "clean_id", "error_message"]


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
