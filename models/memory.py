"""Spatial memory: per-frame geometry, visibility retrieval, and correspondences.

Each memory frame keeps its own rgb, z-depth, intrinsics, pose and per-pixel confidence; frames
are never fused into one cloud (fusion is for previews and exports), so nothing seen is ever
averaged away. For a target camera the memory

* **retrieves** the frames that see it: each frame's downsampled points are projected into a
  coarse grid of the target with a z-buffer, a frame *covers* the cells where its points are the
  visible surface, and frames are chosen by greedy set cover (the most recent frame always
  takes part);
* **corresponds**: the chosen frames are warped into the target (``models.geometry.warp``) and composited
  per pixel: the nearest surface wins, and among frames that see the same surface the one with
  the best pixel (highest confidence, least resampling) wins. The output says per pixel which
  frame and which source pixel its colour came from.

:func:`retrieve_reference` is the slow, obvious twin of the retrieval the tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.geometry.cameras import Camera, transform_points, unproject_depth
from models.geometry.composite import Composite
from models.geometry.cracks import route_cracks
from models.geometry.reliability import MIN_RELIABILITY, claim_reliability
from models.geometry.warp import (
    WarpResult,
    depth_edges,
    executor,
    flying_pixels,
    forward_warps,
    inverse_depth_range,
)

ROUTE_DECAY = 0.9  # confidence kept each time a pixel is resampled into a new frame (blur)
PAINT_NEAREST_STRETCH = 1.25  # earlier paint magnified less than this is copied, not resampled
CRACK_PASSES = 8  # cracks close pass by pass from their sides (each pass next to the last)


@dataclass
class MemoryFrame:
    """One frame of spatial memory.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres; confidence: (H, W) float32 [0, 1]
    (1 = photographed, lower = routed several times or painted); observed: (H, W) bool, True
    where the pixel traces back to a real observation (not painted); edges: (H, W) bool depth
    edges; flying: (H, W) bool mixed pixels on depth ramps (not surfaces, see
    :func:`models.geometry.warp.flying_pixels`); inv_range: (H, W) float16 local spread of
    inverse depth (how far a baseline moves the two sides of an edge apart).
    points_world: (P, 3) float32 downsampled points used for retrieval; points_conf: (P,).
    """

    frame_id: int
    camera: Camera
    rgb: torch.Tensor
    depth: torch.Tensor
    confidence: torch.Tensor
    observed: torch.Tensor
    edges: torch.Tensor
    points_world: torch.Tensor
    points_conf: torch.Tensor
    flying: torch.Tensor | None = None
    inv_range: torch.Tensor | None = None


@dataclass
class RetrievalResult:
    """frame_ids: chosen memory frames, in the order chosen; gains: confidence-weighted cells
    each added;
    coverage: fraction of target cells covered by the chosen frames; candidates: frames that
    survived frustum culling."""

    frame_ids: list[int]
    gains: list[int]
    coverage: float
    candidates: int


@dataclass
class Correspondence:
    """Memory seen from a target camera.

    rgb: (H, W, 3) float32 [0, 1]; depth: (H, W) float32 (0 = not seen); valid: (H, W) bool;
    source_frame: (H, W) int64 memory frame id (-1 = not seen); source_uv: (H, W, 2) float32
    pixel in that frame; confidence: (H, W) float32 of the routed pixel; observed: (H, W) bool,
    True where the routed pixel traces back to a real observation (False: earlier paint);
    stretch: (H, W) float32 or None, the linear magnification of each routed pixel's source
    footprint in the target (1 = seen at native resolution, 2 = one source pixel spans about two
    target pixels across; painters may treat strongly stretched pixels as "seen, low detail").
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    source_frame: torch.Tensor
    source_uv: torch.Tensor
    confidence: torch.Tensor
    observed: torch.Tensor
    stretch: torch.Tensor | None = None

    @property
    def coverage(self) -> float:
        return float(self.valid.float().mean())


