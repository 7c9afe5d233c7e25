"""SQLAlchemy 2.x declarative schema for the studio's persistent state.

Tables: ``projects`` (with hashed share keys and soft delete), ``history_cells`` (the notebook of
steps), ``artifacts`` (one row per content-addressed file), ``cell_artifacts`` (which files a cell
produced, and in what role), ``world_frames`` (the spatial memory, per generation cell) and
``jobs`` (long-running work with progress and heartbeats).

All timestamps are timezone-aware UTC in Python. SQLite has no time zones, so :class:`UTCDateTime`
stores naive UTC there and puts the zone back on the way out; PostgreSQL uses ``timestamptz``.
Only portable column types are used, so any SQLAlchemy URL works without code changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "CELL_KINDS",
    "STATUSES",
    "Artifact",
    "Base",
    "CellArtifact",
    "HistoryCell",
    "Job",
    "Project",
    "UTCDateTime",
    "WORLD_WRITING_KINDS",
    "WorldFrame",
    "new_id",
    "utcnow",
]

#: What a history cell can be (one step of the notebook).
CELL_KINDS: tuple[str, ...] = ("photo", "trajectory", "generation", "lift", "export")
#: Lifecycle of cells and jobs. "interrupted" means the process died; the work is resumable.
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "interrupted", "cancelled")
#: Job kinds that change a project's world: at most one of them is active per project.
WORLD_WRITING_KINDS: tuple[str, ...] = ("generation",)
#: The partial index's condition: "this job holds its project's one generation slot".
ACTIVE_GENERATION_WHERE = "status IN ('pending', 'running') AND kind = 'generation'"

# Deterministic constraint names: Alembic batch migrations on SQLite need them to alter tables.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh random UUID4 as a 36-character string (portable primary key)."""
    return str(uuid.uuid4())


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (naive UTC in SQLite, ``timestamptz`` elsewhere)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous here; pass an aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base with a naming convention for constraints."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), Any: JSON()}


class Project(Base):
    """A world being built. Share keys are never stored: only their sha256 hex digests."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    view_key_hash: Mapped[str] = mapped_column(String(64))
    edit_key_hash: Mapped[str] = mapped_column(String(64))
    forked_from_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class HistoryCell(Base):
    """One step of a project's notebook: its kind, parameters, status and lineage."""

    __tablename__ = "history_cells"
    __table_args__ = (
        UniqueConstraint("project_id", "position", name="uq_history_cells_project_position"),
        Index("ix_history_cells_project_updated", "project_id", "updated_at"),
        CheckConstraint(_in_list("kind", CELL_KINDS), name="kind"),
        CheckConstraint(_in_list("status", STATUSES), name="status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("projects.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    parent_cell_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("history_cells.id", ondelete="SET NULL"), nullable=True
    )
    author: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """One file in the content-addressed store, named by the sha256 of its bytes."""

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mime: Mapped[str] = mapped_column(String(255))
    relpath: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CellArtifact(Base):
    """Links a cell to a file it produced, in a role ("photo", "frame", "video", "splats", ...)."""

    __tablename__ = "cell_artifacts"

    cell_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("history_cells.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("artifacts.sha256", ondelete="RESTRICT"),
        primary_key=True,
        index=True,
    )
    role: Mapped[str] = mapped_column(String(50), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorldFrame(Base):
    """A frame of spatial memory: files for rgb/depth/mask, intrinsics ``K`` and pose ``c2w``."""

    __tablename__ = "world_frames"
    __table_args__ = (
        UniqueConstraint("cell_id", "frame_index", name="uq_world_frames_cell_index"),
        CheckConstraint("frame_index >= 0", name="frame_index_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cell_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("history_cells.id", ondelete="CASCADE")
    )
    frame_index: Mapped[int] = mapped_column(Integer)
    rgb_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("artifacts.sha256"))
    depth_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("artifacts.sha256"), nullable=True
    )
    mask_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("artifacts.sha256"), nullable=True
    )
    K: Mapped[Any] = mapped_column(JSON)
    c2w: Mapped[Any] = mapped_column(JSON)
    memory_coverage: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The frame's generation record: retrieved frame ids, in_memory, routed coverage, timings.
    meta: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """Long-running work for a cell: progress is persisted as frames finish; heartbeats show life.

    ``project_id`` and ``kind`` copy the cell's so that the database itself can refuse a second
    active generation in a project: a unique *partial* index on ``project_id`` over the jobs
    that are pending or running generations (SQLite and PostgreSQL both have partial indexes).
    Two clients inserting at the same moment cannot both succeed, whatever the isolation level.

    The owner columns say which process runs the job: ``owner`` is a stable instance name (e.g.
    ``studio@host:7860`` or ``loci-worker-0``), ``owner_nonce`` is random per start of that
    process, ``owner_host`` / ``owner_pid`` locate it. A process that starts again under the same
    name interrupts every job its previous instance (another nonce) left active; a process on the
    same host whose pid is gone is dead at once; any other silent owner is judged by heartbeat age.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index(
            "uq_jobs_active_generation",
            "project_id",
            unique=True,
            sqlite_where=text(ACTIVE_GENERATION_WHERE),
            postgresql_where=text(ACTIVE_GENERATION_WHERE),
        ),
        CheckConstraint(_in_list("status", STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cell_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("history_cells.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("projects.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="running")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    owner_nonce: Mapped[str | None] = mapped_column(String(32), nullable=True)
    owner_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
