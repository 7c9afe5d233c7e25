"""The studio's service on a real photo: persistence, restarts, share keys, bad input.

Everything goes through :class:`studio.service.Studio` with the offline backends at 128 px, on
the SQLite database and artifact store a fresh data directory gets.
"""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from models.paths.trajectory import make_preset
from models.pipeline import PipelineConfig, WorldPipeline
from storage.db import Conflict, Forbidden, NotFound
from storage.db.models import HistoryCell, Job, utcnow
from storage.errors import PhotoError
from storage.formats.images import load_photo
from studio.context import StudioContext
from studio.service import Studio, StudioError
from studio.world_store import load_rgb
from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"


@pytest.fixture
def studio(tmp_path):
    s = Studio(StudioContext(data_dir=tmp_path / "data", width=128))
    yield s
    s.close()


@pytest.fixture
def seeded(studio):
    pid, view_key, edit_key = studio.create_project("Office")
    studio.set_photo(pid, edit_key, str(PHOTO))
    return studio, pid, view_key, edit_key


@pytest.fixture
def slow_frames(monkeypatch):
    """Each frame takes at least 0.25 s to paint, so a generation is still running when a test
    acts on it (jobs run on worker threads; on an idle machine 8 small frames finish at once)."""
    from models.synthesis.reproject import ReprojectSynthesis

    paint = ReprojectSynthesis.synthesize

    def slow(self, requests):
        time.sleep(0.25 * len(requests))
        return paint(self, requests)

    monkeypatch.setattr(ReprojectSynthesis, "synthesize", slow)


def _frames(studio, pid, key):
    ws = studio.world(pid, key)
    return [load_rgb(studio.store, f) for f in ws.frames]


def test_stored_world_continues_exactly_like_an_uninterrupted_run(seeded):
    """Generate a loop in two chunks through the database (cancelled after a few frames, then
    resumed with the memory rebuilt from stored files) and compare with one uninterrupted
    in-memory run: identical pixels."""
    studio, pid, _, key = seeded
    ws = studio.world(pid, key)
    plan = studio.plan_path(pid, key, preset="loop", frames=12)
    studio.save_path(pid, key, plan)
    gen = studio.generate(pid, key)
    for _ in range(5):
        next(gen)
    gen.close()  # the page went away after 5 frames: the job goes on without it...
    studio.cancel(pid, key)  # ...until it is cancelled
    cell = studio.world(pid, key).cells[-1]
    _wait_status(studio, cell.id, ("cancelled",))
    done = len(studio.repo.list_frames(cell.id))
    assert 5 <= done < 11, "cancelled with frames left"
    ups = list(studio.resume(pid, key, cell.id))  # a cancelled step carries on
    assert ups[-1].status == "done" and ups[-1].frames_done == 11
    stored = _frames(studio, pid, key)

    pipe = WorldPipeline(config=PipelineConfig(width=128))
    photo = load_photo(PHOTO)
    world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
    traj = make_preset("loop", world.cameras[0], 12, up=world.up, scene_depth=world.scene_depth)
    direct = [world.seed_event.rgb] + [e.rgb for e in pipe.explore(world, traj.cameras[1:])]
    assert len(stored) == len(direct) == 12
    assert ws.meta["width"] == 128
    for i, (a, b) in enumerate(zip(stored, direct, strict=True)):
        assert np.array_equal(a, b), f"frame {i} differs after the restart"


