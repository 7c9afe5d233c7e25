"""World bundle: write/read round trip, atomicity, overwrite rules, validation on read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from storage.atomic import atomic_write_json, save_npy_atomic, save_png_atomic
from storage.errors import BundleError, StorageError
from storage.formats.bundle import BundleInfo, BundleWriter, frame_relnames, read_bundle

H, W = 24, 32


def _frame(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(index)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 5.0, (H, W)).astype(np.float64)  # float64 in, float32 stored
    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True
    K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[2, 3] = 0.1 * index
    meta = {"K": K, "c2w": c2w, "memory_coverage": np.float32(0.5), "retrieved": [0]}
    return rgb, depth, mask, meta


def _write_world(out: Path, indices=(0, 1, 2), **kwargs) -> None:
    with BundleWriter(out, **kwargs) as bundle:
        for i in indices:
            bundle.write_frame(i, *_frame(i))
        bundle.write_json("trajectory.json", {"convention": "opencv_c2w", "frames": []})
        bundle.path("video.mp4").write_bytes(b"not really a video")
        bundle.finish({"up": [0, -1, 0], "backends": {"depth": "d", "synthesis": "s"}, "seed": 0})


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_round_trip(tmp_path):
    out = tmp_path / "world"
    _write_world(out, indices=(2, 0, 1))  # out of order on purpose
    info = read_bundle(out)
    assert isinstance(info, BundleInfo)
    world = json.loads((out / "world.json").read_text())
    assert world["version"] == 1 and world["convention"] == "opencv_c2w"
    assert world["units"] == "meters" and world["up"] == [0, -1, 0] and world["seed"] == 0
    assert world["width"] == W and world["height"] == H
    assert [f["index"] for f in world["frames"]] == [0, 1, 2]
    first = world["frames"][0]
    assert first["rgb"] == "frames/000000.png"
    assert first["depth"] == "frames/000000.depth.npy"
    assert first["source_mask"] == "frames/000000.source.png"
    assert first["memory_coverage"] == 0.5 and first["retrieved"] == [0]
    for i in range(3):
        rgb, depth, mask, meta = _frame(i)
        np.testing.assert_array_equal(info.frame_rgb(i), rgb)
        loaded = info.frame_depth(i)
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, depth.astype(np.float32))
        source = info.frame_source_mask(i)
        assert source.dtype == np.uint8 and set(np.unique(source)) == {0, 255}
        np.testing.assert_array_equal(source == 255, mask)
        np.testing.assert_allclose(info.K(i), meta["K"])
        np.testing.assert_allclose(info.c2w(i), meta["c2w"])
    assert info.trajectory() == {"convention": "opencv_c2w", "frames": []}
    assert info.path("video.mp4").read_bytes() == b"not really a video"
    assert len(info) == 3 and info.indices == [0, 1, 2]
    assert _leftovers(tmp_path) == []


def test_failure_inside_context_leaves_nothing(tmp_path):
    out = tmp_path / "world"
    with pytest.raises(RuntimeError, match="boom"):
        with BundleWriter(out) as bundle:
            bundle.write_frame(0, *_frame(0))
            assert bundle.temp_dir.parent == tmp_path and bundle.temp_dir.name.startswith(".world")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_exit_without_finish_saves_nothing(tmp_path):
    out = tmp_path / "world"
    with pytest.raises(BundleError, match="not finished"):
        with BundleWriter(out) as bundle:
            bundle.write_frame(0, *_frame(0))
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_non_empty_folder_up_front(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="already exists"):
        BundleWriter(out)
    # overwrite=True still refuses a folder that is not a Loci world: user files are never deleted.
    with pytest.raises(BundleError, match="not a Loci world"):
        BundleWriter(out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    file_target = tmp_path / "afile"
    file_target.write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        BundleWriter(file_target)


def test_existing_empty_folder_is_filled(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    _write_world(out)
    assert read_bundle(out).indices == [0, 1, 2]


def test_overwrite_replaces_old_world(tmp_path):
    out = tmp_path / "world"
    _write_world(out, indices=(0, 1, 2))
    with pytest.raises(BundleError):
        BundleWriter(out)
    _write_world(out, indices=(0,), overwrite=True)
    assert read_bundle(out).indices == [0]
    assert not (out / "frames" / "000002.png").exists()  # old files gone, not merged
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_old_world(tmp_path):
    out = tmp_path / "world"
    _write_world(out, indices=(0, 1))
    with pytest.raises(KeyboardInterrupt):
        with BundleWriter(out, overwrite=True) as bundle:
            bundle.write_frame(0, *_frame(5))
            raise KeyboardInterrupt
    info = read_bundle(out)
    assert info.indices == [0, 1]
    np.testing.assert_array_equal(info.frame_rgb(0), _frame(0)[0])
    assert _leftovers(tmp_path) == []


def test_bad_frame_inputs(tmp_path):
    with BundleWriter(tmp_path / "w") as bundle:
        rgb, depth, mask, meta = _frame(0)
        with pytest.raises(BundleError, match="uint8"):
            bundle.write_frame(0, rgb.astype(np.float32), depth, mask, meta)
        with pytest.raises(BundleError, match="depth shape"):
            bundle.write_frame(0, rgb, depth[:-1], mask, meta)
        with pytest.raises(BundleError, match="must not set"):
            bundle.write_frame(0, rgb, depth, mask, {"rgb": "x"})
        with pytest.raises(BundleError, match="JSON"):
            bundle.write_frame(0, rgb, depth, mask, {"bad": object()})
        with pytest.raises(BundleError, match="not a valid file name"):
            bundle.path("../escape.txt")
        with pytest.raises(BundleError, match="at least one frame"):
            bundle.finish({})
        bundle.write_frame(0, rgb, depth, mask.astype(np.uint8), meta)  # 0/1 uint8 mask works
        bundle.finish({})
    assert set(np.unique(read_bundle(tmp_path / "w").frame_source_mask(0))) == {0, 255}


def test_errors_are_storage_errors():
    assert issubclass(BundleError, StorageError) and issubclass(BundleError, ValueError)


def test_read_not_a_world(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        read_bundle(tmp_path / "missing")
    with pytest.raises(BundleError, match=r"not a Loci world \(no world.json\)"):
        read_bundle(tmp_path)
    (tmp_path / "world.json").write_text("{not json")
    with pytest.raises(BundleError, match="damaged"):
        read_bundle(tmp_path)


def test_read_refuses_newer_version(tmp_path):
    out = tmp_path / "world"
    _write_world(out)
    world = json.loads((out / "world.json").read_text())
    world["version"] = 2
    atomic_write_json(out / "world.json", world)
    with pytest.raises(BundleError, match="version 2.*version 1"):
        read_bundle(out)


def test_read_reports_missing_frame_file(tmp_path):
    out = tmp_path / "world"
    _write_world(out)
    (out / "frames" / "000001.depth.npy").unlink()
    with pytest.raises(BundleError, match=r"frames/000001\.depth\.npy"):
        read_bundle(out)


def test_read_refuses_paths_outside_the_world(tmp_path):
    out = tmp_path / "world"
    _write_world(out)
    world = json.loads((out / "world.json").read_text())
    world["frames"][0]["rgb"] = "../../etc/passwd"
    atomic_write_json(out / "world.json", world)
    with pytest.raises(BundleError, match="not a valid file name"):
        read_bundle(out)


def test_frame_relnames():
    assert frame_relnames(12) == {
        "rgb": "frames/000012.png",
        "depth": "frames/000012.depth.npy",
        "source_mask": "frames/000012.source.png",
    }


def test_atomic_helpers(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": np.arange(3), "y": np.float64(2)})
    assert json.loads(path.read_text()) == {"x": [0, 1, 2], "y": 2.0}
    save_npy_atomic(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    assert np.load(tmp_path / "a.npy").shape == (2, 3)
    save_png_atomic(tmp_path / "a.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(StorageError):
        save_png_atomic(tmp_path / "b.png", np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert not (tmp_path / "nan.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
