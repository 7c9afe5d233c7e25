"""Forward warping of a frame (rgb + z-depth) into another camera.

Forward-backward warp:

1. *splat* (``models.geometry.zbuffer``): every source pixel is projected into the target and
   written into a z-buffer with a footprint from the local Jacobian of the source -> target
   map (bounding box of the parallelogram a pixel spans; its largest singular value is the
   pixel's **stretch**), at the depth of its tangent plane. Mixed "flying" pixels on depth
   ramps (neither foreground nor background) are not surfaces and are left out wherever
   parallax could move them; one-pixel cracks between two neighbours on one surface are closed.
2. *backward sample*: each covered target pixel is unprojected with its z-buffer depth and
   projected back into the source, which is sampled bilinearly (sub-pixel accurate). Where the
   2x2 neighbourhood straddles a depth edge the nearest pixel is used instead, so foreground and
   background colours never mix.
3. *check*: a pixel whose back-projected depth disagrees with the source depth there (bilinear
   depth on smooth surfaces, the nearest pixel's at edges) is dropped: it was occluded in the
   source, or the splat came from another surface.

The result says, per target pixel, where its colour came from (source u, v) and how stretched
it is: that is the correspondence the synthesis step routes pixels through.

:func:`forward_warp_reference` is the slow, obvious per-pixel twin of the splat used by tests.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.geometry import warp_kernels as wk
from models.geometry.cameras import relative_pose
from models.geometry.zbuffer import (
    NEAR,
    PARALLAX_PX,
    SAME_SURFACE,
    box_max,
    close_cracks,
    project_frame,
    splat_depth,
    splat_frame,
    splat_reference,
)

__all__ = [
    "NEAR",
    "WarpResult",
    "depth_edges",
    "flying_pixels",
    "forward_warp",
    "forward_warp_reference",
    "forward_warp_torch",
    "executor",
    "forward_warps",
    "relative_transform",
    "warm_up",
    "splat_depth",
    "splat_frame",
]


@dataclass
class WarpResult:
    """A source frame seen from a target camera.

    rgb: (H, W, 3) float32 in [0, 1]; depth: (H, W) float32 target z-depth (0 where invalid);
    valid: (H, W) bool; src_uv: (H, W, 2) float32 source pixel coordinates (u, v);
    scale: (H, W) float32 isotropic magnification ``f_t z_s / (f_s z_t)`` (1 = same resolution);
    stretch: (H, W) float32 linear magnification along the most stretched direction (>= scale
    on a slanted surface; 0 where invalid); edge: (H, W) bool, the routed source pixel lies on a
    depth edge of the source (a weaker claim to the pixel than a surface interior); baseline:
    metres between the source and target centres (a surface at depth z moved by about
    ``baseline * f / z`` pixels: below half a pixel the source saw along the target's rays).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    src_uv: torch.Tensor
    scale: torch.Tensor
    stretch: torch.Tensor
    edge: torch.Tensor
    baseline: float = 0.0


def relative_transform(c2w_src: np.ndarray, c2w_tgt: np.ndarray) -> torch.Tensor:
    """(4, 4) float32 source-camera -> target-camera transform, composed in float64.

    Composing in float64 keeps an identity motion exactly the identity, so a revisited pose
    reproduces its frame bit for bit.
    """
    return torch.from_numpy(relative_pose(c2w_src, c2w_tgt).astype(np.float32))


def depth_edges(
    depth: torch.Tensor, rel_jump: float = 0.04, reference: bool = False
) -> torch.Tensor:
    """(H, W) bool: pixels next to a depth discontinuity (or with unknown depth).

    Tested on the second difference of inverse depth, which is zero on any plane however
    slanted (a floor seen at a grazing angle is not an edge), and about the step size on both
    sides of a discontinuity: ``|d[i-1] - 2 d[i] + d[i+1]| > rel_jump * d[i]``, along x or y.
    Compiled (:func:`models.geometry.warp_kernels.depth_edges`, the same bits);
    ``reference=True``: the torch twin below.
    """
    if not reference:
        d = np.ascontiguousarray(depth.float().numpy())
        return torch.from_numpy(wk.depth_edges(d, np.float32(rel_jump)))
    inv = 1.0 / depth.clamp(min=1e-6)
    # Pad by linear extrapolation: a plane stays a plane up to the border (replicate padding
    # would turn the border's second difference into a first difference).
    pad = F.pad(inv[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    if min(inv.shape) >= 2:
        pad[0, 1:-1] = 2 * inv[0] - inv[1]
        pad[-1, 1:-1] = 2 * inv[-1] - inv[-2]
        pad[1:-1, 0] = 2 * inv[:, 0] - inv[:, 1]
        pad[1:-1, -1] = 2 * inv[:, -1] - inv[:, -2]
    c = pad[1:-1, 1:-1]
    d2x = (pad[1:-1, :-2] - 2 * c + pad[1:-1, 2:]).abs()
    d2y = (pad[:-2, 1:-1] - 2 * c + pad[2:, 1:-1]).abs()
    return (torch.maximum(d2x, d2y) > rel_jump * c) | (depth <= 0)


def flying_pixels(
    depth: torch.Tensor,
    edges: torch.Tensor | None = None,
    tol: float = 0.05,
    jump: float = 0.15,
    reference: bool = False,
) -> torch.Tensor:
    """(H, W) bool: mixed pixels on a depth ramp between two surfaces ("flying pixels").

    A sensor or a smoothed estimate puts pixels on an occlusion boundary at depths between the
    foreground and the background. Such a pixel is next to a depth edge (``edges``, default
    :func:`depth_edges`), its depth lies between the depths two pixels away on either side
    (along x or y) by more than ``tol`` (relative) from both, and those two differ by more than
    ``jump``. The two pixels of a sharp step are not flying (each has its own surface's depth);
    a plane, however slanted, has no edge nearby. Compiled
    (:func:`models.geometry.warp_kernels.flying_pixels`); ``reference=True``: the torch twin.
    """
    if min(depth.shape) < 5:
        return torch.zeros_like(depth, dtype=torch.bool)
    if edges is None:
        edges = depth_edges(depth, reference=reference)
    if not reference:
        d = np.ascontiguousarray(depth.float().numpy())
        prm = np.array([1 + tol, 1 - tol, 1 + jump], np.float64).astype(np.float32)
        return torch.from_numpy(wk.flying_pixels(d, np.ascontiguousarray(edges.numpy()), prm))
    near_edge = box_max(edges.float(), 1) > 0
    d = depth
    out = torch.zeros_like(depth, dtype=torch.bool)
    for a, b, c in (
        (d[:, :-4], d[:, 4:], (slice(None), slice(2, -2))),
        (d[:-4, :], d[4:, :], (slice(2, -2), slice(None))),
    ):
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        mid = d[c]
        between = (mid > lo * (1 + tol)) & (mid < hi * (1 - tol)) & (hi > lo * (1 + jump))
        out[c] |= between & (lo > 0)
    return out & near_edge & (depth > 0)


def inverse_depth_range(
    depth: torch.Tensor, radius: int = 2, reference: bool = False
) -> torch.Tensor:
    """(H, W) spread of inverse depth (1/m) over each pixel's (2r+1)^2 window: a camera moving
    by ``b`` metres shifts the two sides of a depth edge there by up to ``b f`` times this many
    pixels relative to each other. Unknown depth (0) does not count. Compiled
    (:func:`models.geometry.warp_kernels.inverse_depth_range`); ``reference=True``: the torch
    twin."""
    if not reference:
        d = np.ascontiguousarray(depth.float().numpy())
        return torch.from_numpy(wk.inverse_depth_range(d, int(radius)))
    known = depth > 0
    inv = 1.0 / depth.clamp(min=1e-6)
    hi = box_max(torch.where(known, inv, -math.inf), radius)
    lo = -box_max(torch.where(known, -inv, -math.inf), radius)
    return torch.where(torch.isfinite(hi) & torch.isfinite(lo), hi - lo, 0.0).clamp(min=0)


def forward_warp(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_tgt: np.ndarray,
    c2w_tgt: np.ndarray,
    width: int,
    height: int,
    *,
    depth_tol: float = 0.03,
    edges: torch.Tensor | None = None,
    flying: torch.Tensor | None = None,
    inv_range: torch.Tensor | None = None,
    reference: bool = False,
) -> WarpResult:
    """Warp a source frame into a target camera.

    Compiled (:mod:`models.geometry.warp_kernels`); ``reference=True`` runs the torch twin
    (:func:`forward_warp_torch`), which it matches within float rounding (depth, routed pixels
    and source coordinates agree exactly on the tests' real and synthetic frames).

    Args:
        rgb: (Hs, Ws, 3) float32 [0, 1], or uint8; depth: (Hs, Ws) float32 z-depth, 0 = unknown.
        K_src, c2w_src: source intrinsics (for Ws x Hs) and pose; K_tgt, c2w_tgt: the target's.
        width, height: target image size.
        depth_tol: relative depth disagreement above which a back-projected pixel is dropped.
        edges: (Hs, Ws) bool depth-edge mask of the source (computed when None). Pixels on a
            depth edge still occlude, but are not routed where parallax could have moved them:
            their colour mixes foreground and background, and sensor depth there is unreliable
            (measured on TUM: +1 dB).
        flying: (Hs, Ws) bool mixed pixels on depth ramps (computed when None): neither
            splatted nor routed where parallax could have moved them.
        inv_range: (Hs, Ws) :func:`inverse_depth_range` of the source (computed when None).
            "Could have moved" means: the parallax difference across the edge, baseline times
            focal length times this range, exceeds half a pixel. A sky whose depth varies
            from 130 to 150 m has edges, but walking 30 cm moves them less than that.
        reference: run the torch twin instead of the kernels.
    """
    if edges is None:
        edges = depth_edges(depth, reference=reference)
    if flying is None:
        flying = flying_pixels(depth, edges, reference=reference)
    if inv_range is None:
        inv_range = inverse_depth_range(depth, reference=reference)
    T = relative_pose(c2w_src, c2w_tgt)
    run = _warp_torch if reference else _warp_compiled
    return run(rgb, depth, K_src, T, K_tgt, width, height, depth_tol, edges, flying, inv_range)


# Threads warping memory frames at once (the kernels release the GIL): one per core, at most
# one per retrieved frame (4). LOCI_WARP_THREADS=1 warps one frame at a time.
WARP_THREADS = int(os.environ.get("LOCI_WARP_THREADS", "0")) or min(4, os.cpu_count() or 1)
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)
_pool_lock = threading.Lock()


def executor() -> ThreadPoolExecutor | None:
    """The process's pool of ``WARP_THREADS`` threads (None when ``WARP_THREADS`` < 2): the
    warps, and the coherence pass's row bands (:meth:`Composite.cohere`), run in it."""
    global _pool
    if WARP_THREADS < 2:
        return None
    with _pool_lock:
        # A forked child inherits the pool but not its threads: it makes its own.
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(WARP_THREADS, thread_name_prefix="loci-warp"))
    return _pool[1]


def forward_warps(
    jobs: Sequence[dict[str, Any]],
    reference: bool = False,
    then: Callable[[int, WarpResult], Any] | None = None,
) -> Iterator[WarpResult] | Iterator[tuple[WarpResult, Any]]:
    """:func:`forward_warp` of each job (its keyword arguments), yielded in order.

    The compiled warps run in parallel threads (``WARP_THREADS``), each a pure function of its
    frame: every result is the one a lone call gives, whatever the scheduling. Yielded as each
    is done, so the caller composites the first while the next ones are warped. ``then(i, w)``
    runs in job ``i``'s thread after its warp ``w`` (in parallel too): ``(w, then(i, w))`` yielded.
    """

    def one(i: int, job: dict[str, Any]) -> Any:
        w = forward_warp(**job, reference=reference)
        return w if then is None else (w, then(i, w))

    pool = None if reference or len(jobs) < 2 else executor()
    if pool is None:
        for i, job in enumerate(jobs):
            yield one(i, job)
        return
    futures = [pool.submit(one, i, job) for i, job in enumerate(jobs)]
    for future in futures:
        yield future.result()


def forward_warp_torch(*args: Any, **kwargs: Any) -> WarpResult:
    """:func:`forward_warp` with ``reference=True``: the torch twin (a few dozen whole-image
    operations) the compiled warp is tested against."""
    return forward_warp(*args, reference=True, **kwargs)


def _warp_torch(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    K_src: np.ndarray,
    T: np.ndarray,
    K_tgt: np.ndarray,
    width: int,
    height: int,
    depth_tol: float,
    edges: torch.Tensor,
    flying: torch.Tensor,
    inv_range: torch.Tensor,
) -> WarpResult:
    """The torch twin of :func:`_warp_compiled`; ``T`` (4, 4) float64 source -> target."""
    # Only the part of the source that lands in the target is warped (walking forward, the
    # target sees the middle of the older frames): crop it, with a 2-pixel margin for the
    # footprints' neighbours and bilinear sampling, and shift K_src to the crop.
    u, v, z = project_frame(depth, K_src, T, K_tgt)
    lands = (depth > 0) & (z > NEAR) & (u > -4) & (u < width + 3) & (v > -4) & (v < height + 3)
    rows, cols = torch.nonzero(lands.any(1)).squeeze(1), torch.nonzero(lands.any(0)).squeeze(1)
    x0 = y0 = 0
    planes: tuple | None = (u, v, z)
    if rows.numel() and cols.numel():
        y0, y1 = max(int(rows[0]) - 2, 0), min(int(rows[-1]) + 3, depth.shape[0])
        x0, x1 = max(int(cols[0]) - 2, 0), min(int(cols[-1]) + 3, depth.shape[1])
        if (y1 - y0) * (x1 - x0) < 0.9 * depth.numel():
            crop = (slice(y0, y1), slice(x0, x1))
            rgb, depth, edges = rgb[crop], depth[crop], edges[crop]
            flying, inv_range = flying[crop], inv_range[crop]
            K_src = np.array(K_src, np.float64)
            K_src[0, 2] -= x0
            K_src[1, 2] -= y0
            planes = None  # projected again for the crop
        else:
            x0 = y0 = 0
    Hs, Ws = depth.shape
    f_t = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]))
    moved = inv_range.float() * (float(np.linalg.norm(T[:3, 3])) * f_t) > PARALLAX_PX
    sp = splat_frame(depth, K_src, T, K_tgt, width, height, flying & moved, planes)
    zbuf = close_cracks(sp.zbuf)

    # Backward, densely over the target: unproject with the z-buffer depth, look up the source.
    has = torch.isfinite(zbuf)
    zt = torch.where(has, zbuf, 1.0)
    us, vs, z_s = project_frame(zt, K_tgt, np.linalg.inv(T), K_src)
    inside = (us >= -0.5) & (us <= Ws - 0.5) & (vs >= -0.5) & (vs <= Hs - 0.5)
    inside &= (z_s > NEAR) & has
    us, vs = us.clamp(0, Ws - 1), vs.clamp(0, Hs - 1)
    near_idx = (vs.round() * Ws + us.round()).long()

    # Bilinear where the 2x2 source neighbourhood is one surface, nearest where it straddles an
    # edge (so foreground and background colours never mix); the depth check follows suit.
    rgb_p = rgb.permute(2, 0, 1).float()
    if rgb.dtype == torch.uint8:
        rgb_p = rgb_p / 255.0
    src = torch.cat([rgb_p, depth[None], edges[None].float()], 0)[None]
    grid = torch.stack([us * (2.0 / max(Ws - 1, 1)) - 1.0, vs * (2.0 / max(Hs - 1, 1)) - 1.0], -1)
    bil = F.grid_sample(src, grid[None], mode="bilinear", align_corners=True)[0]
    on_edge = bil[4] > 0
    d_near = depth.reshape(-1)[near_idx]
    d_src = torch.where(on_edge, d_near, bil[3])
    valid = inside & (d_near > 0) & ((d_src - z_s).abs() <= depth_tol * z_s)
    # Edge and flying pixels are dropped only where parallax could have moved them: seen from
    # (nearly) the same centre (a revisit, a pure rotation) their depth errors cannot shift them.
    src_edge = edges.reshape(-1)[near_idx]
    valid &= ~((edges | flying) & moved).reshape(-1)[near_idx]
    col = bil[:3] * valid
    at_edge = torch.nonzero((on_edge & valid).reshape(-1)).squeeze(1)  # few: gather only them
    if at_edge.numel():
        col = col.reshape(3, -1)
        col[:, at_edge] = rgb_p.reshape(3, -1)[:, near_idx.reshape(-1)[at_edge]]
        col = col.view(3, height, width)
    vf = valid.float()
    return WarpResult(
        col.permute(1, 2, 0),
        zt * vf,
        valid,
        torch.where(valid[..., None], torch.stack([us + x0, vs + y0], -1), -1.0),
        (sp.f_t * z_s) / (sp.f_s * zt) * vf,
        sp.stretch.reshape(-1)[near_idx] * vf,
        src_edge & valid,
        sp.baseline,
    )


