"""The exploration pipeline: photo -> spatial memory -> streamed walkthrough.

Reads like a diffusers pipeline: a plain object composed of swappable components (a depth
backend for the seed, a depth backend for lifting new frames, a synthesis backend, the spatial
memory settings) and one explicit loop::

    for each chunk of target cameras:
        retrieve    memory frames that see each target          (SpatialMemory.retrieve)
        correspond  warp them into the target, per-pixel source (SpatialMemory.correspond)
        synthesise  route covered pixels, paint the never-seen  (SynthesisBackend)
        lift        depth for the new frame, aligned to memory  (_lift_depth)
        insert      the frame joins memory (every k-th)         (SpatialMemory.insert)
        yield       a FrameEvent, so callers can stream

Nothing here touches files: the CLI and the studio persist what the events carry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.depth import DepthBackend, DepthResult, create_depth_backend
from models.depth.layout import frame_hints
from models.geometry.align import align_scale_shift, far_side
from models.geometry.cameras import (
    Camera,
    intrinsics_from_exif,
    intrinsics_from_fov,
    scale_intrinsics,
)
from models.geometry.fill import push_pull
from models.geometry.warp import warm_up as warp_warm_up
from models.memory import ROUTE_DECAY, Correspondence, SpatialMemory
from models.synthesis import (
    SynthesisBackend,
    SynthesisRequest,
    SynthesisResult,
    create_synthesis_backend,
    source_views,
)
from models.world import FrameEvent, FrameRecord, World

RECENT_FRAMES = 8  # finished frames a world keeps at hand for video backends' context
PAINTED_CONFIDENCE = 0.3  # memory confidence of painted pixels: any real observation wins
# Painted share up to which a painter's depth of this kind (its meta "depth_hint") is kept
HINT_MAX_PAINTED = {"surfaces": 0.15}
MIN_DEPTH_CONFIDENCE = 1e-6  # a seed pixel with zero confidence has unknown depth: not in memory
MAX_WIDTH = 4096  # working width limit: checked before any frame is allocated


class PipelineError(ValueError):
    """Bad input to the pipeline, with a message a non-expert understands."""


@dataclass
class PipelineConfig:
    """Settings of a :class:`WorldPipeline`.

    width: working width in pixels (height follows the photo's aspect, a multiple of 8).
    hfov_deg: field of view assumed when neither K nor EXIF gives the focal length.
    memory_stride: every k-th generated frame joins memory (the seed always does).
    max_retrieved: memory frames routed into each target (latest included).
    use_memory: False is the ablation: each frame sees only the previous frame.
    align_depth: align each new frame's depth estimate to memory (scale/shift) before use.
    lift_width: width at which new frames' depth is estimated (cost grows with pixels).
    """

    width: int = 512
    hfov_deg: float = 60.0
    memory_stride: int = 1
    max_retrieved: int = 4
    use_memory: bool = True
    align_depth: bool = True
    lift_width: int = 256
    seed: int = 0


def working_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(width, height) at ``target_width``, height a multiple of 8, aspect kept."""
    if not 64 <= target_width <= MAX_WIDTH or target_width % 8:
        raise PipelineError(
            f"width must be a multiple of 8 from 64 to {MAX_WIDTH}, got {target_width}"
        )
    h = max(8, int(round(height * target_width / width / 8)) * 8)
    return target_width, h


class WorldPipeline:
    """Photo + camera path -> a persistent world, frame by frame.

    Args:
        depth: backend estimating the seed photo's depth.
        synthesis: backend painting never-seen pixels.
        lift_depth: backend estimating new frames' depth (default: ``depth``, or ``layout``
            when ``depth`` is a file, which only knows the seed photo).
        config: :class:`PipelineConfig`.
    """

    def __init__(
        self,
        depth: DepthBackend | None = None,
        synthesis: SynthesisBackend | None = None,
        lift_depth: DepthBackend | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.depth = depth if depth is not None else create_depth_backend("layout")
        self.synthesis = (
            synthesis if synthesis is not None else create_synthesis_backend("reproject")
        )
        if lift_depth is None:
            # A depth file only knows the photo; a diffusion depth model per frame costs minutes
            # on a CPU. New frames are then lifted with the layout prior (aligned to memory).
            slow = self.depth.name == "marigold" and not torch.cuda.is_available()
            own = self.depth.name != "file" and not slow
            lift_depth = self.depth if own else create_depth_backend("layout")
        self.lift_depth = lift_depth
        self.config = config or PipelineConfig()
        warp_warm_up(background=True)  # compile the warp kernels while the caller seeds
        # Painted share below which a frame's depth is continued from its borders: a network on
        # a CPU runs only for frames with large painted areas, so exploring stays interactive.
        cheap = lift_depth.name in ("layout", "file") or torch.cuda.is_available()
        self._min_painted = 0.02 if cheap else 0.10

    # -----------------------------------------------------------------------------------------
    def seed(
        self,
        photo: np.ndarray,
        K: np.ndarray | None = None,
        *,
        c2w: np.ndarray | None = None,
        focal_35mm: float | None = None,
        focal_mm: float | None = None,
    ) -> World:
        """Make frame 0 of a new world from a photo (H, W, 3) uint8.

        ``K`` refers to the photo's own size; without it EXIF focal lengths, then the default
        field of view, give the intrinsics. ``c2w`` places the photo's camera (default identity:
        the world frame is the first camera's).
        """
        t0 = time.perf_counter()
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise PipelineError("the photo must be an RGB image (height x width x 3, 8-bit)")
        ph, pw = photo.shape[:2]
        W, H = working_size(pw, ph, self.config.width)
        if K is None:
            K = intrinsics_from_exif(pw, ph, focal_35mm, focal_mm)
        if K is None:
            K = intrinsics_from_fov(pw, ph, self.config.hfov_deg)
        K_work = scale_intrinsics(K, (pw, ph), (W, H))
        interp = cv2.INTER_AREA if W < pw else cv2.INTER_LINEAR
        rgb = cv2.resize(photo, (W, H), interpolation=interp)
        camera = Camera(K_work, np.eye(4) if c2w is None else c2w, W, H)

        result: DepthResult = self.depth.estimate(rgb, K_work)
        depth = np.asarray(result.depth, np.float32)
        if depth.shape != (H, W):
            raise PipelineError(f"depth backend returned {depth.shape}, expected {(H, W)}")
        known = result.confidence >= MIN_DEPTH_CONFIDENCE
        up_cam = result.up_cam if result.up_cam is not None else np.array([0.0, -1.0, 0.0])
        up = camera.c2w[:3, :3] @ (np.asarray(up_cam, float) / np.linalg.norm(up_cam))

        memory = self._new_memory()
        t_depth = time.perf_counter()
        memory.insert(
            0,
            camera,
            torch.from_numpy(rgb),
            torch.from_numpy(np.where(known, depth, 0.0)),
            torch.from_numpy(known.astype(np.float32)),
        )
        t1 = time.perf_counter()
        event = FrameEvent(
            0,
            camera,
            rgb,
            depth,
            np.ones((H, W), bool),
            [],
            1.0,
            {"depth": t_depth - t0, "insert": t1 - t_depth, "total": t1 - t0},
            True,
            1,
        )
        backends = {"depth": self.depth.name, "synthesis": self.synthesis.name}
        if self.lift_depth is not self.depth:
            backends["lift_depth"] = self.lift_depth.name
        return World(
            W,
            H,
            up,
            memory,
            [camera],
            event,
            backends,
            self.config.seed,
            result.scale_policy,
            dict(result.meta),
            last=event,
            recent=[rgb],
        )

    def restore(self, meta: dict[str, Any], frames: Sequence[FrameRecord]) -> World:
        """Rebuild a world from persisted frames (``meta`` as :meth:`World.meta` wrote it).

        ``frames`` are every frame so far in index order, the seed first. Memory receives exactly
        what :meth:`explore` inserted (same confidence and provenance), so exploring on from the
        restored world gives the frames an uninterrupted run would have given.
        """
        if not frames or frames[0].index != 0:
            raise PipelineError("a world to restore needs its seed frame (index 0) first")
        indices = [f.index for f in frames]
        if indices != list(range(len(frames))):
            raise PipelineError(f"frames to restore must be 0..n-1 in order, got {indices[:8]}...")
        W, H = int(meta["width"]), int(meta["height"])
        memory = self._new_memory()
        kept = [f for f in frames if f.in_memory and f.confidence is not None]
        if not self.config.use_memory:
            kept = kept[-1:]  # the ablation remembers the last frame only
        for f in kept:
            observed = None if f.observed is None else torch.from_numpy(np.asarray(f.observed))
            memory.insert(
                f.index,
                f.camera,
                torch.from_numpy(np.ascontiguousarray(f.rgb)),
                torch.from_numpy(
                    np.asarray(f.depth if f.memory_depth is None else f.memory_depth, np.float32)
                ),
                torch.from_numpy(np.asarray(f.confidence, np.float32)),
                observed,
            )
        seed = frames[0]
        seed_event = FrameEvent(
            0, seed.camera, seed.rgb, seed.depth, np.ones((H, W), bool), [], 1.0, {}, True, 1
        )
        return World(
            W,
            H,
            np.asarray(meta["up"], float),
            memory,
            [f.camera for f in frames],
            seed_event,
            dict(meta.get("backends", {})),
            int(meta.get("seed", self.config.seed)),
            str(meta.get("scale_policy", "")),
            dict(meta.get("depth_meta", {})),
            last=seed_event if len(frames) == 1 else None,
            recent=[np.asarray(f.rgb) for f in frames[-RECENT_FRAMES:]],
        )

    def _new_memory(self) -> SpatialMemory:
        return SpatialMemory(max_frames=self.config.max_retrieved)

    # -----------------------------------------------------------------------------------------
    def explore(self, world: World, cameras: Sequence[Camera]) -> Iterator[FrameEvent]:
        """Generate a frame at each camera (in order), yielding each as soon as it is done.

        Cameras are resized to the world's working size if needed. The world is updated in
        place (memory, cameras), so a later call continues where this one stopped.
        """
        cams = [self._fit(c, world) for c in cameras]
        total = world.n_frames + len(cams)
        step = self.synthesis.chunk_size
        context = int(getattr(self.synthesis, "context_frames", 0))
        reference = torch.from_numpy(world.seed_event.rgb).float() / 255.0
        for start in range(0, len(cams), step):
            chunk = cams[start : start + step]
            requests, metas = [], []
            history = None
            if context > 0 and world.recent:
                history = torch.from_numpy(np.stack(world.recent[-context:])).float() / 255.0
            for cam in chunk:
                index = world.n_frames + len(requests)
                t0 = time.perf_counter()
                memory = world.memory  # in the ablation it holds the previous frame only
                retrieved = memory.retrieve(cam).frame_ids
                t1 = time.perf_counter()
                corr = memory.correspond(cam, retrieved)
                t2 = time.perf_counter()
                seed = self.config.seed * 1_000_003 + index
                requests.append(
                    SynthesisRequest(
                        index,
                        cam,
                        corr.rgb,
                        corr.depth,
                        corr.valid,
                        seed,
                        stretch=corr.stretch,
                        reference=reference,
                        history=history,
                        sources=source_views(memory.frames, retrieved),
                        observed=corr.observed,
                        up=world.up,
                    )
                )
                metas.append((corr, retrieved, {"retrieve": t1 - t0, "correspond": t2 - t1}))
            t3 = time.perf_counter()
            results = self.synthesis.synthesize(requests)
            synth_each = (time.perf_counter() - t3) / max(1, len(chunk))
            for req, res, (corr, retrieved, timings) in zip(requests, results, metas, strict=True):
                t4 = time.perf_counter()
                rgb = torch.where(res.source_mask[..., None], corr.rgb, res.rgb.clamp(0, 1))
                kind = res.meta.get("depth_hint")
                hint_max = max(self._min_painted, HINT_MAX_PAINTED.get(kind, 0.0))
                depth = self._lift_depth(rgb, req.camera, corr, res, hint_max, world)
                rgb8 = (rgb * 255).round().to(torch.uint8)
                t5 = time.perf_counter()
                index = req.index
                in_memory = self.config.use_memory and index % self.config.memory_stride == 0
                observed = res.source_mask & corr.observed
                if in_memory or not self.config.use_memory:
                    conf = torch.where(
                        res.source_mask,
                        corr.confidence * ROUTE_DECAY,
                        torch.full_like(depth, PAINTED_CONFIDENCE),
                    )
                    if not self.config.use_memory:
                        # The ablation forgets: the next frame sees this one and nothing else.
                        world.memory = self._new_memory()
                    world.memory.insert(index, req.camera, rgb8, depth, conf, observed)
                t6 = time.perf_counter()
                timings.update(synthesize=synth_each, lift=t5 - t4, insert=t6 - t5)
                timings["total"] = sum(timings.values())
                event = FrameEvent(
                    index=index,
                    camera=req.camera,
                    rgb=rgb8.numpy(),
                    depth=depth.numpy(),
                    source_mask=observed.numpy(),
                    retrieved=retrieved,
                    memory_coverage=float(observed.float().mean()),
                    timings=timings,
                    in_memory=in_memory,
                    total=total,
                    routed_coverage=float(res.source_mask.float().mean()),
                    notes=[str(res.meta["note"])] if res.meta.get("note") else [],
                )
                world.cameras.append(req.camera)
                world.last = event
                world.recent = [*world.recent[1 - RECENT_FRAMES :], event.rgb]
                yield event

    @staticmethod
    def _fit(camera: Camera, world: World) -> Camera:
        if (camera.width, camera.height) == (world.width, world.height):
            return camera
        if abs(camera.width / camera.height - world.width / world.height) > 0.02:
            raise PipelineError(
                f"camera aspect {camera.width}x{camera.height} does not match the world's "
                f"{world.width}x{world.height}"
            )
        return camera.resized(world.width, world.height)

    # -----------------------------------------------------------------------------------------
    def _lift_depth(
        self,
        rgb: torch.Tensor,
        camera: Camera,
        corr: Correspondence,
        res: SynthesisResult,
        hint_max: float,
        world: World | None = None,
    ) -> torch.Tensor:
        """Depth (H, W) of a new frame: memory depth where routed; elsewhere the lift backend's
        estimate, aligned to memory (robust scale/shift) and bent to meet it at hole borders."""
        hint, routed = res.depth_hint, res.source_mask
        known = routed & (corr.depth > 0)
        if bool(known.all()):
            return corr.depth.clone()
        H, W = known.shape
        painted_frac = 1.0 - float(known.float().mean())
        # Rims and slivers (cracks, thin disocclusions) continue their borders; running the depth
        # estimator for them would cost more than the whole rest of the frame.
        if painted_frac < hint_max and hint is not None:
            return torch.where(known, corr.depth, hint)
        est = self._estimate_small(rgb, camera, world)
        if self.config.align_depth and bool(known.any()):
            est = align_scale_shift(est, corr.depth, known).apply(est).clamp(min=1e-3)
            # Residual push-pull: the aligned estimate gets the offset memory has at the hole's
            # border, so the filled surface meets the seen one without a step. Only the
            # background side of the border counts: a disocclusion opens behind the
            # foreground, and a fill bent towards both sides hangs between them (in front of
            # the background, where other views see it as a ghost).
            resid = torch.where(known, corr.depth - est, torch.zeros_like(est))
            est = est + push_pull(resid[..., None], far_side(corr.depth, known))[..., 0]
        est = est.clamp(min=1e-3)
        return torch.where(known, corr.depth, est)

    def _estimate_small(
        self, rgb: torch.Tensor, camera: Camera, world: World | None = None
    ) -> torch.Tensor:
        """The lift backend's depth (H, W) for a new frame, estimated at ``lift_width``. A
        backend that takes hints gets what the world knows (its up vector in this camera, the
        seed's scene type and camera height), so every frame shares the seed's geometry."""
        H, W = rgb.shape[:2]
        lw = min(W, self.config.lift_width)
        lh = max(8, int(round(H * lw / W)))
        small = F.interpolate(rgb.permute(2, 0, 1)[None], size=(lh, lw), mode="area")[0]
        small8 = (small.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        K_small = scale_intrinsics(camera.K, (W, H), (lw, lh))
        hints = {}
        if world is not None and getattr(self.lift_depth, "accepts_hints", False):
            hints = frame_hints(camera.c2w, world.up, world.depth_meta)
        d = self.lift_depth.estimate(small8, K_small, **hints).depth
        d = torch.from_numpy(np.asarray(d, np.float32))
        if math.isclose(lw, W) and lh == H:
            return d
        return F.interpolate(d[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
