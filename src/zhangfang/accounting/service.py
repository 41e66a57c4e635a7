"""The accounting system's operations: vouchers, maker-checker, periods, and reading them back.

Booking the ledger into vouchers is ``sync.py``; reports and 账账核对 are
``reports.py``. Everything here takes a connection in the caller's transaction.

Guarantees
- A manual voucher (手工凭证) is posted only when a second person approves it: its
  maker cannot (``maker_cannot_approve``; the database refuses it too).
- Submitting the same manual voucher under the same key returns the first one;
  another voucher under that key is ``voucher_key_conflict``.
- A voucher is numbered when it is posted, in its period, without gaps; once
  posted it never changes (triggers refuse it).
- A closed period takes no voucher (``period_closed``); periods close in order,
  only when every ledger day of the period is booked, no voucher of it awaits
  approval, and its trial balance balances. Closing December (年结) first posts
  the year's closing voucher (结转损益): every income and expense subject's
  balance into 本年利润, and 本年利润 into 未分配利润.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang import ids, money
from zhangfang.accounting import errors, reports
from zhangfang.accounting.models import (
    SYSTEM_MAKER,
    AccountingException,
    ManualVoucherRequest,
    Period,
    SyncedDay,
    Voucher,
    VoucherLine,
)
from zhangfang.accounting.periods import ensure_open_period, parse_period, period_of, take_numbers
from zhangfang.accounting.sync import last_synced_date
from zhangfang.accounting.tables import (
    exceptions,
    periods,
    subjects,
    synced_days,
    voucher_lines,
    vouchers,
)
from zhangfang.db.sql import request_digest, sum_minor
from zhangfang.ledger.tables import day_closes, journal_entries

OPERATOR = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
DIMENSION = re.compile(r"[a-z][a-z0-9_]{0,19}")
AMOUNT_MAX = 10**17  # far above any real voucher, far below the 64-bit column

# Where the year's closing voucher (结转损益) carries profit: 本年利润, then 未分配利润.
CURRENT_YEAR_PROFIT = "4103"
UNDISTRIBUTED_PROFIT = "410401"


def check_operator(name: object, *, field: str) -> str:
    """An operator's name as given (maker, checker): 1 to 64 printable characters."""
    if not isinstance(name, str) or not OPERATOR.fullmatch(name) or not name.strip():
        raise errors.OperatorInvalid(f"{field} must be 1 to 64 printable characters naming a person", field=field)
    return name


def _validate_manual(conn: Connection, request: ManualVoucherRequest) -> None:
    check_operator(request.maker, field="maker")
    if not isinstance(request.idempotency_key, str) or not IDEMPOTENCY_KEY.fullmatch(request.idempotency_key):
        raise errors.IdempotencyKeyInvalid(
            "idempotency_key must be 1 to 200 printable ASCII characters", field="idempotency_key"
        )
    if not isinstance(request.voucher_date, dt.date) or isinstance(request.voucher_date, dt.datetime):
        raise errors.VoucherDateInvalid("voucher_date must be a date (YYYY-MM-DD)", field="voucher_date")
    money.currency(request.currency)  # currency_unknown
    if not isinstance(request.summary, str) or not request.summary.strip() or len(request.summary) > 200:
        raise errors.VoucherSummaryInvalid("summary must be 1 to 200 characters", field="summary")
    if len(request.lines) < 2:
        raise errors.VoucherLinesTooFew("a voucher needs at least two lines", field="lines")
    for index, line in enumerate(request.lines):
        amounts = (line.debit, line.credit)
        if (
            any(type(amount) is not int for amount in amounts)
            or min(amounts) < 0
            or (line.debit > 0) == (line.credit > 0)
            or max(amounts) > AMOUNT_MAX
        ):
            raise errors.VoucherLineInvalid(
                f"line {index + 1}: exactly one of debit and credit is a positive integer of the minor unit",
                field=f"lines[{index}]",
            )
        if line.dimension is not None and not (isinstance(line.dimension, str) and DIMENSION.fullmatch(line.dimension)):
            raise errors.VoucherLineInvalid(
                f"line {index + 1}: a dimension is a lowercase name of at most 20 characters", field=f"lines[{index}]"
            )
        if not isinstance(line.aux, str) or len(line.aux) > 200:
            raise errors.VoucherLineInvalid(
                f"line {index + 1}: an auxiliary value is at most 200 characters", field=f"lines[{index}]"
            )
    debits = sum(line.debit for line in request.lines)
    credits = sum(line.credit for line in request.lines)
    if max(debits, credits) > AMOUNT_MAX:
        raise errors.VoucherLineInvalid(f"a voucher's total is at most {AMOUNT_MAX} minor units", field="lines")
    if debits != credits:
        raise errors.VoucherMustBalance(
            f"debits {money.format_minor(debits, request.currency)} differ from credits "
            f"{money.format_minor(credits, request.currency)}",
            field="lines",
        )
    known = {
        row.code: row.leaf
        for row in conn.execute(
            sa.select(subjects.c.code, subjects.c.leaf).where(
                subjects.c.code.in_({line.subject_code for line in request.lines})
            )
        )
    }
    for index, line in enumerate(request.lines):
        if line.subject_code not in known:
            raise errors.SubjectNotFound(f"no subject {line.subject_code!r} in the chart", field=f"lines[{index}]")
        if not known[line.subject_code]:
            raise errors.SubjectNotLeaf(
                f"subject {line.subject_code} has sub-subjects; book to one of them", field=f"lines[{index}]"
            )


