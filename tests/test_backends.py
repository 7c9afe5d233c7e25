"""Backend selection: auto fallback, model listing, fast offline errors."""

from __future__ import annotations

import time

import pytest

from models.manager import MANAGER, ModelError, ensure_available, load_error, pick_dtype
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
