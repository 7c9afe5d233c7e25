"""Point cloud PLY and walkthrough MP4 writers."""

from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from storage.errors import StorageError
from storage.formats.ply import read_pointcloud_ply, write_pointcloud_ply
from storage.formats.video import VideoStream, write_video

plyfile = pytest.importorskip("plyfile")


# -- PLY -------------------------------------------------------------------------------------------


def _cloud(n: int = 500):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(n, 3)) * 3.0
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return xyz, rgb


def test_ply_round_trip_with_plyfile(tmp_path):
    xyz, rgb = _cloud()
    path = write_pointcloud_ply(tmp_path / "pc.ply", xyz, rgb)
    data = plyfile.PlyData.read(str(path))
    assert not data.text and data.byte_order == "<"
    assert [e.name for e in data.elements] == ["vertex"]
    vertex = data["vertex"]
    assert [p.name for p in vertex.properties] == ["x", "y", "z", "red", "green", "blue"]
    assert [vertex.data.dtype[i].str for i in range(6)] == ["<f4"] * 3 + ["|u1"] * 3
    np.testing.assert_array_equal(np.stack([vertex[a] for a in "xyz"], 1), xyz.astype(np.float32))
    np.testing.assert_array_equal(np.stack([vertex[c] for c in ("red", "green", "blue")], 1), rgb)
    xyz2, rgb2 = read_pointcloud_ply(path)
    assert xyz2.dtype == np.float32 and rgb2.dtype == np.uint8
    np.testing.assert_array_equal(xyz2, xyz.astype(np.float32))
    np.testing.assert_array_equal(rgb2, rgb)
    assert path.stat().st_size == len(path.read_bytes().split(b"end_header\n")[0]) + 11 + 15 * 500


def test_ply_empty_cloud(tmp_path):
    path = write_pointcloud_ply(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    assert plyfile.PlyData.read(str(path))["vertex"].count == 0
    xyz, rgb = read_pointcloud_ply(path)
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3)


def test_ply_reader_accepts_other_writers(tmp_path):
    xyz, rgb = _cloud(20)
    records = np.empty(
        20, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("nx", "f4"), ("red", "u1"),
                   ("green", "u1"), ("blue", "u1")],
    )  # fmt: skip
    for i, a in enumerate("xyz"):
        records[a] = xyz[:, i]
    records["nx"] = 1.0
    for i, c in enumerate(("red", "green", "blue")):
        records[c] = rgb[:, i]
    element = plyfile.PlyElement.describe(records, "vertex")
    for text, order in ((True, "="), (False, ">")):
        path = tmp_path / f"o_{text}.ply"
        plyfile.PlyData([element], text=text, byte_order=order).write(str(path))
        xyz2, rgb2 = read_pointcloud_ply(path)
        np.testing.assert_allclose(xyz2, xyz.astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(rgb2, rgb)


def test_ply_bad_inputs(tmp_path):
    xyz, rgb = _cloud(4)
    with pytest.raises(StorageError, match="uint8"):
        write_pointcloud_ply(tmp_path / "a.ply", xyz, rgb.astype(np.float32))
    with pytest.raises(StorageError, match=r"\(N, 3\)"):
        write_pointcloud_ply(tmp_path / "a.ply", xyz[:, :2], rgb)
    xyz[0, 0] = np.nan
    with pytest.raises(StorageError, match="NaN"):
        write_pointcloud_ply(tmp_path / "a.ply", xyz, rgb)
    assert not (tmp_path / "a.ply").exists()
    (tmp_path / "t.ply").write_text("hello")
    with pytest.raises(StorageError, match="not a PLY"):
        read_pointcloud_ply(tmp_path / "t.ply")
    good = write_pointcloud_ply(tmp_path / "g.ply", *_cloud(10))
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(StorageError, match="truncated"):
        read_pointcloud_ply(good)


# -- video -----------------------------------------------------------------------------------------


def _frames(n: int, width: int, height: int):
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : (i + 1) * width // n] = [200, 60, 30]
        yield frame


def _read_back(path) -> tuple[int, int, int]:
    capture = cv2.VideoCapture(str(path))
    count, size = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count += 1
        size = frame.shape[1], frame.shape[0]
    capture.release()
    return count, *size


def _ffprobe(path) -> tuple[int, int, int, str, str]:
    """(frames, width, height, codec, pixel format) of the first video stream."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames,width,height,codec_name,pix_fmt", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    stream = json.loads(out)["streams"][0]
    return (
        int(stream["nb_read_frames"]),
        int(stream["width"]),
        int(stream["height"]),
        stream["codec_name"],
        stream["pix_fmt"],
    )


HAS_FFMPEG = shutil.which("ffmpeg") is not None


@pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg not installed")
def test_write_video_h264(tmp_path):
    path = tmp_path / "video.mp4"
    codec = write_video(path, _frames(10, 64, 48), fps=12)
    assert codec == "h264"
    if shutil.which("ffprobe"):
        assert _ffprobe(path) == (10, 64, 48, "h264", "yuv420p")
    assert _read_back(path) == (10, 64, 48)
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: index before the media
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


@pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg not installed")
def test_odd_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    write_video(path, _frames(4, 33, 25))
    assert _read_back(path) == (4, 34, 26)


@pytest.mark.parametrize("how", ["backend", "env"])
def test_opencv_fallback(tmp_path, monkeypatch, how):
    path = tmp_path / "v.mp4"
    if how == "env":
        monkeypatch.setenv("LOCI_FFMPEG", "")  # pretend ffmpeg is not installed
        codec = write_video(path, _frames(10, 64, 48))
    else:
        codec = write_video(path, _frames(10, 64, 48), backend="opencv")
    assert codec == "mp4v"
    assert _read_back(path) == (10, 64, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_video_stream_incremental_and_abort(tmp_path):
    path = tmp_path / "s.mp4"
    stream = VideoStream(path, 64, 48, fps=8)
    for frame in _frames(5, 64, 48):
        stream.write(frame)
    assert not path.exists()  # nothing visible until close()
    stream.close()
    assert _read_back(path)[0] == 5
    assert stream.frames_written == 5
    with pytest.raises(StorageError, match="finished"):
        stream.write(next(_frames(1, 64, 48)))

    other = tmp_path / "aborted.mp4"
    stream = VideoStream(other, 64, 48)
    stream.write(next(_frames(1, 64, 48)))
    with pytest.raises(StorageError, match="shape"):
        stream.write(np.zeros((10, 10, 3), np.uint8))
    stream.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mp4"]


def test_failing_frame_source_leaves_old_video(tmp_path):
    path = tmp_path / "video.mp4"
    path.write_bytes(b"old")

    def broken():
        yield from _frames(3, 32, 32)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        write_video(path, broken())
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]
    with pytest.raises(StorageError, match="at least one frame"):
        write_video(tmp_path / "none.mp4", [])
