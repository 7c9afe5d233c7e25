"""Walkthrough videos: frames in, a browser-playable MP4 out.

The preferred path pipes raw RGB frames to the ``ffmpeg`` program (H.264, yuv420p, faststart: the
combination every browser plays and can start before the download ends). Without ffmpeg, OpenCV's
own ``mp4v`` writer still produces a file (fine for downloads and tests, not for all browsers).

Writing is atomic: frames go to a hidden temporary file in the target's directory and only a
successful ``close()`` renames it into place, so a crash never leaves a truncated ``video.mp4``.
yuv420p needs even sizes, so an odd width/height is padded by one replicated pixel row/column.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from storage.errors import StorageError

__all__ = ["VideoStream", "ffmpeg_path", "write_video"]


def ffmpeg_path() -> str | None:
    """Path of the ffmpeg executable (``LOCI_FFMPEG`` overrides; "" disables), or None."""
    override = os.environ.get("LOCI_FFMPEG")
    if override is not None:
        return override or None
    return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=4)
def _ffmpeg_encoder(ffmpeg: str) -> str:
    """Best available H.264 encoder, or MPEG-4 part 2 when this ffmpeg build has none."""
    try:
        listing = subprocess.run(
            [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "libx264"  # let the real run report the problem
    for encoder in ("libx264", "libopenh264", "h264"):
        if f" {encoder} " in listing:
            return encoder
    return "mpeg4"


class VideoStream:
    """Incremental MP4 writer: ``write(frame)`` one (height, width, 3) uint8 RGB frame at a time,
    then ``close()`` to finalise and move the file into place (or ``abort()`` to discard it).

    Also a context manager: a clean exit closes, an exception aborts.
    ``backend`` is "auto" (ffmpeg when installed, else OpenCV), "ffmpeg" or "opencv".
    After ``close()``, ``codec`` says what was used: "h264", "mpeg4" or "mp4v".
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float = 12,
        *,
        backend: str = "auto",
    ) -> None:
        if width < 1 or height < 1:
            raise StorageError(f"video size must be positive, got {width} x {height}")
        if not fps > 0:
            raise StorageError(f"video frame rate must be positive, got {fps}")
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        # yuv420p subsamples chroma 2x2: both sides must be even.
        self.out_width = self.width + self.width % 2
        self.out_height = self.height + self.height % 2
        self.frames_written = 0
        self.codec = ""
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.partial-{uuid.uuid4().hex[:8]}.mp4")
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer = None
        self._stderr = None
        ffmpeg = ffmpeg_path() if backend in ("auto", "ffmpeg") else None
        if backend == "ffmpeg" and ffmpeg is None:
            raise StorageError("ffmpeg is not installed, so the video cannot be written with it")
        if backend not in ("auto", "ffmpeg", "opencv"):
            raise StorageError(f"unknown video backend '{backend}'")
        if ffmpeg is not None:
            self._start_ffmpeg(ffmpeg)
        else:
            self._start_opencv()

    def _start_ffmpeg(self, ffmpeg: str) -> None:
        encoder = _ffmpeg_encoder(ffmpeg)
        self.codec = "mpeg4" if encoder == "mpeg4" else "h264"
        quality = ["-preset", "veryfast", "-crf", "18"] if encoder == "libx264" else ["-q:v", "3"]
        command = [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{self.out_width}x{self.out_height}", "-r", f"{self.fps:g}", "-i", "-",
            "-an", "-c:v", encoder, *quality, "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(self._tmp),
        ]  # fmt: skip
        # stderr to a file, not a pipe: an unread pipe could fill up and stall ffmpeg.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError as exc:
            self._stderr.close()
            raise StorageError(f"could not start ffmpeg ({exc}); is it installed?") from exc

    def _start_opencv(self) -> None:
        import cv2

        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        size = (self.out_width, self.out_height)
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, size)
        if not self._writer.isOpened():
            self._writer = None
            raise StorageError("could not open a video writer (neither ffmpeg nor OpenCV works)")
        self.codec = "mp4v"

    def _ffmpeg_error(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace").strip()[-800:]

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: (height, width, 3) uint8 RGB (or (height, width) grey)."""
        if self._closed:
            raise StorageError("this video is already finished; no more frames can be added")
        array = np.asarray(frame)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.shape != (self.height, self.width, 3) or array.dtype != np.uint8:
            raise StorageError(
                f"video frames must be uint8 of shape ({self.height}, {self.width}, 3), got "
                f"{array.dtype} {array.shape}"
            )
        if (self.out_height, self.out_width) != (self.height, self.width):
            pad = ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0))
            array = np.pad(array, pad, mode="edge")
        if self._proc is not None:
            try:
                self._proc.stdin.write(np.ascontiguousarray(array).tobytes())  # type: ignore[union-attr]
            except (BrokenPipeError, OSError) as exc:
                self._proc.wait()
                message = self._ffmpeg_error()
                self.abort()
                raise StorageError(f"ffmpeg stopped while writing the video: {message}") from exc
        else:
            self._writer.write(np.ascontiguousarray(array[:, :, ::-1]))  # type: ignore[union-attr]
        self.frames_written += 1

    def close(self) -> str:
        """Finish the file and rename it to ``path``; returns the codec used."""
        if self._closed:
            return self.codec
        if self.frames_written == 0:
            self.abort()
            raise StorageError("a video needs at least one frame")
        try:
            if self._proc is not None:
                self._proc.stdin.close()  # type: ignore[union-attr]
                code = self._proc.wait()
                if code != 0:
                    raise StorageError(f"ffmpeg failed to write the video: {self._ffmpeg_error()}")
            elif self._writer is not None:
                self._writer.release()
            if not self._tmp.exists() or self._tmp.stat().st_size == 0:
                raise StorageError("the video writer produced no output")
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        return self.codec

    def abort(self) -> None:
        """Stop writing and delete the partial file; ``path`` is left untouched."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            self._proc.kill()
            self._proc.wait()
        if self._writer is not None:
            self._writer.release()
        self._tmp.unlink(missing_ok=True)
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        self._proc = None
        self._writer = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # Never leave a hidden partial file or a zombie ffmpeg behind if the caller forgot.
        if not getattr(self, "_closed", True):
            try:
                self.abort()
            except Exception:
                pass


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float = 12,
    *,
    backend: str = "auto",
) -> str:
    """Write (H, W, 3) uint8 RGB frames to an MP4 at ``path`` atomically; returns the codec used
    ("h264" via ffmpeg, "mpeg4" via an ffmpeg without H.264, or "mp4v" via OpenCV)."""
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise StorageError("a video needs at least one frame") from None
    if first.ndim not in (2, 3):
        raise StorageError(f"video frames must be HxWx3 images, got shape {first.shape}")
    stream = VideoStream(path, first.shape[1], first.shape[0], fps, backend=backend)
    try:
        stream.write(first)
        for frame in iterator:
            stream.write(frame)
    except BaseException:
        stream.abort()
        raise
    return stream.close()
