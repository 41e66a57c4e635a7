"""Financial statements read from the books: general ledger, subsidiary ledger, balance sheet, income statement.

All four read posted vouchers only (a manual voucher awaiting approval is not in
the books yet), in one currency (the books keep every currency apart), and give
amounts as integers of the currency's minor unit. A parent subject stands for
itself and all its descendants. Each result turns into an ``export.Table``
(``to_table``) for CSV and XLSX.

General ledger (总账) of a subject over a date range: the opening balance (all
vouchers dated before the range), one row per day with activity — the day's
debits, credits and the balance after the day — and the range's totals.
Balances are signed on the subject's normal side (negative: the balance sits on
the other side; ``side`` says which side it sits on).

Subsidiary ledger (明细账) of a subject over a date range: every voucher line,
in voucher-date then voucher-number then line order, with its voucher label
(记-YYYY-MM-NNNN), summary (摘要), auxiliary value (辅助核算, such as
``merchant:m001``), debit, credit and the running balance. Each auxiliary value
is its own account: its own opening balance and its own running balance.

Balance sheet (资产负债表) at a date: the balances of every asset, liability,
equity and common subject (top-level subjects, each followed by its children;
zero balances left out). Assets are signed debit-positive, so a contra subject
(坏账准备, 累计折旧: credit-normal under assets) reduces its section; liabilities
and equity credit-positive. A common subject (共同类, e.g. 清算资金往来) stands
under assets when its balance is a debit and under liabilities when a credit.
Equity ends with "本年利润（未结转）Current-year profit not yet closed": the net
of every income and expense subject up to the date (income less expenses), which
the year-end closing voucher (结转损益) moves into 本年利润 and 未分配利润.

Income statement (利润表) over a date range: income subjects (credits − debits)
and expense subjects (debits − credits) of vouchers dated in the range, leaving
out the year-end closing voucher (it would zero them); net profit is total
income less total expenses.

Guarantees
- Each statement is computed in SQL sums over the posted voucher lines; nothing
  is cached, so it always agrees with the vouchers and with the trial balance.
- General and subsidiary ledgers: opening + debits − credits = closing (on a
  debit-normal subject; mirrored on a credit-normal one), asserted per row.
- Balance sheet: since every voucher balances, total assets equal total
  liabilities plus equity (including the current-year profit line); ``balanced``
  says so, and is false only if the books themselves do not balance.
- Income statement: net profit equals the change of the current-year profit line
  of the balance sheet over the range, as long as no closing voucher falls in it.

Errors: ``period_invalid`` (``date_from`` after ``date_to``), ``subject_not_found``,
``currency_unknown``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang import money
from zhangfang.accounting import errors
from zhangfang.accounting.export import Table
from zhangfang.accounting.reports import SubjectInfo, ancestors, load_subjects
from zhangfang.accounting.tables import voucher_lines, vouchers

BalanceSide = Literal["debit", "credit", "flat"]

OPENING_ZH, OPENING_EN = "期初余额", "Opening balance"
DAY_TOTAL_ZH, DAY_TOTAL_EN = "本日合计", "Day total"
RANGE_TOTAL_ZH, RANGE_TOTAL_EN = "本期合计", "Period total"
CURRENT_PROFIT_ZH = "本年利润（未结转）"
CURRENT_PROFIT_EN = "Current-year profit not yet closed"

# ---- shared helpers -----------------------------------------------------------------------------


def _check_range(date_from: dt.date, date_to: dt.date) -> None:
    for name, value in (("date_from", date_from), ("date_to", date_to)):
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise errors.PeriodInvalid(f"{name} must be a date (YYYY-MM-DD)", field=name)
    if date_from > date_to:
        raise errors.PeriodInvalid(
            f"date_from {date_from.isoformat()} is after date_to {date_to.isoformat()}", field="date_from"
        )


def _check_date(date: dt.date) -> None:
    if not isinstance(date, dt.date) or isinstance(date, dt.datetime):
        raise errors.PeriodInvalid("date must be a date (YYYY-MM-DD)", field="date")


def _subject(chart: dict[str, SubjectInfo], code: str) -> SubjectInfo:
    subject = chart.get(code) if isinstance(code, str) else None
    if subject is None:
        raise errors.SubjectNotFound(f"the chart has no subject {code!r}", field="subject_code")
    return subject


def _family(chart: dict[str, SubjectInfo], code: str) -> list[str]:
    """The subject and every descendant of it."""
    return [other for other in chart if code in ancestors(chart, other)]


def _signed(subject: SubjectInfo, net_debit: int) -> int:
    """A debit-positive net as a balance signed on the subject's normal side."""
    return net_debit if subject.normal_side == "debit" else -net_debit


