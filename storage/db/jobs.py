"""Repository methods for the job runner: artifact links, jobs (progress, heartbeats, stale
detection, resume) and world frames. They take no share key: the server calls them for work that
a key-checked ``Repository.add_cell`` started.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.db.errors import Conflict, NotFound, StorageError
from storage.db.models import Artifact, CellArtifact, HistoryCell, Job, WorldFrame, new_id, utcnow
from storage.db.repo_base import ACTIVE, RepositoryBase

__all__ = ["FINAL_JOB_STATUSES", "JobsAndFrames"]

FINAL_JOB_STATUSES = ("done", "failed", "cancelled", "interrupted")


class JobsAndFrames(RepositoryBase):
    """Artifact links, jobs and world frames (each call is one transaction)."""

    # ---- artifact links -------------------------------------------------------------------
    def link_artifact(self, cell_id: str, sha256: str, role: str) -> CellArtifact:
        """Record that ``cell_id`` produced the stored file ``sha256`` in ``role`` (idempotent)."""

        def run(session: Session) -> CellArtifact:
            self._cell(session, cell_id)
            if session.get(Artifact, sha256) is None:
                raise NotFound("That file is not in the artifact store.")
            link = session.get(CellArtifact, (cell_id, sha256, role))
            if link is None:
                link = CellArtifact(cell_id=cell_id, sha256=sha256, role=role)
                session.add(link)
            return link

        return self._write(run)

    def cell_artifacts(self, cell_id: str, role: str | None = None) -> list[CellArtifact]:
        """The files a cell produced (optionally one role), oldest first."""

        def run(session: Session) -> list[CellArtifact]:
            stmt = select(CellArtifact).where(CellArtifact.cell_id == cell_id)
            if role is not None:
                stmt = stmt.where(CellArtifact.role == role)
            return list(
                session.scalars(stmt.order_by(CellArtifact.created_at, CellArtifact.sha256))
            )

        return self._read(run)

    def update_cell_params(self, cell_id: str, params: dict[str, Any]) -> HistoryCell:
        """Merge ``params`` into a cell's parameters (results its work learned, e.g. the seed's
        world metadata) and bump ``updated_at`` so collaborators' pollers see it."""

        def run(session: Session) -> HistoryCell:
            cell = self._cell(session, cell_id)
            cell.params = {**(cell.params or {}), **params}
            cell.updated_at = utcnow()
            return cell

        return self._write(run)

    # ---- jobs -----------------------------------------------------------------------------
    def create_job(self, cell_id: str, total: int | None = None) -> Job:
        """Start a running job for a cell (the cell becomes "running"); Conflict if one is active."""

        def run(session: Session) -> Job:
            cell = self._cell(session, cell_id)
            active = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.cell_id == cell_id, Job.status.in_(ACTIVE))
            )
            if active:
                raise Conflict("This step is already running.")
            now = utcnow()
            job = Job(id=new_id(), cell_id=cell_id, status="running", total=total,
                      started_at=now, updated_at=now, heartbeat_at=now)  # fmt: skip
            session.add(job)
            cell.status, cell.error, cell.updated_at = "running", None, now
            return job

        return self._write(run)

    def active_jobs(self, project_id: str) -> list[Job]:
        """Jobs of a project's cells that are pending or running (oldest first)."""

        def run(session: Session) -> list[Job]:
            stmt = (
                select(Job)
                .join(HistoryCell, HistoryCell.id == Job.cell_id)
                .where(HistoryCell.project_id == project_id, Job.status.in_(ACTIVE))
                .order_by(Job.started_at)
            )
            return list(session.scalars(stmt))

        return self._read(run)

    def latest_job(self, cell_id: str) -> Job | None:
        """The newest job of a cell, or None."""
        jobs = self.jobs_for_cell(cell_id)
        return jobs[-1] if jobs else None

    def get_job(self, job_id: str) -> Job:
        """One job by id."""
        return self._read(lambda s: self._job(s, job_id))

    def jobs_for_cell(self, cell_id: str) -> list[Job]:
        """Every job of a cell, oldest first."""
        return self._read(
            lambda s: list(
                s.scalars(select(Job).where(Job.cell_id == cell_id).order_by(Job.started_at))
            )
        )

    def update_progress(self, job_id: str, frames_done: int, total: int | None = None) -> Job:
        """Record progress atomically (and count as a heartbeat).

        Conflict when the job is no longer running (cancelled, interrupted, finished): the worker
        should stop. ``progress`` is ``frames_done / total`` clipped to [0, 1].
        """
        if frames_done < 0:
            raise StorageError("frames_done cannot be negative.")

        def run(session: Session) -> Job:
            job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
            if job is None:
                raise NotFound("That job does not exist.")
            if job.status != "running":
                raise Conflict(f"This job is {job.status}, not running; stop working on it.")
            job.total = total if total is not None else job.total
            job.frames_done = frames_done
            job.progress = min(1.0, frames_done / job.total) if job.total else 0.0
            job.updated_at = job.heartbeat_at = utcnow()
            return job

        return self._write(run)

    def heartbeat(self, job_id: str) -> Job:
        """Mark a running job as alive now (Conflict when it is not running)."""

        def run(session: Session) -> Job:
            job = self._job(session, job_id)
            if job.status != "running":
                raise Conflict(f"This job is {job.status}, not running; stop working on it.")
            job.heartbeat_at = utcnow()
            return job

        return self._write(run)

    def mark_interrupted_stale(self, older_than: timedelta | float) -> list[Job]:
        """Jobs still pending/running whose last heartbeat is older than ``older_than`` (seconds or
        a timedelta) become "interrupted", and so do their cells. Call at start-up. Returns them."""
        age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=older_than)

        def run(session: Session) -> list[Job]:
            now = utcnow()
            stale = list(
                session.scalars(
                    select(Job)
                    .where(Job.status.in_(ACTIVE), Job.heartbeat_at < now - age)
                    .with_for_update()
                )
            )
            for job in stale:
                job.status, job.updated_at = "interrupted", now
                job.error = job.error or "The process running this job stopped; it can be resumed."
                cell = session.get(HistoryCell, job.cell_id)
                if cell is not None and cell.status in ACTIVE:
                    cell.status, cell.updated_at = "interrupted", now
            return stale

        return self._write(run)

    def resume_job(self, job_id: str) -> Job:
        """Put an interrupted job back to running (keeping its frames_done); its cell too."""

        def run(session: Session) -> Job:
            job = self._job(session, job_id)
            if job.status != "interrupted":
                raise Conflict(f"Only an interrupted job can be resumed; this one is {job.status}.")
            now = utcnow()
            job.status, job.error, job.finished_at = "running", None, None
            job.updated_at = job.heartbeat_at = now
            cell = self._cell(session, job.cell_id)
            cell.status, cell.error, cell.updated_at = "running", None, now
            return job

        return self._write(run)

    def finish_job(self, job_id: str, status: str = "done", error: str | None = None) -> Job:
        """End a job as done / failed / cancelled / interrupted; its cell takes the same status."""
        if status not in FINAL_JOB_STATUSES:
            raise StorageError(
                f"A job ends as one of {', '.join(FINAL_JOB_STATUSES)}, not {status!r}."
            )

        def run(session: Session) -> Job:
            job = self._job(session, job_id)
            now = utcnow()
            job.status, job.error, job.updated_at = status, error, now
            job.finished_at = now
            if status == "done":
                job.progress = 1.0
            cell = self._cell(session, job.cell_id)
            cell.status, cell.error, cell.updated_at = status, error, now
            return job

        return self._write(run)

    # ---- world frames ---------------------------------------------------------------------
    def add_frame(
        self,
        cell_id: str,
        frame_index: int,
        rgb_sha256: str,
        K: Any,
        c2w: Any,
        *,
        depth_sha256: str | None = None,
        mask_sha256: str | None = None,
        memory_coverage: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> WorldFrame:
        """Store one memory frame of a cell (files by hash, ``K`` 3x3, ``c2w`` 4x4 as lists).

        Conflict when that index is already stored (a resumed job starts after ``frames_done``).
        """

        def run(session: Session) -> WorldFrame:
            self._cell(session, cell_id)
            for sha in (rgb_sha256, depth_sha256, mask_sha256):
                if sha is not None and session.get(Artifact, sha) is None:
                    raise NotFound("A file of this frame is not in the artifact store.")
            frame = WorldFrame(
                cell_id=cell_id,
                frame_index=frame_index,
                rgb_sha256=rgb_sha256,
                depth_sha256=depth_sha256,
                mask_sha256=mask_sha256,
                K=_tolist(K),
                c2w=_tolist(c2w),
                memory_coverage=None if memory_coverage is None else float(memory_coverage),
                meta=meta,
            )
            session.add(frame)
            session.flush()
            return frame

        return self._write(run)

    def list_frames(self, cell_id: str) -> list[WorldFrame]:
        """A cell's memory frames by index."""
        return self._read(
            lambda s: list(
                s.scalars(
                    select(WorldFrame)
                    .where(WorldFrame.cell_id == cell_id)
                    .order_by(WorldFrame.frame_index)
                )
            )
        )


def _tolist(value: Any) -> Any:
    """numpy arrays (or anything with ``tolist``) become plain nested lists for JSON."""
    return value.tolist() if hasattr(value, "tolist") else value
