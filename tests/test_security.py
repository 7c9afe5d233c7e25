"""Security of the running studio, probed over HTTP as an outside tester would.

A real app (``build_app`` + ``launch`` with the production arguments, a fresh data directory)
holds two projects with a photo, generated frames, a lift and an export. The tests then prove:

- no path under the data directory is served without a key: every file in it (database, WAL,
  artifacts, caches, the signing secret) through every file route Gradio has, raw, relative,
  URL-encoded and through ``..`` from the folders Gradio does serve;
- a signed URL serves exactly its project's file (content types, ``nosniff``, download names,
  Range, HEAD), and nothing else: another file, another name, an expired or forged link, a
  key of another project, a deleted project;
- uploads are sent with ``nosniff`` (an HTML page uploaded as ``.jpg`` is never sniffed);
- wrong keys and forged links are throttled per client.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from urllib.parse import quote

import pytest

httpx = pytest.importorskip("httpx")

from studio.app import StudioContext, build_app, launch_kwargs  # noqa: E402
from tests.helpers import PHOTOS  # noqa: E402

PHOTO = PHOTOS / "interior_office_03_dsine.png"
PHOTO_B = PHOTOS / "interior_modern_room_dav2_demo10.jpg"
pytestmark = pytest.mark.skipif(
    not PHOTO.is_file(), reason=f"needs the shared photos in {PHOTOS} (../shared/data)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(app, http client, two seeded projects) with frames, a lift and an export each."""
    data = tmp_path_factory.mktemp("security") / "data"
    ctx = StudioContext(data_dir=data, width=96)
    app = build_app(ctx)
    app.queue(default_concurrency_limit=4).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True,
        **launch_kwargs(ctx),
    )  # fmt: skip
    s = app.studio
    projects = []
    for name, photo in (("A", PHOTO), ("B", PHOTO_B)):
        pid, view_key, edit_key = s.create_project(name)
        s.set_photo(pid, edit_key, str(photo))
        s.save_path(pid, edit_key, s.plan_path(pid, edit_key, preset="forward", frames=3))
        list(s.generate(pid, edit_key))
        s.export(pid, edit_key, "ply")
        projects.append({"id": pid, "view": view_key, "edit": edit_key})
    client = httpx.Client(base_url=app.local_url.rstrip("/"), timeout=30)
    try:
        yield app, client, projects
    finally:
        client.close()
        app.close()


@pytest.fixture(autouse=True)
def fresh_throttle(live):
    """The throttle is per process: start and leave every test with a clean slate."""
    live[0].studio.throttle._fails.clear()
    yield
    live[0].studio.throttle._fails.clear()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _probe_paths(app, f: Path) -> list[str]:
    """Ways to ask Gradio for file ``f`` by path."""
    data = app.studio.ctx.data_dir
    gtmp = app.studio.ctx.gradio_temp_dir
    hand = app.studio.ctx.handoff_dir
    rel = Path("..") / ".." / ".." / f.relative_to("/")
    return [
        f"/gradio_api/file={f}",
        f"/gradio_api/file={quote(str(f))}",
        f"/gradio_api/file={quote(quote(str(f)))}",
        f"/file={f}",
        f"/gradio_api/file={gtmp}/../{f.relative_to(gtmp.parent) if gtmp.parent in f.parents else rel}",
        f"/gradio_api/file={gtmp}/{rel}",
        f"/gradio_api/file={hand}/{rel}",
        f"/gradio_api/file={f.relative_to(data.parent)}",
        f"/gradio_api/file=/proc/self/root{f}",
        f"/gradio_api/file=file://{f}",
        f"/static/{rel}",
        f"/assets/{rel}",
    ]


def test_nothing_under_the_data_dir_is_served_without_a_key(live):
    app, client, _ = live
    data = app.studio.ctx.data_dir
    files = _files_under(data)
    kinds = {p.relative_to(data).parts[0] for p in files}
    # The probe covers the database, its WAL, the secret, artifacts and the caches.
    assert {"loci.db", "file-secret", "artifacts", "cache"} <= kinds, kinds
    assert any(p.name.endswith("-wal") for p in files) or (data / "loci.db").is_file()
    served, codes = [], {}
    for f in files:
        body = f.read_bytes()
        for url in _probe_paths(app, f):
            r = client.get(url)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200 and (r.content == body or len(body) == 0):
                served.append(url)
    print(f"\nprobed {len(files)} files ({', '.join(sorted(kinds))}) x "
          f"{len(_probe_paths(app, files[0]))} URL forms: status counts {codes}")  # fmt: skip
    assert not served, f"served without a key: {served[:5]}"


