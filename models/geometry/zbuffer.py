"""The splat half of the forward warp: project a depth map into another camera and z-buffer it.

1. *project* (:func:`project_frame`): every source pixel's target position and depth, computed
   on separate (H, W) planes: the ray of pixel (x, y) is affine in x and y, so the whole map is
   a few broadcast operations (a (H*W, 3) @ (3, 3) matrix product is 30x slower on a CPU).
2. *footprints* (:func:`footprints`): the neighbours' projections give the local Jacobian ``J``
   of the source -> target map, taken on the side of the pixel's own surface at a depth
   discontinuity (a thin structure with no same-surface neighbour falls back to the isotropic
   magnification ``f_t z_s / (f_s z_t)``). The footprint is the bounding box of the
   parallelogram ``J`` spans; the **stretch** is ``J``'s largest singular value (2 = one source
   pixel spans about two target pixels across); the tangent plane gives the depth across it. A
   grazing floor walked along is stretched in one direction only: an isotropic footprint
   leaves cracks there, and a footprint at one depth breaks the floor's slope.
3. *splat* (:func:`splat_depth`): each point writes its tangent-plane depth into the target
   pixels its footprint covers (min-reduce), ring by ring, visiting only the points that reach.
4. *cracks* (:func:`close_cracks`): an empty pixel between two neighbours on one surface gets
   their depth.

:func:`splat_reference` is the slow, obvious per-pixel twin of :func:`splat_frame`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

NEAR = 1e-3  # metres: points closer than this to the target camera are dropped
SAME_SURFACE = 0.1  # relative depth step between neighbours beyond which they are two surfaces
PARALLAX_PX = 0.5  # parallax differences (pixels) below this cannot have moved an edge

Planes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def box_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W) maximum over each pixel's (2r+1)^2 window (borders replicated), by shifted
    maxima: separable and an order of magnitude faster than ``max_pool2d`` on a CPU."""
    if radius <= 0:
        return x
    H, W = x.shape
    p = F.pad(x[None, None], (radius, radius, 0, 0), mode="replicate")[0, 0]
    row = p[:, :W].clone()
    for d in range(1, 2 * radius + 1):
        row = torch.maximum(row, p[:, d : d + W])
    p = F.pad(row[None, None], (0, 0, radius, radius), mode="replicate")[0, 0]
    out = p[:H].clone()
    for d in range(1, 2 * radius + 1):
        out = torch.maximum(out, p[d : d + H])
    return out


def project_frame(
    depth: torch.Tensor, K_src: np.ndarray, T: np.ndarray, K_tgt: np.ndarray
) -> Planes:
    """Target (u, v, z) planes, each (Hs, Ws) float32, of the pixels of a source depth map.

    ``T`` (4, 4) float64 is the source -> target transform. z <= 0 means behind the target;
    u and v are then meaningless (callers mask them).
    """
    Hs, Ws = depth.shape
    M = np.asarray(T, np.float64)[:3, :3] @ np.linalg.inv(np.asarray(K_src, np.float64))
    t = np.asarray(T, np.float64)[:3, 3]
    xs = torch.arange(Ws, dtype=torch.float32)[None, :]
    ys = torch.arange(Hs, dtype=torch.float32)[:, None]
    X, Y, Z = (
        depth * ((float(M[k, 0]) * xs + float(M[k, 2])) + float(M[k, 1]) * ys) + float(t[k])
        for k in range(3)
    )
    inv_z = 1.0 / Z.clamp(min=1e-8)
    u = X * inv_z * float(K_tgt[0, 0]) + float(K_tgt[0, 2])
    v = Y * inv_z * float(K_tgt[1, 1]) + float(K_tgt[1, 2])
    return u, v, Z