def balance_side(subject: SubjectInfo, balance: int) -> BalanceSide:
    """The side a balance signed on the subject's normal side sits on: debit, credit, or flat (平)."""
    if balance == 0:
        return "flat"
    if balance > 0:
        return "debit" if subject.normal_side == "debit" else "credit"
    return "credit" if subject.normal_side == "debit" else "debit"


def _posted(currency: str) -> sa.ColumnElement[bool]:
    return sa.and_(vouchers.c.state == "posted", vouchers.c.currency == currency)


_LINES = voucher_lines.join(vouchers, vouchers.c.id == voucher_lines.c.voucher_id)


def _label(period: str, number: int) -> str:
    # As models.Voucher.label writes a posted voucher's number.
    return f"记-{period}-{number:04d}"


def _tree_order(chart: dict[str, SubjectInfo], codes: Iterable[str]) -> list[str]:
    """``codes`` ordered as the chart reads: each parent followed by its children, by code."""
    wanted = set(codes)
    children: dict[str | None, list[str]] = defaultdict(list)
    for code, subject in chart.items():  # load_subjects sorts by code
        children[subject.parent_code].append(code)
    ordered: list[str] = []

    def walk(parent: str | None) -> None:
        for code in children[parent]:
            if code in wanted:
                ordered.append(code)
            walk(code)

    walk(None)
    return ordered


def _money(amount: int, currency: str) -> str:
    return money.format_minor(amount, currency)


def _side_and_amount(side: BalanceSide, balance: int, currency: str) -> tuple[str, str]:
    """A balance as Chinese ledgers show it: the side it sits on (借 debit, 贷 credit, 平 flat) and its size."""
    return side, _money(abs(balance), currency)


# ---- 总账 general ledger ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneralLedgerDay:
    """One day of a general ledger: the day's debits and credits and the balance after it."""

    date: dt.date
    debit: int
    credit: int
    balance: int  # signed on the subject's normal side
    side: BalanceSide  # where the balance sits


@dataclass(frozen=True)
class GeneralLedger:
    """总账 of one subject (with its descendants) over a date range; see the module docstring."""

    subject: SubjectInfo
    currency: str
    date_from: dt.date
    date_to: dt.date
    opening_balance: int  # signed on the subject's normal side
    days: tuple[GeneralLedgerDay, ...]
    debit: int
    credit: int
    closing_balance: int  # signed on the subject's normal side

    @property
    def opening_side(self) -> BalanceSide:
        return balance_side(self.subject, self.opening_balance)

    @property
    def closing_side(self) -> BalanceSide:
        return balance_side(self.subject, self.closing_balance)

    def to_table(self) -> Table:
        """Opening row, a row per day, a totals row: date, summary, debit, credit, side, balance."""
        c = self.currency
        rows = [
            (self.date_from.isoformat(), f"{OPENING_ZH} {OPENING_EN}", "", "", *self._balance(self.opening_balance))
        ]
        rows += [
            (
                day.date.isoformat(),
                f"{DAY_TOTAL_ZH} {DAY_TOTAL_EN}",
                _money(day.debit, c),
                _money(day.credit, c),
                *_side_and_amount(day.side, day.balance, c),
            )
            for day in self.days
        ]
        rows.append(
            (
                self.date_to.isoformat(),
                f"{RANGE_TOTAL_ZH} {RANGE_TOTAL_EN}",
                _money(self.debit, c),
                _money(self.credit, c),
                *self._balance(self.closing_balance),
            )
        )
        s = self.subject
        return Table(
            title=f"总账 {s.code} {s.name_zh} {c} {self.date_from.isoformat()} {self.date_to.isoformat()}",
            columns=("date", "summary", "debit", "credit", "side", "balance"),
            rows=tuple(rows),
            amount_columns=("debit", "credit", "balance"),
        )

    def _balance(self, balance: int) -> tuple[str, str]:
        return _side_and_amount(balance_side(self.subject, balance), balance, self.currency)


