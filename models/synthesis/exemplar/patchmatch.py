"""PatchMatch nearest-neighbour fields and patch voting, compiled with numba (the fast path).

Arrays of one pyramid level (all C-contiguous):

* ``img`` (h, w, 3) float32, the current estimate (known pixels fixed, hole pixels evolving);
* ``known`` (h, w) uint8, pixels a source patch may read; ``src_ok`` (h, w) uint8, allowed
  source centres; ``hole`` (h, w) uint8, the pixels the vote writes;
* ``logd`` (h, w) float32 log z-depth: a source nearer than the target by more than ``fg_tol``
  in log depth is another layer (it costs ``fg_penalty``: the last resort), and it sets the
  perspective scale below;
* ``feat`` (h, w, F) float32 guide features of each patch centre, pre-scaled by the square
  roots of their weights (log depth, normal, log texture energy): their squared distance is
  added to the colour distance, so depth, orientation and texture strength are matched too;
* ``targets`` (T, 2) int32 patch centres (y, x) in raster order, ``tid`` (h, w) int32 their index
  (-1 elsewhere), ``nnf`` (T, 2) int32 source centres, ``cost`` (T,) float64 patch distances.

``prm`` = (fg_tol, m_lo, m_hi, fg_penalty) as float64. A source patch is read with
step ``m = d_target / d_source`` (clamped to [m_lo, m_hi]): a surface seen nearer than its source
is magnified as perspective demands, so floor tiles keep their size along the floor.

Random draws come from a counter-based hash of (seed, iteration, draw, target), so the result
does not depend on scheduling; :mod:`models.synthesis.exemplar.reference` draws the same numbers
with plain Python integers and must produce the same field (the tests compare them).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

INF = math.inf
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@njit(cache=True)
def _mix64(x):
    """splitmix64 finaliser (uint64 arithmetic wraps)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _MUL1
    x = (x ^ (x >> _S27)) * _MUL2
    return x ^ (x >> _S31)


@njit(cache=True)
def rand_int(seed, a, b, lo, hi):
    """Uniform integer in [lo, hi] keyed by (seed, a, b), all non-negative int64 keys."""
    z = _mix64(_mix64(_mix64(np.uint64(seed)) ^ np.uint64(a)) ^ np.uint64(b))
    return lo + np.int64(z % np.uint64(hi - lo + 1))


@njit(cache=True)
def _scale(logd, py, px, qy, qx, prm):
    m = math.exp(np.float64(logd[py, px]) - np.float64(logd[qy, qx]))
    return min(max(m, prm[1]), prm[2])


@njit(cache=True)
def patch_cost(img, known, logd, feat, py, px, qy, qx, r, prm, best):
    """Distance of target patch p to source patch q; any value >= ``best`` means "worse"
    (the sum stops early), INF when q reads an unknown pixel. A source in another, nearer
    depth layer costs ``prm[3]`` extra: taken only where nothing else can be copied."""
    h, w = known.shape
    dl = np.float64(logd[py, px]) - np.float64(logd[qy, qx])
    d = prm[3] if dl > prm[0] else 0.0
    for c in range(feat.shape[2]):
        e = np.float64(feat[py, px, c]) - np.float64(feat[qy, qx, c])
        d += e * e
    if d >= best:
        return d
    m = min(max(math.exp(dl), prm[1]), prm[2])
    for dy in range(-r, r + 1):
        ty = py + dy
        if ty < 0 or ty >= h:
            continue
        sy = qy + int(math.floor(m * dy + 0.5))
        for dx in range(-r, r + 1):
            tx = px + dx
            if tx < 0 or tx >= w:
                continue
            sx = qx + int(math.floor(m * dx + 0.5))
            if sy < 0 or sy >= h or sx < 0 or sx >= w or known[sy, sx] == 0:
                return INF
            for c in range(3):
                e = np.float64(img[ty, tx, c]) - np.float64(img[sy, sx, c])
                d += e * e
        if d >= best:
            return d
    return d


@njit(cache=True)
def eval_costs(img, known, src_ok, logd, feat, targets, nnf, cost, r, prm):
    """Fill ``cost`` for the current field (INF where the source is not an allowed centre)."""
    h, w = known.shape
    for t in range(targets.shape[0]):
        qy, qx = nnf[t, 0], nnf[t, 1]
        if qy < 0 or qy >= h or qx < 0 or qx >= w or src_ok[qy, qx] == 0:
            cost[t] = INF
        else:
            cost[t] = patch_cost(
                img, known, logd, feat, targets[t, 0], targets[t, 1], qy, qx, r, prm, INF
            )


