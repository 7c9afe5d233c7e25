"""Project tab: new / open / rename / fork / delete, share links, and the history as a notebook.

The notebook re-renders from the database; a timer polls for changes every couple of seconds, so
people working on the same project see each other's new steps without reloading.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from storage.db import Forbidden, NotFound
from studio.service import Studio, StudioError
from studio.tabs.common import Shared, friendly, notebook_html, png_data_uri
from studio.world_store import load_rgb, thumbnail_png

POLL_S = 2.0
_THUMBS: dict[str, str] = {}  # sha256 of a frame -> data URI (thumbnails never change)


def _thumbs(studio: Studio, cells: list[Any]) -> dict[str, str]:
    out = {}
    for c in cells:
        if c.kind not in ("photo", "generation"):
            continue
        frames = studio.repo.list_frames(c.id)
        if not frames:
            continue
        f = frames[-1]
        if f.rgb_sha256 not in _THUMBS:
            _THUMBS[f.rgb_sha256] = png_data_uri(thumbnail_png(load_rgb(studio.store, f), 96))
        out[c.id] = _THUMBS[f.rgb_sha256]
    return out


def _stamp(project: Any, cells: list[Any]) -> str:
    times = [project.updated_at, *(c.updated_at for c in cells)]
    return f"{max(times).isoformat()}|{len(cells)}|{','.join(c.status for c in cells)}"


def view(studio: Studio, pid: str, key: str) -> tuple[Any, ...]:
    """(notebook html, step choices, stamp, share markdown, access markdown) for a project."""
    project, can_edit, cells = studio.open_project(pid, key)
    choices = [(f"[{c.position + 1}] {c.kind} ({c.status})", c.id) for c in cells]
    if can_edit:
        view_key = studio.repo.view_key(project.id, key)
        share = (
            f"**{project.name}** · share links (keep the edit link private):\n\n"
            f"- view only: [`?project={project.id}&key={view_key}`]"
            f"(?project={project.id}&key={view_key})\n"
            f"- edit: [`?project={project.id}&key={key}`](?project={project.id}&key={key})"
        )
        access = "✏️ You can edit this project."
    else:
        share = f"**{project.name}** · opened with a view-only link."
        access = "👁 View only: this link cannot change anything."
    return (
        notebook_html(cells, _thumbs(studio, cells), can_edit),
        gr.update(choices=choices, value=choices[-1][1] if choices else None),
        _stamp(project, cells),
        share,
        access,
    )


def render(studio: Studio) -> Shared:
    with gr.Row():
        name = gr.Textbox("Untitled world", label="Project name", elem_id="project-name", scale=3)
        new = gr.Button("New project", variant="primary", elem_id="new-project", scale=1)
        rename = gr.Button("Rename", elem_id="rename-project", scale=1)
    with gr.Row():
        pid = gr.Textbox(label="Project id", elem_id="project-id", scale=3)
        key = gr.Textbox(label="Share key", elem_id="project-key", type="password", scale=3)
        open_ = gr.Button("Open", elem_id="open-project", scale=1)
    share = gr.Markdown(elem_id="share-links")
    access = gr.Markdown(elem_id="access-mode")
    gr.Markdown("### History")
    notebook = gr.HTML(notebook_html([], {}, True), elem_id="notebook")
    with gr.Row():
        step = gr.Dropdown([], label="Step", elem_id="step", scale=3)
        rerun = gr.Button("Re-run step", elem_id="rerun", scale=1)
        resume = gr.Button("Resume step", elem_id="resume", scale=1)
        fork = gr.Button("Fork from step", elem_id="fork", scale=1)
        revert = gr.Button("Revert last step", variant="stop", elem_id="revert", scale=1)
    status = gr.Textbox(label="Project status", interactive=False, elem_id="project-status")
    stamp = gr.State("")
    shared = Shared(studio, pid, key, notebook, stamp)
    shared.extra = {  # type: ignore[attr-defined]
        "name": name, "new": new, "rename": rename, "open": open_, "share": share,
        "access": access, "step": step, "rerun": rerun, "resume": resume, "fork": fork,
        "revert": revert, "status": status,
    }  # fmt: skip
    return shared


def listen(shared: Shared, app: gr.Blocks) -> None:
    s = shared.studio
    x = shared.extra  # type: ignore[attr-defined]
    pid, key = shared.project_id, shared.key
    outs = [shared.notebook, x["step"], shared.stamp, x["share"], x["access"]]

    @friendly
    def create(name: str):
        new_id, _view_key, edit_key = s.create_project(name)
        return new_id, edit_key, *view(s, new_id, edit_key), "Project created."

    x["new"].click(create, [x["name"]], [pid, key, *outs, x["status"]], api_name="create_project")

    @friendly
    def open_project(project_id: str, k: str):
        project, _, _ = s.open_project(project_id, k)
        return project.name, *view(s, project_id, k), f"Opened {project.name}."

    x["open"].click(
        open_project, [pid, key], [x["name"], *outs, x["status"]], api_name="open_project"
    )

    @friendly
    def do_rename(project_id: str, k: str, name: str):
        s.rename(project_id, k, name)
        return *view(s, project_id, k), "Renamed."

    x["rename"].click(do_rename, [pid, key, x["name"]], [*outs, x["status"]], api_name="rename")

    @friendly
    def do_fork(project_id: str, k: str, cell_id: str | None):
        new_id, _view_key, edit_key = s.fork(project_id, k, cell_id)
        return new_id, edit_key, *view(s, new_id, edit_key), "Forked: you are now in the copy."

    x["fork"].click(do_fork, [pid, key, x["step"]], [pid, key, *outs, x["status"]], api_name="fork")

    @friendly
    def do_revert(project_id: str, k: str):
        cell = s.revert(project_id, k)
        return *view(s, project_id, k), f"Reverted step {cell.position + 1} ({cell.kind})."

    x["revert"].click(do_revert, [pid, key], [*outs, x["status"]], api_name="revert")

    @friendly
    def do_rerun(project_id: str, k: str, cell_id: str | None):
        cell = _pick(s, project_id, k, cell_id)
        p = cell.params or {}
        if cell.kind == "photo":
            links = s.repo.cell_artifacts(cell.id, "photo")
            path = s.named_file(links[-1].sha256, p.get("filename") or "photo.jpg")
            s.set_photo(project_id, k, str(path), p.get("hfov_deg"))
        elif cell.kind == "trajectory":
            kw = {"preset": p.get("preset")} if p.get("mode") == "preset" else {
                "waypoints": p.get("waypoints"), "speed": p.get("speed"),
                "eye_height": p.get("eye_height"), "look": p.get("look", "path")}  # fmt: skip
            if p.get("mode") == "preset" or not p.get("speed"):
                kw["frames"] = p.get("frames")
            s.save_path(
                project_id, k, s.plan_path(project_id, k, start=p.get("start", "end"), **kw)
            )
        elif cell.kind == "generation":
            for u in s.generate(project_id, k, p.get("trajectory"), p.get("use_memory", True)):
                yield *view(s, project_id, k), f"re-running: frame {u.frames_done}/{u.total}"
        elif cell.kind == "lift":
            s.lift(project_id, k, force=True)
        else:
            s.export(project_id, k, p.get("format", "ply"))
        yield *view(s, project_id, k), f"Re-ran step {cell.position + 1} ({cell.kind})."

    x["rerun"].click(
        do_rerun,
        [pid, key, x["step"]],
        [*outs, x["status"]],
        api_name="rerun",
        concurrency_id="generation",
        concurrency_limit=16,  # followers of jobs that workers run (studio.executors)
    )

    @friendly
    def do_resume(project_id: str, k: str, cell_id: str | None):
        cell = _pick(s, project_id, k, cell_id)
        for u in s.resume(project_id, k, cell.id):
            yield *view(s, project_id, k), f"resuming: frame {u.frames_done}/{u.total} ({u.status})"

    x["resume"].click(
        do_resume,
        [pid, key, x["step"]],
        [*outs, x["status"]],
        api_name="resume",
        concurrency_id="generation",
        concurrency_limit=16,  # followers of jobs that workers run (studio.executors)
    )

    def poll(project_id: str, k: str, seen: str):
        """Timer tick: re-render only when the project changed (someone else's step, a job)."""
        if not project_id or not k:
            return (gr.skip(),) * len(outs)
        try:
            project, _, cells = s.open_project(project_id, k)
        except (NotFound, Forbidden, StudioError):
            return (gr.skip(),) * len(outs)
        if _stamp(project, cells) == seen:
            return (gr.skip(),) * len(outs)
        return view(s, project_id, k)

    timer = gr.Timer(POLL_S)
    timer.tick(
        poll, [pid, key, shared.stamp], outs, show_progress="hidden", api_visibility="private"
    )

    def from_link(request: gr.Request):
        """``?project=ID&key=KEY`` opens that project (the key decides what it may do)."""
        q = request.query_params if request else {}
        project_id, k = q.get("project", ""), q.get("key", "")
        if not project_id:
            return gr.skip(), gr.skip(), gr.skip(), *(gr.skip(),) * len(outs), gr.skip()
        try:
            project, _, _ = s.open_project(project_id, k)
        except (NotFound, Forbidden, StudioError) as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), gr.skip(), *(gr.skip(),) * len(outs), str(e)
        return project_id, k, project.name, *view(s, project_id, k), f"Opened {project.name}."

    app.load(from_link, None, [pid, key, x["name"], *outs, x["status"]], api_visibility="private")


def _pick(s: Studio, project_id: str, key: str, cell_id: str | None) -> Any:
    _, _, cells = s.open_project(project_id, key)
    cell = next((c for c in cells if c.id == cell_id), None)
    if cell is None:
        raise StudioError("Choose a step of this project's history first.")
    return cell
