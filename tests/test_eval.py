"""Each evaluation protocol on a tiny slice of the real data, so the harness cannot rot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.metrics import PerceptualMetrics
from storage.errors import StorageError
from studio.cli import main
from studio.evaluation.protocols import EvalOptions, run_eval
from tests.helpers import TUM

TINY = EvalOptions(width=128, frames=4)


@pytest.fixture(autouse=True)
def html_plots_only(monkeypatch, request):
    # A PNG costs ~2 s of Chromium start-up; one test checks PNGs, the others skip them.
    if "png" not in request.node.name:
        monkeypatch.setenv("LOCI_PNG_PLOTS", "0")


def test_depth_protocol_writes_png_plots_when_chromium_exists(tmp_path):
    import shutil

    run_eval("depth", tmp_path, TINY)
    assert (tmp_path / "depth_absrel.html").is_file()
    if shutil.which("chromium"):
        png = tmp_path / "depth_absrel.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_posed_protocol_tiny(tmp_path):
    rep = run_eval("posed", tmp_path, TINY)["posed"]
    mem, nomem = rep["runs"]["memory"], rep["runs"]["no_memory"]
    assert len(mem["per_frame"]) == 3 and mem["depth"] == "file"
    f1 = mem["per_frame"][0]
    # Frame 1 sees only frame 0 in both runs: identical.
    assert f1["psnr_masked"] == nomem["per_frame"][0]["psnr_masked"]
    assert 15 < f1["psnr_masked"] < 40 and 0.4 < f1["coverage"] <= 1
    assert 0 < f1["ssim_masked"] <= 1 and f1["distance_m"] > 0
    assert mem["per_frame"][2]["distance_m"] > mem["per_frame"][0]["distance_m"]
    assert "psnr_common" in f1
    saved = json.loads((tmp_path / "report_posed.json").read_text())
    assert saved["runs"]["memory"]["median_psnr_masked"] == mem["median_psnr_masked"]
    assert any("LPIPS skipped" in n for n in saved["notes"])
    assert (tmp_path / "posed_psnr_vs_distance.html").stat().st_size > 1000
    assert (tmp_path / "plotly.min.js").is_file()


def test_revisit_protocol_tiny(tmp_path):
    from studio.evaluation.protocols import protocol_revisit

    rep = protocol_revisit(
        tmp_path, EvalOptions(width=128, frames=8), photos=["interior_office_03_dsine.png"]
    )
    runs = {(r["path"], r["memory"]): r for r in rep["runs"]}
    assert set(runs) == {
        ("loop", True),
        ("loop", False),
        ("figure-eight", True),
        ("figure-eight", False),
    }
    for r in runs.values():
        assert r["pairs"], r  # every path returns to poses it has seen
    assert runs[("loop", True)]["median_psnr_full"] > runs[("loop", False)]["median_psnr_full"]


def test_depth_protocol(tmp_path):
    rep = run_eval("depth", tmp_path, TINY)["depth"]
    lay = rep["backends"]["layout"]
    assert len(lay["per_frame"]) == 8
    assert 0.1 < lay["mean"]["median_scaled"]["abs_rel"] < 0.35
    assert lay["mean"]["metric"]["abs_rel"] > 0  # without scaling, reported too


def test_ablations_protocol_tiny(tmp_path):
    rep = run_eval("ablations", tmp_path, EvalOptions(width=96, frames=3))["ablations"]
    factors = {(r["factor"], r["value"]) for r in rep["rows"]}
    assert ("retrieved", "5") in factors and ("stride", "4") in factors
    assert ("align_depth", "False") in factors
    assert all(r["posed_median_psnr_masked"] is not None for r in rep["rows"])


def test_perceptual_hooks_with_tiny_torchscript_models(tmp_path):
    class Dist(torch.nn.Module):
        def forward(self, x, y):
            return ((x - y) ** 2).mean().reshape(1)

    class Feat(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    torch.jit.script(Dist()).save(str(tmp_path / "lpips.pt"))
    torch.jit.script(Feat()).save(str(tmp_path / "feat.pt"))
    pm = PerceptualMetrics(str(tmp_path / "lpips.pt"), str(tmp_path / "feat.pt"))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert pm.lpips_distance(a, a) == 0.0 and pm.lpips_distance(a, 255 - a) > 0
    imgs = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    same = pm.fid_score(imgs, imgs)
    assert abs(same) < 1e-6
    assert pm.fid_score(imgs, [x // 4 for x in imgs]) > 0.1  # darker: features move
    assert not pm.notes


def test_bad_sequences_name_the_file(tmp_path, capsys):
    import cv2

    seq = tmp_path / "seq"
    seq.mkdir()
    rc = main(["eval", "posed", "--out", str(tmp_path / "o"), "--sequence", str(seq)])
    assert rc == 2 and "cameras_opencv.json" in capsys.readouterr().err
    (seq / "cameras_opencv.json").write_text("{not json")
    rc = main(["eval", "posed", "--out", str(tmp_path / "o"), "--sequence", str(seq)])
    assert rc == 2 and "malformed" in capsys.readouterr().err

    cams = json.loads((TUM / "cameras_opencv.json").read_text())
    cams["frames"] = cams["frames"][:3]
    for f in cams["frames"]:
        for key in ("file", "depth"):
            if f.get(key):
                (seq / f[key]).parent.mkdir(exist_ok=True)
                (seq / f[key]).write_bytes((TUM / f[key]).read_bytes())
    cams["frames"][1]["file"] = "rgb/missing.png"
    (seq / "cameras_opencv.json").write_text(json.dumps(cams))
    rc = main(["eval", "posed", "--out", str(tmp_path / "o"), "--sequence", str(seq)])
    assert rc == 2 and "missing.png" in capsys.readouterr().err

    # A frame of another size than its intrinsics say.
    cams["frames"][1]["file"] = "rgb/x.png"
    cv2.imwrite(str(seq / "rgb" / "x.png"), np.zeros((100, 100, 3), np.uint8))
    (seq / "cameras_opencv.json").write_text(json.dumps(cams))
    with pytest.raises(StorageError, match="x.png is 100x100"):
        run_eval("posed", tmp_path / "o", EvalOptions(width=128), seq_dir=seq)

    # An empty depth map.
    cv2.imwrite(str(seq / cams["frames"][0]["depth"]), np.zeros((480, 640), np.uint16))
    cams["frames"][1]["file"] = cams["frames"][2]["file"]
    (seq / "cameras_opencv.json").write_text(json.dumps(cams))
    rc = main(["eval", "posed", "--out", str(tmp_path / "o"), "--sequence", str(seq)])
    err = capsys.readouterr().err
    assert rc == 2 and cams["frames"][0]["depth"].split("/")[-1] in err, err
