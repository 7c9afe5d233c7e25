"""Lift, export and hand files to the browser: the download half of :class:`studio.service.Studio`.

- :meth:`Downloads.lift`: splats and mesh of the current world (a lift step), reused while the
  world is the same.
- :meth:`Downloads.export`: every ``loci export`` format as one file, made once per world and
  format and **attached to the history step whose world it is** (no step of its own: link role
  ``export:<fmt>`` and one params key per format), then served from the store. Folder formats
  (MJCF, nerfstudio, COLMAP) come as a zip of the whole folder (scene and meshes; transforms
  and images; model and images). Each export is built in a folder of its own, so concurrent
  exports never share a file. Downloads are named by world, step and format
  (:func:`download_name`: ``kitchen-3.ply``, ``kitchen-3-mjcf.zip``), never two formats alike.
- :meth:`Downloads.file_url`: a short-lived signed URL for a stored file (:mod:`studio.files`);
  :meth:`Downloads.named_file` / :meth:`Downloads.handoff`: a readable-named copy for a Gradio
  component, in Gradio's temp dir (never the data dir).
- Derived bundles under ``cache/bundles`` are bounded by size (least recently used out first,
  never one in use): ``ctx.cache_max_mb``; a bundle is rebuilt from the store when needed again.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.db import HistoryCell
from studio.errors import StudioError, clean_id, error_message
from studio.exports.lift import FOLDER_FORMATS, FORMATS, export_bundle, export_filename, lift_bundle
from studio.files import handoff, prune_folder
from studio.state import WorldState
from studio.web.scene import write_web_splats
from studio.world_store import bundle_for

__all__ = ["Downloads", "download_name", "prune_lru", "tree_size"]

LIFTED_FORMATS = ("ply", "splat", "spz", "glb", "obj", "usd", "usdz", "usdz-ar", "mjcf")


def download_name(project_name: str, step: int, fmt: str) -> str:
    """``<project>-<step>.<ext>`` when the extension names the format (``kitchen-3.ply``), else
    ``<project>-<step>-<fmt>.<ext>`` (``kitchen-3-mjcf.zip``, ``kitchen-3-usdz-ar.usdz``): a
    download says which world and step it came from, and no two formats share a name."""
    slug = re.sub(r"[^a-z0-9]+", "-", (project_name or "world").lower()).strip("-")[:40]
    ext = "zip" if fmt in FOLDER_FORMATS else export_filename(fmt).rpartition(".")[2]
    tag = "" if ext == fmt else f"-{fmt}"
    return f"{slug or 'world'}-{int(step)}{tag}.{ext}"


_PINNED: Counter[Path] = Counter()  # cache entries in use by this process (never pruned)
_PIN_LOCK = threading.Lock()


@contextmanager
def pinned(entry: Path) -> Iterator[Path]:
    """Keep ``entry`` out of :func:`prune_lru` while the block runs (and mark it used now)."""
    entry = Path(entry)
    with _PIN_LOCK:
        _PINNED[entry] += 1
    try:
        entry.touch(exist_ok=True) if entry.is_file() else _touch_dir(entry)
        yield entry
    finally:
        with _PIN_LOCK:
            _PINNED[entry] -= 1
            if _PINNED[entry] <= 0:
                del _PINNED[entry]


def _touch_dir(entry: Path) -> None:
    try:
        entry.touch(exist_ok=True)  # a directory's mtime: its last use
    except OSError:
        pass


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (a file's own size for a file; 0 when missing)."""
    path = Path(path)
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0  # removed while we looked


