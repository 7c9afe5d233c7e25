"""The world bundle on disk (DESIGN.md, "World bundle"): writer and reader.

A bundle is a folder::

    world.json                 {"version": 1, "convention": "opencv_c2w", "units": "meters", ...,
                                "frames": [{"index", "rgb", "depth", "source_mask", "K", "c2w", ...}]}
    frames/NNNNNN.png          (H, W, 3) uint8 RGB frame
    frames/NNNNNN.depth.npy    (H, W) float32 z-depth in metres
    frames/NNNNNN.source.png   (H, W) uint8: 255 routed from memory, 0 painted
    trajectory.json, pointcloud.ply, video.mp4   (written by others through ``BundleWriter.path``)

``BundleWriter`` builds the bundle in a hidden sibling folder and renames it into place only when
everything succeeded, so ``out_dir`` is either absent, the previous complete world, or the new
complete world; never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from storage.atomic import atomic_write_json, json_default, save_npy_atomic, save_png_atomic
from storage.errors import BundleError

__all__ = ["BUNDLE_VERSION", "BundleInfo", "BundleWriter", "frame_relnames", "read_bundle"]

BUNDLE_VERSION = 1
WORLD_JSON = "world.json"
_FILE_KEYS = ("rgb", "depth", "source_mask")


def frame_relnames(index: int) -> dict[str, str]:
    """Relative paths of one frame's files, e.g. {"rgb": "frames/000003.png", ...}."""
    stem = f"frames/{index:06d}"
    return {"rgb": f"{stem}.png", "depth": f"{stem}.depth.npy", "source_mask": f"{stem}.source.png"}


def _safe_relpath(root: Path, relname: str | os.PathLike[str]) -> Path:
    """``root / relname``, refusing absolute paths and ``..`` (a world.json must not point outside)."""
    rel = Path(relname)
    if rel.is_absolute() or ".." in rel.parts or str(relname) in ("", "."):
        raise BundleError(f"'{relname}' is not a valid file name inside a world folder")
    return root / rel


def _is_loci_world_or_empty(path: Path) -> bool:
    return path.is_dir() and ((path / WORLD_JSON).is_file() or not any(path.iterdir()))


