"""Trial balance (试算平衡表) and the ledger-vs-accounting check (账账核对).

Both read posted vouchers only (a manual voucher awaiting approval is not in
the books yet). Amounts are integers of the currency's minor unit; each report
is per currency, since the books keep every currency apart.

Trial balance: the six columns Chinese practice uses — opening debit/credit
(期初), the period's debits/credits (本期发生), closing debit/credit (期末) —
for every subject with activity, parents rolled up from their children. A
balance sits in the debit or the credit column by its sign, whatever the
subject's type; ``balance`` gives it signed on the subject's normal side.

账账核对 at a day D: for every subject that ledger codes map to, the
accounting balance at D equals the sum of the ledger balances at D (the
day-end snapshot) of the accounts of those codes. A difference comes with what
causes it: ledger entries not booked (accounting exceptions) and manual
vouchers on that subject. The year-end closing voucher (结转损益) is left out
of the comparison: it empties income and expense subjects into profit, which
the ledger's accounts never do. Ledger accounts whose code no rule maps are
listed too: they are outside the books.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.accounting import errors
from zhangfang.accounting.periods import parse_period
from zhangfang.accounting.sync import last_synced_date
from zhangfang.accounting.tables import exceptions, ledger_codes, subjects, voucher_lines, vouchers
from zhangfang.db.sql import sum_minor
from zhangfang.ledger.tables import account_day_balances, accounts, journal_entries, postings


@dataclass(frozen=True)
class SubjectInfo:
    code: str
    name_zh: str
    name_en: str
    type: str
    normal_side: str
    parent_code: str | None
    leaf: bool
    level: int


def load_subjects(conn: Connection) -> dict[str, SubjectInfo]:
    """The installed chart, by code, with each subject's depth (1 for top-level subjects)."""
    rows = {row.code: row for row in conn.execute(sa.select(subjects))}

    def level(code: str) -> int:
        parent = rows[code].parent_code
        return 1 if parent is None else 1 + level(parent)

    return {
        code: SubjectInfo(
            code=code,
            name_zh=row.name_zh,
            name_en=row.name_en,
            type=row.type,
            normal_side=row.normal_side,
            parent_code=row.parent_code,
            leaf=row.leaf,
            level=level(code),
        )
        for code, row in sorted(rows.items())
    }


def ancestors(chart: dict[str, SubjectInfo], code: str) -> list[str]:
    """The subject and its parents, innermost first."""
    chain = []
    current: str | None = code
    while current is not None:
        chain.append(current)
        current = chart[current].parent_code
    return chain


@dataclass(frozen=True)
class TrialBalanceRow:
    subject: SubjectInfo
    currency: str
    opening_debit: int
    opening_credit: int
    debit: int
    credit: int
    closing_debit: int
    closing_credit: int

    @property
    def balance(self) -> int:
        """The closing balance signed on the subject's normal side (negative: on the other side)."""
        net = self.closing_debit - self.closing_credit
        return net if self.subject.normal_side == "debit" else -net


@dataclass(frozen=True)
class TrialBalanceTotals:
    currency: str
    opening_debit: int
    opening_credit: int
    debit: int
    credit: int
    closing_debit: int
    closing_credit: int

    @property
    def balanced(self) -> bool:
        return (
            self.opening_debit == self.opening_credit
            and self.debit == self.credit
            and self.closing_debit == self.closing_credit
        )


@dataclass(frozen=True)
class TrialBalance:
    date_from: dt.date
    date_to: dt.date
    rows: tuple[TrialBalanceRow, ...]
    totals: tuple[TrialBalanceTotals, ...]

    @property
    def balanced(self) -> bool:
        return all(total.balanced for total in self.totals)

    def unbalanced_currencies(self) -> list[str]:
        return [total.currency for total in self.totals if not total.balanced]


def _sides(net: int) -> tuple[int, int]:
    return (net, 0) if net > 0 else (0, -net)


def report_range(*, date: dt.date | None = None, period: str | None = None) -> tuple[dt.date, dt.date]:
    """A report's first and last day: a period (YYYY-MM) whole, or a date's month up to that date."""
    if (date is None) == (period is None):
        raise errors.PeriodInvalid("give a date or a period, not both", field="period")
    if period is not None:
        return parse_period(period)
    assert date is not None
    return date.replace(day=1), date


