"""Repository methods for jobs: claiming, progress, heartbeats, owners, death and resume.

A job's life: ``pending`` (created with its cell, waiting for a worker) -> ``running`` (claimed
by one worker, the *owner*) -> ``done`` / ``failed`` / ``cancelled`` / ``interrupted``. An
interrupted or cancelled job can go back to ``pending`` (:meth:`Jobs.resume_job`).

Atomicity, on SQLite and PostgreSQL alike:

- **one active generation per project**: a unique partial index (``models.Job``) makes the
  database refuse the second pending/running generation of a project, whichever client commits
  second, so a check-then-insert race cannot start two (:class:`GenerationBusy`);
- **claiming**: a worker takes a pending job with ``SELECT ... FOR UPDATE SKIP LOCKED`` and flips
  it to running in the same transaction, so two workers never run one job (SQLite ignores the
  row lock; its ``BEGIN IMMEDIATE`` already serialises writers);
- **owners**: every running job records its :class:`Owner`. A process that starts again under
  its name interrupts what its previous instance left running (:meth:`Jobs.interrupt_owned`);
  a job whose owner's pid is gone on this host, or whose heartbeat is older than a limit, is
  interrupted by whoever looks (:meth:`Jobs.mark_interrupted_stale`); a stale owner's late
  writes are refused (``nonce`` arguments), so it cannot clobber the job's new life.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.db.errors import Conflict, StorageError
from storage.db.frames import FramesAndLinks
from storage.db.models import WORLD_WRITING_KINDS, HistoryCell, Job, new_id, utcnow
from storage.db.repo_base import ACTIVE

__all__ = ["FINAL_JOB_STATUSES", "GenerationBusy", "Jobs", "JobsAndFrames", "Owner", "pid_alive"]

T = TypeVar("T")
FINAL_JOB_STATUSES = ("done", "failed", "cancelled", "interrupted")
RESUMABLE = ("interrupted", "cancelled")
DEAD_OWNER = "The process running this job stopped; it can be resumed."


class GenerationBusy(Conflict):
    """The project already has a generation pending or running."""

    def __init__(self) -> None:
        super().__init__(
            "A generation is already running in this project (maybe in another tab or by a "
            "collaborator). Wait for it, or cancel it, then try again."
        )


@dataclass(frozen=True)
class Owner:
    """Who runs a job: a stable instance name plus a nonce that is new at every start."""

    name: str
    nonce: str
    host: str
    pid: int

    @classmethod
    def this_process(cls, name: str) -> Owner:
        """This process under ``name``, with a fresh nonce."""
        return cls(name[:200], secrets.token_hex(8), socket.gethostname()[:255], os.getpid())


def pid_alive(pid: int | None) -> bool:
    """True when process ``pid`` exists on this host and is not a zombie."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:  # a killed child that nobody reaped yet is a zombie: dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Jobs(FramesAndLinks):
    """Jobs of cells (each call is one transaction)."""

    def _claiming(self, fn: Callable[[Session], T]) -> T:
        """A write that may take a project's generation slot: the partial index's refusal
        becomes :class:`GenerationBusy`, with a message a person can act on."""
        try:
            with self.db.write_session() as session:
                return fn(session)
        except IntegrityError as exc:
            if "uq_jobs_active_generation" in str(exc.orig) or "jobs.project_id" in str(exc.orig):
                raise GenerationBusy() from exc
            raise Conflict("That change clashes with what is already saved; try again.") from exc

    @staticmethod
    def _new_job(session: Session, cell: HistoryCell, total: int | None, status: str,
                 owner: Owner | None) -> Job:  # fmt: skip
        if cell.kind in WORLD_WRITING_KINDS:
            busy = session.scalar(
                select(Job.id).where(Job.project_id == cell.project_id,
                                     Job.kind.in_(WORLD_WRITING_KINDS), Job.status.in_(ACTIVE))
            )  # fmt: skip
            if busy:  # the friendly early answer; the partial index is the guarantee
                raise GenerationBusy()
        now = utcnow()
        job = Job(id=new_id(), cell_id=cell.id, project_id=cell.project_id, kind=cell.kind,
                  status=status, total=total, started_at=now, updated_at=now, heartbeat_at=now)  # fmt: skip
        _set_owner(job, owner)
        session.add(job)
        cell.status, cell.error, cell.updated_at = status, None, now
        session.flush()  # the index check happens here, inside the caller's transaction
        return job

    def create_job(
        self, cell_id: str, total: int | None = None, *, owner: Owner | None = None,
        status: str = "running",
    ) -> Job:  # fmt: skip
        """A job for a cell, ``running`` under ``owner`` (work done in this process) or
        ``pending`` (for a worker to claim); the cell takes the same status.
        :class:`GenerationBusy` when it is a generation and the project already runs one."""
        if status not in ACTIVE:
            raise StorageError("A new job is pending or running.")
        return self._claiming(
            lambda s: self._new_job(s, self._cell(s, cell_id), total, status, owner)
        )

    def start_job(self, job_id: str, owner: Owner) -> Job | None:
        """Claim one pending job for ``owner`` (it becomes running). None when it is not pending
        any more (cancelled, or another worker took it)."""
        return self._write(lambda s: self._start(s, select(Job).where(Job.id == job_id), owner))

    def claim_next_job(self, owner: Owner, kinds: Iterable[str] | None = None) -> Job | None:
        """Claim the oldest pending job (of ``kinds``) for ``owner``; None when there is none."""
        stmt = select(Job)
        if kinds is not None:
            stmt = stmt.where(Job.kind.in_(tuple(kinds)))
        return self._write(lambda s: self._start(s, stmt.order_by(Job.started_at), owner))

    def _start(self, session: Session, stmt, owner: Owner) -> Job | None:  # noqa: ANN001
        stmt = stmt.where(Job.status == "pending").limit(1).with_for_update(skip_locked=True)
        job = session.scalars(stmt).first()
        if job is None:
            return None
        now = utcnow()
        job.status, job.updated_at, job.heartbeat_at = "running", now, now
        _set_owner(job, owner)
        cell = self._cell(session, job.cell_id)
        cell.status, cell.updated_at = "running", now
        return job

    def active_jobs(self, project_id: str) -> list[Job]:
        """Jobs of a project that are pending or running (oldest first)."""
        return self._read(
            lambda s: list(
                s.scalars(
                    select(Job)
                    .where(Job.project_id == project_id, Job.status.in_(ACTIVE))
                    .order_by(Job.started_at)
                )
            )
        )

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

    def update_progress(
        self, job_id: str, frames_done: int, total: int | None = None, *, nonce: str | None = None
    ) -> Job:
        """Record progress atomically (and count as a heartbeat).

        Conflict when the job is no longer running (cancelled, interrupted, finished) or, with
        ``nonce``, no longer owned by the caller: the worker should stop. ``progress`` is
        ``frames_done / total`` clipped to [0, 1].
        """
        if frames_done < 0:
            raise StorageError("frames_done cannot be negative.")

        def run(session: Session) -> Job:
            job = self._running(session, job_id, nonce)
            job.total = total if total is not None else job.total
            job.frames_done = frames_done
            job.progress = min(1.0, frames_done / job.total) if job.total else 0.0
            job.updated_at = job.heartbeat_at = utcnow()
            return job

        return self._write(run)

    def heartbeat(self, job_id: str, *, nonce: str | None = None) -> Job:
        """Mark a running job as alive now (Conflict when it is not running, or not ours)."""

        def run(session: Session) -> Job:
            job = self._running(session, job_id, nonce)
            job.heartbeat_at = utcnow()
            return job

        return self._write(run)

    def interrupt_owned(self, owner: Owner) -> list[Job]:
        """Jobs left running by an earlier instance of ``owner`` (same name, another nonce)
        become interrupted at once. Call when a process starts. Returns them."""
        return self._interrupt(
            lambda now: (Job.owner == owner.name) & (Job.owner_nonce != owner.nonce)
        )

    def mark_interrupted_stale(
        self, older_than: timedelta | float, *, host: str | None = None
    ) -> list[Job]:
        """Running jobs whose owner is dead become interrupted, and so do their cells.

        Dead means: the last heartbeat is older than ``older_than`` (seconds or a timedelta), or,
        with ``host``, the owner ran on that host and its pid is gone. Returns them.
        """
        age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=older_than)
        dead_pids: list[int] = []
        if host is not None:
            local = self._read(
                lambda s: list(
                    s.execute(
                        select(Job.owner_pid).where(Job.status == "running", Job.owner_host == host)
                    ).scalars()
                )
            )
            dead_pids = sorted({p for p in local if p is not None and not pid_alive(p)})
        return self._interrupt(
            lambda now: or_(
                Job.heartbeat_at < now - age,
                (Job.owner_host == host) & Job.owner_pid.in_(dead_pids) if dead_pids else False,
            )
        )

    def _interrupt(self, condition: Callable) -> list[Job]:  # noqa: ANN001
        def run(session: Session) -> list[Job]:
            now = utcnow()
            stmt = select(Job).where(Job.status == "running", condition(now))
            dead = list(session.scalars(stmt.with_for_update(skip_locked=True)))
            for job in dead:
                job.status, job.updated_at, job.finished_at = "interrupted", now, now
                job.error = job.error or DEAD_OWNER
                cell = session.get(HistoryCell, job.cell_id)
                if cell is not None and cell.status in ACTIVE:
                    cell.status, cell.error, cell.updated_at = "interrupted", job.error, now
            return dead

        return self._write(run)

    def resume_job(self, job_id: str, *, owner: Owner | None = None) -> Job:
        """Put an interrupted or cancelled job back to work, keeping its frames_done: pending for
        a worker, or running under ``owner``. GenerationBusy when its project runs another."""

        def run(session: Session) -> Job:
            job = self._job(session, job_id)
            if job.status not in RESUMABLE:
                raise Conflict(
                    f"Only an interrupted or cancelled job can be resumed; this one is {job.status}."
                )
            now = utcnow()
            job.status = "pending" if owner is None else "running"
            job.error, job.finished_at = None, None
            job.updated_at = job.heartbeat_at = now
            _set_owner(job, owner)
            cell = self._cell(session, job.cell_id)
            cell.status, cell.error, cell.updated_at = job.status, None, now
            session.flush()
            return job

        return self._claiming(run)

    def finish_job(
        self, job_id: str, status: str = "done", error: str | None = None, *,
        nonce: str | None = None,
    ) -> Job:  # fmt: skip
        """End a job as done / failed / cancelled / interrupted; its cell takes the same status.

        With ``nonce`` (a worker ending its own job) the job must still be running under that
        nonce (Conflict otherwise: it was cancelled, or declared dead and taken over).
        """
        if status not in FINAL_JOB_STATUSES:
            raise StorageError(
                f"A job ends as one of {', '.join(FINAL_JOB_STATUSES)}, not {status!r}."
            )

        def run(session: Session) -> Job:
            job = self._running(session, job_id, nonce) if nonce else self._job(session, job_id)
            now = utcnow()
            job.status, job.error, job.updated_at = status, error, now
            job.finished_at = now
            if status == "done":
                job.progress = 1.0
            cell = self._cell(session, job.cell_id)
            cell.status, cell.error, cell.updated_at = status, error, now
            return job

        return self._write(run)


#: The name older code imports.
JobsAndFrames = Jobs


def _set_owner(job: Job, owner: Owner | None) -> None:
    job.owner = owner.name if owner else None
    job.owner_nonce = owner.nonce if owner else None
    job.owner_host = owner.host if owner else None
    job.owner_pid = owner.pid if owner else None
