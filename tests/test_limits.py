"""Property-based tests (hypothesis) of every number a user can give: no call allocates more than
a set budget or runs past a time budget before it refuses, and what it accepts is within the
documented limits.

Budgets: memory is the peak of Python/numpy allocations traced by ``tracemalloc`` during the
call (numpy reports its buffers to it); time is wall clock, generous on purpose (these tests must
not fail on a loaded machine: they catch 78 s and 36 GiB, not 10 %). Examples per property are
listed with each test (``max_examples``); none may exceed its budget.
"""

from __future__ import annotations

import math
import sys
import time
import tracemalloc
from collections import Counter

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from models.geometry.cameras import Camera, intrinsics_from_fov  # noqa: E402
from models.paths.trajectory import MAX_FRAMES, TrajectoryError, make_preset  # noqa: E402
from models.paths.waypoints import from_waypoints  # noqa: E402

MODEL_MB, MODEL_S = 64, 5.0  # budgets of the path functions
STUDIO_MB, STUDIO_S = 256, 30.0  # budgets of a whole plan_path (restores the world, scores views)

# Any float a form or the API could send: tiny, huge, negative, NaN, infinite.
ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-12, max_value=1e-3),
    st.floats(min_value=0.01, max_value=10.0),
    st.sampled_from([0.0, -0.0, 1e-9, 1e-6, 1e-5, 1e300, -1.0]),
)
ANY_INT = st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, 600, 601, 10**9]))
SETTINGS = settings(
    deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


OUTCOMES: Counter = Counter()  # (test, accepted / refused) -> examples; peaks per test


@pytest.fixture(scope="module", autouse=True)
def report():
    """Print how many examples each property accepted and refused, and its peaks (``-s``)."""
    yield
    for test in sorted({t for t, _ in OUTCOMES}):
        print(f"\n{test}: accepted {OUTCOMES[test, 'accepted']}, refused "
              f"{OUTCOMES[test, 'refused']}, peak {OUTCOMES[test, 'peak_kb'] / 1e3:.1f} MB, "
              f"slowest {OUTCOMES[test, 'slowest_ms'] / 1e3:.2f} s")  # fmt: skip


def _within_budget(fn, mb: float, seconds: float):
    """Run ``fn``; returns (result or exception, peak MB, seconds). The memory budget holds for
    every call, the time budget for refusals (accepted work may take its time; tracemalloc
    itself slows Python code down several times)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001  (the caller checks which exceptions are allowed)
        out = exc
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    test = sys._getframe(1).f_code.co_name.replace("<lambda>", "lambda")
    OUTCOMES[test, "refused" if isinstance(out, Exception) else "accepted"] += 1
    OUTCOMES[test, "peak_kb"] = max(OUTCOMES[test, "peak_kb"], int(peak * 1e3))
    OUTCOMES[test, "slowest_ms"] = max(OUTCOMES[test, "slowest_ms"], int(elapsed * 1e3))
    assert peak <= mb, f"allocated {peak:.0f} MB (budget {mb} MB)"
    assert elapsed <= seconds or not isinstance(out, Exception), f"refused after {elapsed:.1f} s"
    return out, peak, elapsed


START = Camera(intrinsics_from_fov(128, 96), np.eye(4), 128, 96)
UP = np.array([0.0, -1.0, 0.0])


@settings(SETTINGS, max_examples=300)
@given(
    waypoints=st.lists(st.tuples(ANY_FLOAT, ANY_FLOAT), min_size=0, max_size=40),
    speed=st.none() | ANY_FLOAT,
    n_frames=st.none() | ANY_INT,
    eye=st.none() | ANY_FLOAT,
)
def test_waypoint_paths_refuse_within_budget(waypoints, speed, n_frames, eye):
    if speed is not None and n_frames is not None:
        n_frames = None  # the API gives one or the other
    out, *_ = _within_budget(
        lambda: from_waypoints(np.asarray(waypoints, float).reshape(-1, 2), START, up=UP,
                               camera_height=1.6, eye_height=eye, n_frames=n_frames,
                               speed=speed, max_frames=600),
        MODEL_MB, MODEL_S,
    )  # fmt: skip
    if isinstance(out, Exception):
        assert isinstance(out, TrajectoryError), repr(out)
    else:
        assert 1 <= len(out) <= 600


@settings(SETTINGS, max_examples=120)
@given(
    name=st.sampled_from(["forward", "orbit", "look-around", "dolly", "loop"]),
    n_frames=ANY_INT,
    scene_depth=ANY_FLOAT,
    step=st.none() | ANY_FLOAT,
)
@example(name="orbit", n_frames=MAX_FRAMES + 1, scene_depth=3.0, step=None)
@example(name="loop", n_frames=10**12, scene_depth=3.0, step=1e-12)
def test_presets_refuse_within_budget(name, n_frames, scene_depth, step):
    # Long accepted paths are legitimate work (20,000 cameras take ~2 s, ~20 s traced): the
    # property is about refusing, so in-range counts above 2,000 are not drawn.
    assume(not 2000 < n_frames <= MAX_FRAMES)
    out, *_ = _within_budget(
        lambda: make_preset(name, START, n_frames, up=UP, scene_depth=scene_depth, step=step),
        MODEL_MB, MODEL_S,
    )  # fmt: skip
    if isinstance(out, Exception):
        assert isinstance(out, TrajectoryError), repr(out)
    else:
        assert 1 <= len(out) <= MAX_FRAMES and all(np.isfinite(c.c2w).all() for c in out)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from studio.context import StudioContext
    from studio.service import Studio
    from tests.helpers import PHOTOS

    photo = PHOTOS / "interior_office_03_dsine.png"
    if not photo.is_file():
        pytest.skip(f"needs the shared photos in {PHOTOS} (../shared/data)")
    s = Studio(StudioContext(data_dir=tmp_path_factory.mktemp("limits") / "data", width=64))
    pid, _view, key = s.create_project("Limits")
    s.set_photo(pid, key, str(photo))
    yield s, pid, key
    s.close()


@settings(SETTINGS, max_examples=40)
@given(
    preset=st.sampled_from([None, "forward", "loop", "nope"]),
    waypoints=st.lists(st.lists(ANY_FLOAT, min_size=2, max_size=2), max_size=6),
    frames=st.none() | ANY_INT | ANY_FLOAT,
    speed=st.none() | ANY_FLOAT,
    eye=st.none() | ANY_FLOAT,
    look=st.sampled_from(["path", "fixed", "sideways"]),
    start=st.sampled_from(["end", "photo", "", "no-such-step"]),
)
def test_studio_plan_path_refuses_within_budget(seeded, preset, waypoints, frames, speed, eye,
                                                look, start):  # fmt: skip
    from studio.service import user_facing

    s, pid, key = seeded
    out, *_ = _within_budget(
        lambda: s.plan_path(pid, key, preset=preset, waypoints=waypoints, frames=frames,
                            speed=speed, eye_height=eye, look=look, start=start),
        STUDIO_MB, STUDIO_S,
    )  # fmt: skip
    if isinstance(out, Exception):
        assert isinstance(out, user_facing()), repr(out)
        assert "\n" not in str(out) and len(str(out)) < 300
    else:
        assert 2 <= len(out.trajectory) <= s.ctx.max_frames


@settings(SETTINGS, max_examples=60)
@given(
    frames=st.none() | ANY_INT,
    width=st.none() | ANY_INT,
    fov=st.none() | ANY_FLOAT,
    fps=st.none() | ANY_FLOAT,
    steps=st.none() | ANY_INT,
    memory_stride=st.none() | ANY_INT,
    max_retrieved=st.none() | ANY_INT,
    seed=st.none() | ANY_INT,
    depth_scale=st.none() | ANY_FLOAT,
)
def test_generate_options_are_checked_before_any_work(frames, width, fov, fps, steps,
                                                      memory_stride, max_retrieved, seed,
                                                      depth_scale):  # fmt: skip
    """``loci generate``'s numbers: out of range -> UsageError at once, in range -> within the
    documented limits (so nothing downstream is sized by an unchecked number)."""
    from argparse import Namespace

    from studio.cli.common import UsageError, check_numbers
    from studio.cli.world import GENERATE_LIMITS

    args = Namespace(frames=frames, width=width, fov=fov, fps=fps, steps=steps,
                     memory_stride=memory_stride, max_retrieved=max_retrieved, seed=seed,
                     depth_scale=depth_scale)  # fmt: skip
    out, *_ = _within_budget(lambda: check_numbers(args, GENERATE_LIMITS), 1, 1.0)
    given_values = {k: v for k, v in vars(args).items() if v is not None}
    inside = all(
        math.isfinite(v) and GENERATE_LIMITS[k][0] <= v <= GENERATE_LIMITS[k][1]
        for k, v in given_values.items()
    )
    assert (out is None) == inside, (out, given_values)
    if out is not None:
        assert isinstance(out, UsageError)


def test_the_cli_refuses_huge_numbers_with_one_line(tmp_path, capsys):
    from studio.cli import main
    from tests.helpers import PHOTOS

    photo = PHOTOS / "interior_office_03_dsine.png"
    for flags in (["--frames", "1000000000"], ["--width", "1000000"], ["--fov", "1e9"],
                  ["--fps", "0"], ["--memory-stride", "0"]):  # fmt: skip
        out, *_ = _within_budget(
            lambda flags=flags: main(["generate", str(photo), "--out", str(tmp_path / "w"),
                                      "--quiet", *flags]), 16, 10.0)  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert out == 2 and len(err) == 1 and flags[0] in err[0], (flags, err)


@settings(SETTINGS, max_examples=40)
@given(voxel=ANY_FLOAT | st.floats(0.02, 0.6))
def test_mesh_voxel_sizes_refuse_within_budget(lifted_world, voxel):
    from storage.errors import StorageError
    from storage.formats.bundle import read_bundle
    from studio.exports.lift import make_mesh, scene_depth

    bundle = read_bundle(lifted_world)
    depth = scene_depth(bundle)
    allowed = math.isfinite(voxel) and depth / 400 <= voxel <= depth / 5
    if allowed and voxel < depth / 100:
        return  # a legitimately fine mesh: correct, but slower than this property's budget
    out, *_ = _within_budget(lambda: make_mesh(bundle, voxel), 600, 60.0)
    if voxel != 0 and not allowed:
        assert isinstance(out, StorageError), repr(out)


@pytest.fixture(scope="module")
def lifted_world(tmp_path_factory):
    from studio.cli import main
    from tests.helpers import PHOTOS

    photo = PHOTOS / "interior_office_03_dsine.png"
    if not photo.is_file():
        pytest.skip(f"needs the shared photos in {PHOTOS} (../shared/data)")
    out = tmp_path_factory.mktemp("vox") / "w"
    assert main(["generate", str(photo), "--out", str(out), "--frames", "3", "--width", "64",
                 "--quiet"]) == 0  # fmt: skip
    return out


@settings(SETTINGS, max_examples=150)
@given(
    options=st.dictionaries(
        st.sampled_from(
            [
                "steps",
                "chunk_size",
                "guidance_scale",
                "conditioning_scale",
                "flow_shift",
                "vram_gb",
                "prompt",
                "synthesis",
            ]
        ),
        ANY_FLOAT | ANY_INT | st.text(max_size=50) | st.none(),
        max_size=8,
    )  # fmt: skip
)
def test_painter_options_are_checked_before_anything_is_built(options):
    """A generation's painter options (passed through by the API) are in range or refused."""
    from studio.errors import StudioError
    from studio.service import PAINTER_NUMBERS, checked_backends

    out, *_ = _within_budget(lambda: checked_backends(options), 1, 1.0)
    if isinstance(out, Exception):
        assert isinstance(out, StudioError), repr(out)
        return
    for k, (lo, hi, integer) in PAINTER_NUMBERS.items():
        if out.get(k) is not None:
            assert lo <= out[k] <= hi and (not integer or isinstance(out[k], int))
