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

Scaled out (README, "Scaling out"), the database is PostgreSQL (``database_url``), the files
are in a bucket (``artifacts``: ``s3://bucket/prefix``) and generations run on Ray actors
(``executor="ray"``); the cache stays local to each process.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ENV_VARS", "EXECUTORS", "StudioContext"]

#: Environment variables the studio reads (``from_env``; ``app.py`` adds LOCI_HOST, LOCI_PORT,
#: LOCI_ROOT_PATH). ``deploy/`` is checked against this list.
ENV_VARS = (
    "LOCI_DATA_DIR", "LOCI_DATABASE_URL", "LOCI_ARTIFACTS", "LOCI_WIDTH", "LOCI_DEPTH",
    "LOCI_SYNTHESIS", "LOCI_EXECUTOR", "LOCI_RAY_ADDRESS", "LOCI_RAY_WORKERS",
    "LOCI_RAY_LIFT_WORKERS", "LOCI_INSTANCE", "LOCI_FILE_SECRET", "LOCI_HOST", "LOCI_PORT",
    "LOCI_ROOT_PATH",
)  # fmt: skip

#: Where jobs run: "local" (threads of this process, the default) or "ray" (Ray actors).
EXECUTORS = ("local", "ray")


@dataclass
class StudioContext:
    """Settings of one studio process.

    data_dir: folder of the embedded database and files. database_url: any SQLAlchemy URL
    (default ``sqlite:///<data_dir>/loci.db``). artifacts: folder or fsspec URL of the file store
    (default ``<data_dir>/artifacts``). width: working width of generated frames.
    depth / synthesis: backend names (``auto`` uses local weights when present, else offline).
    max_frames: most frames one generation may ask for. stale_after_s: a running job whose
    heartbeat is older than this is interrupted (resumable) by whoever looks.
    executor: "local" or "ray"; concurrent_jobs: generations at once (local threads);
    ray_address: ``auto``, ``ray://host:10001`` or None (a Ray started in this process);
    ray_workers: generation actors in the pool; ray_lift_workers: CPU actors for lift and export
    (0: the generation actors do it). instance: this process's stable name: a process that starts
    again under the same name interrupts what its previous instance left running, at once.
    """

    data_dir: Path = field(default_factory=lambda: Path("data").absolute())
    database_url: str | None = None
    artifacts: str | None = None
    width: int = 512
    depth: str = "layout"
    synthesis: str = "reproject"
    max_frames: int = 600
    stale_after_s: float = 45.0
    heartbeat_s: float = 10.0
    executor: str = "local"
    concurrent_jobs: int = 1
    ray_address: str | None = None
    ray_workers: int = 1
    ray_lift_workers: int = 0
    instance: str = field(default_factory=lambda: f"studio@{socket.gethostname()}")
    poll_s: float = 0.2
    root_path: str = ""
    file_url_ttl_s: float = 1800.0
    temp_ttl_s: float = 3600.0
    file_secret: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        if self.executor not in EXECUTORS:
            raise ValueError(f"Unknown executor {self.executor!r}; use one of {EXECUTORS}.")
        if self.concurrent_jobs < 1 or self.ray_workers < 1 or self.ray_lift_workers < 0:
            raise ValueError("concurrent_jobs and ray_workers must be at least 1.")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'loci.db'}"

    @property
    def artifacts_url(self) -> str:
        """Where the artifact store is: a folder path or an fsspec URL (``s3://...``)."""
        return self.artifacts or str(self.data_dir / "artifacts")

    @property
    def artifacts_dir(self) -> Path:
        """The local artifact folder (only meaningful when ``artifacts`` is not a URL)."""
        return Path(self.artifacts_url)

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

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for handing the settings to a worker process)."""
        values = asdict(self)
        values["data_dir"] = str(self.data_dir)
        return values

    @classmethod
    def from_env(cls, **overrides: object) -> StudioContext:
        """Defaults from ``LOCI_DATA_DIR``, ``LOCI_DATABASE_URL``, ``LOCI_ARTIFACTS``,
        ``LOCI_WIDTH``, ``LOCI_DEPTH``, ``LOCI_SYNTHESIS``, ``LOCI_EXECUTOR``,
        ``LOCI_RAY_ADDRESS``, ``LOCI_RAY_WORKERS``, ``LOCI_RAY_LIFT_WORKERS``, ``LOCI_INSTANCE``,
        ``LOCI_FILE_SECRET``;
        keyword arguments win."""
        env = os.environ
        values: dict[str, object] = {
            "data_dir": Path(env.get("LOCI_DATA_DIR", "data")),
            "database_url": env.get("LOCI_DATABASE_URL") or None,
            "artifacts": env.get("LOCI_ARTIFACTS") or None,
            "width": int(env.get("LOCI_WIDTH", "512")),
            "depth": env.get("LOCI_DEPTH", "layout"),
            "synthesis": env.get("LOCI_SYNTHESIS", "reproject"),
            "executor": env.get("LOCI_EXECUTOR", "local"),
            "ray_address": env.get("LOCI_RAY_ADDRESS") or None,
            "ray_workers": int(env.get("LOCI_RAY_WORKERS", "1")),
            "ray_lift_workers": int(env.get("LOCI_RAY_LIFT_WORKERS", "0")),
            "file_secret": env.get("LOCI_FILE_SECRET") or None,
        }
        if env.get("LOCI_INSTANCE"):
            values["instance"] = env["LOCI_INSTANCE"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
