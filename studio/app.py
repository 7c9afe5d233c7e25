"""The Loci studio: a Gradio app with one module per tab (``studio/tabs``).

``build_app(ctx)`` opens the database (running Alembic migrations), marks jobs of a dead process
as interrupted, and lays out the tabs: Project, Photo, Trajectory, Generate, Inspect, Export.
Each tab module has ``render()`` (components) and ``listen()`` (events); handlers validate, call
:class:`studio.service.Studio`, and raise ``gr.Error`` with plain messages. Every main action has
an ``api_name``, so ``gradio_client`` can drive the studio (README, "API").

``mount(fastapi_app, ctx, path)`` serves the studio under a sub-path of another FastAPI app.

Files: nothing under the data directory is served directly. The app is a :class:`StudioBlocks`,
whose ``launch`` (and :func:`mount`) add the signed-URL file route of :mod:`studio.files`, a
``nosniff`` header on every response, the data directory as a ``blocked_path``, and Gradio's
``delete_cache`` so copies handed to the browser (and uploads never attached to a project) leave
Gradio's temp dir after ``ctx.temp_ttl_s``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from studio.context import StudioContext
from studio.service import Studio
from studio.tabs import export, generate, inspect_tab, photo, project, trajectory
from studio.web.routes import routes as web_routes

__all__ = ["StudioBlocks", "StudioContext", "build_app", "launch_kwargs", "mount"]

CSS = """
#loci-notebook-cells .loci-err { color: #c62828; font-size: .85em; }
#loci-notebook-cells .loci-readonly { padding: 6px; background: #fff3e0; color: #5d4037; }
#loci-notebook-cells .loci-attach a { margin-right: 8px; font-size: .85em; }
.loci-share-row { display: flex; gap: 6px; align-items: center; margin: 4px 0; flex-wrap: wrap; }
.loci-share-row span { min-width: 5.5em; }
.loci-share-row input { flex: 1; min-width: 12em; font-family: monospace; font-size: 12px;
  padding: 4px 6px; border: 1px solid var(--border-color-primary); border-radius: 4px;
  background: var(--input-background-fill); color: var(--body-text-color); }
.loci-share-row button { padding: 3px 10px; border-radius: 4px; cursor: pointer;
  border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill); }
#loci-hint { border-left: 4px solid var(--color-accent); padding: 8px 12px; margin-bottom: 6px;
  background: var(--block-background-fill); border-radius: 4px; }
#loci-hint ol { margin: 4px 0 4px 1.2em; } #loci-hint button { float: right; cursor: pointer; }
"""

# First run: a short walk through the studio, dismissed once (remembered in this browser).
HINT = """<div id='loci-hint'><button type='button' data-dismiss>Got it ✕</button>
<b>New here?</b> Four steps from one photo to a world you can walk through:
<ol><li><b>Project</b>: "New project" (share it later with its view or edit link).</li>
<li><b>Photo</b>: upload one (or click an example), then "Use this photo".</li>
<li><b>Trajectory</b>: draw the camera path on the map with the mouse or a finger, then
"Use this path".</li>
<li><b>Generate</b>, then <b>Inspect</b> the world in 3D and <b>Export</b> it.</li></ol></div>"""
HINT_JS = """
if (localStorage.getItem('loci-hint-dismissed')) element.style.display = 'none';
element.addEventListener('click', (e) => {
  if (!e.target.closest('[data-dismiss]')) return;
  localStorage.setItem('loci-hint-dismissed', '1');
  element.style.display = 'none';
});
"""


class StudioBlocks(gr.Blocks):
    """``gr.Blocks`` whose web app carries the studio's file route and security headers."""

    studio: Studio

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("root_path"):
            self.studio.files.base = str(kwargs["root_path"]).rstrip("/")
        kwargs["app_kwargs"] = app_kwargs(self.studio, kwargs.get("app_kwargs"))
        kwargs["blocked_paths"] = _blocked(self.studio.ctx, kwargs.get("blocked_paths"))
        if kwargs.get("allowed_paths"):
            _check_not_served(self.studio.ctx, kwargs["allowed_paths"])
        return super().launch(*args, **kwargs)


