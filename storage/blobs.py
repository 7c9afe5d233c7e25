"""Content-addressed artifact store: files named by the sha256 of their bytes, one DB row each.

A file with digest ``abcdef...`` lives at ``root/ab/cdef...`` (the first two hex digits are a
folder, so no folder grows too large). Writes go through :func:`storage.atomic.atomic_write_bytes`
(temp file, fsync, rename), so a reader never sees half a file. The same content is stored once:
putting it again returns the existing row. The file is written before its row is inserted; if the
insert fails, a file this call created is removed again, so a failed put leaves neither.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.exc import IntegrityError

from storage.atomic import atomic_write_bytes
from storage.db.engine import Database
from storage.db.errors import NotFound, StorageError
from storage.db.models import Artifact, utcnow

__all__ = ["ArtifactStore", "sha256_bytes", "sha256_file"]

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(sha256: str) -> str:
    sha = (sha256 or "").lower()
    if not _SHA_RE.match(sha):
        raise NotFound("That is not a valid file id (a sha256 is 64 hex digits).")
    return sha


class ArtifactStore:
    """Files under ``root`` plus their ``artifacts`` rows in ``db``."""

    def __init__(self, root: str | os.PathLike[str], db: Database) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = db

    @staticmethod
    def relpath_for(sha256: str) -> str:
        """Where a digest lives, relative to the root: ``ab/cdef...``."""
        sha = _check_sha(sha256)
        return f"{sha[:2]}/{sha[2:]}"

    def _file(self, sha256: str) -> Path:
        return self.root / self.relpath_for(sha256)

    def put_bytes(self, data: bytes, mime: str = "application/octet-stream") -> Artifact:
        """Store ``data`` (once per content) and return its row."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StorageError("Only bytes can be stored as an artifact.")
        data = bytes(data)
        sha = sha256_bytes(data)
        with self.db.read_session() as session:
            existing = session.get(Artifact, sha)
        target = self._file(sha)
        if existing is not None and target.is_file() and target.stat().st_size == len(data):
            return existing
        created_file = False
        if not (target.is_file() and target.stat().st_size == len(data)):
            atomic_write_bytes(target, data)  # failure: temp file removed, nothing left behind
            created_file = True
        try:
            return self._insert_row(sha, len(data), mime)
        except BaseException:
            if created_file and existing is None:
                target.unlink(missing_ok=True)
            raise

    def put_file(
        self, path: str | os.PathLike[str], mime: str = "application/octet-stream"
    ) -> Artifact:
        """Store the contents of the file at ``path`` (read into memory; then as :meth:`put_bytes`)."""
        source = Path(path)
        if not source.is_file():
            raise NotFound(f"There is no file at {source} to store.")
        return self.put_bytes(source.read_bytes(), mime)

    def _insert_row(self, sha: str, size: int, mime: str) -> Artifact:
        row = Artifact(
            sha256=sha,
            size=size,
            mime=mime[:255],
            relpath=self.relpath_for(sha),
            created_at=utcnow(),
        )
        try:
            with self.db.write_session() as session:
                existing = session.get(Artifact, sha)
                if existing is not None:
                    return existing
                session.add(row)
            return row
        except IntegrityError:
            # Another writer inserted the same content between our check and insert: fine.
            with self.db.read_session() as session:
                existing = session.get(Artifact, sha)
            if existing is None:
                raise
            return existing

    def get(self, sha256: str) -> Artifact:
        """The row of a stored file; NotFound when unknown."""
        sha = _check_sha(sha256)
        with self.db.read_session() as session:
            row = session.get(Artifact, sha)
        if row is None:
            raise NotFound("That file is not in the artifact store.")
        return row

    def exists(self, sha256: str) -> bool:
        """True when both the row and the file are there."""
        try:
            self.get(sha256)
        except NotFound:
            return False
        return self._file(sha256).is_file()

    def path_of(self, sha256: str) -> Path:
        """The file's path on disk (NotFound when the row or the file is missing)."""
        row = self.get(sha256)
        path = self.root / row.relpath
        if not path.is_file():
            raise NotFound("That file's record exists but the file is missing from the store.")
        return path

    def open(self, sha256: str) -> BinaryIO:
        """The stored file opened for binary reading (the caller closes it)."""
        return self.path_of(sha256).open("rb")

    def read_bytes(self, sha256: str) -> bytes:
        """The stored file's bytes."""
        return self.path_of(sha256).read_bytes()

    def verify(self, sha256: str) -> bool:
        """True when the stored file exists, has the recorded size and hashes to its name."""
        try:
            row = self.get(sha256)
        except NotFound:
            return False
        path = self.root / row.relpath
        if not path.is_file() or path.stat().st_size != row.size:
            return False
        return sha256_file(path) == row.sha256
