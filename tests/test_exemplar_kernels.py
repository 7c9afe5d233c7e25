"""The compiled PatchMatch kernels against their slow, obvious twins (same seed, same field)."""

from __future__ import annotations

import numpy as np
import pytest

from models.synthesis.exemplar import paint_exemplar
from models.synthesis.exemplar import patchmatch as fast
from models.synthesis.exemplar import reference as ref
from models.synthesis.exemplar.complete import sources_of, targets_of

R = 2  # patch radius of the small cases


def _case(h: int = 20, w: int = 26, seed: int = 0):
    """A small level: textured image, a rectangular hole, random depth and features."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)).astype(np.float32)
    known = np.ones((h, w), bool)
    known[6:13, 9:17] = False
    logd = (0.3 * rng.random((h, w))).astype(np.float32)
    feat = (0.5 * rng.random((h, w, 4))).astype(np.float32)
    src_ok = sources_of(known, known, R)
    targets, tid = targets_of(~known)
    src_list = np.argwhere(src_ok > 0).astype(np.int32)
    nnf = src_list[rng.integers(0, len(src_list), len(targets))].astype(np.int32)
    prm = np.array([0.15, 0.5, 2.0, 100.0])
    return img, known.astype(np.uint8), src_ok, logd, feat, targets, tid, nnf, src_list, prm


def test_random_draws_match():
    for key in [(0, 0, 0), (7, 3, 11), (123456789, 64 * 5 + 33, 999), (2**40 + 5, 1, 2)]:
        for lo, hi in [(-8, 8), (0, 0), (0, 1000)]:
            assert fast.rand_int(key[0], key[1], key[2], lo, hi) == ref.rand_int(*key, lo, hi)


def test_patch_cost_matches_and_rejects_other_layers():
    img, known, src_ok, logd, feat, targets, *_, prm = _case()
    for t in range(0, len(targets), 7):
        py, px = (int(v) for v in targets[t])
        for qy, qx in [(3, 3), (16, 20), (2, 23), (17, 4)]:
            a = fast.patch_cost(img, known, logd, feat, py, px, qy, qx, R, prm, np.inf)
            b = ref.patch_cost(img, known, logd, feat, py, px, qy, qx, R, prm)
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    # a source much nearer than the target is another depth layer: the last resort
    near = logd.copy()
    near[3, 3] = near[10, 12] - 1.0
    assert fast.patch_cost(img, known, near, feat, 10, 12, 3, 3, R, prm, np.inf) >= 100.0
    assert ref.patch_cost(img, known, near, feat, 10, 12, 3, 3, R, prm) >= 100.0


@pytest.mark.parametrize("rad0", [0, 4])
def test_patchmatch_same_field_as_reference(rad0):
    img, known, src_ok, logd, feat, targets, tid, nnf, src_list, prm = _case(seed=1)
    fields, costs = [], []
    for k in (fast, ref):
        f = nnf.copy()
        c = np.empty(len(targets))
        k.eval_costs(img, known, src_ok, logd, feat, targets, f, c, R, prm)
        k.patchmatch(
            img, known, src_ok, logd, feat, targets, tid, f, c, src_list, R, prm, 42, 0, 3, rad0
        )
        fields.append(f)
        costs.append(c)
    assert np.array_equal(fields[0], fields[1])
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-12)
    # and PatchMatch improved on the random start
    c0 = np.empty(len(targets))
    fast.eval_costs(img, known, src_ok, logd, feat, targets, nnf, c0, R, prm)
    assert costs[0].mean() < 0.8 * c0.mean()


def test_vote_and_copy_up_match_reference():
    img, known, src_ok, logd, feat, targets, tid, nnf, src_list, prm = _case(seed=2)
    cost = np.empty(len(targets))
    fast.eval_costs(img, known, src_ok, logd, feat, targets, nnf, cost, R, prm)
    tw = np.linspace(1.0, 0.5, len(targets))
    hole = (1 - known).astype(np.uint8)
    outs = []
    for k in (fast, ref):
        out = img.copy()
        k.vote(img, hole, logd, targets, nnf, cost, tw, R, prm, 0.05, out)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(outs[0][hole > 0], img[hole > 0])  # the hole was written
    assert np.array_equal(outs[0][hole == 0], img[hole == 0])  # nothing else
    # full size: each region pixel from the half-size field
    rng = np.random.default_rng(3)
    H, W = 2 * img.shape[0], 2 * img.shape[1]
    img_f = rng.random((H, W, 3)).astype(np.float32)
    known_f = np.repeat(np.repeat(known, 2, 0), 2, 1)
    region = (1 - known_f).astype(np.uint8)
    ups = []
    for k in (fast, ref):
        out = np.zeros_like(img_f)
        k.copy_up(
            img_f, known_f, logd, targets, tid, nnf, cost / 75, tw, prm, 0.05, 0.3, region, out
        )
        ups.append(out)
    np.testing.assert_allclose(ups[0], ups[1], rtol=1e-6, atol=1e-7)
    assert (ups[0][region > 0].sum(-1) > 0).all()


def test_painter_compiled_equals_reference_on_a_small_frame():
    """The whole painter, once with each set of kernels: the same picture."""
    rng = np.random.default_rng(4)
    H, W = 40, 56
    v, u = np.mgrid[0:H, 0:W]
    rgb = np.stack(
        [0.5 + 0.3 * np.sin(u / 2.0), 0.4 + 0.2 * np.cos(v / 3.0), 0.3 + 0.1 * rng.random((H, W))],
        -1,
    )
    depth = (2.0 + 0.01 * v).astype(np.float32)
    known = np.ones((H, W), bool)
    known[10:28, 30:48] = False
    K = np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]])
    a = paint_exemplar(rgb.astype(np.float32), known, depth, K, seed=5, kernels="compiled")
    b = paint_exemplar(rgb.astype(np.float32), known, depth, K, seed=5, kernels="reference")
    np.testing.assert_allclose(a.rgb, b.rgb, atol=1e-5)
    assert np.array_equal(a.rgb[known], rgb[known].astype(np.float32))


def test_fill_cracks_matches_reference():
    rng = np.random.default_rng(6)
    img = rng.random((18, 22, 3)).astype(np.float32)
    weight = (rng.random((18, 22)) > 0.4).astype(np.float32) * rng.random((18, 22)).astype(
        np.float32
    )
    cracks = np.argwhere(weight == 0).astype(np.int32)
    outs, dones = [], []
    for k in (fast, ref):
        out = img.copy()
        dones.append(k.fill_cracks(img, weight, cracks, 3, out))
        outs.append(out)
    assert np.array_equal(dones[0], dones[1]) and dones[0].all()
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6)
