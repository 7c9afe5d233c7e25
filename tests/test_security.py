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
    live[0].studio.throttle._fails.clear()
    yield


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
    served = []
    for f in files:
        body = f.read_bytes()
        for url in _probe_paths(app, f):
            r = client.get(url)
            if r.status_code == 200 and (r.content == body or len(body) == 0):
                served.append(url)
    assert not served, f"served without a key: {served[:5]}"


def test_a_signed_url_serves_its_file_and_nothing_else(live):
    app, client, (a, b) = live
    s = app.studio
    cell = s.world(a["id"], a["view"]).cells[-1]
    assert cell.kind == "export"
    sha = s.repo.cell_artifacts(cell.id, "export")[-1].sha256
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
