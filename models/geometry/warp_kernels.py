"""The forward warp's compiled fast path (numba): project, footprints, splat, crack closing and
backward sampling of one source frame in a few passes over the pixels.

:func:`models.geometry.warp.forward_warp_torch` (torch, a few dozen whole-image operations) is
the reference: every formula here is the same one, in float32 and in the same order, so the two
agree bit for bit on depth, routed pixels and source coordinates, and within float rounding on
colour and stretch (tests compare them). The torch version allocates a dozen full-size
temporaries per step and re-reads them; here each source pixel is visited once for the splat and
each target pixel once for the backward sample (about 2.8x less CPU per warp on a street walk).

Arrays (C-contiguous or strided views of a crop): ``depth`` (Hs, Ws) float32 source z-depth
(0 = unknown); ``rgb`` (Hs, Ws, 3) uint8 or float32 [0, 1]; ``edges``, ``flying`` (Hs, Ws) bool
depth edges and mixed pixels; ``inv_range`` (Hs, Ws) float32 (:func:`moved`). ``m`` (3, 3) and
``t`` (3,) float32: the ray map ``T[:3, :3] K^-1`` and translation of
:func:`models.geometry.zbuffer.project_frame`; ``k`` (4,) float32 ``fx, fy, cx, cy`` of the
camera projected into. Serial loops: the min-reduce of the splat is order-independent and every
other output is per pixel, so the result is deterministic.

The entry points release the GIL (``nogil``): :func:`models.geometry.warp.forward_warps` runs
the warps of several memory frames in parallel threads, each the same as a lone call.

Compiled once per machine (``cache=True``); :func:`models.geometry.warp.warm_up` does it ahead of
time, in a background thread if asked, so the first frame of a session does not wait for the
compiler.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_f32 = np.float32


@njit(cache=True)
def _project_px(d, x, y, m, t, k):
    """Target (u, v, z) of pixel (x, y) at depth d (float32, as ``project_frame`` computes)."""
    xf, yf = _f32(x), _f32(y)
    X = d * ((m[0, 0] * xf + m[0, 2]) + m[0, 1] * yf) + t[0]
    Y = d * ((m[1, 0] * xf + m[1, 2]) + m[1, 1] * yf) + t[1]
    Z = d * ((m[2, 0] * xf + m[2, 2]) + m[2, 1] * yf) + t[2]
    inv_z = _f32(1.0) / max(Z, _f32(1e-8))
    return X * inv_z * k[0] + k[2], Y * inv_z * k[1] + k[3], Z


@njit(cache=True, nogil=True)
def land_box(depth, m, t, k, width, height, near):
    """(y0, y1, x0, x1) bounding rows/columns (end exclusive) of the source pixels that land in
    the target grown by 3-4 pixels; y1 = 0 when none does."""
    Hs, Ws = depth.shape
    y0, y1, x0, x1 = Hs, 0, Ws, 0
    lo, hu, hv = _f32(-4.0), _f32(width + 3), _f32(height + 3)
    for y in range(Hs):
        for x in range(Ws):
            d = depth[y, x]
            if not d > 0:
                continue
            u, v, z = _project_px(d, x, y, m, t, k)
            if z > near and u > lo and u < hu and v > lo and v < hv:
                y0, y1 = min(y0, y), max(y1, y + 1)
                x0, x1 = min(x0, x), max(x1, x + 1)
    return y0, y1, x0, x1


@njit(cache=True)
def _pair_norms(u, v, depth, front, same, dy, dx):
    """(Hs, Ws) squared image step from pixel i to its next neighbour along (dy, dx) when the
    two are usable and on one surface (``zbuffer._axis_derivative``), else inf."""
    Hs, Ws = depth.shape
    out = np.full((Hs, Ws), np.inf, np.float32)
    for y in range(Hs - dy):
        for x in range(Ws - dx):
            za, zb = depth[y + dy, x + dx], depth[y, x]
            if front[y + dy, x + dx] and front[y, x] and abs(za - zb) <= same * min(za, zb):
                du, dv = u[y + dy, x + dx] - u[y, x], v[y + dy, x + dx] - v[y, x]
                out[y, x] = du * du + dv * dv
    return out


@njit(cache=True, nogil=True)
def splat(depth, m, t, k, flying, inv_range, width, height, prm):
    """Footprints and tangent-plane z-buffer splat (``zbuffer.splat_frame``).

    ``prm`` float32: (near, same_surface, f_t / f_s, max_radius, margin, baseline * f_t,
    parallax px): flying pixels are left out where parallax could have moved them. Returns the z-buffer
    (height, width) float32 (inf = empty) and the stretch (Hs, Ws) float32 of every source pixel.
    """
    near, same, f_ratio, margin = prm[0], prm[1], prm[2], prm[4]
    R = int(prm[3])
    Hs, Ws = depth.shape
    u = np.empty((Hs, Ws), np.float32)
    v = np.empty((Hs, Ws), np.float32)
    z = np.empty((Hs, Ws), np.float32)
    front = np.empty((Hs, Ws), np.bool_)
    for y in range(Hs):
        for x in range(Ws):
            d = depth[y, x]
            u[y, x], v[y, x], z[y, x] = _project_px(d, x, y, m, t, k)
            front[y, x] = d > 0 and z[y, x] > near
    nx = _pair_norms(u, v, depth, front, same, 0, 1)
    ny = _pair_norms(u, v, depth, front, same, 1, 0)
    zbuf = np.full((height, width), np.inf, np.float32)
    stretch = np.empty((Hs, Ws), np.float32)
    inf = np.float32(np.inf)
    one, zero, half_ = _f32(1.0), _f32(0.0), _f32(0.5)
    two_r, reach = _f32(2 * R), _f32(R + 0.5)
    eps = _f32(1e-4)
    lo_u, lo_v, hi_u, hi_v = _f32(-1.0), _f32(-1.0), _f32(width), _f32(height)
    for y in range(Hs):
        for x in range(Ws):
            # J's columns from the same-surface neighbour with the smaller step (forward wins
            # a tie); none: the isotropic magnification.
            fwd = nx[y, x]
            bwd = nx[y, x - 1] if x > 0 else inf
            okx = min(fwd, bwd) < inf
            xa, xb = (x + 1, x) if fwd <= bwd else (x, x - 1)
            fwd = ny[y, x]
            bwd = ny[y - 1, x] if y > 0 else inf
            oky = min(fwd, bwd) < inf
            ya, yb = (y + 1, y) if fwd <= bwd else (y, y - 1)
            iso = f_ratio * depth[y, x] / max(z[y, x], near)
            if okx:
                a, b = u[y, xa] - u[y, xb], v[y, xa] - v[y, xb]
                zx = z[y, xa] - z[y, xb]
            else:
                a, b, zx = iso, zero, zero
            if oky:
                c, d = u[ya, x] - u[yb, x], v[ya, x] - v[yb, x]
                zy = z[ya, x] - z[yb, x]
            else:
                c, d, zy = zero, iso, zero
            fro = a * a + b * b + c * c + d * d
            det = a * d - b * c
            disc = max(fro * fro - _f32(4.0) * det * det, zero)
            stretch[y, x] = np.sqrt(half_ * (fro + np.sqrt(disc)))
            pu, pv, pz = u[y, x], v[y, x], z[y, x]
            if not (front[y, x] and pu > lo_u and pu < hi_u and pv > lo_v and pv < hi_v):
                continue
            if flying[y, x] and moved(inv_range, y, x, prm[5], prm[6]):
                continue
            inv = one / det if abs(det) > _f32(1e-6) else zero
            gu = (zx * d - zy * b) * inv
            gv = (zy * a - zx * c) * inv
            hx = min(max(abs(a) + abs(c), one), two_r) * half_ + margin
            hy = min(max(abs(b) + abs(d), one), two_r) * half_ + margin
            bu, bv = np.rint(pu), np.rint(pv)
            fx, fy = bu - pu, bv - pv
            bound = (abs(gu) + abs(gv)) * reach
            if bound > half_ * pz:
                shrink = half_ * pz / max(bound, _f32(1e-12))
                gu, gv = gu * shrink, gv * shrink
            z_lin = pz + gu * fx + gv * fy
            zc = pz if max(abs(fx), abs(fy)) <= _f32(1e-3) else z_lin
            ix, iy = int(bu), int(bv)
            if 0 <= iy < height and 0 <= ix < width and zc < zbuf[iy, ix]:
                zbuf[iy, ix] = zc
            # Offsets that reach along each axis: |f + o| <= h, the integers in [-h - f, h - f]
            # widened by ``eps`` (float rounding of f + o is below 1e-6 here; the exact test
            # decides). The bounds visit about half the offsets a spare step each side did.
            ox0 = max(-R, int(np.ceil(-hx - fx - eps)))
            ox1 = min(R, int(np.floor(hx - fx + eps)))
            oy0 = max(-R, int(np.ceil(-hy - fy - eps)))
            oy1 = min(R, int(np.floor(hy - fy + eps)))
            ox0, ox1 = max(ox0, -ix), min(ox1, width - 1 - ix)
            oy0, oy1 = max(oy0, -iy), min(oy1, height - 1 - iy)
            for oy in range(oy0, oy1 + 1):
                if oy != 0 and not abs(fy + _f32(oy)) <= hy:
                    continue
                row = z_lin + gv * _f32(oy) if oy != 0 else z_lin
                for ox in range(ox0, ox1 + 1):
                    if ox == 0:
                        if oy == 0:
                            continue
                        val = row
                    elif not abs(fx + _f32(ox)) <= hx:
                        continue
                    elif oy == 0:
                        val = z_lin + gu * _f32(ox)
                    else:
                        val = z_lin + gu * _f32(ox) + gv * _f32(oy)
                    if val < zbuf[iy + oy, ix + ox]:
                        zbuf[iy + oy, ix + ox] = val
    return zbuf, stretch


@njit(cache=True, nogil=True)
def close_cracks(zbuf, tol1):
    """``zbuffer.close_cracks``: each empty pixel between an opposite pair of neighbours on one
    surface (max <= min * ``tol1``) gets the pair's harmonic mean (the nearest such pair)."""
    H, W = zbuf.shape
    out = zbuf.copy()
    inf = np.float32(np.inf)
    for y in range(H):
        for x in range(W):
            if zbuf[y, x] != inf:
                continue
            best = inf
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                ya, xa, yb, xb = y - dy, x - dx, y + dy, x + dx
                if ya < 0 or ya >= H or xa < 0 or xa >= W or yb < 0 or yb >= H or xb < 0:
                    continue
                if xb >= W:
                    continue
                a, b = zbuf[ya, xa], zbuf[yb, xb]
                if a == inf or b == inf or not max(a, b) <= min(a, b) * tol1:
                    continue
                fill = _f32(2.0) * a * b / max(a + b, _f32(1e-12))
                if fill < best:
                    best = fill
            out[y, x] = best
    return out


