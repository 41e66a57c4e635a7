"""ledger: accounts, entries, postings, holds, hot deltas, clock, chain, day-end

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:38:20.166554
"""

from __future__ import annotations

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="external id, acc_…"),
        sa.Column("key", sa.String(length=200), nullable=False, comment="caller's idempotency key"),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "ledger_code",
            sa.String(length=64),
            nullable=False,
            comment="kind of account, e.g. merchant_pending",
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("owner_ref", sa.String(length=100), nullable=True),
        sa.Column("normal_side", sa.String(length=6), nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean(), nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean(), nullable=False),
        sa.Column("hot", sa.Boolean(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("normal_side IN ('debit', 'credit')", name=op.f("ck_ledger_accounts_normal_side_valid")),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name=op.f("ck_ledger_accounts_flags_mutually_exclusive"),
        ),
        sa.CheckConstraint(
            "NOT (hot AND (debits_must_not_exceed_credits OR credits_must_not_exceed_debits))",
            name=op.f("ck_ledger_accounts_hot_has_no_balance_constraint"),
        ),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_must_not_exceed_debits"),
        ),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_must_not_exceed_credits"),
        ),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0",
            name=op.f("ck_ledger_accounts_balances_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("key", name=op.f("uq_ledger_accounts_key")),
        sa.UniqueConstraint("ref", name=op.f("uq_ledger_accounts_ref")),
    )
    op.create_table(
        "ledger_chain_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seal_seq", sa.BigInteger(), nullable=False, comment="last sealed position, 0 before any"),
        sa.Column("seal", sa.String(length=64), nullable=False, comment="last seal; the genesis seal before any"),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_chain_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_chain_head")),
    )
    op.create_table(
        "ledger_clock",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("open_date", sa.Date(), nullable=False, comment="accounting date new entries carry"),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_clock_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_clock")),
    )
    op.create_table(
        "ledger_day_closes",
        sa.Column("accounting_date", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False, comment="switched | closed"),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entry_count", sa.BigInteger(), nullable=True),
        sa.Column("account_count", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("state IN ('switched', 'closed')", name=op.f("ck_ledger_day_closes_state_valid")),
        sa.PrimaryKeyConstraint("accounting_date", name=op.f("pk_ledger_day_closes")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="external id, je_…"),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False, comment="sha256 of the canonical request"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("business_code", sa.String(length=64), nullable=False),
        sa.Column("accounting_date", sa.Date(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("reverses_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "hold_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
            comment="the hold this entry creates, posts or releases",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seal_seq", sa.BigInteger(), nullable=True, comment="position in the hash chain"),
        sa.Column("seal", sa.String(length=64), nullable=True, comment="sha256(previous seal, content hash)"),
        sa.CheckConstraint(
            "kind IN ('entry', 'reversal', 'hold', 'hold_post', 'hold_void', 'hold_expire')",
            name=op.f("ck_ledger_entries_kind_valid"),
        ),
        sa.CheckConstraint("(seal_seq IS NULL) = (seal IS NULL)", name=op.f("ck_ledger_entries_sealed_together")),
        sa.ForeignKeyConstraint(
            ["reverses_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_ledger_entries_reverses_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_entries_idempotency_key")),
        sa.UniqueConstraint("ref", name=op.f("uq_ledger_entries_ref")),
        sa.UniqueConstraint("seal_seq", name=op.f("uq_ledger_entries_seal_seq")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_entries_accounting_date", ["accounting_date"], unique=False)
        batch_op.create_index(
            "ix_ledger_entries_unsealed",
            ["id"],
            unique=False,
            postgresql_where=sa.text("seal_seq IS NULL"),
            sqlite_where=sa.text("seal_seq IS NULL"),
        )
        batch_op.create_index(
            "uq_ledger_entries_reverses_entry_id",
            ["reverses_entry_id"],
            unique=True,
            postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
            sqlite_where=sa.text("reverses_entry_id IS NOT NULL"),
        )

    op.create_table(
        "ledger_day_balances",
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("accounting_date", sa.Date(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_day_balances_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", "accounting_date", name=op.f("pk_ledger_day_balances")),
    )
    with op.batch_alter_table("ledger_day_balances", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_day_balances_date", ["accounting_date"], unique=False)

    op.create_table(
        "ledger_holds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="external id, hld_…"),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("debit_account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("credit_account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_amount", sa.BigInteger(), nullable=True),
        sa.Column("resolving_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(state = 'pending') = (resolving_entry_id IS NULL)",
            name=op.f("ck_ledger_holds_resolved_has_entry"),
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'posted', 'voided', 'expired')", name=op.f("ck_ledger_holds_state_valid")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_holds_amount_positive")),
        sa.CheckConstraint(
            "posted_amount IS NULL OR (posted_amount > 0 AND posted_amount <= amount)",
            name=op.f("ck_ledger_holds_posted_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_holds_credit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_holds_debit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_ledger_holds_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(
            ["resolving_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_ledger_holds_resolving_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_holds")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_ledger_holds_entry_id")),
        sa.UniqueConstraint("ref", name=op.f("uq_ledger_holds_ref")),
        sa.UniqueConstraint("resolving_entry_id", name=op.f("uq_ledger_holds_resolving_entry_id")),
    )
    with op.batch_alter_table("ledger_holds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_holds_pending_expiry",
            ["expires_at"],
            unique=False,
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )

    op.create_table(
        "ledger_hot_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="ledger_accounts.id; no FK",
        ),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False, comment="signed: a release subtracts"),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False, comment="signed: a release subtracts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_hot_deltas")),
    )
    with op.batch_alter_table("ledger_hot_deltas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_hot_deltas_account_id"), ["account_id"], unique=False)

    op.create_table(
        "ledger_postings",
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "account_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            comment="ledger_accounts.id; no FK",
        ),
        sa.Column("side", sa.String(length=6), nullable=False),
        sa.Column("effect", sa.String(length=8), nullable=False, comment="posted | pending | release"),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.CheckConstraint("effect IN ('posted', 'pending', 'release')", name=op.f("ck_ledger_postings_effect_valid")),
        sa.CheckConstraint("side IN ('debit', 'credit')", name=op.f("ck_ledger_postings_side_valid")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_postings_amount_positive")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_ledger_postings_entry_id_ledger_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", "seq", name=op.f("pk_ledger_postings")),
    )
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_postings_account_entry", ["account_id", "entry_id"], unique=False)

    _seed(op.get_bind())
    _append_only_triggers(op.get_bind())


def _seed(bind: sa.engine.Connection) -> None:
    """The clock opens at today's date in Asia/Shanghai; the chain starts at the genesis seal."""
    today = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    genesis = hashlib.sha256(b"zhangfang ledger genesis").hexdigest()
    bind.execute(sa.text("INSERT INTO ledger_clock (id, open_date) VALUES (1, :today)"), {"today": today})
    bind.execute(
        sa.text("INSERT INTO ledger_chain_head (id, seal_seq, seal) VALUES (1, 0, :genesis)"),
        {"genesis": genesis},
    )


ENTRY_CONTENT_COLUMNS = (
    "id",
    "ref",
    "idempotency_key",
    "request_hash",
    "kind",
    "business_code",
    "accounting_date",
    "metadata",
    "reverses_entry_id",
    "hold_id",
    "created_at",
)


def _append_only_triggers(bind: sa.engine.Connection) -> None:
    """The journal is append-only in the database too: postings never change, entries only get sealed once."""
    if bind.dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{c}::text IS DISTINCT FROM OLD.{c}::text" for c in ENTRY_CONTENT_COLUMNS)
        op.execute(
            """
            CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
            END $$;
            """
        )
        op.execute(
            f"""
            CREATE FUNCTION ledger_entries_seal_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF OLD.seal_seq IS NOT NULL OR {changed} THEN
                RAISE EXCEPTION 'ledger_entries content is immutable' USING ERRCODE = 'restrict_violation';
              END IF;
              RETURN NEW;
            END $$;
            """
        )
        op.execute(
            "CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_seal_once BEFORE UPDATE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_seal_once()"
        )
        return
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in ENTRY_CONTENT_COLUMNS)
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER ledger_postings_no_{action.lower()} BEFORE {action} ON ledger_postings "
            "BEGIN SELECT RAISE(ABORT, 'ledger_postings is append-only'); END"
        )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries "
        "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts "
        "BEGIN SELECT RAISE(ABORT, 'ledger_accounts are never deleted'); END"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_seal_once BEFORE UPDATE ON ledger_entries "
        f"WHEN OLD.seal_seq IS NOT NULL OR {changed} "
        "BEGIN SELECT RAISE(ABORT, 'ledger_entries content is immutable'); END"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_seal_once ON ledger_entries")
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_delete ON ledger_entries")
        op.execute("DROP TRIGGER IF EXISTS ledger_postings_append_only ON ledger_postings")
        op.execute("DROP TRIGGER IF EXISTS ledger_accounts_no_delete ON ledger_accounts")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_seal_once()")
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_postings_account_entry")

    op.drop_table("ledger_postings")
    with op.batch_alter_table("ledger_hot_deltas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_hot_deltas_account_id"))

    op.drop_table("ledger_hot_deltas")
    with op.batch_alter_table("ledger_holds", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_ledger_holds_pending_expiry",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )

    op.drop_table("ledger_holds")
    with op.batch_alter_table("ledger_day_balances", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_day_balances_date")

    op.drop_table("ledger_day_balances")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ledger_entries_reverses_entry_id",
            postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
            sqlite_where=sa.text("reverses_entry_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_ledger_entries_unsealed",
            postgresql_where=sa.text("seal_seq IS NULL"),
            sqlite_where=sa.text("seal_seq IS NULL"),
        )
        batch_op.drop_index("ix_ledger_entries_accounting_date")

    op.drop_table("ledger_entries")
    op.drop_table("ledger_day_closes")
    op.drop_table("ledger_clock")
    op.drop_table("ledger_chain_head")
    op.drop_table("ledger_accounts")
