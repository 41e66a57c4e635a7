"""Booking the ledger's journal into vouchers (记账凭证), one closed ledger day at a time.

The cursor is the last booked day (``accounting_synced_days``). ``sync`` takes
the days the ledger has closed (日切) after it, oldest first, and books each in
one transaction:

1. claim the day (insert its ``accounting_synced_days`` row: a second sync of
   the same day fails on the primary key and rolls back, changing nothing);
2. sum the day's posted postings per business code, currency, account and side —
   one ``GROUP BY`` over the day's slice of the postings, in SQL, on integer keys,
   never row by row in Python — and map the few thousand sums to subjects and
   auxiliary values through the rules;
3. only if some sum has no rule: report every entry with a posted leg its
   template does not cover (``accounting_exceptions``: ``no_rule`` or
   ``leg_not_in_rule``) and sum again without them — such an entry is booked not
   at all rather than in part; then book:

   - ``summary`` mode (汇总凭证, the default): one voucher per business code and
     currency (reversals apart), a line per subject, auxiliary value and side;
   - ``entry`` mode: one voucher per entry and currency, a line per posting,
     written by ``INSERT … SELECT``;

4. number the vouchers in their period (记-YYYY-MM-NNNN), gapless, and record the
   day's counts and the digest of the rules that booked it.

Only posted amounts are booked: a hold (冻结) reserves funds without moving
them, so its pending legs and their release are not accounting events; the
posting of a hold is. A reversal (红冲) is booked by the template of the entry
it reverses, sides mirrored, on the reversal's own day.

Guarantees
- A ledger entry is booked at most once, and either whole or not at all.
- Every voucher balances: its debits equal its credits (asserted before commit).
- Days are booked in order and only once the ledger has closed them, so a
  day's vouchers are final: nothing can be dated to a booked day afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang import ids
from zhangfang.accounting import chart as chart_files
from zhangfang.accounting import errors
from zhangfang.accounting.models import SYSTEM_MAKER, Chart, Rules, SyncedDay, SyncMode
from zhangfang.accounting.periods import ensure_open_period, take_numbers
from zhangfang.accounting.tables import (
    exceptions,
    periods,
    rule_legs,
    rules,
    synced_days,
    voucher_lines,
    vouchers,
)
from zhangfang.db.sql import sum_minor
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger.tables import accounts, day_closes, journal_entries, postings

# work_mem of the transaction booking a day on PostgreSQL: a day's aggregation fits in memory, not on disk.
AGGREGATION_WORK_MEM = "256MB"

_entries = journal_entries.alias("e")
_postings = postings.alias("p")
_accounts = accounts.alias("a")
_legs = rule_legs.alias("r")

# The side a posting is matched against its template on: its own, or the mirror for a reversal.
_RULE_SIDE = sa.case(
    (
        _entries.c.kind == "reversal",
        sa.case((_postings.c.side == "debit", sa.literal("credit")), else_=sa.literal("debit")),
    ),
    else_=_postings.c.side,
)
_IS_REVERSAL = sa.case((_entries.c.kind == "reversal", sa.literal(1)), else_=sa.literal(0)).label("reversal")
# A day's reversals of a business code get a voucher of their own (红字冲销), summarized like the rest.
REVERSAL_PREFIX = "冲销 Reversal: "
_AUX = sa.case(
    (_legs.c.dimension.is_(None), sa.literal("")),
    (_legs.c.dimension_source == "account", _accounts.c.key),
    else_=sa.func.coalesce(_accounts.c.owner_ref, sa.literal("")),
)
_DAY_POSTINGS = _postings.join(_entries, _entries.c.id == _postings.c.entry_id).join(
    _accounts, _accounts.c.id == _postings.c.account_id
)
_MAPPED_POSTINGS = _DAY_POSTINGS.outerjoin(
    _legs,
    sa.and_(
        _legs.c.business_code == _entries.c.business_code,
        _legs.c.ledger_code == _accounts.c.ledger_code,
        _legs.c.side == _RULE_SIDE,
    ),
)


def _not_an_exception(entry_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    return ~sa.exists().where(exceptions.c.entry_id == entry_id)


@dataclass(frozen=True)
class SyncResult:
    """What one ``sync`` call booked: the days, in order."""

    days: tuple[SyncedDay, ...]

    @property
    def entry_count(self) -> int:
        return sum(day.entry_count for day in self.days)

    @property
    def exception_count(self) -> int:
        return sum(day.exception_count for day in self.days)

    @property
    def voucher_count(self) -> int:
        return sum(day.voucher_count for day in self.days)


def last_synced_date(conn: Connection) -> dt.date | None:
    """The cursor: the last ledger day booked into vouchers, or None before the first."""
    return conn.execute(sa.select(sa.func.max(synced_days.c.accounting_date))).scalar()


def _is_booked(conn: Connection, day: dt.date) -> bool:
    return (
        conn.execute(sa.select(synced_days.c.accounting_date).where(synced_days.c.accounting_date == day)).first()
        is not None
    )


def days_to_sync(conn: Connection, *, through: dt.date | None = None) -> list[dt.date]:
    """The ledger days closed after the cursor (up to ``through``), oldest first."""
    cursor = last_synced_date(conn)
    query = sa.select(day_closes.c.accounting_date).where(day_closes.c.state == "closed")
    if cursor is not None:
        query = query.where(day_closes.c.accounting_date > cursor)
    if through is not None:
        query = query.where(day_closes.c.accounting_date <= through)
    return list(conn.execute(query.order_by(day_closes.c.accounting_date)).scalars())


def sync(
    engine: Engine,
    *,
    chart: Chart | None = None,
    posting_rules: Rules | None = None,
    mode: SyncMode = "summary",
    through: dt.date | None = None,
    now: dt.datetime | None = None,
    on_day: Callable[[SyncedDay], None] | None = None,
) -> SyncResult:
    """Book every closed, unbooked ledger day (up to ``through``) into vouchers; see the module's guarantees.

    ``chart`` and ``posting_rules`` default to the configured files (both or neither); they are
    installed into the database first. ``on_day`` is called after each day commits
    (progress bars).
    """
    if mode not in ("summary", "entry"):
        raise errors.SyncModeInvalid(f"sync mode is summary or entry, not {mode!r}", field="mode")
    if chart is None or posting_rules is None:
        chart, posting_rules = chart_files.configured()
    run_in_transaction(engine, lambda conn: chart_files.install(conn, chart, posting_rules))
    booked: list[SyncedDay] = []
    for day in run_in_transaction(engine, lambda conn: days_to_sync(conn, through=through), readonly=True):
        try:
            synced = run_in_transaction(
                engine,
                lambda conn, day=day: book_day(conn, day, mode=mode, rules_hash=posting_rules.digest, now=now),
            )
        except sa.exc.IntegrityError:
            # Another worker claimed the day first (its accounting_synced_days row): it books it, not us.
            if not run_in_transaction(engine, lambda conn, day=day: _is_booked(conn, day), readonly=True):
                raise
            continue
        if synced is None:
            continue
        booked.append(synced)
        if on_day is not None:
            on_day(synced)
    return SyncResult(days=tuple(booked))


def book_day(
    conn: Connection, day: dt.date, *, mode: SyncMode, rules_hash: str, now: dt.datetime | None = None
) -> SyncedDay | None:
    """Book one closed ledger day in the caller's transaction (steps 1-4 of the module docstring).

    Returns None, writing nothing, when the cursor is already at or past the day (another
    worker booked it).
    """
    now = now or dt.datetime.now(dt.UTC)
    cursor = last_synced_date(conn)
    if cursor is not None and day <= cursor:
        return None
    conn.execute(
        synced_days.insert().values(
            accounting_date=day,
            mode=mode,
            entry_count=0,
            exception_count=0,
            voucher_count=0,
            rules_hash=rules_hash,
            synced_at=now,
        )
    )
    period = ensure_open_period(conn, day)
    entry_count = voucher_count = exception_count = 0
    first_id, last_id = conn.execute(
        sa.select(sa.func.min(journal_entries.c.id), sa.func.max(journal_entries.c.id)).where(
            journal_entries.c.accounting_date == day
        )
    ).one()
    if first_id is not None:
        _tune_for_aggregation(conn)
        scope = _Day(day, first_id, last_id, skip_exceptions=False)
        lines = conn.execute(_summary_lines(scope)).all()
        if any(line.subject_code is None for line in lines):  # some leg has no rule: find its entries
            exception_count = _report_exceptions(conn, scope, now)
            scope = dataclasses.replace(scope, skip_exceptions=True)
            lines = conn.execute(_summary_lines(scope)).all() if mode == "summary" else []
        if mode == "summary":
            entry_count, voucher_count = _book_summary(conn, scope, lines, period, now)
        else:
            entry_count, voucher_count = _book_entries(conn, scope, period, now)
    conn.execute(
        synced_days.update()
        .where(synced_days.c.accounting_date == day)
        .values(entry_count=entry_count, exception_count=exception_count, voucher_count=voucher_count)
    )
    return SyncedDay(day, mode, entry_count, exception_count, voucher_count, rules_hash, now)


@dataclass(frozen=True)
class _Day:
    """The day being booked, and what every query of it filters on."""

    date: dt.date
    first_id: int  # the day's entries' ids, lowest and highest
    last_id: int
    skip_exceptions: bool  # leave out the entries reported as exceptions

    def posted(self) -> sa.ColumnElement[bool]:
        """The day's posted postings (of booked entries)."""
        conditions = [
            _entries.c.accounting_date == self.date,
            # Implied by the join; it lets PostgreSQL read the day's slice of the postings' primary key
            # instead of the whole journal, so a day costs its own volume, not the ledger's history.
            _postings.c.entry_id.between(self.first_id, self.last_id),
            _postings.c.effect == "posted",
        ]
        if self.skip_exceptions:
            conditions.append(_not_an_exception(_postings.c.entry_id))
        return sa.and_(*conditions)