class BundleWriter:
    """Write a world bundle atomically. Use as a context manager::

        with BundleWriter(out_dir) as bundle:
            bundle.write_frame(0, rgb, depth, source_mask, {"K": K, "c2w": c2w})
            write_video(bundle.path("video.mp4"), frames)
            bundle.finish({"up": up, "backends": {...}, "seed": 0})

    ``overwrite=False`` refuses an existing non-empty ``out_dir`` up front (before any work).
    ``overwrite=True`` replaces an existing *Loci world* (or empty folder) only after the new one is
    complete; any other existing folder is refused so user files are never deleted.
    """

    def __init__(self, out_dir: str | os.PathLike[str], overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        self._temp_dir: Path | None = None
        self._frames: dict[int, dict[str, Any]] = {}
        self._finished = False
        self._check_target()

    def _check_target(self) -> None:
        out = self.out_dir
        if not out.exists():
            return
        if not out.is_dir():
            raise BundleError(f"{out} is a file, not a folder; choose another output folder")
        if not any(out.iterdir()):
            return  # an empty folder is fine to fill
        if not self.overwrite:
            raise BundleError(
                f"the output folder {out} already exists and is not empty; choose another folder "
                "or allow overwriting"
            )
        if not _is_loci_world_or_empty(out):
            raise BundleError(
                f"the output folder {out} holds files that are not a Loci world; refusing to "
                "replace it. Choose another folder"
            )

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> BundleWriter:
        self._check_target()  # the folder may have appeared since __init__
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        temp = self.out_dir.with_name(f".{self.out_dir.name}.partial-{uuid.uuid4().hex[:10]}")
        (temp / "frames").mkdir(parents=True)
        self._temp_dir = temp
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        temp = self._temp_dir
        if exc_type is not None:
            self._discard()
            return False  # re-raise
        if not self._finished:
            self._discard()
            raise BundleError(
                "the world was not finished (finish() was never called); nothing saved"
            )
        assert temp is not None
        try:
            self._commit(temp)
        except BaseException:
            self._discard()
            raise
        self._temp_dir = None
        return False

    def _discard(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _commit(self, temp: Path) -> None:
        out = self.out_dir
        self._check_target()
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # rename onto an empty folder is not portable; remove it first
        if not out.exists():
            os.replace(temp, out)
            return
        # Overwrite: move the old world aside, move the new one in, then delete the old one. If
        # the second rename fails, put the old world back so nothing is lost.
        aside = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:10]}")
        os.replace(out, aside)
        try:
            os.replace(temp, out)
        except BaseException:
            os.replace(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)

    # -- writing ---------------------------------------------------------------------------------
    @property
    def temp_dir(self) -> Path:
        """The folder being filled (only valid inside the ``with`` block)."""
        if self._temp_dir is None:
            raise BundleError("BundleWriter must be used inside a 'with' block")
        return self._temp_dir

    def path(self, relname: str | os.PathLike[str]) -> Path:
        """Path of ``relname`` inside the bundle being written (parent folders created)."""
        target = _safe_relpath(self.temp_dir, relname)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_json(self, relname: str | os.PathLike[str], obj: Any) -> Path:
        """Write ``obj`` as JSON at ``relname`` (e.g. "trajectory.json"); numpy values allowed."""
        if Path(relname).as_posix() == WORLD_JSON:
            raise BundleError("world.json is written by finish(), not write_json()")
        return atomic_write_json(self.path(relname), obj)

    def write_frame(
        self,
        index: int,
        rgb: np.ndarray,
        depth: np.ndarray,
        source_mask: np.ndarray,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one frame and remember its world.json entry (returned).

        rgb: (H, W, 3) uint8; depth: (H, W) float z-depth in metres (stored float32);
        source_mask: (H, W) bool/uint8, nonzero where the pixel was routed from memory (stored
        0/255); meta: JSON-able extras for the entry (K, c2w, memory_coverage, retrieved, ...).
        """
        index = int(index)
        if index < 0:
            raise BundleError(f"frame index must be >= 0, got {index}")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise BundleError(
                f"frame {index}: rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}"
            )
        size = rgb.shape[:2]
        depth = np.asarray(depth)
        if depth.shape != size:
            raise BundleError(
                f"frame {index}: depth shape {depth.shape} does not match image {size}"
            )
        mask = np.asarray(source_mask)
        if mask.shape != size:
            raise BundleError(
                f"frame {index}: source mask shape {mask.shape} does not match {size}"
            )
        meta = dict(meta or {})
        clash = {"index", *_FILE_KEYS} & meta.keys()
        if clash:
            raise BundleError(f"frame {index}: meta must not set {sorted(clash)}")
        # Round-trip through JSON now: numpy -> lists, and a bad value fails at this frame, not at
        # the very end after minutes of generation.
        try:
            meta = json.loads(json.dumps(meta, default=json_default, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"frame {index}: metadata cannot be saved as JSON ({exc})") from exc

        names = frame_relnames(index)
        save_png_atomic(self.path(names["rgb"]), rgb)
        save_npy_atomic(self.path(names["depth"]), depth.astype(np.float32, copy=False))
        save_png_atomic(
            self.path(names["source_mask"]), np.where(mask > 0, 255, 0).astype(np.uint8)
        )
        entry = {"index": index, **names, **meta}
        self._frames[index] = entry
        return entry

    def finish(self, world_meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write world.json (version, convention, units, ``world_meta``, frames sorted by index).

        ``width``/``height`` default to frame 0's size. The rename into ``out_dir`` happens when
        the ``with`` block exits cleanly. Returns the world dict.
        """
        world_meta = dict(world_meta or {})
        reserved = {"version", "frames"} & world_meta.keys()
        if reserved:
            raise BundleError(f"world metadata must not set {sorted(reserved)}")
        if not self._frames:
            raise BundleError("a world needs at least one frame")
        world: dict[str, Any] = {
            "version": BUNDLE_VERSION,
            "convention": "opencv_c2w",
            "units": "meters",
            **world_meta,
        }
        if "width" not in world or "height" not in world:
            first = self._frames[min(self._frames)]
            height, width = np.load(self.temp_dir / first["depth"], mmap_mode="r").shape
            world.setdefault("width", int(width))
            world.setdefault("height", int(height))
        world["frames"] = [self._frames[i] for i in sorted(self._frames)]
        try:
            atomic_write_json(self.path(WORLD_JSON), world)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"world metadata cannot be saved as JSON ({exc})") from exc
        self._finished = True
        return world


