"""Differentiable CPU Gaussian-splat renderer (tiles, front-to-back) and its slow twin (refinement: models.lift.splat_refine).

gsplat's ``rasterization`` only runs on CUDA, and its pure-PyTorch path builds tile lists with a
Python loop (seconds per frame). This renderer keeps gsplat's *image formation* exactly (EWA
projection with the 0.3 px² dilation, alpha = min(0.99, o·exp(-σ)), skip alpha < 1/255, stop when
transmittance would drop to 1e-4) but organises the work for a CPU:

1. **Project** every Gaussian (N) with batched 3x3 algebra.
2. **Bin** (no Python loop): each Gaussian's *opacity-aware* pixel box (the exact axis-aligned
   extent of ``o·exp(-σ) >= 1/255``, so culling never drops a pair that could contribute) is
   expanded into (tile, gaussian) pairs, generated in global depth order and stably sorted by tile.
3. **Composite** chunks of tiles with dense tensors: for a tile with L Gaussians the exponent
   ``log o - σ`` of all 256 pixels x L Gaussians is ONE matrix product, because σ is a quadratic
   polynomial in the pixel position: features ``[x², xy, y², x, y, 1]`` (tile-centred, so float32
   keeps its precision) times 6 per-Gaussian coefficients. Transmittance is a cumulative product;
   early termination is the mask ``T_after > 1e-4`` (T only decreases, so the mask is a prefix).
   Tiles are sorted by list length before chunking so padding stays small.

Pixel centres follow the project's OpenCV convention: pixel (x, y) is centred at (x, y). gsplat
centres pixels at (x + 0.5, y + 0.5), so ``splat_refine.refine`` shifts K by half a pixel when it hands a
camera to gsplat.

``render_reference`` is the slow, obvious twin (numpy float64, a Python loop per pixel over the
depth-sorted Gaussians) that tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.lift.splats import SH_C0, Gaussians, sh_basis

__all__ = [
    "Projected",
    "project_gaussians",
    "rasterize",
    "render",
    "render_gaussians",
    "render_reference",
]

TILE = 8  # small tiles: a tile's list holds fewer splats that miss most of its pixels
BLOCK = 32  # Gaussians per depth block (tiles drop out once all their pixels have stopped)
CHUNK_ELEMS = 1 << 18  # pixels x Gaussians per dense block: ~1 MB, stays in cache
ALPHA_MIN = 1.0 / 255.0  # gsplat skips fainter contributions
ALPHA_MAX = 0.99  # gsplat clamps so one splat never makes a pixel fully opaque
T_MIN = 1e-4  # gsplat stops a pixel when transmittance would fall to this
EPS2D = 0.3  # gsplat's screen-space dilation (px²): every splat covers at least ~a pixel
NEAR = 0.01
# Blending weights below this are left out of ``contributions`` (a third of them, about 0.2/255
# of a pixel's value on the street walk; a colour solve does not need them).
CONTRIB_MIN = 1e-3


@dataclass
class Projected:
    """Screen-space Gaussians for one camera (all tensors, N rows).

    means2d (N, 2) px, cov2d (N, 2, 2) dilated px², conics (N, 3) = inverse cov (a, b, c) with
    σ = ½(a·dx² + c·dy²) + b·dx·dy, depths (N,) camera z, valid (N,) in front of the near plane.
    """

    means2d: torch.Tensor
    cov2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    valid: torch.Tensor


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) from quaternions (N, 4) w,x,y,z (normalised here)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, -1).reshape(q.shape[:-1] + (3, 3))


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    log_scales: torch.Tensor,
    w2c: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = EPS2D,
    near: float = NEAR,
) -> Projected:
    """EWA projection of 3D Gaussians (N) into a pinhole camera, as gsplat's ``_persp_proj``.

    means (N, 3) world, quats (N, 4) wxyz, log_scales (N, 3), w2c (4, 4), K (3, 3).
    """
    R, t = w2c[:3, :3], w2c[:3, 3]
    # Σ_cam = (R·Rq·S)(R·Rq·S)ᵀ: keep the factor M and never form the 3x3 world covariance.
    M = (R @ quat_to_rotmat(quats)) * log_scales.exp()[:, None, :]  # (N, 3, 3)
    xyz_cam = means @ R.T + t
    tx, ty, tz = xyz_cam.unbind(-1)
    valid = tz > near
    tz = tz.clamp_min(near)  # invalid ones are culled; keep their math finite
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # gsplat clamps the Jacobian's x/z, y/z to 1.3x the frustum so off-screen splats stay sane.
    lim_xp = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_xn = cx / fx + 0.3 * (0.5 * width / fx)
    lim_yp = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_yn = cy / fy + 0.3 * (0.5 * height / fy)
    u = (tx / tz).clamp(-lim_xn, lim_xp)
    v = (ty / tz).clamp(-lim_yn, lim_yp)
    zero = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zero, -fx * u / tz, zero, fy / tz, -fy * v / tz], -1)
    J = J.reshape(-1, 2, 3)
    JM = J @ M  # (N, 2, 3)
    cov2d = JM @ JM.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype)
    a, b, c = cov2d[:, 0, 0], 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], -1)
    return Projected(means2d, cov2d, conics, xyz_cam[:, 2], valid)


def _bin_pairs(
    p: Projected, opacities: torch.Tensor, width: int, height: int, tile: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tile, gaussian) pairs sorted by tile then depth.

    Returns pair_gauss (P,) Gaussian ids, tile_start (T,), tile_count (T,) with T = tiles_x*tiles_y.
    """
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    with torch.no_grad():
        # Exact extent of o·exp(-σ) >= 1/255: σ <= ln(255·o), an ellipse whose AABB half-widths
        # are sqrt(2·ln(255·o)·cov_xx) and sqrt(2·ln(255·o)·cov_yy).
        thr = torch.log(opacities.detach().double() / ALPHA_MIN)
        vis = p.valid & (thr > 0)
        ids = torch.nonzero(vis).squeeze(1)
        ids = ids[torch.argsort(p.depths.detach()[ids], stable=True)]
        mean = p.means2d.detach()[ids].double()
        cov = p.cov2d.detach()[ids].double()
        t = thr[ids].clamp_min(0)
        rx = torch.sqrt(2 * t * cov[:, 0, 0]) + 1e-3
        ry = torch.sqrt(2 * t * cov[:, 1, 1]) + 1e-3
        x0 = torch.ceil(mean[:, 0] - rx).clamp(0, width - 1)
        x1 = torch.floor(mean[:, 0] + rx).clamp(-1, width - 1)
        y0 = torch.ceil(mean[:, 1] - ry).clamp(0, height - 1)
        y1 = torch.floor(mean[:, 1] + ry).clamp(-1, height - 1)
        keep = (x1 >= x0) & (y1 >= y0) & (mean[:, 0] - rx < width) & (mean[:, 1] - ry < height)
        ids, x0, x1, y0, y1 = ids[keep], x0[keep], x1[keep], y0[keep], y1[keep]
        tx0, tx1 = (x0 // tile).long(), (x1 // tile).long()
        ty0, ty1 = (y0 // tile).long(), (y1 // tile).long()
        nx = tx1 - tx0 + 1
        count = nx * (ty1 - ty0 + 1)
        owner = torch.repeat_interleave(torch.arange(len(ids)), count)
        first = torch.cumsum(count, 0) - count
        local = torch.arange(int(count.sum())) - first[owner]
        tile_id = (ty0[owner] + local // nx[owner]) * tiles_x + tx0[owner] + local % nx[owner]
        # Pairs were generated in depth order; a stable sort by tile keeps it within each tile.
        tile_id, order = torch.sort(tile_id, stable=True)
        pair_gauss = ids[owner[order]]
        tile_count = torch.bincount(tile_id, minlength=tiles_x * tiles_y)
        tile_start = torch.cumsum(tile_count, 0) - tile_count
    return pair_gauss, tile_start, tile_count


def _pixel_features(tile: int, dtype: torch.dtype) -> torch.Tensor:
    """(tile², 6) polynomial features [x², xy, y², x, y, 1] of tile-centred pixel positions."""
    c = torch.arange(tile, dtype=torch.float64) - (tile - 1) / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], -1).to(dtype)


def _composite_block(
    expo: torch.Tensor, feats: torch.Tensor, trans_in: torch.Tensor, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite one depth block: expo (k, P, B) = log o - σ, feats (k, B, F), trans_in (k, P).

    trans_in is 0 for pixels that already stopped. Returns accumulated features (k, P, F), weight
    sums (k, P), the transmittance after the block (k, P), 0 where the pixel stopped in it, and
    the blending weights (k, P, B) themselves.
    """
    if inplace:  # no autograd: reuse buffers, fewer passes over memory
        alpha = expo.exp_().clamp_max_(ALPHA_MAX)
        alpha.masked_fill_(alpha < ALPHA_MIN, 0.0)
        trans = torch.cumprod(1 - alpha, -1).mul_(trans_in[..., None])
        before = torch.cat([trans_in[..., None], trans[..., :-1]], -1)
        weights = alpha.mul_(before).mul_(trans > T_MIN)
    else:
        zero = torch.zeros((), dtype=expo.dtype)
        alpha = torch.where(expo >= math.log(ALPHA_MIN), expo.exp().clamp_max(ALPHA_MAX), zero)
        trans = torch.cumprod(1 - alpha, -1) * trans_in[..., None]
        before = torch.cat([trans_in[..., None], trans[..., :-1]], -1)
        # T only decreases, so "trans > T_MIN" is a prefix: gsplat's early termination.
        weights = alpha * before * (trans > T_MIN)
    last = trans[..., -1]
    trans_out = torch.where(last > T_MIN, last, torch.zeros((), dtype=last.dtype))
    return torch.matmul(weights, feats), weights.sum(-1), trans_out, weights


def rasterize(
    p: Projected,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor | None = None,
    tile: int = TILE,
    block: int = BLOCK,
    chunk_elems: int = CHUNK_ELEMS,
    contributions: bool = False,
) -> dict[str, torch.Tensor]:
    """Front-to-back alpha compositing of projected Gaussians, vectorised over groups of tiles.

    opacities (N,) in (0, 1), colors (N, C). Each tile's depth-sorted list is consumed in blocks
    of ``block`` Gaussians; a tile leaves the loop once all its pixels have stopped. Returns rgb
    (H, W, C), alpha (H, W), depth (H, W) (expected z of what was drawn, 0 where nothing was).
    Differentiable in means2d, conics, depths, opacities and colors. With ``contributions`` it
    also returns every blending weight above ``CONTRIB_MIN`` as ``"pixel"`` (M,) flat index y·W + x,
    ``"gaussian"`` (M,) and ``"weight"`` (M,): the image is linear in the colours,
    rgb[pixel] = Σ weight · colors[gaussian] (+ background), which a colour solve needs.
    """
    dtype = colors.dtype
    channels = colors.shape[1]
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    pair_gauss, tile_start, tile_count = _bin_pairs(p, opacities, width, height, tile)
    feats = torch.cat([colors, p.depths[:, None].to(dtype)], 1)  # (N, C+1)
    log_o = torch.log(opacities.clamp_min(1e-12)).to(dtype)
    means2d, conics = p.means2d.to(dtype), p.conics.to(dtype)
    pix = _pixel_features(tile, dtype)  # (P, 6), P = tile²
    ppt = tile * tile
    pad_coef = torch.tensor([0, 0, 0, 0, 0, -1e4], dtype=dtype)[:, None]  # padded: alpha = 0
    inplace = not (torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, feats, log_o)
    ))  # fmt: skip
    last_pair = max(len(pair_gauss) - 1, 0)

    busy = torch.nonzero(tile_count).squeeze(1)
    # Similar list lengths in one group keep the padding of the last block small.
    busy = busy[torch.argsort(tile_count[busy], descending=True, stable=True)]
    group = max(1, chunk_elems // (ppt * block))
    out_tiles, out_vals, contrib = [], [], []
    for g0 in range(0, len(busy), group):
        tiles = busy[g0 : g0 + group]
        count, start = tile_count[tiles], tile_start[tiles]
        trans = torch.ones(len(tiles), ppt, dtype=dtype)
        acc = torch.zeros(len(tiles), ppt, channels + 2, dtype=dtype)
        centre_x = (tiles % tiles_x).to(dtype) * tile + (tile - 1) / 2
        centre_y = (tiles // tiles_x).to(dtype) * tile + (tile - 1) / 2
        for s0 in range(0, int(count[0]), block):
            act = (count > s0) & (trans.amax(1) > 0)
            n_act = int(act.sum())
            if n_act == 0:
                break
            sel = None if n_act == len(tiles) else torch.nonzero(act).squeeze(1)

            def pick(x: torch.Tensor, sel: torch.Tensor | None = sel) -> torch.Tensor:
                return x if sel is None else x[sel]

            ar = s0 + torch.arange(block)
            real = ar[None, :] < pick(count)[:, None]  # (k, B)
            gid = pair_gauss[(pick(start)[:, None] + ar[None, :]).clamp_max(last_pair)]
            mx = means2d[gid, 0] - pick(centre_x)[:, None]
            my = means2d[gid, 1] - pick(centre_y)[:, None]
            a, b, c = conics[gid].unbind(-1)
            # log o - σ(x, y) as a polynomial in the pixel's tile-centred position (x, y).
            coefs = torch.stack(
                [
                    -0.5 * a,
                    -b,
                    -0.5 * c,
                    a * mx + b * my,
                    b * mx + c * my,
                    log_o[gid] - (0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my),
                ],
                1,
            )  # (k, 6, B)
            coefs = torch.where(real[:, None, :], coefs, pad_coef)
            expo = torch.matmul(pix, coefs)  # (k, P, B)
            fsum, wsum, t_out, weights = _composite_block(expo, feats[gid], pick(trans), inplace)
            if contributions:
                k, pp, bb = torch.nonzero(weights > CONTRIB_MIN, as_tuple=True)
                contrib.append((pick(tiles)[k], pp, gid[k, bb], weights[k, pp, bb].detach()))
            step = torch.cat([fsum, wsum[..., None]], -1)
            if sel is None:
                trans, acc = t_out, acc + step
            else:
                trans = trans.index_copy(0, sel, t_out)
                acc = acc.index_add(0, sel, step)
        out_tiles.append(tiles)
        out_vals.append(acc)

    n_tiles = tiles_x * tiles_y
    buf = torch.zeros(n_tiles, ppt, channels + 2, dtype=dtype)
    if out_tiles:
        buf = buf.index_copy(0, torch.cat(out_tiles), torch.cat(out_vals))
    img = buf.reshape(tiles_y, tiles_x, tile, tile, channels + 2).permute(0, 2, 1, 3, 4)
    img = img.reshape(tiles_y * tile, tiles_x * tile, channels + 2)[:height, :width]
    rgb, zsum, alpha = img[..., :channels], img[..., channels], img[..., channels + 1]
    if background is not None:
        rgb = rgb + (1 - alpha)[..., None] * background.to(dtype)
    depth = torch.where(alpha > 1e-6, zsum / alpha.clamp_min(1e-6), torch.zeros((), dtype=dtype))
    out = {"rgb": rgb, "alpha": alpha, "depth": depth}
    if contributions:
        out.update(_flat_contributions(contrib, tiles_x, tile, width, height))
    return out


def _flat_contributions(
    parts: list[tuple[torch.Tensor, ...]], tiles_x: int, tile: int, width: int, height: int
) -> dict[str, torch.Tensor]:
    """(tile, pixel-in-tile, gaussian, weight) blocks -> flat pixel index y·W + x, gaussian,
    weight (M,) each, pixels of partial edge tiles that fall outside the image dropped."""
    if not parts:
        empty = torch.zeros(0, dtype=torch.int64)
        return {"pixel": empty, "gaussian": empty, "weight": torch.zeros(0)}
    t, p, g, w = (torch.cat(x) for x in zip(*parts, strict=True))
    x = (t % tiles_x) * tile + p % tile
    y = (t // tiles_x) * tile + p // tile
    ok = (x < width) & (y < height)
    return {"pixel": (y * width + x)[ok], "gaussian": g[ok], "weight": w[ok]}


def _as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def render(
    means: Any,
    quats: Any,
    log_scales: Any,
    opacity_logits: Any,
    sh0: Any,
    c2w: Any,
    K: Any,
    width: int,
    height: int,
    background: Any = None,
    tile: int = TILE,
    sh_rest: Any = None,
    contributions: bool = False,
) -> dict[str, torch.Tensor]:
    """Render Gaussians (torch tensors or arrays; float32 unless given otherwise) at one camera.

    means (N, 3), quats (N, 4) wxyz, log_scales (N, 3), opacity_logits (N,), sh0 (N, 3) DC
    coefficients, sh_rest (N, K, 3) higher-order coefficients or None, c2w (4, 4) OpenCV,
    K (3, 3). Colour = max(sh0·C0 + Σ basis(view dir)·sh_rest + 0.5, 0) as gsplat does (view
    direction: camera centre to Gaussian, world frame). Returns {"rgb" (H, W, 3), "alpha" (H, W),
    "depth" (H, W)} tensors, float [0, 1]-ish (plus ``rasterize``'s ``contributions``).
    """
    means = _as_tensor(means)
    dtype = means.dtype
    c2w_t = _as_tensor(c2w, torch.float64)
    w2c = torch.linalg.inv(c2w_t.double()).to(dtype)
    K_t = _as_tensor(K, dtype).to(dtype)
    p = project_gaussians(
        means, _as_tensor(quats, dtype), _as_tensor(log_scales, dtype), w2c, K_t, width, height
    )
    colors = _as_tensor(sh0, dtype) * SH_C0 + 0.5
    if sh_rest is not None and _as_tensor(sh_rest, dtype).shape[1] > 0:
        rest = _as_tensor(sh_rest, dtype)
        dirs = means - c2w_t[:3, 3].to(dtype)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis = torch.stack(sh_basis(dirs, rest.shape[1]), -1)  # (N, K)
        colors = colors + (basis[:, :, None] * rest).sum(1)
    colors = colors.clamp_min(0)
    opac = torch.sigmoid(_as_tensor(opacity_logits, dtype))
    bg = None if background is None else _as_tensor(background, dtype)
    return rasterize(p, opac, colors, width, height, bg, tile, contributions=contributions)


def render_gaussians(
    g: Gaussians, c2w: np.ndarray, K: np.ndarray, width: int, height: int
) -> dict[str, np.ndarray]:
    """numpy convenience: rgb uint8 (H, W, 3), alpha float32 (H, W), depth float32 (H, W)."""
    with torch.no_grad():
        out = render(
            g.means, g.quats, g.log_scales, g.opacity_logits, g.sh0, c2w, K, width, height,
            sh_rest=g.sh_rest,
        )  # fmt: skip
    rgb = (out["rgb"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return {"rgb": rgb, "alpha": out["alpha"].numpy(), "depth": out["depth"].numpy()}


# ---------------------------------------------------------------------------------------------
# The slow, obvious twin


def render_reference(
    means: np.ndarray,
    quats: np.ndarray,
    log_scales: np.ndarray,
    opacity_logits: np.ndarray,
    sh0: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
) -> dict[str, np.ndarray]:
    """Per-pixel loop over depth-sorted Gaussians in float64 (tiny images only).

    Same inputs and outputs as ``render`` (numpy). No tiles, no culling beyond the near plane:
    every pixel visits every Gaussian front to back.
    """
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    R, t = w2c[:3, :3], w2c[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    splats = []
    for i in range(len(means)):
        w, x, y, z = np.asarray(quats[i], np.float64) / np.linalg.norm(quats[i])
        Rq = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        S = np.diag(np.exp(np.asarray(log_scales[i], np.float64)))
        cov_cam = R @ (Rq @ S @ S @ Rq.T) @ R.T
        px, py, pz = R @ np.asarray(means[i], np.float64) + t
        if pz <= NEAR:
            continue
        u = np.clip(px / pz, -(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
        v = np.clip(
            py / pz, -(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy
        )
        J = np.array([[fx / pz, 0, -fx * u / pz], [0, fy / pz, -fy * v / pz]])
        cov2d = J @ cov_cam @ J.T + EPS2D * np.eye(2)
        conic = np.linalg.inv(cov2d)
        o = 1 / (1 + np.exp(-float(opacity_logits[i])))
        rgb = np.maximum(np.asarray(sh0[i], np.float64) * SH_C0 + 0.5, 0)
        splats.append((pz, i, np.array([fx * px / pz + cx, fy * py / pz + cy]), conic, o, rgb))
    splats.sort(key=lambda s: (s[0], s[1]))  # front to back; ties keep input order
    out_rgb = np.zeros((height, width, 3))
    out_alpha = np.zeros((height, width))
    out_depth = np.zeros((height, width))
    for yy in range(height):
        for xx in range(width):
            T, color, zsum = 1.0, np.zeros(3), 0.0
            for z, _, mean, conic, o, rgb in splats:
                d = np.array([xx, yy]) - mean
                sigma = 0.5 * d @ conic @ d
                alpha = min(ALPHA_MAX, o * math.exp(-sigma))
                if alpha < ALPHA_MIN:
                    continue
                if T * (1 - alpha) <= T_MIN:
                    break
                color += T * alpha * rgb
                zsum += T * alpha * z
                T *= 1 - alpha
            out_rgb[yy, xx], out_alpha[yy, xx] = color, 1 - T
            out_depth[yy, xx] = zsum / (1 - T) if 1 - T > 1e-6 else 0.0
    return {"rgb": out_rgb, "alpha": out_alpha, "depth": out_depth}