def _tune_for_aggregation(conn: Connection) -> None:
    """Room for one large aggregation in this transaction (PostgreSQL), helper threads for sorting (SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{AGGREGATION_WORK_MEM}'")
        conn.exec_driver_sql("SET LOCAL jit = off")  # compiling the plan costs more than it saves here
    else:
        conn.exec_driver_sql("PRAGMA threads = 2")


def _summary_lines(scope: _Day) -> sa.Select:
    """The day's postings summed per business code, reversal, currency, subject, auxiliary value and side.

    Summed per account first, on integer keys (the one pass over the postings); only the few
    thousand per-account sums are then joined with accounts and rules. A leg no rule covers comes
    out with a null subject.
    """
    by_account = (
        sa.select(
            _entries.c.business_code,
            _IS_REVERSAL,
            _postings.c.currency,
            _postings.c.account_id,
            _postings.c.side,
            sum_minor(_postings.c.amount).label("amount"),
        )
        .select_from(_postings.join(_entries, _entries.c.id == _postings.c.entry_id))
        .where(scope.posted())
        .group_by(
            _entries.c.business_code, _IS_REVERSAL, _postings.c.currency, _postings.c.account_id, _postings.c.side
        )
        .subquery("d")
    )
    d, a, r = by_account, accounts.alias("a2"), rule_legs.alias("r2")
    mirrored = sa.case((d.c.side == "debit", sa.literal("credit")), else_=sa.literal("debit"))
    aux = sa.case(
        (r.c.dimension.is_(None), sa.literal("")),
        (r.c.dimension_source == "account", a.c.key),
        else_=sa.func.coalesce(a.c.owner_ref, sa.literal("")),
    )
    return (
        sa.select(
            d.c.business_code,
            d.c.reversal,
            d.c.currency,
            r.c.subject_code,
            r.c.dimension,
            aux.label("aux"),
            d.c.side,
            sum_minor(d.c.amount).label("amount"),
        )
        .select_from(
            d.join(a, a.c.id == d.c.account_id).outerjoin(
                r,
                sa.and_(
                    r.c.business_code == d.c.business_code,
                    r.c.ledger_code == a.c.ledger_code,
                    r.c.side == sa.case((d.c.reversal == 1, mirrored), else_=d.c.side),
                ),
            )
        )
        .group_by(d.c.business_code, d.c.reversal, d.c.currency, r.c.subject_code, r.c.dimension, aux, d.c.side)
    )


def _report_exceptions(conn: Connection, scope: _Day, now: dt.datetime) -> int:
    uncovered = (
        sa.select(_postings.c.entry_id)
        .select_from(_MAPPED_POSTINGS)
        .where(scope.posted(), _legs.c.business_code.is_(None))
        .distinct()
    )
    e = journal_entries
    has_rule = sa.exists().where(rules.c.business_code == e.c.business_code)
    conn.execute(
        exceptions.insert().from_select(
            ["entry_id", "accounting_date", "business_code", "reason", "detected_at"],
            sa.select(
                e.c.id,
                e.c.accounting_date,
                e.c.business_code,
                sa.case((has_rule, sa.literal("leg_not_in_rule")), else_=sa.literal("no_rule")),
                sa.literal(now, type_=exceptions.c.detected_at.type),
            ).where(e.c.id.in_(uncovered)),
        )
    )
    # Counted, not taken from rowcount: drivers do not all report it for INSERT … SELECT.
    return conn.execute(
        sa.select(sa.func.count()).select_from(exceptions).where(exceptions.c.accounting_date == scope.date)
    ).scalar_one()


def _book_summary(
    conn: Connection, scope: _Day, grouped: Sequence[sa.Row], period: str, now: dt.datetime
) -> tuple[int, int]:
    if not grouped:
        return 0, 0
    counts = _entry_counts(conn, scope, {row.currency for row in grouped})
    lines_by_voucher: dict[tuple[str, bool, str], list[sa.Row]] = defaultdict(list)
    for row in grouped:
        lines_by_voucher[(row.business_code, bool(row.reversal), row.currency)].append(row)
    summaries = dict(conn.execute(sa.select(rules.c.business_code, rules.c.summary)).all())
    first_number = take_numbers(conn, period, len(lines_by_voucher))
    day = scope.date
    for offset, ((business_code, reversal, currency), rows) in enumerate(sorted(lines_by_voucher.items())):
        rows.sort(key=lambda row: (row.side != "debit", row.subject_code, row.aux))
        debits = sum(row.amount for row in rows if row.side == "debit")
        credits = sum(row.amount for row in rows if row.side == "credit")
        if debits != credits:  # the journal balances per currency and every leg is mapped: cannot happen
            raise AssertionError(f"{day} {business_code} {currency}: voucher debits {debits} != credits {credits}")
        voucher_id = conn.execute(
            vouchers.insert()
            .values(
                ref=ids.new_id("vch"),
                source_key=f"summary:{day.isoformat()}:{business_code}{':reversal' if reversal else ''}:{currency}",
                kind="summary",
                state="posted",
                period=period,
                number=first_number + offset,
                voucher_date=day,
                currency=currency,
                business_code=business_code,
                summary=f"{REVERSAL_PREFIX}{summaries[business_code]}" if reversal else summaries[business_code],
                entry_count=counts[(business_code, reversal, currency)],
                total=debits,
                maker=SYSTEM_MAKER,
                created_at=now,
                posted_at=now,
            )
            .returning(vouchers.c.id)
        ).scalar_one()
        conn.execute(
            voucher_lines.insert(),
            [
                {
                    "voucher_id": voucher_id,
                    "line_no": line_no,
                    "subject_code": row.subject_code,
                    "dimension": row.dimension,
                    "aux": row.aux,
                    "debit": row.amount if row.side == "debit" else 0,
                    "credit": row.amount if row.side == "credit" else 0,
                }
                for line_no, row in enumerate(rows, start=1)
            ],
        )
    return sum(counts.values()), len(lines_by_voucher)


def _entry_counts(conn: Connection, scope: _Day, currencies: set[str]) -> dict[tuple[str, bool, str], int]:
    """Booked entries per business code, reversal and currency: counted on the entries, not the postings."""
    currency = sa.union_all(
        *(sa.select(sa.literal(code, sa.String).label("currency")) for code in sorted(currencies))
    ).subquery("c")
    conditions = [
        _entries.c.accounting_date == scope.date,
        _entries.c.id.between(scope.first_id, scope.last_id),
        sa.exists().where(
            postings.c.entry_id == _entries.c.id,
            postings.c.currency == currency.c.currency,
            postings.c.effect == "posted",
        ),
    ]
    if scope.skip_exceptions:
        conditions.append(_not_an_exception(_entries.c.id))
    rows = conn.execute(
        sa.select(_entries.c.business_code, _IS_REVERSAL, currency.c.currency, sa.func.count().label("entries"))
        .select_from(_entries.join(currency, sa.true()))
        .where(*conditions)
        .group_by(_entries.c.business_code, _IS_REVERSAL, currency.c.currency)
    ).all()
    return {(row.business_code, bool(row.reversal), row.currency): row.entries for row in rows}


def _book_entries(conn: Connection, scope: _Day, period: str, now: dt.datetime) -> tuple[int, int]:
    booked, day = scope.posted(), scope.date
    per_voucher = (
        sa.select(
            _postings.c.entry_id,
            _postings.c.currency,
            sum_minor(sa.case((_postings.c.side == "debit", _postings.c.amount), else_=0)).label("total"),
        )
        .select_from(_postings.join(_entries, _entries.c.id == _postings.c.entry_id))
        .where(booked)
        .group_by(_postings.c.entry_id, _postings.c.currency)
        .subquery("v")
    )
    # Numbered from the period's next number (locked by ensure_open_period); the count is taken after.
    first_number = conn.execute(sa.select(periods.c.next_number).where(periods.c.period == period)).scalar_one()
    e = journal_entries
    number = sa.func.row_number().over(order_by=(per_voucher.c.entry_id, per_voucher.c.currency))
    conn.execute(
        vouchers.insert().from_select(
            [
                "ref",
                "source_key",
                "kind",
                "state",
                "period",
                "number",
                "voucher_date",
                "currency",
                "business_code",
                "source_entry_id",
                "summary",
                "entry_count",
                "total",
                "maker",
                "created_at",
                "posted_at",
            ],
            sa.select(
                # The entry's ULID under the voucher prefix (plus the currency): unique, and it reads back to the entry.
                (sa.literal("vch_") + sa.func.substr(e.c.ref, 4) + sa.literal("_") + per_voucher.c.currency),
                (
                    sa.literal("entry:")
                    + sa.cast(per_voucher.c.entry_id, sa.String)
                    + sa.literal(":")
                    + per_voucher.c.currency
                ),
                sa.literal("entry"),
                sa.literal("posted"),
                sa.literal(period),
                sa.literal(first_number - 1) + number,
                sa.literal(day, type_=sa.Date),
                per_voucher.c.currency,
                e.c.business_code,
                per_voucher.c.entry_id,
                sa.case((e.c.kind == "reversal", sa.literal(REVERSAL_PREFIX) + rules.c.summary), else_=rules.c.summary),
                sa.literal(1),
                per_voucher.c.total,
                sa.literal(SYSTEM_MAKER),
                sa.literal(now, type_=vouchers.c.created_at.type),
                sa.literal(now, type_=vouchers.c.posted_at.type),
            )
            .select_from(per_voucher.join(e, e.c.id == per_voucher.c.entry_id))
            .join(rules, rules.c.business_code == e.c.business_code),
        )
    )
    v = vouchers.alias("v")
    conn.execute(
        voucher_lines.insert().from_select(
            ["voucher_id", "line_no", "subject_code", "dimension", "aux", "debit", "credit"],
            sa.select(
                v.c.id,
                _postings.c.seq,
                _legs.c.subject_code,
                _legs.c.dimension,
                _AUX,
                sa.case((_postings.c.side == "debit", _postings.c.amount), else_=0),
                sa.case((_postings.c.side == "credit", _postings.c.amount), else_=0),
            )
            .select_from(
                _MAPPED_POSTINGS.join(
                    v,
                    sa.and_(
                        v.c.source_entry_id == _postings.c.entry_id,
                        v.c.currency == _postings.c.currency,
                        v.c.voucher_date == day,
                    ),
                )
            )
            .where(booked),
        )
    )
    written = vouchers.c.voucher_date == day, vouchers.c.kind == "entry"
    count, entry_count = conn.execute(
        sa.select(sa.func.count(), sa.func.count(sa.distinct(vouchers.c.source_entry_id))).where(*written)
    ).one()
    take_numbers(conn, period, count)
    return entry_count, count
