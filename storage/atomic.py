"""Atomic file writes: a reader never sees a half-written file.

Every writer puts the bytes into a temporary file in the *same directory* as the target (so the
final ``os.replace`` is a rename on one filesystem, which POSIX makes atomic), fsyncs it so a crash
right after the rename cannot leave an empty file, then renames it over the target. If anything
fails the temporary file is removed and the old target (if any) is untouched.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from storage.errors import StorageError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "encode_png",
    "json_default",
    "save_npy_atomic",
    "save_png_atomic",
]


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. Windows), so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``).

    The parent directory is created if needed. Returns the final path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file private (0600); a saved world is an ordinary file (umask).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        # Leave nothing behind: the old target (if any) is still intact.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def json_default(obj: Any) -> Any:
    # numpy values turn up everywhere (K, c2w, coverage); store them as plain JSON numbers/lists.
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"cannot store a {type(obj).__name__} in JSON")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (numpy arrays/scalars converted to lists/numbers) atomically."""
    text = json.dumps(obj, indent=indent, default=json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def save_npy_atomic(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save ``array`` in ``.npy`` format atomically (no pickling: object arrays are refused)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 image, (H, W) grey or (H, W, 3) RGB, as PNG bytes."""
    import cv2  # local import keeps `import storage.atomic` light

    array = np.asarray(image)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise StorageError(f"PNG images must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 3:
        array = np.ascontiguousarray(array[:, :, ::-1])  # OpenCV writes BGR
    elif array.ndim != 2:
        raise StorageError(f"PNG images must be HxW or HxWx3, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise StorageError(f"cannot save an empty image (shape {array.shape})")
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise StorageError("could not encode the image as PNG")
    return encoded.tobytes()


def save_png_atomic(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Save a uint8 (H, W) or (H, W, 3) RGB image as PNG atomically. Bool masks become 0/255."""
    return atomic_write_bytes(path, encode_png(image))
