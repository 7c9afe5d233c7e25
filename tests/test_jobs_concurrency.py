"""One generation per project under any load (issue 11, item 2) and many projects at once on
PostgreSQL (issue 16), through the studio's service with several job slots.

Both databases are real: a SQLite file, and a PostgreSQL server the tests start
(``tests/services.py``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db import GenerationBusy
from studio.context import StudioContext
from studio.service import Studio
from tests.helpers import PHOTOS
from tests.services import new_pg_database

PHOTO = PHOTOS / "interior_office_03_dsine.png"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loci.db'}"
    return new_pg_database(request.getfixturevalue("pg_server"))


def _studio(tmp_path: Path, url: str, slots: int) -> Studio:
    ctx = StudioContext(data_dir=tmp_path / "data", database_url=url, width=96,
                        concurrent_jobs=slots, poll_s=0.05)  # fmt: skip
    return Studio(ctx)


def test_racing_clients_exactly_one_generates(tmp_path: Path, database_url: str) -> None:
    """N clients released by a barrier press Generate in one project, with N job slots: one
    runs, the others get the readable refusal at once, and the world has each index once."""
    n = 6
    studio = _studio(tmp_path, database_url, slots=n)
    try:
        pid, _, key = studio.create_project("Race")
        studio.set_photo(pid, key, str(PHOTO))
        studio.save_path(pid, key, studio.plan_path(pid, key, preset="forward", frames=6))
        barrier = threading.Barrier(n)
        outcomes: list[object] = [None] * n

        def client(i: int) -> None:
            barrier.wait()
            try:
                outcomes[i] = list(studio.generate(pid, key))[-1].status
            except Exception as exc:  # noqa: BLE001 - checked below
                outcomes[i] = exc

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert outcomes.count("done") == 1, outcomes
        refusals = [o for o in outcomes if o != "done"]
        assert all(isinstance(o, GenerationBusy) for o in refusals), outcomes
        assert all("already running in this project" in str(o) for o in refusals)
        ws = studio.world(pid, key)
        assert [c.kind for c in ws.cells] == ["photo", "trajectory", "generation"]
        indices = [f.frame_index for f in ws.frames]
        assert indices == list(range(6))  # the seed + 5 frames, each index once
    finally:
        studio.close()


def test_eight_generations_in_eight_projects_on_postgresql(
    tmp_path: Path,
    pg_server: str,
) -> None:
    """8 generations (different projects) run at once on PostgreSQL: all finish, with zero
    lock, deadlock or serialization errors (PostgreSQL's own counters say so)."""
    url = new_pg_database(pg_server)
    studio = _studio(tmp_path, url, slots=8)
    try:
        projects = []
        for i in range(8):
            pid, _, key = studio.create_project(f"Room {i}")
            studio.set_photo(pid, key, str(PHOTO))
            studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=5))
            projects.append((pid, key))
        barrier = threading.Barrier(8)
        results: list[object] = [None] * 8

        def run(i: int) -> None:
            pid, key = projects[i]
            barrier.wait()
            try:
                results[i] = [u.frames_done for u in studio.generate(pid, key)]
            except Exception as exc:  # noqa: BLE001 - checked below
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for i, r in enumerate(results):
            assert isinstance(r, list) and r[-1] == 4, (i, r)
            assert r[:-1] == [1, 2, 3, 4], (i, r)  # every frame streamed once, in order
        for pid, key in projects:
            ws = studio.world(pid, key)
            assert ws.cells[-1].status == "done"
            assert [f.frame_index for f in ws.frames] == list(range(5))
        with studio.db.engine.connect() as conn:
            deadlocks, conflicts = conn.execute(
                text(
                    "SELECT deadlocks, conflicts FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )  # fmt: skip
            ).one()
            failed = conn.execute(text("SELECT count(*) FROM jobs WHERE status != 'done'")).scalar()
        assert (deadlocks, conflicts, failed) == (0, 0, 0)
    finally:
        studio.close()