@njit(cache=True)
def _channel(rgb, depth, edges, y, x, c, u8):
    """Channel ``c`` of the source as ``forward_warp_torch`` stacks it: r, g, b in [0, 1]
    (divided by 255 when ``u8``), depth, edge (0 or 1)."""
    if c < 3:
        val = _f32(rgb[y, x, c])
        return val / _f32(255.0) if u8 else val
    if c == 3:
        return depth[y, x]
    return _f32(1.0) if edges[y, x] else _f32(0.0)


@njit(cache=True)
def _bilinear(rgb, depth, edges, u8, c, x0, y0, nw, ne, sw, se):
    """Channel ``c`` (:func:`_channel`) over the corners (x0, y0)..(x0 + 1, y0 + 1) with their
    weights, zeros outside (``grid_sample`` with zeros padding, same sum order)."""
    Hs, Ws = depth.shape
    zero = _f32(0.0)
    x_in, x1_in = 0 <= x0 < Ws, 0 <= x0 + 1 < Ws
    y_in, y1_in = 0 <= y0 < Hs, 0 <= y0 + 1 < Hs
    v_nw = _channel(rgb, depth, edges, y0, x0, c, u8) if y_in and x_in else zero
    v_ne = _channel(rgb, depth, edges, y0, x0 + 1, c, u8) if y_in and x1_in else zero
    v_sw = _channel(rgb, depth, edges, y0 + 1, x0, c, u8) if y1_in and x_in else zero
    v_se = _channel(rgb, depth, edges, y0 + 1, x0 + 1, c, u8) if y1_in and x1_in else zero
    return v_nw * nw + v_ne * ne + v_sw * sw + v_se * se


