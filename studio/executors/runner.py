"""The worker side of jobs: claim a pending job, run it, persist every frame before reporting it.

The same code runs in every kind of worker: a thread of the studio process (``local``) or a Ray
actor on another machine (``ray``). A worker needs only the job's id and the shared database and
artifact store; it rebuilds the world its job continues from stored frames (bit for bit, so a
resumed job gives exactly the frames an uninterrupted one would have), and it writes:

- each finished frame: files, then the ``world_frames`` row together with the job's progress (a
  heartbeat too), in one transaction that succeeds only while the job is still running under
  this worker's nonce (:func:`studio.world_store.save_frame`). Front-ends follow these rows;
- a heartbeat every ``heartbeat_s`` while a slow frame is computed;
- the end: done / failed / cancelled, guarded by the worker's nonce, so a worker that was
  declared dead and replaced cannot overwrite its successor's work.

A cancel is seen at the next frame's write (the job is no longer running) and stops the loop;
every finished frame stays, and the step can be resumed from there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from storage.db import Conflict, Job, NotFound, Owner
from studio.errors import error_message
from studio.state import WorldState
from studio.world_store import save_frame

if TYPE_CHECKING:
    from studio.service import Studio

__all__ = ["JobRunner"]

log = logging.getLogger("loci.jobs")


class JobRunner:
    """Runs jobs of ``studio``'s database under ``owner`` (this process's identity)."""

    def __init__(self, studio: Studio, owner: Owner) -> None:
        self.studio = studio
        self.owner = owner
        #: Called after each stored frame with (job_id, frames_done); tests and benchmarks hook
        #: in here (e.g. to kill a worker mid-run at a known point).
        self.on_frame: Callable[[str, int], None] | None = None
        #: Set when this process shuts down: running jobs stop after their current frame and
        #: are left "interrupted" (resumable), not half-written.
        self.stopping = threading.Event()

    # ---- the pull loop ------------------------------------------------------------------------
    def serve(
        self, stop: threading.Event, wake: threading.Event, kinds: Iterable[str] = ("generation",)
    ) -> None:
        """Claim and run pending jobs until ``stop`` is set; sleep on ``wake`` (set by
        ``submit``) or at most ``poll_s`` between empty polls."""
        kinds = tuple(kinds)
        backoff = 0.0
        while not stop.is_set():
            try:
                job = self.studio.repo.claim_next_job(self.owner, kinds)
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - the database may be restarting: retry
                if not backoff:
                    log.warning("claiming a job failed (%s); retrying with back-off", exc)
                backoff = min(max(backoff * 2, 0.5), 10.0)
                job = None
            if job is None:
                wake.wait(max(self.studio.ctx.poll_s, 0.05, backoff))
                wake.clear()
                continue
            self.run(job)

    def run(self, job: Job) -> str:
        """Run one claimed (running, ours) job to its end; returns its final status."""
        if job.kind != "generation":
            self.studio.repo.finish_job(job.id, "failed", f"No worker runs {job.kind} jobs.")
            return "failed"
        try:
            return self.run_generation(job)
        except Exception as exc:  # noqa: BLE001 - recorded on the job; the worker lives on
            log.exception("job %s failed", job.id)
            self._finish(job.id, "failed", error_message(exc))
            return "failed"

    # ---- generation ---------------------------------------------------------------------------
    def run_generation(self, job: Job) -> str:
        s = self.studio
        cell = s.repo.get_cell(job.cell_id)
        ws = WorldState.from_cells(s.repo, s.repo.project_cells(job.project_id), upto=cell)
        done = sum(1 for f in ws.frames if f.cell_id == cell.id)
        cams = s.trajectory_of(cell.params["trajectory"]).cameras[1:]
        total = len(cams)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, stop), daemon=True)
        status = "done"
        try:
            pipe, world = s.restore(ws, bool(cell.params.get("use_memory", True)),
                                    cell.params.get("backends"))  # fmt: skip
            info = getattr(pipe.synthesis, "info", None)
            if info:  # which painter ran, its settings and VRAM plan
                s.repo.update_cell_params(cell.id, {"painter_info": info})
            beat.start()
            for event in pipe.explore(world, cams[done:]):
                try:  # the frame and the progress, only while the job is still ours
                    save_frame(s.store, s.repo, cell.id, event, world, job_id=job.id,
                               nonce=self.owner.nonce, total=total)  # fmt: skip
                except Conflict:  # cancelled, or declared dead and taken over: stop here
                    return s.repo.get_job(job.id).status
                done += 1
                if self.on_frame is not None:
                    self.on_frame(job.id, done)
                if self.stopping.is_set() and done < total:
                    status = "interrupted"
                    self._finish(job.id, status, "The worker stopped; resume to go on.")
                    break
        except Exception:
            status = "failed"  # run() records the error on the job
            raise
        finally:
            stop.set()
            if status == "done":
                self._finish(job.id, "done", None)
            try:
                s.store_cell_video(cell.id)
            except Exception as exc:  # noqa: BLE001 - frames are safe; the video is rebuilt
                log.warning("video of step %s not stored: %s", cell.id, exc)
        return status

    def _finish(self, job_id: str, status: str, message: str | None) -> None:
        try:
            self.studio.repo.finish_job(job_id, status, message, nonce=self.owner.nonce)
        except (Conflict, NotFound):
            pass  # cancelled, reverted or taken over meanwhile: its state is not ours to set

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.studio.ctx.heartbeat_s):
            try:
                self.studio.repo.heartbeat(job_id, nonce=self.owner.nonce)
            except (Conflict, NotFound):
                return
            except Exception:  # noqa: BLE001 - a database blip: try again at the next beat
                log.warning("heartbeat of job %s failed", job_id)