def submit_manual_voucher(
    conn: Connection, *, request: ManualVoucherRequest, now: dt.datetime | None = None
) -> tuple[Voucher, bool]:
    """Record a maker's voucher, pending a second person's approval; returns it and whether it is new."""
    _validate_manual(conn, request)
    digest = request_digest(
        {
            "voucher_date": request.voucher_date.isoformat(),
            "currency": request.currency,
            "summary": request.summary,
            "maker": request.maker,
            "lines": [[line.subject_code, line.debit, line.credit, line.dimension, line.aux] for line in request.lines],
        }
    )
    source_key = f"manual:{request.idempotency_key}"
    existing = conn.execute(sa.select(vouchers).where(vouchers.c.source_key == source_key)).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.VoucherKeyConflict(
                f"idempotency key {request.idempotency_key!r} was used for another voucher", field="idempotency_key"
            )
        return _load(conn, existing), False
    ensure_open_period(conn, request.voucher_date)
    now = now or dt.datetime.now(dt.UTC)
    voucher_id = conn.execute(
        vouchers.insert()
        .values(
            ref=ids.new_id("vch"),
            source_key=source_key,
            request_hash=digest,
            kind="manual",
            state="pending",
            period=period_of(request.voucher_date),
            voucher_date=request.voucher_date,
            currency=request.currency,
            summary=request.summary.strip(),
            entry_count=0,
            total=sum(line.debit for line in request.lines),
            maker=request.maker,
            created_at=now,
        )
        .returning(vouchers.c.id)
    ).scalar_one()
    _insert_lines(conn, voucher_id, request.lines)
    return get_voucher_by_id(conn, voucher_id), True


def _insert_lines(conn: Connection, voucher_id: int, lines: tuple[VoucherLine, ...]) -> None:
    conn.execute(
        voucher_lines.insert(),
        [
            {
                "voucher_id": voucher_id,
                "line_no": line_no,
                "subject_code": line.subject_code,
                "dimension": line.dimension,
                "aux": line.aux,
                "debit": line.debit,
                "credit": line.credit,
            }
            for line_no, line in enumerate(lines, start=1)
        ],
    )


def _locked(conn: Connection, ref: str) -> Any:
    row = conn.execute(sa.select(vouchers).where(vouchers.c.ref == ref).with_for_update()).first()
    if row is None:
        raise errors.VoucherNotFound(f"no voucher {ref!r}", field="ref")
    return row


