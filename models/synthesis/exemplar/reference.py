"""The slow, obvious twin of :mod:`models.synthesis.exemplar.patchmatch`: plain Python loops.

Same arguments, same random draws (splitmix64 on Python integers), same visiting order, so on
a small case it produces the same nearest-neighbour field as the compiled path; the tests check
that. Patch distances are computed in full here (no early exit): the compiled path's early
exit only rejects candidates that would have been rejected anyway.
"""

from __future__ import annotations

import math

import numpy as np

INF = math.inf
_MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64 finaliser on Python integers (wrapped to 64 bits)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def rand_int(seed: int, a: int, b: int, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] keyed by (seed, a, b)."""
    z = mix64(mix64(mix64(seed & _MASK) ^ (a & _MASK)) ^ (b & _MASK))
    return lo + z % (hi - lo + 1)


def scale(logd, py, px, qy, qx, prm) -> float:
    """Source step per target pixel: target depth / source depth, clamped."""
    m = math.exp(float(logd[py, px]) - float(logd[qy, qx]))
    return min(max(m, float(prm[1])), float(prm[2]))


def patch_cost(img, known, logd, feat, py, px, qy, qx, r, prm) -> float:
    """Full distance of target patch p to source patch q (INF: an unknown read; a nearer
    depth layer costs ``prm[3]`` extra)."""
    h, w = known.shape
    dl = float(logd[py, px]) - float(logd[qy, qx])
    d = float(prm[3]) if dl > float(prm[0]) else 0.0
    for c in range(feat.shape[2]):
        e = float(feat[py, px, c]) - float(feat[qy, qx, c])
        d += e * e
    m = min(max(math.exp(dl), float(prm[1])), float(prm[2]))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ty, tx = py + dy, px + dx
            if not (0 <= ty < h and 0 <= tx < w):
                continue
            sy = qy + math.floor(m * dy + 0.5)
            sx = qx + math.floor(m * dx + 0.5)
            if not (0 <= sy < h and 0 <= sx < w) or not known[sy, sx]:
                return INF
            for c in range(3):
                e = float(img[ty, tx, c]) - float(img[sy, sx, c])
                d += e * e
    return d


def eval_costs(img, known, src_ok, logd, feat, targets, nnf, cost, r, prm) -> None:
    h, w = known.shape
    for t in range(len(targets)):
        qy, qx = int(nnf[t, 0]), int(nnf[t, 1])
        ok = 0 <= qy < h and 0 <= qx < w and src_ok[qy, qx]
        cost[t] = (
            patch_cost(
                img, known, logd, feat, int(targets[t, 0]), int(targets[t, 1]), qy, qx, r, prm
            )
            if ok
            else INF
        )


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
) -> None:
    """Same sweeps as the compiled ``patchmatch``, one candidate at a time."""
    h, w = known.shape
    T, S = len(targets), len(src_list)

    def consider(t, cy, cx):
        by, bx = int(nnf[t, 0]), int(nnf[t, 1])
        if not (0 <= cy < h and 0 <= cx < w) or not src_ok[cy, cx] or (cy, cx) == (by, bx):
            return
        d = patch_cost(
            img, known, logd, feat, int(targets[t, 0]), int(targets[t, 1]), cy, cx, r, prm
        )
        if d < cost[t]:
            nnf[t] = (cy, cx)
            cost[t] = d

    for it in range(iters):
        itn = it0 + it
        rev = itn % 2 == 1
        sgn = 1 if rev else -1
        order = range(T - 1, -1, -1) if rev else range(T)
        for t in order:
            py, px = int(targets[t, 0]), int(targets[t, 1])
            for ny, nx in ((py, px + sgn), (py + sgn, px)):  # left/up, or right/down
                if 0 <= ny < h and 0 <= nx < w and tid[ny, nx] >= 0:
                    u = int(tid[ny, nx])
                    consider(t, int(nnf[u, 0]) + py - ny, int(nnf[u, 1]) + px - nx)
            rad, j = (max(h, w) if rad0 <= 0 else rad0), 0
            while rad >= 1:
                cy = int(nnf[t, 0]) + rand_int(seed, itn * 64 + j, t, -rad, rad)
                cx = int(nnf[t, 1]) + rand_int(seed, itn * 64 + 32 + j, t, -rad, rad)
                consider(t, cy, cx)
                j += 1
                rad //= 2
            if S > 0 and rad0 <= 0:
                s = rand_int(seed, itn * 64 + 63, t, 0, S - 1)
                consider(t, int(src_list[s, 0]), int(src_list[s, 1]))


def vote(img, hole, logd, targets, nnf, cost, tw, r, prm, sig2, out) -> None:
    """Each hole pixel: the weighted mean of what every covering patch's match puts there."""
    h, w = hole.shape
    acc = np.zeros((h, w, 3))
    ws = np.zeros((h, w))
    for t in range(len(targets)):
        if cost[t] == INF:
            continue
        py, px, qy, qx = (int(v) for v in (targets[t, 0], targets[t, 1], nnf[t, 0], nnf[t, 1]))
        ys = range(max(py - r, 0), min(py + r, h - 1) + 1)
        xs = range(max(px - r, 0), min(px + r, w - 1) + 1)
        wt = float(tw[t]) * math.exp(-min(float(cost[t]) / (3.0 * len(ys) * len(xs)) / sig2, 50.0))
        m = scale(logd, py, px, qy, qx, prm)
        for ty in ys:
            for tx in xs:
                if hole[ty, tx]:
                    sy = qy + math.floor(m * (ty - py) + 0.5)
                    sx = qx + math.floor(m * (tx - px) + 0.5)
                    acc[ty, tx] += wt * img[sy, sx].astype(np.float64)
                    ws[ty, tx] += wt
    sel = (hole != 0) & (ws > 0)
    out[sel] = acc[sel] / ws[sel][:, None]