@njit(cache=True)
def _try(img, known, src_ok, logd, feat, py, px, cy, cx, by, bx, best, r, prm):
    h, w = known.shape
    if cy < 0 or cy >= h or cx < 0 or cx >= w or src_ok[cy, cx] == 0:
        return best, by, bx
    if cy == by and cx == bx:
        return best, by, bx
    d = patch_cost(img, known, logd, feat, py, px, cy, cx, r, prm, best)
    if d < best:
        return d, cy, cx
    return best, by, bx


@njit(cache=True)
def patchmatch(
    img,
    known,
    src_ok,
    logd,
    feat,
    targets,
    tid,
    nnf,
    cost,
    src_list,
    r,
    prm,
    seed,
    it0,
    iters,
    rad0,
):
    """``iters`` PatchMatch sweeps (raster order, reversed on odd iteration numbers): for each
    target, propagation from the two neighbours visited before it, a random search around the
    best match with a window halving from ``rad0`` (0: the image size), and one source drawn
    uniformly from ``src_list`` (only when ``rad0`` is 0: a coarsest level)."""
    h, w = known.shape
    T = targets.shape[0]
    S = src_list.shape[0]
    for it in range(iters):
        itn = it0 + it
        rev = itn % 2 == 1
        sgn = 1 if rev else -1
        for k in range(T):
            t = T - 1 - k if rev else k
            py, px = targets[t, 0], targets[t, 1]
            by, bx, best = nnf[t, 0], nnf[t, 1], cost[t]
            for j in range(2):
                ny = py + (sgn if j == 1 else 0)
                nx = px + (sgn if j == 0 else 0)
                if ny < 0 or ny >= h or nx < 0 or nx >= w:
                    continue
                u = tid[ny, nx]
                if u < 0:
                    continue
                cy = nnf[u, 0] + (py - ny)
                cx = nnf[u, 1] + (px - nx)
                best, by, bx = _try(
                    img, known, src_ok, logd, feat, py, px, cy, cx, by, bx, best, r, prm
                )
            rad = max(h, w) if rad0 <= 0 else rad0
            j = 0
            while rad >= 1:
                cy = by + rand_int(seed, itn * 64 + j, t, -rad, rad)
                cx = bx + rand_int(seed, itn * 64 + 32 + j, t, -rad, rad)
                best, by, bx = _try(
                    img, known, src_ok, logd, feat, py, px, cy, cx, by, bx, best, r, prm
                )
                j += 1
                rad //= 2
            if S > 0 and rad0 <= 0:
                s = rand_int(seed, itn * 64 + 63, t, 0, S - 1)
                cy, cx = src_list[s, 0], src_list[s, 1]
                best, by, bx = _try(
                    img, known, src_ok, logd, feat, py, px, cy, cx, by, bx, best, r, prm
                )
            nnf[t, 0], nnf[t, 1], cost[t] = by, bx, best


@njit(cache=True)
def vote(img, hole, logd, targets, nnf, cost, tw, r, prm, sig2, out):
    """Write into ``out`` (h, w, 3) each hole pixel's weighted mean of the colours that the
    matches of all patches covering it put there; weight ``tw[t] * exp(-mse_t / sig2)`` with
    mse_t the patch's mean squared colour distance. Other pixels of ``out`` are untouched."""
    h, w = hole.shape
    acc = np.zeros((h, w, 3))
    ws = np.zeros((h, w))
    for t in range(targets.shape[0]):
        if cost[t] == INF:
            continue
        py, px, qy, qx = targets[t, 0], targets[t, 1], nnf[t, 0], nnf[t, 1]
        n = (min(py + r, h - 1) - max(py - r, 0) + 1) * (min(px + r, w - 1) - max(px - r, 0) + 1)
        wt = tw[t] * math.exp(-min(cost[t] / (3.0 * n) / sig2, 50.0))
        m = _scale(logd, py, px, qy, qx, prm)
        for dy in range(-r, r + 1):
            ty = py + dy
            if ty < 0 or ty >= h:
                continue
            sy = qy + int(math.floor(m * dy + 0.5))
            for dx in range(-r, r + 1):
                tx = px + dx
                if tx < 0 or tx >= w or hole[ty, tx] == 0:
                    continue
                sx = qx + int(math.floor(m * dx + 0.5))
                for c in range(3):
                    acc[ty, tx, c] += wt * np.float64(img[sy, sx, c])
                ws[ty, tx] += wt
    for y in range(h):
        for x in range(w):
            if hole[y, x] != 0 and ws[y, x] > 0.0:
                for c in range(3):
                    out[y, x, c] = acc[y, x, c] / ws[y, x]