def general_ledger(
    conn: Connection, *, subject_code: str, date_from: dt.date, date_to: dt.date, currency: str = "CNY"
) -> GeneralLedger:
    """总账 of a subject (a parent rolls up its descendants) from ``date_from`` to ``date_to``, both included."""
    _check_range(date_from, date_to)
    money.currency(currency)
    chart = load_subjects(conn)
    subject = _subject(chart, subject_code)
    line, v = voucher_lines, vouchers
    in_family = sa.and_(_posted(currency), line.c.subject_code.in_(_family(chart, subject.code)))
    opening_net = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(line.c.debit - line.c.credit), 0))
        .select_from(_LINES)
        .where(in_family, v.c.voucher_date < date_from)
    ).scalar_one()
    opening = _signed(subject, int(opening_net))
    balance = opening
    days = []
    for row in conn.execute(
        sa.select(
            v.c.voucher_date, sa.func.sum(line.c.debit).label("debit"), sa.func.sum(line.c.credit).label("credit")
        )
        .select_from(_LINES)
        .where(in_family, v.c.voucher_date.between(date_from, date_to))
        .group_by(v.c.voucher_date)
        .order_by(v.c.voucher_date)
    ):
        debit, credit = int(row.debit), int(row.credit)
        balance += _signed(subject, debit - credit)
        days.append(GeneralLedgerDay(row.voucher_date, debit, credit, balance, balance_side(subject, balance)))
    debit_total = sum(day.debit for day in days)
    credit_total = sum(day.credit for day in days)
    assert balance == opening + _signed(subject, debit_total - credit_total)
    return GeneralLedger(
        subject, currency, date_from, date_to, opening, tuple(days), debit_total, credit_total, balance
    )


# ---- 明细账 subsidiary ledger -----------------------------------------------------------------------


@dataclass(frozen=True)
class SubsidiaryLine:
    """One voucher line of a subsidiary ledger, with the balance of its auxiliary account after it."""

    date: dt.date
    voucher_label: str  # 记-YYYY-MM-NNNN
    voucher_ref: str  # vch_…
    subject_code: str  # the leaf subject the line books to
    summary: str
    aux: str
    debit: int
    credit: int
    balance: int  # signed on the ledger subject's normal side
    side: BalanceSide


@dataclass(frozen=True)
class SubsidiaryAccount:
    """The lines of one auxiliary value (an account of the 明细账), with its own opening and running balance."""

    aux: str
    opening_balance: int
    lines: tuple[SubsidiaryLine, ...]
    debit: int
    credit: int
    closing_balance: int


@dataclass(frozen=True)
class SubsidiaryLedger:
    """明细账 of one subject (with its descendants) over a date range, per auxiliary value."""

    subject: SubjectInfo
    currency: str
    date_from: dt.date
    date_to: dt.date
    accounts: tuple[SubsidiaryAccount, ...]  # by auxiliary value

    def account(self, aux: str) -> SubsidiaryAccount:
        """The account of one auxiliary value (KeyError when it has neither balance nor lines)."""
        for account in self.accounts:
            if account.aux == aux:
                return account
        raise KeyError(aux)

    def to_table(self) -> Table:
        """Per auxiliary value: an opening row, its lines, a totals row."""
        c, subject = self.currency, self.subject
        rows: list[tuple[str, ...]] = []
        for account in self.accounts:
            opening_side = balance_side(subject, account.opening_balance)
            closing_side = balance_side(subject, account.closing_balance)
            rows.append(
                (
                    account.aux,
                    self.date_from.isoformat(),
                    "",
                    "",
                    f"{OPENING_ZH} {OPENING_EN}",
                    "",
                    "",
                    *_side_and_amount(opening_side, account.opening_balance, c),
                )
            )
            rows += [
                (
                    line.aux,
                    line.date.isoformat(),
                    line.voucher_label,
                    line.subject_code,
                    line.summary,
                    _money(line.debit, c),
                    _money(line.credit, c),
                    *_side_and_amount(line.side, line.balance, c),
                )
                for line in account.lines
            ]
            rows.append(
                (
                    account.aux,
                    self.date_to.isoformat(),
                    "",
                    "",
                    f"{RANGE_TOTAL_ZH} {RANGE_TOTAL_EN}",
                    _money(account.debit, c),
                    _money(account.credit, c),
                    *_side_and_amount(closing_side, account.closing_balance, c),
                )
            )
        return Table(
            title=f"明细账 {subject.code} {subject.name_zh} {c} {self.date_from} {self.date_to}",
            columns=("aux", "date", "voucher", "subject_code", "summary", "debit", "credit", "side", "balance"),
            rows=tuple(rows),
            amount_columns=("debit", "credit", "balance"),
        )