@njit(cache=True)
def _bilinear_inside(rgb, depth, edges, u8, c, x0, y0, nw, ne, sw, se):
    """:func:`_bilinear` where all four corners are inside the frame: the same sum, in the
    same order, without the bound checks."""
    v_nw = _channel(rgb, depth, edges, y0, x0, c, u8)
    v_ne = _channel(rgb, depth, edges, y0, x0 + 1, c, u8)
    v_sw = _channel(rgb, depth, edges, y0 + 1, x0, c, u8)
    v_se = _channel(rgb, depth, edges, y0 + 1, x0 + 1, c, u8)
    return v_nw * nw + v_ne * ne + v_sw * sw + v_se * se


@njit(cache=True)
def moved(inv_range, y, x, bf, parallax):
    """Whether parallax could have moved a depth edge at (y, x): the spread of inverse depth
    there times baseline * focal exceeds ``parallax`` pixels."""
    return inv_range[y, x] * bf > parallax


@njit(cache=True, nogil=True)
def sample_back(zbuf, rgb, u8, depth, edges, flying, inv_range, stretch, m, t, k, prm, offset):
    """Backward sampling and depth check (the second half of ``warp.forward_warp_torch``).

    ``rgb`` (Hs, Ws, 3) uint8 or float32 [0, 1], ``depth``, ``edges``, ``flying``,
    ``inv_range`` (Hs, Ws) of the (cropped) source; ``zbuf`` (H, W) after crack closing;
    ``m``, ``t``, ``k``: target -> source projection; ``prm`` float32 (near, depth_tol, f_t,
    f_s, 2 / (Ws - 1), 2 / (Hs - 1), (Ws - 1) / 2, (Hs - 1) / 2, baseline * f_t, parallax
    px); ``u8``: whether ``rgb`` is uint8 (else float32); ``offset`` (x0, y0) of the source crop. Edge and flying pixels are not routed where
    parallax could have moved them (:func:`moved`).

    Returns rgb (H, W, 3), depth, valid, src_uv (H, W, 2), scale, stretch, edge.
    """
    H, W = zbuf.shape
    Hs, Ws = depth.shape
    near, tol, f_t, f_s = prm[0], prm[1], prm[2], prm[3]
    gx_s, gy_s, ux_s, uy_s, bf, par = prm[4], prm[5], prm[6], prm[7], prm[8], prm[9]
    one, zero = _f32(1.0), _f32(0.0)
    out_rgb = np.zeros((H, W, 3), np.float32)
    out_depth = np.zeros((H, W), np.float32)
    valid = np.zeros((H, W), np.bool_)
    uv = np.full((H, W, 2), _f32(-1.0), np.float32)
    scale = np.zeros((H, W), np.float32)
    st = np.zeros((H, W), np.float32)
    edge = np.zeros((H, W), np.bool_)
    x_off, y_off = _f32(offset[0]), _f32(offset[1])
    for y in range(H):
        for x in range(W):
            zt = zbuf[y, x]
            if zt == np.inf:
                continue
            us, vs, z_s = _project_px(zt, x, y, m, t, k)
            if not (us >= _f32(-0.5) and us <= _f32(Ws - 0.5) and vs >= _f32(-0.5)):
                continue
            if not (vs <= _f32(Hs - 0.5) and z_s > near):
                continue
            us = min(max(us, zero), _f32(Ws - 1))
            vs = min(max(vs, zero), _f32(Hs - 1))
            ni, nj = int(np.rint(vs)), int(np.rint(us))
            d_near = depth[ni, nj]
            if not d_near > 0:
                continue
            if (edges[ni, nj] or flying[ni, nj]) and moved(inv_range, ni, nj, bf, par):
                continue
            # grid_sample's own arithmetic: normalise, unnormalise, bilinear weights.
            ix = ((us * gx_s - one) + one) * ux_s
            iy = ((vs * gy_s - one) + one) * uy_s
            fx0, fy0 = np.floor(ix), np.floor(iy)
            w_, n_ = ix - fx0, iy - fy0
            e_, s_ = one - w_, one - n_
            nw, ne, sw, se = s_ * e_, s_ * w_, n_ * e_, n_ * w_
            x0, y0 = int(fx0), int(fy0)
            # All four corners inside the source (nearly every pixel): the same sums without
            # the bound checks (a quarter of the kernel's time).
            inner = x0 >= 0 and y0 >= 0 and x0 + 1 < Ws and y0 + 1 < Hs
            if inner:
                on_edge = _bilinear_inside(rgb, depth, edges, u8, 4, x0, y0, nw, ne, sw, se) > zero
            else:
                on_edge = _bilinear(rgb, depth, edges, u8, 4, x0, y0, nw, ne, sw, se) > zero
            if on_edge:
                d_src = d_near
            elif inner:
                d_src = _bilinear_inside(rgb, depth, edges, u8, 3, x0, y0, nw, ne, sw, se)
            else:
                d_src = _bilinear(rgb, depth, edges, u8, 3, x0, y0, nw, ne, sw, se)
            if not abs(d_src - z_s) <= tol * z_s:
                continue
            valid[y, x] = True
            for c in range(3):
                if on_edge:
                    out_rgb[y, x, c] = _channel(rgb, depth, edges, ni, nj, c, u8)
                elif inner:
                    out_rgb[y, x, c] = _bilinear_inside(
                        rgb, depth, edges, u8, c, x0, y0, nw, ne, sw, se
                    )
                else:
                    out_rgb[y, x, c] = _bilinear(rgb, depth, edges, u8, c, x0, y0, nw, ne, sw, se)
            out_depth[y, x] = zt
            uv[y, x, 0], uv[y, x, 1] = us + x_off, vs + y_off
            scale[y, x] = (f_t * z_s) / (f_s * zt)
            st[y, x] = stretch[ni, nj]
            edge[y, x] = edges[ni, nj]
    return out_rgb, out_depth, valid, uv, scale, st, edge


