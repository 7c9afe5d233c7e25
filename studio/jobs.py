"""Generation jobs of the studio: run a planned path frame by frame, persisting as it goes.

A generation is a ``jobs`` row for a generation cell. Each finished frame is stored (files plus a
``world_frames`` row, memory state included) *before* it is reported, then progress is recorded;
a heartbeat thread keeps the job alive while a slow frame is computed. Cancelling marks the job,
and the loop stops at the next frame; a closed page (the generator is closed) or a dead process
(no heartbeat, found at the next start-up) leaves the job "interrupted", and :meth:`resume`
carries on from the last stored frame with the memory rebuilt exactly.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.geometry.cameras import Camera
from models.pipeline import FrameEvent
from storage.db import Conflict, NotFound
from studio.backends import painter_record
from studio.errors import StudioError, clean_id, error_message
from studio.state import WorldState
from studio.world_store import save_frame

__all__ = ["CHUNK_FRAMES", "GenerationJobs", "GenerationUpdate"]

CHUNK_FRAMES = 8  # frames per streamed video chunk


@dataclass
class GenerationUpdate:
    """One step of a running generation, for streaming to the browser or an API client."""

    cell_id: str
    job_id: str
    status: str  # "running", then "done" / "cancelled" / "failed" / "interrupted"
    frames_done: int
    total: int
    elapsed_s: float
    eta_s: float | None
    event: FrameEvent | None = None
    chunk: Path | None = None  # a finished video chunk (mp4) of the newest frames
    message: str = ""


class GenerationJobs:
    """Generation methods of :class:`studio.service.Studio` (which provides repo, store, ctx,
    world(), restore(), trajectory_of() and require_edit())."""

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
        self._no_active_job(pid)
        trajs = [c for c in ws.cells if c.kind == "trajectory" and c.position > ws.photo.position]
        traj_cell = next((c for c in trajs if c.id == trajectory_cell), None) if trajectory_cell \
            else (trajs[-1] if trajs else None)  # fmt: skip
        if traj_cell is None:
            raise StudioError("Plan a camera path first (Trajectory tab), then generate along it.")
        traj = self.trajectory_of(traj_cell.id)
        cams = traj.cameras[1:]
        params = {"trajectory": traj_cell.id, "frames": len(cams), "use_memory": bool(use_memory),
                  "first_index": len(ws.frames)}  # fmt: skip
        if backends:
            params["backends"] = backends  # a resume or re-run uses the same ones
        self.pipeline(use_memory, backends=backends)  # a bad choice fails before the step
        cell = self.repo.add_cell(
            pid, key, "generation", params, parent=traj_cell.id, author=author
        )
        job = self.repo.create_job(cell.id, total=len(cams))
        yield from self._run(ws, cell.id, job.id, cams, use_memory, done_before=0,
                             backends=backends)  # fmt: skip

    def resume(self, project_id: str, key: str, cell_id: str) -> Iterator[GenerationUpdate]:
        """Carry on an interrupted generation from its last stored frame."""
        pid = clean_id(project_id)
        self.require_edit(pid, key)
        ws = self.world(pid, key)
        cell = next((c for c in ws.cells if c.id == cell_id), None)
        if cell is None or cell.kind != "generation":
            raise StudioError("Only a generation step can be resumed.")
        if cell.status != "interrupted":
            raise StudioError(f"This generation is {cell.status}; only an interrupted one resumes.")
        later = [c for c in ws.cells if c.kind == "generation" and c.position > cell.position]
        if later:
            raise StudioError(
                "A later generation builds on this one, so it cannot be resumed; plan a new path."
            )
        self._no_active_job(pid)
        job = self.repo.latest_job(cell.id)
        if job is None:
            raise StudioError("This generation has no job to resume.")
        done = sum(1 for f in ws.frames if f.cell_id == cell.id)
        cams = self.trajectory_of(cell.params["trajectory"]).cameras[1:]
        self.repo.resume_job(job.id)
        yield from self._run(ws, cell.id, job.id, cams[done:], bool(cell.params.get(
            "use_memory", True)), done_before=done, backends=cell.params.get("backends"))  # fmt: skip

    def cancel(self, project_id: str, key: str) -> int:
        """Cancel the project's running generation(s); their finished frames stay. Returns how
        many were cancelled."""
        pid = clean_id(project_id)
        self.require_edit(pid, key)
        jobs = self.repo.active_jobs(pid)
        for job in jobs:
            self.repo.finish_job(job.id, "cancelled")
        return len(jobs)

    def _no_active_job(self, pid: str) -> None:
        if self.repo.active_jobs(pid):
            raise Conflict(
                "A generation is already running in this project (maybe in another tab or by a "
                "collaborator). Wait for it, or cancel it, then try again."
            )

    def _run(
        self, ws: WorldState, cell_id: str, job_id: str, cams: list[Camera], use_memory: bool,
        done_before: int, backends: dict | None = None,
    ) -> Iterator[GenerationUpdate]:  # fmt: skip
        from storage.formats.video import VideoStream

        total = done_before + len(cams)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, stop), daemon=True)
        chunk_dir = self.ctx.chunks_dir / job_id
        _remove_old_dirs(chunk_dir.parent, older_than_s=600)  # streamed chunks are transient
        status, message = "interrupted", "The page was closed; resume the generation to go on."
        t0 = time.perf_counter()
        done = done_before
        try:
            pipe, world = self.restore(ws, use_memory, backends)
            info = getattr(pipe.synthesis, "info", None)
            if info:  # which painter ran, its settings and VRAM plan
                self.repo.update_cell_params(cell_id, {"painter_info": info})
            record = painter_record(pipe.synthesis)
            if record:  # e.g. the LoRA it painted with (world.json "lora")
                self.repo.update_cell_params(cell_id, record)
            beat.start()
            pending: list[np.ndarray] = []
            for event in pipe.explore(world, cams):
                save_frame(self.store, self.repo, cell_id, event, world)
                done += 1
                try:
                    self.repo.update_progress(job_id, done, total)
                except Conflict:
                    status, message = "cancelled", "Cancelled; every finished frame is kept."
                    break
                pending.append(event.rgb)
                chunk = None
                if len(pending) == CHUNK_FRAMES or done == total:
                    chunk = chunk_dir / f"{done:06d}.mp4"
                    with VideoStream(chunk, world.width, world.height) as video:
                        for rgb in pending:
                            video.write(rgb)
                    pending = []
                elapsed = time.perf_counter() - t0
                rate = (done - done_before) / max(elapsed, 1e-6)
                yield GenerationUpdate(cell_id, job_id, "running", done, total, elapsed,
                                       (total - done) / rate, event, chunk)  # fmt: skip
            else:
                status, message = "done", ""
        except GeneratorExit:
            raise
        except Exception as exc:
            status, message = "failed", error_message(exc)
            raise
        finally:
            stop.set()
            self._end(cell_id, job_id, status, message)
        yield GenerationUpdate(cell_id, job_id, status, done, total, time.perf_counter() - t0,
                               0.0, None, None, message)  # fmt: skip

    def _end(self, cell_id: str, job_id: str, status: str, message: str) -> None:
        job = self.repo.get_job(job_id)
        if job.status == "running":
            self.repo.finish_job(job_id, status, message or None)
        try:
            self._store_cell_video(cell_id)
        except Exception as exc:  # the frames are safe; a missing video is rebuilt on demand
            self.notes.append(f"video of step {cell_id} not stored: {exc}")

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.ctx.heartbeat_s):
            try:
                self.repo.heartbeat(job_id)
            except (Conflict, NotFound):
                return

    def _store_cell_video(self, cell_id: str) -> None:
        from storage.formats.video import VideoStream
        from studio.world_store import load_rgb

        frames = self.repo.list_frames(cell_id)
        if not frames:
            return
        first = load_rgb(self.store, frames[0])
        tmp = self.ctx.cache_dir / "videos" / f"{cell_id}.mp4"
        with VideoStream(tmp, first.shape[1], first.shape[0]) as video:
            for f in frames:
                video.write(load_rgb(self.store, f))
        art = self.store.put_file(tmp, "video/mp4")
        # Links are additive (a resumed step gets a longer video); readers take the newest.
        self.repo.link_artifact(cell_id, art.sha256, "video")
        tmp.unlink(missing_ok=True)


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