def subsidiary_ledger(
    conn: Connection,
    *,
    subject_code: str,
    date_from: dt.date,
    date_to: dt.date,
    currency: str = "CNY",
    aux: str | None = None,
) -> SubsidiaryLedger:
    """明细账 of a subject from ``date_from`` to ``date_to``: every auxiliary value, or only ``aux``."""
    _check_range(date_from, date_to)
    money.currency(currency)
    chart = load_subjects(conn)
    subject = _subject(chart, subject_code)
    line, v = voucher_lines, vouchers
    where = sa.and_(_posted(currency), line.c.subject_code.in_(_family(chart, subject.code)))
    if aux is not None:
        where = sa.and_(where, line.c.aux == aux)
    openings = {
        row.aux: _signed(subject, int(row.net))
        for row in conn.execute(
            sa.select(line.c.aux, sa.func.sum(line.c.debit - line.c.credit).label("net"))
            .select_from(_LINES)
            .where(where, v.c.voucher_date < date_from)
            .group_by(line.c.aux)
        )
    }
    lines_by_aux: dict[str, list[sa.Row]] = defaultdict(list)
    for row in conn.execute(
        sa.select(
            v.c.voucher_date,
            v.c.period,
            v.c.number,
            v.c.ref,
            v.c.summary,
            line.c.subject_code,
            line.c.aux,
            line.c.debit,
            line.c.credit,
        )
        .select_from(_LINES)
        .where(where, v.c.voucher_date.between(date_from, date_to))
        .order_by(v.c.voucher_date, v.c.number, v.c.id, line.c.line_no)
    ):
        lines_by_aux[row.aux].append(row)
    auxes = {aux} if aux is not None else {key for key, value in openings.items() if value} | set(lines_by_aux)
    accounts = []
    for key in sorted(auxes):
        opening = openings.get(key, 0)
        balance = opening
        lines = []
        for row in lines_by_aux.get(key, ()):
            debit, credit = int(row.debit), int(row.credit)
            balance += _signed(subject, debit - credit)
            lines.append(
                SubsidiaryLine(
                    date=row.voucher_date,
                    voucher_label=_label(row.period, row.number),
                    voucher_ref=row.ref,
                    subject_code=row.subject_code,
                    summary=row.summary,
                    aux=row.aux,
                    debit=debit,
                    credit=credit,
                    balance=balance,
                    side=balance_side(subject, balance),
                )
            )
        debit_total = sum(item.debit for item in lines)
        credit_total = sum(item.credit for item in lines)
        assert balance == opening + _signed(subject, debit_total - credit_total)
        accounts.append(SubsidiaryAccount(key, opening, tuple(lines), debit_total, credit_total, balance))
    return SubsidiaryLedger(subject, currency, date_from, date_to, tuple(accounts))


# ---- 资产负债表 balance sheet and 利润表 income statement --------------------------------------------


@dataclass(frozen=True)
class StatementRow:
    """A subject's line in a statement (or a computed line: ``code`` empty), signed as its section reads."""

    code: str
    name_zh: str
    name_en: str
    level: int  # 1 for a top-level subject (counted in the totals), 2+ for its children (detail)
    amount: int

    @property
    def label(self) -> str:
        return f"{self.name_zh} {self.name_en}"


@dataclass(frozen=True)
class StatementSection:
    """A section of a statement: its rows and its total (the sum of its level-1 rows)."""

    name: str
    name_zh: str
    rows: tuple[StatementRow, ...]
    total: int

    def row(self, code: str) -> StatementRow:
        """The row of a subject code (or of a computed line by its Chinese name); KeyError if absent."""
        for row in self.rows:
            if row.code == code or (not row.code and row.name_zh == code):
                return row
        raise KeyError(code)


