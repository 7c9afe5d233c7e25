"""The studio in a real headless Chromium, tab by tab, as a person would use it.

``test_create_generate_inspect_export``: Project -> new project; Photo -> upload a real photo, "Use
this photo", depth preview; Trajectory -> click waypoints on the map image, 12 frames, "Use this
path"; Generate -> frames stream in (click-to-first-frame time measured in the page, written to
``first_frame.json``); Inspect -> the splats show in the Model3D viewer; Export -> a .ply
downloads. ``test_view_only_link_cannot_change_anything``: the view link from the share box, in a
second browser context, shows the project but every edit is refused with a toast, in the page and
in the database. ``test_bad_input_shows_a_readable_error_toast``: no project, a non-image upload.
Screenshots of every stage go to the artifacts folder (``e2e-*.png``).

Selectors (Gradio 6.31 DOM; the studio gives its components elem_ids):
- Only the selected tab's components are in the DOM: switch with ``role=tab`` first.
- ``gr.Button(elem_id=X)``: the <button> itself is ``#X``. Other components: ``#X`` is their
  ``div.block``; a Textbox's value is the ``.value`` of its <textarea>/<input>, an Image's picture
  is the <img> inside (absent while empty), gr.File's link is ``a[data-testid=download-link]``.
- The notebook (``#notebook``) holds one ``.loci-cell`` per history step (data-kind, -status, -cell).
- Generation progress: ``#loci-progress[data-done][data-total][data-status]``.
- Model3D: a <canvas> once a model is loaded (splats: Gradio's own WebGL splat viewer).
- Error toast: ``[data-testid=toast-body].error`` (role=status); identical messages are shown once,
  so a toast is closed (``toast-close``) before the next error with the same text is expected.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cv2
import numpy as np

from tests.helpers import PHOTOS

PHOTO = PHOTOS / "interior_office_03_dsine.png"
FRAMES = 12  # path frames; the first is the start camera, so 11 are generated
# Waypoints to click, in metres relative to the photo's camera on the map (x right, y ahead).
TARGETS = [(0.0, 1.2), (-0.4, 1.9), (0.25, 2.5)]
VIEW_ONLY = "This is a view-only link: it cannot change the project."
STATE: dict = {}  # what the full-flow test made, reused by the view-only test

# Installed in the page before the Generate click: a 5 ms poll plus a MutationObserver sample the
# latest-frame <img> src (and whether it has loaded, i.e. is really painted) and the progress
# status, logging every change with performance.now(); a capture-phase click listener stamps the
# Generate click on the same clock, so latency is measured entirely inside the browser.
TRACKER_JS = """
() => {
  const w = (window.__loci = { events: [], click: null });
  const last = {};
  const sample = () => {
    const t = performance.now();
    const img = document.querySelector('#latest-frame img');
    const src = img?.getAttribute('src') || '';
    const shown = img && img.complete && img.naturalWidth > 0 ? src : '';
    const status = document.querySelector('#loci-progress')?.dataset.status || '';
    for (const [k, val] of [['src', src], ['shown', shown], ['status', status]]) {
      if (val !== last[k]) {
        last[k] = val;
        if (val) w.events.push({ t, k, val });
      }
    }
  };
  new MutationObserver(sample).observe(document.querySelector('gradio-app'), {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  setInterval(sample, 5);
  sample();
  document.addEventListener('click', (e) => {
    if (e.target.closest('#generate') && w.click === null) w.click = performance.now();
  }, true);
}
"""


# ---- helpers ------------------------------------------------------------------------------------
def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def _value(page, elem_id: str) -> str:
    """The value of a Textbox (or Number) component."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _cells(page) -> list[list[str]]:
    """[cell id, kind, status] of every notebook cell on the page, in order."""
    return page.locator("#notebook .loci-cell").evaluate_all(
        "els => els.map(e => [e.dataset.cell, e.dataset.kind, e.dataset.status])"
    )


def _db_cells(app, pid: str, key: str) -> list[list[str]]:
    _, _, cells = app.studio.open_project(pid, key)
    return [[c.id, c.kind, c.status] for c in cells]


def _view_link(page) -> str:
    """The absolute URL of the view-only link in the share box (Project tab)."""
    link = page.locator("#share-links li", has_text="view only").locator("a")
    return link.evaluate("a => a.href")


def _error_toast(page, text: str) -> str:
    """Wait for an error toast containing ``text``; return its message."""
    toast = page.locator("[data-testid=toast-body].error").filter(has_text=text).first
    toast.wait_for()
    # It flies in (opacity 0 -> 1): wait until it is really painted (and in the screenshots).
    page.wait_for_function("el => getComputedStyle(el).opacity === '1'", arg=toast.element_handle())
    return toast.get_by_test_id("toast-text").filter(has_text=text).first.inner_text()


def _close_toasts(page) -> None:
    for button in page.get_by_test_id("toast-close").all():
        if button.is_visible():
            button.click()
    page.locator("[data-testid=toast-body].error").first.wait_for(state="detached")


def _wait_text(page, elem_id: str, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([id, text]) => (document.getElementById(id)?.textContent || '').includes(text)",
        arg=[elem_id, text],
        timeout=timeout,
    )


def _click_map(page, app, pid: str, key: str) -> list[list[float]]:
    """Click the map image at TARGETS (ground metres ahead of the camera); return the waypoints
    the page shows afterwards. The map's pixel geometry comes from the server's view of the map
    (studio.tabs.trajectory.map_base), so each click lands where TARGETS says."""
    from studio.tabs.trajectory import map_base

    ws = app.studio.world(pid, key)
    view = map_base(app.studio, ws)[0]
    cam = ws.ground().to_ground(np.asarray(ws.frames[0].c2w)[:3, 3])[0]
    img = page.locator("#map img")
    box = img.evaluate(
        """i => { const r = i.getBoundingClientRect();
                  return [r.x, r.y, r.width, r.height, i.naturalWidth, i.naturalHeight,
                          getComputedStyle(i).objectFit]; }"""
    )
    x, y, w, h, nw, nh, fit = box
    assert nw == view.size and nh == view.size, box
    s = min(w / nw, h / nh)  # object-fit contain / scale-down: the drawn picture's scale
    if fit == "scale-down":
        s = min(s, 1.0)
    ox, oy = x + (w - nw * s) / 2, y + (h - nh * s) / 2
    textbox = page.locator("#waypoints textarea, #waypoints input").first
    for n, target in enumerate(TARGETS, 1):
        px, py = view.to_pixels(cam + np.asarray(target))[0]
        assert 0 < px < nw and 0 < py < nh, (target, px, py)
        before = img.get_attribute("src")
        page.mouse.click(ox + px * s, oy + py * s)
        page.wait_for_function(
            "([el, n]) => { try { return JSON.parse(el.value).length === n } catch (e) {"
            " return false } }",
            arg=[textbox.element_handle(), n],
        )
        # The select handler appends the point, then the map is redrawn with the path: wait for
        # the new picture, so the next click is not dropped while an event is still running.
        page.wait_for_function(
            "([i, before]) => i.getAttribute('src') !== before && i.complete && i.naturalWidth",
            arg=[img.element_handle(), before],
        )
    got = json.loads(textbox.input_value())
    for (gx, gy), (tx, ty) in zip(got, TARGETS, strict=True):
        # Within 3 map pixels of where we clicked (pixel centres, rounding).
        assert abs(gx - cam[0] - tx) <= 3 * view.scale and abs(gy - cam[1] - ty) <= 3 * view.scale, (
            got, TARGETS, cam, view.scale)  # fmt: skip
    return got


def _canvas_has_picture(page, selector: str, timeout_s: float = 20.0) -> np.ndarray:
    """Screenshot of the canvas once it shows a picture (not one flat colour)."""
    canvas = page.locator(selector)
    canvas.wait_for()
    deadline = time.monotonic() + timeout_s
    while True:
        png = canvas.screenshot()
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        lit = (img.max(axis=2) > 24).mean()
        if lit > 0.02 and img.std() > 8:
            return img
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} stayed blank ({lit:.1%} lit, std {img.std():.1f})")
        time.sleep(0.25)


# ---- the full flow ------------------------------------------------------------------------------
def test_create_generate_inspect_export(page, studio_app, artifacts):
    app = studio_app
    shot = lambda name: page.screenshot(path=str(artifacts / f"e2e-{name}.png"))  # noqa: E731

    # 1. Project tab: a new project, with its share links.
    page.locator("#project-name textarea, #project-name input").first.fill("E2E office")
    page.locator("#new-project").click()
    _wait_text(page, "share-links", "view only")
    pid, edit_key = _value(page, "project-id"), _value(page, "project-key")
    assert pid and edit_key
    assert page.locator("#project-key input").get_attribute("type") == "password"
    assert "can edit" in page.locator("#access-mode").inner_text()
    view_href = _view_link(page)
    assert f"project={pid}" in view_href and f"key={edit_key}" not in view_href
    assert _db_cells(app, pid, edit_key) == []
    shot("01-project")

    # Photo tab: upload a real photo, use it, see the depth preview and the seeded points.
    _tab(page, "Photo")
    page.locator("#photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#photo-preview img").wait_for()
    page.locator("#set-photo").click()
    page.locator("#depth-preview img").wait_for()
    width = app.studio.ctx.width
    _wait_text(page, "photo-info", f"World seeded at {width}")
    page.wait_for_function(
        f"() => document.querySelector('#depth-preview img').naturalWidth === {width}"
    )
    shot("02-photo")
    assert [(k, s) for _, k, s in _db_cells(app, pid, edit_key)] == [("photo", "done")]

    # 2. Trajectory tab: the map, waypoints clicked on it, 12 frames, "Use this path".
    _tab(page, "Trajectory")
    page.locator("#map img").wait_for()
    page.wait_for_function("() => document.querySelector('#map img').naturalWidth > 0")
    waypoints = _click_map(page, app, pid, edit_key)
    frames = page.locator("#path-frames input[type=number]")
    frames.fill(str(FRAMES))
    frames.press("Enter")
    frames.blur()
    assert page.locator("#path-frames input[type=range]").input_value() == str(FRAMES)
    page.locator("#save-path").click()
    _wait_text(page, "path-saved", "Saved as step 2")
    assert f"{FRAMES} frames" in page.locator("#path-saved").inner_text()
    shot("03-trajectory")
    traj = next(c for c in app.studio.open_project(pid, edit_key)[2] if c.kind == "trajectory")
    assert traj.params["mode"] == "waypoints" and traj.params["frames"] == FRAMES
    assert np.allclose(traj.params["waypoints"], waypoints, atol=1e-3)

    # 3. Generate tab: frames stream in; time from the click to the first painted frame.
    _tab(page, "Generate")
    page.locator("#generate").wait_for()
    page.evaluate(TRACKER_JS)
    page.locator("#generate").click()
    page.wait_for_function(
        "() => new Set(window.__loci.events.filter(e => e.k === 'shown').map(e => e.val)).size >= 2"
    )
    shot("04-generating")
    page.wait_for_function(
        "() => document.querySelector('#loci-progress')?.dataset.status === 'done'",
        timeout=60_000,
    )
    page.locator("#live-map img").wait_for()
    video = page.locator("#walkthrough video")  # the walkthrough streams in as video chunks
    video.wait_for()
    page.wait_for_function(
        "v => !!(v.currentSrc || v.getAttribute('src'))", arg=video.element_handle()
    )
    shot("05-generated")
    d = page.evaluate("() => window.__loci")
    click, events = d["click"], d["events"]
    assert click is not None, "the page did not see the Generate click"
    done_t = next(e["t"] for e in events if e["k"] == "status" and e["val"] == "done")
    shown = [e for e in events if e["k"] == "shown" and e["t"] <= done_t]
    srcs = [e for e in events if e["k"] == "src" and e["t"] <= done_t]
    progress = page.locator("#loci-progress")
    total = int(progress.get_attribute("data-total"))
    timing = {
        "click_to_first_frame_ms": round(shown[0]["t"] - click, 1),  # painted (<img> loaded)
        "click_to_first_src_ms": round(srcs[0]["t"] - click, 1),  # <img src> set
        "click_to_done_ms": round(done_t - click, 1),
        "frames_painted_before_done": len({e["val"] for e in shown}),
        "frames_generated": total,
        "width": app.studio.ctx.width,
    }
    (artifacts / "first_frame.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"\n[e2e] Generate click -> first streamed frame: {timing}")
    # Streaming, not one final dump: >= 2 distinct frames painted before the job said done.
    assert timing["frames_painted_before_done"] >= 2, timing
    assert total == FRAMES - 1 and progress.get_attribute("data-done") == str(total)
    assert _value(page, "status").startswith(f"done: {total}/{total} frames")
    kinds = [(k, s) for _, k, s in _db_cells(app, pid, edit_key)]
    assert kinds == [("photo", "done"), ("trajectory", "done"), ("generation", "done")]
    assert len(app.studio.world(pid, edit_key).frames) == FRAMES

    # 4. Inspect tab: lift the world; the splats show in the Model3D viewer.
    _tab(page, "Inspect")
    page.locator("#load-inspect").click()
    _wait_text(page, "inspect-summary", "splats", timeout=60_000)
    summary = page.locator("#inspect-summary").inner_text()
    splats = int(re.search(r"(\d+) splats", summary).group(1))
    assert summary.startswith(f"{FRAMES} frames") and splats > 100, summary
    link = page.locator("#splat-viewer a[data-testid=model3d-download-link]")
    assert link.get_attribute("href").endswith(".ply")
    pic = _canvas_has_picture(page, "#splat-viewer canvas")
    cv2.imwrite(str(artifacts / "e2e-06-splats-canvas.png"), pic)
    page.locator("#mesh-viewer canvas").wait_for()
    shot("06-inspect")

    # 5. Export tab: pick ply, export, download it.
    _tab(page, "Export")
    page.locator("#export-format input").click()
    page.get_by_role("option", name=re.compile(r"^ply:")).click()
    assert page.locator("#export-format input").input_value().startswith("ply:")
    page.locator("#export").click()
    download_link = page.locator("#export-file a[data-testid=download-link]")
    download_link.wait_for()
    _wait_text(page, "export-note", ".ply")
    with page.expect_download() as dl:
        download_link.click()
    data = Path(dl.value.path()).read_bytes()
    assert dl.value.suggested_filename.endswith(".ply")
    assert data.startswith(b"ply\n"), data[:32]
    header = data[: data.index(b"end_header")].decode()
    assert f"element vertex {splats}\n" in header, header
    shot("07-export")

    kinds = [k for _, k, _ in _db_cells(app, pid, edit_key)]
    assert kinds[:3] == ["photo", "trajectory", "generation"] and "lift" in kinds
    assert kinds[-1] == "export"
    STATE.update(pid=pid, edit_key=edit_key, view_href=view_href)


# ---- sharing -------------------------------------------------------------------------------------
def _seed_project(app) -> tuple[str, str]:
    """A project with a photo and a path, made server-side (when the flow test did not run)."""
    s = app.studio
    pid, _view_key, edit_key = s.create_project("E2E shared")
    s.set_photo(pid, edit_key, str(PHOTO))
    s.save_path(pid, edit_key, s.plan_path(pid, edit_key, preset="orbit", frames=4))
    return pid, edit_key


def test_view_only_link_cannot_change_anything(open_page, studio_app, artifacts):
    app = studio_app
    pid, edit_key = (STATE["pid"], STATE["edit_key"]) if STATE else _seed_project(app)
    before = _db_cells(app, pid, edit_key)
    name_before = app.studio.open_project(pid, edit_key)[0].name

    # The owner opens the project by its edit link and copies the view-only link.
    owner = open_page(f"?project={pid}&key={edit_key}")
    _wait_text(owner, "share-links", "view only")
    assert _cells(owner) == before
    view_href = _view_link(owner)
    if STATE:
        assert view_href == STATE["view_href"]

    # A second person (own browser context) opens it: the notebook, marked view-only.
    viewer = open_page(view_href[view_href.index("?") :])
    viewer.wait_for_function(
        "n => document.querySelectorAll('#notebook .loci-cell').length === n", arg=len(before)
    )
    assert _cells(viewer) == before
    assert "View only" in viewer.locator("#access-mode").inner_text()
    assert viewer.locator("#notebook .loci-readonly").is_visible()
    assert "view-only link" in viewer.locator("#share-links").inner_text()
    assert _value(viewer, "project-id") == pid
    assert edit_key not in viewer.content()  # the edit key never reaches a viewer
    viewer.screenshot(path=str(artifacts / "e2e-08-view-only.png"))

    # Edits are refused with a toast: revert the last step, rename, generate.
    viewer.locator("#revert").click()
    assert _error_toast(viewer, "view-only") == VIEW_ONLY
    viewer.screenshot(path=str(artifacts / "e2e-09-view-only-refused.png"))
    _close_toasts(viewer)
    viewer.locator("#project-name textarea, #project-name input").first.fill("hijacked")
    viewer.locator("#rename-project").click()
    assert _error_toast(viewer, "view-only") == VIEW_ONLY
    _close_toasts(viewer)
    _tab(viewer, "Generate")
    viewer.locator("#generate").click()
    assert _error_toast(viewer, "view-only") == VIEW_ONLY
    _tab(viewer, "Project")
    time.sleep(2.5)  # a collaborators' poll (every 2 s) would have shown any change by now
    assert _cells(viewer) == before

    # Nothing changed on the server either, and the owner still sees the same history.
    assert _db_cells(app, pid, edit_key) == before
    project, can_edit, _ = app.studio.open_project(pid, edit_key)
    assert can_edit and project.name == name_before
    assert app.studio.repo.active_jobs(project.id) == []
    assert _cells(owner) == before


# ---- errors --------------------------------------------------------------------------------------
def test_bad_input_shows_a_readable_error_toast(page, studio_app, artifacts, tmp_path):
    # Generate before any project exists.
    _tab(page, "Generate")
    page.locator("#generate").click()
    assert _error_toast(page, "project") == "Open or create a project first."
    page.screenshot(path=str(artifacts / "e2e-10-no-project-error.png"))
    _close_toasts(page)

    # A file that is not an image: refused on upload, and again on "Use this photo".
    _tab(page, "Project")
    page.locator("#new-project").click()
    _wait_text(page, "share-links", "view only")
    pid, key = _value(page, "project-id"), _value(page, "project-key")
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not an image\n")
    _tab(page, "Photo")
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    message = _error_toast(page, "not an image")
    assert "holiday.png" in message, message
    _close_toasts(page)
    page.locator("#set-photo").click()
    assert _error_toast(page, "not an image") == message
    page.screenshot(path=str(artifacts / "e2e-11-not-an-image-error.png"))
    assert _db_cells(studio_app, pid, key) == []  # nothing was stored
