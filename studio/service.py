"""The studio's application service: every action of the UI and the API, with no Gradio in it.

Tabs and the ``gradio_client`` API call :class:`Studio`; it checks keys through the repository
(the server decides, never the UI), runs models, and persists every result as it is produced:

    project -> history cells: photo -> trajectory -> generation -> ... -> lift / export

The *world* of a project is the newest finished photo cell and the frames of every generation
cell after it, in frame order. A generation runs as a job: each finished frame is stored (files
plus a ``world_frames`` row) before the next starts, progress and heartbeats go to the job row,
and a cancel, a crash or a closed browser loses nothing that was finished.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.geometry.cameras import intrinsics_from_fov
from models.paths.trajectory import PRESET_NAMES, Trajectory, make_preset
from models.paths.waypoints import MAX_WAYPOINTS, GroundFrame
from models.pipeline import PipelineConfig, World, WorldPipeline
from storage.blobs import ArtifactStore
from storage.db import (
    Forbidden,
    HistoryCell,
    Owner,
    Repository,
    open_database,
)
from storage.formats.images import image_mime, load_photo
from studio.context import StudioContext
from studio.downloads import Downloads, download_name
from studio.errors import StudioError, checked_number, clean_id, error_message, user_facing
from studio.files import WRONG_KEYS, FileLinks, load_secret, prune_folder
from studio.jobs import GenerationJobs, GenerationUpdate
from studio.previews import PathPreviews, blind_warnings
from studio.state import PathPlan, WorldState
from studio.world_store import load_records, save_frame

__all__ = [
    "GenerationUpdate",
    "PathPlan",
    "Studio",
    "StudioError",
    "WorldState",
    "download_name",
    "user_facing",
]


class Studio(GenerationJobs, PathPreviews, Downloads):
    """Projects, history, jobs and results of one studio process (see the module docstring)."""

    def __init__(self, ctx: StudioContext, executor: str | None = None) -> None:
        from studio.executors import build_executor

        self.ctx = ctx
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(ctx.db_url, migrate=True)
        self.repo = Repository(self.db)
        self.store = ArtifactStore(ctx.artifacts_url, self.db)
        self.secret = load_secret(ctx.data_dir, ctx.file_secret)
        self.throttle = WRONG_KEYS  # wrong keys and forged links, per client (process-wide)
        self.files = FileLinks(self.repo, self.store, self.secret, base=ctx.root_path,
                               ttl_s=ctx.file_url_ttl_s, throttle=self.throttle)  # fmt: skip
        prune_folder(ctx.handoff_dir, ctx.temp_ttl_s)
        self._pruned = time.monotonic()
        # Who runs this process's jobs. Whatever an earlier instance under the same name left
        # running is dead now: interrupted (resumable) at once, not after a heartbeat timeout;
        # other owners count as dead when their pid is gone here or their heartbeat is stale.
        self.owner = Owner.this_process(ctx.instance)
        self.interrupted_at_start = self.repo.interrupt_owned(self.owner) + self.reap()
        self._backends: dict[tuple[str, str], Any] = {}  # (kind, choice) -> backend
        self._map_points: dict[str, tuple[np.ndarray, ...]] = {}  # world digest -> map layers
        self._lock = threading.Lock()
        self.notes: list[str] = []
        self.executor = build_executor(executor or ctx.executor, self)

    def close(self) -> None:
        """Stop this process's workers (running jobs end "interrupted") and close the database."""
        self.executor.close()
        self.db.dispose()

    # ---- components ---------------------------------------------------------------------------
    def pipeline(
        self, use_memory: bool = True, hfov_deg: float = 60.0, backends: dict | None = None
    ) -> WorldPipeline:
        """A pipeline on the configured backends, or on ``backends`` (a generation's own choice:
        ``{"depth": name, "synthesis": name, "prompt": text, "model": id or folder, "steps": n,
        ...}``, any painter option of ``studio.backends.PAINTER_OPTIONS``). Each backend is
        built once per choice and shared; painters' weights are shared through the model
        manager. A bad choice raises ModelError before any work.
        """
        from studio.backends import build_depth, build_painter, with_lora

        choice = checked_backends(backends)
        depth = choice.pop("depth", None) or self.ctx.depth
        choice, default = with_lora(choice, self.ctx.synthesis, self.ctx.lora)
        painter = ("synthesis", json.dumps(choice, sort_keys=True))
        with self._lock:
            notes: list[str] = []
            if ("depth", depth) not in self._backends:
                self._backends["depth", depth] = build_depth(depth, None, notes)
            if painter not in self._backends:
                if len(self._backends) > 8:  # a few recent choices; the weights stay cached
                    self._backends.pop(next(k for k in self._backends if k[0] == "synthesis"))
                self._backends[painter] = build_painter(choice, default, notes)
            self.notes.extend(notes)
        config = PipelineConfig(width=self.ctx.width, hfov_deg=hfov_deg, use_memory=use_memory)
        return WorldPipeline(
            depth=self._backends["depth", depth], synthesis=self._backends[painter], config=config
        )

    def check_backends_here(self, use_memory: bool, backends: dict | None) -> None:
        """Build (or find) the pipeline of a generation's ``backends`` in this process, so a bad
        choice is refused before its step exists (ModelError with a plain message)."""
        self.pipeline(use_memory, backends=backends)

    def painters(self) -> list[dict[str, Any]]:
        """The painters this studio offers, for the Generate tab: each with ``backend``,
        ``default_model``, ``prompt`` (takes one), ``ready`` (can run here now) and ``why``
        not; the configured default is marked ``default``."""
        from studio.backends import painter_choices

        return [{**p, "default": p["backend"] == self.ctx.synthesis} for p in painter_choices()]

    # ---- projects -----------------------------------------------------------------------------
    def create_project(self, name: str) -> tuple[str, str, str]:
        """A new empty project: ``(project_id, view_key, edit_key)``."""
        project, view_key, edit_key = self.repo.create_project(name)
        return project.id, view_key, edit_key

    def open_project(self, project_id: str, key: str) -> tuple[Any, bool, list[HistoryCell]]:
        """``(project, can_edit, cells)``; NotFound / Forbidden with plain messages."""
        project, can_edit = self.repo.open_project(clean_id(project_id), key)
        return project, can_edit, self.repo.list_cells(project.id, key)

    def require_edit(self, project_id: str, key: str) -> None:
        _, can_edit = self.repo.open_project(clean_id(project_id), key)
        if not can_edit:
            raise Forbidden("This is a view-only link: it cannot change the project.")

    # ---- world --------------------------------------------------------------------------------
    def world(self, project_id: str, key: str) -> WorldState:
        """The project's current world (either key). StudioError when there is no photo yet."""
        return WorldState.from_cells(self.repo, self.repo.list_cells(clean_id(project_id), key))

    def restore(
        self, ws: WorldState, use_memory: bool = True, backends: dict | None = None
    ) -> tuple[WorldPipeline, World]:
        pipe = self.pipeline(use_memory, backends=backends)
        records = load_records(self.store, ws.frames, ws.width, ws.height)
        return pipe, pipe.restore(ws.meta, records)

    # ---- photo --------------------------------------------------------------------------------
    def set_photo(
        self, project_id: str, key: str, photo_path: str | None, hfov_deg: float | None = None,
        author: str = "",
    ) -> HistoryCell:  # fmt: skip
        """Seed the project's world from a photo (a new photo cell). ``hfov_deg`` None/0: EXIF,
        else 60 degrees."""
        if not photo_path:
            raise StudioError("Choose a photo first (JPEG, PNG or HEIC).")
        if hfov_deg not in (None, 0):
            hfov_deg = checked_number(hfov_deg, "The field of view (degrees)", 10, 150)
        photo = load_photo(photo_path)  # PhotoError: not an image, too big, damaged...
        data = Path(photo_path).read_bytes()
        params = {
            "filename": Path(photo_path).name[-120:],
            "hfov_deg": float(hfov_deg) if hfov_deg else None,
            "size": [photo.width, photo.height],
        }
        cell = self.repo.add_cell(clean_id(project_id), key, "photo", params, author=author)
        job = self.repo.create_job(cell.id, total=1, owner=self.owner)
        try:
            art = self.store.put_bytes(data, image_mime(data))
            self.repo.link_artifact(cell.id, art.sha256, "photo")
            pipe = self.pipeline(hfov_deg=float(hfov_deg) if hfov_deg else 60.0)
            K = (
                intrinsics_from_fov(photo.width, photo.height, float(hfov_deg))
                if hfov_deg
                else None
            )
            world = pipe.seed(photo.rgb, K, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
            save_frame(self.store, self.repo, cell.id, world.seed_event, world)
            meta = world.meta()
            meta["camera_height"] = float(world.depth_meta.get("camera_height_m", 1.6))
            meta["scene_depth"] = world.scene_depth
            meta["hfov_deg"] = float(
                np.degrees(2 * np.arctan(world.width / (2 * world.cameras[0].K[0, 0])))
            )
            notes = [n for n in self.notes if n.startswith("auto depth")] + list(photo.notes)
            self.repo.update_cell_params(cell.id, {"world": meta, "notes": notes})
            self.repo.finish_job(job.id, "done")
        except BaseException as exc:
            self.repo.finish_job(job.id, "failed", error_message(exc))
            raise
        return self.repo.get_cell(cell.id)

    # ---- trajectory ---------------------------------------------------------------------------
    def plan_path(
        self,
        project_id: str,
        key: str,
        *,
        preset: str | None = None,
        waypoints: list[list[float]] | None = None,
        frames: int | None = None,
        speed: float | None = None,
        eye_height: float | None = None,
        look: str = "path",
        start: str = "end",
        ws: WorldState | None = None,
    ) -> PathPlan:
        """A camera path from a preset or map waypoints (ground metres), not saved yet.

        ``start``: "end" (continue from the newest frame), "photo", or a generation cell id
        (continue from the end of that earlier path).
        """
        ws = ws or self.world(project_id, key)
        start_i = self._start_index(ws, start)
        start_cam = ws.camera(start_i)
        up = np.asarray(ws.meta["up"])
        gf0 = ws.ground()
        limit = self.ctx.max_frames
        if frames is not None:
            frames = checked_number(frames, "The number of frames", 2, limit, integer=True)
        if preset:
            if preset not in PRESET_NAMES:
                raise StudioError(
                    f"Unknown preset {str(preset)[:40]!r}; use one of {', '.join(PRESET_NAMES)}."
                )
            n = int(frames or 24)
            traj = make_preset(preset, start_cam, n, up=up, scene_depth=ws.meta["scene_depth"])
            params: dict[str, Any] = {"mode": "preset", "preset": preset, "frames": n}
        else:
            wp = _waypoints(waypoints)
            self._check_on_map(ws, gf0, wp)
            h_start = float(gf0.height_of(start_cam.c2w[:3, 3])[0])
            gfs = GroundFrame.from_camera(start_cam, up, max(h_start, 0.0))
            wp_start = gfs.to_ground(gf0.to_world(wp, 0.0))
            if speed not in (None, 0) and frames is None:
                speed = checked_number(speed, "The speed (metres per frame)", 1e-6, 100.0)
                n_kw: dict[str, Any] = {"speed": speed}
            else:
                n_kw = {"n_frames": int(frames or 24)}
            eye = None
            if eye_height not in (None, 0):
                eye = checked_number(eye_height, "The eye height (metres)", 0.0, 50.0) or None
            traj, capped = self.capped_path(wp_start, start_cam, up, max(h_start, 0.0), eye,
                                            look, n_kw)  # fmt: skip
            params = {"mode": "waypoints", "waypoints": wp.round(4).tolist(), "look": look,
                      "eye_height": eye, "speed": speed, "frames": len(traj)}  # fmt: skip
        if len(traj) < 2:
            raise StudioError("The path needs at least 2 frames.")
        params.update(start=start, start_index=start_i)
        centers = np.stack([c.c2w[:3, 3] for c in traj])
        fwd = np.stack([c.c2w[:3, 2] for c in traj])
        ground_xy = gf0.to_ground(centers)
        d = np.stack([fwd @ gf0.right, fwd @ gf0.forward], 1)
        headings = np.arctan2(d[:, 0], d[:, 1])
        world = self.memory_world(ws)  # restored once per world, not once per preview
        coverage = [world.memory.retrieve(c).coverage for c in traj]
        warnings = (capped if not preset else []) + blind_warnings(coverage, params)
        return PathPlan(traj, params, ground_xy, headings, coverage, warnings)

    def save_path(self, project_id: str, key: str, plan: PathPlan, author: str = "") -> HistoryCell:
        """Store a planned path as a trajectory cell (its cameras as a trajectory.json file)."""
        data = json.dumps(plan.trajectory.to_dict()).encode()
        params = {**plan.params, "coverage_preview": [round(c, 3) for c in plan.coverage[:8]]}
        cell = self.repo.add_cell(clean_id(project_id), key, "trajectory", params, author=author)
        art = self.store.put_bytes(data, "application/json")
        self.repo.link_artifact(cell.id, art.sha256, "trajectory")
        return self.repo.update_cell_status(cell.id, "done")

    def trajectory_of(self, cell_id: str) -> Trajectory:
        links = self.repo.cell_artifacts(cell_id, "trajectory")
        if not links:
            raise StudioError("That path has no stored cameras; plan it again.")
        return Trajectory.from_dict(json.loads(self.store.read_bytes(links[-1].sha256)))

    @staticmethod
    def _start_index(ws: WorldState, start: str) -> int:
        if start in ("", "end", None):
            return len(ws.frames) - 1
        if start == "photo":
            return 0
        cell = next((c for c in ws.cells if c.id == start and c.kind == "generation"), None)
        ends = [f.frame_index for f in ws.frames if f.cell_id == start]
        if cell is None or not ends:
            raise StudioError("Continue from: that step is not a generation of this world.")
        return max(ends)

    def revert(self, project_id: str, key: str) -> HistoryCell:
        """Remove the newest cell (its files stay in the store for forks and undo)."""
        return self.repo.revert_last_cell(clean_id(project_id), key)

    def fork(self, project_id: str, key: str, from_cell: str | None = None) -> tuple[str, str, str]:
        project, view_key, edit_key = self.repo.fork(clean_id(project_id), key, from_cell or None)
        return project.id, view_key, edit_key

    def rename(self, project_id: str, key: str, name: str) -> None:
        self.repo.rename(clean_id(project_id), key, name)

    def delete(self, project_id: str, key: str) -> None:
        self.repo.delete_project(clean_id(project_id), key)

    def queue_position(self, job_id: str) -> tuple[int, int]:
        """(generations waiting ahead of this pending one, generations running), server-wide:
        what a person waiting for a free worker is told."""
        from sqlalchemy import func, select

        from storage.db.models import Job

        with self.db.read_session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return 0, 0
            count = select(func.count()).select_from(Job).where(Job.kind == "generation")
            ahead = session.scalar(
                count.where(Job.status == "pending", Job.started_at < job.started_at)
            )
            running = session.scalar(count.where(Job.status == "running"))
        return int(ahead or 0), int(running or 0)


#: Ranges of the numeric painter options a generation may carry (the API passes them through).
PAINTER_NUMBERS = {"steps": (1, 200, True), "chunk_size": (1, 257, True),
                   "guidance_scale": (0.0, 50.0, False), "conditioning_scale": (0.0, 10.0, False),
                   "flow_shift": (0.0, 100.0, False), "vram_gb": (0.0, 4096.0, False)}  # fmt: skip


def checked_backends(backends: Any) -> dict[str, Any]:
    """A generation's backend choice with every number in range and texts of sane length,
    checked before anything is built (a number from the API must never size work unchecked)."""
    if backends in (None, ""):
        return {}
    if not isinstance(backends, dict) or len(backends) > 32:
        raise StudioError("The backend choice must be a small JSON object of options.")
    out: dict[str, Any] = {}
    for k, v in backends.items():
        if k in PAINTER_NUMBERS and v is not None:
            lo, hi, integer = PAINTER_NUMBERS[k]
            v = checked_number(v, f"The painter option {k!r}", lo, hi, integer=integer)
        elif isinstance(v, str) and len(v) > 4000:
            raise StudioError(f"The painter option {str(k)[:40]!r} is too long (4000 characters).")
        out[str(k)] = v
    return out


def _waypoints(waypoints: Any) -> np.ndarray:
    """(N, 2) float waypoints from the API or a form, checked before anything is built."""
    if not waypoints:
        raise StudioError("The path is empty: click points on the map (or pick a preset).")
    if len(waypoints) > MAX_WAYPOINTS:
        raise StudioError(f"A path has at most {MAX_WAYPOINTS} waypoints.")
    try:
        wp = np.asarray(waypoints, float)
    except (TypeError, ValueError):
        wp = np.zeros((0, 3))
    if wp.ndim != 2 or wp.shape[1] != 2 or not np.isfinite(wp).all():
        raise StudioError("Waypoints must be a list of [x, y] pairs in metres.")
    return wp
