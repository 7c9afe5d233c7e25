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
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.geometry.cameras import Camera, intrinsics_from_fov
from models.paths.trajectory import PRESET_NAMES, Trajectory, make_preset
from models.paths.waypoints import GroundFrame, from_waypoints
from models.pipeline import PipelineConfig, World, WorldPipeline
from storage.blobs import ArtifactStore
from storage.db import (
    Forbidden,
    HistoryCell,
    Owner,
    Repository,
    open_database,
)
from storage.formats.images import load_photo
from studio.context import StudioContext
from studio.errors import StudioError, clean_id, error_message, user_facing
from studio.exports.lift import FORMATS, export_bundle, lift_bundle
from studio.files import FileLinks, Throttle, handoff, load_secret, prune_folder
from studio.jobs import GenerationJobs, GenerationUpdate
from studio.state import PathPlan, WorldState
from studio.world_store import bundle_for, load_records, save_frame

__all__ = ["GenerationUpdate", "PathPlan", "Studio", "StudioError", "WorldState", "user_facing"]

FOLDER_FORMATS = ("mjcf", "nerfstudio", "colmap")


class Studio(GenerationJobs):
    """Projects, history, jobs and results of one studio process (see the module docstring)."""

    def __init__(self, ctx: StudioContext, executor: str | None = None) -> None:
        from studio.executors import build_executor

        self.ctx = ctx
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(ctx.db_url, migrate=True)
        self.repo = Repository(self.db)
        self.store = ArtifactStore(ctx.artifacts_url, self.db)
        self.secret = load_secret(ctx.data_dir, ctx.file_secret)
        self.throttle = Throttle()  # wrong keys and forged links, per client
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
        self._map_points: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # world digest -> points
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
        from studio.backends import build_depth, build_painter

        choice = dict(backends or {})
        depth = choice.pop("depth", None) or self.ctx.depth
        painter = ("synthesis", json.dumps(choice, sort_keys=True))
        with self._lock:
            notes: list[str] = []
            if ("depth", depth) not in self._backends:
                self._backends["depth", depth] = build_depth(depth, None, notes)
            if painter not in self._backends:
                if len(self._backends) > 8:  # a few recent choices; the weights stay cached
                    self._backends.pop(next(k for k in self._backends if k[0] == "synthesis"))
                self._backends[painter] = build_painter(choice, self.ctx.synthesis, notes)
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
            raise StudioError("Choose a photo first (JPEG or PNG).")
        photo = load_photo(photo_path)  # PhotoError: not an image, too big, damaged...
        if hfov_deg is not None and hfov_deg and not 10 <= float(hfov_deg) <= 150:
            raise StudioError("The field of view must be between 10 and 150 degrees.")
        data = Path(photo_path).read_bytes()
        params = {
            "filename": Path(photo_path).name[-120:],
            "hfov_deg": float(hfov_deg) if hfov_deg else None,
            "size": [photo.width, photo.height],
        }
        cell = self.repo.add_cell(clean_id(project_id), key, "photo", params, author=author)
        job = self.repo.create_job(cell.id, total=1, owner=self.owner)
        try:
            mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
            art = self.store.put_bytes(data, mime)
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
            self.repo.update_cell_params(cell.id, {"world": meta, "notes": list(photo.notes)})
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
        if frames is not None and not 2 <= int(frames) <= self.ctx.max_frames:
            raise StudioError(f"Choose between 2 and {self.ctx.max_frames} frames.")
        if preset:
            if preset not in PRESET_NAMES:
                raise StudioError(
                    f"Unknown preset {preset!r}; use one of {', '.join(PRESET_NAMES)}."
                )
            n = int(frames or 24)
            traj = make_preset(preset, start_cam, n, up=up, scene_depth=ws.meta["scene_depth"])
            params: dict[str, Any] = {"mode": "preset", "preset": preset, "frames": n}
        else:
            wp = (
                np.asarray(waypoints or [], float).reshape(-1, 2) if waypoints else np.zeros((0, 2))
            )
            if len(wp) == 0:
                raise StudioError("The path is empty: click points on the map (or pick a preset).")
            self._check_on_map(ws, gf0, wp)
            h_start = float(gf0.height_of(start_cam.c2w[:3, 3])[0])
            gfs = GroundFrame.from_camera(start_cam, up, max(h_start, 0.0))
            wp_start = gfs.to_ground(gf0.to_world(wp, 0.0))
            if speed is not None and frames is None:
                n_kw: dict[str, Any] = {"speed": float(speed)}
            else:
                n_kw = {"n_frames": int(frames or 24)}
            eye = None if eye_height in (None, 0) else float(eye_height)
            traj = from_waypoints(wp_start, start_cam, up=up, camera_height=max(h_start, 0.0),
                                  eye_height=eye, look=look, **n_kw)  # fmt: skip
            if len(traj) > self.ctx.max_frames:
                raise StudioError(
                    f"That path needs {len(traj)} frames at this speed; the limit is "
                    f"{self.ctx.max_frames}. Walk faster or shorten the path."
                )
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
        _, world = self.restore(ws)
        coverage = [world.memory.retrieve(c).coverage for c in traj]
        warnings = []
        blind = [i for i, c in enumerate(coverage) if c < 0.15]
        if blind:
            warnings.append(
                f"{len(blind)} of {len(traj)} views see less than 15% of anything known "
                f"(first: frame {blind[0]}); those will be mostly painted."
            )
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

    def _check_on_map(self, ws: WorldState, gf0: GroundFrame, wp: np.ndarray) -> None:
        from studio.worldmap import MapView

        pts, _ = self.map_points(ws)
        cams = gf0.to_ground(np.stack([np.asarray(f.c2w)[:3, 3] for f in ws.frames]))
        view = MapView.fit(pts, cams)
        outside = ~view.contains(wp, slack=0.5)
        if outside.any():
            i = int(np.argmax(outside))
            x_min, x_max, y_min, y_max = view.extent
            raise StudioError(
                f"Waypoint {i + 1} at ({wp[i, 0]:.1f}, {wp[i, 1]:.1f}) m is far outside the known "
                f"map (x {x_min:.1f}..{x_max:.1f}, y {y_min:.1f}..{y_max:.1f} m). Move it closer."
            )

    def map_points(self, ws: WorldState, max_frames: int = 24) -> tuple[np.ndarray, np.ndarray]:
        """Ground coordinates (N, 2) and colours (N, 3) of a sample of the world's points.

        Points near the floor and above the eyes are left out so the plan shows walls and
        furniture, not the floor texture and ceiling.
        """
        from models.geometry.pointcloud import frame_points
        from studio.world_store import load_rgb, load_state

        # A path preview checks waypoints against these points and the map draws them: read
        # the frames once per world content, not once per caller.
        cached = self._map_points.get(ws.digest)
        if cached is not None:
            return cached
        gf = ws.ground()
        step = max(1, len(ws.frames) // max_frames)
        xy, rgb = [], []
        for f in ws.frames[::step]:
            cam = Camera(np.asarray(f.K), np.asarray(f.c2w), ws.width, ws.height)
            pts, col = frame_points(load_rgb(self.store, f), load_state(self.store, f)["depth"],
                                    cam, stride=6)  # fmt: skip
            h = gf.height_of(pts)
            keep = (h > 0.15) & (h < gf.camera_height + 0.6)
            xy.append(gf.to_ground(pts[keep]))
            rgb.append(col[keep])
        result = np.concatenate(xy), np.concatenate(rgb)
        if len(self._map_points) >= 16:  # a few worlds' worth; oldest out
            self._map_points.pop(next(iter(self._map_points)))
        self._map_points[ws.digest] = result
        return result

    # ---- history ------------------------------------------------------------------------------
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

    # ---- lift and export ----------------------------------------------------------------------
    def bundle(self, ws: WorldState) -> Path:
        return bundle_for(self.store, ws.frames, ws.meta, self.ctx.cache_dir)

    def lift(self, project_id: str, key: str, force: bool = False, author: str = "") -> HistoryCell:
        """Splats and mesh of the current world (a lift cell), reused while the world is the same.
        Runs on a worker of the executor (in this thread for the local one)."""
        return self.repo.get_cell(self.executor.call("lift", project_id, key, force, author))

    def lift_here(self, project_id: str, key: str, force: bool = False, author: str = "") -> str:
        """:meth:`lift` in this process; returns the lift cell's id."""
        pid = clean_id(project_id)
        ws = self.world(pid, key)
        if not force:
            cached = self.cached_cell(ws, "lift")
            if cached is not None:
                return cached.id
        self.require_edit(pid, key)
        cell = self.repo.add_cell(pid, key, "lift", {"world": ws.digest, "frames": len(ws.frames)},
                                  author=author)  # fmt: skip
        job = self.repo.create_job(cell.id, total=2, owner=self.owner)
        try:
            root = self.bundle(ws)
            info = lift_bundle(root)
            for role, name, mime in (("splats", "splats.ply", "application/x-ply"),
                                     ("mesh", "mesh.ply", "application/x-ply")):  # fmt: skip
                art = self.store.put_file(root / name, mime)
                self.repo.link_artifact(cell.id, art.sha256, role)
            counts = {"splats": info["splats"]["count"], "faces": info["mesh"]["faces"]}
            self.repo.update_cell_params(cell.id, counts)
            self.repo.finish_job(job.id, "done")
        except BaseException as exc:
            self.repo.finish_job(job.id, "failed", error_message(exc))
            raise
        return cell.id

    def cached_cell(self, ws: WorldState, kind: str, **match: Any) -> HistoryCell | None:
        for c in reversed(ws.cells):
            p = c.params or {}
            if (
                c.kind == kind
                and c.status == "done"
                and p.get("world") == ws.digest
                and all(p.get(k) == v for k, v in match.items())
            ):
                return c
        return None

    def export(self, project_id: str, key: str, fmt: str, author: str = "") -> Path:
        """The world in ``fmt`` as a downloadable file (folders come zipped); made once per world
        and format (on a worker of the executor), then served from the artifact store."""
        sha256, name = self.executor.call("export", project_id, key, fmt, author)
        return self.named_file(sha256, name)

    def export_here(self, project_id: str, key: str, fmt: str, author: str = "") -> tuple[str, str]:
        """:meth:`export` in this process; returns the stored file's ``(sha256, download name)``."""
        if fmt not in FORMATS:
            raise StudioError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
        pid = clean_id(project_id)
        ws = self.world(pid, key)
        cached = self.cached_cell(ws, "export", format=fmt)
        name = f"world-{ws.digest[:8]}.{_suffix(fmt)}"
        if cached is not None:
            links = self.repo.cell_artifacts(cached.id, "export")
            if links:
                return links[-1].sha256, name
        self.require_edit(pid, key)
        if fmt in ("ply", "splat", "spz", "glb", "obj", "usd", "usdz", "mjcf"):
            self.lift_here(pid, key, author=author)  # exports of splats/meshes reuse the lift
        cell = self.repo.add_cell(pid, key, "export", {"world": ws.digest, "format": fmt},
                                  author=author)  # fmt: skip
        job = self.repo.create_job(cell.id, total=1, owner=self.owner)
        try:
            root = self.bundle(ws)
            out_dir = self.ctx.cache_dir / "exports" / f"{ws.digest}-{fmt}"
            shutil.rmtree(out_dir, ignore_errors=True)
            target = out_dir / (fmt if fmt in FOLDER_FORMATS else name)
            written = export_bundle(root, fmt, target)
            if Path(written).is_dir():
                written = Path(shutil.make_archive(str(out_dir / fmt), "zip", written))
            art = self.store.put_file(written, _mime(fmt))
            self.repo.link_artifact(cell.id, art.sha256, "export")
            self.repo.finish_job(job.id, "done")
            shutil.rmtree(out_dir, ignore_errors=True)
        except BaseException as exc:
            self.repo.finish_job(job.id, "failed", error_message(exc))
            raise
        return art.sha256, name

    def named_file(self, sha256: str, filename: str) -> Path:
        """A stored file under a readable name, handed over for a Gradio component (downloads
        and viewers go by the file extension); see :func:`studio.files.handoff`."""
        return self.handoff(self.local_path(sha256), filename)

    def local_path(self, sha256: str) -> Path:
        """A stored file on this machine's disk: in the store itself when it is a folder, else a
        copy streamed from the bucket into the cache (kept, keyed by the content hash)."""
        if self.store.is_local:
            return self.store.path_of(sha256)
        target = self.ctx.cache_dir / "objects" / sha256[:2] / sha256[2:]
        if not (target.is_file() and target.stat().st_size == self.store.get(sha256).size):
            self.store.copy_to(sha256, target)
        return target

    def handoff(self, path: Path, filename: str) -> Path:
        """Any file of the studio (e.g. a cached bundle's video) as :meth:`named_file` does."""
        if time.monotonic() - self._pruned > 60:  # a folder listing at most once a minute
            self._pruned = time.monotonic()
            prune_folder(self.ctx.handoff_dir, self.ctx.temp_ttl_s)
        return handoff(path, filename, self.ctx.handoff_dir, self.secret)

    def file_url(
        self, project_id: str, key: str, sha256: str, filename: str, download: bool = False
    ) -> str:
        """A short-lived signed URL for one stored file of a project (view or edit key), for
        viewers and links in the page: see :mod:`studio.files`."""
        return self.files.url(clean_id(project_id), key, sha256, filename, download=download)

    def artifact(self, cell: HistoryCell, role: str, filename: str) -> Path | None:
        links = self.repo.cell_artifacts(cell.id, role)
        return self.named_file(links[-1].sha256, filename) if links else None


def _suffix(fmt: str) -> str:
    return {"usd": "usda", "mjcf": "zip", "nerfstudio": "zip", "colmap": "zip"}.get(fmt, fmt)


def _mime(fmt: str) -> str:
    return {"ply": "application/x-ply", "glb": "model/gltf-binary", "mp4": "video/mp4",
            "obj": "model/obj", "usdz": "model/vnd.usdz+zip"}.get(
        fmt, "application/zip" if fmt in FOLDER_FORMATS else "application/octet-stream")  # fmt: skip
