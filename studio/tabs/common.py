"""What every tab shares: the project fields, error translation, the notebook and small images.

Session state is ids and keys only (the project id and share key live in two text fields, which
also makes every action callable through ``gradio_client`` with explicit arguments); frames,
worlds and models stay on the server, in the database and the artifact store.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from storage.db import Forbidden
from studio.files import WRONG_KEYS
from studio.service import Studio, user_facing

__all__ = ["Shared", "client_of", "friendly", "notebook_html", "png_data_uri", "refuse"]

log = logging.getLogger("loci.studio")


@dataclass
class Shared:
    """Components and the service every tab reads: created once by ``studio.app.build_app``."""

    studio: Studio
    project_id: gr.Textbox
    key: gr.Textbox
    notebook: gr.HTML
    stamp: gr.State  # the newest change the page has shown (for the collaborators' poll)


def client_of(request: gr.Request | None) -> str:
    """The client's address (what wrong keys are counted against)."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")


def refuse(what: str, client: str, exc: BaseException) -> gr.Error:
    """An expected refusal: one log line (no traceback), the count of wrong keys per client,
    and the ``gr.Error`` that shows the message."""
    if isinstance(exc, Forbidden) and "view-only" not in str(exc):
        WRONG_KEYS.failed(client)
    log.info("refused %s for %s: %s: %s", what, client, type(exc).__name__, exc)
    return gr.Error(str(exc), print_exception=False)


def _throttled(client: str) -> gr.Error | None:
    wait = WRONG_KEYS.retry_after(client)
    if wait <= 0:
        return None
    log.info("refused a request from %s: too many wrong keys", client)
    return gr.Error(f"Too many wrong keys from your address; try again in {wait:.0f} s.",
                    print_exception=False)  # fmt: skip


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the studio's user-facing errors into ``gr.Error`` (plain functions and generators).

    Expected refusals are one log line each and count wrong keys against the client (a
    ``gr.Request`` parameter is added to the handler's signature for that); past the limit a
    client is refused before anything runs. Anything else is a bug: it propagates, Gradio shows
    a generic error and logs the traceback.
    """
    errors = user_facing()
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    n_pos = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    extendable = n_pos == len(params)  # no *args / keyword-only: append the request

    def split(args: tuple, kwargs: dict) -> tuple[tuple, str]:
        request = kwargs.pop("loci_request", None)
        if extendable and len(args) > n_pos:
            request, args = args[n_pos], args[:n_pos]
        return args, client_of(request)

    @contextlib.contextmanager
    def guarded(client: str) -> Iterator[None]:
        if (err := _throttled(client)) is not None:
            raise err
        try:
            yield
        except errors as e:
            raise refuse(fn.__name__, client, e) from None

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            args, client = split(args, kwargs)
            with guarded(client):
                yield from fn(*args, **kwargs)

    else:

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            args, client = split(args, kwargs)
            with guarded(client):
                return fn(*args, **kwargs)

    if extendable:
        req = inspect.Parameter("loci_request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=None, annotation=gr.Request)  # fmt: skip
        wrapper.__signature__ = sig.replace(parameters=[*params, req])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "loci_request": gr.Request}
    return wrapper


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
