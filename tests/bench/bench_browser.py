"""Benchmark: the studio in headless Chromium (software WebGL) on a default-size world.

Not collected by pytest (name does not start with ``test_``). Run:
``.venv/bin/python tests/bench/bench_browser.py [--repeats 5] [--baseline] [--out FILE]``;
``run()`` returns the numbers as a dict. Medians over ``--repeats`` fresh pages.

The world is real: a photo from ``examples/`` seeded at 512 px and a 24-frame sketched path
(the Trajectory tab's defaults), generated and lifted once (the lift is cached, as after a first
Load). Measured inside the page, on its own clock:

- **viewer first paint**: the Inspect tab's Load click -> the 3D view's first frame with the
  world in it (the splats loaded: ``first_paint_ms``; the camera path alone is drawn earlier,
  ``cameras_drawn_ms``), and -> the view settled (Spark finished sorting, nothing left to draw);
- **stroke -> preview**: a stroke's pointer-up -> the map redrawn with the client-side path
  preview (no server), and -> the server's plan for it drawn (``data-exact``).
- ``--baseline``: the viewer this replaced, ``gr.Model3D`` given the full .ply, measured the
  same way (until its canvas shows a picture; one run, it takes minutes);
- ``--eta``: the Generate tab's time left against the job's, when the machine gets busy part way
  through a 60-frame generation (:func:`eta_under_load`).

It also measures how well the map's coverage estimate (rays over the known-floor grid, the
browser's) agrees with the exact retrieval coverage the server computes, on views along random
paths through worlds of every photo in ``../shared/data/photos`` (none was used to choose the
estimate's constants): Pearson r and mean absolute error.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.e2e.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402

PHOTO = ROOT / "examples" / "office-tum-fr3.jpg"
SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_world(studio, frames: int = 24):
    pid, _view, key = studio.create_project("Bench office")
    studio.set_photo(pid, key, str(PHOTO))
    wp = [[0.3, 0.8], [-0.2, 1.6], [0.4, 2.3]]
    studio.save_path(pid, key, studio.plan_path(pid, key, waypoints=wp, frames=frames))
    for _ in studio.generate(pid, key):
        pass
    cell = studio.lift(pid, key)
    studio.export(pid, key, "glb")
    return pid, key, cell.params


LOAD_JS = """() => new Promise((resolve) => {
  const t0 = performance.now();
  const poll = setInterval(() => {
    const r = document.querySelector('#world-view .loci-view');
    const v = r && r.__lociView;
    if (!v || !v.times.settled || !v.times.firstContent || r.dataset.state !== 'ready') return;
    clearInterval(poll);
    resolve({ cameras: v.times.firstRender - t0, first: v.times.firstContent - t0,
              settled: v.times.settled - t0, loaded: v.times.loaded - t0 });
  }, 10);
  document.querySelector('#load-inspect').click();
})"""


def _open(browser, url: str, tab: str, height: int = 900):
    """(context, page): a fresh page on the studio, on ``tab``."""
    context = browser.new_context(viewport={"width": 1280, "height": height})
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(url)
    page.locator("#new-project").wait_for()
    page.wait_for_function(  # the project of the link is open
        "() => (document.getElementById('share-links')?.textContent || '').includes('share')"
    )
    page.get_by_role("tab", name=tab, exact=True).click()
    return context, page


def viewer_first_paint(browser, url: str, repeats: int) -> dict:
    firsts, settles, cams = [], [], []
    for _ in range(repeats):
        context, page = _open(browser, url, "Inspect")
        page.locator("#load-inspect").wait_for()
        page.wait_for_function("() => window.gradio_config")
        t = page.evaluate(LOAD_JS)
        firsts.append(t["first"])
        settles.append(t["settled"])
        cams.append(t["cameras"])
        context.close()
    return {"cameras_drawn_ms": statistics.median(cams),
            "first_paint_ms": statistics.median(firsts),
            "settled_ms": statistics.median(settles), "runs": len(firsts)}  # fmt: skip


def stroke_latency(browser, url: str, repeats: int) -> dict:
    context, page = _open(browser, url, "Trajectory", height=1000)
    page.wait_for_function(
        "() => document.querySelector('#map-sketch .loci-map')?.__lociMap?.base?.image"
    )
    page.locator("#map-sketch canvas").scroll_into_view_if_needed()
    previews, planned = [], []
    for k in range(repeats):
        page.locator("#map-sketch .lm-clear").click()
        page.wait_for_function(
            "() => JSON.parse(document.querySelector('#waypoints textarea').value).length === 0"
        )
        side = 0.2 + 0.05 * k
        pts = page.evaluate(
            """(side) => { const m = document.querySelector('#map-sketch .loci-map').__lociMap;
              const s = m.base.start, r = m.canvas.getBoundingClientRect(), out = [];
              for (let i = 0; i < 30; i++) { const t = i / 29;
                const [x, y] = m.toScreen(s[0] + side * Math.sin(6.28 * t), s[1] + 1.5 * t);
                out.push([x + r.left, y + r.top]); }
              return out; }""",
            side,
        )
        page.mouse.move(*pts[0])
        page.mouse.down()
        for x, y in pts[1:]:
            page.mouse.move(x, y, steps=2)
        page.mouse.up()
        page.wait_for_function(
            "() => document.querySelector('#map-sketch .loci-map').dataset.exact === '1'"
        )
        t = page.evaluate("document.querySelector('#map-sketch .loci-map').__lociMap.times")
        previews.append(t["preview"] - t["strokeEnd"])
        planned.append(t["planned"] - t["strokeEnd"])
        page.evaluate("document.querySelector('#map-sketch .loci-map').__lociMap.times = {}")
    context.close()
    return {"stroke_end_to_preview_ms": statistics.median(previews),
            "stroke_end_to_planned_ms": statistics.median(planned), "runs": repeats}  # fmt: skip


def model3d_baseline(browser, ply: Path) -> dict:
    """The viewer this replaced: gr.Model3D given the full .ply, until its canvas has a picture."""
    import cv2
    import gradio as gr

    with gr.Blocks() as demo:
        gr.Model3D(str(ply), elem_id="old", height=420)
    demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True,
                allowed_paths=[str(ply.parent)])  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(300_000)
        t0 = time.perf_counter()
        page.goto(demo.local_url)
        canvas = page.locator("#old canvas")
        canvas.wait_for()
        while time.perf_counter() - t0 < 300:
            png = canvas.screenshot()
            img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if (img.max(axis=2) > 24).mean() > 0.02 and img.std() > 8:
                break
        return {"first_picture_ms": (time.perf_counter() - t0) * 1000, "runs": 1,
                "ply_bytes": ply.stat().st_size}  # fmt: skip
    finally:
        demo.close()


def coverage_agreement(width: int = 256, paths: int = 3, frames: int = 16) -> dict:
    """The map's coverage estimate against the server's exact coverage, on every shared photo."""
    from studio.context import StudioContext
    from studio.service import Studio
    from studio.tabs.trajectory import map_base, view_geometry
    from studio.worldmap import coverage_estimate, known_grid

    rng = np.random.default_rng(0)
    est, exact = [], []
    with tempfile.TemporaryDirectory() as tmp:
        s = Studio(StudioContext(data_dir=Path(tmp), width=width))
        for photo in sorted(SHARED_PHOTOS.glob("*.[jp][pn]g")):
            pid, _v, key = s.create_project(photo.stem)
            s.set_photo(pid, key, str(photo))
            ws = s.world(pid, key)
            view, _pts, _cols, cams, heads = map_base(s, ws)  # the map the browser gets
            hfov = math.radians(ws.meta["hfov_deg"])
            solid, floor = s.known_points(ws)
            grid = known_grid(view, solid, cams, heads, hfov, floor_xy=floor)
            depth = float(ws.meta["scene_depth"])
            sight = view_geometry(ws)
            for _ in range(paths):
                wp = rng.uniform([-0.6, 0.2], [0.6, 1.0], (3, 2)) * depth
                try:
                    plan = s.plan_path(pid, key, waypoints=wp.tolist(), frames=frames, ws=ws)
                except Exception:  # a waypoint off the known map: try another path
                    continue
                for i in range(1, len(plan.trajectory)):
                    xy, h = plan.ground_xy[i], float(plan.headings[i])
                    est.append(coverage_estimate(grid, view, tuple(xy), h, hfov, 24, 2.5 * depth,
                                                 **sight))  # fmt: skip
                    exact.append(plan.coverage[i])
        s.db.dispose()
    e, x = np.array(est), np.array(exact)
    return {"views": len(e), "pearson_r": float(np.corrcoef(e, x)[0, 1]),
            "mean_abs_error": float(np.abs(e - x).mean()),
            "photos": len(list(SHARED_PHOTOS.glob("*.[jp][pn]g")))}  # fmt: skip


def eta_under_load(frames: int = 60, load_after: int = 15) -> dict:
    """The time left shown while generating, when the machine gets busy part way through: the
    job's estimate (average rate since the start) against the Generate tab's (the recent
    frames), as median actual / estimated remaining time over the frames after the load began
    (1.0 = right; above 1 = too optimistic). The load: two busy processes (others' work)."""
    import subprocess

    from studio.context import StudioContext
    from studio.service import Studio
    from studio.tabs.generate import RecentRate

    with tempfile.TemporaryDirectory() as tmp:
        s = Studio(StudioContext(data_dir=Path(tmp), width=512))
        pid, _v, key = s.create_project("eta")
        s.set_photo(pid, key, str(PHOTO))
        s.save_path(pid, key, s.plan_path(pid, key, preset="loop", frames=frames + 1))
        rate, rows, load = RecentRate(), [], []
        rate.add(0, time.perf_counter())
        busy = "import numpy as np\nwhile True: np.linalg.svd(np.random.rand(300, 300))"
        try:
            for u in s.generate(pid, key):
                now = time.perf_counter()
                if u.status != "running":
                    break
                rate.add(u.frames_done, now)
                rows.append((u.frames_done, now, u.eta_s, rate.eta(u.total - u.frames_done)))
                if u.frames_done == load_after and not load:
                    load = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]
            end = time.perf_counter()
        finally:
            for p in load:
                p.kill()
        s.db.dispose()
    late = [(end - t, old, new) for done, t, old, new in rows if load_after < done <= frames - 5]
    return {"job_average": statistics.median(a / o for a, o, _ in late),
            "recent_frames": statistics.median(a / n for a, _, n in late),
            "frames": frames, "load_after": load_after}  # fmt: skip


