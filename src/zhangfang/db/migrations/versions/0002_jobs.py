"""jobs: the durable job queue (outbox)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="external id, job_…"),
        sa.Column("kind", sa.String(length=64), nullable=False, comment="registered handler name"),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True, comment="caller's idempotency key"),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, comment="claims so far"),
        sa.Column("attempts_max", sa.Integer(), nullable=False),
        sa.Column(
            "run_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="may be claimed from; the lease end while running",
        ),
        sa.Column("locked_by", sa.String(length=100), nullable=True, comment="worker id holding the job"),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True, comment="end of the worker's lease"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'succeeded', 'failed', 'dead')", name=op.f("ck_jobs_state_valid")
        ),
        sa.CheckConstraint("attempts >= 0 AND attempts <= attempts_max", name=op.f("ck_jobs_attempts_within_max")),
        sa.CheckConstraint("attempts_max >= 1", name=op.f("ck_jobs_attempts_max_positive")),
        sa.CheckConstraint(
            "(state = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)",
            name=op.f("ck_jobs_running_has_lease"),
        ),
        sa.CheckConstraint(
            "state <> 'running' OR run_at = locked_until", name=op.f("ck_jobs_running_due_at_lease_end")
        ),
        sa.CheckConstraint(
            "(state IN ('succeeded', 'failed', 'dead')) = (finished_at IS NOT NULL)",
            name=op.f("ck_jobs_finished_when_final"),
        ),
        sa.CheckConstraint("length(last_error) <= 2000", name=op.f("ck_jobs_last_error_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_jobs_dedupe_key")),
        sa.UniqueConstraint("ref", name=op.f("uq_jobs_ref")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_due",
            ["run_at"],
            unique=False,
            postgresql_where=sa.text("state IN ('pending', 'running')"),
            sqlite_where=sa.text("state IN ('pending', 'running')"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_due",
            postgresql_where=sa.text("state IN ('pending', 'running')"),
            sqlite_where=sa.text("state IN ('pending', 'running')"),
        )

    op.drop_table("jobs")
