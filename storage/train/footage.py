"""Posed footage for training data: one reader for five layouts, one record per frame.

Layouts (``read_footage`` detects them; ``kind`` forces one):

* ``posed``: a folder with ``cameras_opencv.json`` (``../shared/data/posed``: OpenCV c2w, metres);
* ``tum``: a TUM RGB-D folder: ``groundtruth.txt`` (timestamp tx ty tz qx qy qz qw, c2w),
  ``rgb.txt`` or ``rgb/<timestamp>.png``, optional ``depth.txt`` / ``depth/`` (uint16 / 5000);
  a depth image counts when its timestamp is within 20 ms of the colour image (TUM's
  ``associate.py``). Poses are interpolated at the image timestamp by the caller;
* ``colmap``: a sparse model (text or binary) in ``DIR``, ``DIR/sparse/0`` or ``DIR/sparse``,
  images in ``DIR/images``; pinhole cameras only (undistort first);
* ``nerfstudio``: ``transforms.json`` (OpenGL c2w; optional ``depth_file_path``, ``mask_path``);
* ``bundle``: a Loci world bundle (``world.json``); its painted pixels are not trusted as targets.

Poses are returned as stored (``pose`` names the convention) and converted by the caller through
``models.geometry.cameras``; storage never interprets them. Every error names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from storage.errors import StorageError
from storage.formats.bundle import read_bundle
from storage.formats.images import load_image_rgb
from storage.formats.rgbd import load_posed_sequence, read_depth_png
from storage.train.colmap import find_model_dir, read_colmap_model

__all__ = ["FOOTAGE_KINDS", "Footage", "FootageItem", "read_footage"]

FOOTAGE_KINDS = ("posed", "tum", "colmap", "nerfstudio", "bundle")
TUM_MAX_DT = 0.02  # s: colour/depth association window (TUM associate.py default)
TUM_MAX_EXTRAPOLATION = 0.1  # s: images this far outside the ground truth keep its end pose
# Calibrated pinhole intrinsics of the TUM sensors whose images are undistorted (fr3 only).
TUM_INTRINSICS = {"freiburg3": (535.4, 539.2, 320.1, 247.6), "fr3": (535.4, 539.2, 320.1, 247.6)}
_DISTORTION_TOL = 1e-4


@dataclass
class FootageItem:
    """One posed frame as stored.

    K: (3, 3) pixels for ``width`` x ``height``, in the source's pixel convention: ``pixel_centre``
    is 0.0 when the first pixel's centre is at 0 (OpenCV) and 0.5 when it is at 0.5 (COLMAP,
    nerfstudio). ``pose`` is "c2w_opencv" (value (4, 4)), "c2w_opengl" ((4, 4)), "w2c_colmap"
    ((7,) qw qx qy qz tx ty tz) or "tum" ((2, 7) rows tx ty tz qx qy qz qw around the image time,
    blended by ``pose_weight`` in [0, 1]). ``sparse_xyz``: (P, 3) world points seen in the frame
    (COLMAP), used to put estimated depth at the footage's scale.
    """

    name: str
    image: Path
    width: int
    height: int
    K: np.ndarray
    pose: str
    pose_value: np.ndarray
    pixel_centre: float = 0.0
    pose_weight: float = 0.0
    depth: Path | None = None
    depth_scale: float = 1.0  # stored units per metre (PNG); 1.0 for .npy
    trust: Path | None = None
    trust_kind: str = ""  # "source_png": 255 = observed; "mask": non-zero = keep
    sparse_xyz: np.ndarray | None = None


@dataclass
class Footage:
    """``kind`` in FOOTAGE_KINDS; ``metric``: poses are in metres (False for COLMAP, whose scale
    is arbitrary); ``notes``: frames skipped and why."""

    root: Path
    kind: str
    items: list[FootageItem]
    metric: bool = True
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def rgb(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 of frame ``i``, checked against its intrinsics' size."""
        item = self.items[i]
        img = load_image_rgb(item.image)
        if (img.shape[1], img.shape[0]) != (item.width, item.height):
            raise StorageError(
                f"{item.image} is {img.shape[1]}x{img.shape[0]}, but its camera is for "
                f"{item.width}x{item.height}"
            )
        return img

    def depth(self, i: int) -> np.ndarray | None:
        """(H, W) float32 metres (0 = unknown) of frame ``i``, or None when it has none."""
        item = self.items[i]
        if item.depth is None:
            return None
        size = (item.width, item.height)
        if item.depth.suffix == ".npy":
            try:
                d = np.load(item.depth, allow_pickle=False).astype(np.float32) / item.depth_scale
            except (OSError, ValueError) as e:
                raise StorageError(f"depth file {item.depth} is damaged ({e})") from e
            if d.shape != (item.height, item.width):
                raise StorageError(f"{item.depth} is {d.shape}, expected {size[::-1]}")
            return np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)
        return read_depth_png(item.depth, item.depth_scale, size)

    def trust(self, i: int) -> np.ndarray | None:
        """(H, W) bool: pixels that are real observations (None: all of them)."""
        item = self.items[i]
        if item.trust is None:
            return None
        mask = cv2.imread(str(item.trust), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise StorageError(f"mask {item.trust} is missing or unreadable")
        if mask.shape != (item.height, item.width):
            mask = cv2.resize(mask, (item.width, item.height), interpolation=cv2.INTER_NEAREST)
        return mask >= 128 if item.trust_kind == "source_png" else mask > 0


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
def _posed(root: Path) -> Footage:
    seq = load_posed_sequence(root)
    items = [
        FootageItem(
            f.path.stem,
            f.path,
            seq.width,
            seq.height,
            f.K,
            "c2w_opencv",
            f.c2w,
            depth=f.depth_path,
            depth_scale=f.depth_scale or 1.0,
        )  # fmt: skip
        for f in seq.frames
    ]
    return Footage(root, "posed", items)


def _stamped(root: Path, listing: str, folder: str) -> list[tuple[float, Path]]:
    """(timestamp, path) from a TUM list file, else from ``folder/<timestamp>.png``."""
    out = []
    if (root / listing).is_file():
        for n, line in enumerate((root / listing).read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                stamp, rel = line.split()[:2]
                out.append((float(stamp), root / rel))
            except ValueError as e:
                raise StorageError(f"{root / listing} line {n} is not 'timestamp file'") from e
    elif (root / folder).is_dir():
        for p in sorted((root / folder).glob("*.png")):
            try:
                out.append((float(p.stem), p))
            except ValueError as e:
                raise StorageError(
                    f"{p}: TUM image names are timestamps, e.g. 1305031102.17.png"
                ) from e
    return sorted(out, key=lambda x: x[0])


def _tum(root: Path, intrinsics: tuple[float, float, float, float] | None) -> Footage:
    gt_file = root / "groundtruth.txt"
    if not gt_file.is_file():
        raise StorageError(f"{root} is not a TUM RGB-D folder: groundtruth.txt is missing")
    try:
        gt = np.loadtxt(gt_file, comments="#", ndmin=2)
    except ValueError as e:
        raise StorageError(f"{gt_file} is not 'timestamp tx ty tz qx qy qz qw' lines ({e})") from e
    if gt.shape[1] != 8 or len(gt) < 2 or not np.isfinite(gt).all():
        raise StorageError(f"{gt_file} needs at least two finite 8-column pose lines")
    gt = gt[np.argsort(gt[:, 0])]
    if intrinsics is None:
        name = root.name.lower()
        intrinsics = next((v for k, v in TUM_INTRINSICS.items() if k in name), None)
    if intrinsics is None:
        raise StorageError(
            f"cannot tell the camera of {root}: only freiburg3 (fr3) sequences are known and "
            "undistorted; undistort other sequences and give their intrinsics (fx fy cx cy)"
        )
    colour = _stamped(root, "rgb.txt", "rgb")
    if not colour:
        raise StorageError(f"{root} has no colour images (rgb.txt or rgb/*.png)")
    depth = _stamped(root, "depth.txt", "depth")
    d_stamps = np.array([s for s, _ in depth])
    w, h = (lambda im: (im.shape[1], im.shape[0]))(load_image_rgb(colour[0][1]))
    items, notes = [], []
    for stamp, path in colour:
        j = int(np.searchsorted(gt[:, 0], stamp))
        if j == 0 or j == len(gt):
            edge = 0 if j == 0 else len(gt) - 1
            if abs(gt[edge, 0] - stamp) > TUM_MAX_EXTRAPOLATION:
                notes.append(f"{path.name}: no ground-truth pose near its time; skipped")
                continue
            rows, weight = gt[[edge, edge], 1:], 0.0
        else:
            t0, t1 = gt[j - 1, 0], gt[j, 0]
            rows, weight = gt[[j - 1, j], 1:], float((stamp - t0) / max(t1 - t0, 1e-12))
        item = FootageItem(path.stem, path, w, h, _K(*intrinsics), "tum", rows, pose_weight=weight)
        if len(d_stamps):
            k = int(np.argmin(np.abs(d_stamps - stamp)))
            if abs(d_stamps[k] - stamp) <= TUM_MAX_DT:
                item.depth, item.depth_scale = depth[k][1], 5000.0
        items.append(item)
    return Footage(root, "tum", items, notes=notes)


def _pinhole(model: str, params: np.ndarray, where: str) -> np.ndarray:
    p = [float(x) for x in params]
    distortion = {"SIMPLE_PINHOLE": [], "PINHOLE": [], "SIMPLE_RADIAL": p[3:], "RADIAL": p[3:],
                  "OPENCV": p[4:]}.get(model)  # fmt: skip
    if distortion is None or any(abs(d) > _DISTORTION_TOL for d in distortion):
        raise StorageError(
            f"{where}: camera model {model} has lens distortion; undistort the images first "
            "(colmap image_undistorter, or ns-process-data) so the cameras are pinhole"
        )
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        return _K(p[0], p[0], p[1], p[2])
    return _K(p[0], p[1], p[2], p[3])


def _colmap(root: Path) -> Footage:
    model_dir = find_model_dir(root)
    if model_dir is None:
        raise StorageError(f"{root} has no COLMAP model (cameras.txt/.bin, or sparse/0/)")
    model = read_colmap_model(model_dir)
    images_dir = next(
        (d for d in (root / "images", model_dir.parent / "images", model_dir.parent.parent / "images")
         if d.is_dir()), None,
    )  # fmt: skip
    if images_dir is None:
        raise StorageError(f"no images/ folder next to the COLMAP model in {root}")
    items = []
    for im in model.images:
        cam = model.cameras[im.camera_id]
        K = _pinhole(cam.model, cam.params, f"{model_dir} camera {cam.camera_id}")
        pose = np.concatenate([im.qvec, im.tvec])
        items.append(
            FootageItem(
                Path(im.name).stem,
                images_dir / im.name,
                cam.width,
                cam.height,
                K,
                "w2c_colmap",
                pose,
                pixel_centre=0.5,
                sparse_xyz=model.points_of(im),
            )  # fmt: skip
        )
    return Footage(root, "colmap", items, metric=False)


def _nerfstudio(path: Path) -> Footage:
    file = path / "transforms.json" if path.is_dir() else path
    root = file.parent
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        frames = doc["frames"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{file} is not a nerfstudio transforms.json ({e})") from e
    if doc.get("camera_model", "OPENCV") not in ("OPENCV", "PINHOLE"):
        raise StorageError(f"{file}: camera_model {doc['camera_model']} is not pinhole")
    scale = 1.0 / float(doc.get("depth_unit_scale_factor", 1e-3))
    items = []
    for n, f in enumerate(frames):
        where = f"{file} frame {n}"
        g = {**doc, **f}
        try:
            K = _K(float(g["fl_x"]), float(g["fl_y"]), float(g["cx"]), float(g["cy"]))
            w, h = int(g["w"]), int(g["h"])
            c2w = np.asarray(f["transform_matrix"], np.float64)
            image = root / f["file_path"]
        except (KeyError, TypeError, ValueError) as e:
            raise StorageError(f"{where} lacks intrinsics, size or pose ({e})") from e
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0, 0, 0, 1]])
        if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
            raise StorageError(f"{where}: transform_matrix must be a finite 4x4 matrix")
        if any(abs(float(g.get(k, 0.0))) > _DISTORTION_TOL for k in ("k1", "k2", "k3", "p1", "p2")):
            raise StorageError(f"{where} has lens distortion; undistort the images first")
        item = FootageItem(image.stem, image, w, h, K, "c2w_opengl", c2w, pixel_centre=0.5)
        if f.get("depth_file_path"):
            item.depth = root / f["depth_file_path"]
            item.depth_scale = 1.0 if item.depth.suffix == ".npy" else scale
        if f.get("mask_path"):
            item.trust, item.trust_kind = root / f["mask_path"], "mask"
        items.append(item)
    return Footage(root, "nerfstudio", items, metric=False)


