"""Serving the studio's own JavaScript, and links to stored files for the browser components.

``routes()`` mounts ``studio/web/assets`` (our ES modules and the vendored three.js + Spark
bundle; code, never user data) at ``/loci/web/`` of the studio's web app, gzip-compressed.
Components load them with a dynamic ``import()`` relative to Gradio's root URL, so the studio
works offline, on a Space and under a sub-path, with no CDN.

``stored_file_url`` is how components get a URL for a stored file (splats, mesh, frames): the
key-checked, signed file route of :mod:`studio.files`.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

__all__ = ["ASSETS", "PREFIX", "asset_path", "module_loader_js", "routes", "stored_file_url"]

ASSETS = Path(__file__).resolve().parent / "assets"
PREFIX = "/loci/web"


def routes() -> list[Any]:
    """Starlette routes serving ``ASSETS`` under ``PREFIX`` (for ``app_kwargs={"routes": ...}``)."""
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    # 3.3 MB of minified JavaScript goes over the wire as about 1.1 MB.
    app = GZipMiddleware(StaticFiles(directory=ASSETS), minimum_size=1024)
    return [Mount(PREFIX, app=app, name="loci-web")]


@functools.cache
def asset_version() -> str:
    """A short hash of every asset file: part of the URL, so a new release is never stale."""
    h = hashlib.sha256()
    for p in sorted(ASSETS.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(ASSETS).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def asset_path(name: str) -> str:
    """The URL of an asset relative to the studio's root (``loci/web/<name>?v=<version>``)."""
    if not (ASSETS / name).is_file():
        raise FileNotFoundError(f"no studio asset {name!r} in {ASSETS}")
    return f"{PREFIX.lstrip('/')}/{name}?v={asset_version()}"


def module_loader_js(module: str, export: str = "mount") -> str:
    """``js_on_load`` code of a ``gr.HTML`` component: import our ES module ``module`` (relative
    to the page's Gradio root, so sub-paths work) and hand it the component's element, props and
    event functions. A failure to load shows a readable line instead of a blank box."""
    url = asset_path(module)
    return f"""
const root = ((window.gradio_config && window.gradio_config.root) || location.href.split('?')[0])
  .replace(/\\/?$/, '/');
import(new URL({url!r}, root).href)
  .then((m) => m.{export}(element, props, trigger, watch))
  .catch((e) => {{
    console.error('loci: could not load {module}', e);
    element.setAttribute('data-state', 'error');
    element.textContent = 'This part of the page could not load ({module}): ' + e;
  }});
"""


def stored_file_url(
    studio: Any, project_id: str, key: str, sha256: str, filename: str, download: bool = False
) -> str:
    """A URL the browser may fetch for a stored file of this project: the service's short-lived
    signed link, bound to the project and key (:mod:`studio.files`; the key is checked). It is
    root-relative (``/loci/files/...``, with the public sub-path); ``loci-view.js`` resolves it.
    """
    return str(studio.file_url(project_id, key, sha256, filename, download=download))
