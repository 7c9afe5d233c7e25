"""What the studio needs from its environment: folders, database URL, backends, limits.

``app.py`` turns flags and environment variables into a :class:`StudioContext`; everything else
reads it. The embedded default keeps all state under one data directory::

    data/loci.db        SQLite database (projects, history, jobs, frames, artifact rows)
    data/artifacts/     content-addressed files (frames, videos, splats, exports)
    data/cache/         derived, rebuildable files (world bundles for lifting and exports)
    data/file-secret    the key that signs file URLs (made once; or ``$LOCI_FILE_SECRET``)

Nothing in it is served directly: files reach a browser through signed URLs
(:mod:`studio.files`) or as copies handed to Gradio in ``handoff_dir``, which lives in Gradio's
temp dir (``$GRADIO_TEMP_DIR``) and is emptied after ``temp_ttl_s``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["StudioContext"]


@dataclass
class StudioContext:
    """Settings of one studio process.

    data_dir: folder of the embedded database and files. database_url: any SQLAlchemy URL
    (default ``sqlite:///<data_dir>/loci.db``). width: working width of generated frames.
    depth / synthesis: backend names (``auto`` uses local weights when present, else offline).
    lora: a ``loci train`` LoRA folder for the painter (None: the base model); with synthesis
    ``auto`` or the default, the LoRA's own painter is used.
    max_frames: most frames one generation may ask for. stale_after_s: a running job whose
    heartbeat is older than this at start-up is marked interrupted (resumable).
    """

    data_dir: Path = field(default_factory=lambda: Path("data").absolute())
    database_url: str | None = None
    width: int = 512
    depth: str = "layout"
    synthesis: str = "reproject"
    lora: str | None = None
    max_frames: int = 600
    stale_after_s: float = 45.0
    heartbeat_s: float = 10.0
    root_path: str = ""
    file_url_ttl_s: float = 1800.0
    temp_ttl_s: float = 3600.0
    file_secret: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'loci.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def gradio_temp_dir(self) -> Path:
        """Gradio's upload and cache folder (``$GRADIO_TEMP_DIR``, else ``<tmp>/gradio``)."""
        env = os.environ.get("GRADIO_TEMP_DIR")
        return Path(env).absolute() if env else (Path(tempfile.gettempdir()) / "gradio").resolve()

    @property
    def handoff_dir(self) -> Path:
        """Where files for Gradio components are put (see the module docstring)."""
        return self.gradio_temp_dir / "loci-handoff"

    @property
    def chunks_dir(self) -> Path:
        """Video chunks streamed during a generation (transient, beside ``handoff_dir``)."""
        return self.gradio_temp_dir / "loci-chunks"

    @classmethod
    def from_env(cls, **overrides: object) -> StudioContext:
        """Defaults from ``LOCI_DATA_DIR``, ``LOCI_DATABASE_URL``, ``LOCI_WIDTH``,
        ``LOCI_DEPTH``, ``LOCI_SYNTHESIS``, ``LOCI_LORA``, ``LOCI_FILE_SECRET``; keyword
        arguments win."""
        env = os.environ
        values: dict[str, object] = {
            "data_dir": Path(env.get("LOCI_DATA_DIR", "data")),
            "database_url": env.get("LOCI_DATABASE_URL") or None,
            "width": int(env.get("LOCI_WIDTH", "512")),
            "depth": env.get("LOCI_DEPTH", "layout"),
            "synthesis": env.get("LOCI_SYNTHESIS", "reproject"),
            "lora": env.get("LOCI_LORA") or None,
            "file_secret": env.get("LOCI_FILE_SECRET") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
