"""Repository methods for what jobs produce: artifact links, cell parameters, world frames, and a
key-free read of a project's cells. They take no share key: the server's own workers call them
for work that a key-checked ``Repository.add_cell`` / ``add_job_cell`` started.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.db.errors import NotFound
from storage.db.models import Artifact, CellArtifact, HistoryCell, WorldFrame, utcnow
from storage.db.repo_base import RepositoryBase

__all__ = ["FramesAndLinks"]


class FramesAndLinks(RepositoryBase):
    """Artifact links, cell parameters and world frames (each call is one transaction)."""

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

    def project_cells(self, project_id: str) -> list[HistoryCell]:
        """A project's cells in order, without a key: for workers running a job of that project
        (the request that created the job was key-checked)."""
        return self._read(
            lambda s: list(
                s.scalars(
                    select(HistoryCell)
                    .where(HistoryCell.project_id == project_id)
                    .order_by(HistoryCell.position)
                )
            )
        )

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
        job_id: str | None = None,
        nonce: str | None = None,
        total: int | None = None,
    ) -> WorldFrame:
        """Store one memory frame of a cell (files by hash, ``K`` 3x3, ``c2w`` 4x4 as lists).

        Conflict when that index is already stored (a resumed job starts after ``frames_done``).
        With ``job_id`` (a worker storing its job's frame) the frame and the job's progress are
        one transaction, and it happens only while the job is still running under ``nonce``:
        a worker that was cancelled, or declared dead and replaced, cannot add a frame (the
        fencing that keeps each index written by one owner). The job's ``frames_done`` becomes
        the number of the cell's frames, its heartbeat now.
        """

        def run(session: Session) -> WorldFrame:
            self._cell(session, cell_id)
            job = self._running(session, job_id, nonce) if job_id is not None else None
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
            if job is not None:
                done = session.scalar(
                    select(func.count()).select_from(WorldFrame).where(
                        WorldFrame.cell_id == cell_id)
                )  # fmt: skip
                job.frames_done = int(done)
                job.total = total if total is not None else job.total
                job.progress = min(1.0, job.frames_done / job.total) if job.total else 0.0
                job.updated_at = job.heartbeat_at = utcnow()
            return frame

        return self._write(run)

    def list_frames(self, cell_id: str, after_index: int | None = None) -> list[WorldFrame]:
        """A cell's memory frames by index (only those after ``after_index`` when given: what a
        follower streaming the job has not shown yet)."""

        def run(session: Session) -> list[WorldFrame]:
            stmt = select(WorldFrame).where(WorldFrame.cell_id == cell_id)
            if after_index is not None:
                stmt = stmt.where(WorldFrame.frame_index > after_index)
            return list(session.scalars(stmt.order_by(WorldFrame.frame_index)))

        return self._read(run)


def _tolist(value: Any) -> Any:
    """numpy arrays (or anything with ``tolist``) become plain nested lists for JSON."""
    return value.tolist() if hasattr(value, "tolist") else value
