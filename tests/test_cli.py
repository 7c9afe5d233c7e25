"""`loci generate` on real photos, and every kind of bad input: clear message, exit 2, no output."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from storage.formats.bundle import read_bundle
from storage.formats.ply import read_pointcloud_ply
from studio.cli import main
from tests.helpers import PHOTOS, tum_trajectory

PHOTO = PHOTOS / "interior_office_03_dsine.png"


def run(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err
    return rc, err


def test_generate_writes_a_complete_bundle(tmp_path, capsys):
    out = tmp_path / "world"
    rc, err = run(
        [
            "generate",
            str(PHOTO),
            "--out",
            str(out),
            "--path",
            "orbit",
            "--frames",
            "6",
            "--width",
            "256",
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    b = read_bundle(out)
    assert b.indices == [0, 1, 2, 3, 4, 5]
    w = b.world
    assert w["convention"] == "opencv_c2w" and w["units"] == "meters"
    assert w["backends"] == {"depth": "layout", "synthesis": "reproject"}
    assert len(w["up"]) == 3 and abs(np.linalg.norm(w["up"]) - 1) < 1e-6
    assert (w["width"], w["height"]) == (256, 192)
    for i in b.indices:
        f = b.frame(i)
        assert {"K", "c2w", "memory_coverage", "retrieved"} <= f.keys()
        assert b.frame_rgb(i).shape == (192, 256, 3)
        d = b.frame_depth(i)
        assert d.dtype == np.float32 and (d > 0).all()
        m = b.frame_source_mask(i)
        assert set(np.unique(m)) <= {0, 255}
        assert abs((m > 0).mean() - f["memory_coverage"]) < 1e-3
    assert b.frame(0)["memory_coverage"] == 1.0
    traj = json.loads((out / "trajectory.json").read_text())
    assert len(traj["frames"]) == 6 and traj["width"] == 256
    xyz, rgb = read_pointcloud_ply(out / "pointcloud.ply")
    assert len(xyz) > 1000 and np.isfinite(xyz).all()
    assert (out / "video.mp4").stat().st_size > 1000
    # No temp folders left next to the output.
    assert [p.name for p in tmp_path.iterdir()] == ["world"]


def test_no_memory_flag_is_recorded(tmp_path, capsys):
    out = tmp_path / "w"
    rc, err = run(
        [
            "generate",
            str(PHOTO),
            "--out",
            str(out),
            "--frames",
            "3",
            "--width",
            "128",
            "--no-memory",
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    w = json.loads((out / "world.json").read_text())
    assert w["memory"] is False
    assert w["frames"][2]["retrieved"] == [1]


def _bad(tmp_path, capsys, args, expect):
    out = tmp_path / "out"
    rc, err = run(["generate", *args[:1], "--out", str(out), *args[1:], "--quiet"], capsys)
    assert rc == 2, err
    assert expect.lower() in err.lower(), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    return err


def test_zero_byte_photo(tmp_path, capsys):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _bad(tmp_path, capsys, [str(p)], "empty")


def test_not_an_image(tmp_path, capsys):
    p = tmp_path / "notes.jpg"
    p.write_text("hello, this is not a photo")
    _bad(tmp_path, capsys, [str(p)], "not an image")


def test_missing_photo(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(tmp_path / "nope.jpg")], "nope.jpg")


def test_decompression_bomb(tmp_path, capsys):
    # A real PNG header claiming 20000 x 20000 pixels (400 MP) over the 50 MP cap.
    p = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(p, optimize=False, compress_level=9)
    _bad(tmp_path, capsys, [str(p)], "pixels")


def test_cmyk_and_greyscale_photos_are_normalised(tmp_path, capsys):
    base = Image.open(PHOTO).convert("RGB").resize((160, 120))
    for mode in ("CMYK", "L", "RGBA"):
        p = tmp_path / f"photo_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        base.convert(mode).save(p)
        out = tmp_path / f"w_{mode}"
        rc, err = run(
            ["generate", str(p), "--out", str(out), "--frames", "2", "--width", "128", "--quiet"],
            capsys,
        )
        assert rc == 0, err
        assert read_bundle(out).frame_rgb(0).shape == (96, 128, 3)


def test_exif_rotated_photo_is_upright(tmp_path, capsys):
    img = Image.open(PHOTO).convert("RGB").resize((160, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    p = tmp_path / "rot.jpg"
    p.write_bytes(buf.getvalue())
    out = tmp_path / "w"
    rc, err = run(
        ["generate", str(p), "--out", str(out), "--frames", "2", "--width", "120", "--quiet"],
        capsys,
    )
    assert rc == 0, err
    assert read_bundle(out).frame_rgb(0).shape == (160, 120, 3)  # portrait now


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda t: t["frames"][1]["c2w"][0].__setitem__(3, float("nan")), "nan"),
        (lambda t: t.__setitem__("frames", []), "at least one"),
        (
            lambda t: t["frames"][1].__setitem__(
                "c2w", [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
            ),
            "rotation",
        ),
        (lambda t: t.update(width=480, height=480), "not the photo's camera"),
    ],
)
def test_bad_trajectories(tmp_path, capsys, mutate, expect):
    traj = tum_trajectory([0, 1, 2])
    mutate(traj)
    p = tmp_path / "traj.json"
    p.write_text(json.dumps(traj).replace("NaN", "NaN"))
    _bad(tmp_path, capsys, [str(PHOTO), "--path", str(p)], expect)


def test_unknown_preset_and_bad_width(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(PHOTO), "--path", "spiral"], "--path")
    _bad(tmp_path, capsys, [str(PHOTO), "--width", "500"], "multiple of 8")
    _bad(tmp_path, capsys, [str(PHOTO), "--frames", "0"], "--frames must be between 1 and")


def test_depth_file_errors(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(PHOTO), "--depth", "file"], "--depth-file")
    _bad(tmp_path, capsys, [str(PHOTO), "--depth-file", str(tmp_path / "missing.png")], "missing")


def test_offline_depth_model_names_the_alternative(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _bad(
        tmp_path,
        capsys,
        [str(PHOTO), "--depth", "depth-anything-v2", "--model", str(tmp_path / "no-such-model")],
        "layout",
    )
    assert "no-such-model" in err


def test_existing_output_is_never_clobbered(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    rc, err = run(["generate", str(PHOTO), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and "not empty" in err.lower() or "exists" in err.lower(), err
    assert (out / "precious.txt").read_text() == "keep me"


def test_failure_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    from models import pipeline

    def boom(self, *a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline.WorldPipeline, "_lift_depth", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        main(
            [
                "generate",
                str(PHOTO),
                "--out",
                str(out),
                "--frames",
                "3",
                "--width",
                "128",
                "--quiet",
            ]
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_cli_thread_policy_follows_the_machine_load_unless_told_otherwise():
    """Importing ``studio`` (as ``loci`` does) picks OpenMP's waiting before torch loads:
    passive on a busy machine, OpenMP's default on an idle one; a policy the user chose is
    left alone."""
    import os
    import subprocess
    import sys
    import time

    from studio import choose_wait_policy

    assert choose_wait_policy(None) == "PASSIVE"  # load unknown: the safe side
    assert choose_wait_policy(0.5) == "PASSIVE" and choose_wait_policy(6.0) == "PASSIVE"
    assert choose_wait_policy(0.2) is None

    # ``loci`` imports studio.cli, whose package ``studio`` runs first (before torch loads).
    code = (
        "import os, sys; import studio; "
        "print(os.environ.get('OMP_WAIT_POLICY', 'unset'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    policy, torch_loaded = run.stdout.split()
    assert torch_loaded == "False" and policy in ("PASSIVE", "unset"), run.stderr
    # A spinning process per core beside it: the machine is busy, the policy passive.
    spin = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.3)
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.stdout.split()[0] == "PASSIVE", run.stdout + run.stderr
    finally:
        for p in spin:
            p.kill()
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.split()[0] == "ACTIVE", run.stderr
