"""Helpers of the browser tests: tabs, fields, toasts, strokes, the 3D view's settled canvas."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def value(page, elem_id: str) -> str:
    """The value of a Textbox (or Number) component."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def cells(page) -> list[list[str]]:
    """[cell id, kind, status] of every notebook cell on the page, in order."""
    return page.locator("#notebook .loci-cell").evaluate_all(
        "els => els.map(e => [e.dataset.cell, e.dataset.kind, e.dataset.status])"
    )


def db_cells(app, pid: str, key: str) -> list[list[str]]:
    _, _, found = app.studio.open_project(pid, key)
    return [[c.id, c.kind, c.status] for c in found]


def view_link(page) -> str:
    """The full URL of the view-only link in the share box (Project tab)."""
    field = page.locator("#share-links [data-kind=view] input")
    page.wait_for_function("i => i.value.startsWith('http')", arg=field.element_handle())
    return field.input_value()


def error_toast(page, text: str) -> str:
    """Wait for an error toast containing ``text``; return its message."""
    toast = page.locator("[data-testid=toast-body].error").filter(has_text=text).first
    toast.wait_for()
    # It flies in (opacity 0 -> 1): wait until it is really painted (and in the screenshots).
    page.wait_for_function("el => getComputedStyle(el).opacity === '1'", arg=toast.element_handle())
    return toast.get_by_test_id("toast-text").filter(has_text=text).first.inner_text()


def close_toasts(page) -> None:
    for button in page.get_by_test_id("toast-close").all():
        if button.is_visible():
            button.click()
    page.locator("[data-testid=toast-body].error").first.wait_for(state="detached")


def wait_text(page, elem_id: str, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([id, text]) => (document.getElementById(id)?.textContent || '').includes(text)",
        arg=[elem_id, text],
        timeout=timeout,
    )


def draw_stroke(page, points: list[list[float]]) -> None:
    """A mouse stroke through page coordinates ``points``: down, moves, up (real events)."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()


def map_state(page) -> dict:
    """The map sketch's timing stamps and zoom (pixels per metre)."""
    return page.evaluate(
        "() => { const m = document.querySelector('#map-sketch .loci-map').__lociMap;"
        " return { times: m.times, zoom: m.view.zoom }; }"
    )


def canvas_image(page, selector: str) -> np.ndarray:
    """A screenshot of one element as a BGR image."""
    png = page.locator(selector).screenshot()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def view_settled(
    page, elem_id: str, frame: int | None = None, model: str | None = None,
    timeout_s: float = 60.0,
) -> np.ndarray:  # fmt: skip
    """The 3D view's canvas once it shows ``frame`` (and ``model``) and has stopped changing:
    loaded, nothing left to draw, and the last render (Spark re-sorts, then asks for one more)
    older than 300 ms. Returns the canvas as a BGR image."""
    page.wait_for_function(
        """([id, frame, model]) => {
          const r = document.querySelector(`#${id} .loci-view`);
          const v = r && r.__lociView;
          if (!v || r.dataset.state !== 'ready') return false;
          if (frame !== null && r.dataset.frame !== String(frame)) return false;
          if (model !== null && (r.dataset.model !== model || (model === 'mesh' &&
              !(v.loaded.mesh && v.loaded.mesh.obj)))) return false;
          return !v.dirty && v.renderedAt && performance.now() - v.renderedAt > 300;
        }""",
        arg=[elem_id, frame, model],
        timeout=timeout_s * 1000,
    )
    return canvas_image(page, f"#{elem_id} canvas")


def correlation(canvas: np.ndarray, frame: np.ndarray) -> float:
    """Pearson correlation of a canvas screenshot and a frame resized to it (BGR, all pixels)."""
    h, w = canvas.shape[:2]
    ref = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    a, b = canvas.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0  # a flat (black) canvas matches nothing
    return float(np.corrcoef(a, b)[0, 1])


def panel(page, artifacts: Path, name: str, *selectors: str) -> None:
    """``panel-<name>.png``: the union of the elements' boxes (a piece for the README strip)."""
    boxes = [page.locator(sel).first.bounding_box() for sel in selectors]
    x0, y0 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
    x1 = max(b["x"] + b["width"] for b in boxes)
    y1 = max(b["y"] + b["height"] for b in boxes)
    clip = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
    page.screenshot(path=str(artifacts / f"panel-{name}.png"), clip=clip, full_page=True)


def strip(artifacts: Path, names: list[str], height: int = 300) -> Path:
    """``studio-strip.png``: the named panels side by side, in order (for the README)."""
    shots = []
    for n in names:
        img = cv2.imread(str(artifacts / f"panel-{n}.png"))
        if img is None:
            continue
        shots.append(cv2.resize(img, (round(img.shape[1] * height / img.shape[0]), height),
                                interpolation=cv2.INTER_AREA))  # fmt: skip
    gap = np.full((height, 10, 3), 255, np.uint8)
    parts = [x for s in shots for x in (s, gap)][:-1]
    out = artifacts / "studio-strip.png"
    cv2.imwrite(str(out), np.concatenate(parts, axis=1))
    return out
