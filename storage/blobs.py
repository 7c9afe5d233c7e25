"""Content-addressed artifact store: files named by the sha256 of their bytes, one DB row each.

The store lives in a local folder (the default) or any fsspec URL, e.g. an S3-compatible bucket
``s3://bucket/prefix`` (s3fs; credentials and endpoint from the usual ``AWS_*`` environment
variables, ``AWS_ENDPOINT_URL`` for MinIO / R2 / a local emulator). A file with digest
``abcdef...`` lives at ``<root>/ab/cdef...`` (the first two hex digits are a folder, so no folder
grows too large).

Atomicity: a reader never sees half a file, and nothing is published under a hash before all of
its bytes are there.

- local folder: :func:`storage.atomic.atomic_write_bytes` (temp file in the same folder, fsync,
  rename onto the hash name);
- object store: the object under the hash name is created by one PUT (multipart uploads too
  become visible only when complete), which S3 makes atomic; its size is checked afterwards.

The same content is stored once: putting it again returns the existing row. The file is written
before its row is inserted; if the insert fails, a file this call created is removed again, so a
failed put leaves neither. Downloads stream (:meth:`ArtifactStore.open`,
:meth:`ArtifactStore.copy_to`); an object store can also hand out short-lived presigned URLs
(:meth:`ArtifactStore.presigned_url`) so large files go straight from the bucket to the browser.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError

from storage.atomic import atomic_write_bytes
from storage.db.engine import Database
from storage.db.errors import NotFound, StorageError
from storage.db.models import Artifact, utcnow

__all__ = ["ArtifactStore", "sha256_bytes", "sha256_file", "sha256_stream"]

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(handle: BinaryIO) -> str:
    """The sha256 hex digest of an open binary file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def _check_sha(sha256: str) -> str:
    sha = (sha256 or "").lower()
    if not _SHA_RE.match(sha):
        raise NotFound("That is not a valid file id (a sha256 is 64 hex digits).")
    return sha


def is_remote(url: str | os.PathLike[str]) -> bool:
    """True for an fsspec URL other than a local path (``s3://...``, ``gs://...``, ``memory://``)."""
    text = str(url)
    return "://" in text and not text.startswith("file://")


