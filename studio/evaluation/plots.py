"""Evaluation plots: plotly figures saved as HTML (always) and PNG (when kaleido can render).

The HTML files share one ``plotly.min.js`` written next to them, so reports open offline.
PNG export needs kaleido and a Chromium it can drive; when that is missing or fails, the
report keeps the HTML and says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PNG_NOTE: list[str] = []  # why PNGs were not written, once per message; run_eval resets it


def _note(message: str) -> None:
    if message not in PNG_NOTE:
        PNG_NOTE.append(message)


def save_figure(
    stem: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list, list]],
    kind: str = "line",
) -> list[Path]:
    """Plot ``series`` (name -> (xs, ys)) to ``stem``.html (+ ``stem``.png); returns the files."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, (xs, ys) in series.items():
        if kind == "bar":
            fig.add_trace(go.Bar(x=list(xs), y=list(ys), name=name))
        else:
            fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name))
    fig.update_layout(
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        template="plotly_white",
        barmode="group",
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = stem.with_suffix(".html")
    fig.write_html(str(html), include_plotlyjs="directory")
    written = [html]
    if os.environ.get("LOCI_PNG_PLOTS", "1") == "0":
        _note("PNG plots disabled (LOCI_PNG_PLOTS=0); HTML written")
    elif not shutil.which("chromium"):
        _note("PNG plots skipped (no chromium for kaleido); HTML written")
    else:
        try:
            fig.write_image(str(stem.with_suffix(".png")), width=900, height=500)
            written.append(stem.with_suffix(".png"))
        except Exception as e:  # kaleido missing, or it cannot start the browser here
            _note(f"PNG plots skipped ({type(e).__name__}: {e}); HTML written")
    return written