def trial_balance(
    conn: Connection, *, date: dt.date | None = None, period: str | None = None, currency: str | None = None
) -> TrialBalance:
    """The trial balance of a period, or of a date's month up to that date (see the module docstring)."""
    date_from, date_to = report_range(date=date, period=period)
    line, v = voucher_lines, vouchers
    before = v.c.voucher_date < date_from
    query = (
        sa.select(
            line.c.subject_code,
            v.c.currency,
            sum_minor(sa.case((before, line.c.debit - line.c.credit), else_=0)).label("opening"),
            sum_minor(sa.case((before, 0), else_=line.c.debit)).label("debit"),
            sum_minor(sa.case((before, 0), else_=line.c.credit)).label("credit"),
        )
        .select_from(line.join(v, v.c.id == line.c.voucher_id))
        .where(v.c.state == "posted", v.c.voucher_date <= date_to)
        .group_by(line.c.subject_code, v.c.currency)
    )
    if currency is not None:
        query = query.where(v.c.currency == currency)
    chart = load_subjects(conn)
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in conn.execute(query):
        for code in ancestors(chart, row.subject_code):
            total = sums[(code, row.currency)]
            total[0] += row.opening
            total[1] += row.debit
            total[2] += row.credit
    rows = []
    for (code, row_currency), (opening, debit, credit) in sorted(
        sums.items(), key=lambda item: (item[0][1], item[0][0])
    ):
        if not (opening or debit or credit):
            continue
        rows.append(
            TrialBalanceRow(
                chart[code], row_currency, *_sides(opening), debit, credit, *_sides(opening + debit - credit)
            )
        )
    totals = []
    for row_currency in sorted({row.currency for row in rows}):
        top = [row for row in rows if row.currency == row_currency and row.subject.parent_code is None]
        totals.append(
            TrialBalanceTotals(
                row_currency,
                *(sum(getattr(row, name) for row in top) for name in TOTAL_COLUMNS),
            )
        )
    return TrialBalance(date_from, date_to, tuple(rows), tuple(totals))


TOTAL_COLUMNS = ("opening_debit", "opening_credit", "debit", "credit", "closing_debit", "closing_credit")


# ---- 账账核对 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DifferenceCause:
    """Why accounting and the ledger differ on a subject: an unbooked entry or a voucher not from the ledger."""

    kind: str  # "unbooked_entry" | "manual_voucher"
    ref: str  # the entry's je_… or the voucher's ref
    accounting_date: dt.date
    detail: str  # the entry's business code and reason, or the voucher's summary
    amount: int  # its effect on the subject, debit positive


@dataclass(frozen=True)
class SubjectCheck:
    subject: SubjectInfo
    currency: str
    ledger_codes: tuple[str, ...]
    ledger_balance: int  # debit positive
    accounting_balance: int  # debit positive
    causes: tuple[DifferenceCause, ...] = field(default_factory=tuple)

    @property
    def difference(self) -> int:
        return self.accounting_balance - self.ledger_balance


@dataclass(frozen=True)
class UnmappedLedgerCode:
    ledger_code: str
    currency: str
    account_count: int
    balance: int  # debit positive


@dataclass(frozen=True)
class CheckResult:
    date: dt.date
    subjects: tuple[SubjectCheck, ...]
    unmapped: tuple[UnmappedLedgerCode, ...]

    @property
    def differences(self) -> tuple[SubjectCheck, ...]:
        return tuple(item for item in self.subjects if item.difference)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.unmapped


def check_ledger(conn: Connection, *, date: dt.date) -> CheckResult:
    """账账核对 at ``date``: see the module docstring. ``day_not_accounted`` unless the day is booked."""
    booked_through = last_synced_date(conn)
    if booked_through is None or date > booked_through:
        raise errors.DayNotAccounted(
            f"{date} is not booked yet (booked through {booked_through or 'no day'}); "
            "the ledger must close the day and `zhangfang accounting sync` book it",
            field="date",
        )
    chart = load_subjects(conn)
    a, b, lc = accounts, account_day_balances, ledger_codes
    ledger_rows = conn.execute(
        sa.select(
            a.c.ledger_code,
            a.c.currency,
            lc.c.subject_code,
            sa.func.count().label("accounts"),
            sum_minor(b.c.debits_posted - b.c.credits_posted).label("net"),
        )
        .select_from(b.join(a, a.c.id == b.c.account_id).outerjoin(lc, lc.c.ledger_code == a.c.ledger_code))
        .where(b.c.accounting_date == date)
        .group_by(a.c.ledger_code, a.c.currency, lc.c.subject_code)
    ).all()
    mapped = dict(conn.execute(sa.select(lc.c.ledger_code, lc.c.subject_code)).all())
    codes_by_subject: dict[str, set[str]] = defaultdict(set)
    for ledger_code, subject_code in mapped.items():
        codes_by_subject[subject_code].add(ledger_code)
    ledger_net: dict[tuple[str, str], int] = defaultdict(int)
    unmapped = []
    for row in ledger_rows:
        if row.subject_code is None:
            if row.net:
                unmapped.append(UnmappedLedgerCode(row.ledger_code, row.currency, row.accounts, row.net))
            continue
        ledger_net[(row.subject_code, row.currency)] += row.net
    line, v = voucher_lines, vouchers
    accounting_net = {
        (row.subject_code, row.currency): row.net
        for row in conn.execute(
            sa.select(line.c.subject_code, v.c.currency, sum_minor(line.c.debit - line.c.credit).label("net"))
            .select_from(line.join(v, v.c.id == line.c.voucher_id))
            .where(
                v.c.state == "posted",
                v.c.kind != "closing",
                v.c.voucher_date <= date,
                line.c.subject_code.in_(codes_by_subject),
            )
            .group_by(line.c.subject_code, v.c.currency)
        )
    }
    results = []
    for subject_code, currency in sorted(set(ledger_net) | set(accounting_net)):
        ledger_balance = ledger_net.get((subject_code, currency), 0)
        accounting_balance = accounting_net.get((subject_code, currency), 0)
        causes: tuple[DifferenceCause, ...] = ()
        if ledger_balance != accounting_balance:
            causes = _causes(conn, date, subject_code, currency, codes_by_subject[subject_code])
        results.append(
            SubjectCheck(
                chart[subject_code],
                currency,
                tuple(sorted(codes_by_subject[subject_code])),
                ledger_balance,
                accounting_balance,
                causes,
            )
        )
    return CheckResult(date, tuple(results), tuple(sorted(unmapped, key=lambda u: (u.ledger_code, u.currency))))


