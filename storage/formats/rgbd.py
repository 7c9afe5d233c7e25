"""Readers for real evaluation data: posed RGB sequences and single RGB-D frames.

Formats (see ``../shared/data``):

* posed sequence: a folder with ``cameras_opencv.json`` = {"width", "height", "frames": [{"file",
  "K", "c2w", optional "depth" + "depth_scale"}]} (OpenCV c2w, metres);
* RGB-D benchmark folders: ``*_metric3d/test_annotations.json`` (NYU, KITTI: cam_in + depth_scale),
  and ``open3d_testdata`` (TUM: uint16 / 5000; SUN3D: 16-bit rotated, / 1000).

Every error names the file that is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from storage.errors import StorageError
from storage.formats.images import load_image_rgb


@dataclass
class PosedFrame:
    """One frame of a posed sequence: image path, K (3, 3) for (width, height), c2w (4, 4),
    optional depth path and its scale (stored units per metre)."""

    path: Path
    K: np.ndarray
    c2w: np.ndarray
    depth_path: Path | None = None
    depth_scale: float | None = None


@dataclass
class PosedSequence:
    root: Path
    width: int
    height: int
    frames: list[PosedFrame]

    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of frame ``i``; checked against the declared size."""
        return read_rgb(self.frames[i].path, (self.width, self.height))


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; ``size`` (width, height) is checked when given."""
    if not path.is_file():
        raise StorageError(f"missing image file: {path}")
    img = load_image_rgb(path)  # PhotoError (a StorageError) names the file when unreadable
    if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
        raise StorageError(
            f"{path} is {img.shape[1]}x{img.shape[0]}, but its intrinsics are for "
            f"{size[0]}x{size[1]}"
        )
    return img


def read_depth_png(path: Path, scale: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit PNG (0 = invalid); refuses an empty depth map."""
    if not path.is_file():
        raise StorageError(f"missing depth file: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise StorageError(f"not a single-channel depth image: {path}")
    if size is not None and (raw.shape[1], raw.shape[0]) != tuple(size):
        raise StorageError(f"{path} is {raw.shape[1]}x{raw.shape[0]}, expected {size[0]}x{size[1]}")
    depth = raw.astype(np.float32) / float(scale)
    if not (depth > 0).any():
        raise StorageError(f"depth map has no valid pixel: {path}")
    return depth


def _matrix(value: object, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise StorageError(f"{where} is not a numeric matrix") from e
    if m.shape != shape or not np.isfinite(m).all():
        raise StorageError(f"{where} must be a finite {shape[0]}x{shape[1]} matrix")
    return m


def load_posed_sequence(root: str | Path) -> PosedSequence:
    """Read and validate a folder in the ``cameras_opencv.json`` layout."""
    root = Path(root)
    meta_path = root / "cameras_opencv.json"
    if not meta_path.is_file():
        raise StorageError(f"not a posed sequence: {meta_path} is missing")
    try:
        meta = json.loads(meta_path.read_text())
        width, height = int(meta["width"]), int(meta["height"])
        raw_frames = meta["frames"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise StorageError(f"{meta_path} is malformed ({e}); it needs width, height, frames") from e
    if not isinstance(raw_frames, list) or len(raw_frames) < 2:
        raise StorageError(f"{meta_path} needs at least two frames")
    frames = []
    for i, f in enumerate(raw_frames):
        where = f"{meta_path} frame {i}"
        if not isinstance(f, dict) or "file" not in f:
            raise StorageError(f"{where} has no 'file'")
        path = root / f["file"]
        if not path.is_file():
            raise StorageError(f"{where}: missing image file {path}")
        depth = root / f["depth"] if f.get("depth") else None
        if depth is not None and not depth.is_file():
            raise StorageError(f"{where}: missing depth file {depth}")
        frames.append(
            PosedFrame(
                path,
                _matrix(f.get("K"), (3, 3), f"{where} K"),
                _matrix(f.get("c2w"), (4, 4), f"{where} c2w"),
                depth,
                float(f["depth_scale"]) if f.get("depth_scale") else None,
            )
        )
    return PosedSequence(root, width, height, frames)


@dataclass
class RGBDFrame:
    """name; rgb (H, W, 3) uint8; depth (H, W) float32 metres, 0 = invalid; K (3, 3)."""

    name: str
    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def load_rgbd_benchmark(root: str | Path) -> list[RGBDFrame]:
    """All single RGB-D frames under ``root`` (``../shared/data/rgbd``), in a fixed order."""
    root = Path(root)
    if not root.is_dir():
        raise StorageError(f"RGB-D data folder not found: {root}")
    frames: list[RGBDFrame] = []
    for folder in ("nyu_metric3d", "kitti_metric3d"):
        ann_path = root / folder / "test_annotations.json"
        if not ann_path.is_file():
            continue
        ann = json.loads(ann_path.read_text())
        for f in sorted(ann["files"], key=lambda f: f["rgb"]):
            rgb = read_rgb(root / folder / "rgb" / Path(f["rgb"]).name)
            depth = read_depth_png(
                root / folder / "depth" / Path(f["depth"]).name,
                f["depth_scale"],
                (rgb.shape[1], rgb.shape[0]),
            )
            name = f"{folder.split('_')[0]}/{Path(f['rgb']).stem}"
            frames.append(RGBDFrame(name, rgb, depth, _K(*f["cam_in"])))
    o3d = root / "open3d_testdata"
    if (o3d / "TUM_depth.png").is_file():
        rgb = read_rgb(o3d / "TUM_color.png")
        depth = read_depth_png(o3d / "TUM_depth.png", 5000.0, (rgb.shape[1], rgb.shape[0]))
        frames.append(RGBDFrame("tum", rgb, depth, _K(535.4, 539.2, 320.1, 247.6)))
    if (o3d / "SUN_depth.png").is_file():
        rgb = read_rgb(o3d / "SUN_color.jpg")
        raw = cv2.imread(str(o3d / "SUN_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.uint16)
        sun = ((raw >> 3) | (raw << 13)).astype(np.float32) / 1000.0  # SUN3D's bit rotation
        frames.append(RGBDFrame("sun", rgb, sun, _K(525.0, 525.0, 319.5, 239.5)))
    if not frames:
        raise StorageError(f"no RGB-D frames found under {root}")
    return frames
