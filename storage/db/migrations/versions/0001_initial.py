"""Initial schema: every table of the studio database.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mime", sa.String(length=255), nullable=False),
        sa.Column("relpath", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_artifacts")),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("view_key_hash", sa.String(length=64), nullable=False),
        sa.Column("edit_key_hash", sa.String(length=64), nullable=False),
        sa.Column("forked_from_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["forked_from_id"],
            ["projects.id"],
            name=op.f("fk_projects_forked_from_id_projects"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    op.create_table(
        "history_cells",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("parent_cell_id", sa.String(length=36), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('photo', 'trajectory', 'generation', 'lift', 'export')",
            name=op.f("ck_history_cells_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed', 'interrupted', 'cancelled')",
            name=op.f("ck_history_cells_status"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_cell_id"],
            ["history_cells.id"],
            name=op.f("fk_history_cells_parent_cell_id_history_cells"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_history_cells_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history_cells")),
        sa.UniqueConstraint("project_id", "position", name="uq_history_cells_project_position"),
    )
    op.create_index(
        "ix_history_cells_project_updated",
        "history_cells",
        ["project_id", "updated_at"],
        unique=False,
    )

    op.create_table(
        "cell_artifacts",
        sa.Column("cell_id", sa.String(length=36), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=50), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cell_id"],
            ["history_cells.id"],
            name=op.f("fk_cell_artifacts_cell_id_history_cells"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["artifacts.sha256"],
            name=op.f("fk_cell_artifacts_sha256_artifacts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("cell_id", "sha256", "role", name=op.f("pk_cell_artifacts")),
    )
    op.create_index(op.f("ix_cell_artifacts_sha256"), "cell_artifacts", ["sha256"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("cell_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("frames_done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed', 'interrupted', 'cancelled')",
            name=op.f("ck_jobs_status"),
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name=op.f("ck_jobs_progress_range")),
        sa.ForeignKeyConstraint(
            ["cell_id"],
            ["history_cells.id"],
            name=op.f("fk_jobs_cell_id_history_cells"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_cell_id"), "jobs", ["cell_id"], unique=False)
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"], unique=False)

    op.create_table(
        "world_frames",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cell_id", sa.String(length=36), nullable=False),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("rgb_sha256", sa.String(length=64), nullable=False),
        sa.Column("depth_sha256", sa.String(length=64), nullable=True),
        sa.Column("mask_sha256", sa.String(length=64), nullable=True),
        sa.Column("K", sa.JSON(), nullable=False),
        sa.Column("c2w", sa.JSON(), nullable=False),
        sa.Column("memory_coverage", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("frame_index >= 0", name=op.f("ck_world_frames_frame_index_nonneg")),
        sa.ForeignKeyConstraint(
            ["cell_id"],
            ["history_cells.id"],
            name=op.f("fk_world_frames_cell_id_history_cells"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["depth_sha256"],
            ["artifacts.sha256"],
            name=op.f("fk_world_frames_depth_sha256_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["mask_sha256"],
            ["artifacts.sha256"],
            name=op.f("fk_world_frames_mask_sha256_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["rgb_sha256"], ["artifacts.sha256"], name=op.f("fk_world_frames_rgb_sha256_artifacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world_frames")),
        sa.UniqueConstraint("cell_id", "frame_index", name="uq_world_frames_cell_index"),
    )


def downgrade() -> None:
    op.drop_table("world_frames")
    op.drop_index("ix_jobs_status_heartbeat", table_name="jobs")
    op.drop_index(op.f("ix_jobs_cell_id"), table_name="jobs")

    op.drop_table("jobs")
    op.drop_index(op.f("ix_cell_artifacts_sha256"), table_name="cell_artifacts")

    op.drop_table("cell_artifacts")
    op.drop_index("ix_history_cells_project_updated", table_name="history_cells")

    op.drop_table("history_cells")
    op.drop_table("projects")
    op.drop_table("artifacts")
