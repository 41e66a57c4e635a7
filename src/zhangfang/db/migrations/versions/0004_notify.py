"""notify: webhook secrets, webhook events, webhook attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("id", BigId, nullable=False),
        sa.Column("merchant_id", BigId, nullable=False),
        sa.Column(
            "secret", sa.String(length=60), nullable=False, comment="whsec_ + base64 of 32 random bytes; to encrypt"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="NULL: current; else end of the grace period",
        ),
        sa.CheckConstraint("secret LIKE 'whsec_%'", name=op.f("ck_webhook_secrets_secret_format")),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_webhook_secrets_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_secrets")),
    )
    with op.batch_alter_table("webhook_secrets", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_secrets_merchant_id", ["merchant_id"], unique=False)
        batch_op.create_index(
            "uq_webhook_secrets_current",
            ["merchant_id"],
            unique=True,
            postgresql_where=sa.text("expires_at IS NULL"),
            sqlite_where=sa.text("expires_at IS NULL"),
        )

    op.create_table(
        "webhook_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="msg_…, the webhook-id"),
        sa.Column("merchant_id", BigId, nullable=False),
        sa.Column("merchant_ref", sa.String(length=40), nullable=False, comment="mch_…"),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False, comment="emitter's key, per merchant"),
        sa.Column("request_hash", sa.String(length=64), nullable=False, comment="sha256 of type, data and url"),
        sa.Column("event_type", sa.String(length=64), nullable=False, comment="payment.succeeded, …"),
        sa.Column("payload", sa.JSON(), nullable=False, comment="the data object"),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False, comment="pending | delivered | dead | disabled"),
        sa.Column("attempts", sa.Integer(), nullable=False, comment="attempts started, replays included"),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.Column("job_ref", sa.String(length=40), nullable=True, comment="the job delivering it now"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True, comment="the last 2xx"),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'dead', 'disabled')", name=op.f("ck_webhook_events_state_valid")
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_events_attempts_not_negative")),
        sa.CheckConstraint("replays >= 0", name=op.f("ck_webhook_events_replays_not_negative")),
        sa.CheckConstraint(
            "state <> 'delivered' OR delivered_at IS NOT NULL", name=op.f("ck_webhook_events_delivered_has_time")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_webhook_events_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("merchant_id", "idempotency_key", name=op.f("uq_webhook_events_merchant_id")),
        sa.UniqueConstraint("ref", name=op.f("uq_webhook_events_ref")),
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_events_merchant_id", ["merchant_id", "id"], unique=False)
        batch_op.create_index("ix_webhook_events_state", ["state", "id"], unique=False)

    op.create_table(
        "webhook_attempts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False, comment="1, 2, … per event"),
        sa.Column("job_ref", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True, comment="the HTTP exchange"),
        sa.Column("status_code", sa.SmallInteger(), nullable=True, comment="HTTP status; NULL without an answer"),
        sa.Column(
            "outcome", sa.String(length=10), nullable=True, comment="delivered | failed | gone; NULL until finished"
        ),
        sa.Column("error", sa.String(length=2000), nullable=True, comment="why no answer came"),
        sa.Column("response_excerpt", sa.String(length=1024), nullable=True, comment="first 1 KB of the answer"),
        sa.CheckConstraint("number >= 1", name=op.f("ck_webhook_attempts_number_positive")),
        sa.CheckConstraint(
            "outcome IN ('delivered', 'failed', 'gone')", name=op.f("ck_webhook_attempts_outcome_valid")
        ),
        sa.CheckConstraint(
            "(outcome IS NULL) = (finished_at IS NULL)", name=op.f("ck_webhook_attempts_outcome_when_finished")
        ),
        sa.CheckConstraint("duration_ms >= 0", name=op.f("ck_webhook_attempts_duration_not_negative")),
        sa.CheckConstraint(
            "status_code >= 100 AND status_code <= 599", name=op.f("ck_webhook_attempts_status_code_valid")
        ),
        sa.CheckConstraint("length(error) <= 2000", name=op.f("ck_webhook_attempts_error_length")),
        sa.CheckConstraint(
            "length(response_excerpt) <= 1024", name=op.f("ck_webhook_attempts_response_excerpt_length")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["webhook_events.id"], name=op.f("fk_webhook_attempts_event_id_webhook_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sa.UniqueConstraint("event_id", "number", name=op.f("uq_webhook_attempts_event_id")),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_state")
        batch_op.drop_index("ix_webhook_events_merchant_id")

    op.drop_table("webhook_events")
    with op.batch_alter_table("webhook_secrets", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_webhook_secrets_current",
            postgresql_where=sa.text("expires_at IS NULL"),
            sqlite_where=sa.text("expires_at IS NULL"),
        )
        batch_op.drop_index("ix_webhook_secrets_merchant_id")

    op.drop_table("webhook_secrets")
