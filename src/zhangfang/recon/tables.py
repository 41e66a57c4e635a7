"""Reconciliation storage (对账): imported bills, their lines, discrepancies and every step taken on them.

Guarantees the database enforces on its own:

- ``recon_bills``: a file is imported once per channel and bill date (``sha256`` unique with them);
  a second import of the same bytes returns the first.
- ``recon_bill_lines``: amounts positive, fees not negative, kinds and directions from closed sets.
- ``recon_runs``: one run per channel and bill date.
- ``recon_discrepancies``: class and state from closed sets; a resolution that moves money is
  approved by someone other than its resolver.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.sql import one_of
from zhangfang.db.types import UtcDateTime

Money = sa.BigInteger
LINE_KINDS = ("payment", "refund", "credit", "debit")
LINE_STATES = ("new", "matched", "carried", "differs")

DISCREPANCY_CLASSES = (
    "channel_only",  # 长款: on the channel's bill, not in our records of the day
    "platform_only",  # 短款: in our records, not on the bill
    "amount_mismatch",
    "fee_mismatch",
    "status_mismatch",
    "duplicate",
)

bills = sa.Table(
    "recon_bills",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="rcb_…"),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("bill_date", sa.Date, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("line_count", sa.BigInteger, nullable=False),
    sa.Column("rejected_count", sa.BigInteger, nullable=False, comment="malformed lines left out (partial import)"),
    sa.Column(
        "totals", sa.JSON, nullable=False, comment="per currency: counts and sums; balances where the format has them"
    ),
    sa.Column("imported_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("channel", "bill_date", "sha256", name="uq_recon_bills_channel_date_sha256"),
    sa.Index("ix_recon_bills_channel_date", "channel", "bill_date"),
)

bill_lines = sa.Table(
    "recon_bill_lines",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    # No foreign key on purpose: PostgreSQL checks one by a query per row, 2.5 s of a million-line
    # COPY. Lines are written only by the import that inserted their bill, in its transaction, with
    # the id it was just given, and bills are never deleted: the reference cannot dangle.
    sa.Column("bill_id", BigId, nullable=False, comment="recon_bills.id; no FK"),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("bill_date", sa.Date, nullable=False),
    sa.Column("line_no", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("channel_ref", sa.String(64), nullable=True),
    sa.Column("order_ref", sa.String(64), nullable=True, comment="our number at the channel: pat_… or rfd_…"),
    sa.Column("amount", Money, nullable=False),
    sa.Column("fee", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("occurred_at", UtcDateTime, nullable=True),
    # A line its day's run found in agreement is left "new" (the run writes only the few that are not):
    # "new" on a day that has had its run means matched.
    sa.Column("state", sa.String(10), nullable=False, comment="new | matched | carried | differs"),
    sa.Column("run_id", BigId, nullable=True, comment="the run that marked it (recon_runs.id), if one did"),
    sa.CheckConstraint("amount > 0 AND fee >= 0", name="amounts_valid"),
    sa.CheckConstraint(one_of("kind", LINE_KINDS), name="kind_valid"),
    sa.CheckConstraint(one_of("state", LINE_STATES), name="state_valid"),
    sa.Index("ix_recon_bill_lines_channel_date", "channel", "bill_date"),
    sa.Index("ix_recon_bill_lines_order_ref", "order_ref"),
)

runs = sa.Table(
    "recon_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("bill_date", sa.Date, nullable=False),
    sa.Column("matched_count", sa.BigInteger, nullable=False),
    sa.Column("matched_amount", Money, nullable=False),
    sa.Column("carried_count", sa.BigInteger, nullable=False),
    sa.Column("counts", sa.JSON, nullable=False, comment="discrepancies per class: count and amount"),
    sa.Column("ran_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("channel", "bill_date", name="uq_recon_runs_channel_date"),
)

discrepancies = sa.Table(
    "recon_discrepancies",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="dsc_…"),
    sa.Column("run_id", BigId, sa.ForeignKey("recon_runs.id"), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("bill_date", sa.Date, nullable=False),
    sa.Column("class", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False, comment="payment | refund"),
    sa.Column("order_ref", sa.String(64), nullable=True),
    sa.Column("channel_ref", sa.String(64), nullable=True),
    sa.Column("bill_line_id", BigId, sa.ForeignKey("recon_bill_lines.id"), nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("channel_amount", Money, nullable=True),
    sa.Column("platform_amount", Money, nullable=True),
    sa.Column("channel_fee", Money, nullable=True),
    sa.Column("platform_fee", Money, nullable=True),
    sa.Column("channel_status", sa.String(32), nullable=True),
    sa.Column("platform_status", sa.String(16), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("assignee", sa.String(64), nullable=True),
    sa.Column("action", sa.String(24), nullable=True, comment="what resolved it"),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("resolved_by", sa.String(64), nullable=True),
    sa.Column("approved_by", sa.String(64), nullable=True),
    sa.Column("entry_ref", sa.String(40), nullable=True, comment="the ledger entry a money-moving resolution posted"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(
        "class IN ('channel_only', 'platform_only', 'amount_mismatch', 'fee_mismatch', 'status_mismatch', 'duplicate')",
        name="class_valid",
    ),
    sa.CheckConstraint(
        "state IN ('open', 'assigned', 'pending_approval', 'resolved', 'auto_resolved')", name="state_valid"
    ),
    sa.CheckConstraint("approved_by IS NULL OR approved_by <> resolved_by", name="approver_not_resolver"),
    sa.Index("ix_recon_discrepancies_state", "state"),
    sa.Index("ix_recon_discrepancies_channel_date", "channel", "bill_date"),
)

actions = sa.Table(
    "recon_actions",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("discrepancy_id", BigId, sa.ForeignKey("recon_discrepancies.id"), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(24), nullable=False),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index("ix_recon_actions_discrepancy", "discrepancy_id"),
)
