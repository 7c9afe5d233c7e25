"""What the studio needs from its environment: folders, database URL, backends, limits.

``app.py`` turns flags and environment variables into a :class:`StudioContext`; everything else
reads it. The embedded default keeps all state under one data directory::

    data/loci.db        SQLite database (projects, history, jobs, frames, artifact rows)
    data/artifacts/     content-addressed files (frames, videos, splats, exports)
    data/cache/         derived, rebuildable files (world bundles for lifting, named downloads)
"""

from __future__ import annotations

import os
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

    @classmethod
    def from_env(cls, **overrides: object) -> StudioContext:
        """Defaults from ``LOCI_DATA_DIR``, ``LOCI_DATABASE_URL``, ``LOCI_WIDTH``,
        ``LOCI_DEPTH``, ``LOCI_SYNTHESIS``, ``LOCI_LORA``; keyword arguments win."""
        env = os.environ
        values: dict[str, object] = {
            "data_dir": Path(env.get("LOCI_DATA_DIR", "data")),
            "database_url": env.get("LOCI_DATABASE_URL") or None,
            "width": int(env.get("LOCI_WIDTH", "512")),
            "depth": env.get("LOCI_DEPTH", "layout"),
            "synthesis": env.get("LOCI_SYNTHESIS", "reproject"),
            "lora": env.get("LOCI_LORA") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
