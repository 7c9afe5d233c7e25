"""The studio through its public API (``gradio_client``), as README documents it, and mounted
under a sub-path of another web app."""

from __future__ import annotations

import socket
import threading
import time

import pytest

gradio_client = pytest.importorskip("gradio_client")

from studio.app import StudioContext, build_app, launch_kwargs, mount  # noqa: E402
from tests.helpers import PHOTOS  # noqa: E402

PHOTO = PHOTOS / "interior_office_03_dsine.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("studio")
    ctx = StudioContext(data_dir=data, width=128)
    app = build_app(ctx)
    app.queue(default_concurrency_limit=4).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs(ctx)
    )
    yield app
    app.close()


def test_create_project_and_generate_through_the_api(server, tmp_path):
    client = gradio_client.Client(server.local_url, download_files=str(tmp_path), verbose=False)
    pid, key, *_ = client.predict("API world", api_name="/create_project")
    depth, _cloud, info = client.predict(
        pid, key, gradio_client.handle_file(str(PHOTO)), 0, api_name="/set_photo"
    )
    assert "World seeded at 128" in info
    saved, path_id = client.predict(
        pid, key, "sketch on the map", "[[0.3, 1.0], [0.8, 2.2]]", 8, 0, 0, "path", "end",
        api_name="/plan_path",
    )  # fmt: skip
    assert "8 frames" in saved and path_id
    job = client.submit(pid, key, True, api_name="/generate")
    outputs = list(job)  # every streamed update, then the final one
    job.result()
    statuses = [o[2] for o in outputs]
    frames_seen = [o for o in outputs if o[0]]
    assert len(frames_seen) >= 2, statuses  # frames arrived while the job ran
    assert statuses[-1].startswith("done: 7/7 frames"), statuses[-1]
    ws = server.studio.world(pid, key)
    assert len(ws.frames) == 8 and ws.cells[-1].status == "done"
    ply, note = client.predict(pid, key, "ply", api_name="/export")
    with open(ply, "rb") as f:
        assert f.read(3) == b"ply"
    assert "MB" in note


def test_view_key_and_bad_input_are_readable_errors(server, tmp_path):
    client = gradio_client.Client(server.local_url, verbose=False)
    pid, key, *_ = client.predict("Guarded", api_name="/create_project")
    view_key = server.studio.repo.view_key(pid, key)
    with pytest.raises(Exception, match="view-only"):
        client.predict(
            pid, view_key, gradio_client.handle_file(str(PHOTO)), 0, api_name="/set_photo"
        )
    text = tmp_path / "photo.png"
    text.write_text("not an image")
    with pytest.raises(Exception, match="(?i)image"):
        client.predict(pid, key, gradio_client.handle_file(str(text)), 0, api_name="/set_photo")
    with pytest.raises(Exception, match="Open or create a project"):
        client.predict("", "", True, api_name="/generate")
    with pytest.raises(Exception, match="does not open this project"):
        client.predict(pid, "wrong-key", api_name="/open_project")
    assert server.studio.repo.list_cells(pid, key) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_studio_works_mounted_under_a_sub_path(tmp_path):
    import uvicorn
    from fastapi import FastAPI

    site = FastAPI()

    @site.get("/")
    def home() -> dict:
        return {"site": "agency"}

    mount(site, StudioContext(data_dir=tmp_path / "data", width=128), "/studio")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(site, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        client = gradio_client.Client(f"http://127.0.0.1:{port}/studio/", verbose=False)
        pid, key, *_ = client.predict("Mounted", api_name="/create_project")
        info = client.predict(pid, key, gradio_client.handle_file(str(PHOTO)), 0,
                              api_name="/set_photo")[2]  # fmt: skip
        assert "World seeded" in info
        # Signed file URLs carry the sub-path, and the route answers there.
        studio = site.state.loci_studio
        sha = studio.world(pid, key).frames[0].rgb_sha256
        url = studio.file_url(pid, key, sha, "photo.png")
        assert url.startswith("/studio/loci/files/")
        import httpx

        r = httpx.get(f"http://127.0.0.1:{port}{url}", timeout=30)
        assert r.status_code == 200 and r.content == studio.store.read_bytes(sha)
        assert r.headers["x-content-type-options"] == "nosniff"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_second_generate_in_a_busy_project_is_refused_at_once_over_http(server, tmp_path):
    """Two API clients press Generate in one project at the same moment: one generates, the
    other gets the readable refusal at once (not a place in Gradio's queue)."""
    a = gradio_client.Client(server.local_url, download_files=str(tmp_path), verbose=False)
    b = gradio_client.Client(server.local_url, download_files=str(tmp_path), verbose=False)
    pid, key, *_ = a.predict("Busy", api_name="/create_project")
    a.predict(pid, key, gradio_client.handle_file(str(PHOTO)), 0, api_name="/set_photo")
    a.predict(pid, key, "orbit", "", 16, 0, 0, "path", "end", api_name="/plan_path")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def press(client) -> None:
        barrier.wait()
        try:
            job = client.submit(pid, key, True, api_name="/generate")
            last = list(job)[-1][2]
            job.result()  # raises the handler's error (AppError), if any
            outcomes.append(last)
        except Exception as exc:  # noqa: BLE001 - the refusal arrives as an AppError
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=press, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(o.split(":")[0] for o in outcomes) == ["done", "refused"], outcomes
    assert any("already running in this project" in o for o in outcomes), outcomes
    ws = server.studio.world(pid, key)
    assert [f.frame_index for f in ws.frames] == list(range(16))
