"""Shared plumbing of the repository: share keys, transactions, typed look-ups and key checks.

Keys are ``secrets.token_urlsafe(24)`` (192 random bits), stored only as sha256 hex digests and
compared with :func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.db.engine import Database
from storage.db.errors import Conflict, Forbidden, NotFound
from storage.db.models import HistoryCell, Job, Project

__all__ = ["ACTIVE", "RepositoryBase", "hash_key", "new_key", "view_key_for"]

T = TypeVar("T")
#: Statuses of work that is not finished yet.
ACTIVE = ("pending", "running")


def new_key() -> str:
    """A fresh share key: 24 random bytes (192 bits), URL-safe text."""
    return secrets.token_urlsafe(24)


def view_key_for(edit_key: str) -> str:
    """The view key that belongs to an edit key: HMAC-SHA256(edit key, "view"), 192 bits.

    Whoever holds the edit link can always hand out the read-only link (the database keeps only
    hashes, so the view key could not be shown again otherwise); the view key reveals nothing
    about the edit key.
    """
    mac = hmac.new(edit_key.encode("utf-8"), b"loci-view-key", hashlib.sha256).digest()[:24]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def hash_key(key: str) -> str:
    """The sha256 hex digest stored in place of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class RepositoryBase:
    """Transactions (one per public call) and the look-ups every method shares."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _write(self, fn: Callable[[Session], T]) -> T:
        try:
            with self.db.write_session() as session:
                return fn(session)
        except IntegrityError as exc:
            raise Conflict(
                "That change clashes with what is already saved (it may have been made twice, "
                "or refers to something missing). Reload and try again."
            ) from exc

    def _read(self, fn: Callable[[Session], T]) -> T:
        with self.db.read_session() as session:
            return fn(session)

    @staticmethod
    def _project(session: Session, project_id: str, *, lock: bool = False) -> Project:
        stmt = select(Project).where(Project.id == project_id)
        if lock:
            stmt = stmt.with_for_update()  # PostgreSQL row lock; SQLite already holds the db lock
        project = session.scalars(stmt).first()
        if project is None or project.deleted_at is not None:
            raise NotFound("That project does not exist or was deleted.")
        return project

    @staticmethod
    def _access(project: Project, key: str | None) -> bool:
        """True for the edit key, False for the view key; Forbidden otherwise (constant time)."""
        digest = hash_key(key or "")
        is_edit = hmac.compare_digest(digest, project.edit_key_hash)
        is_view = hmac.compare_digest(digest, project.view_key_hash)
        if not (is_edit or is_view):
            raise Forbidden("That link's key does not open this project. Ask its owner for a link.")
        return is_edit

    def _editable(
        self, session: Session, project_id: str, key: str, *, lock: bool = False
    ) -> Project:
        project = self._project(session, project_id, lock=lock)
        if not self._access(project, key):
            raise Forbidden("This is a view-only link: it cannot change the project.")
        return project

    @staticmethod
    def _cell(session: Session, cell_id: str) -> HistoryCell:
        cell = session.get(HistoryCell, cell_id)
        if cell is None:
            raise NotFound("That step of the history does not exist (it may have been reverted).")
        return cell

    @staticmethod
    def _job(session: Session, job_id: str) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound("That job does not exist.")
        return job

    @staticmethod
    def _running(session: Session, job_id: str, nonce: str | None) -> Job:
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is None:
            raise NotFound("That job does not exist.")
        if job.status != "running":
            raise Conflict(f"This job is {job.status}, not running; stop working on it.")
        if nonce is not None and job.owner_nonce != nonce:
            raise Conflict("This job was taken over by another worker; stop working on it.")
        return job
