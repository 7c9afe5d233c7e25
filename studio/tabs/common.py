"""What every tab shares: the project fields, error translation, the notebook and small images.

Session state is ids and keys only (the project id and share key live in two text fields, which
also makes every action callable through ``gradio_client`` with explicit arguments); frames,
worlds and models stay on the server, in the database and the artifact store.
"""

from __future__ import annotations

import base64
import functools
import html
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.service import Studio, user_facing

__all__ = ["Shared", "friendly", "notebook_html", "png_data_uri"]


@dataclass
class Shared:
    """Components and the service every tab reads: created once by ``studio.app.build_app``."""

    studio: Studio
    project_id: gr.Textbox
    key: gr.Textbox
    notebook: gr.HTML
    stamp: gr.State  # the newest change the page has shown (for the collaborators' poll)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the studio's user-facing errors into ``gr.Error`` (plain functions and generators).

    Anything else is a bug: it propagates, Gradio shows a generic error and logs the traceback.
    """
    errors = user_facing()

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except errors as e:
                raise gr.Error(str(e)) from e

        return gen

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except errors as e:
            raise gr.Error(str(e)) from e

    return plain


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


_ICONS = {"photo": "📷", "trajectory": "🧭", "generation": "🎞️", "lift": "🧊", "export": "📦"}
_STATUS = {"done": "#2e7d32", "running": "#1565c0", "pending": "#6d6d6d", "failed": "#c62828",
           "interrupted": "#ef6c00", "cancelled": "#8d6e63"}  # fmt: skip


def _summary(kind: str, p: dict[str, Any]) -> str:
    if kind == "photo":
        w = p.get("world", {})
        fov = w.get("hfov_deg")
        return (
            f"{p.get('filename', '')} · {p.get('size', ['?', '?'])[0]}×{p.get('size', ['?', '?'])[1]}"
            + (f" · fov {fov:.0f}°" if fov else "")
        )
    if kind == "trajectory":
        what = (
            p.get("preset")
            if p.get("mode") == "preset"
            else f"{len(p.get('waypoints', []))} waypoints"
        )
        cov = p.get("coverage_preview") or []
        seen = f" · first views {', '.join(f'{c:.0%}' for c in cov[1:4])} known" if cov else ""
        return f"{what} · {p.get('frames')} frames · from {p.get('start', 'end')}{seen}"
    if kind == "generation":
        mem = "" if p.get("use_memory", True) else " · memory off"
        return f"{p.get('frames')} frames from #{p.get('first_index')}{mem}"
    if kind == "lift":
        return f"{p.get('splats', '?')} splats · {p.get('faces', '?')} mesh faces · {p.get('frames')} frames"
    if kind == "export":
        return f"format {p.get('format')}"
    return ""


def notebook_html(
    cells: list[Any], thumbs: dict[str, str], can_edit: bool,
    attachments: dict[str, list[tuple[str, str, int | None]]] | None = None,
) -> str:  # fmt: skip
    """The project's history as a notebook: one card per cell, in order. ``attachments``: per
    cell id, its exports as (format, download URL, bytes), shown as links under the step."""
    attachments = attachments or {}
    if not cells:
        return "<div class='loci-empty'>No steps yet: add a photo in the Photo tab.</div>"
    rows = []
    for c in cells:
        color = _STATUS.get(c.status, "#555")
        thumb = thumbs.get(c.id)
        img = f"<img src='{thumb}' alt='step {c.position + 1}' height='54'/>" if thumb else ""
        err = f"<div class='loci-err'>{html.escape(c.error or '')}</div>" if c.error else ""
        files = attachments.get(c.id) or []
        if files:
            links = "".join(
                f"<a href='{html.escape(url)}' download data-format='{html.escape(fmt)}'>"
                f"📎 {html.escape(fmt)}{f' ({size / 1e6:.1f} MB)' if size else ''}</a>"
                for fmt, url, size in files
            )
            err += f"<div class='loci-attach'>{links}</div>"
        rows.append(
            f"<div class='loci-cell' data-kind='{c.kind}' data-status='{c.status}' "
            f"data-cell='{c.id}' style='display:flex;gap:10px;align-items:center;"
            f"border-left:4px solid {color};padding:6px 10px;margin:4px 0;'>"
            f"<div style='min-width:2.5em;opacity:.7'>[{c.position + 1}]</div>{img}"
            f"<div style='flex:1'><b>{_ICONS.get(c.kind, '')} {c.kind}</b> "
            f"<span style='color:{color}'>{c.status}</span> "
            f"<small style='opacity:.7'>{html.escape(c.author or '')} · "
            f"{c.updated_at:%Y-%m-%d %H:%M:%S} UTC</small><br/>"
            f"<small>{html.escape(_summary(c.kind, c.params or {}))}</small>{err}</div></div>"
        )
    mode = (
        ""
        if can_edit
        else "<div class='loci-readonly'>👁 View-only link: nothing can be changed.</div>"
    )
    return f"<div id='loci-notebook-cells'>{mode}{''.join(rows)}</div>"