class ArtifactStore:
    """Files under ``root`` (a folder, or an fsspec URL such as ``s3://bucket/prefix``) plus
    their ``artifacts`` rows in ``db``.

    ``root`` is the local :class:`~pathlib.Path` for a folder and None for an object store;
    ``url`` is always the location as given.
    """

    def __init__(self, root: str | os.PathLike[str], db: Database) -> None:
        self.url = str(root)
        self.db = db
        self.root: Path | None = None
        self.fs: Any = None
        if is_remote(root):
            import fsspec

            try:
                # A fresh client: it reads the credentials and endpoint in force now (fsspec's
                # instance cache would keep the first ones of the process).
                self.fs, self._base = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
            except (ImportError, ValueError) as exc:
                raise StorageError(
                    f"Cannot open the artifact store {self.url}: {exc}. For s3:// install s3fs "
                    "(pip install 'loci[scale]')."
                ) from exc
            self._base = self._base.rstrip("/")
        else:
            self.root = Path(str(root).removeprefix("file://"))
            self.root.mkdir(parents=True, exist_ok=True)

    @property
    def is_local(self) -> bool:
        return self.root is not None

    @staticmethod
    def relpath_for(sha256: str) -> str:
        """Where a digest lives, relative to the root: ``ab/cdef...``."""
        sha = _check_sha(sha256)
        return f"{sha[:2]}/{sha[2:]}"

    def _file(self, sha256: str) -> Path:
        assert self.root is not None
        return self.root / self.relpath_for(sha256)

    def _key(self, relpath: str) -> str:
        return f"{self._base}/{relpath}"

    def _stored_size(self, sha256: str) -> int | None:
        """The size of the stored file, or None when there is none."""
        if self.root is not None:
            path = self._file(sha256)
            return path.stat().st_size if path.is_file() else None
        try:
            return int(self.fs.info(self._key(self.relpath_for(sha256)))["size"])
        except FileNotFoundError:
            return None

    def _publish(self, sha: str, data: bytes) -> None:
        if self.root is not None:
            atomic_write_bytes(self._file(sha), data)  # failure: temp removed, nothing left
            return
        key = self._key(self.relpath_for(sha))
        self.fs.pipe_file(key, data)  # one PUT: the object appears whole or not at all
        self.fs.invalidate_cache(key)
        if self._stored_size(sha) != len(data):
            raise StorageError("The object store did not keep the whole file; try again.")

    def _unpublish(self, sha: str) -> None:
        if self.root is not None:
            self._file(sha).unlink(missing_ok=True)
        else:
            try:
                self.fs.rm_file(self._key(self.relpath_for(sha)))
            except FileNotFoundError:
                pass

    def put_bytes(self, data: bytes, mime: str = "application/octet-stream") -> Artifact:
        """Store ``data`` (once per content) and return its row."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StorageError("Only bytes can be stored as an artifact.")
        data = bytes(data)
        sha = sha256_bytes(data)
        with self.db.read_session() as session:
            existing = session.get(Artifact, sha)
        have = self._stored_size(sha) == len(data)
        if existing is not None and have:
            return existing
        created_file = False
        if not have:
            self._publish(sha, data)
            created_file = True
        try:
            return self._insert_row(sha, len(data), mime)
        except BaseException:
            if created_file and existing is None:
                self._unpublish(sha)
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
        return self._stored_size(sha256) is not None

    def path_of(self, sha256: str) -> Path:
        """The file's path on local disk (NotFound when the row or the file is missing).

        Only for a local store: an object store has no local path (use :meth:`open`,
        :meth:`copy_to` or :meth:`presigned_url`).
        """
        row = self.get(sha256)
        if self.root is None:
            raise StorageError("This artifact store is not on local disk; stream the file.")
        path = self.root / row.relpath
        if not path.is_file():
            raise NotFound("That file's record exists but the file is missing from the store.")
        return path

    def open(self, sha256: str) -> BinaryIO:
        """The stored file opened for binary reading, streamed (the caller closes it)."""
        if self.root is not None:
            return self.path_of(sha256).open("rb")
        row = self.get(sha256)
        try:
            return self.fs.open(self._key(row.relpath), "rb")
        except FileNotFoundError as exc:
            raise NotFound("That file's record exists but the object is missing.") from exc

    def read_bytes(self, sha256: str) -> bytes:
        """The stored file's bytes."""
        if self.root is not None:
            return self.path_of(sha256).read_bytes()
        with self.open(sha256) as handle:
            return handle.read()

    def copy_to(self, sha256: str, target: str | os.PathLike[str]) -> Path:
        """The stored file at ``target`` on local disk, streamed in chunks and published by a
        rename (a hard link when the store is a local folder on the same disk)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            if self.root is not None:
                try:
                    os.link(self.path_of(sha256), tmp)
                except OSError:
                    shutil.copyfile(self.path_of(sha256), tmp)
            else:
                with self.open(sha256) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def presigned_url(
        self, sha256: str, expires_s: int = 300, filename: str | None = None,
        download: bool = True,
    ) -> str | None:  # fmt: skip
        """A short-lived URL that downloads the file straight from the object store (with
        ``filename`` as its name; ``download=False`` lets a browser show it inline), or None for
        a local folder (serve it yourself)."""
        row = self.get(sha256)
        if self.root is not None:
            return None
        extra: dict[str, str] = {"ResponseContentType": row.mime}
        if filename:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[:120]
            kind = "attachment" if download else "inline"
            extra["ResponseContentDisposition"] = f'{kind}; filename="{safe}"'
        return self.fs.url(self._key(row.relpath), expires=int(expires_s), **extra)

    def verify(self, sha256: str) -> bool:
        """True when the stored file exists, has the recorded size and hashes to its name."""
        try:
            row = self.get(sha256)
        except NotFound:
            return False
        if self._stored_size(row.sha256) != row.size:
            return False
        with self.open(row.sha256) as handle:
            return sha256_stream(handle) == row.sha256
