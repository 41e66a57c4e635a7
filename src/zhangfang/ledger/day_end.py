"""Day-end (日切): close an accounting date and snapshot every account's balance for it.

Every entry carries the accounting date that was open when it was written
(``ledger_clock.open_date``, read inside the writing transaction). Closing
date D runs in three steps, each safe to repeat after a crash:

1. switch: in one transaction, check D is the open date, move the clock to
   D+1 and record D as ``switched``. New entries now carry D+1.
2. drain: wait until no transaction that might still write a D-dated entry is
   open. On SQLite there is nothing to wait for (one writer at a time, the
   clock read inside it). On PostgreSQL we wait until every transaction that
   began before the switch has ended (``pg_stat_activity.xact_start``), at
   most ``transaction_age_max_seconds``; past that, ``day_end_blocked``.
3. snapshot: balance(D) = balance(previous closed date) + Σ postings dated D,
   for every account, in one ``INSERT … SELECT``; then D is ``closed``.

Guarantees
- Dates close in order, one after another; closing a closed date returns the
  same close again (idempotent).
- Per currency, the snapshot's total debits equal its total credits (asserted).

Day-end owns its transactions (it must wait between them), so it takes an
``Engine`` rather than a connection.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import errors
from zhangfang.ledger.models import Balance, DayClose
from zhangfang.ledger.tables import (
    account_day_balances,
    accounts,
    day_closes,
    journal_entries,
    ledger_clock,
    postings,
)


def open_date(conn: Connection) -> dt.date:
    """The accounting date that entries written now carry."""
    return conn.execute(sa.select(ledger_clock.c.open_date).where(ledger_clock.c.id == 1)).scalar_one()


def _close_from_row(row: Any) -> DayClose:
    return DayClose(
        accounting_date=row.accounting_date,
        state=row.state,
        switched_at=row.switched_at,
        closed_at=row.closed_at,
        entry_count=row.entry_count,
        account_count=row.account_count,
    )


def get_day_close(conn: Connection, *, accounting_date: dt.date) -> DayClose | None:
    """The close record of a date, or None while it is open or in the future."""
    row = conn.execute(sa.select(day_closes).where(day_closes.c.accounting_date == accounting_date)).first()
    return _close_from_row(row) if row else None


def list_day_closes(conn: Connection, *, limit: int = 31) -> list[DayClose]:
    """The most recent closes, newest first."""
    rows = conn.execute(sa.select(day_closes).order_by(day_closes.c.accounting_date.desc()).limit(limit)).all()
    return [_close_from_row(row) for row in rows]


def close_day(
    engine: Engine,
    *,
    accounting_date: dt.date,
    wait_seconds_max: float = 60.0,
    now: dt.datetime | None = None,
) -> DayClose:
    """Close ``accounting_date`` (which must be the open date, or already closing) and snapshot balances."""
    if not isinstance(accounting_date, dt.date) or isinstance(accounting_date, dt.datetime):
        raise errors.DayEndOutOfOrder("accounting_date must be a date", field="accounting_date")
    switched = run_in_transaction(engine, lambda conn: _switch(conn, accounting_date, now))
    if switched.state == "closed":
        return switched
    if engine.dialect.name == "postgresql":
        _drain_postgres(engine, switched.switched_at, wait_seconds_max)
    return run_in_transaction(engine, lambda conn: _snapshot(conn, accounting_date, now))


def _switch(conn: Connection, accounting_date: dt.date, now: dt.datetime | None) -> DayClose:
    current = conn.execute(
        sa.select(ledger_clock.c.open_date).where(ledger_clock.c.id == 1).with_for_update()
    ).scalar_one()
    existing = get_day_close(conn, accounting_date=accounting_date)
    if existing is not None:
        return existing
    if accounting_date != current:
        raise errors.DayEndOutOfOrder(
            f"the open accounting date is {current.isoformat()}; only it can be closed",
            field="accounting_date",
            open_date=current.isoformat(),
        )
    switched_at = now or _database_now(conn)
    conn.execute(
        ledger_clock.update().where(ledger_clock.c.id == 1).values(open_date=accounting_date + dt.timedelta(days=1))
    )
    conn.execute(day_closes.insert().values(accounting_date=accounting_date, state="switched", switched_at=switched_at))
    return get_day_close(conn, accounting_date=accounting_date)  # type: ignore[return-value]


def _database_now(conn: Connection) -> dt.datetime:
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    return dt.datetime.now(dt.UTC)


def _drain_postgres(engine: Engine, switched_at: dt.datetime, wait_seconds_max: float) -> None:
    """Wait for every transaction that began before the switch (it may hold a D-dated entry)."""
    deadline = time.monotonic() + wait_seconds_max
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND xact_start IS NOT NULL AND xact_start < :switched_at"
    )
    with engine.connect() as conn:
        while True:
            older = conn.execute(query, {"switched_at": switched_at}).scalar_one()
            conn.rollback()
            if older == 0:
                return
            if time.monotonic() > deadline:
                raise errors.DayEndBlocked(
                    f"{older} transaction(s) begun before the switch are still open; retry day-end later",
                    field="accounting_date",
                )
            time.sleep(0.05)


_DAY_SUMS = {
    "debits_posted": ("debit", {"posted": 1}),
    "credits_posted": ("credit", {"posted": 1}),
    "debits_pending": ("debit", {"pending": 1, "release": -1}),
    "credits_pending": ("credit", {"pending": 1, "release": -1}),
}


def _snapshot(conn: Connection, accounting_date: dt.date, now: dt.datetime | None) -> DayClose:
    close = conn.execute(
        sa.select(day_closes).where(day_closes.c.accounting_date == accounting_date).with_for_update()
    ).one()
    if close.state == "closed":
        return _close_from_row(close)
    previous = conn.execute(
        sa.select(sa.func.max(day_closes.c.accounting_date)).where(
            day_closes.c.accounting_date < accounting_date, day_closes.c.state == "closed"
        )
    ).scalar()
    p, e = postings, journal_entries
    day = (
        sa.select(
            p.c.account_id,
            *(
                sa.func.sum(
                    sa.case(
                        *(
                            (sa.and_(p.c.side == side, p.c.effect == effect), p.c.amount * sign)
                            for effect, sign in effects.items()
                        ),
                        else_=0,
                    )
                ).label(name)
                for name, (side, effects) in _DAY_SUMS.items()
            ),
        )
        .join(e, e.c.id == p.c.entry_id)
        .where(e.c.accounting_date == accounting_date)
        .group_by(p.c.account_id)
        .subquery("day")
    )
    prev = account_day_balances.alias("prev")
    a = accounts.c
    source = sa.select(
        a.id,
        sa.literal(accounting_date, sa.Date),
        *((sa.func.coalesce(prev.c[name], 0) + sa.func.coalesce(day.c[name], 0)).label(name) for name in _DAY_SUMS),
    ).select_from(
        accounts.outerjoin(prev, sa.and_(prev.c.account_id == a.id, prev.c.accounting_date == previous)).outerjoin(
            day, day.c.account_id == a.id
        )
    )
    conn.execute(account_day_balances.insert().from_select(["account_id", "accounting_date", *_DAY_SUMS], source))
    _assert_snapshot_balanced(conn, accounting_date)
    counts = conn.execute(
        sa.select(
            sa.select(sa.func.count()).where(e.c.accounting_date == accounting_date).scalar_subquery(),
            sa.select(sa.func.count())
            .where(account_day_balances.c.accounting_date == accounting_date)
            .scalar_subquery(),
        )
    ).one()
    conn.execute(
        day_closes.update()
        .where(day_closes.c.accounting_date == accounting_date)
        .values(
            state="closed",
            closed_at=now or _database_now(conn),
            entry_count=counts[0],
            account_count=counts[1],
        )
    )
    return get_day_close(conn, accounting_date=accounting_date)  # type: ignore[return-value]


def _assert_snapshot_balanced(conn: Connection, accounting_date: dt.date) -> None:
    b, a = account_day_balances, accounts
    rows = conn.execute(
        sa.select(
            a.c.currency,
            sa.func.sum(b.c.debits_posted - b.c.credits_posted),
            sa.func.sum(b.c.debits_pending - b.c.credits_pending),
        )
        .join(a, a.c.id == b.c.account_id)
        .where(b.c.accounting_date == accounting_date)
        .group_by(a.c.currency)
    ).all()
    assert all(int(posted) == 0 and int(pending) == 0 for _, posted, pending in rows), (
        f"day-end snapshot of {accounting_date} does not balance: {rows}"
    )


def day_balances(
    conn: Connection,
    *,
    account_id: int,
    currency: str,
    normal_side: str,
    date_from: dt.date,
    date_to: dt.date,
) -> list[tuple[dt.date, Balance]]:
    """Closing balances of an account for each closed date in the range (from day-end snapshots)."""
    b = account_day_balances
    rows = conn.execute(
        sa.select(b)
        .where(b.c.account_id == account_id, b.c.accounting_date.between(date_from, date_to))
        .order_by(b.c.accounting_date)
    ).all()
    return [
        (
            row.accounting_date,
            Balance(
                currency=currency,
                normal_side=normal_side,
                debits_posted=row.debits_posted,
                credits_posted=row.credits_posted,
                debits_pending=row.debits_pending,
                credits_pending=row.credits_pending,
            ),
        )
        for row in rows
    ]
