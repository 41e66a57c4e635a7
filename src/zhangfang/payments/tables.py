"""Payments storage: orders, their attempts at channels, refunds, payouts, channel health and received notifies.

Guarantees the database enforces on its own, beside the service's checks:

- ``payment_orders``: one order per (merchant, ``out_trade_no``); states from a
  closed set; the amount is positive and what is refunded plus what is being
  refunded never exceeds it; a paid order has its fee, payment time and paying
  attempt; a closed order has its reason and time.
- ``payment_attempts``: one row per channel trade (``ref`` is the channel's
  ``out_trade_no``); a succeeded attempt has its payment time and ledger entry.
- ``refunds``: one per creation key (a merchant's ``out_refund_no``, or the
  duplicate attempt it returns); a finished refund has its time; a succeeded one
  its ledger entry.
- ``payouts``: one per (merchant, ``out_payout_no``); every payout reserves its
  funds with a ledger hold.

Columns and their constraints
- ``payment_orders.amount``, ``refunded``, ``refunding``, ``fee``: integers of
  the currency's minor unit. ``refunded`` counts succeeded refunds, ``refunding``
  those in flight; a refund moves its amount from one to the other (or back out,
  when it fails) in the transaction that records its result.
- ``payment_orders.fee_rate``: the merchant's rate when the order was created,
  as canonical decimal text (contract terms do not change under an order);
  ``fee`` is computed from it when the payment succeeds (half up to the fen).
- ``payment_orders.request_hash``: sha256 of the creation content, which tells a
  repeat of the same ``out_trade_no`` from a conflict.
- ``payment_orders.expiry_job_ref``: set when the periodic sweep hands a pending
  order past its ``expires_at`` to a ``payments.expire`` job (a partial index
  keeps the sweep's read small; creating an order writes no job).
- ``payment_attempts.duplicate``: the attempt was paid while the order was
  already paid by another attempt, or closed: the money goes back to the payer
  through an automatic refund.
- ``refunds.key``: ``m:<merchant id>:<out_refund_no>`` or ``dup:<attempt ref>``.
- ``channel_health``: a row per channel that has failed; no row means healthy.
- ``channel_notifies``: every notify received, verified or not; ``body_excerpt``
  at most 2000 characters.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

PAID_STATES_SQL = "state IN ('succeeded', 'refunded')"
DUE_EXPIRY_SQL = "state = 'pending' AND expiry_job_ref IS NULL"

payment_orders = sa.Table(
    "payment_orders",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="pay_…"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False, comment="mch_…"),
    sa.Column("out_trade_no", sa.String(64), nullable=False, comment="the merchant's order number"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(10), nullable=False, comment="pending | succeeded | refunded | closed"),
    sa.Column("amount", sa.BigInteger, nullable=False, comment="minor units"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("description", sa.String(1000), nullable=True),
    sa.Column("user_ref", sa.String(40), nullable=True, comment="usr_… of the merchant's payer"),
    sa.Column("notify_url", sa.String(2048), nullable=True, comment="where the merchant's webhooks go"),
    sa.Column("return_url", sa.String(2048), nullable=True, comment="where the payer's browser goes back"),
    sa.Column("method", sa.String(32), nullable=True, comment="payer method the merchant restricted to"),
    sa.Column("preferred_channel", sa.String(64), nullable=True),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("fee_rate", sa.String(12), nullable=False, comment="decimal text"),
    sa.Column("fee", sa.BigInteger, nullable=True, comment="minor units, set when paid"),
    sa.Column("refunded", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("refunding", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("channel", sa.String(64), nullable=True, comment="the channel that took the money"),
    sa.Column("channel_trade_no", sa.String(64), nullable=True),
    sa.Column("attempt_ref", sa.String(40), nullable=True, comment="the paying attempt"),
    sa.Column("entry_ref", sa.String(40), nullable=True, comment="the ledger entry of the payment"),
    sa.Column("close_reason", sa.String(10), nullable=True, comment="merchant | operator | expired"),
    sa.Column("expiry_job_ref", sa.String(40), nullable=True, comment="the job that handles its expiry, once due"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("paid_at", UtcDateTime, nullable=True),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("merchant_id", "out_trade_no"),
    sa.CheckConstraint("state IN ('pending', 'succeeded', 'refunded', 'closed')", name="state_valid"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint(
        "refunded >= 0 AND refunding >= 0 AND refunded + refunding <= amount", name="refunds_within_amount"
    ),
    sa.CheckConstraint(
        f"NOT ({PAID_STATES_SQL}) OR (fee IS NOT NULL AND paid_at IS NOT NULL AND attempt_ref IS NOT NULL)",
        name="paid_has_payment",
    ),
    sa.CheckConstraint("state != 'refunded' OR refunded = amount", name="refunded_in_full"),
    sa.CheckConstraint(
        "state != 'closed' OR (closed_at IS NOT NULL AND close_reason IN ('merchant', 'operator', 'expired'))",
        name="closed_has_reason",
    ),
    sa.Index("ix_payment_orders_merchant_id_id", "merchant_id", "id"),
    # What settlement reads: the orders paid in a range of days, every merchant at once.
    sa.Index("ix_payment_orders_paid_at", "paid_at"),
    # What the expiry sweep reads: pending orders not yet handed to an expiry job, by expiry.
    sa.Index(
        "ix_payment_orders_due_expiry",
        "expires_at",
        postgresql_where=sa.text(DUE_EXPIRY_SQL),
        sqlite_where=sa.text(DUE_EXPIRY_SQL),
    ),
)

payment_attempts = sa.Table(
    "payment_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="pat_…, the channel's out_trade_no"),
    sa.Column("order_id", BigId, sa.ForeignKey("payment_orders.id"), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("method", sa.String(32), nullable=False, comment="payer method: alipay, wechatpay, bank_card"),
    sa.Column("channel_method", sa.String(32), nullable=False, comment="the adapter's method: page, native, …"),
    sa.Column("state", sa.String(10), nullable=False, comment="opening | open | succeeded | failed | closed"),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("action_kind", sa.String(10), nullable=True, comment="redirect | qr_code | form"),
    sa.Column("action_url", sa.Text, nullable=True),
    sa.Column("action_qr_code", sa.Text, nullable=True),
    sa.Column("channel_trade_no", sa.String(64), nullable=True),
    sa.Column("duplicate", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("entry_ref", sa.String(40), nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_message", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("paid_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("state IN ('opening', 'open', 'succeeded', 'failed', 'closed')", name="state_valid"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint(
        "state != 'succeeded' OR (paid_at IS NOT NULL AND entry_ref IS NOT NULL)", name="succeeded_is_booked"
    ),
    sa.Index("ix_payment_attempts_order_id", "order_id"),
    # What reconciliation reads: a channel's payments of a day.
    sa.Index("ix_payment_attempts_channel_paid_at", "channel", "paid_at"),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="rfd_…, the channel's out_refund_no"),
    sa.Column("key", sa.String(250), nullable=False, unique=True, comment="m:<merchant>:<out_refund_no> | dup:<pat>"),
    sa.Column("kind", sa.String(10), nullable=False, comment="merchant | duplicate"),
    sa.Column("order_id", BigId, sa.ForeignKey("payment_orders.id"), nullable=False),
    sa.Column("attempt_id", BigId, sa.ForeignKey("payment_attempts.id"), nullable=False),
    sa.Column("merchant_id", BigId, nullable=False),
    sa.Column("out_refund_no", sa.String(64), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(10), nullable=False, comment="processing | succeeded | failed"),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("fee_returned", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reason", sa.String(256), nullable=True),
    sa.Column("notify_url", sa.String(2048), nullable=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("channel_refund_no", sa.String(64), nullable=True),
    sa.Column("hold_ref", sa.String(40), nullable=True, comment="merchant refunds: the funds reserved"),
    sa.Column("entry_ref", sa.String(40), nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_message", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("kind IN ('merchant', 'duplicate')", name="kind_valid"),
    sa.CheckConstraint("state IN ('processing', 'succeeded', 'failed')", name="state_valid"),
    sa.CheckConstraint("amount > 0 AND fee_returned >= 0 AND fee_returned <= amount", name="amounts_valid"),
    sa.CheckConstraint("kind != 'merchant' OR (out_refund_no IS NOT NULL AND hold_ref IS NOT NULL)", name="merchant"),
    sa.CheckConstraint("state = 'processing' OR finished_at IS NOT NULL", name="finished_has_time"),
    sa.CheckConstraint("state != 'succeeded' OR entry_ref IS NOT NULL", name="succeeded_is_booked"),
    sa.Index("ix_refunds_order_id", "order_id"),
    # What settlement reads: the refunds finished in a range of days.
    sa.Index("ix_refunds_finished_at", "finished_at"),
    # What reconciliation reads: a channel's refunds of a day.
    sa.Index("ix_refunds_channel_finished_at", "channel", "finished_at"),
)

payouts = sa.Table(
    "payouts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="po_…, the bank's out_payout_no"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False),
    sa.Column("out_payout_no", sa.String(64), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(10), nullable=False, comment="processing | succeeded | failed"),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payee_account_number", sa.String(32), nullable=False),
    sa.Column("payee_account_name", sa.String(100), nullable=False),
    sa.Column("payee_bank_code", sa.String(16), nullable=True),
    sa.Column("remark", sa.String(100), nullable=True),
    sa.Column("notify_url", sa.String(2048), nullable=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("channel_payout_no", sa.String(64), nullable=True),
    sa.Column("hold_ref", sa.String(40), nullable=False),
    sa.Column("entry_ref", sa.String(40), nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_message", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("merchant_id", "out_payout_no"),
    sa.CheckConstraint("state IN ('processing', 'succeeded', 'failed')", name="state_valid"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint("state = 'processing' OR finished_at IS NOT NULL", name="finished_has_time"),
    sa.CheckConstraint("state != 'succeeded' OR entry_ref IS NOT NULL", name="succeeded_is_booked"),
)

channel_health = sa.Table(
    "channel_health",
    metadata,
    sa.Column("channel", sa.String(64), primary_key=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("open_until", UtcDateTime, nullable=True, comment="the breaker is open (out of rotation) until then"),
    sa.Column("last_failure_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("consecutive_failures >= 0", name="failures_not_negative"),
)

channel_notifies = sa.Table(
    "channel_notifies",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False, comment="payment | refund | payout | unknown"),
    sa.Column("notify_id", sa.String(128), nullable=True, comment="the channel's id; retries repeat it"),
    sa.Column("ref", sa.String(64), nullable=True, comment="what it is about: our attempt, refund or payout ref"),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("body_excerpt", sa.String(2000), nullable=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Index("ix_channel_notifies_channel_notify_id", "channel", "notify_id"),
)