def prune_lru(folder: Path, max_bytes: float, min_age_s: float = 0.0) -> list[Path]:
    """Remove the least recently used entries of ``folder`` until it holds at most
    ``max_bytes``; entries in use by this process (:func:`pinned`), hidden (half-written)
    entries and entries used in the last ``min_age_s`` seconds (other processes may be reading
    them) stay. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            entries.append((entry.stat().st_mtime, entry))
        except OSError:
            continue
    sizes = {e: tree_size(e) for _, e in entries}
    total, removed, now = sum(sizes.values()), [], time.time()
    for mtime, entry in sorted(entries, key=lambda t: t[0]):
        if total <= max_bytes:
            break
        with _PIN_LOCK:
            busy = entry in _PINNED
        if busy or now - mtime < min_age_s:
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(True)
        total -= sizes[entry]
        removed.append(entry)
    return removed


def _mime(fmt: str) -> str:
    return {"ply": "application/x-ply", "glb": "model/gltf-binary", "mp4": "video/mp4",
            "obj": "model/obj", "usdz": "model/vnd.usdz+zip", "usdz-ar": "model/vnd.usdz+zip",
            "usd": "text/plain"}.get(
        fmt, "application/zip" if fmt in FOLDER_FORMATS else "application/octet-stream")  # fmt: skip


class Downloads:
    """Lift/export/file methods of :class:`studio.service.Studio` (which provides ctx, repo,
    store, files, secret, executor, owner, world() and require_edit()). ``lift`` / ``export``
    run on a worker of the executor, which calls ``lift_here`` / ``export_here``."""

    _pruned: float = 0.0

    @contextmanager
    def bundle(self, ws: WorldState) -> Iterator[Path]:
        """The world as a bundle folder in the cache (made once per content), kept while the
        block runs; the cache of bundles is then trimmed to ``ctx.cache_max_mb`` (LRU)."""
        meta = {**ws.meta, **({"lora": ws.lora} if ws.lora else {})}  # world.json "lora"
        root = bundle_for(self.store, ws.frames, meta, self.ctx.cache_dir)
        try:
            with pinned(root):
                yield root
        finally:
            prune_lru(self.ctx.cache_dir / "bundles", self.ctx.cache_max_mb * 1e6,
                      self.ctx.cache_min_age_s)  # fmt: skip

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
            with self.bundle(ws) as root:
                info = lift_bundle(root)
                for role, name, mime in (("splats", "splats.ply", "application/x-ply"),
                                         ("mesh", "mesh.ply", "application/x-ply")):  # fmt: skip
                    art = self.store.put_file(root / name, mime)
                    self.repo.link_artifact(cell.id, art.sha256, role)
                # The browser's copy: compact SPZ (a few MB); the full .ply stays the export.
                web = write_web_splats(root / "splats.ply", root / "splats.web.spz")
                art = self.store.put_file(root / "splats.web.spz", "application/octet-stream")
                self.repo.link_artifact(cell.id, art.sha256, "splats-web")
            counts = {"splats": info["splats"]["count"], "faces": info["mesh"]["faces"],
                      "web_splats": web["count"], "web_bytes": web["bytes"]}  # fmt: skip
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
        """The world in ``fmt`` as a downloadable file (see the module docstring), made once per
        world and format on a worker of the executor, attached to the step whose world it is,
        then served from the artifact store."""
        sha256, name = self.executor.call("export", project_id, key, fmt, author)
        return self.named_file(sha256, name)

    def export_here(self, project_id: str, key: str, fmt: str, author: str = "") -> tuple[str, str]:
        """:meth:`export` in this process; returns the stored file's ``(sha256, download name)``."""
        if fmt not in FORMATS:
            raise StudioError(f"Unknown format {str(fmt)[:40]!r}; choose one of "
                              f"{', '.join(FORMATS)}.")  # fmt: skip
        pid = clean_id(project_id)
        project, _ = self.repo.open_project(pid, key)
        ws = self.world(pid, key)
        step = self.world_step(ws)
        name = download_name(project.name, step.position + 1, fmt)
        done = self.attachment(step, fmt, ws.digest)
        if done is not None:
            return done["sha256"], name
        self.require_edit(pid, key)
        if fmt in LIFTED_FORMATS:
            self.lift_here(pid, key, author=author)  # exports of splats/meshes reuse the lift
        parent = self.ctx.cache_dir / "exports"
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{fmt}-", dir=parent))  # one per export
        try:
            target = work / export_filename(fmt)
            with self.bundle(ws) as root:
                written = Path(export_bundle(root, fmt, target))
            if fmt in FOLDER_FORMATS:  # the whole folder, not the file the writer returns
                written = Path(shutil.make_archive(str(work / "archive"), "zip",
                                                   root_dir=work, base_dir=target.name))  # fmt: skip
            art = self.store.put_file(written, _mime(fmt))
            size = written.stat().st_size
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.repo.link_artifact(step.id, art.sha256, f"export:{fmt}")
        # One key per format: params merge per key, so workers exporting other formats of the
        # same step at the same time never overwrite each other.
        entry = {"world": ws.digest, "sha256": art.sha256, "bytes": size}
        self.repo.update_cell_params(step.id, {f"export:{fmt}": entry})
        return art.sha256, name

    def world_step(self, ws: WorldState) -> HistoryCell:
        """The history step whose world this is: the one that made its newest frame."""
        cell_id = ws.frames[-1].cell_id
        return next(c for c in ws.cells if c.id == cell_id)

    @staticmethod
    def attachment(step: HistoryCell, fmt: str, digest: str) -> dict[str, Any] | None:
        """The stored export of ``step`` in ``fmt`` when it is of the world ``digest``."""
        entry = (step.params or {}).get(f"export:{fmt}")
        return entry if entry and entry.get("world") == digest else None

    def named_file(self, sha256: str, filename: str) -> Path:
        """A stored file under a readable name, handed over for a Gradio component (downloads
        and viewers go by the file extension); see :func:`studio.files.handoff`."""
        return self.handoff(self.local_path(sha256), filename)

    def local_path(self, sha256: str) -> Path:
        """A stored file on this machine's disk: in the store itself when it is a folder, else a
        copy streamed from the bucket into the cache (keyed by the content hash; the copies
        share the cache's bound, least recently used out first)."""
        if self.store.is_local:
            return self.store.path_of(sha256)
        objects = self.ctx.cache_dir / "objects"
        target = objects / sha256[:2] / sha256[2:]
        if not (target.is_file() and target.stat().st_size == self.store.get(sha256).size):
            self.store.copy_to(sha256, target)
            prune_lru(objects, self.ctx.cache_max_mb * 1e6, self.ctx.cache_min_age_s)
        target.parent.touch()  # its folder's time: last use, for the LRU
        return target

    def handoff(self, path: Path, filename: str) -> Path:
        """Any file of the studio (e.g. a cached bundle's video) as :meth:`named_file` does."""
        # A folder listing at most once a minute (or per half lifetime, when that is shorter).
        if time.monotonic() - self._pruned > min(60.0, self.ctx.temp_ttl_s / 2):
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