def _axis_derivative(
    planes: Planes, z: torch.Tensor, ok: torch.Tensor, dim: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Derivatives of the (u, v, z) planes along source axis ``dim`` (1 = x, 0 = y), each
    (Hs, Ws), and whether a same-surface neighbour gave them (Hs, Ws) bool.

    Forward and backward differences are both formed; the one to a neighbour on the same
    surface (relative source-depth step <= SAME_SURFACE, both usable) with the smaller image
    step wins (the forward one on a tie), so a pixel on a discontinuity takes its own surface's.
    """
    if z.shape[dim] < 2:
        return [torch.zeros_like(z)] * 3, torch.zeros_like(ok)
    if dim == 1:
        a, b = (slice(None), slice(1, None)), (slice(None), slice(None, -1))
        after, before = (0, 1), (1, 0)
    else:
        a, b = (slice(1, None),), (slice(None, -1),)
        after, before = (0, 0, 0, 1), (0, 0, 1, 0)
    diffs = [p[a] - p[b] for p in planes]  # between pixel i and i + 1
    za, zb = z[a], z[b]
    good = ok[a] & ok[b] & ((za - zb).abs() <= SAME_SURFACE * torch.minimum(za, zb))
    norm = torch.where(good, diffs[0] * diffs[0] + diffs[1] * diffs[1], math.inf)
    fwd_n = F.pad(norm, after, value=math.inf)  # pixel i -> i + 1 (none after the last)
    bwd_n = F.pad(norm, before, value=math.inf)  # pixel i - 1 -> i (none before the first)
    use_fwd = fwd_n <= bwd_n
    out = [torch.where(use_fwd, F.pad(d, after), F.pad(d, before)) for d in diffs]
    return out, torch.isfinite(torch.minimum(fwd_n, bwd_n))


def footprints(
    planes: Planes, z_src: torch.Tensor, ok: torch.Tensor, iso: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Footprint of every source pixel in the target.

    Args:
        planes: target (u, v, z) planes of the source pixels (:func:`project_frame`);
        z_src: (Hs, Ws) source depth; ok: (Hs, Ws) bool usable pixels; iso: (Hs, Ws) isotropic
        magnification, used along an axis with no same-surface neighbour (a thin structure).

    Returns:
        extent_u, extent_v (Hs, Ws): full width along target u and v of the footprint's
        bounding box; stretch (Hs, Ws): largest singular value of J = d(u, v)/d(x, y);
        grad_u, grad_v (Hs, Ws): target depth change per target pixel along u and v (the
        tangent plane), 0 where J is singular or has no same-surface neighbour.
    """
    (a, b, zx), okx = _axis_derivative(planes, z_src, ok, 1)  # J's first column (a, b)
    (c, d, zy), oky = _axis_derivative(planes, z_src, ok, 0)  # J's second column (c, d)
    a, b, zx = torch.where(okx, a, iso), torch.where(okx, b, 0.0), torch.where(okx, zx, 0.0)
    c, d, zy = torch.where(oky, c, 0.0), torch.where(oky, d, iso), torch.where(oky, zy, 0.0)
    extent_u, extent_v = a.abs() + c.abs(), b.abs() + d.abs()
    fro = a * a + b * b + c * c + d * d
    det = a * d - b * c
    stretch = torch.sqrt(0.5 * (fro + torch.sqrt((fro * fro - 4 * det * det).clamp(min=0))))
    inv = torch.where(det.abs() > 1e-6, 1.0 / det, 0.0)  # [dz/du, dz/dv] = [zx, zy] J^-1
    return extent_u, extent_v, stretch, (zx * d - zy * b) * inv, (zy * a - zx * c) * inv


def splat_depth(
    uv: torch.Tensor,
    z: torch.Tensor,
    scale: torch.Tensor,
    width: int,
    height: int,
    max_radius: int = 3,
    margin: float = 0.25,
    grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Z-buffer (H, W) of points at pixel positions ``uv`` (N, 2) with depth ``z`` (N,).

    ``scale`` is the footprint's full width in target pixels, (N,) for a square or (N, 2) along
    u and v. A point covers the target pixels whose centres lie within ``max(scale, 1) / 2 +
    margin`` of it along each axis (always its nearest pixel), at most ``max_radius`` away.
    ``grad`` (N, 2), when given, is the surface's depth change per pixel along u and v: a
    covered pixel gets the depth of the tangent plane at its centre (the slope limited so it
    changes the depth by at most 50 % within the footprint), so a
    magnified slanted surface keeps its slope across its footprint; a point exactly on a pixel
    centre keeps its depth bit for bit. Empty pixels hold +inf. ``uv`` must lie in
    (-1, width) x (-1, height).
    """
    R = max_radius
    # Padded buffer, so offsets never need a bounds test. uv just above -1 rounds to pixel -1,
    # and its footprint reaches R further: the pad is R + 1 (R alone indexed out of bounds).
    P = R + 1
    Wp = width + 2 * P
    zbuf = torch.full(((height + 2 * P) * Wp,), math.inf)
    ext = scale if scale.ndim == 2 else scale[:, None].expand(-1, 2)
    half = ext.clamp(min=1.0, max=2 * R) * 0.5 + margin
    base = torch.round(uv)
    frac = base - uv  # (N, 2) in [-0.5, 0.5]: the nearest pixel's centre relative to the point
    flat = (base[:, 1].long() + P) * Wp + base[:, 0].long() + P
    gu = gv = None
    if grad is None:
        z_lin, zc = z, z
    else:
        # Tangent-plane depth at pixel centre base + d: z + g . (frac + d) = z_lin + g . d. The
        # slope is scaled down where needed so that no covered pixel (at most R + 0.5 pixels
        # away) moves more than half the depth; a point on a pixel centre keeps its depth bit
        # for bit (identity warps stay exact).
        gu, gv = grad[:, 0], grad[:, 1]
        bound = (gu.abs() + gv.abs()) * (R + 0.5)
        shrink = torch.where(bound > 0.5 * z, 0.5 * z / bound.clamp(min=1e-12), 1.0)
        gu, gv = gu * shrink, gv * shrink
        z_lin = z + gu * frac[:, 0] + gv * frac[:, 1]
        zc = torch.where(frac.abs().amax(1) <= 1e-3, z, z_lin)
    zbuf.scatter_reduce_(0, flat, zc, reduce="amin")
    if len(half) == 0:
        return zbuf.view(height + 2 * P, Wp)[P : P + height, P : P + width]
    # A point reaches offset d along an axis iff |d + frac| <= half. Ring r (Chebyshev
    # distance r) visits only the points whose footprint reaches it (most stop at ring 1).
    hmax = half.amax(1)
    radius = int(min(R, math.floor(float(hmax.max()) + 0.5)))
    fx, fy, hx, hy = frac[:, 0], frac[:, 1], half[:, 0], half[:, 1]
    for r in range(1, radius + 1):
        idx = torch.nonzero(hmax + 0.5 >= r).squeeze(1) if r > 1 else None
        if idx is not None and idx.numel() == 0:
            break
        pick = (lambda x: x) if idx is None else (lambda x, i=idx: x[i])
        fxr, fyr, hxr, hyr, fl, zl = pick(fx), pick(fy), pick(hx), pick(hy), pick(flat), pick(z_lin)
        gur = None if gu is None else pick(gu)
        gvr = None if gv is None else pick(gv)
        reach_x = {k: (fxr + k).abs() <= hxr for k in range(-r, r + 1) if k}
        reach_y = {k: (fyr + k).abs() <= hyr for k in range(-r, r + 1) if k}
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if max(abs(dx), abs(dy)) != r:
                    continue
                if dx and dy:
                    m = reach_x[dx] & reach_y[dy]
                else:
                    m = reach_x[dx] if dx else reach_y[dy]
                sel = torch.nonzero(m).squeeze(1)
                if sel.numel() == 0:
                    continue
                val = zl[sel]
                if gur is not None:
                    if dx:
                        val = val + gur[sel] * dx
                    if dy:
                        val = val + gvr[sel] * dy
                zbuf.scatter_reduce_(0, fl[sel] + (dy * Wp + dx), val, reduce="amin")
    return zbuf.view(height + 2 * P, Wp)[P : P + height, P : P + width]


def close_cracks(zbuf: torch.Tensor, pair_tol: float = 0.3) -> torch.Tensor:
    """Z-buffer (H, W) with one-pixel cracks closed.

    A crack is an empty pixel (inf) between the two neighbours of an opposite pair (left/right,
    up/down, or a diagonal) that lie on one surface (within ``pair_tol`` of each other). It gets
    the pair's harmonic mean (exact midway on a plane, where inverse depth is affine in the
    pixel position); the backward check then validates it against the source. A farther surface
    showing through a 1-pixel gap is left alone: in the source it can be a real gap. Only the
    empty pixels are visited.
    """
    H, W = zbuf.shape
    p = F.pad(zbuf, (1, 1, 1, 1), value=math.inf)
    holes = torch.nonzero(torch.isinf(zbuf).reshape(-1)).squeeze(1)
    if holes.numel() == 0:
        return zbuf
    y, x = holes // W + 1, holes % W + 1  # in padded coordinates
    flat = p.reshape(-1)
    Wp = W + 2
    best = torch.full((len(holes),), math.inf)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = flat[(y - dy) * Wp + (x - dx)]
        b = flat[(y + dy) * Wp + (x + dx)]
        ok = torch.isfinite(a) & torch.isfinite(b)
        ok &= torch.maximum(a, b) <= torch.minimum(a, b) * (1 + pair_tol)
        fill = 2 * a * b / (a + b).clamp(min=1e-12)
        best = torch.where(ok & (fill < best), fill, best)
    out = zbuf.clone().reshape(-1)
    out[holes] = best
    return out.view(H, W)


@dataclass
class Splat:
    """A source frame's surface splatted into a target z-buffer (:func:`splat_frame`).

    zbuf: (H, W) target z-depth, inf where empty (before crack closing); stretch: (Hs, Ws)
    per-source-pixel stretch; baseline: metres between the camera centres; f_s, f_t:
    geometric-mean focal lengths of source and target.
    """

    zbuf: torch.Tensor
    stretch: torch.Tensor
    baseline: float
    f_s: float
    f_t: float


def splat_frame(
    depth: torch.Tensor,
    K_src: np.ndarray,
    T: np.ndarray,
    K_tgt: np.ndarray,
    width: int,
    height: int,
    drop: torch.Tensor | None = None,
    planes: Planes | None = None,
) -> Splat:
    """Footprints and z-buffer splat of a source depth map (Hs, Ws) into a ``width`` x
    ``height`` target; ``T`` (4, 4) float64 source -> target. ``drop`` (Hs, Ws) bool pixels are
    left out (flying pixels whose parallax differs from their neighbours'). ``planes``: the
    (u, v, z) of :func:`project_frame` for these arguments, when the caller has them."""
    u, v, z = project_frame(depth, K_src, T, K_tgt) if planes is None else planes
    f_s = math.sqrt(float(K_src[0, 0] * K_src[1, 1]))
    f_t = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]))
    baseline = float(np.linalg.norm(np.asarray(T, np.float64)[:3, 3]))
    front = (depth > 0) & (z > NEAR)
    zc = z.clamp(min=NEAR)
    ext_u, ext_v, stretch, g_u, g_v = footprints((u, v, z), depth, front, (f_t / f_s) * depth / zc)
    ok = front & (u > -1) & (u < width) & (v > -1) & (v < height)
    if drop is not None:
        ok &= ~drop
    i = torch.nonzero(ok.reshape(-1)).squeeze(1)

    def pick(*planes: torch.Tensor) -> torch.Tensor:
        return torch.stack([p.reshape(-1)[i] for p in planes], -1)

    zbuf = splat_depth(
        pick(u, v), z.reshape(-1)[i], pick(ext_u, ext_v), width, height, grad=pick(g_u, g_v)
    )
    return Splat(zbuf, stretch, baseline, f_s, f_t)


def splat_reference(
    depth: np.ndarray,
    K_src: np.ndarray,
    T: np.ndarray,
    K_tgt: np.ndarray,
    width: int,
    height: int,
    max_radius: int = 3,
    margin: float = 0.25,
) -> np.ndarray:
    """Slow twin of :func:`splat_frame` (no flying pixels): the z-buffer (H, W), float64.

    One pixel at a time, the footprint rule written out literally: the pixel's Jacobian from
    its neighbours' projections (the same-surface neighbour with the smaller step, else the
    isotropic magnification), the bounding box of the parallelogram it spans, and every target
    pixel whose centre lies in that box grown by ``margin``, at the depth of the tangent plane
    there. Tiny images only.
    """
    f_ratio = math.sqrt(K_tgt[0, 0] * K_tgt[1, 1] / (K_src[0, 0] * K_src[1, 1]))
    Hs, Ws = depth.shape

    def project(y: int, x: int) -> np.ndarray | None:
        d = depth[y, x]
        if d <= 0:
            return None
        p = np.array([(x - K_src[0, 2]) / K_src[0, 0] * d, (y - K_src[1, 2]) / K_src[1, 1] * d, d])
        q = T[:3, :3] @ p + T[:3, 3]
        if q[2] <= NEAR:
            return None
        u = q[0] / q[2] * K_tgt[0, 0] + K_tgt[0, 2]
        return np.array([u, q[1] / q[2] * K_tgt[1, 1] + K_tgt[1, 2], q[2]])

    def derivative(y: int, x: int, dy: int, dx: int, here: np.ndarray) -> np.ndarray | None:
        best = None
        for s in (1, -1):  # forward first: it wins a tie, as in the fast path
            yy, xx = y + s * dy, x + s * dx
            if not (0 <= yy < Hs and 0 <= xx < Ws):
                continue
            there = project(yy, xx)
            step = abs(depth[yy, xx] - depth[y, x])
            if there is None or step > SAME_SURFACE * min(depth[yy, xx], depth[y, x]):
                continue
            diff = s * (there - here)
            if best is None or np.linalg.norm(diff[:2]) < np.linalg.norm(best[:2]):
                best = diff
        return best

    zbuf = np.full((height, width), np.inf)
    for y in range(Hs):
        for x in range(Ws):
            here = project(y, x)
            if here is None or not (-1 < here[0] < width and -1 < here[1] < height):
                continue
            u, v, zt = here
            iso = f_ratio * depth[y, x] / zt
            jx = derivative(y, x, 0, 1, here)
            jy = derivative(y, x, 1, 0, here)
            jx = np.array([iso, 0.0, 0.0]) if jx is None else jx
            jy = np.array([0.0, iso, 0.0]) if jy is None else jy
            J = np.array([[jx[0], jy[0]], [jx[1], jy[1]]])
            det = np.linalg.det(J)
            g = np.array([jx[2], jy[2]]) @ np.linalg.inv(J) if abs(det) > 1e-6 else np.zeros(2)
            bound = (abs(g[0]) + abs(g[1])) * (max_radius + 0.5)
            if bound > 0.5 * zt:  # the slope limit of the fast path
                g = g * (0.5 * zt / bound)
            hu = min(max(abs(jx[0]) + abs(jy[0]), 1.0), 2.0 * max_radius) * 0.5 + margin
            hv = min(max(abs(jx[1]) + abs(jy[1]), 1.0), 2.0 * max_radius) * 0.5 + margin
            bu, bv = round(u), round(v)
            for py in range(max(bv - max_radius, 0), min(bv + max_radius + 1, height)):
                for px in range(max(bu - max_radius, 0), min(bu + max_radius + 1, width)):
                    near = px == bu and py == bv
                    if not (near or (abs(px - u) <= hu and abs(py - v) <= hv)):
                        continue
                    off = np.array([px - u, py - v])
                    dz = float(g @ off) if np.abs(off).max() > 1e-3 else 0.0
                    zbuf[py, px] = min(zbuf[py, px], zt + dz)
    return zbuf
