"""Past one machine, end to end (issue 16): a local Ray cluster (2 CPUs), PostgreSQL and an S3
emulator (moto's server mode, standing for AWS S3 / MinIO / R2), all real processes.

Two generations in two projects run on two Ray actors at once; the front-end streams both (one
through the Studio service, one through gradio_client against the real Gradio app); every frame
lands in PostgreSQL and the bucket; ``kill -9`` of one actor's process mid-run leaves its job
interrupted with every finished frame, and Resume completes it bit-identically to an
uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from storage.formats.images import load_photo
from studio.context import StudioContext
from studio.world_store import load_rgb
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"
WIDTH, FRAMES = 96, 60


def _direct(preset: str) -> list[np.ndarray]:
    """The frames of an uninterrupted, in-memory run (no database, no workers)."""
    pipe = WorldPipeline(config=PipelineConfig(width=WIDTH))
    photo = load_photo(PHOTO)
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    traj = make_preset(preset, world.cameras[0], FRAMES, up=world.up,
                       scene_depth=world.scene_depth)  # fmt: skip
    return [world.seed_event.rgb] + [e.rgb for e in pipe.explore(world, traj.cameras[1:])]


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


@pytest.mark.slow
def test_two_generations_on_two_ray_actors_kill_one_and_resume(
    tmp_path: Path,
    pg_url: str,
    s3_url: str,
) -> None:
    ray = pytest.importorskip("ray", reason="pip install 'loci[scale]' for the Ray executor")
    gradio_client = pytest.importorskip("gradio_client")
    from studio.app import build_app, launch_kwargs
    from studio.service import Studio

    # After the S3 fixture set AWS_* (the Ray processes inherit the environment).
    ray.init(num_cpus=2, namespace="loci", include_dashboard=False, log_to_driver=False)
    studio = app = None
    try:
        ctx = StudioContext(data_dir=tmp_path / "front", database_url=pg_url, artifacts=s3_url,
                            width=WIDTH, executor="ray", ray_workers=2, poll_s=0.05)  # fmt: skip
        studio = Studio(ctx)
        assert {w["name"] for w in studio.executor.workers()} == {"loci-worker-0", "loci-worker-1"}
        projects = {}
        for name, preset in (("A", "forward"), ("B", "orbit")):
            pid, _, key = studio.create_project(name)
            studio.set_photo(pid, key, str(PHOTO))
            studio.save_path(pid, key, studio.plan_path(pid, key, preset=preset, frames=FRAMES))
            projects[name] = (pid, key, preset)
        app = build_app(studio=studio)
        app.queue(default_concurrency_limit=4).launch(
            prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(ctx)
        )
        client = gradio_client.Client(app.local_url, verbose=False, download_files=str(tmp_path))

        pid_a, key_a, _ = projects["A"]
        pid_b, key_b, _ = projects["B"]
        stream_a = client.submit(pid_a, key_a, True, api_name="/generate")  # through Gradio
        updates_b: list = []
        follower_b = threading.Thread(
            target=lambda: updates_b.extend(studio.generate(pid_b, key_b)), daemon=True
        )
        follower_b.start()

        # Both run at once, each on its own actor.
        def running() -> list | None:
            found = [j for p in (pid_a, pid_b) for j in studio.repo.active_jobs(p)
                     if j.status == "running"]  # fmt: skip
            return found if len(found) == 2 else None

        jobs = _wait(running, 120, "two running jobs")
        assert {j.owner for j in jobs} == {"loci-worker-0", "loci-worker-1"}
        job_b = next(j for j in jobs if j.project_id == pid_b)
        cell_b = job_b.cell_id
        _wait(lambda: len(studio.repo.list_frames(cell_b)) >= 5, 120, "frames of B")
        os.kill(job_b.owner_pid, signal.SIGKILL)  # the actor's process dies mid-run
        follower_b.join(120)
        assert updates_b and updates_b[-1].status == "interrupted", updates_b[-1:]
        kept = len(studio.repo.list_frames(cell_b))
        assert 5 <= kept < FRAMES - 1
        assert studio.repo.get_job(job_b.id).frames_done == kept  # every finished frame kept
        assert [u.frames_done for u in updates_b[:-1]] == list(range(1, kept + 1))  # streamed

        outputs_a = list(stream_a)
        assert outputs_a[-1][2].startswith(f"done: {FRAMES - 1}/{FRAMES - 1} frames")
        assert sum(1 for o in outputs_a if o[0]) >= 2  # frames arrived while it ran

        # A signed file link of the studio sends the browser to the bucket (presigned, short).
        first = studio.repo.list_frames(studio.world(pid_a, key_a).photo.id)[0]
        link = app.local_url.rstrip("/") + studio.file_url(pid_a, key_a, first.rgb_sha256, "f.png")
        with urllib.request.urlopen(link, timeout=30) as response:
            assert "Signature=" in response.url and response.url.startswith("http://127.0.0.1")
            assert response.read() == studio.store.read_bytes(first.rgb_sha256)

        # Resume on any worker (the restarted actor or the other one); this front-end goes away
        # after two frames, and a new front-end (another process's studio) watches it finish.
        resumed = studio.resume(pid_b, key_b, cell_b)
        first_two = [next(resumed).frames_done, next(resumed).frames_done]
        assert first_two == [kept + 1, kept + 2]
        resumed.close()
        app.close()
        studio.close()  # the front-end stops; the detached actors go on
        app = None
        studio = Studio(StudioContext(**{**ctx.to_dict(), "instance": "front-end-2"}))
        watched = list(studio.watch(pid_b, key_b))
        assert watched[-1].status == "done" and watched[-1].frames_done == FRAMES - 1
        # Lift and export run on an actor; the file comes back from the bucket.
        with open(studio.export(pid_a, key_a, "ply"), "rb") as handle:
            assert handle.read(3) == b"ply"

        # Every frame is in PostgreSQL and its files are in the bucket.
        for name, (pid, key, preset) in projects.items():
            ws = studio.world(pid, key)
            assert [f.frame_index for f in ws.frames] == list(range(FRAMES))
            for f in ws.frames:
                for sha in (f.rgb_sha256, f.depth_sha256, f.mask_sha256):
                    assert studio.store._stored_size(sha) == studio.store.get(sha).size
            stored = [load_rgb(studio.store, f) for f in ws.frames]
            for i, (a, b) in enumerate(zip(stored, _direct(preset), strict=True)):
                assert np.array_equal(a, b), f"project {name}: frame {i} differs"
        assert (
            studio.store.url.startswith("s3://") and studio.db.engine.dialect.name == "postgresql"
        )
    finally:
        if app is not None:
            app.close()
        if studio is not None:
            studio.executor.shutdown_workers()
            studio.close()
        ray.shutdown()
