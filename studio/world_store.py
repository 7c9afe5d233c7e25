"""A project's world in the database: frames to content-addressed files and back.

Each finished frame becomes three artifacts and one ``world_frames`` row:

- ``rgb``: the frame as PNG (H, W, 3) uint8;
- ``depth``: an ``.npz`` with ``depth`` (H, W) float32 metres and, when the frame joined memory,
  ``confidence`` (H, W) float16 and ``observed`` (H, W) bool exactly as memory holds them (plus
  ``memory_depth`` for the seed, whose unknown pixels memory keeps at 0);
- ``mask``: the source mask PNG (255 where the pixel traces back to the photo);
- the row holds ``K``, ``c2w``, memory coverage and the frame's record (retrieved frames...).

That is everything :meth:`models.pipeline.WorldPipeline.restore` needs to rebuild the spatial
memory bit for bit, so a world continues after a restart exactly as it would have without one.
For lifting and exports the frames are written out as a world bundle (DESIGN.md), cached by a
digest of the frame files so the same world is never written twice.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.geometry.cameras import Camera
from models.pipeline import FrameEvent, FrameRecord, World
from storage.blobs import ArtifactStore
from storage.db import Repository, WorldFrame
from storage.errors import StorageError
from storage.formats.bundle import BundleWriter, read_bundle

__all__ = [
    "bundle_for",
    "encode_png",
    "load_records",
    "save_frame",
    "thumbnail_png",
    "world_digest",
]


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) RGB or (H, W) grey uint8 image."""
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise StorageError("could not encode a frame as PNG")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) uint8 from PNG bytes."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise StorageError("a stored frame is not a readable PNG")
    return img[..., ::-1].copy() if img.ndim == 3 else img


def thumbnail_png(rgb: np.ndarray, width: int = 160) -> bytes:
    """A small PNG preview (aspect kept)."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return encode_png(small)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_frame(
    store: ArtifactStore, repo: Repository, cell_id: str, event: FrameEvent, world: World,
    **job: Any,
) -> WorldFrame:  # fmt: skip
    """Persist one finished frame of ``world`` (its memory state included) under ``cell_id``.

    ``job``: ``job_id``, ``nonce``, ``total`` of the worker's job: the row is then written only
    while that worker still owns the job, with the job's progress, in one transaction
    (:meth:`storage.db.Repository.add_frame`)."""
    arrays: dict[str, np.ndarray] = {"depth": np.asarray(event.depth, np.float32)}
    mem = world.memory.frames.get(event.index) if event.in_memory else None
    if mem is not None:
        arrays["confidence"] = mem.confidence.numpy()
        arrays["observed"] = mem.observed.numpy()
        mem_depth = mem.depth.numpy()
        if not np.array_equal(mem_depth, arrays["depth"]):
            arrays["memory_depth"] = mem_depth
    rgb = store.put_bytes(encode_png(event.rgb), "image/png")
    state = store.put_bytes(_npz(**arrays), "application/x-npz")
    mask = store.put_bytes(
        encode_png(np.where(event.source_mask, 255, 0).astype(np.uint8)), "image/png"
    )
    record = event.record()
    meta = {k: record[k] for k in ("retrieved", "in_memory", "routed_coverage")}
    meta["joined_memory"] = mem is not None
    meta["timings"] = {k: round(float(v), 5) for k, v in event.timings.items()}
    return repo.add_frame(
        cell_id,
        event.index,
        rgb.sha256,
        event.camera.K,
        event.camera.c2w,
        depth_sha256=state.sha256,
        mask_sha256=mask.sha256,
        memory_coverage=event.memory_coverage,
        meta=meta,
        **job,
    )


def frame_camera(frame: WorldFrame, width: int, height: int) -> Camera:
    return Camera(np.asarray(frame.K), np.asarray(frame.c2w), width, height)


def load_rgb(store: ArtifactStore, frame: WorldFrame) -> np.ndarray:
    return decode_png(store.read_bytes(frame.rgb_sha256))


def read_mask(store: ArtifactStore, frame: WorldFrame) -> np.ndarray | None:
    """The frame's source mask (H, W) uint8 (255 = routed from memory), None when not stored."""
    return decode_png(store.read_bytes(frame.mask_sha256)) if frame.mask_sha256 else None


def load_state(store: ArtifactStore, frame: WorldFrame) -> dict[str, np.ndarray]:
    if frame.depth_sha256 is None:
        raise StorageError(f"frame {frame.frame_index} has no stored depth")
    with np.load(io.BytesIO(store.read_bytes(frame.depth_sha256))) as z:
        return {k: z[k] for k in z.files}


def load_records(
    store: ArtifactStore, frames: Sequence[WorldFrame], width: int, height: int
) -> list[FrameRecord]:
    """Every stored frame as a :class:`FrameRecord` for ``WorldPipeline.restore``."""
    records = []
    for f in frames:
        state = load_state(store, f)
        records.append(
            FrameRecord(
                index=f.frame_index,
                camera=frame_camera(f, width, height),
                rgb=load_rgb(store, f),
                depth=state["depth"],
                confidence=state.get("confidence"),
                observed=state.get("observed"),
                in_memory="confidence" in state,
                memory_depth=state.get("memory_depth"),
            )
        )
    return records


def world_digest(frames: Sequence[WorldFrame]) -> str:
    """A short id of a world's content: the hashes and poses of its frames, in order."""
    h = hashlib.sha256()
    for f in frames:
        h.update(f"{f.frame_index}:{f.rgb_sha256}:{f.depth_sha256}:{f.mask_sha256};".encode())
        h.update(json.dumps(f.c2w).encode())
    return h.hexdigest()[:24]


def bundle_for(
    store: ArtifactStore,
    frames: Sequence[WorldFrame],
    meta: dict[str, Any],
    cache_dir: Path,
    trajectory: dict[str, Any] | None = None,
) -> Path:
    """The world as a bundle folder (DESIGN.md) under ``cache_dir/bundles/<digest>``.

    Written once per content through :class:`BundleWriter` (atomic); later calls reuse it.
    """
    if not frames:
        raise StorageError("this world has no frames yet")
    out = Path(cache_dir) / "bundles" / world_digest(frames)
    if (out / "world.json").is_file():
        try:
            read_bundle(out)
            return out
        except StorageError:
            pass  # damaged cache: rebuild below
    from storage.formats.video import VideoStream

    width, height = int(meta["width"]), int(meta["height"])
    with (
        BundleWriter(out, overwrite=True) as bundle,
        VideoStream(bundle.path("video.mp4"), width, height) as video,
    ):
        for f in frames:
            rgb = load_rgb(store, f)
            state = load_state(store, f)
            mask = read_mask(store, f)
            extra = dict(f.meta or {})
            extra.pop("timings", None)
            bundle.write_frame(
                f.frame_index,
                rgb,
                state["depth"],
                mask if mask is not None else np.zeros(rgb.shape[:2], np.uint8),
                {"K": f.K, "c2w": f.c2w, "memory_coverage": f.memory_coverage, **extra},
            )
            video.write(rgb)
        if trajectory is not None:
            bundle.write_json("trajectory.json", trajectory)
        bundle.finish({k: meta[k] for k in ("up", "width", "height", "backends", "seed",
                                             "scale_policy") if k in meta})  # fmt: skip
    return out
