"""Jobs know their project, kind and owner; one active generation per project, in the database.

- ``project_id`` and ``kind`` (copied from the job's cell) back a unique partial index: at most
  one pending or running generation per project, so two clients generating at the same moment
  cannot both start (the old check-then-insert ran in two transactions).
- ``owner`` / ``owner_nonce`` / ``owner_host`` / ``owner_pid`` say which process runs the job, so
  a restarted process interrupts its previous instance's jobs at once instead of waiting for
  their heartbeats to age.

Databases that already hold two active generations in one project (the race this fixes) keep
the newest; the others become "interrupted" (resumable) before the index is built.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "status IN ('pending', 'running') AND kind = 'generation'"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("project_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("owner_nonce", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("owner_host", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("owner_pid", sa.Integer(), nullable=True))
    # Portable SQL (correlated sub-queries), no dialect-specific UPDATE ... FROM.
    op.execute(
        "UPDATE jobs SET project_id = (SELECT c.project_id FROM history_cells c "
        "WHERE c.id = jobs.cell_id), kind = (SELECT c.kind FROM history_cells c "
        "WHERE c.id = jobs.cell_id)"
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(f"SELECT id, project_id FROM jobs WHERE {WHERE} ORDER BY started_at DESC")
    ).fetchall()
    seen: set[str] = set()
    for job_id, project_id in rows:
        if project_id in seen:
            conn.execute(
                sa.text("UPDATE jobs SET status = 'interrupted', error = :msg WHERE id = :id"),
                {"id": job_id, "msg": "Another generation of this project ran at the same time."},
            )
        seen.add(project_id)
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("project_id", existing_type=sa.String(length=36), nullable=False)
        batch.alter_column("kind", existing_type=sa.String(length=20), nullable=False)
        batch.create_foreign_key(
            op.f("fk_jobs_project_id_projects"), "projects", ["project_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
    op.create_index(
        "uq_jobs_active_generation",
        "jobs",
        ["project_id"],
        unique=True,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_active_generation", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("fk_jobs_project_id_projects"), type_="foreignkey")
        for column in ("owner_pid", "owner_host", "owner_nonce", "owner", "kind", "project_id"):
            batch.drop_column(column)
