"""A crash of the studio during a generation, and an immediate restart (issue 11, item 3).

The real server (``python app.py``) runs as a child process. While it generates, it is killed
with SIGKILL and started again at once with the same flags: its previous instance's job must be
interrupted at start-up, not after the 45 s heartbeat limit, and Resume (through the public API)
must complete it with exactly the frames an uninterrupted run gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")

from models.paths.trajectory import make_preset  # noqa: E402
from models.pipeline import PipelineConfig, WorldPipeline  # noqa: E402
from storage.blobs import ArtifactStore  # noqa: E402
from storage.db import Repository, open_database  # noqa: E402
from storage.formats.images import load_photo  # noqa: E402
from studio.world_store import load_rgb  # noqa: E402
from tests.helpers import PHOTOS, ROOT  # noqa: E402
from tests.services import free_port  # noqa: E402

PHOTO = PHOTOS / "interior_office_03_dsine.png"
WIDTH, FRAMES = 96, 60


def _start(data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--data-dir", str(data),
         "--width", str(WIDTH)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the studio exited while starting"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the studio did not start within 120 s")


@pytest.mark.slow
def test_kill_during_generation_restart_at_once_and_resume_bit_identically(tmp_path: Path):
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = _start(data, port)
    try:
        client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path))
        pid, key, *_ = client.predict("Crash", api_name="/create_project")
        client.predict(pid, key, gradio_client.handle_file(str(PHOTO)), 0, api_name="/set_photo")
        client.predict(pid, key, "forward", "", FRAMES, 0, 0, "path", "end", api_name="/plan_path")
        client.submit(pid, key, True, api_name="/generate")
        db = open_database(f"sqlite:///{data / 'loci.db'}")
        repo = Repository(db)
        deadline = time.monotonic() + 120
        while True:  # wait for a few stored frames, then pull the plug
            jobs = repo.active_jobs(pid)
            if jobs and len(repo.list_frames(jobs[0].cell_id)) >= 4:
                break
            assert time.monotonic() < deadline, "the generation did not start"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(10)
        job = repo.get_job(jobs[0].id)
        assert job.status == "running"  # nobody has noticed yet: the bug's starting point
        kept = len(repo.list_frames(job.cell_id))
        assert 4 <= kept < FRAMES - 1

        proc = _start(data, port)  # the same flags, at once
        job = repo.get_job(job.id)
        waited = time.monotonic() - killed_at
        assert job.status == "interrupted", job.status
        assert waited < 45, f"took {waited:.0f} s: as slow as the heartbeat limit"
        assert repo.get_cell(job.cell_id).status == "interrupted"
        assert len(repo.list_frames(job.cell_id)) == kept  # every finished frame kept

        client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path))
        # Opening the project first fills the step choices of this API session (a fresh session
        # calling /resume directly is issue 11, item 7, fixed separately).
        client.predict(pid, key, api_name="/open_project")
        client.predict(pid, key, job.cell_id, api_name="/resume")
        assert repo.get_job(job.id).status == "done"
        store = ArtifactStore(data / "artifacts", db)
        cells = repo.list_cells(pid, key)
        frames = [f for c in cells for f in repo.list_frames(c.id)]
        stored = [load_rgb(store, f) for f in sorted(frames, key=lambda f: f.frame_index)]
        db.dispose()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)

    pipe = WorldPipeline(config=PipelineConfig(width=WIDTH))
    photo = load_photo(PHOTO)
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    traj = make_preset("forward", world.cameras[0], FRAMES, up=world.up,
                       scene_depth=world.scene_depth)  # fmt: skip
    direct = [world.seed_event.rgb] + [e.rgb for e in pipe.explore(world, traj.cameras[1:])]
    assert len(stored) == len(direct) == FRAMES
    for i, (a, b) in enumerate(zip(stored, direct, strict=True)):
        assert np.array_equal(a, b), f"frame {i} differs from the uninterrupted run"
