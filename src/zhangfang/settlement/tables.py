"""Settlement storage: merchants' settlement terms, settlement batches and their per-date lines.

Guarantees the database enforces on its own, beside the service's checks:

- ``settlement_merchants``: at most one row per merchant (no row: the defaults,
  cycle ``T1`` and a percentage contract at the merchant's ``fee_rate``).
- ``settlement_batches``: one batch per (merchant, settlement date, currency),
  which makes a settlement run idempotent; the paid amount is never negative
  and never more than what was payable; what was not paid is carried.
- ``settlement_batch_days``: one line per (batch, business date).

Columns and their constraints
- Amounts are integers of the currency's minor unit. ``net``, ``carried_in``,
  ``payable``, ``carried_out`` and ``fee_adjustment`` are signed (refunds can
  exceed captures); the others are >= 0.
- ``settlement_merchants.cycle``: ``Cycle.__str__`` text (``T1``, ``D0``, ``WEEKLY:MON``).
- ``settlement_merchants.fee_contract``: ``FeeContract.to_dict()`` (JSON); NULL
  means the default contract at the merchant's current ``fee_rate``.
- ``settlement_merchants.payee_*``: the payout's bank account; NULL number and
  name mean the merchant's settlement account (``parties``).
- ``settlement_batches.state``: ``paying`` (payout processing), ``paid``,
  ``failed`` (payout refused; the funds are back in pending settlement),
  ``nothing_to_pay`` (payable not positive, below the merchant's minimum, or no
  funds available: all of it carried).
- ``settlement_batches.amount`` = ``payable`` - ``carried_out`` = the payout's amount.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

BATCH_STATES = ("paying", "paid", "failed", "nothing_to_pay")

settlement_merchants = sa.Table(
    "settlement_merchants",
    metadata,
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), primary_key=True, autoincrement=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False, unique=True, comment="mch_…"),
    sa.Column("cycle", sa.String(16), nullable=False, comment="T1 | T<n> | D<n> | WEEKLY:<day>"),
    sa.Column("fee_contract", sa.JSON, nullable=True, comment="FeeContract.to_dict(); NULL: the default"),
    sa.Column("payee_account_number", sa.String(32), nullable=True),
    sa.Column("payee_account_name", sa.String(100), nullable=True),
    sa.Column("payee_bank_code", sa.String(16), nullable=True),
    sa.Column("payout_minimum", sa.BigInteger, nullable=True, comment="minor units; below it, carried"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("payout_minimum IS NULL OR payout_minimum >= 0", name="payout_minimum_not_negative"),
    sa.CheckConstraint(
        "(payee_account_number IS NULL) = (payee_account_name IS NULL)", name="payee_number_and_name_together"
    ),
)

settlement_batches = sa.Table(
    "settlement_batches",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="stb_…"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False),
    sa.Column("settlement_date", sa.Date, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("cycle", sa.String(16), nullable=False),
    sa.Column("fee_contract", sa.JSON, nullable=False, comment="the contract applied"),
    sa.Column("first_business_date", sa.Date, nullable=False),
    sa.Column("last_business_date", sa.Date, nullable=False),
    sa.Column("payment_count", sa.BigInteger, nullable=False),
    sa.Column("captured", sa.BigInteger, nullable=False),
    sa.Column("refund_count", sa.BigInteger, nullable=False),
    sa.Column("refunds", sa.BigInteger, nullable=False),
    sa.Column("fees", sa.BigInteger, nullable=False, comment="per contract"),
    sa.Column("fees_returned", sa.BigInteger, nullable=False, comment="per contract"),
    sa.Column("fees_booked", sa.BigInteger, nullable=False, comment="booked at payment time"),
    sa.Column("fees_returned_booked", sa.BigInteger, nullable=False, comment="booked at refund time"),
    sa.Column("fee_adjustment", sa.BigInteger, nullable=False, comment="> 0: charged more; < 0: given back"),
    sa.Column("fee_entry_ref", sa.String(40), nullable=True),
    sa.Column("deductions", sa.BigInteger, nullable=False),
    sa.Column("deduction_lines", sa.JSON, nullable=False, comment="[{kind, ref, amount, description}]"),
    sa.Column("net", sa.BigInteger, nullable=False, comment="captured - refunds - fees + fees_returned - deductions"),
    sa.Column("carried_in", sa.BigInteger, nullable=False, comment="left unpaid by the previous batch"),
    sa.Column("payable", sa.BigInteger, nullable=False, comment="net + carried_in"),
    sa.Column("available", sa.BigInteger, nullable=False, comment="the pending-settlement balance available"),
    sa.Column("amount", sa.BigInteger, nullable=False, comment="paid out"),
    sa.Column("carried_out", sa.BigInteger, nullable=False, comment="payable - amount"),
    sa.Column("state", sa.String(16), nullable=False, comment="paying | paid | failed | nothing_to_pay"),
    sa.Column("payout_ref", sa.String(40), nullable=True, comment="po_…"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("merchant_id", "settlement_date", "currency"),
    sa.CheckConstraint("state IN ('paying', 'paid', 'failed', 'nothing_to_pay')", name="state_valid"),
    sa.CheckConstraint("first_business_date <= last_business_date", name="dates_ordered"),
    sa.CheckConstraint(
        "payment_count >= 0 AND captured >= 0 AND refund_count >= 0 AND refunds >= 0 AND fees >= 0 "
        "AND fees_returned >= 0 AND fees_booked >= 0 AND fees_returned_booked >= 0 AND deductions >= 0",
        name="amounts_not_negative",
    ),
    sa.CheckConstraint("payable = net + carried_in AND carried_out = payable - amount", name="carry_adds_up"),
    sa.CheckConstraint("amount >= 0 AND (amount = 0 OR amount <= payable)", name="amount_within_payable"),
    sa.CheckConstraint("(state = 'nothing_to_pay') = (payout_ref IS NULL)", name="payout_when_paying"),
    sa.Index("ix_settlement_batches_state", "state"),
    sa.Index("ix_settlement_batches_settlement_date", "settlement_date"),
)

settlement_batch_days = sa.Table(
    "settlement_batch_days",
    metadata,
    sa.Column("batch_id", BigId, sa.ForeignKey("settlement_batches.id"), primary_key=True),
    sa.Column("business_date", sa.Date, primary_key=True),
    sa.Column("payment_count", sa.BigInteger, nullable=False),
    sa.Column("captured", sa.BigInteger, nullable=False),
    sa.Column("refund_count", sa.BigInteger, nullable=False),
    sa.Column("refunds", sa.BigInteger, nullable=False),
    sa.Column("fees", sa.BigInteger, nullable=False),
    sa.Column("fees_returned", sa.BigInteger, nullable=False),
    sa.CheckConstraint(
        "payment_count >= 0 AND captured >= 0 AND refund_count >= 0 AND refunds >= 0 AND fees >= 0 "
        "AND fees_returned >= 0",
        name="amounts_not_negative",
    ),
)