def approve_voucher(conn: Connection, *, ref: str, checker: str, now: dt.datetime | None = None) -> Voucher:
    """Post a pending manual voucher as its checker (a person other than its maker); numbers it."""
    check_operator(checker, field="checker")
    row = _locked(conn, ref)
    if row.state == "posted" and row.checker == checker:
        return _load(conn, row)  # a retried approval
    if row.state != "pending":
        raise errors.VoucherNotPending(f"voucher {ref} is {row.state}, not pending approval", state=row.state)
    if row.maker == checker:
        raise errors.MakerCannotApprove(
            f"{checker} made voucher {ref}; a second person must approve it (maker-checker)", field="checker"
        )
    period = ensure_open_period(conn, row.voucher_date)
    number = take_numbers(conn, period, 1)
    conn.execute(
        vouchers.update()
        .where(vouchers.c.id == row.id)
        .values(state="posted", checker=checker, number=number, posted_at=now or dt.datetime.now(dt.UTC))
    )
    return get_voucher_by_id(conn, row.id)


def reject_voucher(conn: Connection, *, ref: str, checker: str, reason: str) -> Voucher:
    """Refuse a pending manual voucher, with the reason; it is kept, never posted."""
    check_operator(checker, field="checker")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
        raise errors.VoucherSummaryInvalid("a rejection needs a reason of 1 to 200 characters", field="reason")
    row = _locked(conn, ref)
    if row.state != "pending":
        raise errors.VoucherNotPending(f"voucher {ref} is {row.state}, not pending approval", state=row.state)
    if row.maker == checker:
        raise errors.MakerCannotApprove(f"{checker} made voucher {ref}; a second person reviews it", field="checker")
    conn.execute(
        vouchers.update()
        .where(vouchers.c.id == row.id)
        .values(state="rejected", checker=checker, rejected_reason=reason.strip())
    )
    return get_voucher_by_id(conn, row.id)


# ---- reading vouchers ---------------------------------------------------------------------------


def _load(conn: Connection, row: Any) -> Voucher:
    lines = conn.execute(
        sa.select(voucher_lines).where(voucher_lines.c.voucher_id == row.id).order_by(voucher_lines.c.line_no)
    ).all()
    entry_ref = None
    if row.source_entry_id is not None:
        entry_ref = conn.execute(
            sa.select(journal_entries.c.ref).where(journal_entries.c.id == row.source_entry_id)
        ).scalar_one()
    return Voucher(
        ref=row.ref,
        kind=row.kind,
        state=row.state,
        period=row.period,
        number=row.number,
        voucher_date=row.voucher_date,
        currency=row.currency,
        business_code=row.business_code,
        summary=row.summary,
        entry_count=row.entry_count,
        total=row.total,
        maker=row.maker,
        checker=row.checker,
        created_at=row.created_at,
        posted_at=row.posted_at,
        rejected_reason=row.rejected_reason,
        source_entry_ref=entry_ref,
        lines=tuple(
            VoucherLine(
                subject_code=line.subject_code,
                debit=line.debit,
                credit=line.credit,
                dimension=line.dimension,
                aux=line.aux,
            )
            for line in lines
        ),
    )


def get_voucher_by_id(conn: Connection, voucher_id: int) -> Voucher:
    return _load(conn, conn.execute(sa.select(vouchers).where(vouchers.c.id == voucher_id)).one())


def get_voucher(conn: Connection, *, ref: str) -> Voucher:
    """A voucher and its lines, by ref (vch_…) or by label (记-2026-11-0001)."""
    query = sa.select(vouchers)
    label = re.fullmatch(r"记-(\d{4}-\d{2})-(\d+)", ref)
    if label:
        query = query.where(vouchers.c.period == label[1], vouchers.c.number == int(label[2]))
    else:
        query = query.where(vouchers.c.ref == ref)
    row = conn.execute(query).first()
    if row is None:
        raise errors.VoucherNotFound(f"no voucher {ref!r}", field="ref")
    return _load(conn, row)


