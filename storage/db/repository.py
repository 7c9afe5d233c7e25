"""Repository: every operation the studio performs on the database, each in its own transaction.

Access control lives here, not in the UI. Each project has an *edit* key
(``secrets.token_urlsafe(24)``: 192 random bits) and a *view* key derived from it by HMAC (so an
editor can always show the read-only link again: :meth:`Repository.view_key`). Both are stored
only as sha256 digests and compared in constant time. Reading needs either key; changing the
project or its history needs the edit key (a view key gets :class:`Forbidden`).

Job, frame and cell-status methods take no key: they are called by the server's own job runner,
for work that a key-checked :meth:`Repository.add_cell` started.

Returned ORM objects are detached snapshots: read their columns, do not expect lazy relationships.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.db.errors import Conflict, Forbidden, NotFound, StorageError
from storage.db.jobs import GenerationBusy, Jobs, Owner
from storage.db.models import (
    CELL_KINDS,
    STATUSES,
    CellArtifact,
    HistoryCell,
    Job,
    Project,
    WorldFrame,
    new_id,
    utcnow,
)
from storage.db.repo_base import ACTIVE, hash_key, new_key, view_key_for

__all__ = [
    "Conflict",
    "Forbidden",
    "GenerationBusy",
    "NotFound",
    "Owner",
    "Repository",
    "hash_key",
    "new_key",
]


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise StorageError("A project needs a name; type one and try again.")
    if len(name) > 200:
        raise StorageError("That project name is too long; keep it under 200 characters.")
    return name


class Repository(Jobs):
    """Projects and their history (key-checked), plus the job/frame methods of the base class.

    Every public method is one transaction. See the module docstring for the key rules.
    """

    # ---- projects -------------------------------------------------------------------------
    def create_project(
        self, name: str, *, forked_from_id: str | None = None
    ) -> tuple[Project, str, str]:
        """Create a project; returns ``(project, view_key, edit_key)``. Keys are shown only now."""
        edit_key = new_key()
        view_key = view_key_for(edit_key)
        project = Project(
            id=new_id(),
            name=_clean_name(name),
            view_key_hash=hash_key(view_key),
            edit_key_hash=hash_key(edit_key),
            forked_from_id=forked_from_id,
        )

        def run(session: Session) -> Project:
            session.add(project)
            return project

        return self._write(run), view_key, edit_key

    def view_key(self, project_id: str, key: str) -> str:
        """The project's view key, for someone holding its edit key (Forbidden otherwise)."""
        self._read(lambda s: self._editable(s, project_id, key))
        return view_key_for(key)

    def open_project(self, project_id: str, key: str) -> tuple[Project, bool]:
        """Returns ``(project, can_edit)``. Wrong key: Forbidden; missing or deleted: NotFound."""

        def run(session: Session) -> tuple[Project, bool]:
            project = self._project(session, project_id)
            return project, self._access(project, key)

        return self._read(run)

    def rename(self, project_id: str, key: str, name: str) -> Project:
        """Rename a project (edit key)."""
        clean = _clean_name(name)

        def run(session: Session) -> Project:
            project = self._editable(session, project_id, key)
            project.name = clean
            project.updated_at = utcnow()
            return project

        return self._write(run)

    def delete_project(self, project_id: str, key: str) -> None:
        """Soft-delete a project (edit key): it stops opening; rows and files stay."""

        def run(session: Session) -> None:
            project = self._editable(session, project_id, key)
            project.deleted_at = project.updated_at = utcnow()

        self._write(run)

    def fork(
        self, project_id: str, key: str, from_cell: str | None = None, name: str | None = None
    ) -> tuple[Project, str, str]:
        """Copy a project's history up to and including ``from_cell`` (all of it when None).

        Either key may fork. Cells, their artifact links and world frames are copied; the files
        themselves are shared by hash, never duplicated. Copied cells that were still running
        become "interrupted" (their job stays with the original). Returns the new project
        and its fresh ``(view_key, edit_key)``.
        """
        edit_key = new_key()
        view_key = view_key_for(edit_key)

        def run(session: Session) -> Project:
            source = self._project(session, project_id)
            self._access(source, key)
            stmt = select(HistoryCell).where(HistoryCell.project_id == source.id)
            if from_cell is not None:
                last = session.get(HistoryCell, from_cell)
                if last is None or last.project_id != source.id:
                    raise NotFound("That step is not part of this project, so it cannot be forked.")
                stmt = stmt.where(HistoryCell.position <= last.position)
            cells = session.scalars(stmt.order_by(HistoryCell.position)).all()
            fork = Project(
                id=new_id(),
                name=_clean_name(name or f"{source.name} (fork)"[:200]),
                view_key_hash=hash_key(view_key),
                edit_key_hash=hash_key(edit_key),
                forked_from_id=source.id,
            )
            session.add(fork)
            session.flush()  # no ORM relationships: flush parents before children explicitly
            id_map = {cell.id: new_id() for cell in cells}
            for cell in cells:
                session.add(
                    HistoryCell(
                        id=id_map[cell.id],
                        project_id=fork.id,
                        position=cell.position,
                        kind=cell.kind,
                        params=dict(cell.params or {}),
                        status="interrupted" if cell.status in ACTIVE else cell.status,
                        parent_cell_id=id_map.get(cell.parent_cell_id or ""),
                        author=cell.author,
                        error=cell.error,
                        created_at=cell.created_at,
                        updated_at=utcnow(),
                    )
                )
                session.flush()  # in position order: a parent row exists before its children
            old_ids = list(id_map)
            for link in session.scalars(
                select(CellArtifact).where(CellArtifact.cell_id.in_(old_ids))
            ):
                session.add(
                    CellArtifact(cell_id=id_map[link.cell_id], sha256=link.sha256, role=link.role)
                )
            for frame in session.scalars(select(WorldFrame).where(WorldFrame.cell_id.in_(old_ids))):
                session.add(
                    WorldFrame(
                        cell_id=id_map[frame.cell_id],
                        frame_index=frame.frame_index,
                        rgb_sha256=frame.rgb_sha256,
                        depth_sha256=frame.depth_sha256,
                        mask_sha256=frame.mask_sha256,
                        K=frame.K,
                        c2w=frame.c2w,
                        memory_coverage=frame.memory_coverage,
                        meta=frame.meta,
                    )
                )
            return fork

        return self._write(run), view_key, edit_key

    # ---- history cells --------------------------------------------------------------------
    def add_cell(
        self,
        project_id: str,
        key: str,
        kind: str,
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        author: str = "",
    ) -> HistoryCell:
        """Append a cell to the history (edit key). Its position is one past the last cell's."""
        return self._write(
            lambda s: self._append_cell(s, project_id, key, kind, params, parent, author)
        )

    def add_job_cell(
        self,
        project_id: str,
        key: str,
        kind: str,
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        author: str = "",
        *,
        total: int | None = None,
        owner: Owner | None = None,
    ) -> tuple[HistoryCell, Job]:
        """Append a cell and its job in one transaction (edit key): ``pending`` for a worker to
        claim, or ``running`` under ``owner``. A refused claim (:class:`GenerationBusy`: the
        project already runs a generation) leaves no cell behind."""

        def run(session: Session) -> tuple[HistoryCell, Job]:
            cell = self._append_cell(session, project_id, key, kind, params, parent, author)
            status = "pending" if owner is None else "running"
            return cell, self._new_job(session, cell, total, status, owner)

        return self._claiming(run)

    def _append_cell(
        self, session: Session, project_id: str, key: str, kind: str,
        params: dict[str, Any] | None, parent: str | None, author: str,
    ) -> HistoryCell:  # fmt: skip
        if kind not in CELL_KINDS:
            raise StorageError(f"Unknown step kind {kind!r}; use one of {', '.join(CELL_KINDS)}.")
        project = self._editable(session, project_id, key, lock=True)
        if parent is not None:
            parent_cell = session.get(HistoryCell, parent)
            if parent_cell is None or parent_cell.project_id != project.id:
                raise NotFound("The step this one builds on is not part of this project.")
        last = session.scalar(
            select(func.max(HistoryCell.position)).where(HistoryCell.project_id == project.id)
        )
        now = utcnow()
        cell = HistoryCell(
            id=new_id(),
            project_id=project.id,
            position=0 if last is None else last + 1,
            kind=kind,
            params=dict(params or {}),
            status="pending",
            parent_cell_id=parent,
            author=author[:200],
            created_at=now,
            updated_at=now,
        )
        session.add(cell)
        project.updated_at = now
        session.flush()
        return cell

    def get_cell(self, cell_id: str) -> HistoryCell:
        """One cell by id (server-internal: no key)."""
        return self._read(lambda s: self._cell(s, cell_id))

    def update_cell_status(
        self, cell_id: str, status: str, error: str | None = None
    ) -> HistoryCell:
        """Set a cell's status (and error text) and bump its ``updated_at`` for pollers."""
        if status not in STATUSES:
            raise StorageError(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")

        def run(session: Session) -> HistoryCell:
            cell = self._cell(session, cell_id)
            cell.status, cell.error, cell.updated_at = status, error, utcnow()
            return cell

        return self._write(run)

    def list_cells(self, project_id: str, key: str) -> list[HistoryCell]:
        """The project's history in order (either key)."""
        return self.cells_since(project_id, key, None)

    def cells_since(self, project_id: str, key: str, since: datetime | None) -> list[HistoryCell]:
        """Cells added or changed strictly after ``since`` (all when None), in order (either key).

        Collaborators poll with the largest ``updated_at`` they have seen. A revert removes a cell
        and bumps the project's ``updated_at``; compare that to notice removals.
        """

        def run(session: Session) -> list[HistoryCell]:
            self._access(self._project(session, project_id), key)
            stmt = select(HistoryCell).where(HistoryCell.project_id == project_id)
            if since is not None:
                stmt = stmt.where(HistoryCell.updated_at > since)
            return list(session.scalars(stmt.order_by(HistoryCell.position)))

        return self._read(run)

    def revert_last_cell(self, project_id: str, key: str) -> HistoryCell:
        """Remove the newest cell (edit key) with its frames, links and jobs; files stay stored.

        A cell whose work is still pending or running cannot be reverted (Conflict): cancel first.
        """

        def run(session: Session) -> HistoryCell:
            project = self._editable(session, project_id, key, lock=True)
            cell = session.scalars(
                select(HistoryCell)
                .where(HistoryCell.project_id == project.id)
                .order_by(HistoryCell.position.desc())
                .limit(1)
            ).first()
            if cell is None:
                raise NotFound("There is nothing to revert: the history is empty.")
            running = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.cell_id == cell.id, Job.status.in_(ACTIVE))
            )
            if cell.status in ACTIVE and running:
                raise Conflict("The last step is still running; cancel it before reverting.")
            for model in (WorldFrame, CellArtifact, Job):
                session.execute(delete(model).where(model.cell_id == cell.id))
            session.delete(cell)
            project.updated_at = utcnow()
            return cell

        return self._write(run)