def run(repeats: int = 5, baseline: bool = False, eta: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    from studio.app import StudioContext, build_app, launch_kwargs
    from studio.service import Studio

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(StudioContext(data_dir=Path(tmp) / "data", width=512))
        pid, key, lift = make_world(studio)
        out["world"] = {"width": 512, "frames": len(studio.world(pid, key).frames),
                        "splats": lift["splats"], "web_splats": lift["web_splats"],
                        "web_mb": round(lift["web_bytes"] / 1e6, 2)}  # fmt: skip
        app = build_app(studio=studio)
        app.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1",
                           server_port=_free_port(), quiet=True,
                           **launch_kwargs(studio.ctx))  # fmt: skip
        url = f"{app.local_url}?project={pid}&key={key}"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
                out["viewer"] = viewer_first_paint(browser, url, repeats)
                out["sketch"] = stroke_latency(browser, url, max(repeats, 5))
                if baseline:
                    ws = studio.world(pid, key)
                    cell = studio.cached_cell(ws, "lift")
                    sha = studio.repo.cell_artifacts(cell.id, "splats")[-1].sha256
                    ply = Path(tmp) / "baseline" / "splats.ply"  # a copy of its own
                    ply.parent.mkdir()
                    ply.write_bytes(studio.store.read_bytes(sha))
                    out["model3d_baseline"] = model3d_baseline(browser, ply)
                browser.close()
        finally:
            app.close()
    out["coverage_estimate"] = coverage_agreement()
    if eta:
        out["time_left_actual_over_estimate"] = eta_under_load()
    if "model3d_baseline" in out:
        base = out["model3d_baseline"]["first_picture_ms"]
        out["viewer"]["first_paint_ratio_to_model3d"] = round(
            out["viewer"]["first_paint_ms"] / base, 4
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baseline", action="store_true", help="also time gr.Model3D on the .ply")
    p.add_argument("--eta", action="store_true", help="also time-left estimates under load")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args()
    result = run(args.repeats, args.baseline, args.eta)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