def copy_up(img_f, known_f, logd, targets, tid, nnf, cost, tw, prm, sig2, tau, region, out) -> None:
    """Full-size region pixels from the half-size field: the 3x3 parents' matches, the
    heaviest one anchoring, those within colour distance ``tau`` of it averaged."""
    H, W = known_f.shape
    h, w = tid.shape
    for y, x in zip(*np.nonzero(region), strict=True):
        cands = []  # (weight, colour), in the compiled path's order
        for py in range(y // 2 - 1, y // 2 + 2):
            for px in range(x // 2 - 1, x // 2 + 2):
                if not (0 <= py < h and 0 <= px < w):
                    continue
                t = int(tid[py, px])
                if t < 0 or cost[t] == INF:
                    continue
                qy, qx = int(nnf[t, 0]), int(nnf[t, 1])
                m = scale(logd, py, px, qy, qx, prm)
                sy = 2 * qy + math.floor(m * (y - 2 * py) + 0.5)
                sx = 2 * qx + math.floor(m * (x - 2 * px) + 0.5)
                if not (0 <= sy < H and 0 <= sx < W) or not known_f[sy, sx]:
                    continue
                wt = float(tw[t]) * math.exp(-min(float(cost[t]) / sig2, 50.0))
                cands.append((wt, img_f[sy, sx].astype(np.float64)))
        if not cands:
            continue
        best = max(range(len(cands)), key=lambda k: (cands[k][0], -k))
        anchor = cands[best][1]
        near = [(wt, col) for wt, col in cands if float(((col - anchor) ** 2).sum()) <= tau * tau]
        ws = sum(wt for wt, _ in near)
        out[y, x] = sum(wt * col for wt, col in near) / ws


def fill_cracks(img, weight, cracks, max_r, out) -> np.ndarray:
    """Each crack pixel: inverse-square-distance weighted mean of the weighted pixels in the
    smallest window (radius 1..max_r) holding any. Returns (N,) uint8, 1 where filled."""
    H, W = weight.shape
    done = np.zeros(len(cracks), np.uint8)
    for i, (y, x) in enumerate(cracks.tolist()):
        for rad in range(1, max_r + 1):
            acc, ws = np.zeros(3), 0.0
            for yy in range(max(0, y - rad), min(H, y + rad + 1)):
                for xx in range(max(0, x - rad), min(W, x + rad + 1)):
                    if weight[yy, xx] > 0 and (yy, xx) != (y, x):
                        wt = float(weight[yy, xx]) / ((yy - y) ** 2 + (xx - x) ** 2)
                        acc += wt * img[yy, xx].astype(np.float64)
                        ws += wt
            if ws > 0:
                out[y, x] = acc / ws
                done[i] = 1
                break
    return done
