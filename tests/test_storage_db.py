"""Database layer: schema and migrations, share keys, history, forks, jobs, frames, artifact store.

Every test runs on a fresh SQLite file, and again on a real PostgreSQL server that the tests
start (``tests/services.py``: Debian's postgresql 15 in a temp dir on a free port; a fresh
database per test). ``LOCI_TEST_DATABASE_URL`` points the PostgreSQL runs at an existing
throwaway database instead (its tables are dropped and recreated).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import IntegrityError

import storage.atomic
from storage.blobs import ArtifactStore
from storage.db import (
    Artifact,
    CellArtifact,
    Conflict,
    Database,
    Forbidden,
    GenerationBusy,
    HistoryCell,
    Job,
    NotFound,
    Owner,
    Project,
    Repository,
    WorldFrame,
    open_database,
)
from storage.db.models import Base, utcnow
from storage.errors import StorageError
from tests.services import new_pg_database

TABLES = {"projects", "history_cells", "artifacts", "cell_artifacts", "world_frames", "jobs"}
ENV_URL = os.environ.get("LOCI_TEST_DATABASE_URL")


def _wipe(url: str) -> None:
    """Drop every table of a shared (env) test database so each test starts empty."""
    db = open_database(url)
    with db.engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'loci.db'}"
    if ENV_URL:
        _wipe(ENV_URL)
        return ENV_URL
    return new_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def db(db_url: str) -> Database:
    database = open_database(db_url, migrate=True)
    yield database
    database.dispose()


@pytest.fixture
def repo(db: Database) -> Repository:
    return Repository(db)


@pytest.fixture
def store(db: Database, tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", db)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@contextmanager
def _old_schema(tmp_path: Path, revision: str) -> Iterator[tuple[Database, Any]]:
    """A SQLite database migrated only to ``revision``; yields it and a connection (inside one
    write transaction) for inserting rows the way that release stored them."""
    from alembic import command
    from alembic.config import Config

    from storage.db.engine import MIGRATIONS_DIR

    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = open_database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    with db.write_engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.exec_driver_sql(
            "INSERT INTO projects (id, name, view_key_hash, edit_key_hash, created_at, updated_at)"
            " VALUES ('p1', 'Old', 'v', 'e', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        yield db, conn


# ---- engine and migrations ------------------------------------------------------------------
def test_migrations_create_schema_from_empty_and_are_idempotent(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db = open_database(db_url)
    assert TABLES.isdisjoint(inspect(db.engine).get_table_names())
    assert db.current_revision() is None
    assert db.migrate() == "0003"
    assert TABLES <= set(inspect(db.engine).get_table_names())
    assert db.migrate() == "0003"  # second run: nothing to do, no error
    assert db.current_revision() == "0003"
    with db.engine.connect() as conn:  # the migrations build exactly the models' schema
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    db.dispose()


def test_upgrade_from_0001_keeps_saved_rows(tmp_path: Path) -> None:
    """A database made by the first release upgrades in place: projects and frames survive."""
    with _old_schema(tmp_path, "0001") as (db, _conn):
        pass
    assert db.current_revision() == "0001"
    assert db.migrate() == "0003"
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM projects").scalar() == "Old"
        columns = {c["name"] for c in inspect(conn).get_columns("world_frames")}
    assert "meta" in columns
    db.dispose()


def test_sqlite_pragmas_on_every_connection(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}", migrate=True)
    conns = [db.engine.connect() for _ in range(3)]  # three distinct pooled connections
    for conn in conns:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    for conn in conns:
        conn.close()
    db.dispose()


def test_foreign_keys_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        with db.write_session() as session:
            session.add(HistoryCell(project_id="no-such-project", position=0, kind="photo"))


# ---- projects and keys ----------------------------------------------------------------------
def test_keys_are_random_hashed_and_checked_by_the_server(
    repo: Repository, db: Database, db_url: str
) -> None:
    project, view_key, edit_key = repo.create_project("  Kitchen ")
    assert project.name == "Kitchen"
    assert view_key != edit_key
    for key in (view_key, edit_key):
        assert len(key) * 6 >= 128  # url-safe base64: 6 bits per character
    with db.read_session() as session:
        row = session.get(Project, project.id)
        stored = {row.view_key_hash, row.edit_key_hash}
    assert view_key not in stored and edit_key not in stored
    assert all(len(h) == 64 for h in stored)
    if db_url.startswith("sqlite"):
        raw = Path(db_url.removeprefix("sqlite:///")).read_bytes()
        wal = Path(db_url.removeprefix("sqlite:///") + "-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        assert view_key.encode() not in raw and edit_key.encode() not in raw

    assert repo.open_project(project.id, edit_key)[1] is True
    assert repo.open_project(project.id, view_key)[1] is False
    with pytest.raises(Forbidden):
        repo.open_project(project.id, "x" * 32)
    with pytest.raises(Forbidden):
        repo.open_project(project.id, "")
    with pytest.raises(Forbidden):
        repo.add_cell(project.id, view_key, "photo", {"name": "a.jpg"})
    with pytest.raises(Forbidden):
        repo.rename(project.id, view_key, "Hacked")
    with pytest.raises(Forbidden):
        repo.delete_project(project.id, view_key)
    with pytest.raises(Forbidden):
        repo.revert_last_cell(project.id, view_key)
    assert repo.list_cells(project.id, view_key) == []  # reading is fine with the view key
    assert repo.rename(project.id, edit_key, "Big kitchen").name == "Big kitchen"
    with pytest.raises(NotFound):
        repo.open_project("missing", edit_key)

    repo.delete_project(project.id, edit_key)
    with pytest.raises(NotFound):
        repo.open_project(project.id, edit_key)
    with pytest.raises(NotFound):
        repo.add_cell(project.id, edit_key, "photo")
    with db.read_session() as session:  # soft delete: the row is still there
        assert session.get(Project, project.id).deleted_at is not None
    with pytest.raises(StorageError):
        repo.create_project("   ")


# ---- history cells --------------------------------------------------------------------------
def test_cells_in_order_polling_status_and_revert(repo: Repository) -> None:
    project, view_key, edit_key = repo.create_project("Hall")
    photo = repo.add_cell(project.id, edit_key, "photo", {"fov": 60}, author="ann")
    traj = repo.add_cell(project.id, edit_key, "trajectory", {"preset": "orbit"}, parent=photo.id)
    seen = traj.updated_at
    gen = repo.add_cell(
        project.id, edit_key, "generation", {"frames": 8}, parent=traj.id, author="bob"
    )
    assert [c.position for c in (photo, traj, gen)] == [0, 1, 2]
    cells = repo.list_cells(project.id, view_key)
    assert [c.kind for c in cells] == ["photo", "trajectory", "generation"]
    assert cells[0].params == {"fov": 60} and cells[0].author == "ann"
    assert cells[2].parent_cell_id == traj.id and cells[2].status == "pending"
    assert cells[0].created_at.tzinfo is not None

    assert [c.id for c in repo.cells_since(project.id, view_key, seen)] == [gen.id]
    failed = repo.update_cell_status(photo.id, "failed", error="bad photo")
    assert failed.status == "failed" and failed.error == "bad photo"
    assert {c.id for c in repo.cells_since(project.id, view_key, seen)} == {photo.id, gen.id}
    with pytest.raises(StorageError):
        repo.update_cell_status(photo.id, "exploded")
    with pytest.raises(StorageError):
        repo.add_cell(project.id, edit_key, "painting")
    other, _, other_edit = repo.create_project("Other")
    with pytest.raises(NotFound):
        repo.add_cell(other.id, other_edit, "lift", parent=gen.id)  # parent from another project

    assert repo.revert_last_cell(project.id, edit_key).id == gen.id
    assert [c.id for c in repo.list_cells(project.id, view_key)] == [photo.id, traj.id]
    assert repo.add_cell(project.id, edit_key, "lift").position == 2
    job_cell = repo.add_cell(project.id, edit_key, "generation")
    repo.create_job(job_cell.id, total=4)
    with pytest.raises(Conflict):
        repo.revert_last_cell(project.id, edit_key)  # still running


def test_two_threads_writing_concurrently(repo: Repository) -> None:
    project, view_key, edit_key = repo.create_project("Busy")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for i in range(50):
                cell = repo.add_cell(project.id, edit_key, "trajectory", {"i": i}, author=name)
                repo.update_cell_status(cell.id, "done")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cells = repo.list_cells(project.id, view_key)
    assert [c.position for c in cells] == list(range(100))
    assert sorted(c.author for c in cells).count("a") == 50
    assert all(c.status == "done" for c in cells)


# ---- forks and artifacts --------------------------------------------------------------------
def test_fork_copies_history_and_shares_artifacts(
    repo: Repository, store: ArtifactStore, db: Database
) -> None:
    project, view_key, edit_key = repo.create_project("Source")
    photo = repo.add_cell(project.id, edit_key, "photo", {"fov": 55})
    art = store.put_bytes(b"\x89PNG fake photo", "image/png")
    repo.link_artifact(photo.id, art.sha256, "photo")
    repo.link_artifact(photo.id, art.sha256, "photo")  # idempotent
    gen = repo.add_cell(project.id, edit_key, "generation", {"frames": 2}, parent=photo.id)
    repo.add_frame(gen.id, 0, art.sha256, np.eye(3), np.eye(4), memory_coverage=0.5)
    repo.add_cell(project.id, edit_key, "lift", parent=gen.id)
    files_before = _files(store.root)

    fork, fork_view, fork_edit = repo.fork(
        project.id, view_key, from_cell=gen.id
    )  # a view key may fork
    assert fork.id != project.id and fork.forked_from_id == project.id
    assert fork.name == "Source (fork)"
    assert repo.open_project(fork.id, fork_edit)[1] is True
    with pytest.raises(Forbidden):
        repo.open_project(fork.id, edit_key)  # the original's keys do not open the fork
    cells = repo.list_cells(fork.id, fork_view)
    assert [c.kind for c in cells] == ["photo", "generation"]
    assert {c.id for c in cells}.isdisjoint({photo.id, gen.id})
    assert cells[1].parent_cell_id == cells[0].id
    assert [a.sha256 for a in repo.cell_artifacts(cells[0].id, "photo")] == [art.sha256]
    frames = repo.list_frames(cells[1].id)
    assert (
        len(frames) == 1 and frames[0].rgb_sha256 == art.sha256 and frames[0].memory_coverage == 0.5
    )
    assert _files(store.root) == files_before  # shared by hash, not copied
    with db.read_session() as session:
        assert len(session.scalars(select(Artifact)).all()) == 1
        assert len(session.scalars(select(CellArtifact)).all()) == 2
    whole, _, whole_edit = repo.fork(project.id, edit_key, name="Copy")
    assert whole.name == "Copy" and len(repo.list_cells(whole.id, whole_edit)) == 3
    with pytest.raises(NotFound):
        repo.fork(project.id, edit_key, from_cell=cells[0].id)  # a cell of another project


def test_artifact_store_dedupes_and_verifies(
    store: ArtifactStore, db: Database, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    first = store.put_bytes(data, "application/octet-stream")
    second = store.put_bytes(data, "application/octet-stream")
    assert first.sha256 == second.sha256 and first.size == 1000
    path = store.path_of(first.sha256)
    assert path == store.root / first.sha256[:2] / first.sha256[2:]
    assert _files(store.root) == [path]
    with store.open(first.sha256) as handle:
        assert handle.read() == data
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    assert store.put_file(src).sha256 == first.sha256
    with db.read_session() as session:
        assert len(session.scalars(select(Artifact)).all()) == 1
    assert store.verify(first.sha256)
    other = store.put_bytes(b"other", "text/plain")
    assert len(_files(store.root)) == 2 and store.read_bytes(other.sha256) == b"other"

    path.write_bytes(b"tampered" + data[8:])  # same size, wrong content
    assert not store.verify(first.sha256)
    assert not store.verify("0" * 64)
    with pytest.raises(NotFound):
        store.path_of("../../etc/passwd")
    with pytest.raises(NotFound):
        store.put_file(tmp_path / "missing.bin")


def test_failed_artifact_write_leaves_no_file_and_no_row(
    store: ArtifactStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage.atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        store.put_bytes(b"never stored", "text/plain")
    monkeypatch.undo()
    assert _files(store.root) == []  # not even a temp file

    def broken_insert(*args: object, **kwargs: object) -> Artifact:
        raise RuntimeError("database went away")

    monkeypatch.setattr(store, "_insert_row", broken_insert)
    with pytest.raises(RuntimeError):
        store.put_bytes(b"never stored either", "text/plain")
    monkeypatch.undo()
    assert _files(store.root) == []
    with db.read_session() as session:
        assert session.scalars(select(Artifact)).all() == []


# ---- jobs and frames ------------------------------------------------------------------------
def test_jobs_progress_stale_interrupted_and_resume(repo: Repository, db: Database) -> None:
    project, view_key, edit_key = repo.create_project("Jobs")
    cell = repo.add_cell(project.id, edit_key, "generation", {"frames": 10})
    job = repo.create_job(cell.id, total=10)
    assert job.status == "running" and repo.get_cell(cell.id).status == "running"
    with pytest.raises(Conflict):
        repo.create_job(cell.id)
    job = repo.update_progress(job.id, 4)
    assert (job.frames_done, job.total, job.progress) == (4, 10, pytest.approx(0.4))
    assert repo.heartbeat(job.id).heartbeat_at >= job.heartbeat_at
    assert repo.mark_interrupted_stale(timedelta(minutes=1)) == []  # alive

    with db.write_session() as session:  # the process died an hour ago
        session.execute(
            update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    stale = repo.mark_interrupted_stale(60.0)
    assert [j.id for j in stale] == [job.id]
    job = repo.get_job(job.id)
    assert job.status == "interrupted" and job.frames_done == 4
    assert repo.get_cell(cell.id).status == "interrupted"
    assert any(c.status == "interrupted" for c in repo.list_cells(project.id, view_key))
    with pytest.raises(Conflict):
        repo.update_progress(job.id, 5)  # the worker learns it should stop

    job = repo.resume_job(job.id)  # back in the queue for a worker
    assert job.status == "pending" and job.frames_done == 4 and job.owner is None
    assert repo.get_cell(cell.id).status == "pending"
    worker = Owner.this_process("worker-a")
    job = repo.start_job(job.id, worker)
    assert job.status == "running" and job.owner == "worker-a" and job.frames_done == 4
    assert repo.start_job(job.id, Owner.this_process("worker-b")) is None  # taken already
    repo.update_progress(job.id, 10)
    done = repo.finish_job(job.id)
    assert done.status == "done" and done.progress == 1.0 and done.finished_at is not None
    assert repo.get_cell(cell.id).status == "done"
    with pytest.raises(Conflict):
        repo.resume_job(job.id)

    again = repo.create_job(cell.id, total=3)
    repo.finish_job(again.id, "cancelled")
    with pytest.raises(Conflict):
        repo.heartbeat(again.id)
    assert [j.status for j in repo.jobs_for_cell(cell.id)] == ["done", "cancelled"]
    assert repo.resume_job(again.id).status == "pending"  # a cancelled step can go on
    repo.finish_job(again.id, "cancelled")
    with pytest.raises(StorageError):
        repo.finish_job(again.id, "running")
    with pytest.raises(NotFound):
        repo.get_job("missing")


def test_world_frames(repo: Repository, store: ArtifactStore) -> None:
    project, _, edit_key = repo.create_project("Frames")
    cell = repo.add_cell(project.id, edit_key, "generation")
    rgb = [store.put_bytes(f"rgb{i}".encode(), "image/png") for i in range(3)]
    depth = store.put_bytes(b"depth", "application/x-npy")
    for i in (2, 0, 1):
        c2w = np.eye(4)
        c2w[0, 3] = i
        repo.add_frame(cell.id, i, rgb[i].sha256, np.eye(3) * 500, c2w, depth_sha256=depth.sha256)
    frames = repo.list_frames(cell.id)
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert (
        frames[2].c2w[0][3] == 2
        and frames[0].K[0][0] == 500
        and frames[1].depth_sha256 == depth.sha256
    )
    assert isinstance(frames[0], WorldFrame)
    with pytest.raises(Conflict):
        repo.add_frame(cell.id, 1, rgb[1].sha256, np.eye(3), np.eye(4))
    with pytest.raises(NotFound):
        repo.add_frame(cell.id, 3, "f" * 64, np.eye(3), np.eye(4))
    with pytest.raises(NotFound):
        repo.add_frame("missing", 0, rgb[0].sha256, np.eye(3), np.eye(4))


def test_sqlite_file_is_a_real_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    db = open_database(f"sqlite:///{path}", migrate=True)
    Repository(db).create_project("x")
    db.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ---- one generation per project, owners (issue 11, items 2 and 3) ---------------------------
def test_one_active_generation_per_project_is_enforced_by_the_database(
    repo: Repository, db: Database
) -> None:
    """The partial unique index refuses a second active generation even when the friendly
    pre-check is bypassed (as a racing client effectively does)."""
    project, _, key = repo.create_project("Slot")
    other, _, other_key = repo.create_project("Other")
    cell, job = repo.add_job_cell(project.id, key, "generation", {}, total=5)
    assert job.status == "pending" and job.project_id == project.id and job.kind == "generation"
    with pytest.raises(GenerationBusy, match="already running"):
        repo.add_job_cell(project.id, key, "generation", {}, total=5)
    assert len(repo.list_cells(project.id, key)) == 1  # the refused claim left no cell behind
    repo.add_job_cell(other.id, other_key, "generation", {}, total=5)  # other projects are free
    lift_cell, lift = repo.add_job_cell(project.id, key, "lift", {}, total=1)  # not a generation
    with pytest.raises(IntegrityError):  # straight to the table, no pre-check: the index says no
        with db.write_session() as session:
            session.add(Job(id="j2", cell_id=lift_cell.id, project_id=project.id,
                            kind="generation", status="running"))  # fmt: skip
    repo.finish_job(job.id, "done")
    repo.add_job_cell(project.id, key, "generation", {}, total=5)  # free again


@pytest.mark.parametrize("n", [8])
def test_claim_race_exactly_one_wins(repo: Repository, n: int) -> None:
    """N threads released by a barrier each try to start a generation in one project."""
    project, _, key = repo.create_project("Race")
    barrier = threading.Barrier(n)
    results: list[object] = []

    def attempt() -> None:
        barrier.wait()
        try:
            results.append(repo.add_job_cell(project.id, key, "generation", {}, total=3)[1])
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            results.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [r for r in results if isinstance(r, Job)]
    errors = [r for r in results if not isinstance(r, Job)]
    assert len(wins) == 1, results
    assert all(isinstance(e, GenerationBusy) for e in errors), errors
    assert [c.kind for c in repo.list_cells(project.id, key)] == ["generation"]


def test_workers_claim_each_pending_job_once(repo: Repository) -> None:
    projects = [repo.create_project(f"P{i}") for i in range(6)]
    for project, _, key in projects:
        repo.add_job_cell(project.id, key, "generation", {}, total=1)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        me = Owner.this_process(f"w{i}")
        while (job := repo.claim_next_job(me, ["generation"])) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 6


def test_restarted_owner_interrupts_its_previous_instance_at_once(repo: Repository) -> None:
    project, _, key = repo.create_project("Owners")
    old = Owner.this_process("studio@host:7860")
    cell, job = repo.add_job_cell(project.id, key, "generation", {}, total=9, owner=old)
    assert job.status == "running" and job.owner_nonce == old.nonce
    other_cell_project, _, k2 = repo.create_project("Someone else's")
    _, theirs = repo.add_job_cell(other_cell_project.id, k2, "generation", {}, total=9,
                                  owner=Owner.this_process("loci-worker-3"))  # fmt: skip
    new = Owner.this_process("studio@host:7860")  # the same process, started again
    assert [j.id for j in repo.interrupt_owned(new)] == [job.id]
    assert repo.get_job(job.id).status == "interrupted"
    assert repo.get_cell(cell.id).status == "interrupted"
    assert repo.get_job(theirs.id).status == "running"  # another owner: judged by heartbeat
    # The old instance's late writes are refused; it cannot clobber the job's next life.
    repo.resume_job(job.id, owner=new)
    with pytest.raises(Conflict, match="another worker"):
        repo.update_progress(job.id, 3, nonce=old.nonce)
    with pytest.raises(Conflict):
        repo.finish_job(job.id, "failed", "late", nonce=old.nonce)
    assert repo.update_progress(job.id, 3, nonce=new.nonce).frames_done == 3


def test_owner_with_a_dead_pid_on_this_host_is_dead_at_once(repo: Repository) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    project, _, key = repo.create_project("Dead pid")
    ghost = Owner("ghost", "n0", Owner.this_process("x").host, child.pid)
    _, job = repo.add_job_cell(project.id, key, "generation", {}, total=4, owner=ghost)
    me = Owner.this_process("me")
    assert repo.mark_interrupted_stale(3600, host="elsewhere") == []  # fresh heartbeat
    assert [j.id for j in repo.mark_interrupted_stale(3600, host=me.host)] == [job.id]


def test_upgrade_from_0002_resolves_double_generations(tmp_path: Path) -> None:
    """A database where the race already happened (two running generations in a project)
    upgrades: the newest stays running, the other becomes interrupted, the index is built."""
    with _old_schema(tmp_path, "0002") as (db, conn):
        for i in (1, 2):
            conn.exec_driver_sql(
                "INSERT INTO history_cells (id, project_id, position, kind, params, status, "
                f"author, created_at, updated_at) VALUES ('c{i}', 'p1', {i}, 'generation', '{{}}',"
                " 'running', '', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO jobs (id, cell_id, status, progress, frames_done, started_at, "
                f"updated_at, heartbeat_at) VALUES ('j{i}', 'c{i}', 'running', 0, 0, "
                f"'2026-01-01 00:00:0{i}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
    assert db.migrate() == "0003"
    repo = Repository(db)
    assert [repo.get_job(j).status for j in ("j1", "j2")] == ["interrupted", "running"]
    assert repo.get_job("j2").project_id == "p1" and repo.get_job("j2").kind == "generation"
    db.dispose()


def test_only_the_jobs_owner_adds_frames(repo: Repository, store: ArtifactStore) -> None:
    """The frame row and the job's progress are one write, fenced by the owner's nonce."""
    project, _, key = repo.create_project("Fence")
    old, new = Owner.this_process("w"), Owner.this_process("w")
    cell, job = repo.add_job_cell(project.id, key, "generation", {}, total=4, owner=old)
    rgb = store.put_bytes(b"frame").sha256
    eye = np.eye(4)
    repo.add_frame(cell.id, 1, rgb, np.eye(3), eye, job_id=job.id, nonce=old.nonce)
    assert repo.get_job(job.id).frames_done == 1 and repo.get_job(job.id).progress == 0.25
    repo.interrupt_owned(new)
    repo.resume_job(job.id, owner=new)
    with pytest.raises(Conflict):  # the replaced worker wakes up: its frame is refused
        repo.add_frame(cell.id, 2, rgb, np.eye(3), eye, job_id=job.id, nonce=old.nonce)
    repo.add_frame(cell.id, 2, rgb, np.eye(3), eye, job_id=job.id, nonce=new.nonce)
    assert [f.frame_index for f in repo.list_frames(cell.id)] == [1, 2]
    assert repo.get_job(job.id).frames_done == 2
    repo.finish_job(job.id, "cancelled")
    with pytest.raises(Conflict):  # nor after a cancel
        repo.add_frame(cell.id, 3, rgb, np.eye(3), eye, job_id=job.id, nonce=new.nonce)
