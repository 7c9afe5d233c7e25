"""COLMAP sparse models, text (``*.txt``) or binary (``*.bin``): cameras, images, 3D points.

Only what training data needs is kept: per camera its model, size and parameters; per image its
world-to-camera pose (quaternion w x y z, translation, COLMAP = OpenCV axes), camera, file name
and the ids of the 3D points it observes; per point its world position. Formats follow COLMAP's
``src/colmap/scene/reconstruction_io`` (also what ``pycolmap`` writes); every error names the file.

numpy in, numpy out; poses are returned as stored (the caller converts them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from storage.errors import StorageError

__all__ = ["ColmapCamera", "ColmapImage", "ColmapModel", "find_model_dir", "read_colmap_model"]

# model id -> (name, number of parameters), from COLMAP's camera_models.h
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_PARAMS = {name: n for name, n in CAMERA_MODELS.values()}


@dataclass
class ColmapCamera:
    """model: COLMAP model name; params: its parameters (focal lengths and principal point in
    COLMAP's pixel convention, where the first pixel's centre is at 0.5)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class ColmapImage:
    """qvec: (4,) w2c rotation (w, x, y, z); tvec: (3,) w2c translation; point3d_ids: observed
    3D points (-1 entries removed)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class ColmapModel:
    root: Path
    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]  # sorted by name (COLMAP ids follow registration order)
    points: dict[int, np.ndarray]  # point id -> (3,) world xyz

    def points_of(self, image: ColmapImage) -> np.ndarray:
        """(P, 3) float64 world positions of the 3D points ``image`` observes."""
        xyz = [self.points[i] for i in image.point3d_ids.tolist() if i in self.points]
        return np.asarray(xyz, np.float64).reshape(-1, 3)


def find_model_dir(root: Path) -> Path | None:
    """The folder holding cameras/images files: ``root``, ``root/sparse/0`` or ``root/sparse``."""
    for cand in (root, root / "sparse" / "0", root / "sparse"):
        if any((cand / f"cameras.{ext}").is_file() for ext in ("txt", "bin")):
            return cand
    return None


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StorageError(f"cannot read COLMAP file {path} ({e})") from e
    return text.splitlines()


def _cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        try:
            cam = ColmapCamera(int(f[0]), f[1], int(f[2]), int(f[3]), np.array(f[4:], np.float64))
        except (IndexError, ValueError) as e:
            raise StorageError(f"{path} line {n} is not a COLMAP camera line ({e})") from e
        if _PARAMS.get(cam.model) not in (None, len(cam.params)):
            raise StorageError(f"{path} line {n}: {cam.model} needs {_PARAMS[cam.model]} params")
        cams[cam.camera_id] = cam
    return cams


def _images_txt(path: Path) -> list[ColmapImage]:
    # Two lines per image: the pose line, then the observations (x y point3D_id)*; the second
    # line may be empty, so blank lines are significant here (only comments are skipped).
    lines = [ln for ln in _lines(path) if not ln.startswith("#")]
    while lines and not lines[-1].strip():
        lines.pop()
    images = []
    for k in range(0, len(lines), 2):
        f = lines[k].split()
        try:
            image = ColmapImage(
                int(f[0]), np.array(f[1:5], np.float64), np.array(f[5:8], np.float64),
                int(f[8]), " ".join(f[9:]),
            )  # fmt: skip
            obs = lines[k + 1].split() if k + 1 < len(lines) else []
            ids = np.array(obs[2::3], np.int64)
        except (IndexError, ValueError) as e:
            raise StorageError(f"{path}: image entry {k // 2 + 1} is malformed ({e})") from e
        image.point3d_ids = ids[ids >= 0]
        images.append(image)
    return images


def _points_txt(path: Path) -> dict[int, np.ndarray]:
    pts = {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        try:
            pts[int(f[0])] = np.array(f[1:4], np.float64)
        except (IndexError, ValueError) as e:
            raise StorageError(f"{path} line {n} is not a COLMAP point line ({e})") from e
    return pts


class _Reader:
    """Little-endian struct reads with a clear error at the end of the data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise StorageError(f"cannot read COLMAP file {path} ({e})") from e
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise StorageError(f"{self.path} is truncated (COLMAP binary model)")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise StorageError(f"{self.path} is truncated (COLMAP binary model)")
        s = self.data[self.pos : end].decode("utf-8", "replace")
        self.pos = end + 1
        return s


def _cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r, cams = _Reader(path), {}
    for _ in range(r.read("Q")[0]):
        cam_id, model_id, width, height = r.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise StorageError(f"{path}: unknown COLMAP camera model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        cams[cam_id] = ColmapCamera(cam_id, name, width, height, np.array(r.read(f"{n}d")))
    return cams


def _images_bin(path: Path) -> list[ColmapImage]:
    r, images = _Reader(path), []
    for _ in range(r.read("Q")[0]):
        image_id, *pose, cam_id = r.read("i7di")
        name = r.cstring()
        (n,) = r.read("Q")
        obs = np.frombuffer(r.data, dtype=np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]),
                            count=n, offset=r.pos)  # fmt: skip
        r.pos += n * 24
        if r.pos > len(r.data):
            raise StorageError(f"{path} is truncated (COLMAP binary model)")
        ids = obs["id"].astype(np.int64)
        images.append(
            ColmapImage(
                image_id, np.array(pose[:4]), np.array(pose[4:]), cam_id, name, ids[ids >= 0]
            )
        )
    return images


def _points_bin(path: Path) -> dict[int, np.ndarray]:
    r, pts = _Reader(path), {}
    for _ in range(r.read("Q")[0]):
        point_id, x, y, z = r.read("Q3d")
        r.read("3Bd")  # colour, reprojection error
        (track,) = r.read("Q")
        r.pos += 8 * track  # (image id, point2D index) int32 pairs
        pts[point_id] = np.array([x, y, z])
    if r.pos > len(r.data):
        raise StorageError(f"{path} is truncated (COLMAP binary model)")
    return pts


def read_colmap_model(model_dir: str | Path) -> ColmapModel:
    """Read ``cameras``, ``images`` and (if present) ``points3D`` from ``model_dir`` (text files
    win when both text and binary exist)."""
    root = Path(model_dir)
    readers = {
        "cameras": (_cameras_txt, _cameras_bin),
        "images": (_images_txt, _images_bin),
        "points3D": (_points_txt, _points_bin),
    }
    out = {}
    for stem, (txt, binary) in readers.items():
        if (root / f"{stem}.txt").is_file():
            out[stem] = txt(root / f"{stem}.txt")
        elif (root / f"{stem}.bin").is_file():
            out[stem] = binary(root / f"{stem}.bin")
        elif stem == "points3D":
            out[stem] = {}
        else:
            raise StorageError(f"{root} is not a COLMAP model: {stem}.txt or {stem}.bin is missing")
    images = sorted(out["images"], key=lambda im: im.name)
    if not images:
        raise StorageError(f"the COLMAP model in {root} has no registered images")
    for im in images:
        if im.camera_id not in out["cameras"]:
            raise StorageError(f"{root}: image {im.name} uses camera {im.camera_id}, not listed")
    return ColmapModel(root, out["cameras"], images, out["points3D"])
