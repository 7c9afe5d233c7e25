"""Fixtures for the studio's browser tests: a live studio server and a headless Chromium page.

The whole e2e package is skipped, with the reason shown by ``pytest -ra``, when the ``playwright``
Python package or the system Chromium is missing. We never download a browser: Playwright drives
the Debian ``/usr/bin/chromium`` (override with ``LOCI_CHROMIUM``) with the flags that are known
to work in this sandbox (see shared/STACK_NOTES.md, "Gradio 6").
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("LOCI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("LOCI_TEST_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts"
)


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "e2e: the 'playwright' Python package is not installed (pip install playwright)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"e2e: no Chromium at {CHROMIUM} (install Debian chromium or set LOCI_CHROMIUM)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason is None:
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for screenshots: $LOCI_TEST_ARTIFACTS or tests/e2e/artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def studio_app(tmp_path_factory):
    """A running studio (width 128, tmp data dir, the production launch arguments); yields the
    launched ``gr.Blocks``: ``.local_url`` to browse, ``.studio`` for server-side checks."""
    from studio.app import StudioContext, build_app, launch_kwargs

    # LOCI_E2E_WIDTH=512 measures the time to the first frame at the production size.
    width = int(os.environ.get("LOCI_E2E_WIDTH", "128"))
    ctx = StudioContext(data_dir=tmp_path_factory.mktemp("studio-e2e"), width=width)
    app = build_app(ctx)
    app.queue().launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=_free_port(),
        quiet=True,
        **launch_kwargs(ctx),  # the data dir blocked (files go through signed URLs); the CSS
    )
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def studio_url(studio_app) -> str:
    return studio_app.local_url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() gives a fresh temporary user-data-dir of its own.
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


NO_WEBGL2_JS = """
const real = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
  return kind === 'webgl2' ? null : real.call(this, kind, ...rest);
};
"""


@pytest.fixture
def open_page(browser, studio_url):
    """``open_page(query="", webgl2=True)``: a new page in its own browser context (own cookies,
    own Gradio session, as a second person would have) on the studio, loaded and ready; all are
    closed at the end of the test. ``query`` is appended to the URL, e.g.
    ``?project=ID&key=KEY``; ``webgl2=False`` makes the page's canvases refuse WebGL2."""
    contexts = []

    def _open(query: str = "", webgl2: bool = True):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        if not webgl2:  # a browser without WebGL2 (old GPU, blocklisted driver)
            context.add_init_script(NO_WEBGL2_JS)
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(studio_url + query)
        pg.locator("gradio-app").wait_for()
        # Only the selected tab (Project) is in the DOM at first.
        pg.locator("#new-project").wait_for()
        return pg

    try:
        yield _open
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(open_page):
    """A fresh page (own context) on the studio, loaded and ready."""
    return open_page()
