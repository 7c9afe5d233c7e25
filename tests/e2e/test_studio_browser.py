"""The studio in a real headless Chromium, tab by tab, as a person would use it.

``test_create_generate_inspect_export``: Project -> new project, share links as full URLs;
Photo -> upload a real photo, the photo as frame 0 and its depth; Trajectory -> a stroke drawn
with real pointer events along a curve becomes waypoints that follow it in order, 12 frames,
"Use this path"; Generate -> frames stream in along that path (click-to-first-frame time in
``first_frame.json``) while the live 3D view grows; Inspect -> the 3D view opens at frame 0 and
its canvas matches frame 0 (correlation in ``viewer.json``), the slider moves it to frame N where
it matches frame N better, the frame/mask switch overlays them at that camera, the mesh covers
most of the canvas; Export -> ``<project>-<step>.ply`` downloads and shows under its step.
``test_view_only_link_can_fly_but_not_change_anything``: the view link in a second browser
context flies through the world, and every edit, saving a sketched path included, is refused
with a readable toast. ``test_phone_sized_screen_sketches_with_touch``: a 390 px wide touch
screen taps and draws with real touch events. ``test_bad_input_shows_a_readable_error_toast``.
Screenshots of every step go to the artifacts folder (``e2e-*.png``), with ``studio-strip.png``.

Selectors (Gradio 6.31 DOM; the studio gives its components elem_ids):
- Only the selected tab's components are in the DOM: switch with ``role=tab`` first.
- ``gr.Button(elem_id=X)``: the <button> itself is ``#X``. Other components: ``#X`` is their
  ``div.block``; a Textbox's value is the ``.value`` of its <textarea>/<input>.
- The map sketch: ``#map-sketch .loci-map`` (``data-exact="1"`` once the server's plan for the
  current waypoints is drawn; ``.__lociMap`` has ``toWorld``/``toScreen``/``times``).
- The 3D views: ``#world-view .loci-view``, ``#live-view .loci-view`` (``data-state``,
  ``data-frame``, ``data-model``, ``data-settled``: renders that stayed final for 250 ms).
- Error toast: ``[data-testid=toast-body].error``; identical messages are shown once, so a toast
  is closed (``toast-close``) before the next error with the same text is expected.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from tests.e2e.flow import (
    TRACKER_JS,
    canvas_image,
    cells,
    close_toasts,
    correlation,
    db_cells,
    draw_stroke,
    error_toast,
    map_state,
    panel,
    strip,
    tab,
    value,
    view_link,
    view_settled,
    wait_text,
)
from tests.helpers import PHOTOS

# LOCI_E2E_PHOTO picks another photo (the README strip is made from examples/office-tum-fr3.jpg).
PHOTO = Path(os.environ.get("LOCI_E2E_PHOTO") or PHOTOS / "interior_office_03_dsine.png")
FRAMES = 12  # path frames; the first is the start camera, so 11 are generated
VIEW_ONLY = "This is a view-only link: it cannot change the project."
BACKGROUND = np.array([28, 23, 21])  # the 3D view's clear colour #15171c, as BGR
STATE: dict = {}  # what the full-flow test made, reused by the view-only test


def _stroke_from_start(page, ahead_m: float = 1.4, side_m: float = 0.35, n: int = 40):
    """Screen points of an S-curve from the map's start marker, ``ahead_m`` metres ahead."""
    return page.evaluate(
        """([ahead, side, n]) => {
          const m = document.querySelector('#map-sketch .loci-map').__lociMap;
          const s = m.base.start;
          const pts = [];
          for (let k = 0; k < n; k++) {
            const t = k / (n - 1);
            pts.push(m.toScreen(s[0] + side * Math.sin(2 * Math.PI * t), s[1] + ahead * t));
          }
          const r = m.canvas.getBoundingClientRect();
          return pts.map(([x, y]) => [x + r.left, y + r.top]);
        }""",
        [ahead_m, side_m, n],
    )