def _wait_status(studio, cell_id, statuses, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while studio.repo.get_cell(cell_id).status not in statuses:
        assert time.monotonic() < deadline, studio.repo.get_cell(cell_id).status
        time.sleep(0.05)


def test_silent_owner_is_interrupted_by_heartbeat_age_and_resume_finishes(
    seeded, tmp_path, slow_frames
):
    """A job whose owner is another, silent process (not this one restarted, pid unknown here)
    is decided by heartbeat age; Resume then finishes it on this process's workers."""
    studio, pid, _, key = seeded
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="forward", frames=8))
    gen = studio.generate(pid, key)
    next(gen)
    next(gen)
    gen.close()
    job_id = studio.repo.active_jobs(pid)[0].id
    studio.cancel(pid, key)
    cell_id = studio.repo.get_job(job_id).cell_id
    _wait_status(studio, cell_id, ("cancelled",))
    # Pretend another machine's worker took the job and went silent (no pid we can check).
    with studio.db.write_session() as session:
        job = session.get(Job, job_id)
        job.status, job.owner, job.owner_nonce = "running", "loci-worker-9", "n"
        job.owner_host, job.owner_pid = "elsewhere", 1
        job.heartbeat_at = utcnow() - timedelta(seconds=5)
        session.get(HistoryCell, cell_id).status = "running"
    with pytest.raises(Conflict, match="already running"):
        next(studio.generate(pid, key))  # alive as far as anyone can tell
    with studio.db.write_session() as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(minutes=5)
    studio2 = Studio(studio.ctx)  # another process on the same data: it reaps at start-up
    assert [j.id for j in studio2.interrupted_at_start] == [job_id]
    ws = studio2.world(pid, key)
    assert ws.cells[-1].status == "interrupted"
    ups = list(studio2.resume(pid, key, ws.cells[-1].id))
    assert ups[-1].status == "done"
    ws = studio2.world(pid, key)
    assert len(ws.frames) == 8 and ws.cells[-1].status == "done"
    assert studio2.repo.cell_artifacts(ws.cells[-1].id, "video")  # the step's walkthrough
    studio2.close()


def test_cancel_keeps_finished_frames(seeded):
    studio, pid, _, key = seeded
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=10))
    gen = studio.generate(pid, key)
    next(gen)
    next(gen)
    assert studio.cancel(pid, key) == 1
    ups = list(gen)
    assert ups[-1].status == "cancelled"
    ws = studio.world(pid, key)
    n = len(ws.frames)
    assert 3 <= n < 10  # the seed, what was finished before the cancel and the one in flight
    assert ups[-1].frames_done == n - 1  # the stream showed every stored frame
    assert ws.cells[-1].status == "cancelled"
    # The world goes on from where it stopped.
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="forward", frames=3))
    assert list(studio.generate(pid, key))[-1].status == "done"
    assert len(studio.world(pid, key).frames) == n + 2


def test_view_key_cannot_change_anything(seeded):
    studio, pid, view_key, key = seeded
    _, can_edit, cells = studio.open_project(pid, view_key)
    assert not can_edit and len(cells) == 1
    with pytest.raises(Forbidden):
        studio.set_photo(pid, view_key, str(PHOTO))
    with pytest.raises(Forbidden):
        studio.save_path(pid, view_key, studio.plan_path(pid, view_key, preset="orbit", frames=4))
    with pytest.raises(Forbidden):
        next(studio.generate(pid, view_key))
    for action in (studio.revert, studio.cancel, studio.delete, studio.lift):
        with pytest.raises(Forbidden):
            action(pid, view_key)
    with pytest.raises(Forbidden):
        studio.open_project(pid, "not-the-key")
    assert studio.repo.view_key(pid, key) == view_key  # the editor can share the view link
    with pytest.raises(Forbidden):
        studio.repo.view_key(pid, view_key)
    assert len(studio.open_project(pid, key)[2]) == 1  # nothing changed


def test_two_tabs_cannot_generate_the_same_project_at_once(seeded, slow_frames):
    studio, pid, _, key = seeded
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="forward", frames=6))
    first = studio.generate(pid, key)
    next(first)
    with pytest.raises(Conflict, match="already running"):
        next(studio.generate(pid, key))
    with pytest.raises(Conflict):
        studio.revert(pid, key)  # the running step cannot be reverted either
    list(first)
    assert studio.world(pid, key).cells[-1].status == "done"


