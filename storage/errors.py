"""Typed errors raised by the storage layer.

Every error derives from ``ValueError`` so callers that only know "bad input" still catch it, and
every message is written for a person who does not know file formats: it says what was wrong and,
where possible, what to do about it. The studio shows these messages verbatim; the CLI prints them
and exits non-zero.
"""

from __future__ import annotations

__all__ = ["BundleError", "PhotoError", "StorageError"]


class StorageError(ValueError):
    """Base class: something on disk (or handed to us as bytes) could not be read or written."""


class PhotoError(StorageError):
    """The input photo is missing, unreadable, too large or too small."""


class BundleError(StorageError):
    """A world bundle folder is missing, incomplete, from a newer version, or would be clobbered."""
