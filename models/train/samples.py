"""Training samples from posed footage, built exactly as inference sees its conditions.

For each footage frame in order (at the pipeline's working size), the frames before it sit in a
:class:`SpatialMemory` configured like :class:`WorldPipeline`'s; the target camera **retrieves**
from it and the retrieved frames are **warped** into it (``SpatialMemory.correspond``, the same
calls ``WorldPipeline.explore`` makes). The sample is (warped colour, warped depth, coverage =
the complement of the hole mask, stretch, target frame, trusted target pixels). Then the frame
itself joins memory, with its sensor depth, or a depth backend's estimate put at the footage's
scale (robust scale/shift to what memory sees there, or to the footage's sparse 3D points).

Nothing here touches files: callers read footage and store samples (``storage.train``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.depth import DepthBackend
from models.depth.file import denoise_sensor_depth, fill_invalid
from models.geometry.align import align_scale_shift
from models.geometry.cameras import Camera, scale_intrinsics
from models.geometry.fill import push_pull
from models.memory import Correspondence, SpatialMemory
from models.pipeline import PAINTED_CONFIDENCE, PipelineConfig, working_size
from models.train.footage import FootageError, FootageFrame

MIN_ANCHORS = 64  # pixels of reference depth below which a scale fit is not trusted


@dataclass
class SampleConfig:
    """How samples are built (the pipeline's settings, so conditions match inference).

    width: working width (``loci generate --width``); max_retrieved: memory frames per target;
    memory_stride: every k-th footage frame joins memory; min_gap: history frames are at least
    this many frames before the target (larger gaps: larger holes); min_coverage / max_coverage:
    targets whose memory coverage falls outside are skipped (nothing to route / nothing to
    paint); lift_width: width at which missing depth is estimated (as the pipeline's).
    """

    width: int = 512
    max_retrieved: int = 4
    memory_stride: int = 1
    min_gap: int = 1
    min_coverage: float = 0.05
    max_coverage: float = 0.98
    lift_width: int = 256

    def __post_init__(self) -> None:
        if self.min_gap < 1 or self.memory_stride < 1 or self.max_retrieved < 1:
            raise FootageError("min_gap, memory_stride and max_retrieved must be at least 1")
        if not 0.0 <= self.min_coverage < self.max_coverage <= 1.0:
            raise FootageError("need 0 <= min_coverage < max_coverage <= 1")

    @classmethod
    def from_pipeline(cls, config: PipelineConfig, **overrides: Any) -> SampleConfig:
        return cls(
            width=config.width,
            max_retrieved=config.max_retrieved,
            memory_stride=config.memory_stride,
            lift_width=config.lift_width,
            **overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingSample:
    """One (condition, target) pair at the working size (H, W).

    target: (H, W, 3) uint8; trust: (H, W) bool, target pixels the loss may use; warped_rgb:
    (H, W, 3) float32 [0, 1] and warped_depth: (H, W) float32 metres, memory routed into the
    target; valid: (H, W) bool memory coverage (its complement is the hole the painter fills);
    stretch: (H, W) float32 or None; context: (H, W, 3) uint8, the footage frame before the
    target (what a video painter continues from: the world's last finished frame at inference).
    """

    key: str
    sequence: str
    order: int
    name: str
    camera: Camera
    target: np.ndarray
    trust: np.ndarray
    warped_rgb: np.ndarray
    warped_depth: np.ndarray
    valid: np.ndarray
    stretch: np.ndarray | None
    retrieved: list[str]
    coverage: float
    context: np.ndarray | None = None  # (H, W, 3) uint8: the frame before (video painters)

    @property
    def routed_psnr(self) -> float:
        """PSNR (dB) of the routed condition against the target over covered, trusted pixels:
        low values flag footage whose poses or depth do not agree (a misaligned condition)."""
        m = self.valid & self.trust
        if not m.any():
            return float("nan")
        diff = self.warped_rgb[m] * 255.0 - self.target[m].astype(np.float32)
        mse = float(np.mean(diff.astype(np.float64) ** 2))
        return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)

    def arrays(self) -> dict[str, np.ndarray | None]:
        return {
            "target": self.target,
            "trust": self.trust,
            "warped_rgb": self.warped_rgb,
            "warped_depth": self.warped_depth,
            "valid": self.valid,
            "stretch": self.stretch,
            "context": self.context,
        }

    def info(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sequence": self.sequence,
            "order": self.order,
            "name": self.name,
            "retrieved": self.retrieved,
            "coverage": round(self.coverage, 6),
            "routed_psnr": round(self.routed_psnr, 3) if math.isfinite(self.routed_psnr) else None,
            "K": self.camera.K.tolist(),
            "c2w": self.camera.c2w.tolist(),
        }


@dataclass
class BuildStep:
    """What happened at one footage frame: ``sample`` (None when skipped, ``why`` says why);
    the frame as memory holds it: ``camera`` and ``rgb`` (H, W, 3) at the working size, and the
    ``depth`` (H, W) it was given (None when it does not join memory)."""

    order: int
    name: str
    sample: TrainingSample | None
    why: str = ""
    camera: Camera | None = None
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def resize_frame(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 the way ``WorldPipeline.seed`` resizes the photo."""
    if rgb.shape[:2] == (height, width):
        return rgb
    interp = cv2.INTER_AREA if width < rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


def _nearest(a: np.ndarray, width: int, height: int) -> np.ndarray:
    if a.shape[:2] == (height, width):
        return a
    # NEAREST: interpolating across a depth edge invents points floating in between.
    return cv2.resize(a, (width, height), interpolation=cv2.INTER_NEAREST)


def sparse_depth(xyz_world: np.ndarray, camera: Camera) -> np.ndarray:
    """(H, W) float32 z-depth of world points seen by ``camera`` (nearest point per pixel)."""
    H, W = camera.height, camera.width
    out = np.zeros((H, W), np.float32)
    if xyz_world is None or len(xyz_world) == 0:
        return out
    xyz = xyz_world @ camera.w2c[:3, :3].T + camera.w2c[:3, 3]
    z = xyz[:, 2]
    ok = z > 1e-6
    u = np.floor(xyz[ok, 0] / z[ok] * camera.K[0, 0] + camera.K[0, 2] + 0.5).astype(int)
    v = np.floor(xyz[ok, 1] / z[ok] * camera.K[1, 1] + camera.K[1, 2] + 0.5).astype(int)
    z = z[ok]
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    order = np.argsort(-z[inside])  # far first, so the nearest point is written last
    out[v[inside][order], u[inside][order]] = z[inside][order]
    return out


class SampleBuilder:
    """Turns sequences of :class:`FootageFrame` into :class:`TrainingSample`.

    Args:
        config: :class:`SampleConfig`.
        depth: backend estimating depth for frames without any (None: such frames are refused).
    """

    def __init__(self, config: SampleConfig | None = None, depth: DepthBackend | None = None):
        self.config = config or SampleConfig()
        self.depth = depth

    def new_memory(self) -> SpatialMemory:
        # The pipeline's memory (WorldPipeline._new_memory): same retrieval budget and defaults.
        return SpatialMemory(max_frames=self.config.max_retrieved)

    def build(
        self,
        sequence: str,
        frames: Sequence[FootageFrame],
        *,
        metric: bool = True,
        done: set[str] | frozenset[str] = frozenset(),
        cached_depth: Callable[[str], np.ndarray | None] | None = None,
    ) -> Iterator[BuildStep]:
        """One :class:`BuildStep` per frame, in order.

        metric: the poses are in metres (a frame without depth may then keep its depth
        backend's metric estimate when nothing else gives the scale); done: sample keys already
        stored (not rebuilt, but their frames still join memory); cached_depth: name -> the
        depth a frame was given in an earlier run (resuming never re-runs the depth backend).
        """
        cfg = self.config
        if not frames:
            raise FootageError(f"sequence {sequence!r} has no frames")
        cam0 = frames[0].camera
        W, H = working_size(cam0.width, cam0.height, cfg.width)
        memory = self.new_memory()
        previous: np.ndarray | None = None
        pending: list[tuple[int, Camera, np.ndarray, np.ndarray, np.ndarray | None]] = []
        for order, frame in enumerate(frames):
            cam = frame.camera
            if abs(cam.width / cam.height - W / H) > 0.02:
                raise FootageError(
                    f"{sequence}/{frame.name}: {cam.width}x{cam.height} has another aspect than "
                    f"the sequence's first frame ({cam0.width}x{cam0.height})"
                )
            cam = cam.resized(W, H)
            # History: frames at least min_gap before this one join memory now.
            while pending and pending[0][0] <= order - cfg.min_gap:
                self._insert(memory, *pending.pop(0))
            rgb = resize_frame(frame.load_rgb(), W, H)
            given = frame.load_trust() if frame.load_trust else None
            if given is not None:
                given = _nearest(np.asarray(given, np.uint8), W, H) > 0
            trust = np.ones((H, W), bool) if given is None else given
            key = f"{sequence}/{frame.name}"
            step = BuildStep(order, frame.name, None, camera=cam, rgb=rgb)
            corr: Correspondence | None = None
            retrieved: list[int] = []
            if len(memory):
                retrieved = memory.retrieve(cam).frame_ids
                corr = memory.correspond(cam, retrieved)
            if corr is None:
                step.why = "no history yet"
            elif key in done:
                step.why = "already stored"
            elif not cfg.min_coverage <= corr.coverage <= cfg.max_coverage:
                step.why = f"coverage {corr.coverage:.2f} outside the configured range"
            else:
                step.sample = TrainingSample(
                    key, sequence, order, frame.name, cam, rgb, trust,
                    corr.rgb.numpy(), corr.depth.numpy(), corr.valid.numpy(),
                    None if corr.stretch is None else corr.stretch.numpy(),
                    [frames[i].name for i in retrieved], corr.coverage, previous,
                )  # fmt: skip
            if order % cfg.memory_stride == 0:
                cached = cached_depth(frame.name) if cached_depth else None
                if cached is not None and cached.shape == (H, W):
                    depth = cached.astype(np.float32)
                else:
                    depth = self._frame_depth(frame, cam, rgb, corr, metric, step.notes)
                step.depth = depth
                pending.append((order, cam, rgb, depth, given))
            previous = rgb
            yield step

    # -----------------------------------------------------------------------------------------
    @staticmethod
    def _insert(
        memory: SpatialMemory,
        order: int,
        cam: Camera,
        rgb: np.ndarray,
        depth: np.ndarray,
        trust: np.ndarray | None,
    ) -> None:
        """Add a footage frame to memory as the pipeline adds its seed: confidence 1 where depth
        is known; a world bundle's painted pixels keep the pipeline's painted confidence."""
        known = torch.from_numpy(depth > 0)
        observed = None
        conf = known.float()
        if trust is not None:
            observed = torch.from_numpy(trust)
            conf = torch.where(observed, conf, torch.full_like(conf, PAINTED_CONFIDENCE)) * known
        memory.insert(order, cam, torch.from_numpy(rgb), torch.from_numpy(depth), conf, observed)

    def _frame_depth(
        self,
        frame: FootageFrame,
        cam: Camera,
        rgb: np.ndarray,
        corr: Correspondence | None,
        metric: bool,
        notes: list[str],
    ) -> np.ndarray:
        """(H, W) float32 metres for memory: sensor depth (0 where unknown), else an estimate
        put at the footage's scale."""
        W, H = cam.width, cam.height
        sensor = frame.load_depth() if frame.load_depth else None
        if sensor is not None:
            d = _nearest(np.asarray(sensor, np.float32), W, H)
            ok = np.isfinite(d) & (d > 0)
            if not ok.any():
                return np.zeros((H, W), np.float32)
            # as the 'file' depth backend does for `loci generate` (same memory, same routing)
            d = denoise_sensor_depth(fill_invalid(np.where(ok, d, 0), ok), ok)
            return np.where(ok, d, 0).astype(np.float32)
        if self.depth is None:
            raise FootageError(
                f"frame {frame.name} has no depth; give a depth backend (--depth) to estimate it"
            )
        est = self._estimate(rgb, cam)
        # Reference depth for the scale: memory where it sees this frame (as the pipeline lifts
        # a new frame), else the footage's own sparse points.
        mem_known = torch.zeros(H, W, dtype=torch.bool)
        if corr is not None:
            mem_known = corr.valid & (corr.depth > 0)
        if int(mem_known.sum()) >= MIN_ANCHORS:
            est = align_scale_shift(est, corr.depth, mem_known).apply(est).clamp(min=1e-3)
            # Residual push-pull: the estimate meets the remembered surface without a step.
            resid = torch.where(mem_known, corr.depth - est, torch.zeros_like(est))
            est = (est + push_pull(resid[..., None], mem_known)[..., 0]).clamp(min=1e-3)
            return torch.where(mem_known, corr.depth, est).numpy().astype(np.float32)
        anchors = torch.from_numpy(sparse_depth(frame.sparse_xyz, cam))
        if int((anchors > 0).sum()) >= 3:
            fit = align_scale_shift(est, anchors, anchors > 0, min_pixels=MIN_ANCHORS)
            notes.append(f"{frame.name}: depth scaled to {int((anchors > 0).sum())} sparse points")
            return fit.apply(est).clamp(min=1e-3).numpy().astype(np.float32)
        if not metric:
            raise FootageError(
                f"frame {frame.name} has no depth, memory does not see it and there are no "
                "sparse points: its scale cannot be found (footage with arbitrary scale needs "
                "depth or a COLMAP model with points)"
            )
        notes.append(f"{frame.name}: metric scale from the {self.depth.name} depth backend")
        return est.numpy().astype(np.float32)

    def _estimate(self, rgb: np.ndarray, cam: Camera) -> torch.Tensor:
        """The depth backend at ``lift_width`` (as the pipeline lifts new frames), (H, W)."""
        H, W = rgb.shape[:2]
        lw = min(W, self.config.lift_width)
        lh = max(8, int(round(H * lw / W)))
        small = (
            rgb if (lw, lh) == (W, H) else cv2.resize(rgb, (lw, lh), interpolation=cv2.INTER_AREA)
        )
        K_small = scale_intrinsics(cam.K, (W, H), (lw, lh))
        d = torch.from_numpy(np.asarray(self.depth.estimate(small, K_small).depth, np.float32))
        if math.isclose(lw, W) and lh == H:
            return d
        return F.interpolate(d[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
