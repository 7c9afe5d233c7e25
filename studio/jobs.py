"""Generation jobs, front-end side: create them, stream them, cancel and resume them.

A generation is a ``jobs`` row for a generation cell. :meth:`GenerationJobs.generate` creates
the cell and a *pending* job in one transaction (the database refuses a second active
generation in the project with ``storage.db.GenerationBusy``), hands it to the executor
(:mod:`studio.executors`: worker threads, or Ray actors), and streams it by following the job's
rows (:meth:`GenerationJobs.follow`): each frame a worker stored becomes one update, read back
from the database and the artifact store. Closing the stream (a closed page, a restarted
front-end) does not stop the generation; any front-end can follow it.

Cancelling marks the job and the worker stops at its next frame; a dead worker (its process
restarted, its pid gone, or its heartbeat silent for ``stale_after_s``) leaves the job
"interrupted". Both keep every finished frame, and :meth:`GenerationJobs.resume` carries on
from the last stored frame with the memory rebuilt exactly.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.pipeline import FrameEvent
from storage.db import Conflict, Job, WorldFrame
from studio.errors import StudioError, clean_id
from studio.world_store import frame_camera, load_rgb, load_state, read_mask

__all__ = ["CHUNK_FRAMES", "GenerationJobs", "GenerationUpdate"]

CHUNK_FRAMES = 8  # frames per streamed video chunk
ACTIVE = ("pending", "running")


@dataclass
class GenerationUpdate:
    """One step of a running generation, for streaming to the browser or an API client."""

    cell_id: str
    job_id: str
    status: str  # "pending", "running", then "done" / "cancelled" / "failed" / "interrupted"
    frames_done: int
    total: int
    elapsed_s: float
    eta_s: float | None
    event: FrameEvent | None = None
    chunk: Path | None = None  # a finished video chunk (mp4) of the newest frames
    message: str = ""


class GenerationJobs:
    """Generation methods of :class:`studio.service.Studio` (which provides repo, store, ctx,
    executor, world(), trajectory_of() and require_edit())."""

    # ---- generation ---------------------------------------------------------------------------
    def generate(
        self,
        project_id: str,
        key: str,
        trajectory_cell: str | None = None,
        use_memory: bool = True,
        author: str = "",
        backends: dict | None = None,
    ) -> Iterator[GenerationUpdate]:
        """Generate the frames of a planned path (default: the newest one), as a job.

        ``backends``: this generation's own depth / painter choice (see ``Studio.pipeline``),
        recorded with the step so a resume paints the same way. Yields one update per finished
        frame (already stored), then a final one.
        """
        pid = clean_id(project_id)
        self.require_edit(pid, key)
        ws = self.world(pid, key)
        self.reap()
        trajs = [c for c in ws.cells if c.kind == "trajectory" and c.position > ws.photo.position]
        traj_cell = next((c for c in trajs if c.id == trajectory_cell), None) if trajectory_cell \
            else (trajs[-1] if trajs else None)  # fmt: skip
        if traj_cell is None:
            raise StudioError("Plan a camera path first (Trajectory tab), then generate along it.")
        cams = self.trajectory_of(traj_cell.id).cameras[1:]
        params = {"trajectory": traj_cell.id, "frames": len(cams), "use_memory": bool(use_memory),
                  "first_index": len(ws.frames)}  # fmt: skip
        if backends:
            params["backends"] = backends  # a resume or re-run uses the same ones
        # A bad choice fails before the step, checked where the work runs (a worker's models).
        self.executor.call("check_backends", use_memory, backends)
        _, job = self.repo.add_job_cell(pid, key, "generation", params, parent=traj_cell.id,
                                        author=author, total=len(cams))  # fmt: skip
        self.executor.submit(job.id)
        yield from self.follow(job.id)

    def resume(self, project_id: str, key: str, cell_id: str) -> Iterator[GenerationUpdate]:
        """Carry on an interrupted (or cancelled) generation from its last stored frame."""
        pid = clean_id(project_id)
        self.require_edit(pid, key)
        self.reap()
        ws = self.world(pid, key)
        cell = next((c for c in ws.cells if c.id == cell_id), None)
        if cell is None or cell.kind != "generation":
            raise StudioError("Only a generation step can be resumed.")
        job = self.repo.latest_job(cell.id)
        if cell.status not in ("interrupted", "cancelled") or job is None:
            raise StudioError(
                f"This generation is {cell.status}; only an interrupted or cancelled one resumes."
            )
        done = sum(1 for f in ws.frames if f.cell_id == cell.id)
        if done >= int(cell.params.get("frames", 0)):
            raise StudioError("This generation has all its frames already; nothing to resume.")
        later = [c for c in ws.cells if c.kind == "generation" and c.position > cell.position]
        if later:
            raise StudioError(
                "A later generation builds on this one, so it cannot be resumed; plan a new path."
            )
        self.repo.resume_job(job.id)  # GenerationBusy when another generation runs
        self.executor.submit(job.id)
        yield from self.follow(job.id)

    def cancel(self, project_id: str, key: str) -> int:
        """Cancel the project's pending or running generation(s); their finished frames stay and
        the step can be resumed. Returns how many were cancelled."""
        pid = clean_id(project_id)
        self.require_edit(pid, key)
        n = 0
        for job in self.repo.active_jobs(pid):
            try:
                self.repo.finish_job(
                    job.id, "cancelled", "Cancelled; every finished frame is kept."
                )
                n += 1
            except Conflict:
                pass
        return n

    def watch(self, project_id: str, key: str) -> Iterator[GenerationUpdate]:
        """Follow the project's running generation from here (either key: a collaborator, a
        second front-end, a reopened page). StudioError when nothing is running."""
        pid = clean_id(project_id)
        self.repo.open_project(pid, key)  # either key may watch; a wrong one is Forbidden
        self.reap()
        jobs = [j for j in self.repo.active_jobs(pid) if j.kind == "generation"]
        if not jobs:
            raise StudioError("No generation is running in this project.")
        yield from self.follow(jobs[0].id)

    def reap(self) -> list[Job]:
        """Interrupt running jobs whose worker is dead (pid gone on this host, or no heartbeat
        for ``stale_after_s``), so nobody waits on them."""
        return self.repo.mark_interrupted_stale(self.ctx.stale_after_s, host=self.owner.host)

    # ---- streaming by following the job's rows ------------------------------------------------
    def follow(self, job_id: str, poll_s: float | None = None) -> Iterator[GenerationUpdate]:
        """Stream a job as its worker stores frames: one update per new frame (read back from the
        database and store), video chunks every ``CHUNK_FRAMES`` frames, then a final update;
        one "pending" update when no worker has taken the job after a second.

        Starts after the frames already stored (a resumed or watched job). Works from any
        process on the same database and store; stopping the iteration leaves the job running.
        """
        poll = self.ctx.poll_s if poll_s is None else poll_s
        job = self.repo.get_job(job_id)
        cell = self.repo.get_cell(job.cell_id)
        total = int(cell.params.get("frames") or job.total or 0)
        stored = self.repo.list_frames(cell.id)
        last = stored[-1].frame_index if stored else None
        done = done_before = len(stored)
        chunk_dir = self.ctx.chunks_dir / f"{job_id}-{uuid.uuid4().hex[:8]}"
        _remove_old_dirs(chunk_dir.parent, older_than_s=600)  # streamed chunks are transient
        pending: list[np.ndarray] = []
        t0 = time.perf_counter()
        next_reap = time.monotonic() + 2.0
        waiting = False
        while True:
            job = self.repo.get_job(job_id)  # read before the frames: none can be missed
            for f in self.repo.list_frames(cell.id, after_index=last):
                last, done = f.frame_index, done + 1
                event = self._event(f)
                pending.append(event.rgb)
                chunk = None
                if len(pending) == CHUNK_FRAMES or done == total:
                    chunk = _write_chunk(chunk_dir / f"{done:06d}.mp4", pending)
                    pending = []
                elapsed = time.perf_counter() - t0
                rate = (done - done_before) / max(elapsed, 1e-6)
                yield GenerationUpdate(cell.id, job_id, "running", done, total, elapsed,
                                       (total - done) / rate if rate else None, event, chunk)  # fmt: skip
            if job.status not in ACTIVE:
                break
            if job.status == "pending" and not waiting and time.perf_counter() - t0 > 1.0:
                waiting = True  # all workers are busy: say so rather than look stuck
                yield GenerationUpdate(cell.id, job_id, "pending", done, total,
                                       time.perf_counter() - t0, None,
                                       message="Waiting for a free worker…")  # fmt: skip
            if time.monotonic() > next_reap:
                self.reap()
                next_reap = time.monotonic() + 2.0
            time.sleep(poll)
        chunk = _write_chunk(chunk_dir / f"{done:06d}.mp4", pending) if pending else None
        message = "" if job.status == "done" else (job.error or "")
        if job.status == "cancelled":
            message = "Cancelled; every finished frame is kept. Resume goes on from there."
        yield GenerationUpdate(cell.id, job_id, job.status, done, total,
                               time.perf_counter() - t0, 0.0, None, chunk, message)  # fmt: skip

    def _event(self, f: WorldFrame) -> FrameEvent:
        """A stored frame as the :class:`FrameEvent` its worker produced."""
        rgb = load_rgb(self.store, f)
        meta = f.meta or {}
        depth = load_state(self.store, f)["depth"]
        mask = read_mask(self.store, f)
        return FrameEvent(
            index=f.frame_index,
            camera=frame_camera(f, rgb.shape[1], rgb.shape[0]),
            rgb=rgb,
            depth=depth,
            source_mask=mask > 0 if mask is not None else np.zeros(rgb.shape[:2], bool),
            retrieved=list(meta.get("retrieved", [])),
            memory_coverage=float(f.memory_coverage or 0.0),
            timings=dict(meta.get("timings", {})),
            in_memory=bool(meta.get("in_memory", False)),
            routed_coverage=float(meta.get("routed_coverage", 1.0)),
        )

    # ---- after a generation -------------------------------------------------------------------
    def store_cell_video(self, cell_id: str) -> None:
        """The step's walkthrough (all its frames so far) as a "video" artifact of the cell."""
        from storage.formats.video import VideoStream

        frames = self.repo.list_frames(cell_id)
        if not frames:
            return
        first = load_rgb(self.store, frames[0])
        tmp = self.ctx.cache_dir / "videos" / f"{cell_id}-{uuid.uuid4().hex[:8]}.mp4"
        with VideoStream(tmp, first.shape[1], first.shape[0]) as video:
            for f in frames:
                video.write(load_rgb(self.store, f))
        art = self.store.put_file(tmp, "video/mp4")
        # Links are additive (a resumed step gets a longer video); readers take the newest.
        self.repo.link_artifact(cell_id, art.sha256, "video")
        tmp.unlink(missing_ok=True)


def _write_chunk(path: Path, frames: list[np.ndarray]) -> Path:
    from storage.formats.video import VideoStream

    with VideoStream(path, frames[0].shape[1], frames[0].shape[0]) as video:
        for rgb in frames:
            video.write(rgb)
    return path


def _remove_old_dirs(parent: Path, older_than_s: float) -> None:
    if not parent.is_dir():
        return
    cutoff = time.time() - older_than_s
    for d in parent.iterdir():
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass  # another process removed it first