# -- A source frame's per-pixel quantities (computed once, when it joins memory) ----------------


@njit(cache=True)
def depth_edges(depth, rel_jump):
    """``warp.depth_edges``: (H, W) bool, the second difference of inverse depth along x or y
    above ``rel_jump`` (float32) times the inverse depth, or unknown depth. Borders are padded
    by linear extrapolation (corners replicated), as the torch twin pads them."""
    H, W = depth.shape
    inv = np.empty((H + 2, W + 2), np.float32)
    for y in range(H):
        for x in range(W):
            inv[y + 1, x + 1] = _f32(1.0) / max(depth[y, x], _f32(1e-6))
    two = _f32(2.0)
    for x in range(W + 2):  # replicate, then the sides (not the corners) extrapolated
        inv[0, x] = inv[1, min(max(x, 1), W)]
        inv[H + 1, x] = inv[H, min(max(x, 1), W)]
    for y in range(H + 2):
        inv[y, 0] = inv[min(max(y, 1), H), 1]
        inv[y, W + 1] = inv[min(max(y, 1), H), W]
    if min(H, W) >= 2:
        for x in range(1, W + 1):
            inv[0, x] = two * inv[1, x] - inv[2, x]
            inv[H + 1, x] = two * inv[H, x] - inv[H - 1, x]
        for y in range(1, H + 1):
            inv[y, 0] = two * inv[y, 1] - inv[y, 2]
            inv[y, W + 1] = two * inv[y, W] - inv[y, W - 1]
    out = np.empty((H, W), np.bool_)
    for y in range(H):
        for x in range(W):
            c = inv[y + 1, x + 1]
            d2x = abs(inv[y + 1, x] - two * c + inv[y + 1, x + 2])
            d2y = abs(inv[y, x + 1] - two * c + inv[y + 2, x + 1])
            out[y, x] = max(d2x, d2y) > rel_jump * c or depth[y, x] <= 0
    return out


