"""Backend selection: auto fallback, model listing, fast offline errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from models.geometry.cameras import intrinsics_from_fov
from models.manager import MANAGER, ModelError, ensure_available, load_error, pick_dtype
from studio import backends
from studio.backends import build_depth, build_synthesis, list_models
from studio.cli import main


def test_auto_falls_back_to_offline_with_a_note(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    notes: list[str] = []
    assert build_depth("auto", None, notes).name == "layout"
    assert build_synthesis("auto", None, notes).name == "reproject"
    assert len(notes) == 2 and "offline layout" in notes[0] and "reproject" in notes[1]


def test_named_backend_never_silently_substituted(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="layout"):
        build_depth("depth-anything-v2", str(tmp_path / "nope"), [])


def test_ensure_available_is_fast_and_clear_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t = time.perf_counter()
    with pytest.raises(ModelError) as e:
        ensure_available("sd-inpaint", "someone/some-model", "--synthesis reproject")
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert "someone/some-model" in msg and "--synthesis reproject" in msg
    assert "HF_HUB_OFFLINE" in msg
    d = tmp_path / "local-model"
    d.mkdir()
    assert ensure_available("sd-inpaint", str(d), "--synthesis reproject") == str(d)


def test_manager_caches_per_key():
    calls = []

    def loader(model_id, dtype, device):
        calls.append((model_id, dtype, device))
        return object()

    a = MANAGER.get("t", "m1", loader, device="cpu")
    assert MANAGER.get("t", "m1", loader, device="cpu") is a
    MANAGER.get("t", "m2", loader, device="cpu")
    assert len(calls) == 2 and calls[0][1] == pick_dtype("cpu")
    assert "offline" in str(load_error("x", "m", "--x y", OSError("boom")))


def test_models_command_lists_backends(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "layout" in out and "reproject" in out and "depth-anything-v2" in out
    rows = {r["backend"]: r for r in list_models()}
    assert rows["layout"]["weights"] == "not needed"
    assert rows["depth-anything-v2"]["weights"] == "missing"


def test_model_errors_are_one_line_exit_2(tmp_path, capsys):
    from tests.helpers import PHOTOS

    rc = main(
        [
            "generate",
            str(PHOTOS / "interior_office_03_dsine.png"),
            "--out",
            str(tmp_path / "w"),
            "--synthesis",
            "sd-inpaint",
            "--model",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--synthesis reproject" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_missing_optional_package_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *a, **k):
        if name.startswith("transformers"):
            raise ModuleNotFoundError("No module named 'transformers'", name="transformers")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ModelError, match=r"pip install -e '\.\[models\]'"):
        build_depth("depth-anything-v2", "/nonexistent/dir-abc", [])


# ---------------------------------------------------------------------------------------------
# auto depth (the default): Depth Anything V2 from the local cache, else layout, never a wait


def _fake_hub_cache(root, repo_id: str, make) -> None:
    """A Hugging Face hub cache under ``root`` holding ``repo_id`` as a snapshot, laid out as
    huggingface_hub writes it (models--org--name/snapshots/<rev>/ and refs/main)."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    make(repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)


@pytest.fixture
def fresh_manager():
    """The model cache emptied after the test: a tiny model loaded under a real hub id must
    not be handed to later tests asking for that id."""
    yield
    MANAGER.clear()


def test_auto_depth_uses_dav2_from_the_local_cache(monkeypatch, tmp_path, fresh_manager):
    pytest.importorskip("transformers")
    import huggingface_hub.constants as hub_constants

    from models.depth.depth_anything import DEFAULT_MODEL
    from tests.helpers import tiny_dav2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_cache(tmp_path / "hub", DEFAULT_MODEL, tiny_dav2)
    notes: list[str] = []
    t = time.perf_counter()
    depth = build_depth("auto", None, notes)
    assert depth.name == "depth-anything-v2" and depth.variant == "auto"
    assert notes == []  # nothing to say: the model was here
    assert time.perf_counter() - t < 10
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:24] = (150, 110, 80)
    rgb[24:] = (120, 120, 120)
    res = depth.estimate(rgb, intrinsics_from_fov(64, 48, 60.0))
    assert res.depth.shape == (48, 64) and (res.depth > 0).all()
    assert res.scale_policy.endswith("-via-layout") and res.meta["model"] == DEFAULT_MODEL


def test_auto_depth_offline_falls_back_at_once(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    # HF_HUB_OFFLINE set: no probe at all.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notes: list[str] = []
    t = time.perf_counter()
    assert build_depth("auto", None, notes).name == "layout"
    assert time.perf_counter() - t < 1.0
    assert "HF_HUB_OFFLINE" in notes[0] and "layout" in notes[0]
    # No HF_HUB_OFFLINE, and a hub address that never answers (a blackholed TEST-NET-1 host):
    # the probe gives up after REACH_TIMEOUT_S, well under a second.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://192.0.2.1")
    backends._reach_cache.clear()
    notes = []
    t = time.perf_counter()
    assert build_depth("auto", None, notes).name == "layout"
    assert time.perf_counter() - t < 1.0
    assert "cannot be reached" in notes[0]
    backends._reach_cache.clear()


def test_generate_defaults_to_auto_depth_with_a_note_in_world_json(tmp_path, capsys):
    from tests.helpers import PHOTOS

    out = tmp_path / "w"
    args = ["generate", str(PHOTOS / "interior_office_03_dsine.png"), "--out", str(out),
            "--frames", "2", "--width", "64", "--quiet"]  # fmt: skip
    assert main(args) == 0
    world = json.loads((out / "world.json").read_text())
    assert world["backends"]["depth"] == "layout"
    assert any(n.startswith("auto depth") and "layout" in n for n in world["notes"])
    assert "auto depth" in capsys.readouterr().err