def list_vouchers(
    conn: Connection,
    *,
    period: str | None = None,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[Voucher]:
    """Vouchers in creation order, filtered; ``after_id`` pages on (keyset)."""
    query = sa.select(vouchers).order_by(vouchers.c.id).limit(limit)
    if period is not None:
        parse_period(period)
        query = query.where(vouchers.c.period == period)
    if state is not None:
        query = query.where(vouchers.c.state == state)
    if kind is not None:
        query = query.where(vouchers.c.kind == kind)
    if after_id is not None:
        query = query.where(vouchers.c.id > after_id)
    return [_load(conn, row) for row in conn.execute(query)]


def voucher_id_of(conn: Connection, ref: str) -> int | None:
    return conn.execute(sa.select(vouchers.c.id).where(vouchers.c.ref == ref)).scalar()


def list_exceptions(conn: Connection, *, limit: int = 100) -> list[AccountingException]:
    """Ledger entries not booked because no rule covers them, oldest first."""
    rows = conn.execute(
        sa.select(exceptions, journal_entries.c.ref)
        .join(journal_entries, journal_entries.c.id == exceptions.c.entry_id)
        .order_by(exceptions.c.entry_id)
        .limit(limit)
    ).all()
    return [
        AccountingException(
            entry_ref=row.ref,
            accounting_date=row.accounting_date,
            business_code=row.business_code,
            reason=row.reason,
            detected_at=row.detected_at,
        )
        for row in rows
    ]


def list_synced_days(conn: Connection, *, limit: int = 31) -> list[SyncedDay]:
    """The most recently booked ledger days, newest first."""
    rows = conn.execute(sa.select(synced_days).order_by(synced_days.c.accounting_date.desc()).limit(limit)).all()
    return [
        SyncedDay(
            accounting_date=row.accounting_date,
            mode=row.mode,
            entry_count=row.entry_count,
            exception_count=row.exception_count,
            voucher_count=row.voucher_count,
            rules_hash=row.rules_hash,
            synced_at=row.synced_at,
        )
        for row in rows
    ]


# ---- periods ------------------------------------------------------------------------------------


def _period_from_row(row: Any) -> Period:
    return Period(
        period=row.period,
        state=row.state,
        next_number=row.next_number,
        closed_at=row.closed_at,
        closed_by=row.closed_by,
    )


def list_periods(conn: Connection) -> list[Period]:
    """Every period accounting has used, oldest first."""
    return [_period_from_row(row) for row in conn.execute(sa.select(periods).order_by(periods.c.period))]


def close_period(conn: Connection, *, period: str, operator: str, now: dt.datetime | None = None) -> Period:
    """Close (lock) a period — 月结, and 年结 for December; see the module's guarantees."""
    check_operator(operator, field="operator")
    first_day, last_day = parse_period(period)
    row = conn.execute(sa.select(periods).where(periods.c.period == period).with_for_update()).first()
    if row is not None and row.state == "closed":
        return _period_from_row(row)
    earlier_open = conn.execute(
        sa.select(periods.c.period)
        .where(periods.c.period < period, periods.c.state == "open")
        .order_by(periods.c.period)
    ).first()
    if earlier_open is not None:
        raise errors.PeriodOutOfOrder(f"period {earlier_open.period} is still open; close it first")
    cursor = last_synced_date(conn)
    if cursor is None or cursor < last_day:
        raise errors.PeriodNotSynced(
            f"the ledger's days up to {last_day} must be closed and booked first "
            f"(booked through {cursor or 'no day yet'}; run `zhangfang accounting sync`)",
            booked_through=cursor.isoformat() if cursor else None,
        )
    unclosed_ledger = conn.execute(
        sa.select(sa.func.count())
        .select_from(day_closes)
        .where(day_closes.c.accounting_date.between(first_day, last_day), day_closes.c.state != "closed")
    ).scalar_one()
    if unclosed_ledger:
        raise errors.PeriodNotSynced(f"{unclosed_ledger} ledger day(s) of {period} are not closed yet")
    pending = conn.execute(
        sa.select(sa.func.count())
        .select_from(vouchers)
        .where(vouchers.c.period == period, vouchers.c.state == "pending")
    ).scalar_one()
    if pending:
        raise errors.PeriodHasPendingVouchers(
            f"{pending} voucher(s) of {period} await approval; approve or reject them first", pending=pending
        )
    if row is None:
        ensure_open_period(conn, first_day)
    unbalanced = reports.trial_balance(conn, period=period).unbalanced_currencies()
    if unbalanced:
        raise errors.TrialBalanceUnbalanced(f"the trial balance of {period} does not balance in {unbalanced}")
    now = now or dt.datetime.now(dt.UTC)
    if first_day.month == 12:
        _post_year_end_closing(conn, period=period, year_end=last_day, operator=operator, now=now)
    conn.execute(
        periods.update().where(periods.c.period == period).values(state="closed", closed_at=now, closed_by=operator)
    )
    return _period_from_row(conn.execute(sa.select(periods).where(periods.c.period == period)).one())


def _post_year_end_closing(
    conn: Connection, *, period: str, year_end: dt.date, operator: str, now: dt.datetime
) -> None:
    """结转损益: one voucher per currency moving every income and expense balance of the year into profit."""
    year_start = dt.date(year_end.year, 1, 1)
    s, line, v = subjects, voucher_lines, vouchers
    balances = conn.execute(
        sa.select(
            v.c.currency,
            line.c.subject_code,
            line.c.dimension,
            line.c.aux,
            sum_minor(line.c.debit - line.c.credit).label("net"),
        )
        .select_from(line.join(v, v.c.id == line.c.voucher_id).join(s, s.c.code == line.c.subject_code))
        .where(
            v.c.state == "posted",
            v.c.voucher_date.between(year_start, year_end),
            s.c.type.in_(("income", "expense")),
        )
        .group_by(v.c.currency, line.c.subject_code, line.c.dimension, line.c.aux)
    ).all()
    by_currency: dict[str, list[VoucherLine]] = defaultdict(list)
    for row in balances:
        if row.net == 0:
            continue
        # Move the balance out: a debit balance is credited away, a credit balance debited away.
        by_currency[row.currency].append(
            VoucherLine(
                subject_code=row.subject_code,
                debit=-row.net if row.net < 0 else 0,
                credit=row.net if row.net > 0 else 0,
                dimension=row.dimension,
                aux=row.aux,
            )
        )
    for currency, lines in sorted(by_currency.items()):
        profit = sum(line.debit - line.credit for line in lines)  # > 0: the year made a profit
        carried = [
            *lines,
            VoucherLine(CURRENT_YEAR_PROFIT, debit=-profit if profit < 0 else 0, credit=profit if profit > 0 else 0),
        ]
        if profit:
            carried += [
                VoucherLine(
                    CURRENT_YEAR_PROFIT, debit=profit if profit > 0 else 0, credit=-profit if profit < 0 else 0
                ),
                VoucherLine(
                    UNDISTRIBUTED_PROFIT, debit=-profit if profit < 0 else 0, credit=profit if profit > 0 else 0
                ),
            ]
        carried = [line for line in carried if line.debit or line.credit]
        total = sum(line.debit for line in carried)
        if not total:
            continue
        voucher_id = conn.execute(
            vouchers.insert()
            .values(
                ref=ids.new_id("vch"),
                source_key=f"closing:{year_end.year}:{currency}",
                kind="closing",
                state="posted",
                period=period,
                number=take_numbers(conn, period, 1),
                voucher_date=year_end,
                currency=currency,
                summary=f"{year_end.year} 年结转损益 Year-end closing of income and expenses",
                entry_count=0,
                total=total,
                maker=SYSTEM_MAKER,
                checker=operator if operator != SYSTEM_MAKER else None,
                created_at=now,
                posted_at=now,
            )
            .returning(vouchers.c.id)
        ).scalar_one()
        _insert_lines(conn, voucher_id, tuple(carried))