@dataclass
class BundleInfo:
    """A validated world bundle on disk. ``world`` is the parsed world.json."""

    root: Path
    world: dict[str, Any]

    @property
    def frames(self) -> list[dict[str, Any]]:
        return self.world["frames"]

    @property
    def indices(self) -> list[int]:
        return [int(f["index"]) for f in self.frames]

    @property
    def width(self) -> int:
        return int(self.world["width"])

    @property
    def height(self) -> int:
        return int(self.world["height"])

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> dict[str, Any]:
        """The world.json entry whose "index" is ``index``."""
        for entry in self.frames:
            if int(entry["index"]) == index:
                return entry
        raise BundleError(f"this world has no frame {index} (it has {len(self.frames)} frames)")

    def path(self, relname: str | os.PathLike[str]) -> Path:
        """Absolute path of a file inside the bundle (e.g. "video.mp4"); may not exist."""
        return _safe_relpath(self.root, relname)

    def frame_rgb(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of frame ``index``."""
        import cv2

        file = self.path(self.frame(index)["rgb"])
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BundleError(f"frame image {file} is missing or damaged")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def frame_depth(self, index: int) -> np.ndarray:
        """(H, W) float32 z-depth in metres of frame ``index``."""
        file = self.path(self.frame(index)["depth"])
        try:
            return np.load(file, allow_pickle=False).astype(np.float32, copy=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"depth file {file} is missing or damaged") from exc

    def frame_source_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8 mask of frame ``index``: 255 routed from memory, 0 painted."""
        import cv2

        file = self.path(self.frame(index)["source_mask"])
        mask = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise BundleError(f"source mask {file} is missing or damaged")
        return mask

    def K(self, index: int) -> np.ndarray:  # noqa: N802  (K is the universal name)
        """(3, 3) float64 intrinsics of frame ``index`` (pixels, for width x height)."""
        return np.asarray(self.frame(index)["K"], dtype=np.float64)

    def c2w(self, index: int) -> np.ndarray:
        """(4, 4) float64 camera-to-world pose (OpenCV axes) of frame ``index``."""
        return np.asarray(self.frame(index)["c2w"], dtype=np.float64)

    def trajectory(self) -> dict[str, Any] | None:
        """The parsed trajectory.json, or None when the bundle has none."""
        file = self.root / "trajectory.json"
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{file} is damaged: {exc}") from exc


def read_bundle(directory: str | os.PathLike[str]) -> BundleInfo:
    """Open and validate a world bundle: world.json present and parseable, version supported,
    every frame's files present. Raises ``BundleError`` with a plain explanation otherwise."""
    root = Path(directory).absolute()
    if not root.is_dir():
        raise BundleError(f"{root} does not exist or is not a folder")
    world_file = root / WORLD_JSON
    if not world_file.is_file():
        raise BundleError(f"{root} is not a Loci world (no world.json)")
    try:
        world = json.loads(world_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{world_file} is damaged and cannot be read ({exc})") from exc
    if not isinstance(world, dict):
        raise BundleError(f"{world_file} is damaged: it does not describe a world")
    version = world.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{world_file} has no valid version number (found {version!r})")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"this world was saved in bundle version {version} by a newer Loci; this Loci reads "
            f"version {BUNDLE_VERSION}. Please update Loci to open it"
        )
    frames = world.get("frames")
    if not isinstance(frames, list) or not frames:
        raise BundleError(f"{world_file} lists no frames")
    for position, entry in enumerate(frames):
        if not isinstance(entry, dict) or "index" not in entry:
            raise BundleError(f"{world_file}: frame entry {position} is damaged")
        for key in _FILE_KEYS:
            rel = entry.get(key)
            if not isinstance(rel, str):
                raise BundleError(f"{world_file}: frame {entry['index']} has no '{key}' file")
            if not _safe_relpath(root, rel).is_file():
                raise BundleError(f"the world is incomplete: file {rel} is missing")
    info = BundleInfo(root=root, world=world)
    if "width" not in world or "height" not in world:
        height, width = np.load(info.path(frames[0]["depth"]), mmap_mode="r").shape
        world.setdefault("width", int(width))
        world.setdefault("height", int(height))
    return info
