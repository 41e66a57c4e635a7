"""Accounting storage (会计). Kept apart from the ledger's tables: accounting reads the journal, never writes it.

Guarantees the database enforces on its own:

- ``accounting_subjects``: type and normal side from closed sets; a parent is a subject.
- ``accounting_vouchers``: one voucher per ``source_key`` (a day's summary of a business
  code, one ledger entry, or a maker's idempotency key), so a repeated sync or a
  retried request can never book twice; a number is unique in its period; a
  posted voucher has a number and a checker, a voucher pending approval has neither.
- ``accounting_voucher_lines``: exactly one of debit and credit is positive.
- Triggers (migration 0006) refuse UPDATE and DELETE of voucher lines, any change
  to a voucher once it is posted or rejected, and any DELETE of a voucher: a
  posted voucher is immutable; a correction is another voucher.
- ``accounting_exceptions``: a ledger entry is reported at most once.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

Money = sa.BigInteger  # integer minor units, always

SUBJECT_TYPES = ("asset", "liability", "equity", "common", "income", "expense")

subjects = sa.Table(
    "accounting_subjects",
    metadata,
    sa.Column("code", sa.String(20), primary_key=True, comment="科目代码, e.g. 100202"),
    sa.Column("name_zh", sa.String(100), nullable=False),
    sa.Column("name_en", sa.String(100), nullable=False),
    sa.Column("type", sa.String(10), nullable=False),
    sa.Column("normal_side", sa.String(6), nullable=False),
    sa.Column("parent_code", sa.String(20), sa.ForeignKey("accounting_subjects.code"), nullable=True),
    sa.Column("leaf", sa.Boolean, nullable=False, comment="vouchers book to leaf subjects only"),
    sa.CheckConstraint("type IN ('asset', 'liability', 'equity', 'common', 'income', 'expense')", name="type_valid"),
    sa.CheckConstraint("normal_side IN ('debit', 'credit')", name="normal_side_valid"),
)

ledger_codes = sa.Table(
    "accounting_ledger_codes",
    metadata,
    sa.Column("ledger_code", sa.String(64), primary_key=True),
    sa.Column("subject_code", sa.String(20), sa.ForeignKey("accounting_subjects.code"), nullable=False),
    sa.Column("dimension", sa.String(20), nullable=True, comment="auxiliary dimension (辅助核算): merchant, …"),
    sa.Column("dimension_source", sa.String(10), nullable=False, comment="owner | account"),
    sa.CheckConstraint("dimension_source IN ('owner', 'account')", name="dimension_source_valid"),
)

rules = sa.Table(
    "accounting_rules",
    metadata,
    sa.Column("business_code", sa.String(64), primary_key=True),
    sa.Column("summary", sa.String(200), nullable=False, comment="摘要 of the vouchers it makes"),
)

rule_legs = sa.Table(
    "accounting_rule_legs",
    metadata,
    sa.Column("business_code", sa.String(64), sa.ForeignKey("accounting_rules.business_code"), primary_key=True),
    sa.Column("side", sa.String(6), primary_key=True),
    sa.Column("ledger_code", sa.String(64), primary_key=True),
    sa.Column("subject_code", sa.String(20), sa.ForeignKey("accounting_subjects.code"), nullable=False),
    sa.Column("dimension", sa.String(20), nullable=True, comment="auxiliary dimension (辅助核算): merchant, …"),
    sa.Column("dimension_source", sa.String(10), nullable=False, comment="owner | account"),
    sa.CheckConstraint("side IN ('debit', 'credit')", name="side_valid"),
    sa.CheckConstraint("dimension_source IN ('owner', 'account')", name="dimension_source_valid"),
)

periods = sa.Table(
    "accounting_periods",
    metadata,
    sa.Column("period", sa.String(7), primary_key=True, comment="YYYY-MM"),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("next_number", sa.Integer, nullable=False, comment="the number the next posted voucher takes"),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("closed_by", sa.String(64), nullable=True),
    sa.CheckConstraint("state IN ('open', 'closed')", name="state_valid"),
    sa.CheckConstraint("next_number >= 1", name="next_number_positive"),
)

vouchers = sa.Table(
    "accounting_vouchers",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, vch_…"),
    sa.Column("source_key", sa.String(240), nullable=False, unique=True, comment="what it books, once"),
    sa.Column("request_hash", sa.String(64), nullable=True, comment="manual vouchers: sha256 of the request"),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("period", sa.String(7), sa.ForeignKey("accounting_periods.period"), nullable=False),
    sa.Column("number", sa.Integer, nullable=True, comment="凭证号, per period, given when posted"),
    sa.Column("voucher_date", sa.Date, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("business_code", sa.String(64), nullable=True),
    sa.Column("source_entry_id", BigId, nullable=True, comment="kind entry: the ledger entry it books"),
    sa.Column("summary", sa.String(200), nullable=False),
    sa.Column("entry_count", sa.Integer, nullable=False, comment="ledger entries it books"),
    sa.Column("total", Money, nullable=False, comment="sum of its debits (= sum of its credits)"),
    sa.Column("maker", sa.String(64), nullable=False),
    sa.Column("checker", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("posted_at", UtcDateTime, nullable=True),
    sa.Column("rejected_reason", sa.String(200), nullable=True),
    sa.CheckConstraint("kind IN ('summary', 'entry', 'manual', 'closing')", name="kind_valid"),
    sa.CheckConstraint("state IN ('pending', 'posted', 'rejected')", name="state_valid"),
    sa.CheckConstraint("(state = 'posted') = (number IS NOT NULL AND posted_at IS NOT NULL)", name="posted_has_number"),
    sa.CheckConstraint("kind <> 'manual' OR state = 'pending' OR checker IS NOT NULL", name="manual_checked"),
    sa.CheckConstraint("checker IS NULL OR checker <> maker", name="checker_not_maker"),
    sa.CheckConstraint("total > 0", name="total_positive"),
    sa.UniqueConstraint("period", "number", name="uq_accounting_vouchers_period_number"),
    sa.Index("ix_accounting_vouchers_date", "voucher_date"),
    sa.Index("ix_accounting_vouchers_source_entry_id", "source_entry_id"),
)

voucher_lines = sa.Table(
    "accounting_voucher_lines",
    metadata,
    sa.Column("voucher_id", BigId, sa.ForeignKey("accounting_vouchers.id"), primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("subject_code", sa.String(20), sa.ForeignKey("accounting_subjects.code"), nullable=False),
    sa.Column("dimension", sa.String(20), nullable=True),
    sa.Column("aux", sa.String(200), nullable=False, comment="the dimension's value, '' when none"),
    sa.Column("debit", Money, nullable=False),
    sa.Column("credit", Money, nullable=False),
    sa.CheckConstraint("(debit > 0 AND credit = 0) OR (debit = 0 AND credit > 0)", name="one_side_positive"),
    sa.Index("ix_accounting_voucher_lines_subject", "subject_code"),
)

synced_days = sa.Table(
    "accounting_synced_days",
    metadata,
    sa.Column("accounting_date", sa.Date, primary_key=True),
    sa.Column("mode", sa.String(8), nullable=False, comment="summary | entry"),
    sa.Column("entry_count", sa.BigInteger, nullable=False, comment="ledger entries booked"),
    sa.Column("exception_count", sa.BigInteger, nullable=False, comment="ledger entries reported instead"),
    sa.Column("voucher_count", sa.BigInteger, nullable=False),
    sa.Column("rules_hash", sa.String(64), nullable=False, comment="the rules the day was booked by"),
    sa.Column("synced_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("mode IN ('summary', 'entry')", name="mode_valid"),
)

exceptions = sa.Table(
    "accounting_exceptions",
    metadata,
    sa.Column("entry_id", BigId, sa.ForeignKey("ledger_entries.id"), primary_key=True),
    sa.Column("accounting_date", sa.Date, nullable=False),
    sa.Column("business_code", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(20), nullable=False),
    sa.Column("detected_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("reason IN ('no_rule', 'leg_not_in_rule')", name="reason_valid"),
    sa.Index("ix_accounting_exceptions_date", "accounting_date"),
)