def test_a_signed_url_serves_its_file_and_nothing_else(live):
    app, client, (a, b) = live
    s = app.studio
    ws = s.world(a["id"], a["view"])  # the export is attached to the step it exports
    sha = s.attachment(s.world_step(ws), "ply", ws.digest)["sha256"]
    body = s.store.read_bytes(sha)
    url = s.file_url(a["id"], a["view"], sha, "world.ply")
    r = client.get(url)
    assert r.status_code == 200 and r.content == body
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("inline")
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["etag"] == f'"{sha}"'
    # Range (viewers fetch large files in pieces), HEAD, and a download name.
    part = client.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == body[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(body)}"
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(body)
    dl = client.get(s.file_url(a["id"], a["edit"], sha, "my world.ply", download=True))
    assert dl.headers["content-disposition"] == 'attachment; filename="my_world.ply"'
    # A frame: PNG inline.
    frame = s.world(a["id"], a["edit"]).frames[1]
    png = client.get(s.file_url(a["id"], a["view"], frame.rgb_sha256, "frame-1.png"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:4] == b"\x89PNG"

    token = url.split("/")[-2]
    # Renamed (another content type), forged, another project's file, a wrong key.
    assert client.get(url.rsplit("/", 1)[0] + "/world.html").status_code == 403
    body_b64, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4)))
    b_frame = s.world(b["id"], b["edit"]).frames[1].rgb_sha256
    payload[2] = b_frame
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    assert client.get(f"/loci/files/{forged}.{sig}/world.ply").status_code == 403
    assert client.get(f"/loci/files/{body_b64}.AAAA/world.ply").status_code == 403
    assert client.get("/loci/files/garbage/world.ply").status_code == 400
    from storage.db import Forbidden, NotFound

    with pytest.raises(NotFound):
        s.file_url(a["id"], a["edit"], b_frame, "x.png")  # B's file through A's key
    with pytest.raises(Forbidden):
        s.file_url(b["id"], a["edit"], b_frame, "x.png")  # A's key on B
    with pytest.raises(NotFound):
        s.file_url(a["id"], a["edit"], "0" * 64, "x.png")


def test_links_expire_and_die_with_their_project(live):
    app, client, _ = live
    s = app.studio
    pid, _view, key = s.create_project("Short-lived")
    s.set_photo(pid, key, str(PHOTO))
    sha = s.world(pid, key).frames[0].rgb_sha256
    url = s.file_url(pid, key, sha, "photo.png")
    assert client.get(url).status_code == 200
    clock = s.files.clock
    try:
        s.files.clock = lambda: clock() + s.ctx.file_url_ttl_s + 5
        assert client.get(url).status_code == 410
    finally:
        s.files.clock = clock
    s.delete(pid, key)
    assert client.get(url).status_code == 404


def test_uploads_are_never_sniffed_into_pages(live):
    _, client, _ = live
    page = b"<html><script>alert(document.cookie)</script></html>"
    r = client.post("/gradio_api/upload", files={"files": ("photo.jpg", page, "image/jpeg")})
    assert r.status_code == 200, r.text
    path = r.json()[0]
    got = client.get(f"/gradio_api/file={path}")
    assert got.status_code == 200 and got.content == page
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "text/html" not in got.headers["content-type"]
    assert client.get("/").headers["x-content-type-options"] == "nosniff"


def test_forged_links_are_throttled_per_client(live):
    app, client, (a, _) = live
    s = app.studio
    good = s.file_url(a["id"], a["view"], s.world(a["id"], a["view"]).frames[0].rgb_sha256, "p.png")
    codes = [client.get(f"/loci/files/x{i}.AAAA/p.png").status_code for i in range(30)]
    assert codes[0] == 403 and codes[-1] == 429, codes
    limited = client.get(good)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Another client is not affected.
    other = s.throttle.retry_after("198.51.100.7")
    assert other == 0
    # After the window, the client may try again.
    s.throttle._fails.clear()
    time.sleep(0.01)
    assert client.get(good).status_code == 200


# ---- a view key never changes state, through any endpoint --------------------------------------


def _snapshot(app, pid: str) -> dict:
    """Everything the database holds about a project (and how many files the store has)."""
    from sqlalchemy import select

    from storage.db import Artifact, CellArtifact, HistoryCell, Job, Project, WorldFrame

    with app.studio.db.read_session() as s:
        p = s.get(Project, pid)
        cells = s.scalars(select(HistoryCell).where(HistoryCell.project_id == pid)).all()
        ids = [c.id for c in cells]
        return {
            "project": (p.name, p.updated_at, p.deleted_at, p.edit_key_hash, p.view_key_hash),
            "cells": [(c.id, c.position, c.kind, c.status, c.params, c.updated_at) for c in cells],
            "jobs": [
                (j.id, j.status, j.frames_done)
                for j in s.scalars(select(Job).where(Job.cell_id.in_(ids)))
            ],  # fmt: skip
            "frames": sorted(
                (f.cell_id, f.frame_index, f.rgb_sha256)
                for f in s.scalars(select(WorldFrame).where(WorldFrame.cell_id.in_(ids)))
            ),  # fmt: skip
            "links": sorted(
                (x.cell_id, x.role, x.sha256)
                for x in s.scalars(select(CellArtifact).where(CellArtifact.cell_id.in_(ids)))
            ),  # fmt: skip
            "artifacts": len(s.scalars(select(Artifact.sha256)).all()),
        }


