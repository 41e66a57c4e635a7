"""Mandates storage: withholding agreements (协议代扣), their one-time signing codes, debits and batch files.

Guarantees the database enforces on its own, beside the service's checks:

- ``mandates``: one mandate per (merchant, ``out_mandate_no``); states from a
  closed set; an active or suspended mandate has the bank's agreement number;
  limits are positive, a debit's limit is within the day's, the day's within
  the month's (when there is one) and the month's within the total's.
- ``mandate_codes``: one-time codes, stored as a salted SHA-256, never in clear.
- ``mandate_debits``: one debit per (merchant, ``key``) — the caller's
  idempotency key; amounts positive; a finished debit has its time; a failed one
  its failure class and reason; a succeeded one its payment order.
- ``mandate_batches``: one batch per (merchant, ``merchant_batch_no``);
  ``mandate_batch_rows``: one row per (batch, ``row_no``).

Columns and their constraints
- Amounts are integers of the currency's minor unit (fen for CNY).
- ``mandates.account_number`` (8 to 32 digits) and ``phone`` are stored in clear
  for now, like ``merchants.bank_account_number``: encrypting them at rest comes
  with the key-management work. Merchants see them masked.
- ``mandates.amount_per_month_max`` and ``amount_total_max``: NULL means no
  limit beyond the others.
- ``mandate_codes.code_hash``: lower-case hex SHA-256 of ``salt`` + the code;
  ``attempts`` counts wrong codes; ``state`` pending | used | spent (too many
  wrong codes) | superseded (a newer code was sent).
- ``mandate_debits.due_date``: the business date (Asia/Shanghai) the debit is
  due and counted in for the daily and monthly limits.
- ``mandate_debits.tries``: bank calls made; ``attempt_ref`` the payment attempt
  of the latest (its ref is the bank's ``out_trade_no``); ``attempt_unknown``:
  the latest call got no answer, so the next try sends the same ``out_trade_no``
  again (the bank answers the debit it made, or makes it once).
- ``mandate_batch_rows.state``: pending (not yet a debit) | submitted (its debit
  is ``debit_id``) | refused (refused before it became a debit: ``failure_code``).
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

MANDATE_STATES_SQL = "state IN ('pending_authorization', 'active', 'suspended', 'revoked', 'expired', 'failed')"
DEBIT_STATES_SQL = "state IN ('pending', 'processing', 'retrying', 'succeeded', 'failed')"

mandates = sa.Table(
    "mandates",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="mdt_…, the bank's out_sign_no"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False),
    sa.Column("out_mandate_no", sa.String(64), nullable=False, comment="the merchant's number for it"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("user_ref", sa.String(40), nullable=False, comment="usr_… of the merchant's payer"),
    sa.Column(
        "state",
        sa.String(24),
        nullable=False,
        comment="pending_authorization | active | suspended | revoked | expired | failed",
    ),
    sa.Column("channel", sa.String(64), nullable=False, comment="the bank that debits: bank_direct:<bank>"),
    sa.Column("account_number", sa.String(32), nullable=False, comment="digits; to encrypt at rest"),
    sa.Column("account_name", sa.String(100), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False, comment="the payer's mobile, where codes go"),
    sa.Column("agreement_no", sa.String(64), nullable=True, comment="the bank's, once signed"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_per_debit_max", sa.BigInteger, nullable=False),
    sa.Column("amount_per_day_max", sa.BigInteger, nullable=False),
    sa.Column("amount_per_month_max", sa.BigInteger, nullable=True),
    sa.Column("amount_total_max", sa.BigInteger, nullable=True),
    sa.Column("description", sa.String(256), nullable=True, comment="what the payer agrees to, shown with the code"),
    sa.Column("notify_url", sa.String(2048), nullable=True),
    sa.Column("authorization_expires_at", UtcDateTime, nullable=False, comment="authorize before this"),
    sa.Column("expires_at", UtcDateTime, nullable=True, comment="no debit from then on"),
    sa.Column("authorized_at", UtcDateTime, nullable=True, comment="the payer gave the right code"),
    sa.Column("activated_at", UtcDateTime, nullable=True),
    sa.Column("suspended_at", UtcDateTime, nullable=True),
    sa.Column("ended_at", UtcDateTime, nullable=True, comment="revoked, expired or failed"),
    sa.Column("revoked_by", sa.String(10), nullable=True, comment="user | merchant | operator"),
    sa.Column("end_reason", sa.String(256), nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("merchant_id", "out_mandate_no"),
    sa.CheckConstraint(MANDATE_STATES_SQL, name="state_valid"),
    sa.CheckConstraint(
        "state NOT IN ('active', 'suspended') OR (agreement_no IS NOT NULL AND activated_at IS NOT NULL)",
        name="active_is_signed",
    ),
    sa.CheckConstraint(
        "amount_per_debit_max > 0 AND amount_per_debit_max <= amount_per_day_max "
        "AND (amount_per_month_max IS NULL OR amount_per_day_max <= amount_per_month_max) "
        "AND (amount_total_max IS NULL OR amount_per_debit_max <= amount_total_max) "
        "AND (amount_total_max IS NULL OR amount_per_month_max IS NULL OR amount_per_month_max <= amount_total_max)",
        name="limits_ordered",
    ),
    sa.CheckConstraint("revoked_by IS NULL OR revoked_by IN ('user', 'merchant', 'operator')", name="revoked_by_valid"),
    sa.CheckConstraint("state NOT IN ('revoked', 'expired', 'failed') OR ended_at IS NOT NULL", name="ended_has_time"),
    sa.Index("ix_mandates_merchant_id_id", "merchant_id", "id"),
    sa.Index("ix_mandates_user_id", "user_id"),
)

mandate_codes = sa.Table(
    "mandate_codes",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("mandate_id", BigId, sa.ForeignKey("mandates.id"), nullable=False),
    sa.Column("salt", sa.String(32), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False, comment="sha256 hex of salt + code"),
    sa.Column("state", sa.String(10), nullable=False, comment="pending | used | spent | superseded"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0", comment="wrong codes given"),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("state IN ('pending', 'used', 'spent', 'superseded')", name="state_valid"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    sa.Index("ix_mandate_codes_mandate_id", "mandate_id"),
)

mandate_batches = sa.Table(
    "mandate_batches",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="dbb_…"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_batch_no", sa.String(64), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False, comment="sha256 of the file and options"),
    sa.Column("state", sa.String(10), nullable=False, comment="processing | finished"),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("amount_total", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("notify_url", sa.String(2048), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("merchant_id", "merchant_batch_no"),
    sa.CheckConstraint("state IN ('processing', 'finished')", name="state_valid"),
    sa.CheckConstraint("row_count > 0 AND amount_total > 0", name="not_empty"),
)

mandate_debits = sa.Table(
    "mandate_debits",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="dbt_…"),
    sa.Column("mandate_id", BigId, sa.ForeignKey("mandates.id"), nullable=False),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False, comment="the caller's idempotency key"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False, comment="single | batch | installment | loan | …"),
    sa.Column("purpose_ref", sa.String(64), nullable=True),
    sa.Column("state", sa.String(10), nullable=False, comment="pending | processing | retrying | succeeded | failed"),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("due_date", sa.Date, nullable=False, comment="Asia/Shanghai; counted in that day's and month's limits"),
    sa.Column("description", sa.String(256), nullable=True),
    sa.Column("notify_url", sa.String(2048), nullable=True),
    sa.Column("batch_id", BigId, sa.ForeignKey("mandate_batches.id"), nullable=True),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try_at", UtcDateTime, nullable=True),
    sa.Column("order_ref", sa.String(40), nullable=True, comment="pay_…, the payment order it pays"),
    sa.Column("attempt_ref", sa.String(40), nullable=True, comment="pat_… of the latest try"),
    sa.Column("attempt_unknown", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("failure_class", sa.String(4), nullable=True, comment="soft | hard"),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_message", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("merchant_id", "key"),
    sa.CheckConstraint(DEBIT_STATES_SQL, name="state_valid"),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint("tries >= 0", name="tries_not_negative"),
    sa.CheckConstraint("failure_class IS NULL OR failure_class IN ('soft', 'hard')", name="failure_class_valid"),
    sa.CheckConstraint("state NOT IN ('succeeded', 'failed') OR finished_at IS NOT NULL", name="finished_has_time"),
    sa.CheckConstraint(
        "state != 'failed' OR (failure_class IS NOT NULL AND failure_code IS NOT NULL)", name="failed_has_reason"
    ),
    sa.CheckConstraint("state != 'succeeded' OR order_ref IS NOT NULL", name="succeeded_has_order"),
    # What the limits read: a mandate's debits by due date.
    sa.Index("ix_mandate_debits_mandate_id_due_date", "mandate_id", "due_date"),
    sa.Index("ix_mandate_debits_batch_id", "batch_id"),
)

mandate_batch_rows = sa.Table(
    "mandate_batch_rows",
    metadata,
    sa.Column("batch_id", BigId, sa.ForeignKey("mandate_batches.id"), primary_key=True),
    sa.Column("row_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("mandate_ref", sa.String(40), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("due_date", sa.Date, nullable=False),
    sa.Column("reference", sa.String(64), nullable=True, comment="the merchant's, echoed in the results"),
    sa.Column("state", sa.String(10), nullable=False, comment="pending | submitted | refused"),
    sa.Column("debit_id", BigId, sa.ForeignKey("mandate_debits.id"), nullable=True),
    sa.Column("failure_code", sa.String(64), nullable=True),
    sa.Column("failure_message", sa.String(500), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'submitted', 'refused')", name="state_valid"),
    sa.CheckConstraint("amount > 0 AND row_no > 0", name="values_positive"),
    sa.CheckConstraint("state != 'submitted' OR debit_id IS NOT NULL", name="submitted_has_debit"),
    sa.CheckConstraint("state != 'refused' OR failure_code IS NOT NULL", name="refused_has_reason"),
)