def _ray_map(K: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (3, 3) ``T[:3, :3] K^-1`` and (3,) ``T[:3, 3]``, as :func:`project_frame` rounds
    them, and the (4,) float32 ``fx, fy, cx, cy`` of ``K``."""
    M = np.asarray(T, np.float64)[:3, :3] @ np.linalg.inv(np.asarray(K, np.float64))
    return M.astype(np.float32), np.asarray(T, np.float64)[:3, 3].astype(np.float32)


def _fxy(K: np.ndarray) -> np.ndarray:
    return np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.float32)


def _warp_compiled(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    K_src: np.ndarray,
    T: np.ndarray,
    K_tgt: np.ndarray,
    width: int,
    height: int,
    depth_tol: float,
    edges: torch.Tensor,
    flying: torch.Tensor,
    inv_range: torch.Tensor,
) -> WarpResult:
    """:func:`forward_warp` by the kernels of :mod:`models.geometry.warp_kernels`; ``T``
    (4, 4) float64 source -> target."""
    near = np.float32(NEAR)
    k_t = _fxy(K_tgt)
    d = np.ascontiguousarray(depth.numpy(), np.float32)
    m, t = _ray_map(K_src, T)
    y0, y1, x0, x1 = wk.land_box(d, m, t, k_t, width, height, near)
    # Only the part of the source that lands in the target is warped (walking forward, the
    # target sees the middle of the older frames): the crop rule of forward_warp_torch.
    Hs0, Ws0 = d.shape
    y0, y1, x0, x1 = max(y0 - 2, 0), min(y1 + 2, Hs0), max(x0 - 2, 0), min(x1 + 2, Ws0)
    if y1 <= y0 or (y1 - y0) * (x1 - x0) >= 0.9 * d.size:
        y0, y1, x0, x1 = 0, Hs0, 0, Ws0
    crop = (slice(y0, y1), slice(x0, x1))
    K_src = np.array(K_src, np.float64)
    K_src[0, 2] -= x0
    K_src[1, 2] -= y0
    d = d[crop]
    Hs, Ws = d.shape
    f_s = math.sqrt(float(K_src[0, 0] * K_src[1, 1]))
    f_t = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]))
    baseline = float(np.linalg.norm(T[:3, 3]))
    # numpy converts (memory keeps inv_range in float16) on this thread: torch's .float() woke
    # its thread pool for every warp. Cropped after converting: the kernels see the same layout.
    fly, inv_r = flying.numpy()[crop], inv_range.numpy().astype(np.float32)[crop]
    m, t = _ray_map(K_src, T)
    par = [baseline * f_t, PARALLAX_PX]
    prm = np.array([NEAR, SAME_SURFACE, f_t / f_s, 3, 0.25, *par], np.float32)
    zbuf, stretch = wk.splat(d, m, t, k_t, fly, inv_r, width, height, prm)
    zbuf = wk.close_cracks(zbuf, np.float32(1 + 0.3))
    m_b, t_b = _ray_map(K_tgt, np.linalg.inv(T))
    g = [2.0 / max(Ws - 1, 1), 2.0 / max(Hs - 1, 1), (Ws - 1) / 2, (Hs - 1) / 2]
    prm_b = np.array([NEAR, depth_tol, f_t, f_s, *g, *par], np.float32)
    u8 = rgb.dtype == torch.uint8
    rgb_n = (rgb if u8 else rgb.float()).numpy()[crop]
    src = (rgb_n, u8, d, edges.numpy()[crop], fly, inv_r)
    out = wk.sample_back(zbuf, *src, stretch, m_b, t_b, _fxy(K_src), prm_b, (x0, y0))
    return WarpResult(*(torch.from_numpy(a) for a in out), baseline)


def forward_warp_reference(
    depth: np.ndarray,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_tgt: np.ndarray,
    c2w_tgt: np.ndarray,
    width: int,
    height: int,
    max_radius: int = 3,
    margin: float = 0.25,
) -> np.ndarray:
    """Slow twin of the warp's splat (no flying pixels, no crack closing): z-buffer (H, W)
    float64, from the poses (see :func:`models.geometry.zbuffer.splat_reference`)."""
    T = relative_pose(c2w_src, c2w_tgt)
    return splat_reference(depth, K_src, T, K_tgt, width, height, max_radius, margin)


_warm = threading.Lock()
_warmed = False


def warm_up(background: bool = False) -> threading.Thread | None:
    """Compile (or load from the disk cache) the warp, reliability, composite and crack-routing
    kernels (and those of a frame's edges, flying pixels and inverse-depth range) on a tiny
    frame, once per process. With ``background`` it runs in a daemon thread, returned (None
    when already done)."""
    global _warmed
    if _warmed:
        return None
    if background:
        thread = threading.Thread(target=warm_up, name="warp-warm-up", daemon=True)
        thread.start()
        return thread
    with _warm:
        if _warmed:
            return None
        from models.geometry.composite import Composite, warm_up_cohere
        from models.geometry.cracks import warm_up_cracks
        from models.geometry.reliability import claim_reliability

        K = np.array([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]])
        side, ahead = np.eye(4), np.eye(4)
        side[0, 3], ahead[2, 3] = 0.05, 1.0  # a step aside warps it all, one ahead a crop
        depth = torch.full((32, 48), 2.0)
        depth[10:20, 15:30] = 1.5
        rgb = torch.zeros(32, 48, 3, dtype=torch.uint8)
        # Every argument type a caller passes: uint8 or float colour, whole or cropped source.
        for img, c2w in ((rgb, ahead), (rgb.float(), side), (rgb, side)):
            w = forward_warp(img, depth, K, np.eye(4), K, c2w, 48, 32)
        frame = SimpleNamespace(
            rgb=rgb, confidence=torch.ones(32, 48), observed=torch.ones(32, 48, dtype=torch.bool)
        )
        comp = Composite(48, 32, 40.0)
        comp.add(0, w, frame, claim_reliability(w, depth, K, np.eye(4), K, side, None))
        comp.cohere()  # its kernels too: the first composite of a session must not compile
        warm_up_cohere(comp)
        warm_up_cracks(K, rgb, depth)
        _warmed = True
    return None