def app_kwargs(studio: Studio, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """FastAPI arguments for the studio's web app: the file route first, the headers middleware."""
    from starlette.middleware import Middleware

    from studio.files import SecurityHeaders

    kw = dict(extra or {})
    # Stored files through the key-checked route; the studio's own JavaScript (code, never user
    # data) from studio/web/assets under /loci/web/.
    kw["routes"] = [*studio.files.routes(), *web_routes(), *kw.get("routes", [])]
    kw["middleware"] = [Middleware(SecurityHeaders), *kw.get("middleware", [])]
    return kw


def _blocked(ctx: StudioContext, extra: list[str] | None) -> list[str]:
    return [*(extra or []), str(ctx.data_dir)]


def _check_not_served(ctx: StudioContext, allowed: list[str]) -> None:
    """Refuse settings under which Gradio would serve the data directory by path."""
    data = ctx.data_dir.resolve()
    from gradio.utils import get_cache_folder

    for p in [*allowed, ctx.gradio_temp_dir, get_cache_folder()]:
        q = Path(p).absolute().resolve()
        if q == data or data in q.parents or q in data.parents:
            raise ValueError(
                f"The data directory {data} must not be inside, contain or equal {q}: Gradio "
                "serves files from there without a key. Move the data directory (--data-dir)."
            )


def build_app(ctx: StudioContext | None = None, studio: Studio | None = None) -> StudioBlocks:
    """The studio's Blocks (not launched). Pass ``studio`` to share one service between apps."""
    studio = studio or Studio(ctx or StudioContext())
    _check_not_served(studio.ctx, [])
    # Compile (or load from numba's disk cache) the warp and painter kernels while the person
    # creates a project and adds a photo: on a fresh install the first compile takes ~40 s of
    # CPU, which would otherwise land on the first memory preview or the first frame.
    from models.geometry.warp import warm_up as warm_up_warp
    from models.synthesis.exemplar import warm_up as warm_up_painter

    warm_up_warp(background=True)
    warm_up_painter(background=True)
    ttl = max(1, int(studio.ctx.temp_ttl_s))  # Gradio's temp files: checked 4 times per lifetime
    with StudioBlocks(title="Loci studio", delete_cache=(max(1, ttl // 4), ttl)) as app:
        gr.Markdown(
            "# Loci\nOne photo and a camera path become a persistent, explorable 3D world. "
            "Start a project, add a photo, sketch a path on the map, generate, then inspect "
            "and export."
        )
        gr.HTML(HINT, js_on_load=HINT_JS, elem_id="first-run-hint")
        with gr.Tab("Project", id="project"):
            shared = project.render(studio)
        with gr.Tab("Photo", id="photo"):
            photo_c = photo.render(shared)
        with gr.Tab("Trajectory", id="trajectory") as traj_tab:
            traj_c = trajectory.render(shared)
        with gr.Tab("Generate", id="generate"):
            gen_c = generate.render(shared)
        with gr.Tab("Inspect", id="inspect"):
            insp_c = inspect_tab.render(shared)
        with gr.Tab("Export", id="export"):
            exp_c = export.render(shared)
        project.listen(shared, app)
        photo.listen(shared, photo_c)
        trajectory.listen(shared, traj_c)
        generate.listen(shared, gen_c)
        inspect_tab.listen(shared, insp_c)
        export.listen(shared, exp_c)
        # Opening the Trajectory tab shows the map of the world as it is now.
        traj_tab.select(
            trajectory.preview_handler(shared),
            trajectory.preview_inputs(shared, traj_c),
            trajectory.preview_outputs(traj_c),
            api_visibility="private",
        )
    app.studio = studio  # type: ignore[attr-defined]
    return app


def launch_kwargs(ctx: StudioContext) -> dict[str, Any]:
    """Arguments for ``Blocks.launch``: upload limit, CSS, and the data directory blocked (the
    file route and the security headers come with :class:`StudioBlocks` itself)."""
    return {"blocked_paths": [str(ctx.data_dir)], "max_file_size": "60mb", "css": CSS}


def mount(fastapi_app: Any, ctx: StudioContext, path: str = "/loci") -> Any:
    """Serve the studio at ``path`` inside ``fastapi_app`` (e.g. next to another site)."""
    app = build_app(ctx)
    app.queue(default_concurrency_limit=4)
    app.studio.files.base = (ctx.root_path.rstrip("/") + "/" + path.strip("/")).rstrip("/")
    kw = launch_kwargs(ctx)
    fastapi_app.state.loci_studio = app.studio  # for the site's own code (and tests)
    return gr.mount_gradio_app(fastapi_app, app, path=path, app_kwargs=app_kwargs(app.studio),
                               blocked_paths=kw["blocked_paths"],
                               max_file_size=kw["max_file_size"], css=kw["css"])  # fmt: skip