@njit(cache=True)
def copy_up(img_f, known_f, logd, targets, tid, nnf, cost, tw, prm, sig2, tau, region, out):
    """Full-size pixels from a half-size field. Each ``region`` pixel x (full size) gathers
    what the matches of the 3x3 half-size targets around its parent x // 2 put at x (source
    ``2 q + m (x - 2 p)`` in the full-size image ``img_f``; unknown reads are skipped), each
    weighing ``tw * exp(-cost / sig2)``. The heaviest candidate anchors the pixel and only the
    candidates within colour distance ``tau`` of it are averaged: a robust vote, so texture
    copied by disagreeing neighbours is not averaged into a blur. Pixels with no usable match
    keep ``out``."""
    H, W = known_f.shape
    h, w = tid.shape
    cand = np.empty((9, 4))
    tau2 = tau * tau
    for y in range(H):
        for x in range(W):
            if region[y, x] == 0:
                continue
            py0, px0 = y // 2, x // 2
            n = 0
            best = -1
            for dy in range(-1, 2):
                py = py0 + dy
                if py < 0 or py >= h:
                    continue
                for dx in range(-1, 2):
                    px = px0 + dx
                    if px < 0 or px >= w:
                        continue
                    t = tid[py, px]
                    if t < 0 or cost[t] == INF:
                        continue
                    qy, qx = nnf[t, 0], nnf[t, 1]
                    m = _scale(logd, py, px, qy, qx, prm)
                    sy = 2 * qy + int(math.floor(m * (y - 2 * py) + 0.5))
                    sx = 2 * qx + int(math.floor(m * (x - 2 * px) + 0.5))
                    if sy < 0 or sy >= H or sx < 0 or sx >= W or known_f[sy, sx] == 0:
                        continue
                    cand[n, 0] = tw[t] * math.exp(-min(cost[t] / sig2, 50.0))
                    for c in range(3):
                        cand[n, 1 + c] = np.float64(img_f[sy, sx, c])
                    if best < 0 or cand[n, 0] > cand[best, 0]:
                        best = n
                    n += 1
            if n == 0:
                continue
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            ws = 0.0
            for k in range(n):
                d2 = 0.0
                for c in range(3):
                    e = cand[k, 1 + c] - cand[best, 1 + c]
                    d2 += e * e
                if d2 <= tau2:
                    a0 += cand[k, 0] * cand[k, 1]
                    a1 += cand[k, 0] * cand[k, 2]
                    a2 += cand[k, 0] * cand[k, 3]
                    ws += cand[k, 0]
            out[y, x, 0] = a0 / ws
            out[y, x, 1] = a1 / ws
            out[y, x, 2] = a2 / ws


@njit(cache=True)
def fill_cracks(img, weight, cracks, max_r, out):
    """Each crack pixel (``cracks`` (N, 2) int32 y, x) becomes the mean of the weighted pixels
    (``weight`` (H, W) float32 > 0) in the smallest window of radius 1..``max_r`` holding any,
    each weighing ``weight / distance^2``. Returns a (N,) uint8 flag: 1 where filled."""
    H, W = weight.shape
    done = np.zeros(cracks.shape[0], np.uint8)
    for i in range(cracks.shape[0]):
        y, x = cracks[i, 0], cracks[i, 1]
        for rad in range(1, max_r + 1):
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            ws = 0.0
            for yy in range(max(0, y - rad), min(H, y + rad + 1)):
                for xx in range(max(0, x - rad), min(W, x + rad + 1)):
                    wt = np.float64(weight[yy, xx])
                    if wt <= 0.0 or (yy == y and xx == x):
                        continue
                    wt /= (yy - y) * (yy - y) + (xx - x) * (xx - x)
                    a0 += wt * np.float64(img[yy, xx, 0])
                    a1 += wt * np.float64(img[yy, xx, 1])
                    a2 += wt * np.float64(img[yy, xx, 2])
                    ws += wt
            if ws > 0.0:
                out[y, x, 0] = a0 / ws
                out[y, x, 1] = a1 / ws
                out[y, x, 2] = a2 / ws
                done[i] = 1
                break
    return done
