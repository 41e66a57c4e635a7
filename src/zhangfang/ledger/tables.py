"""Ledger storage. Every rule the service keeps in Python is kept here again as a constraint.

Guarantees the database enforces on its own (each has a test that makes it fire):

- ``accounts``: balances are never negative; an account flagged
  ``debits_must_not_exceed_credits`` never has posted+pending debits above posted
  credits (and the mirror flag likewise); the two flags are mutually exclusive;
  a ``hot`` account has neither flag (its balance row is folded later, so it
  cannot guard a limit).
- ``journal_entries``: one row per idempotency key; an entry is reversed at most
  once; ``seal_seq`` is unique (the hash chain has one order).
- ``postings``: amounts are positive; side and effect are from closed sets.
- Triggers (migration 0001) refuse UPDATE and DELETE of postings and of an
  entry's content, on SQLite and PostgreSQL alike: the journal is append-only,
  and only the sealer may fill in ``seal_seq``/``seal`` once. Accounts are
  never deleted (a trigger too).
- ``ledger_postings.account_id`` and ``ledger_hot_deltas.account_id`` carry no
  foreign key on purpose: PostgreSQL checks a foreign key by taking a KEY
  SHARE lock on the referenced row, so every writer touching a hot account
  would queue on that one row through MultiXacts — the contention hot
  accounts exist to avoid. The engine writes only ids it has just read, and
  accounts can never be deleted, so the reference cannot dangle.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.sql import one_of
from zhangfang.db.types import UtcDateTime

Money = sa.BigInteger  # integer minor units, always
ENTRY_KINDS = ("entry", "reversal", "hold", "hold_post", "hold_void", "hold_expire")
POSTING_SIDES = ("debit", "credit")
POSTING_EFFECTS = ("posted", "pending", "release")

accounts = sa.Table(
    "ledger_accounts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, acc_…"),
    sa.Column("key", sa.String(200), nullable=False, unique=True, comment="caller's idempotency key"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("ledger_code", sa.String(64), nullable=False, comment="kind of account, e.g. merchant_pending"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("owner_ref", sa.String(100), nullable=True),
    sa.Column("normal_side", sa.String(6), nullable=False),
    sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False, default=False),
    sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False, default=False),
    sa.Column("hot", sa.Boolean, nullable=False, default=False),
    sa.Column("closed", sa.Boolean, nullable=False, default=False),
    sa.Column("debits_posted", Money, nullable=False, default=0),
    sa.Column("credits_posted", Money, nullable=False, default=0),
    sa.Column("debits_pending", Money, nullable=False, default=0),
    sa.Column("credits_pending", Money, nullable=False, default=0),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("normal_side IN ('debit', 'credit')", name="normal_side_valid"),
    sa.CheckConstraint(
        "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
        name="balances_not_negative",
    ),
    sa.CheckConstraint(
        "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
        name="flags_mutually_exclusive",
    ),
    sa.CheckConstraint(
        "NOT (hot AND (debits_must_not_exceed_credits OR credits_must_not_exceed_debits))",
        name="hot_has_no_balance_constraint",
    ),
    sa.CheckConstraint(
        "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
        name="debits_must_not_exceed_credits",
    ),
    sa.CheckConstraint(
        "NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted",
        name="credits_must_not_exceed_debits",
    ),
)

journal_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, je_…"),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("request_hash", sa.String(64), nullable=False, comment="sha256 of the canonical request"),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("business_code", sa.String(64), nullable=False),
    sa.Column("accounting_date", sa.Date, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("reverses_entry_id", BigId, sa.ForeignKey("ledger_entries.id"), nullable=True),
    sa.Column("hold_id", BigId, nullable=True, comment="the hold this entry creates, posts or releases"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("seal_seq", sa.BigInteger, nullable=True, unique=True, comment="position in the hash chain"),
    sa.Column("seal", sa.String(64), nullable=True, comment="sha256(previous seal, content hash)"),
    sa.CheckConstraint(one_of("kind", ENTRY_KINDS), name="kind_valid"),
    sa.CheckConstraint("(seal_seq IS NULL) = (seal IS NULL)", name="sealed_together"),
    sa.Index("ix_ledger_entries_accounting_date", "accounting_date"),
    sa.Index(
        "ix_ledger_entries_unsealed",
        "id",
        postgresql_where=sa.text("seal_seq IS NULL"),
        sqlite_where=sa.text("seal_seq IS NULL"),
    ),
    sa.Index(
        "uq_ledger_entries_reverses_entry_id",
        "reverses_entry_id",
        unique=True,
        postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
        sqlite_where=sa.text("reverses_entry_id IS NOT NULL"),
    ),
)

postings = sa.Table(
    "ledger_postings",
    metadata,
    sa.Column("entry_id", BigId, sa.ForeignKey("ledger_entries.id"), primary_key=True),
    sa.Column("seq", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("account_id", BigId, nullable=False, comment="ledger_accounts.id; no FK"),
    sa.Column("side", sa.String(6), nullable=False),
    sa.Column("effect", sa.String(8), nullable=False, comment="posted | pending | release"),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint(one_of("side", POSTING_SIDES), name="side_valid"),
    sa.CheckConstraint(one_of("effect", POSTING_EFFECTS), name="effect_valid"),
    sa.Index("ix_ledger_postings_account_entry", "account_id", "entry_id"),
)

holds = sa.Table(
    "ledger_holds",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, hld_…"),
    sa.Column("entry_id", BigId, sa.ForeignKey("ledger_entries.id"), nullable=False, unique=True),
    sa.Column("debit_account_id", BigId, sa.ForeignKey("ledger_accounts.id"), nullable=False),
    sa.Column("credit_account_id", BigId, sa.ForeignKey("ledger_accounts.id"), nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("posted_amount", Money, nullable=True),
    sa.Column("resolving_entry_id", BigId, sa.ForeignKey("ledger_entries.id"), nullable=True, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("amount > 0", name="amount_positive"),
    sa.CheckConstraint("state IN ('pending', 'posted', 'voided', 'expired')", name="state_valid"),
    sa.CheckConstraint(
        "posted_amount IS NULL OR (posted_amount > 0 AND posted_amount <= amount)",
        name="posted_within_amount",
    ),
    sa.CheckConstraint("(state = 'pending') = (resolving_entry_id IS NULL)", name="resolved_has_entry"),
    sa.Index(
        "ix_ledger_holds_pending_expiry",
        "expires_at",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    ),
)

hot_account_deltas = sa.Table(
    "ledger_hot_deltas",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("account_id", BigId, nullable=False, index=True, comment="ledger_accounts.id; no FK"),
    sa.Column("debits_posted", Money, nullable=False),
    sa.Column("credits_posted", Money, nullable=False),
    sa.Column("debits_pending", Money, nullable=False, comment="signed: a release subtracts"),
    sa.Column("credits_pending", Money, nullable=False, comment="signed: a release subtracts"),
)

ledger_clock = sa.Table(
    "ledger_clock",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("open_date", sa.Date, nullable=False, comment="accounting date new entries carry"),
    sa.CheckConstraint("id = 1", name="single_row"),
)

chain_head = sa.Table(
    "ledger_chain_head",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("seal_seq", sa.BigInteger, nullable=False, comment="last sealed position, 0 before any"),
    sa.Column("seal", sa.String(64), nullable=False, comment="last seal; the genesis seal before any"),
    sa.CheckConstraint("id = 1", name="single_row"),
)

day_closes = sa.Table(
    "ledger_day_closes",
    metadata,
    sa.Column("accounting_date", sa.Date, primary_key=True),
    sa.Column("state", sa.String(10), nullable=False, comment="switched | closed"),
    sa.Column("switched_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("entry_count", sa.BigInteger, nullable=True),
    sa.Column("account_count", sa.BigInteger, nullable=True),
    sa.CheckConstraint("state IN ('switched', 'closed')", name="state_valid"),
)

account_day_balances = sa.Table(
    "ledger_day_balances",
    metadata,
    sa.Column("account_id", BigId, sa.ForeignKey("ledger_accounts.id"), primary_key=True),
    sa.Column("accounting_date", sa.Date, primary_key=True),
    sa.Column("debits_posted", Money, nullable=False),
    sa.Column("credits_posted", Money, nullable=False),
    sa.Column("debits_pending", Money, nullable=False),
    sa.Column("credits_pending", Money, nullable=False),
    sa.Index("ix_ledger_day_balances_date", "accounting_date"),
)