@njit(cache=True)
def _dilate_x(mask, radius):
    """(H, W) bool: any of ``mask`` within ``radius`` along the row (clipped to the frame)."""
    H, W = mask.shape
    out = np.zeros((H, W), np.bool_)
    for y in range(H):
        for x in range(W):
            if mask[y, x]:
                for xx in range(max(x - radius, 0), min(x + radius + 1, W)):
                    out[y, xx] = True
    return out


@njit(cache=True)
def _window_any(mask, radius):
    """(H, W) bool: any of ``mask`` in each pixel's (2r+1)^2 window clipped to the frame
    (``zbuffer.box_max`` of the mask > 0): rows, then columns."""
    return _dilate_x(_dilate_x(mask, radius).T, radius).T


@njit(cache=True)
def flying_pixels(depth, edges, prm):
    """``warp.flying_pixels``; ``prm`` float32 (1 + tol, 1 - tol, 1 + jump)."""
    H, W = depth.shape
    up, down, jump = prm[0], prm[1], prm[2]
    near_edge = _window_any(edges, 1)
    out = np.zeros((H, W), np.bool_)
    for y in range(H):
        for x in range(W):
            mid = depth[y, x]
            if not (near_edge[y, x] and mid > 0):
                continue
            hit = False
            if 2 <= x < W - 2:
                a, b = depth[y, x - 2], depth[y, x + 2]
                lo, hi = min(a, b), max(a, b)
                hit = mid > lo * up and mid < hi * down and hi > lo * jump and lo > 0
            if not hit and 2 <= y < H - 2:
                a, b = depth[y - 2, x], depth[y + 2, x]
                lo, hi = min(a, b), max(a, b)
                hit = mid > lo * up and mid < hi * down and hi > lo * jump and lo > 0
            out[y, x] = hit
    return out