def test_bad_input_is_refused_and_nothing_is_lost(seeded, tmp_path):
    studio, pid, _, key = seeded
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    with pytest.raises(PhotoError):
        studio.set_photo(pid, key, str(not_image))
    assert [c.kind for c in studio.repo.list_cells(pid, key)] == ["photo"]  # no half step
    with pytest.raises(StudioError, match="empty"):
        studio.plan_path(pid, key, waypoints=[])
    with pytest.raises(StudioError, match="far outside the known map"):
        studio.plan_path(pid, key, waypoints=[[500.0, 800.0]])
    with pytest.raises(StudioError, match="Plan a camera path"):
        next(studio.generate(pid, key))
    with pytest.raises(StudioError, match="frames"):
        studio.plan_path(pid, key, preset="orbit", frames=100_000)
    studio.delete(pid, key)
    with pytest.raises(NotFound):
        studio.world(pid, key)
    empty, _, k2 = studio.create_project("Empty")
    with pytest.raises(StudioError, match="no photo"):
        studio.world(empty, k2)


def test_waypoint_path_preview_fork_and_exports_are_cached(seeded):
    studio, pid, _, key = seeded
    plan = studio.plan_path(pid, key, waypoints=[[0.3, 1.0], [0.6, 2.0]], frames=6)
    assert len(plan.trajectory) == 6 and len(plan.coverage) == 6
    assert plan.coverage[0] == pytest.approx(1.0)
    # The ground track starts under the photo and heads "north" (ahead of the photo).
    assert np.abs(plan.ground_xy[0]).max() < 1e-6 and plan.ground_xy[-1, 1] > 1.5
    studio.save_path(pid, key, plan)
    list(studio.generate(pid, key))
    first = studio.export(pid, key, "ply")
    assert first.read_bytes().startswith(b"ply")
    # Named by world and step; attached to the generation step, not a history step of its own.
    cells = studio.world(pid, key).cells
    assert first.name == "office-3.ply" and [c.kind for c in cells][-1] == "lift"
    gen = next(c for c in cells if c.kind == "generation")
    assert gen.params["export:ply"]["sha256"] and "export:colmap" not in gen.params
    assert studio.repo.cell_artifacts(gen.id, "export:ply")
    again = studio.export(pid, key, "ply")  # cached: no new step, same file
    assert again == first and len(studio.world(pid, key).cells) == len(cells)
    zipped = studio.export(pid, key, "colmap")
    assert zipped.name == "office-3-colmap.zip" and zipped.stat().st_size > 0
    assert not any(c.kind == "export" for c in studio.world(pid, key).cells)
    # The lift made the browser's compact copy of the splats too.
    lift = next(c for c in studio.world(pid, key).cells if c.kind == "lift")
    assert studio.repo.cell_artifacts(lift.id, "splats-web")
    assert 0 < lift.params["web_bytes"] and lift.params["web_splats"] <= lift.params["splats"]
    fork_id, fork_view, fork_edit = studio.fork(pid, key)
    assert len(studio.world(fork_id, fork_edit).frames) == 6
    assert studio.export(fork_id, fork_edit, "ply").read_bytes() == first.read_bytes()


def test_previews_reuse_one_restored_memory_and_show_what_is_known(seeded, monkeypatch):
    studio, pid, _, key = seeded
    restores = []
    real = studio.restore
    monkeypatch.setattr(studio, "restore", lambda *a, **k: restores.append(1) or real(*a, **k))
    plan = studio.plan_path(pid, key, waypoints=[[0.0, 1.5], [-2.5, 1.5]], frames=10)
    again = studio.plan_path(pid, key, waypoints=[[0.3, 1.0]], frames=6)
    assert len(restores) == 1  # the memory of this world was restored once, for both plans
    ws = studio.world(pid, key)
    shots = studio.memory_preview(ws, plan)
    assert 4 <= len(shots) <= 5
    img, caption = shots[0]
    assert img.shape == (ws.height, ws.width, 3) and caption.startswith("frame ")
    assert again.coverage[0] == pytest.approx(1.0)


def test_generate_tab_offers_backends_only_when_there_is_a_choice(seeded, monkeypatch):
    from studio.tabs.generate import backend_choices

    studio = seeded[0]
    here = backend_choices(studio)
    assert here["synthesis"][0] == "reproject" and "file" not in here["depth"]
    fake = [{"backend": "reproject", "prompt": False, "ready": True, "why": ""},
            {"backend": "sd-inpaint", "prompt": True, "ready": True, "why": ""},
            {"backend": "vace", "prompt": True, "ready": False, "why": "needs a CUDA GPU"}]  # fmt: skip
    monkeypatch.setattr(studio, "painters", lambda: fake)
    two = backend_choices(studio)
    assert two["synthesis"] == ["reproject", "sd-inpaint"] and "sd-inpaint" in two["prompt"]
    assert two["unavailable"] == [("vace", "needs a CUDA GPU")]