def _grid_points(
    depth: torch.Tensor, conf: torch.Tensor, K: np.ndarray, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame points (P, 3) and their confidence (P,) at every ``stride``-th pixel with
    positive depth."""
    off = stride // 2
    sub = depth[off::stride, off::stride]
    sub_conf = conf[off::stride, off::stride].reshape(-1).float()
    v, u = torch.meshgrid(
        torch.arange(off, depth.shape[0], stride, dtype=torch.float32),
        torch.arange(off, depth.shape[1], stride, dtype=torch.float32),
        indexing="ij",
    )
    z = sub.reshape(-1)
    keep = z > 0
    x = (u.reshape(-1) - float(K[0, 2])) / float(K[0, 0]) * z
    y = (v.reshape(-1) - float(K[1, 2])) / float(K[1, 1]) * z
    return torch.stack([x, y, z], -1)[keep], sub_conf[keep]


class SpatialMemory:
    """Per-frame geometry with visibility retrieval.

    Args:
        point_stride: pixel stride of the points kept for retrieval (16 -> 768 points at 512x384).
        cell_size: target pixels per retrieval grid cell (16 -> a 32x24 grid at 512x384).
        max_frames: how many frames retrieval picks at most (the most recent one included).
        min_gain: a frame joins only if it adds at least this fraction of the target's cells.
        occlusion_tol: relative depth margin within which two frames see "the same" surface.
    """

    def __init__(
        self,
        point_stride: int = 16,
        cell_size: int = 16,
        max_frames: int = 4,
        min_gain: float = 0.01,
        occlusion_tol: float = 0.05,
    ) -> None:
        self.point_stride = point_stride
        self.cell_size = cell_size
        self.max_frames = max_frames
        self.min_gain = min_gain
        self.occlusion_tol = occlusion_tol
        self.frames: dict[int, MemoryFrame] = {}
        self._order: list[int] = []
        # Retrieval arrays, grown by doubling: padded points (N, P, 3), counts, bounding spheres.
        self._pts = torch.zeros(0, 0, 3)
        self._conf = torch.zeros(0, 0)
        self._npts = torch.zeros(0, dtype=torch.long)
        self._centers = torch.zeros(0, 3)
        self._radii = torch.zeros(0)

    def __len__(self) -> int:
        return len(self._order)

    @property
    def frame_ids(self) -> list[int]:
        return list(self._order)

    @property
    def latest_id(self) -> int | None:
        return self._order[-1] if self._order else None

    # -----------------------------------------------------------------------------------------
    def insert(
        self,
        frame_id: int,
        camera: Camera,
        rgb: torch.Tensor,
        depth: torch.Tensor,
        confidence: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
    ) -> MemoryFrame:
        """Add a frame. rgb (H, W, 3) uint8 or float [0, 1]; depth (H, W) metres;
        confidence (H, W) (default 1 where depth is known); observed (H, W) bool (default all)."""
        if frame_id in self.frames:
            raise ValueError(f"frame {frame_id} is already in memory")
        if rgb.dtype != torch.uint8:
            rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        depth = depth.float().contiguous()
        if confidence is None:
            confidence = (depth > 0).float()
        # float16 is plenty for a [0, 1] weight, and halves the biggest per-frame array after depth.
        confidence = (confidence.float() * (depth > 0)).half()
        pts_cam, pts_conf = _grid_points(depth, confidence, camera.K, self.point_stride)
        c2w = torch.from_numpy(camera.c2w.astype(np.float32))
        pts = transform_points(c2w, pts_cam)
        if observed is None:
            observed = torch.ones_like(depth, dtype=torch.bool)
        edges = depth_edges(depth)
        frame = MemoryFrame(
            frame_id,
            camera,
            rgb.contiguous(),
            depth,
            confidence,
            observed.bool(),
            edges,
            pts,
            pts_conf,
            flying_pixels(depth, edges),
            inverse_depth_range(depth).half(),
        )
        self.frames[frame_id] = frame
        self._order.append(frame_id)
        self._append_points(pts, pts_conf)
        return frame

    def _append_points(self, pts: torch.Tensor, conf: torch.Tensor) -> None:
        n = len(self._order) - 1
        P = max(pts.shape[0], self._pts.shape[1])
        if n >= self._pts.shape[0] or P > self._pts.shape[1]:
            cap = max(8, 2 * self._pts.shape[0]) if n >= self._pts.shape[0] else self._pts.shape[0]
            grown = torch.zeros(cap, P, 3)
            grown[:n, : self._pts.shape[1]] = self._pts[:n]
            self._pts = grown
            grown_conf = torch.zeros(cap, P)
            grown_conf[:n, : self._conf.shape[1]] = self._conf[:n]
            self._conf = grown_conf
            for name in ("_npts", "_radii"):
                old = getattr(self, name)
                new = torch.zeros(cap, dtype=old.dtype)
                new[:n] = old[:n]
                setattr(self, name, new)
            centers = torch.zeros(cap, 3)
            centers[:n] = self._centers[:n]
            self._centers = centers
        self._pts[n, : pts.shape[0]] = pts
        self._conf[n, : pts.shape[0]] = conf
        self._npts[n] = pts.shape[0]
        if pts.shape[0]:
            c = pts.mean(0)
            self._centers[n] = c
            self._radii[n] = (pts - c).norm(dim=-1).max()

    # -----------------------------------------------------------------------------------------
    def _cull(self, target: Camera, cull: bool = True) -> torch.Tensor:
        """Indices (into insertion order) of frames whose bounding sphere meets the frustum
        (every frame with points when ``cull`` is False: the brute-force baseline)."""
        n = len(self._order)
        if not cull:
            return torch.nonzero(self._npts[:n] > 0).squeeze(1)
        w2c = torch.from_numpy(target.w2c.astype(np.float32))
        c = transform_points(w2c, self._centers[:n])
        r = self._radii[:n]
        K, W, H = target.K, target.width, target.height
        normals = torch.tensor(
            [
                [K[0, 0], 0.0, K[0, 2] + 0.5],
                [-K[0, 0], 0.0, W - 0.5 - K[0, 2]],
                [0.0, K[1, 1], K[1, 2] + 0.5],
                [0.0, -K[1, 1], H - 0.5 - K[1, 2]],
            ],
            dtype=torch.float32,
        )
        normals = normals / normals.norm(dim=-1, keepdim=True)
        inside = (c @ normals.T >= -r[:, None]).all(1) & (c[:, 2] > -r) & (self._npts[:n] > 0)
        return torch.nonzero(inside).squeeze(1)

    def coverage_matrix(
        self, target: Camera, cull: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate indices (C,) and float (C, cells): for each candidate, the best confidence
        of its points that would be the visible surface in each target cell (0 = not seen)."""
        cand = self._cull(target, cull)
        gw = math.ceil(target.width / self.cell_size)
        gh = math.ceil(target.height / self.cell_size)
        if cand.numel() == 0:
            return cand, torch.zeros(0, gw * gh)
        pts = self._pts[cand]  # (C, P, 3)
        P = pts.shape[1]
        real = torch.arange(P)[None, :] < self._npts[cand][:, None]
        w2c = torch.from_numpy(target.w2c.astype(np.float32))
        xyz = transform_points(w2c, pts.reshape(-1, 3))
        z = xyz[:, 2]
        zs = z.clamp(min=1e-6)
        s = 1.0 / self.cell_size
        gx = ((xyz[:, 0] / zs * float(target.K[0, 0]) + float(target.K[0, 2]) + 0.5) * s).floor()
        gy = ((xyz[:, 1] / zs * float(target.K[1, 1]) + float(target.K[1, 2]) + 0.5) * s).floor()
        ok = real.reshape(-1) & (z > 1e-3) & (gx >= 0) & (gx < gw) & (gy >= 0) & (gy < gh)
        cell = (gy * gw + gx).long()
        zbuf = torch.full((gw * gh,), math.inf)
        zbuf.scatter_reduce_(0, cell[ok], z[ok], reduce="amin")
        owns = ok.clone()
        owns[ok] = z[ok] <= zbuf[cell[ok]] * (1 + self.occlusion_tol)
        frame_of = torch.arange(cand.numel()).repeat_interleave(P)
        flat = frame_of[owns] * (gw * gh) + cell[owns]
        conf = self._conf[cand].reshape(-1)[owns]
        cover = torch.zeros(cand.numel() * gw * gh)
        cover.scatter_reduce_(0, flat, conf, reduce="amax")
        return cand, cover.view(cand.numel(), gw * gh)

    def retrieve(
        self, target: Camera, max_frames: int | None = None, cull: bool = True
    ) -> RetrievalResult:
        """Choose the memory frames that see ``target``: greedy weighted set cover.

        The latest frame always takes part. Each further pick maximises the gain
        ``sum over cells of max(0, its confidence - best confidence so far)``: a cell nobody
        covers gains fully, and a cell seen through a resampled copy gains when a frame with the
        original pixels comes along (that is what makes a revisit reproduce the first visit).
        """
        if not self._order:
            return RetrievalResult([], [], 0.0, 0)
        k = self.max_frames if max_frames is None else max_frames
        cand, cover = self.coverage_matrix(target, cull)
        ncell = cover.shape[1]
        latest = len(self._order) - 1
        chosen, gains = [latest], []
        pos = torch.nonzero(cand == latest).squeeze(1)
        best_q = cover[pos[0]].clone() if pos.numel() else torch.zeros(ncell)
        gains.append(float(best_q.sum()))
        while len(chosen) < k and cover.shape[0]:
            gain = (cover - best_q).clamp(min=0).sum(1)
            best = int(gain.argmax())
            if float(gain[best]) < max(1e-6, self.min_gain * ncell):
                break
            chosen.append(int(cand[best]))
            gains.append(float(gain[best]))
            best_q = torch.maximum(best_q, cover[best])
        ids = [self._order[i] for i in chosen]
        coverage = float((best_q > 0).float().mean())
        return RetrievalResult(ids, gains, coverage, int(cand.numel()))

    # -----------------------------------------------------------------------------------------
    def correspond(
        self,
        target: Camera,
        frame_ids: list[int],
        depth_tol: float = 0.03,
        reference: bool = False,
    ) -> Correspondence:
        """Warp ``frame_ids`` into ``target`` and composite them (nearest surface, best pixel).

        Per pixel, a frame's claim has a quality ``q = confidence * exp(-|log stretch| / 2)``
        (resampling and magnification both lose detail) times its reliability (how well its depth
        places it here: grazing incidence and wide baselines land pixels off,
        :mod:`models.geometry.reliability`); where no claim is reliable the pixel is painted. A
        nearer surface occludes unless it is a far weaker guess (``2 q < q_best``), only the
        depth-edge rim of a weaker frame (a footprint spilling over a better observation), or a
        weaker frame's claim against a frame that would have seen it (its parallax at that depth
        under half a pixel: seen from about the target's centre, nothing nearer was there). Those
        two kept pure rotations from returning exactly. On the same surface the better pixel
        wins (by 5 %: near-ties keep the earlier frame, so regions stay coherent); apart from
        such ties the result does not depend on the order of ``frame_ids``
        (:mod:`models.geometry.composite`). A coherence pass then removes speckle: pixels
        flipping between frames on one surface, and specks of one layer inside another
        (:meth:`Composite.cohere`). ``reference``: the torch twins of the compiled warp
        and composite (slow; the tests compare the two).
        """
        W, H = target.width, target.height
        f_t = math.sqrt(float(target.K[0, 0] * target.K[1, 1]))
        comp = Composite(W, H, f_t, depth_tol, PAINT_NEAREST_STRETCH, reference=reference)
        frames = [self.frames[fid] for fid in frame_ids]
        jobs = [
            dict(
                rgb=f.rgb,
                depth=f.depth,
                K_src=f.camera.K,
                c2w_src=f.camera.c2w,
                K_tgt=target.K,
                c2w_tgt=target.c2w,
                width=W,
                height=H,
                edges=f.edges,
                flying=f.flying,
                inv_range=f.inv_range,  # float16: each warp converts the part it reads
            )
            for f in frames
        ]

        def reliability(i: int, w: WarpResult) -> torch.Tensor | None:
            # how well frame i's depth places its pixels here (grazing, wide baseline); in the
            # warp's own thread, right after it (a pure function of the warp)
            if not w.valid.numpy().any():  # numpy: stops at the first hit, no torch threads
                return None
            f = frames[i]
            c = f.camera
            return claim_reliability(
                w, f.depth, c.K, c.c2w, target.K, target.c2w, reference=reference
            )

        # Warped in parallel threads, composited in retrieval order (the same result).
        warps = forward_warps(jobs, reference=reference, then=reliability)
        for fid, f, (w, rel) in zip(frame_ids, frames, warps, strict=True):
            if rel is not None:
                comp.add(fid, w, f, rel)
        comp.cohere(pool=None if reference else executor())
        comp.drop_unreliable(MIN_RELIABILITY)
        rgb, depth, src, uv = comp.rgb, comp.depth, comp.src, comp.uv
        conf, observed, stretch = comp.conf, comp.observed, comp.stretch
        valid = torch.from_numpy(depth.numpy() > 0)  # numpy: one thread, no pool to wake
        corr = Correspondence(rgb.contiguous(), depth, valid, src, uv, conf, observed, stretch)
        # The composite's tensors are this call's own: routed in place (no copy).
        return route_cracks(
            corr, target, self.frames, passes=CRACK_PASSES, reference=reference, copy=False
        )


def retrieve_reference(
    frames: list[tuple[np.ndarray, np.ndarray]],
    target: Camera,
    cell_size: int,
    max_frames: int,
    occlusion_tol: float = 0.05,
    min_gain: float = 1e-6,
) -> list[int]:
    """Slow twin of :meth:`SpatialMemory.retrieve` (no culling) over frames given as
    (points_world (P, 3), points_conf (P,)). Returns indices into ``frames``. Plain loops.
    """
    gw = math.ceil(target.width / cell_size)
    gh = math.ceil(target.height / cell_size)
    hits = []  # (frame, cell, z, conf)
    for i, (pts, confs) in enumerate(frames):
        for p, c in zip(pts, confs, strict=True):
            q = target.w2c[:3, :3] @ p + target.w2c[:3, 3]
            if q[2] <= 1e-3:
                continue
            u = q[0] / q[2] * target.K[0, 0] + target.K[0, 2]
            v = q[1] / q[2] * target.K[1, 1] + target.K[1, 2]
            cx, cy = math.floor((u + 0.5) / cell_size), math.floor((v + 0.5) / cell_size)
            if 0 <= cx < gw and 0 <= cy < gh:
                hits.append((i, cy * gw + cx, q[2], float(c)))
    nearest: dict[int, float] = {}
    for _, cell, z, _ in hits:
        nearest[cell] = min(z, nearest.get(cell, math.inf))
    owned: list[dict[int, float]] = [{} for _ in frames]
    for i, cell, z, c in hits:
        if z <= nearest[cell] * (1 + occlusion_tol):
            owned[i][cell] = max(c, owned[i].get(cell, 0.0))
    chosen = [len(frames) - 1]
    best_q = dict(owned[-1])
    while len(chosen) < max_frames:
        gains = [sum(max(0.0, c - best_q.get(cell, 0.0)) for cell, c in o.items()) for o in owned]
        best = max(range(len(owned)), key=lambda j: (gains[j], -j))
        if gains[best] < min_gain:
            break
        chosen.append(best)
        for cell, c in owned[best].items():
            best_q[cell] = max(c, best_q.get(cell, 0.0))
    return chosen


def unproject_frame(depth: torch.Tensor, camera: Camera) -> torch.Tensor:
    """World points (H, W, 3) of a frame's depth map."""
    c2w = torch.from_numpy(camera.c2w.astype(np.float32))
    return transform_points(c2w, unproject_depth(depth, camera.K))
