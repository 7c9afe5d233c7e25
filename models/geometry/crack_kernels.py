"""Crack routing's compiled fast path (numba): all passes of
:func:`models.geometry.cracks.route_cracks` in one call, one hole at a time.

:func:`models.geometry.cracks.route_crack_pass` (torch, whole-array operations over the holes
of a pass) is the reference: every formula here is the same one, in float32 and in the same
order, so the two agree bit for bit (tests compare them on real street frames and synthetic
cases). The torch pass is a few hundred small operations whatever the number of holes (a pass
over 50 holes cost about as much as one over 3,000): here a pass costs what its holes cost.

A pass reads the state before it and writes after (as the torch pass does): the holes' results
go to scratch arrays first, then into the correspondence. Serial loops: deterministic.

Arrays: the correspondence's fields by name (``rgb`` (H, W, 3) float32, ``depth``, ``valid``,
``src`` int64, ``uv`` (H, W, 2), ``conf``, ``observed``, ``stretch``), changed in place;
``k_t`` (4,) float32 ``fx, fy, cx, cy`` and ``c2w`` (4, 4) float32 of the target; the memory
frames as ``fids`` (n,) int64 and lists of ``rgb`` (Hs, Ws, 3) uint8 and ``depth`` (Hs, Ws)
float32, ``w2c`` (n, 4, 4) float32, ``k`` (n, 4) float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_f32 = np.float32


@njit(cache=True)
def _rigid(T, a, b, c, row):
    """Row ``row`` of ``T @ (a, b, c, 1)``, as :func:`models.geometry.cracks._rigid` sums it."""
    return T[row, 0] * a + T[row, 1] * b + T[row, 2] * c + T[row, 3]


@njit(cache=True)
def _ratio(a, b):
    """max / min of two positive depths (``cracks._ratio``)."""
    return max(a, b) / min(a, b)


@njit(cache=True)
def _bilinear(img, u, v, out):
    """``cracks._bilinear``: colour (3,) float32 [0, 1] of ``img`` (Hs, Ws, 3) at (u, v),
    border pixels replicated, written to ``out``."""
    Hs, Ws = img.shape[0], img.shape[1]
    u = min(max(u, _f32(0.0)), _f32(Ws - 1))
    v = min(max(v, _f32(0.0)), _f32(Hs - 1))
    u0 = max(min(int(np.floor(u)), Ws - 2), 0)
    v0 = max(min(int(np.floor(v)), Hs - 2), 0)
    fu, fv = u - _f32(u0), v - _f32(v0)
    u1, v1 = min(u0 + 1, Ws - 1), min(v0 + 1, Hs - 1)
    one = _f32(1.0)
    for c in range(3):
        top = _f32(img[v0, u0, c]) * (one - fu) + _f32(img[v0, u1, c]) * fu
        bottom = _f32(img[v1, u0, c]) * (one - fu) + _f32(img[v1, u1, c]) * fu
        out[c] = (top * (one - fv) + bottom * fv) / _f32(255.0)


@njit(cache=True)
def _sample(x, y, z, fi, f_rgb, f_depth, f_w2c, f_k, out):
    """``cracks._sample`` for one world point (x, y, z) in frame index ``fi``: accepted when the
    frame's depth at one of the 2x2 pixels around its projection agrees (10 %). Writes rgb to
    ``out[0:3]`` and (u, v) to ``out[3:5]``; returns whether accepted."""
    dep = f_depth[fi]
    Hs, Ws = dep.shape
    T, k = f_w2c[fi], f_k[fi]
    px, py, pz = _rigid(T, x, y, z, 0), _rigid(T, x, y, z, 1), _rigid(T, x, y, z, 2)
    zs = max(pz, _f32(1e-6))
    u = px / zs * k[0] + k[2]
    v = py / zs * k[1] + k[3]
    if not (u >= _f32(-0.5) and u <= _f32(Ws - 0.5) and v >= _f32(-0.5)):
        return False
    if not (v <= _f32(Hs - 0.5) and pz > _f32(1e-3)):
        return False
    agree = False
    fu, fv = int(np.floor(u)), int(np.floor(v))
    for oy in range(2):
        for ox in range(2):
            ui = min(max(fu + ox, 0), Ws - 1)
            vi = min(max(fv + oy, 0), Hs - 1)
            d_src = dep[vi, ui]
            if d_src > 0 and abs(d_src - pz) <= _f32(0.1) * pz:
                agree = True
    if agree:
        _bilinear(f_rgb[fi], u, v, out)
        out[3], out[4] = u, v
    return agree


@njit(cache=True)
def _continue(rgb, depth, continued, ny, nx, nv, za, tol1, vals, out):
    """Whether a hole at depth ``za`` has routed 8-neighbours (``ny``, ``nx``, ``nv`` (8,)) on
    its surface that were not continued themselves; their median colour (per channel, the
    lower of the middle two, as ``nanmedian``) goes to ``out[0:3]``."""
    for c in range(3):
        q = 0
        for k in range(8):
            dk = depth[ny[k], nx[k]]
            if nv[k] and not continued[ny[k], nx[k]] and max(dk, za) <= min(dk, za) * tol1:
                vals[q] = rgb[ny[k], nx[k], c]
                q += 1
        if q == 0:
            return False
        vals[:q].sort()
        out[c] = vals[(q - 1) // 2]
    return True


@njit(cache=True)
def _frame_index(fids, fid):
    for i in range(len(fids)):
        if fids[i] == fid:
            return i
    raise KeyError("a routed pixel's frame is not among the frames given")


@njit(cache=True)
def _first_holes(valid):
    """Flat indices (row-major) of the unrouted pixels with routed 8-neighbours on opposite
    sides (``route_cracks``' first pass)."""
    H, W = valid.shape
    out = np.empty(H * W, np.int64)
    n = 0
    for y in range(H):
        for x in range(W):
            if valid[y, x]:
                continue
            found = False
            for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                ya, xa, yb, xb = y - dy, x - dx, y + dy, x + dx
                if 0 <= ya < H and 0 <= yb < H and 0 <= xa < W and 0 <= xb < W:
                    if valid[ya, xa] and valid[yb, xb]:
                        found = True
            if found:
                out[n] = y * W + x
                n += 1
    return out[:n]


@njit(cache=True)
def route_passes(
    corr, has_stretch, k_t, c2w, fids, f_rgb, f_depth, f_w2c, f_k, pairs, pair_tol, passes, st_min
):
    """Route the cracks of ``corr`` = (rgb, depth, valid, src, uv, conf, observed, stretch) in
    place, in up to ``passes`` passes (``cracks.route_cracks``); the frames as in the module
    docstring (``f_rgb``, ``f_depth``: lists); ``pairs`` = (a, b, dot, exp(dot)) of
    ``cracks.NEIGHBOUR_PAIRS``; ``has_stretch``: whether ``stretch`` is a field (else a
    placeholder); ``st_min`` float32: a continued pixel's least stretch. Returns the number of
    pixels routed."""
    rgb, depth, valid, src, uv, conf, observed, stretch = corr
    pa, pb, dot, edot = pairs
    H, W = valid.shape
    OFF = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
    tol1 = _f32(1.0 + pair_tol)  # as torch rounds the Python float 1 + pair_tol
    gap2 = _f32(3.0) * _f32(3.0)
    inf = np.float32(np.inf)
    one, half_ = _f32(1.0), _f32(0.5)
    continued = np.zeros((H, W), np.bool_)
    mark = np.zeros(H * W, np.bool_)
    holes = _first_holes(valid)
    total = 0
    ny, nx = np.empty(8, np.int64), np.empty(8, np.int64)
    nv, nd, srt = np.empty(8, np.bool_), np.empty(8, np.float32), np.empty(8, np.float32)
    smp = np.empty(5, np.float32)
    vals = np.empty(8, np.float32)
    for _ in range(passes):
        n = len(holes)
        if n == 0:
            break
        # Scratch results: the pass reads the state before it, then writes.
        k_y, k_x, k_fid = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        k_rgb, k_uv = np.empty((n, 3), np.float32), np.empty((n, 2), np.float32)
        k_z, k_conf, k_st = (
            np.empty(n, np.float32),
            np.empty(n, np.float32),
            np.empty(n, np.float32),
        )
        k_obs, k_cont = np.empty(n, np.bool_), np.empty(n, np.bool_)
        m = 0
        for h in range(n):
            y, x = holes[h] // W, holes[h] % W
            if valid[y, x]:
                continue
            count = 0
            for k in range(8):
                yy, xx = y + OFF[k][0], x + OFF[k][1]
                inside = 0 <= yy < H and 0 <= xx < W
                yy, xx = min(max(yy, 0), H - 1), min(max(xx, 0), W - 1)
                ny[k], nx[k] = yy, xx
                nv[k] = valid[yy, xx] and inside
                nd[k] = depth[yy, xx] if nv[k] else inf
                count += nv[k]
            crack = False
            for k in range(8):
                crack = crack or (nv[k] and nv[7 - k])
            if not crack:
                continue
            # The median routed depth (the lower of the middle two).
            srt[:] = nd
            srt.sort()
            med = srt[max(count - 1, 0) // 2]
            best, best_s = 0, inf
            for p in range(len(pa)):
                da, db = nd[pa[p]], nd[pb[p]]
                if not (nv[pa[p]] and nv[pb[p]] and max(da, db) <= min(da, db) * tol1):
                    continue
                s = edot[p] * (_ratio(da, med) * _ratio(db, med))
                if s < best_s:
                    best, best_s = p, s
            same = best_s < inf and (count >= 5 or dot[best] < _f32(-0.99))
            far, far_d = 0, _f32(-np.inf)
            for k in range(8):
                dk = depth[ny[k], nx[k]] if nv[k] else _f32(-1.0)
                if dk > far_d:
                    far, far_d = k, dk
            i = pa[best] if same else far
            j = pb[best] if same else far
            on0, on1 = _f32(OFF[i][0]), _f32(OFF[i][1])
            s0, s1 = _f32(OFF[j][0]) - on0, _f32(OFF[j][1]) - on1
            t = -(on0 * s0 + on1 * s1) / max(s0 * s0 + s1 * s1, one)
            t = min(max(t, _f32(0.0)), one)
            ya, xa, yb, xb = ny[i], nx[i], ny[j], nx[j]
            z = one / ((one - t) / depth[ya, xa] + t / depth[yb, xb])
            fid = src[ya, xa]
            fi = _frame_index(fids, fid)
            cx = (_f32(x) - k_t[2]) / k_t[0] * z
            cy = (_f32(y) - k_t[3]) / k_t[1] * z
            wx, wy = _rigid(c2w, cx, cy, z, 0), _rigid(c2w, cx, cy, z, 1)
            wz = _rigid(c2w, cx, cy, z, 2)
            routed = _sample(wx, wy, wz, fi, f_rgb, f_depth, f_w2c, f_k, smp)
            ua0, ua1, ub0, ub1 = uv[ya, xa, 0], uv[ya, xa, 1], uv[yb, xb, 0], uv[yb, xb, 1]
            if not routed and same and src[yb, xb] == fid:
                d0, d1 = ua0 - ub0, ua1 - ub1
                if d0 * d0 + d1 * d1 <= gap2:
                    # Between the pair's own source pixels (the frame's depth disagreed).
                    smp[3] = ua0 + t * (ub0 - ua0)
                    smp[4] = ua1 + t * (ub1 - ua1)
                    _bilinear(f_rgb[fi], smp[3], smp[4], smp)
                    routed = True
            za = depth[ya, xa]
            cont = False
            if not routed and same:
                # Never seen there: continue the surface (the median colour of the routed
                # neighbours on it that were not continued themselves).
                cont = _continue(rgb, depth, continued, ny, nx, nv, za, tol1, vals, smp)
                if cont:
                    smp[3], smp[4], z = ua0, ua1, za
            if not (routed or cont):
                continue
            k_y[m], k_x[m], k_fid[m], k_z[m], k_cont[m] = y, x, fid, z, cont
            for c in range(3):
                k_rgb[m, c] = smp[c]
            k_uv[m, 0], k_uv[m, 1] = smp[3], smp[4]
            cf = min(conf[ya, xa], conf[yb, xb])
            k_conf[m] = half_ * cf if cont else cf
            k_obs[m] = observed[ya, xa] and observed[yb, xb] and not cont
            if has_stretch:
                st = max(stretch[ya, xa], stretch[yb, xb])
                k_st[m] = max(st, st_min) if cont else st
            m += 1
        if m == 0:
            break
        for h in range(m):
            y, x = k_y[h], k_x[h]
            for c in range(3):
                rgb[y, x, c] = k_rgb[h, c]
            depth[y, x], src[y, x] = k_z[h], k_fid[h]
            uv[y, x, 0], uv[y, x, 1] = k_uv[h, 0], k_uv[h, 1]
            conf[y, x], observed[y, x], valid[y, x] = k_conf[h], k_obs[h], True
            if has_stretch:
                stretch[y, x] = k_st[h]
            continued[y, x] = k_cont[h]
        total += m
        # Next: the unrouted 8-neighbours of this pass's fills, in row-major order.
        nxt = np.empty(8 * m, np.int64)
        q = 0
        for h in range(m):
            for k in range(8):
                yy, xx = k_y[h] + OFF[k][0], k_x[h] + OFF[k][1]
                if 0 <= yy < H and 0 <= xx < W and not valid[yy, xx] and not mark[yy * W + xx]:
                    mark[yy * W + xx] = True
                    nxt[q] = yy * W + xx
                    q += 1
        holes = np.sort(nxt[:q])
        for h in range(q):
            mark[holes[h]] = False
    return total
