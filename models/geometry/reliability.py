"""How far a routed pixel can be trusted, from the geometry the memory already has.

A memory frame's pixel lands in a target view through its depth. Depth is never exact (sensor
noise and quantisation, a few per cent of a monocular estimate's scale), and an error ``dz``
along the *source* ray moves the landing point across the *target* image by about
``f_t * dz * sin(alpha) / z_t`` pixels, ``alpha`` the angle at the surface point between the
source and target rays (a wide baseline for the depth). The error itself grows where the source
saw the surface at grazing incidence (``dz / cos(theta_s)``: depth on a slanted surface, and a
normal from it, are the least certain). Seen head-on from about the same place, a routed pixel
is exact; seen across the room at 80 degrees, it lands several pixels (on TUM, tens) from where
it belongs: shards of the wrong surface, visibly wrong and far busier than the truth.

:func:`claim_reliability` turns that expected landing error into a factor in (0, 1] that scales
a claim's quality in the composite (:class:`models.geometry.composite.Composite`): a better
placed claim wins, and where none is reliable the pixel is handed to the painter
(:meth:`Composite.drop_unreliable`). Decided from geometry only (depths, normals from them, camera
centres), never by comparing with images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numba import njit

from models.geometry.cameras import relative_pose, unproject_depth

# Relative depth error of a memory frame's depth along its rays (sensor depth after filtering,
# a monocular estimate after scale alignment: a few per cent).
DEPTH_REL_ERROR = 0.02
# Expected landing errors up to ``EXACT_PX`` count as none: resampling blurs by about as much, and
# a nearer, already resampled copy must not beat the original pixels on a smaller error.
# Chosen among 0, 2, 4 on TUM frames 1..12 and a loop revisit of the living room photo (at 0 the
# revisit lost 2.8 dB: nearer, resampled copies beat the photo on slightly smaller errors).
EXACT_PX = 4.0
# Beyond that, ``RELIABLE_PX`` more pixels of expected error keep exp(-1) of a claim's quality.
RELIABLE_PX = 4.0
# Below this factor (expected error > EXACT_PX + ln(100) RELIABLE_PX, about 22 px) a claim is not
# routed at all: painted. Chosen on TUM frames 1..12 among 0 (re-weighting only), 0.002, 0.01,
# 0.05.
MIN_RELIABILITY = 0.01
# cos(theta_s) floor: beyond ~84 degrees the normal itself is noise.
MIN_COS = 0.1
NORMAL_STEP = 2  # pixels between the depth samples a normal is taken from (noise vs detail)


def depth_normals(depth: torch.Tensor, K: np.ndarray, step: int = NORMAL_STEP) -> torch.Tensor:
    """Unit surface normals (H, W, 3) in the camera frame of a z-depth map (H, W), from central
    differences ``step`` pixels apart (replicated at the border). Where depth is missing the
    normal faces the camera (0, 0, -1)."""
    P = unproject_depth(depth.float(), K)  # (H, W, 3)
    Pp = torch.nn.functional.pad(P.permute(2, 0, 1)[None], (step,) * 4, mode="replicate")[0]
    Pp = Pp.permute(1, 2, 0)
    H, W = depth.shape
    s = step
    dx = Pp[s : s + H, 2 * s :] - Pp[s : s + H, :W]
    dy = Pp[2 * s :, s : s + W] - Pp[:H, s : s + W]
    n = torch.linalg.cross(dx, dy, dim=-1)
    norm = n.norm(dim=-1, keepdim=True)
    ok = (norm[..., 0] > 1e-12) & (depth > 0)
    n = torch.where(ok[..., None], n / norm.clamp(min=1e-12), torch.tensor([0.0, 0.0, -1.0]))
    return n


def landing_error_px(
    xyz_tgt: torch.Tensor,
    n_tgt: torch.Tensor,
    src_centre_tgt: torch.Tensor,
    f_t: float,
    rel_error: float = DEPTH_REL_ERROR,
) -> torch.Tensor:
    """Expected target-image displacement (..., ) in pixels of points ``xyz_tgt`` (..., 3)
    (target camera frame) routed from a source camera whose centre is ``src_centre_tgt`` (3,)
    in that frame, with surface normals ``n_tgt`` (..., 3), for a relative source-depth error
    ``rel_error``: ``f_t * rel_error * r_s / max(cos theta_s, MIN_COS) * sin(alpha) / z_t``.
    """
    to_src = xyz_tgt - src_centre_tgt
    r_s = to_src.norm(dim=-1).clamp(min=1e-6)
    r_t = xyz_tgt.norm(dim=-1).clamp(min=1e-6)
    ray_s, ray_t = to_src / r_s[..., None], xyz_tgt / r_t[..., None]
    sin_a = torch.linalg.cross(ray_s, ray_t, dim=-1).norm(dim=-1)
    cos_s = (n_tgt * ray_s).sum(-1).abs().clamp(min=MIN_COS)
    z_t = xyz_tgt[..., 2].clamp(min=1e-6)
    # A range error along the source ray: rel_error of the range (z-depth error / cos of the
    # off-axis angle is the same fraction of the range).
    return f_t * rel_error * r_s / cos_s * sin_a / z_t


@njit(cache=True, nogil=True)
def _normal(src_depth, k_s, step, vi, ui):
    """Unnormalised camera-frame normal of source pixel (vi, ui), as :func:`depth_normals` takes
    it (central differences ``step`` pixels apart, clamped at the border); (0, 0, -1) where
    there is no depth or no surface."""
    Hs, Ws = src_depth.shape
    ifx, ify, cx, cy = 1.0 / k_s[0], 1.0 / k_s[1], k_s[2], k_s[3]
    xa, xb = min(ui + step, Ws - 1), max(ui - step, 0)
    ya, yb = min(vi + step, Hs - 1), max(vi - step, 0)
    za, zb = src_depth[vi, xa], src_depth[vi, xb]
    dx0 = (xa - cx) * ifx * za - (xb - cx) * ifx * zb
    dx1 = (vi - cy) * ify * (za - zb)
    dx2 = za - zb
    za, zb = src_depth[ya, ui], src_depth[yb, ui]
    dy0 = (ui - cx) * ifx * (za - zb)
    dy1 = (ya - cy) * ify * za - (yb - cy) * ify * zb
    dy2 = za - zb
    m0, m1, m2 = dx1 * dy2 - dx2 * dy1, dx2 * dy0 - dx0 * dy2, dx0 * dy1 - dx1 * dy0
    if src_depth[vi, ui] <= 0 or m0 * m0 + m1 * m1 + m2 * m2 <= 1e-24:
        return 0.0, 0.0, -1.0
    return m0, m1, m2


@njit(cache=True, nogil=True)
def reliability_kernel(depth, valid, uv, src_depth, k_s, step, R, C, k_t, prm, out):
    """Compiled :func:`claim_reliability` over the valid pixels of a warp, in place on ``out``
    (H, W) float32. ``depth``, ``valid`` (H, W), ``uv`` (H, W, 2): the warp; ``src_depth``
    (Hs, Ws) float32 and ``k_s`` (fx, fy, cx, cy) of the source, whose normal at the sampled
    pixel is taken here (:func:`_normal`: no whole-frame normal map per warp); ``R`` (3, 3),
    ``C`` (3,) source -> target rotation and source centre in the target frame; ``k_t`` (fx, fy,
    cx, cy); ``prm`` (f_t, rel_error, scale_px, min_cos, exact_px).

    The same error as the torch form, rewritten without its divisions: ``r_s sin(alpha) =
    |C x P| / r_t``, so ``err = f_t rel |C x P| / (r_t cos_s z)``. Without the normal
    (``cos_s >= min_cos``) that bounds the error; pixels whose bound stays under ``exact_px``
    are exact (1) and skip the rest: most of a frame on a walk."""
    H, W = depth.shape
    Hs, Ws = src_depth.shape
    ifx, ify, cx, cy = 1.0 / k_t[0], 1.0 / k_t[1], k_t[2], k_t[3]
    f_t, rel, scale, min_cos, exact = prm[0], prm[1], prm[2], prm[3], prm[4]
    fr = f_t * rel
    bound = 0.98 * (exact * min_cos / fr) ** 2  # squared, with a margin for rounding
    c0, c1, c2 = C[0], C[1], C[2]
    for y in range(H):
        for x in range(W):
            if not valid[y, x]:
                continue
            pz = depth[y, x]
            px, py = (x - cx) * ifx * pz, (y - cy) * ify * pz
            q0, q1, q2 = c1 * pz - c2 * py, c2 * px - c0 * pz, c0 * py - c1 * px
            cp2 = q0 * q0 + q1 * q1 + q2 * q2
            rt2 = px * px + py * py + pz * pz
            if cp2 <= bound * rt2 * pz * pz:
                continue
            ui = min(max(int(np.rint(uv[y, x, 0])), 0), Ws - 1)
            vi = min(max(int(np.rint(uv[y, x, 1])), 0), Hs - 1)
            m0, m1, m2 = _normal(src_depth, k_s, step, vi, ui)
            nx = R[0, 0] * m0 + R[0, 1] * m1 + R[0, 2] * m2
            ny = R[1, 0] * m0 + R[1, 1] * m1 + R[1, 2] * m2
            nz = R[2, 0] * m0 + R[2, 1] * m1 + R[2, 2] * m2
            sx, sy, sz = px - c0, py - c1, pz - c2
            ns = np.sqrt((nx * nx + ny * ny + nz * nz) * (sx * sx + sy * sy + sz * sz))
            cos_s = max(abs(nx * sx + ny * sy + nz * sz) / max(ns, 1e-30), min_cos)
            err = fr * np.sqrt(cp2 / rt2) / (cos_s * max(pz, 1e-6))
            if err > exact:  # else exp(-0) = 1, already there
                out[y, x] = np.exp(-(err - exact) / scale)


def claim_reliability(
    w: Any,
    src_depth: torch.Tensor,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_tgt: np.ndarray,
    c2w_tgt: np.ndarray,
    normals: torch.Tensor | None = None,
    rel_error: float = DEPTH_REL_ERROR,
    scale_px: float = RELIABLE_PX,
    reference: bool = False,
) -> torch.Tensor:
    """(H, W) float32 in (0, 1]: ``exp(-max(landing_error_px - EXACT_PX, 0) / scale_px)`` for
    each valid pixel of warp ``w`` (a ``WarpResult`` of a source frame with z-depth ``src_depth``
    (Hs, Ws) into the target (H, W)); 1 where ``w`` is invalid. ``normals`` (Hs, Ws, 3): the source
    frame's :func:`depth_normals` when already computed (the torch form only: the compiled pass
    takes the normal at each sampled pixel itself). ``reference``: the torch form (whole-array
    operations, the obvious twin of :func:`reliability_kernel`)."""
    H, W = w.depth.shape
    out = torch.ones(H, W)
    if not w.valid.numpy().any():
        return out
    T = torch.from_numpy(relative_pose(c2w_src, c2w_tgt).astype(np.float32))  # source -> target
    R, C_s = T[:3, :3], T[:3, 3]
    f_t = math.sqrt(float(K_tgt[0, 0] * K_tgt[1, 1]))
    Hs, Ws = src_depth.shape
    if not reference:
        k_t = np.array([K_tgt[0, 0], K_tgt[1, 1], K_tgt[0, 2], K_tgt[1, 2]], np.float32)
        k_s = np.array([K_src[0, 0], K_src[1, 1], K_src[0, 2], K_src[1, 2]], np.float32)
        prm = np.array([f_t, rel_error, scale_px, MIN_COS, EXACT_PX], np.float32)
        arrs = [a.contiguous().numpy() for a in (w.depth, w.valid, w.src_uv, src_depth.float())]
        reliability_kernel(*arrs, k_s, NORMAL_STEP, R.numpy(), C_s.numpy(), k_t, prm, out.numpy())
        return out
    if normals is None:
        normals = depth_normals(src_depth, K_src)
    m = w.valid
    ui = w.src_uv[..., 0][m].round().long().clamp(0, Ws - 1)
    vi = w.src_uv[..., 1][m].round().long().clamp(0, Hs - 1)
    n_tgt = normals[vi, ui] @ R.T
    # the valid pixels' target-frame points (only those: a warp is often mostly empty)
    yy, xx = torch.nonzero(m, as_tuple=True)
    z = w.depth[m]
    fx, fy, cx, cy = (
        float(K_tgt[0, 0]),
        float(K_tgt[1, 1]),
        float(K_tgt[0, 2]),
        float(K_tgt[1, 2]),
    )
    xyz = torch.stack([(xx.float() - cx) / fx * z, (yy.float() - cy) / fy * z, z], -1)
    err = landing_error_px(xyz, n_tgt, C_s, f_t, rel_error)
    out[m] = torch.exp(-(err - EXACT_PX).clamp(min=0) / scale_px)
    return out
