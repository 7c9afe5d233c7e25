"""Typed errors of the database layer, with messages a person can act on.

All derive from :class:`storage.errors.StorageError` (itself a ``ValueError``), so callers that only
know "bad input" still catch them. The studio shows the message as-is.
"""

from __future__ import annotations

from storage.errors import StorageError

__all__ = ["Conflict", "Forbidden", "NotFound", "StorageError"]


class NotFound(StorageError):
    """The project, cell, job or artifact does not exist (or the project was deleted)."""


class Forbidden(StorageError):
    """The key given does not allow this: a wrong key, or a view-only key trying to change things."""


class Conflict(StorageError):
    """The change clashes with the current state (e.g. a job already running, a duplicate frame)."""
