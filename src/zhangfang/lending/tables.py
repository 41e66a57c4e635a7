"""Lending storage: loan products, loans, their installments (the schedule as rows) and repayments.

Guarantees the database enforces on its own, beside the service's checks:

- ``loan_products``: one product per ``code``; state ``active`` or ``retired``; kind ``pos`` or
  ``term``; 1 <= ``principal_min`` <= ``principal_max``; 1 <= ``periods_min`` <= ``periods_max`` <= 600;
  a ``pos`` product has its four ``credit_…`` columns, a ``term`` product none of them and no
  ``settlement_share``. (Rates are text: ``annual_rate_min <= annual_rate_max`` is the service's check.)
- ``loans``: one loan per (merchant, key) — a drawdown is idempotent on the
  merchant's key; principal > 0; state ``active`` or ``settled``.
- ``loan_installments``: one row per (loan, period); every amount >= 0 and no
  component paid beyond what it owes (``*_paid <= *``); ``interest_accrued``
  (what the ledger has recognised as interest income for the row) never
  exceeds interest + penalty.
- ``loan_repayments``: one per (loan, key), so a retried collection applies
  once; ``applied + overpayment = amount``.

Columns
- Amounts are integers of the currency's minor unit; rates are ``Decimal`` text.
- ``loans.kind``: ``pos`` (POS贷, repaid from settlement first) or ``term``.
- ``loans.product_code``: the product the loan was drawn on (``loan_products.code``, kept as text), or
  null; the loan keeps its own copy of every term, so a product retired later changes nothing of it.
- ``loan_products.credit_…``: a POS product's credit policy (``models.CreditPolicy``): ``credit_ratio``
  (decimal text) × settled volume over ``credit_lookback_days``, rounded down to ``credit_step`` and
  capped at ``credit_maximum`` (minor units).
- ``loans.allocation_order``: the components in order, comma-separated
  (``penalty,fee,interest,principal``).
- ``loan_repayments.source``: ``settlement``, ``withholding`` or ``manual``;
  ``applied`` is the JSON split per period and component.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

LOAN_STATES = ("active", "settled")
LOAN_KINDS = ("pos", "term")
REPAYMENT_SOURCES = ("settlement", "withholding", "manual")
PRODUCT_STATES = ("active", "retired")

loan_products = sa.Table(
    "loan_products",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("code", sa.String(40), nullable=False, unique=True, comment="URL-safe name, pos-90d"),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False, comment="the definition: the same code replays it"),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("method", sa.String(24), nullable=False),
    sa.Column("day_count", sa.String(16), nullable=False),
    sa.Column("annual_rate_min", sa.String(16), nullable=False),
    sa.Column("annual_rate_max", sa.String(16), nullable=False),
    sa.Column("periods_min", sa.Integer, nullable=False),
    sa.Column("periods_max", sa.Integer, nullable=False),
    sa.Column("principal_min", sa.BigInteger, nullable=False),
    sa.Column("principal_max", sa.BigInteger, nullable=False),
    sa.Column("penalty_daily_rate", sa.String(16), nullable=False),
    sa.Column("allocation_order", sa.String(40), nullable=False),
    sa.Column("settlement_share", sa.String(16), nullable=True, comment="POS: share of each settlement taken"),
    sa.Column("credit_ratio", sa.String(16), nullable=True, comment="POS: credit line = ratio × settled volume"),
    sa.Column("credit_lookback_days", sa.Integer, nullable=True),
    sa.Column("credit_step", sa.BigInteger, nullable=True),
    sa.Column("credit_maximum", sa.BigInteger, nullable=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(f"state IN {PRODUCT_STATES}", name="ck_loan_products_state"),
    sa.CheckConstraint(f"kind IN {LOAN_KINDS}", name="ck_loan_products_kind"),
    sa.CheckConstraint("principal_min >= 1 AND principal_min <= principal_max", name="ck_loan_products_principal"),
    sa.CheckConstraint(
        "periods_min >= 1 AND periods_min <= periods_max AND periods_max <= 600", name="ck_loan_products_periods"
    ),
    sa.CheckConstraint(
        "(kind = 'pos' AND credit_ratio IS NOT NULL AND credit_lookback_days >= 1 AND credit_step >= 1"
        " AND credit_maximum >= 0) OR (kind = 'term' AND settlement_share IS NULL AND credit_ratio IS NULL"
        " AND credit_lookback_days IS NULL AND credit_step IS NULL AND credit_maximum IS NULL)",
        name="ck_loan_products_credit_policy",
    ),
)

loans = sa.Table(
    "loans",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, loan_…"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False, comment="the borrower"),
    sa.Column("merchant_ref", sa.String(40), nullable=False),
    sa.Column("key", sa.String(200), nullable=False, comment="the caller's idempotency key"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("principal", sa.BigInteger, nullable=False),
    sa.Column("annual_rate", sa.String(16), nullable=False),
    sa.Column("method", sa.String(24), nullable=False),
    sa.Column("day_count", sa.String(16), nullable=False),
    sa.Column("periods", sa.Integer, nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("penalty_daily_rate", sa.String(16), nullable=False),
    sa.Column("allocation_order", sa.String(40), nullable=False),
    sa.Column("settlement_share", sa.String(16), nullable=True, comment="POS: share of each settlement taken"),
    sa.Column("mandate_ref", sa.String(40), nullable=True, comment="withholding mandate for due dates"),
    sa.Column("product_code", sa.String(40), nullable=True, comment="the loan product drawn on, if any"),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("disbursement_entry_ref", sa.String(40), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("settled_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("merchant_id", "key", name="uq_loans_merchant_key"),
    sa.CheckConstraint("principal > 0", name="ck_loans_principal_positive"),
    sa.CheckConstraint(f"state IN {LOAN_STATES}", name="ck_loans_state"),
    sa.CheckConstraint(f"kind IN {LOAN_KINDS}", name="ck_loans_kind"),
)
sa.Index("ix_loans_merchant_state", loans.c.merchant_id, loans.c.state)

loan_installments = sa.Table(
    "loan_installments",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("loan_id", BigId, sa.ForeignKey("loans.id"), nullable=False),
    sa.Column("period", sa.Integer, nullable=False),
    sa.Column("due_date", sa.Date, nullable=False),
    sa.Column("principal", sa.BigInteger, nullable=False),
    sa.Column("interest", sa.BigInteger, nullable=False),
    sa.Column("penalty", sa.BigInteger, nullable=False, server_default="0", comment="罚息 accrued so far"),
    sa.Column("principal_paid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("interest_paid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("penalty_paid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("interest_accrued", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("penalty_through", sa.Date, nullable=True, comment="the day penalty is accrued up to"),
    sa.Column("paid_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("loan_id", "period", name="uq_loan_installments_period"),
    sa.CheckConstraint(
        "principal >= 0 AND interest >= 0 AND penalty >= 0 AND principal_paid >= 0 AND interest_paid >= 0"
        " AND penalty_paid >= 0 AND principal_paid <= principal AND interest_paid <= interest"
        " AND penalty_paid <= penalty AND interest_accrued >= 0 AND interest_accrued <= interest + penalty",
        name="ck_loan_installments_amounts",
    ),
)
sa.Index("ix_loan_installments_due", loan_installments.c.due_date, loan_installments.c.paid_at)

loan_repayments = sa.Table(
    "loan_repayments",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, lrp_…"),
    sa.Column("loan_id", BigId, sa.ForeignKey("loans.id"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("source", sa.String(12), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("applied", sa.BigInteger, nullable=False),
    sa.Column("overpayment", sa.BigInteger, nullable=False),
    sa.Column("split", sa.JSON, nullable=False, comment="per period: penalty, interest, principal"),
    sa.Column("entry_ref", sa.String(40), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("loan_id", "key", name="uq_loan_repayments_key"),
    sa.CheckConstraint("amount > 0 AND applied >= 0 AND overpayment >= 0", name="ck_loan_repayments_amounts"),
    sa.CheckConstraint("applied + overpayment = amount", name="ck_loan_repayments_balance"),
    sa.CheckConstraint(f"source IN {REPAYMENT_SOURCES}", name="ck_loan_repayments_source"),
)

# --------------------------------------------------------------------------- installment plans (分期)

PLAN_STATES = ("active", "completed", "cancelled")
PLAN_MODES = ("per_period", "advance")
PLAN_PERIOD_STATES = ("scheduled", "collecting", "paid", "overdue", "cancelled")

installment_plans = sa.Table(
    "installment_plans",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, ipl_…"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False),
    sa.Column("mandate_ref", sa.String(40), nullable=False, comment="the withholding mandate debited"),
    sa.Column("key", sa.String(200), nullable=False, comment="the merchant's idempotency key"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(12), nullable=False, comment="per_period (分期回款) | advance (不分期回款)"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("principal", sa.BigInteger, nullable=False),
    sa.Column("annual_rate", sa.String(16), nullable=True, comment="when the platform computed the periods"),
    sa.Column("method", sa.String(24), nullable=True),
    sa.Column("penalty_daily_rate", sa.String(16), nullable=False),
    sa.Column("notify_url", sa.String(2048), nullable=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("advance_entry_ref", sa.String(40), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("merchant_id", "key", name="uq_installment_plans_merchant_key"),
    sa.CheckConstraint("principal > 0", name="ck_installment_plans_principal_positive"),
    sa.CheckConstraint(f"state IN {PLAN_STATES}", name="ck_installment_plans_state"),
    sa.CheckConstraint(f"mode IN {PLAN_MODES}", name="ck_installment_plans_mode"),
)

installment_plan_periods = sa.Table(
    "installment_plan_periods",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("plan_id", BigId, sa.ForeignKey("installment_plans.id"), nullable=False),
    sa.Column("period", sa.Integer, nullable=False),
    sa.Column("due_date", sa.Date, nullable=False),
    sa.Column("principal", sa.BigInteger, nullable=False),
    sa.Column("interest", sa.BigInteger, nullable=False),
    sa.Column("penalty", sa.BigInteger, nullable=False, server_default="0", comment="罚息 accrued while overdue"),
    sa.Column("penalty_through", sa.Date, nullable=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0", comment="debits made for the period"),
    sa.Column("debit_ref", sa.String(40), nullable=True, comment="the latest debit"),
    sa.Column("next_try_on", sa.Date, nullable=True, comment="an overdue period's next debit"),
    sa.Column("collected", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("deducted", sa.BigInteger, nullable=False, server_default="0", comment="advance: taken by settlement"),
    sa.Column("paid_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("plan_id", "period", name="uq_installment_plan_periods_period"),
    sa.CheckConstraint(
        "principal >= 0 AND interest >= 0 AND penalty >= 0 AND collected >= 0 AND principal + interest > 0"
        " AND deducted >= 0 AND deducted <= collected",
        name="ck_installment_plan_periods_amounts",
    ),
    sa.CheckConstraint(f"state IN {PLAN_PERIOD_STATES}", name="ck_installment_plan_periods_state"),
)
sa.Index("ix_installment_plan_periods_due", installment_plan_periods.c.state, installment_plan_periods.c.due_date)