def _polyline_distance(p: np.ndarray, line: np.ndarray) -> tuple[float, float]:
    """(distance, arc-length position) of point p from the polyline."""
    best, where, run = np.inf, 0.0, 0.0
    for a, b in zip(line[:-1], line[1:], strict=True):
        seg = b - a
        L = float(np.linalg.norm(seg))
        s = float(np.clip((p - a) @ seg / max(L * L, 1e-12), 0, 1))
        d = float(np.linalg.norm(p - a - s * seg))
        if d < best:
            best, where = d, run + s * L
        run += L
    return best, where


# ---- the full flow ------------------------------------------------------------------------------
def test_create_generate_inspect_export(page, studio_app, artifacts):
    app = studio_app
    shot = lambda name: page.screenshot(path=str(artifacts / f"e2e-{name}.png"))  # noqa: E731

    # 0. The first-run hint walks through the steps; "Got it" hides it for good.
    hint = page.locator("#loci-hint")
    assert "Trajectory" in hint.inner_text() and "draw the camera path" in hint.inner_text()
    hint.locator("[data-dismiss]").click()
    hint.wait_for(state="hidden")

    # 1. Project tab: a new project; its share links are full URLs with copy buttons.
    page.locator("#project-name textarea, #project-name input").first.fill("E2E office")
    page.locator("#new-project").click()
    wait_text(page, "share-links", "share links")
    pid, edit_key = value(page, "project-id"), value(page, "project-key")
    assert pid and edit_key
    assert page.locator("#project-key input").get_attribute("type") == "password"
    assert "can edit" in page.locator("#access-mode").inner_text()
    view_href = view_link(page)
    assert view_href.startswith(app.local_url.rstrip("/")) and f"project={pid}" in view_href
    assert f"key={edit_key}" not in view_href
    assert page.locator("#share-links [data-kind=edit] button[data-copy]").is_visible()
    assert db_cells(app, pid, edit_key) == []
    shot("01-project")

    # Photo tab: upload a real photo, use it; the photo as frame 0, its depth, the points.
    tab(page, "Photo")
    page.locator("#photo input[type=file]").set_input_files(str(PHOTO))
    page.locator("#photo-preview img").wait_for()
    page.locator("#set-photo").click()
    width = app.studio.ctx.width
    wait_text(page, "photo-info", f"World seeded at {width}")
    for elem in ("depth-preview", "frame0-preview"):
        page.wait_for_function(
            f"() => document.querySelector('#{elem} img')?.naturalWidth === {width}"
        )
    assert page.locator("#examples img").count() >= 3  # example photos ship with the repo
    shot("02-photo")
    assert [(k, s) for _, k, s in db_cells(app, pid, edit_key)] == [("photo", "done")]

    # 2. Trajectory tab: draw a curve with the mouse from the start marker; the server plans it.
    tab(page, "Trajectory")
    page.wait_for_function(
        "() => document.querySelector('#map-sketch .loci-map')?.__lociMap?.base?.image"
    )
    frames = page.locator("#path-frames input[type=number]")
    frames.fill(str(FRAMES))
    frames.press("Enter")
    frames.blur()
    page.locator("#map-sketch canvas").scroll_into_view_if_needed()
    stroke = _stroke_from_start(page)
    draw_stroke(page, stroke)
    page.wait_for_function(
        "() => document.querySelector('#map-sketch .loci-map').dataset.exact === '1'"
    )
    times = map_state(page)["times"]
    waypoints = json.loads(value(page, "waypoints"))
    drawn = np.array(page.evaluate(
        """(pts) => { const m = document.querySelector('#map-sketch .loci-map').__lociMap;
                      const r = m.canvas.getBoundingClientRect();
                      return pts.map(([x, y]) => m.toWorld(x - r.left, y - r.top)); }""",
        stroke,
    ))  # fmt: skip
    zoom = map_state(page)["zoom"]
    assert 3 <= len(waypoints) <= 25, waypoints  # simplified, not one point per pixel
    fits = [_polyline_distance(np.array(w), drawn) for w in waypoints]
    # Every waypoint lies on the drawn stroke (a drawn sample, rounded to mm), in drawing order.
    assert max(d for d, _ in fits) < 1.5 / zoom + 0.002, (fits, zoom)
    assert all(b[1] > a[1] for a, b in zip(fits, fits[1:], strict=False)), fits
    assert (
        page.evaluate("document.querySelector('#path-preset input').value") == "sketch on the map"
    )
    wait_text(page, "coverage", f"{FRAMES} frames")
    # What memory knows of a few views. On a clean clone this is the first call of the warp
    # kernels; the studio compiles them in the background from launch (~40 s of CPU cold, more
    # on a loaded CI machine), so this wait allows for a cold compile, not just the preview.
    page.locator("#memory-preview img").first.wait_for(timeout=150_000)
    page.locator("#save-path").click()
    wait_text(page, "path-saved", "Saved as step 2")
    shot("03-trajectory")
    panel(page, artifacts, "2-sketch", "#map-sketch")
    traj = next(c for c in app.studio.open_project(pid, edit_key)[2] if c.kind == "trajectory")
    assert traj.params["mode"] == "waypoints" and traj.params["frames"] == FRAMES
    assert np.allclose(traj.params["waypoints"], waypoints, atol=1e-3)
    # The saved cameras follow the stroke too (the spline bends a little between waypoints).
    ws = app.studio.world(pid, edit_key)
    gf = ws.ground()
    track = gf.to_ground(np.stack([c.c2w[:3, 3] for c in app.studio.trajectory_of(traj.id)]))
    dev = [_polyline_distance(p, np.vstack([drawn[:1], drawn]))[0] for p in track]
    assert max(dev) < 0.1, dev
    timing = {
        "stroke_end_to_preview_ms": round(times["preview"] - times["strokeEnd"], 1),
        "stroke_end_to_planned_ms": round(times["planned"] - times["strokeEnd"], 1),
        "waypoints": len(waypoints),
        "max_waypoint_distance_from_stroke_m": round(max(d for d, _ in fits), 4),
        "max_camera_distance_from_stroke_m": round(max(dev), 4),
    }
    (artifacts / "sketch.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"\n[e2e] sketch: {timing}")

    # 3. Generate tab: frames stream in; time from the click to the first painted frame.
    tab(page, "Generate")
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
    view_settled(page, "live-view")  # the world grew in 3D as chunks were lifted
    shot("05-generated")
    panel(page, artifacts, "3-live", "#live-view")
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
    assert timing["frames_painted_before_done"] >= 2, timing
    assert total == FRAMES - 1 and progress.get_attribute("data-done") == str(total)
    assert value(page, "status").startswith(f"done: {total}/{total} frames")
    kinds = [(k, s) for _, k, s in db_cells(app, pid, edit_key)]
    assert kinds == [("photo", "done"), ("trajectory", "done"), ("generation", "done")]
    gen = app.studio.open_project(pid, edit_key)[2][-1]
    assert gen.params["trajectory"] == traj.id  # generated along the drawn path
    ws = app.studio.world(pid, edit_key)
    assert len(ws.frames) == FRAMES

    # 4. Inspect tab: the 3D view opens at frame 0 and shows the photo's scene.
    tab(page, "Inspect")
    t_click = page.evaluate("() => performance.now()")
    page.locator("#load-inspect").click()
    wait_text(page, "inspect-summary", "splats", timeout=60_000)
    page.locator("#inspect-image img").wait_for()  # the frame panel shows frame 0 at once
    canvas0 = view_settled(page, "world-view", frame=0)
    times = page.evaluate("document.querySelector('#world-view .loci-view').__lociView.times")
    cv2.imwrite(str(artifacts / "e2e-06-viewer-frame0.png"), canvas0)
    panel(page, artifacts, "4-splats", "#world-view")
    shot("06-inspect")
    rgb = [cv2.cvtColor(_frame(app, ws, i), cv2.COLOR_RGB2BGR) for i in range(len(ws.frames))]
    last = len(ws.frames) - 1
    c00, c0n = correlation(canvas0, rgb[0]), correlation(canvas0, rgb[last])
    assert c00 > 0.8 and c00 > c0n, (c00, c0n)
    # The slider moves the 3D camera to frame N: the canvas changes and now matches frame N.
    num = page.locator("#inspect-frame input[type=number]")
    num.fill(str(last))
    num.press("Enter")
    canvas_n = view_settled(page, "world-view", frame=last)
    cv2.imwrite(str(artifacts / "e2e-07-viewer-frameN.png"), canvas_n)
    cnn, cn0 = correlation(canvas_n, rgb[last]), correlation(canvas_n, rgb[0])
    assert cnn > 0.7 and cnn > cn0, (cnn, cn0)
    assert np.abs(canvas_n.astype(float) - canvas0.astype(float)).mean() > 5
    # The switch puts the generated frame, then its source mask, over the canvas there.
    for show in ("frame", "mask"):
        page.locator(f"#world-view [data-group=show] button[data-value={show}]").click()
        page.wait_for_function(
            "() => { const o = document.querySelector('#world-view .lv-overlay');"
            " return !o.hidden && o.complete && o.naturalWidth > 0; }"
        )
    shot("07-inspect-mask")
    page.locator("#world-view [data-group=show] button[data-value='3d']").click()
    # The mesh, same cameras and controls, covers most of the canvas (back at frame 0).
    num.fill("0")
    num.press("Enter")
    page.locator("#world-view [data-group=model] button[data-value=mesh]").click()
    mesh = view_settled(page, "world-view", frame=0, model="mesh")
    cv2.imwrite(str(artifacts / "e2e-08-viewer-mesh.png"), mesh)
    panel(page, artifacts, "5-mesh", "#world-view")
    covered = float((np.abs(mesh.astype(int) - BACKGROUND).max(axis=2) > 12).mean())
    assert covered > 0.5, covered
    page.locator("#world-view [data-group=model] button[data-value=splats]").click()
    shot("08-inspect-mesh")
    viewer = {
        "corr_frame0_canvas_vs_frame0": round(c00, 4),
        "corr_frame0_canvas_vs_frameN": round(c0n, 4),
        "corr_frameN_canvas_vs_frameN": round(cnn, 4),
        "corr_frameN_canvas_vs_frame0": round(cn0, 4),
        "mesh_coverage": round(covered, 4),
        "load_click_to_first_paint_ms": round(times["firstContent"] - t_click, 1),
        "load_click_to_settled_ms": round(times["settled"] - t_click, 1),
        "splats": int(re.search(r"(\d+) splats", page.locator("#inspect-summary").inner_text())[1]),
    }
    (artifacts / "viewer.json").write_text(json.dumps(viewer, indent=2) + "\n")
    print(f"\n[e2e] viewer: {viewer}")
    assert page.locator("#dl-splats").is_visible() and page.locator("#dl-mesh").is_visible()

    # 5. Export tab: ply, named by project and step, attached to the generation step.
    tab(page, "Export")
    page.locator("#export-format input").click()
    page.get_by_role("option", name=re.compile(r"^ply:")).click()
    page.locator("#export").click()
    download_link = page.locator("#export-file a[data-testid=download-link]")
    download_link.wait_for()
    wait_text(page, "export-note", ".ply")
    with page.expect_download() as dl:
        download_link.click()
    data = Path(dl.value.path()).read_bytes()
    assert dl.value.suggested_filename == "e2e-office-3.ply", dl.value.suggested_filename
    assert data.startswith(b"ply\n"), data[:32]
    header = data[: data.index(b"end_header")].decode()
    assert f"element vertex {viewer['splats']}\n" in header, header
    shot("09-export")
    kinds = [k for _, k, _ in db_cells(app, pid, edit_key)]
    assert kinds == ["photo", "trajectory", "generation", "lift"]  # no export step
    tab(page, "Project")
    page.locator("#notebook .loci-cell[data-kind=generation] a[data-format=ply]").wait_for()
    shot("10-attachments")
    strip(artifacts, ["2-sketch", "3-live", "4-splats", "5-mesh"])
    STATE.update(pid=pid, edit_key=edit_key, view_href=view_href)


def _frame(app, ws, i: int) -> np.ndarray:
    from studio.world_store import load_rgb

    return load_rgb(app.studio.store, ws.frames[i])


# ---- sharing -------------------------------------------------------------------------------------
def _seed_project(app) -> tuple[str, str]:
    """A project with a generated, lifted world, made server-side (when the flow did not run)."""
    s = app.studio
    pid, _view_key, edit_key = s.create_project("E2E shared")
    s.set_photo(pid, edit_key, str(PHOTO))
    s.save_path(pid, edit_key, s.plan_path(pid, edit_key, preset="forward", frames=6))
    list(s.generate(pid, edit_key))
    s.lift(pid, edit_key)
    s.export(pid, edit_key, "glb")
    return pid, edit_key


def test_view_only_link_can_fly_but_not_change_anything(open_page, studio_app, artifacts):
    app = studio_app
    pid, edit_key = (STATE["pid"], STATE["edit_key"]) if STATE else _seed_project(app)
    before = db_cells(app, pid, edit_key)
    name_before = app.studio.open_project(pid, edit_key)[0].name

    owner = open_page(f"?project={pid}&key={edit_key}")
    wait_text(owner, "share-links", "share links")
    assert cells(owner) == before
    href = view_link(owner)
    viewer = open_page(href[href.index("?") :])
    viewer.wait_for_function(
        "n => document.querySelectorAll('#notebook .loci-cell').length === n", arg=len(before)
    )
    assert cells(viewer) == before
    assert "View only" in viewer.locator("#access-mode").inner_text()
    assert edit_key not in viewer.content()  # the edit key never reaches a viewer
    viewer.screenshot(path=str(artifacts / "e2e-11-view-only.png"))

    # A viewer looks and flies: the world loads (its lift exists), W moves the camera.
    tab(viewer, "Inspect")
    viewer.locator("#load-inspect").click()
    start = view_settled(viewer, "world-view", frame=0)
    canvas = viewer.locator("#world-view canvas")
    canvas.click(position={"x": 40, "y": 40})
    viewer.keyboard.down("KeyW")
    time.sleep(0.8)
    viewer.keyboard.up("KeyW")
    viewer.wait_for_function(
        "() => document.querySelector('#world-view .lv-status').textContent"
        ".startsWith('moved away')"
    )
    moved = view_settled(viewer, "world-view")
    assert np.abs(moved.astype(float) - start.astype(float)).mean() > 3
    viewer.screenshot(path=str(artifacts / "e2e-12-view-only-flying.png"))

    # It may sketch a path on the map, but saving it is refused.
    tab(viewer, "Trajectory")
    viewer.wait_for_function(
        "() => document.querySelector('#map-sketch .loci-map')?.__lociMap?.base?.image"
    )
    viewer.locator("#map-sketch canvas").scroll_into_view_if_needed()
    draw_stroke(viewer, _stroke_from_start(viewer, ahead_m=0.8, side_m=0.2, n=12))
    viewer.wait_for_function(
        "() => document.querySelector('#map-sketch .loci-map').dataset.exact === '1'"
    )
    viewer.locator("#save-path").click()
    assert error_toast(viewer, "view-only") == VIEW_ONLY
    viewer.screenshot(path=str(artifacts / "e2e-13-view-only-refused.png"))
    close_toasts(viewer)
    tab(viewer, "Project")
    viewer.locator("#revert").click()
    assert error_toast(viewer, "view-only") == VIEW_ONLY
    close_toasts(viewer)
    tab(viewer, "Generate")
    viewer.locator("#generate").click()
    assert error_toast(viewer, "view-only") == VIEW_ONLY
    tab(viewer, "Project")
    time.sleep(2.5)  # a collaborators' poll (every 2 s) would have shown any change by now
    assert cells(viewer) == before
    assert db_cells(app, pid, edit_key) == before
    project, can_edit, _ = app.studio.open_project(pid, edit_key)
    assert can_edit and project.name == name_before
    assert app.studio.repo.active_jobs(project.id) == []


def test_phone_sized_screen_sketches_with_touch(browser, studio_app, studio_url, artifacts):
    """390 x 844, touch only: the map fits the screen, a tap adds a point, a finger draws."""
    app = studio_app
    pid, edit_key = (STATE["pid"], STATE["edit_key"]) if STATE else _seed_project(app)
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                  is_mobile=True, device_scale_factor=2)  # fmt: skip
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{studio_url}?project={pid}&key={edit_key}")
        wait_text(page, "share-links", "share links")
        tab(page, "Trajectory")
        page.wait_for_function(
            "() => document.querySelector('#map-sketch .loci-map')?.__lociMap?.base?.image"
        )
        box = page.locator("#map-sketch canvas").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5, box
        assert page.evaluate("document.documentElement.scrollWidth") <= 392  # no sideways scroll
        page.locator("#map-sketch canvas").scroll_into_view_if_needed()
        box = page.locator("#map-sketch canvas").bounding_box()
        stroke = _stroke_from_start(page, ahead_m=0.9, side_m=0.25, n=16)
        cdp = context.new_cdp_session(page)

        def touch(kind: str, pts: list) -> None:
            points = [{"x": x, "y": y} for x, y in pts]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

        touch("touchStart", [stroke[0]])
        for p in stroke[1:]:
            touch("touchMove", [p])
        touch("touchEnd", [])
        page.wait_for_function(
            "() => document.querySelector('#map-sketch .loci-map').dataset.exact === '1'"
        )
        drawn = json.loads(value(page, "waypoints"))
        assert len(drawn) >= 2, drawn
        x, y = stroke[-1][0] + 20, stroke[-1][1] - 25
        page.touchscreen.tap(x, y)  # a tap adds one point at the end
        page.wait_for_function(
            "n => JSON.parse(document.querySelector('#waypoints textarea').value).length === n",
            arg=len(drawn) + 1,
        )
        page.screenshot(path=str(artifacts / "e2e-14-phone.png"))
    finally:
        context.close()