def _section(name: str, name_zh: str, rows: list[StatementRow]) -> StatementSection:
    return StatementSection(name, name_zh, tuple(rows), sum(row.amount for row in rows if row.level == 1))


def _section_rows(table_rows: list[tuple[str, ...]], section: StatementSection, currency: str) -> None:
    for row in section.rows:
        table_rows.append(
            (section.name, row.code, row.name_zh, row.name_en, str(row.level), _money(row.amount, currency))
        )


STATEMENT_COLUMNS = ("section", "code", "name_zh", "name_en", "level", "amount")


@dataclass(frozen=True)
class BalanceSheet:
    """资产负债表 at a date; see the module docstring."""

    date: dt.date
    currency: str
    assets: StatementSection
    liabilities: StatementSection
    equity: StatementSection

    @property
    def liabilities_and_equity(self) -> int:
        return self.liabilities.total + self.equity.total

    @property
    def balanced(self) -> bool:
        """Total assets equal total liabilities plus equity."""
        return self.assets.total == self.liabilities_and_equity

    @property
    def current_year_profit(self) -> int:
        """Income less expenses not yet closed into 本年利润 (the equity section's computed line)."""
        return self.equity.row(CURRENT_PROFIT_ZH).amount

    def to_table(self) -> Table:
        """Each section's rows and total, then total liabilities and equity."""
        c = self.currency
        rows: list[tuple[str, ...]] = []
        for section, total_zh, total_en in (
            (self.assets, "资产合计", "Total assets"),
            (self.liabilities, "负债合计", "Total liabilities"),
            (self.equity, "所有者权益合计", "Total equity"),
        ):
            _section_rows(rows, section, c)
            rows.append((section.name, "", total_zh, total_en, "", _money(section.total, c)))
        rows.append(
            (
                "",
                "",
                "负债和所有者权益总计",
                "Total liabilities and equity",
                "",
                _money(self.liabilities_and_equity, c),
            )
        )
        return Table(
            title=f"资产负债表 Balance sheet {c} {self.date.isoformat()}",
            columns=STATEMENT_COLUMNS,
            rows=tuple(rows),
            amount_columns=("amount",),
        )


def _subject_sums(
    conn: Connection,
    *,
    currency: str,
    date_to: dt.date,
    date_from: dt.date | None = None,
    codes: Iterable[str] | None = None,
    exclude_closing: bool = False,
) -> dict[str, tuple[int, int]]:
    """Debits and credits per booked (leaf) subject of posted vouchers in the range."""
    line, v = voucher_lines, vouchers
    query = (
        sa.select(
            line.c.subject_code,
            sa.func.sum(line.c.debit).label("debit"),
            sa.func.sum(line.c.credit).label("credit"),
        )
        .select_from(_LINES)
        .where(_posted(currency), v.c.voucher_date <= date_to)
        .group_by(line.c.subject_code)
    )
    if date_from is not None:
        query = query.where(v.c.voucher_date >= date_from)
    if codes is not None:
        query = query.where(line.c.subject_code.in_(list(codes)))
    if exclude_closing:
        query = query.where(v.c.kind != "closing")
    return {row.subject_code: (int(row.debit), int(row.credit)) for row in conn.execute(query)}


