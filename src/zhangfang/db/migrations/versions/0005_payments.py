"""payments: orders, attempts, refunds, payouts, channel health, channel notifies

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 02:42:00.447386
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "channel_health",
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column(
            "open_until",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="the breaker is open (out of rotation) until then",
        ),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("consecutive_failures >= 0", name=op.f("ck_channel_health_failures_not_negative")),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_channel_health")),
    )
    op.create_table(
        "channel_notifies",
        sa.Column("id", BigId, nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False, comment="payment | refund | payout | unknown"),
        sa.Column("notify_id", sa.String(length=128), nullable=True, comment="the channel's id; retries repeat it"),
        sa.Column(
            "ref", sa.String(length=64), nullable=True, comment="what it is about: our attempt, refund or payout ref"
        ),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("body_excerpt", sa.String(length=2000), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_notifies")),
    )
    with op.batch_alter_table("channel_notifies", schema=None) as batch_op:
        batch_op.create_index("ix_channel_notifies_channel_notify_id", ["channel", "notify_id"], unique=False)

    op.create_table(
        "payment_orders",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="pay_…"),
        sa.Column("merchant_id", BigId, nullable=False),
        sa.Column("merchant_ref", sa.String(length=40), nullable=False, comment="mch_…"),
        sa.Column("out_trade_no", sa.String(length=64), nullable=False, comment="the merchant's order number"),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False, comment="pending | succeeded | refunded | closed"),
        sa.Column("amount", sa.BigInteger(), nullable=False, comment="minor units"),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("user_ref", sa.String(length=40), nullable=True, comment="usr_… of the merchant's payer"),
        sa.Column("notify_url", sa.String(length=2048), nullable=True, comment="where the merchant's webhooks go"),
        sa.Column("return_url", sa.String(length=2048), nullable=True, comment="where the payer's browser goes back"),
        sa.Column("method", sa.String(length=32), nullable=True, comment="payer method the merchant restricted to"),
        sa.Column("preferred_channel", sa.String(length=64), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("fee_rate", sa.String(length=12), nullable=False, comment="decimal text"),
        sa.Column("fee", sa.BigInteger(), nullable=True, comment="minor units, set when paid"),
        sa.Column("refunded", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("refunding", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True, comment="the channel that took the money"),
        sa.Column("channel_trade_no", sa.String(length=64), nullable=True),
        sa.Column("attempt_ref", sa.String(length=40), nullable=True, comment="the paying attempt"),
        sa.Column("entry_ref", sa.String(length=40), nullable=True, comment="the ledger entry of the payment"),
        sa.Column("close_reason", sa.String(length=10), nullable=True, comment="merchant | operator | expired"),
        sa.Column(
            "expiry_job_ref", sa.String(length=40), nullable=True, comment="the job that handles its expiry, once due"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "NOT (state IN ('succeeded', 'refunded')) OR (fee IS NOT NULL AND paid_at IS NOT NULL AND attempt_ref IS NOT NULL)",
            name=op.f("ck_payment_orders_paid_has_payment"),
        ),
        sa.CheckConstraint(
            "state != 'closed' OR (closed_at IS NOT NULL AND close_reason IN ('merchant', 'operator', 'expired'))",
            name=op.f("ck_payment_orders_closed_has_reason"),
        ),
        sa.CheckConstraint("state != 'refunded' OR refunded = amount", name=op.f("ck_payment_orders_refunded_in_full")),
        sa.CheckConstraint(
            "state IN ('pending', 'succeeded', 'refunded', 'closed')", name=op.f("ck_payment_orders_state_valid")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_orders_amount_positive")),
        sa.CheckConstraint(
            "refunded >= 0 AND refunding >= 0 AND refunded + refunding <= amount",
            name=op.f("ck_payment_orders_refunds_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_payment_orders_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_orders")),
        sa.UniqueConstraint("merchant_id", "out_trade_no", name=op.f("uq_payment_orders_merchant_id")),
        sa.UniqueConstraint("ref", name=op.f("uq_payment_orders_ref")),
    )
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.create_index("ix_payment_orders_merchant_id_id", ["merchant_id", "id"], unique=False)
        batch_op.create_index(
            "ix_payment_orders_due_expiry",
            ["expires_at"],
            unique=False,
            postgresql_where=sa.text("state = 'pending' AND expiry_job_ref IS NULL"),
            sqlite_where=sa.text("state = 'pending' AND expiry_job_ref IS NULL"),
        )

    op.create_table(
        "payouts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="po_…, the bank's out_payout_no"),
        sa.Column("merchant_id", BigId, nullable=False),
        sa.Column("merchant_ref", sa.String(length=40), nullable=False),
        sa.Column("out_payout_no", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False, comment="processing | succeeded | failed"),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payee_account_number", sa.String(length=32), nullable=False),
        sa.Column("payee_account_name", sa.String(length=100), nullable=False),
        sa.Column("payee_bank_code", sa.String(length=16), nullable=True),
        sa.Column("remark", sa.String(length=100), nullable=True),
        sa.Column("notify_url", sa.String(length=2048), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("channel_payout_no", sa.String(length=64), nullable=True),
        sa.Column("hold_ref", sa.String(length=40), nullable=False),
        sa.Column("entry_ref", sa.String(length=40), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state != 'succeeded' OR entry_ref IS NOT NULL", name=op.f("ck_payouts_succeeded_is_booked")
        ),
        sa.CheckConstraint(
            "state = 'processing' OR finished_at IS NOT NULL", name=op.f("ck_payouts_finished_has_time")
        ),
        sa.CheckConstraint("state IN ('processing', 'succeeded', 'failed')", name=op.f("ck_payouts_state_valid")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payouts_amount_positive")),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_payouts_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("merchant_id", "out_payout_no", name=op.f("uq_payouts_merchant_id")),
        sa.UniqueConstraint("ref", name=op.f("uq_payouts_ref")),
    )
    op.create_table(
        "payment_attempts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="pat_…, the channel's out_trade_no"),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False, comment="payer method: alipay, wechatpay, bank_card"),
        sa.Column(
            "channel_method", sa.String(length=32), nullable=False, comment="the adapter's method: page, native, …"
        ),
        sa.Column(
            "state", sa.String(length=10), nullable=False, comment="opening | open | succeeded | failed | closed"
        ),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("action_kind", sa.String(length=10), nullable=True, comment="redirect | qr_code | form"),
        sa.Column("action_url", sa.Text(), nullable=True),
        sa.Column("action_qr_code", sa.Text(), nullable=True),
        sa.Column("channel_trade_no", sa.String(length=64), nullable=True),
        sa.Column("duplicate", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("entry_ref", sa.String(length=40), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state != 'succeeded' OR (paid_at IS NOT NULL AND entry_ref IS NOT NULL)",
            name=op.f("ck_payment_attempts_succeeded_is_booked"),
        ),
        sa.CheckConstraint(
            "state IN ('opening', 'open', 'succeeded', 'failed', 'closed')",
            name=op.f("ck_payment_attempts_state_valid"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payment_attempts_amount_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["payment_orders.id"], name=op.f("fk_payment_attempts_order_id_payment_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempts")),
        sa.UniqueConstraint("ref", name=op.f("uq_payment_attempts_ref")),
    )
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_payment_attempts_order_id", ["order_id"], unique=False)

    op.create_table(
        "refunds",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="rfd_…, the channel's out_refund_no"),
        sa.Column("key", sa.String(length=250), nullable=False, comment="m:<merchant>:<out_refund_no> | dup:<pat>"),
        sa.Column("kind", sa.String(length=10), nullable=False, comment="merchant | duplicate"),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("attempt_id", BigId, nullable=False),
        sa.Column("merchant_id", BigId, nullable=False),
        sa.Column("out_refund_no", sa.String(length=64), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False, comment="processing | succeeded | failed"),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("fee_returned", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("notify_url", sa.String(length=2048), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("channel_refund_no", sa.String(length=64), nullable=True),
        sa.Column("hold_ref", sa.String(length=40), nullable=True, comment="merchant refunds: the funds reserved"),
        sa.Column("entry_ref", sa.String(length=40), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind != 'merchant' OR (out_refund_no IS NOT NULL AND hold_ref IS NOT NULL)",
            name=op.f("ck_refunds_merchant"),
        ),
        sa.CheckConstraint("kind IN ('merchant', 'duplicate')", name=op.f("ck_refunds_kind_valid")),
        sa.CheckConstraint(
            "state != 'succeeded' OR entry_ref IS NOT NULL", name=op.f("ck_refunds_succeeded_is_booked")
        ),
        sa.CheckConstraint(
            "state = 'processing' OR finished_at IS NOT NULL", name=op.f("ck_refunds_finished_has_time")
        ),
        sa.CheckConstraint("state IN ('processing', 'succeeded', 'failed')", name=op.f("ck_refunds_state_valid")),
        sa.CheckConstraint(
            "amount > 0 AND fee_returned >= 0 AND fee_returned <= amount", name=op.f("ck_refunds_amounts_valid")
        ),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["payment_attempts.id"], name=op.f("fk_refunds_attempt_id_payment_attempts")
        ),
        sa.ForeignKeyConstraint(["order_id"], ["payment_orders.id"], name=op.f("fk_refunds_order_id_payment_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("key", name=op.f("uq_refunds_key")),
        sa.UniqueConstraint("ref", name=op.f("uq_refunds_ref")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_order_id", ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_order_id")

    op.drop_table("refunds")
    with op.batch_alter_table("payment_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_attempts_order_id")

    op.drop_table("payment_attempts")
    op.drop_table("payouts")
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_orders_due_expiry")
        batch_op.drop_index("ix_payment_orders_merchant_id_id")

    op.drop_table("payment_orders")
    with op.batch_alter_table("channel_notifies", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_notifies_channel_notify_id")

    op.drop_table("channel_notifies")
    op.drop_table("channel_health")
