"""Bounded disk: the derived cache stays under its configured bound over a 20-round generate /
export soak, files handed to the browser leave Gradio's temp dir after their lifetime, and so do
uploads never attached to a project (the data dir only grows by what projects hold)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from studio.context import StudioContext
from studio.downloads import tree_size
from studio.service import Studio
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"
pytestmark = pytest.mark.skipif(
    not PHOTO.is_file(), reason=f"needs the shared photos in {PHOTOS} (../shared/data)"
)
FORMATS = ("ply", "glb", "colmap", "spz", "nerfstudio", "mp4", "obj", "splat")


def _mb(path: Path) -> float:
    return tree_size(path) / 1e6


@pytest.mark.slow
def test_disk_stays_bounded_over_a_20_round_soak(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    bound_mb = 4.0
    ctx = StudioContext(data_dir=tmp_path / "data", width=64, cache_max_mb=bound_mb,
                        cache_min_age_s=0, temp_ttl_s=2)  # fmt: skip
    s = Studio(ctx)
    pid, _view, key = s.create_project("Soak")
    s.set_photo(pid, key, str(PHOTO))
    rows = []
    for round_ in range(1, 21):
        s.save_path(pid, key, s.plan_path(pid, key, preset="forward", frames=4))
        ups = list(s.generate(pid, key))
        assert ups[-1].status == "done"
        s.export(pid, key, FORMATS[round_ % len(FORMATS)])
        row = {
            "round": round_,
            "frames": len(s.world(pid, key).frames),
            "artifacts": _mb(ctx.artifacts_dir),
            "db": sum(_mb(p) for p in ctx.data_dir.glob("loci.db*")),
            "cache": _mb(ctx.cache_dir),
            "handoff": _mb(ctx.handoff_dir),
            "oldest_handoff_s": max((time.time() - p.stat().st_mtime
                                     for p in ctx.handoff_dir.iterdir()), default=0.0),
        }  # fmt: skip
        rows.append(row)
        assert row["cache"] <= bound_mb, row
        # Handed-over files live 2 s (+ the 1 s between prunes, + this round's own work).
        assert row["oldest_handoff_s"] < 2 + 1 + 1.5, row
        time.sleep(0.3)
    print("\nround frames artifacts_MB db_MB cache_MB handoff_MB")
    for r in rows:
        print(f"{r['round']:5d} {r['frames']:6d} {r['artifacts']:12.2f} {r['db']:5.2f} "
              f"{r['cache']:8.2f} {r['handoff']:10.2f}")  # fmt: skip
    time.sleep(2.5)
    s.named_file(s.world(pid, key).frames[0].rgb_sha256, "last.png")
    assert _mb(ctx.handoff_dir) < 0.5
    # Every frame is still there and the cache rebuilds what it dropped.
    assert rows[-1]["frames"] == 1 + 20 * 3
    s.export(pid, key, "ply")
    s.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uploads_never_attached_leave_the_temp_dir(tmp_path):
    httpx = pytest.importorskip("httpx")
    from studio.app import build_app, launch_kwargs

    ctx = StudioContext(data_dir=tmp_path / "data", width=64, temp_ttl_s=2)
    app = build_app(ctx)
    app.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1",
                       server_port=_free_port(), quiet=True, **launch_kwargs(ctx))  # fmt: skip
    try:
        with httpx.Client(base_url=app.local_url.rstrip("/"), timeout=30) as client:
            r = client.post("/gradio_api/upload",
                            files={"files": ("big.jpg", b"\xff\xd8" + b"x" * 2_000_000)})  # fmt: skip
            path = Path(r.json()[0])
            assert path.is_file()
            for _ in range(40):  # deleted within the lifetime plus one check interval
                if not path.exists():
                    break
                time.sleep(0.25)
            assert not path.exists(), "an anonymous upload outlived its lifetime"
            assert not any(ctx.data_dir.rglob("big.jpg"))  # never reached the data dir
    finally:
        app.close()


def test_concurrent_handoffs_of_one_file_are_whole(tmp_path, monkeypatch):
    """Byte-identical downloads requested at the same moment (e.g. two jobs exporting the same
    world) each get the whole file: every copy is written under a name of its own, then
    renamed."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    s = Studio(StudioContext(data_dir=tmp_path / "data", width=64))
    data = np.random.default_rng(0).bytes(3_000_000)
    sha = s.store.put_bytes(data).sha256
    barrier = threading.Barrier(8)

    def fetch(i: int) -> bytes:
        barrier.wait()
        return s.named_file(sha, "world.ply").read_bytes()

    for _ in range(3):
        for p in (tmp_path / "gradio").rglob("world.ply"):
            p.unlink()
        with ThreadPoolExecutor(8) as pool:
            assert all(got == data for got in pool.map(fetch, range(8)))
    assert not [p for p in (tmp_path / "gradio").rglob("*.tmp")]  # no temp file left behind
    s.close()
