"""Database layer of the studio (no torch): schema, migrations, repository (projects, history,
jobs, world frames). The content-addressed file store is :mod:`storage.blobs`.

Typical use::

    db = open_database("sqlite:///data/loci.db", migrate=True)
    repo = Repository(db)
    store = storage.blobs.ArtifactStore("data/artifacts", db)
    project, view_key, edit_key = repo.create_project("Kitchen")
"""

from __future__ import annotations

from storage.db.engine import Database, open_database
from storage.db.jobs import GenerationBusy, Owner, pid_alive
from storage.db.models import (
    CELL_KINDS,
    STATUSES,
    Artifact,
    CellArtifact,
    HistoryCell,
    Job,
    Project,
    WorldFrame,
)
from storage.db.repository import Conflict, Forbidden, NotFound, Repository

__all__ = [
    "CELL_KINDS",
    "STATUSES",
    "Artifact",
    "CellArtifact",
    "Conflict",
    "Database",
    "Forbidden",
    "GenerationBusy",
    "HistoryCell",
    "Job",
    "NotFound",
    "Owner",
    "Project",
    "Repository",
    "WorldFrame",
    "open_database",
    "pid_alive",
]
