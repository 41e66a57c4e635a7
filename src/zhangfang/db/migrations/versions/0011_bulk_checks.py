"""bulk-written tables check closed sets with =/OR chains; recon bill lines lose their run index

SQLite evaluates ``column IN ('a', 'b')`` in a CHECK by building an ephemeral table on every row
written; the tables written in bulk (journal entries, postings, bill lines) get the same checks
as ``=``/``OR`` chains (``zhangfang.db.sql.one_of``). Reconciliation runs no longer write the
lines that agree (a line left "new" by its day's run is matched), so nothing looks lines up by run.

On SQLite the checks are rewritten in place, in the schema text, by the procedure SQLite documents
for changes that leave the stored rows valid (``PRAGMA writable_schema``, then a new
``schema_version``): no table is copied, and the journal's append-only triggers stay as they are.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 11:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# table -> constraint name (without the ck_<table>_ prefix) -> (IN list, =/OR chain)
CHECKS = {
    "ledger_entries": {
        "kind_valid": (
            "kind IN ('entry', 'reversal', 'hold', 'hold_post', 'hold_void', 'hold_expire')",
            "(kind = 'entry' OR kind = 'reversal' OR kind = 'hold' OR kind = 'hold_post' OR kind = 'hold_void' "
            "OR kind = 'hold_expire')",
        ),
    },
    "ledger_postings": {
        "side_valid": ("side IN ('debit', 'credit')", "(side = 'debit' OR side = 'credit')"),
        "effect_valid": (
            "effect IN ('posted', 'pending', 'release')",
            "(effect = 'posted' OR effect = 'pending' OR effect = 'release')",
        ),
    },
    "recon_bill_lines": {
        "kind_valid": (
            "kind IN ('payment', 'refund', 'credit', 'debit')",
            "(kind = 'payment' OR kind = 'refund' OR kind = 'credit' OR kind = 'debit')",
        ),
        "state_valid": (
            "state IN ('new', 'matched', 'carried', 'differs')",
            "(state = 'new' OR state = 'matched' OR state = 'carried' OR state = 'differs')",
        ),
    },
}


RUN_ID_COMMENTS = ("the run that matched it (recon_runs.id)", "the run that marked it (recon_runs.id), if one did")


def upgrade() -> None:
    op.drop_index("ix_recon_bill_lines_run", table_name="recon_bill_lines")
    _comment_run_id(*RUN_ID_COMMENTS)
    _rewrite_checks(new=True)


def downgrade() -> None:
    _rewrite_checks(new=False)
    _comment_run_id(*reversed(RUN_ID_COMMENTS))
    op.create_index("ix_recon_bill_lines_run", "recon_bill_lines", ["run_id"], unique=False)


def _comment_run_id(old: str, new: str) -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite keeps no comments
        op.alter_column("recon_bill_lines", "run_id", existing_type=sa.BigInteger(), comment=new, existing_comment=old)


def _rewrite_checks(*, new: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        for table, checks in CHECKS.items():
            for name, texts in checks.items():
                full_name = op.f(f"ck_{table}_{name}")
                op.drop_constraint(full_name, table, type_="check")
                op.create_check_constraint(full_name, table, texts[1] if new else texts[0])
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        for table, checks in CHECKS.items():
            sql = bind.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": table}
            ).scalar_one()
            for name, (listed, chained) in checks.items():
                old, replacement = (listed, chained) if new else (chained, listed)
                clause = f"CONSTRAINT ck_{table}_{name} CHECK ({old})"
                if sql.count(clause) != 1:
                    raise RuntimeError(f"{table}: the check {name} is not the one migration 0011 expects: {sql}")
                sql = sql.replace(clause, f"CONSTRAINT ck_{table}_{name} CHECK ({replacement})")
            bind.execute(
                sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :name"),
                {"sql": sql, "name": table},
            )
        bind.exec_driver_sql(f"PRAGMA schema_version={version + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")