def _rolled_up(chart: dict[str, SubjectInfo], sums: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Each subject's debits and credits with its descendants'."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for code, (debit, credit) in sums.items():
        for ancestor in ancestors(chart, code):
            totals[ancestor][0] += debit
            totals[ancestor][1] += credit
    return {code: (debit, credit) for code, (debit, credit) in totals.items()}


def _rows(
    chart: dict[str, SubjectInfo], amounts: dict[str, int], tops: Iterable[str], *, keep_zero: set[str] | None = None
) -> list[StatementRow]:
    """Rows for the top-level subjects ``tops`` and their descendants, in chart order; zeros left out."""
    keep = keep_zero or set()
    tops = set(tops)
    members = [code for code in amounts if ancestors(chart, code)[-1] in tops and (amounts[code] or code in keep)]
    return [
        StatementRow(code, chart[code].name_zh, chart[code].name_en, chart[code].level, amounts[code])
        for code in _tree_order(chart, members)
    ]


def balance_sheet(conn: Connection, *, date: dt.date, currency: str = "CNY") -> BalanceSheet:
    """资产负债表 at the end of ``date`` (every posted voucher dated up to it); see the module docstring."""
    _check_date(date)
    money.currency(currency)
    chart = load_subjects(conn)
    rolled = _rolled_up(chart, _subject_sums(conn, currency=currency, date_to=date))
    net = {code: debit - credit for code, (debit, credit) in rolled.items()}  # debit positive
    tops_by_type: dict[str, list[str]] = defaultdict(list)
    for code, subject in chart.items():
        if subject.parent_code is None:
            tops_by_type[subject.type].append(code)
    common_debit = [code for code in tops_by_type["common"] if net.get(code, 0) > 0]
    common_credit = [code for code in tops_by_type["common"] if net.get(code, 0) < 0]
    credit_positive = {code: -value for code, value in net.items()}
    assets = _rows(chart, net, [*tops_by_type["asset"], *common_debit])
    liabilities = _rows(chart, credit_positive, [*tops_by_type["liability"], *common_credit])
    equity = _rows(chart, credit_positive, tops_by_type["equity"])
    profit = sum(credit_positive.get(code, 0) for code in (*tops_by_type["income"], *tops_by_type["expense"]))
    equity.append(StatementRow("", CURRENT_PROFIT_ZH, CURRENT_PROFIT_EN, 1, profit))
    return BalanceSheet(
        date,
        currency,
        _section("assets", "资产", assets),
        _section("liabilities", "负债", liabilities),
        _section("equity", "所有者权益", equity),
    )


@dataclass(frozen=True)
class IncomeStatement:
    """利润表 over a date range; see the module docstring."""

    date_from: dt.date
    date_to: dt.date
    currency: str
    income: StatementSection  # credits − debits
    expenses: StatementSection  # debits − credits

    @property
    def net_profit(self) -> int:
        """Total income less total expenses (negative: a loss)."""
        return self.income.total - self.expenses.total

    def to_table(self) -> Table:
        """Income rows and total, expense rows and total, then net profit."""
        c = self.currency
        rows: list[tuple[str, ...]] = []
        _section_rows(rows, self.income, c)
        rows.append(("income", "", "收入合计", "Total income", "", _money(self.income.total, c)))
        _section_rows(rows, self.expenses, c)
        rows.append(("expenses", "", "费用合计", "Total expenses", "", _money(self.expenses.total, c)))
        rows.append(("", "", "净利润", "Net profit", "", _money(self.net_profit, c)))
        return Table(
            title=f"利润表 Income statement {c} {self.date_from.isoformat()} {self.date_to.isoformat()}",
            columns=STATEMENT_COLUMNS,
            rows=tuple(rows),
            amount_columns=("amount",),
        )


def income_statement(
    conn: Connection, *, date_from: dt.date, date_to: dt.date, currency: str = "CNY"
) -> IncomeStatement:
    """利润表 from ``date_from`` to ``date_to`` (both included), closing vouchers left out; see the module docstring."""
    _check_range(date_from, date_to)
    money.currency(currency)
    chart = load_subjects(conn)
    profit_and_loss = [code for code, subject in chart.items() if subject.type in ("income", "expense")]
    rolled = _rolled_up(
        chart,
        _subject_sums(
            conn,
            currency=currency,
            date_from=date_from,
            date_to=date_to,
            codes=profit_and_loss,
            exclude_closing=True,
        ),
    )
    active = {code for code, (debit, credit) in rolled.items() if debit or credit}
    tops = [code for code, subject in chart.items() if subject.parent_code is None]
    income = _rows(
        chart,
        {code: credit - debit for code, (debit, credit) in rolled.items()},
        [code for code in tops if chart[code].type == "income"],
        keep_zero=active,
    )
    expenses = _rows(
        chart,
        {code: debit - credit for code, (debit, credit) in rolled.items()},
        [code for code in tops if chart[code].type == "expense"],
        keep_zero=active,
    )
    return IncomeStatement(
        date_from, date_to, currency, _section("income", "收入", income), _section("expenses", "费用", expenses)
    )
