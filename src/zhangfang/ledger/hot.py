"""Hot accounts (热点账户): postings are appended as deltas and folded into the balance later.

Accounts that nearly every entry touches (fee income, channel clearing) would
serialize all writers on one row lock. A hot account's row is never locked by
a writer: each batch appends one delta row per hot account to
``ledger_hot_deltas``; ``fold_hot_accounts`` moves committed deltas into the
balance row. Guarantees:

- The balance of a hot account is always ``row + Σ unfolded deltas``; reads
  do that sum in one statement, so they are exact at any time.
- Folding moves each delta exactly once: on PostgreSQL a single
  ``DELETE … RETURNING`` feeds the ``UPDATE`` (rows committed later are not
  seen), and folders hold the hot rows' locks, so they take turns; on SQLite
  the write lock makes read-sum-delete one atomic step.
- Only accounts without a balance constraint may be hot (a CHECK constraint),
  because a constraint cannot be kept on a balance that is folded later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.ledger.tables import accounts, hot_account_deltas

_BALANCE_COLUMNS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


def hot_delta_sums(account_ids: Sequence[int] | None = None) -> sa.Subquery:
    """Unfolded deltas summed per account, as a subquery to join onto accounts."""
    d = hot_account_deltas.c
    query = sa.select(d.account_id, *(sa.func.sum(d[name]).label(name) for name in _BALANCE_COLUMNS))
    if account_ids is not None:
        query = query.where(d.account_id.in_(account_ids))
    return query.group_by(d.account_id).subquery("hot_sums")


def fold_hot_accounts(conn: Connection, *, account_ids: Sequence[int] | None = None) -> int:
    """Fold committed deltas into hot accounts' balance rows; returns how many deltas it folded."""
    if conn.dialect.name == "postgresql":
        return _fold_postgres(conn, account_ids)
    return _fold_serialized(conn, account_ids)


def _fold_postgres(conn: Connection, account_ids: Sequence[int] | None) -> int:
    # Folders take the hot rows' locks first, in id order (writers never lock them): two folders
    # then run one after the other, and the UPDATE below starts from the latest balance row —
    # PostgreSQL checks constraints on the row as its snapshot saw it before re-reading a
    # concurrently updated one, which could refuse a correct fold.
    hot_rows = sa.select(accounts.c.id).where(accounts.c.hot).order_by(accounts.c.id).with_for_update()
    if account_ids is not None:
        hot_rows = hot_rows.where(accounts.c.id.in_(account_ids))
    conn.execute(hot_rows)
    d = hot_account_deltas
    delete = d.delete()
    if account_ids is not None:
        delete = delete.where(d.c.account_id.in_(account_ids))
    folded = delete.returning(d.c.account_id, *(d.c[name] for name in _BALANCE_COLUMNS)).cte("folded")
    sums = (
        sa.select(
            folded.c.account_id,
            sa.func.count().label("delta_count"),
            *(sa.func.sum(folded.c[name]).label(name) for name in _BALANCE_COLUMNS),
        )
        .group_by(folded.c.account_id)
        .cte("sums")
    )
    a = accounts.c
    update = (
        accounts.update()
        .where(a.id == sums.c.account_id)
        .values({a[name]: a[name] + sums.c[name] for name in _BALANCE_COLUMNS})
        .returning(sums.c.delta_count)
    )
    return sum(conn.execute(update).scalars())


def _fold_serialized(conn: Connection, account_ids: Sequence[int] | None) -> int:
    d = hot_account_deltas
    where = [] if account_ids is None else [d.c.account_id.in_(account_ids)]
    high = conn.execute(sa.select(sa.func.max(d.c.id)).where(*where)).scalar()
    if high is None:
        return 0
    rows = conn.execute(
        sa.select(
            d.c.account_id,
            sa.func.count().label("delta_count"),
            *(sa.func.sum(d.c[name]).label(name) for name in _BALANCE_COLUMNS),
        )
        .where(d.c.id <= high, *where)
        .group_by(d.c.account_id)
    ).all()
    a = accounts.c
    conn.execute(
        accounts.update()
        .where(a.id == sa.bindparam("account_id_"))
        .values({a[name]: a[name] + sa.bindparam(f"d_{name}") for name in _BALANCE_COLUMNS}),
        [{"account_id_": row.account_id, **{f"d_{n}": int(row._mapping[n]) for n in _BALANCE_COLUMNS}} for row in rows],
    )
    conn.execute(d.delete().where(d.c.id <= high, *where))
    return sum(row.delta_count for row in rows)