def test_a_long_stroke_at_a_given_speed_is_capped_with_a_message(seeded):
    studio, pid, _, key = seeded
    studio.ctx.max_frames = 40
    # 3 m there and back and there again at 5 cm per frame would need about 180 frames.
    wp = [[0.0, 1.5], [0.0, 0.2], [0.0, 1.5]]
    plan = studio.plan_path(pid, key, waypoints=wp, speed=0.05)
    assert len(plan.trajectory) == 40
    assert "capped at 40 frames" in plan.warnings[0] and "Shorten the path" in plan.warnings[0]
    short = studio.plan_path(pid, key, waypoints=[[0.0, 0.5]], speed=0.05)
    assert len(short.trajectory) < 40 and not any("capped" in w for w in short.warnings)


def test_a_second_front_end_watches_and_a_closed_page_does_not_stop_the_job(seeded):
    studio, pid, view_key, key = seeded
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=12))
    gen = studio.generate(pid, key)
    next(gen)
    gen.close()  # the page closes: the worker goes on
    other = Studio(StudioContext(**{**studio.ctx.to_dict(), "instance": "second-front-end"}))
    try:
        watched = list(other.watch(pid, view_key))  # a view link may watch
        assert watched[-1].status == "done" and watched[-1].frames_done == 11
        assert len(studio.world(pid, key).frames) == 12
        with pytest.raises(StudioError, match="No generation is running"):
            next(other.watch(pid, view_key))
    finally:
        other.close()


def test_with_one_slot_another_project_waits_and_says_so(seeded, slow_frames):
    """One worker thread: a second project's generation queues (pending, with a message) and
    runs when the slot frees; nothing is refused, nothing is lost. (slow_frames: the first
    generation must still run when the second asks, however fast frames get.)"""
    studio, pid, _, key = seeded
    other, _, other_key = studio.fork(pid, key)  # a second project with the same photo
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=12))
    studio.save_path(other, other_key, studio.plan_path(other, other_key, preset="orbit", frames=4))
    first = studio.generate(pid, key)
    next(first)  # the only worker is busy with this one
    second = list(studio.generate(other, other_key))
    assert second[0].status == "pending" and "free worker" in second[0].message
    assert second[-1].status == "done" and second[-1].frames_done == 3
    assert list(first)[-1].status == "done"


def test_auto_depth_fallback_is_noted_on_the_photo(seeded):
    """The studio's default depth is ``auto``; offline it is the layout prior, and the Photo
    tab says so (the note is stored with the photo step)."""
    studio, pid, _, key = seeded
    assert studio.ctx.depth == "auto"
    ws = studio.world(pid, key)
    assert ws.meta["backends"]["depth"] == "layout"
    assert any(n.startswith("auto depth") for n in ws.photo.params["notes"])
    assert ws.meta["depth_meta"]["scene"] == "indoor"


def test_a_waiting_generation_knows_its_place_in_the_queue(seeded, slow_frames):
    # slow_frames: without it the first generation (40 fast frames) could end before the
    # check below (it did once the painter got faster: (0, 0) instead of (0, 1)).
    studio, pid, _, key = seeded
    other, _, other_key = studio.fork(pid, key)
    studio.save_path(pid, key, studio.plan_path(pid, key, preset="orbit", frames=12))
    studio.save_path(other, other_key, studio.plan_path(other, other_key, preset="orbit", frames=3))
    first = studio.generate(pid, key)
    next(first)  # the only worker is busy with this one
    second = studio.generate(other, other_key)
    waiting = next(second)
    assert waiting.status == "pending"
    assert studio.queue_position(waiting.job_id) == (0, 1)  # none ahead, one running
    assert list(second)[-1].status == "done" and list(first)[-1].status == "done"