def _bundle(root: Path) -> Footage:
    b = read_bundle(root)
    items = []
    for i in b.indices:
        e = b.frame(i)
        items.append(
            FootageItem(
                f"{i:06d}",
                b.path(e["rgb"]),
                b.width,
                b.height,
                b.K(i),
                "c2w_opencv",
                b.c2w(i),
                depth=b.path(e["depth"]),
                trust=b.path(e["source_mask"]),
                trust_kind="source_png",
            )  # fmt: skip
        )
    return Footage(b.root, "bundle", items)


def detect_kind(path: Path) -> str:
    """The layout of ``path`` (see the module docstring); StorageError when none fits."""
    if path.is_file() and path.name.endswith(".json"):
        return "nerfstudio"
    if not path.is_dir():
        raise StorageError(f"footage folder not found: {path}")
    for kind, marker in (("bundle", "world.json"), ("posed", "cameras_opencv.json"),
                         ("nerfstudio", "transforms.json"), ("tum", "groundtruth.txt")):  # fmt: skip
        if (path / marker).is_file():
            return kind
    if find_model_dir(path) is not None:
        return "colmap"
    raise StorageError(
        f"{path} is not footage Loci can read: expected a world bundle (world.json), "
        "cameras_opencv.json, a nerfstudio transforms.json, a TUM RGB-D folder "
        "(groundtruth.txt + rgb/) or a COLMAP model (sparse/0/ + images/)"
    )


def read_footage(
    path: str | Path,
    kind: str | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
) -> Footage:
    """Read posed footage at ``path`` (``kind`` detected unless given; ``intrinsics`` fx fy cx cy
    for TUM folders other than fr3)."""
    p = Path(path)
    kind = kind or detect_kind(p)
    if kind not in FOOTAGE_KINDS:
        raise StorageError(
            f"unknown footage kind {kind!r}; choose one of {', '.join(FOOTAGE_KINDS)}"
        )
    if kind == "tum":
        footage = _tum(p, intrinsics)
    else:
        footage = {"posed": _posed, "colmap": _colmap, "nerfstudio": _nerfstudio,
                   "bundle": _bundle}[kind](p)  # fmt: skip
    if len(footage.items) < 2:
        raise StorageError(f"{p} has {len(footage.items)} usable posed frames; training needs 2+")
    for item in footage.items:
        if not item.image.is_file():
            raise StorageError(f"{p}: image {item.image} is missing")
    return footage
