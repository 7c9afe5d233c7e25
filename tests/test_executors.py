"""The executor seam without a cluster: the Ray actor's class runs in this process on the shared
database and store, next to a front-end that only creates and follows jobs.

What Ray adds on top (placement, restarts, detached actors) is exercised end to end, with
``kill -9``, in ``tests/test_scale_e2e.py`` (slow).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from storage.db import Conflict
from studio.context import StudioContext
from studio.executors import EXECUTORS, build_executor
from studio.executors.ray_worker import LociWorker
from studio.service import Studio
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"


@pytest.fixture
def front(tmp_path: Path):
    ctx = StudioContext(data_dir=tmp_path / "front", width=96, poll_s=0.02, instance="front")
    studio = Studio(ctx, executor="inline")  # creates and follows jobs; runs none
    yield studio
    studio.close()


def _settings(front: Studio) -> dict:
    return {**front.ctx.to_dict(), "database_url": front.ctx.db_url,
            "artifacts": front.ctx.artifacts_url}  # fmt: skip


def test_registry_names_the_choices(front: Studio) -> None:
    assert set(EXECUTORS) == {"local", "ray", "inline"}
    with pytest.raises(ValueError, match="local, ray, inline"):
        build_executor("celery", front)


def test_worker_actor_claims_generates_and_restarts_under_its_name(front: Studio) -> None:
    pid, _, key = front.create_project("Workers")
    front.set_photo(pid, key, str(PHOTO))
    front.save_path(pid, key, front.plan_path(pid, key, preset="forward", frames=30))
    worker = LociWorker(Studio, _settings(front), "loci-worker-7")
    gate, release = threading.Event(), threading.Event()

    def hold(job_id: str, done: int) -> None:  # pause the worker after its third frame
        if done == 3:
            gate.set()
            release.wait(30)

    worker.runner.on_frame = hold
    try:
        gen = front.generate(pid, key)  # the worker's own loop claims it
        assert [next(gen).frames_done for _ in range(3)] == [1, 2, 3]
        assert gate.wait(30)
        job = front.repo.active_jobs(pid)[0]
        assert job.owner == "loci-worker-7" and job.owner_nonce == worker.info()["nonce"]
        # Ray restarts a killed actor under the same name: the new instance interrupts the
        # job its predecessor was running, at once.
        again = LociWorker(Studio, _settings(front), "loci-worker-7")
        assert again.info()["interrupted_at_start"] == [job.id]
        assert list(gen)[-1].status == "interrupted"
        release.set()  # the old instance wakes up: its late writes are refused
        with pytest.raises(Conflict):
            front.repo.update_progress(job.id, 4, nonce=job.owner_nonce)
        # Resume: the new instance claims it and finishes.
        ups = list(front.resume(pid, key, job.cell_id))
        assert ups[-1].status == "done" and ups[-1].frames_done == 29
        assert front.repo.get_job(job.id).owner_nonce == again.info()["nonce"]
        # Lift and export are calls on the worker; user errors come back as they are.
        assert worker.call("lift", pid, key, False, "")[0] == "ok"
        assert worker.call("export", pid, key, "nope", "")[:2] == ("error", "StudioError")
    finally:
        release.set()
        worker.stop()
        if "again" in locals():
            again.stop()