# ---- errors --------------------------------------------------------------------------------------
def test_bad_input_shows_a_readable_error_toast(page, studio_app, artifacts, tmp_path):
    tab(page, "Generate")
    page.locator("#generate").click()
    assert error_toast(page, "project") == "Open or create a project first."
    page.screenshot(path=str(artifacts / "e2e-15-no-project-error.png"))
    close_toasts(page)

    tab(page, "Project")
    page.locator("#new-project").click()
    wait_text(page, "share-links", "share links")
    pid, key = value(page, "project-id"), value(page, "project-key")
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not an image\n")
    tab(page, "Photo")
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    message = error_toast(page, "not an image")
    assert "holiday.png" in message, message
    close_toasts(page)
    page.locator("#set-photo").click()
    assert error_toast(page, "not an image") == message
    page.screenshot(path=str(artifacts / "e2e-16-not-an-image-error.png"))
    assert db_cells(studio_app, pid, key) == []

    # A world with only its photo: the 3D view says what is missing instead of staying black.
    page.locator("#examples img").first.click()
    page.locator("#photo-preview img").wait_for()
    page.locator("#set-photo").click()
    wait_text(page, "photo-info", "World seeded")
    tab(page, "Inspect")
    page.locator("#load-inspect").click()
    page.wait_for_function(
        "() => document.querySelector('#world-view .lv-msg')?.textContent.includes('Generate')"
    )
    page.screenshot(path=str(artifacts / "e2e-17-no-world-yet.png"))


def test_no_webgl2_shows_a_message_and_the_2d_frames(open_page, studio_app, artifacts):
    app = studio_app
    pid, edit_key = (STATE["pid"], STATE["edit_key"]) if STATE else _seed_project(app)
    page = open_page(f"?project={pid}&key={edit_key}", webgl2=False)
    tab(page, "Inspect")
    page.locator("#load-inspect").click()
    page.wait_for_function(
        "() => document.querySelector('#world-view .loci-view')?.dataset.state === 'nowebgl'"
        " && document.querySelector('#world-view .lv-overlay')?.naturalWidth > 0"
    )
    assert "no WebGL2" in page.locator("#world-view .lv-msg").inner_text()
    img = canvas_image(page, "#world-view .lv-stage")
    assert img.std() > 10  # the generated frame shows in its place
    page.screenshot(path=str(artifacts / "e2e-18-no-webgl2.png"))