def _inputs(app, dep: dict, project: dict, key: str, upload: dict) -> list:
    """Plausible values for an endpoint's inputs, as a page (or an attacker) would send them."""
    comps = {c["id"]: c for c in app.get_config_file()["components"]}
    cells = app.studio.repo.list_cells(project["id"], project["edit"])
    by_elem = {
        "project-id": project["id"], "project-key": key, "project-name": "Renamed by a viewer",
        "step": cells[-1].id, "photo": upload, "fov": 0, "path-preset": "forward",
        "waypoints": "[[0.2, 0.8]]", "path-frames": 4, "path-speed": 0, "eye-height": 0,
        "look": "path", "start-from": "end", "memory": True, "inspect-frame": 1,
        "inspect-view": "generated frame", "export-format": "glb",
    }  # fmt: skip
    values = []
    for cid in dep["inputs"]:
        props = comps[cid]["props"]
        elem = props.get("elem_id")
        if elem in by_elem:
            values.append(by_elem[elem])
        elif comps[cid]["type"] == "number":
            values.append(1)
        else:
            values.append(props.get("value"))
    return values


def _raw_call(client, fn_index: int, data: list, event_data=None) -> dict:
    """One event through ``/gradio_api/queue/join`` and its SSE stream: the completion message."""
    import secrets as _secrets

    session = _secrets.token_hex(8)
    body = {"data": data, "fn_index": fn_index, "session_hash": session,
            "event_data": event_data, "trigger_id": None}  # fmt: skip
    r = client.post("/gradio_api/queue/join", json=body)
    if r.status_code != 200:
        return {"msg": "refused", "status": r.status_code}
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                       timeout=120) as stream:  # fmt: skip
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg
    return {"msg": "no completion"}


def test_a_view_key_never_changes_state_through_any_endpoint(live):
    app, client, (a, _) = live
    up = client.post("/gradio_api/upload", files={"files": ("p.png", PHOTO.read_bytes())})
    upload = {"path": up.json()[0], "orig_name": "p.png", "meta": {"_type": "gradio.FileData"}}
    before = _snapshot(app, a["id"])
    deps = app.get_config_file()["dependencies"]
    outcomes = {}
    for dep in deps:
        data = _inputs(app, dep, a, a["view"], upload)
        event = {"index": [5, 5], "value": None, "selected": True} if dep["api_name"] == "click" \
            else None  # fmt: skip
        msg = _raw_call(client, dep["id"], data, event)
        outcomes[dep["api_name"]] = msg.get("success", msg.get("msg"))
        if dep.get("api_visibility") == "public" and dep["api_name"] not in ("create_project",):
            # The documented REST route as well.
            r = client.post(f"/gradio_api/call/{dep['api_name']}", json={"data": data})
            if r.status_code == 200:
                ev = r.json()["event_id"]
                client.get(f"/gradio_api/call/{dep['api_name']}/{ev}", timeout=120)
        assert _snapshot(app, a["id"]) == before, f"{dep['api_name']} changed the project"
    # Every change was refused; reads went through.
    assert outcomes["rename"] is False and outcomes["revert"] is False
    assert outcomes["set_photo"] is False and outcomes["generate"] is False
    assert outcomes["plan_path"] is False and outcomes["cancel"] is False
    assert outcomes["open_project"] is True and outcomes["inspect_frame"] is True
    # Forking is allowed with a view key: a new project (the viewer's own), the original intact.
    assert outcomes["fork"] is True


def test_wrong_keys_are_throttled_per_client(live):
    app, client, (a, _) = live
    open_ = next(
        d for d in app.get_config_file()["dependencies"] if d["api_name"] == "open_project"
    )
    results = [_raw_call(client, open_["id"], [a["id"], f"wrong-{i}"]) for i in range(21)]
    assert all(r.get("success") is False for r in results)
    assert "does not open" in results[0]["output"]["error"]
    assert "Too many wrong keys" in results[-1]["output"]["error"]
    # Now even the right key waits: the client is refused before any key is checked.
    right = _raw_call(client, open_["id"], [a["id"], a["edit"]])
    assert right["success"] is False and "Too many wrong keys" in right["output"]["error"]
    # The file route shares the count.
    sha = app.studio.world(a["id"], a["edit"]).frames[0].rgb_sha256
    assert client.get(app.studio.file_url(a["id"], a["edit"], sha, "p.png")).status_code == 429
    app.studio.throttle._fails.clear()
    assert _raw_call(client, open_["id"], [a["id"], a["edit"]])["success"] is True