def _causes(
    conn: Connection, date: dt.date, subject_code: str, currency: str, codes: set[str]
) -> tuple[DifferenceCause, ...]:
    e, p, a, x = journal_entries, postings, accounts, exceptions
    signed = sa.case((p.c.side == "debit", p.c.amount), else_=-p.c.amount)
    unbooked = conn.execute(
        sa.select(e.c.ref, e.c.accounting_date, e.c.business_code, x.c.reason, sum_minor(signed).label("amount"))
        .select_from(
            x.join(e, e.c.id == x.c.entry_id).join(p, p.c.entry_id == e.c.id).join(a, a.c.id == p.c.account_id)
        )
        .where(
            x.c.accounting_date <= date,
            p.c.effect == "posted",
            p.c.currency == currency,
            a.c.ledger_code.in_(codes),
        )
        .group_by(e.c.id, e.c.ref, e.c.accounting_date, e.c.business_code, x.c.reason)
        .order_by(e.c.id)
    ).all()
    line, v = voucher_lines, vouchers
    not_from_ledger = conn.execute(
        sa.select(
            v.c.ref,
            v.c.kind,
            v.c.voucher_date,
            v.c.summary,
            sum_minor(line.c.debit - line.c.credit).label("amount"),
        )
        .select_from(line.join(v, v.c.id == line.c.voucher_id))
        .where(
            v.c.state == "posted",
            v.c.kind == "manual",
            v.c.voucher_date <= date,
            v.c.currency == currency,
            line.c.subject_code == subject_code,
        )
        .group_by(v.c.id, v.c.ref, v.c.kind, v.c.voucher_date, v.c.summary)
        .order_by(v.c.id)
    ).all()
    return (
        *(
            DifferenceCause(
                "unbooked_entry", row.ref, row.accounting_date, f"{row.business_code}: {row.reason}", row.amount
            )
            for row in unbooked
        ),
        *(
            DifferenceCause(f"{row.kind}_voucher", row.ref, row.voucher_date, row.summary, row.amount)
            for row in not_from_ledger
        ),
    )


def subject_balance(
    conn: Connection, *, subject_code: str, date: dt.date, currency: str, aux: str | None = None
) -> int:
    """The books' balance of a subject (and its children) at the end of ``date``, debit positive.

    ``aux`` narrows it to one auxiliary value (a bank account's key, a merchant). Posted vouchers
    only. What 账实核对 compares with the outside world's figure (a bank statement's balance).
    """
    chart = load_subjects(conn)
    if subject_code not in chart:
        raise errors.SubjectNotFound(f"no subject {subject_code!r} in the chart", field="subject")
    family = [code for code in chart if subject_code in ancestors(chart, code)]
    line, v = voucher_lines, vouchers
    query = (
        sa.select(sa.func.coalesce(sum_minor(line.c.debit - line.c.credit), 0))
        .select_from(line.join(v, v.c.id == line.c.voucher_id))
        .where(
            v.c.state == "posted",
            v.c.voucher_date <= date,
            v.c.currency == currency,
            line.c.subject_code.in_(family),
        )
    )
    if aux is not None:
        query = query.where(line.c.aux == aux)
    return conn.execute(query).scalar_one()
