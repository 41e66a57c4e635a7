"""bulk-written tables: closed sets checked with =/OR chains; recon bill lines lose their bill FK and run index

SQLite evaluates ``column IN ('a', 'b')`` in a CHECK by building an ephemeral table on every row
written; the tables written in bulk (journal entries, postings, bill lines) get the same checks
as ``=``/``OR`` chains (``zhangfang.db.sql.one_of``). PostgreSQL checks a foreign key with a query
per row, 2.5 s of a million-line bill's COPY: ``recon_bill_lines.bill_id`` keeps no FK (the
import writes a bill and its lines in one transaction; bills are never deleted). Reconciliation
runs no longer write the lines that agree (a line left "new" by its day's run is matched), so
nothing looks lines up by run.

On SQLite the schema text is edited in place, by the procedure SQLite documents for changes that
leave every stored row valid (``PRAGMA writable_schema``, then a new ``schema_version``): no table
is copied, and the journal's append-only triggers stay as they are.

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
BILL_FK = "fk_recon_bill_lines_bill_id_recon_bills"
BILL_FK_SQLITE = f", \n\tCONSTRAINT {BILL_FK} FOREIGN KEY(bill_id) REFERENCES recon_bills (id)"
COMMENTS = {  # recon_bill_lines column -> (before, after); SQLite keeps no comments
    "bill_id": (None, "recon_bills.id; no FK"),
    "run_id": ("the run that matched it (recon_runs.id)", "the run that marked it (recon_runs.id), if one did"),
}


def upgrade() -> None:
    op.drop_index("ix_recon_bill_lines_run", table_name="recon_bill_lines")
    if op.get_bind().dialect.name == "sqlite":
        _edit_sqlite_schema(new=True)
        return
    op.drop_constraint(BILL_FK, "recon_bill_lines", type_="foreignkey")
    _set_comments(new=True)
    _replace_checks(new=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _edit_sqlite_schema(new=False)
    else:
        _replace_checks(new=False)
        _set_comments(new=False)
        op.create_foreign_key(BILL_FK, "recon_bill_lines", "recon_bills", ["bill_id"], ["id"])
    op.create_index("ix_recon_bill_lines_run", "recon_bill_lines", ["run_id"], unique=False)


def _replace_checks(*, new: bool) -> None:
    for table, checks in CHECKS.items():
        for name, (listed, chained) in checks.items():
            full_name = op.f(f"ck_{table}_{name}")
            op.drop_constraint(full_name, table, type_="check")
            op.create_check_constraint(full_name, table, chained if new else listed)


def _set_comments(*, new: bool) -> None:
    for column, (before, after) in COMMENTS.items():
        op.alter_column(
            "recon_bill_lines",
            column,
            existing_type=sa.BigInteger(),
            comment=after if new else before,
            existing_comment=before if new else after,
        )


def _edit_sqlite_schema(*, new: bool) -> None:
    bind = op.get_bind()
    edits: dict[str, list[tuple[str, str]]] = {
        table: [
            (
                f"CONSTRAINT ck_{table}_{name} CHECK ({listed if new else chained})",
                f"CONSTRAINT ck_{table}_{name} CHECK ({chained if new else listed})",
            )
            for name, (listed, chained) in checks.items()
        ]
        for table, checks in CHECKS.items()
    }
    edits["recon_bill_lines"].append(
        (BILL_FK_SQLITE, "")
        if new
        else ("CHECK (amount > 0 AND fee >= 0)", "CHECK (amount > 0 AND fee >= 0)" + BILL_FK_SQLITE)
    )
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        for table, replacements in edits.items():
            sql = bind.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": table}
            ).scalar_one()
            for old, replacement in replacements:
                if sql.count(old) != 1:
                    raise RuntimeError(f"{table} is not the table migration 0011 expects (no {old!r}): {sql}")
                sql = sql.replace(old, replacement)
            bind.execute(
                sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :name"),
                {"sql": sql, "name": table},
            )
        bind.exec_driver_sql(f"PRAGMA schema_version={version + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")