@njit(cache=True)
def inverse_depth_range(depth, radius):
    """``warp.inverse_depth_range``: (H, W) float32 max - min of the known inverse depths in
    each pixel's (2r+1)^2 window clipped to the frame, 0 where none is known."""
    H, W = depth.shape
    inf = np.float32(np.inf)
    hi_k = np.empty((H, W), np.float32)  # the inverse depth where known, else -inf / +inf
    lo_k = np.empty((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            d = depth[y, x]
            iv = _f32(1.0) / max(d, _f32(1e-6))
            hi_k[y, x], lo_k[y, x] = (iv, iv) if d > 0 else (-inf, inf)
    # Separable: along rows, then along columns (inner loops over x, contiguous).
    hi_r, lo_r = hi_k.copy(), lo_k.copy()
    for y in range(H):
        for o in range(1, radius + 1):
            for x in range(W - o):
                hi_r[y, x] = max(hi_r[y, x], hi_k[y, x + o])
                lo_r[y, x] = min(lo_r[y, x], lo_k[y, x + o])
            for x in range(o, W):
                hi_r[y, x] = max(hi_r[y, x], hi_k[y, x - o])
                lo_r[y, x] = min(lo_r[y, x], lo_k[y, x - o])
    out = np.empty((H, W), np.float32)
    hi_c, lo_c = np.empty(W, np.float32), np.empty(W, np.float32)
    for y in range(H):
        hi_c[:], lo_c[:] = hi_r[y], lo_r[y]
        for yy in range(max(y - radius, 0), min(y + radius + 1, H)):
            for x in range(W):
                hi_c[x] = max(hi_c[x], hi_r[yy, x])
                lo_c[x] = min(lo_c[x], lo_r[yy, x])
        for x in range(W):
            hi, lo = hi_c[x], lo_c[x]
            out[y, x] = max(hi - lo, _f32(0.0)) if hi > -inf and lo < inf else _f32(0.0)
    return out
