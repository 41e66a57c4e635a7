"""The books as a beancount v3 file (复核导出), so an independent tool can check them.

``export_beancount`` writes the posted vouchers (up to a date, or all) as a
plain-text beancount ledger: ``bean-check`` then recomputes every balance on
its own and compares it with zhangfang's trial balance, written into the file
as balance assertions. A file that passes proves, with software zhangfang does
not control, that every voucher balances and that the trial balance is the sum
of the vouchers.

The file, in order:

- a comment saying what it is, who made it and when; ``option "title"`` and
  ``option "operating_currency" "CNY"``;
- one ``open`` per subject a voucher uses, dated the first voucher's date, with
  the currencies it is used in and the subject's code, names (``name_zh``,
  ``name_en``), type and normal side as metadata. The account is the root of the
  subject's type (asset → ``Assets``, liability → ``Liabilities``, equity →
  ``Equity``, income → ``Income``, expense → ``Expenses``; common (共同类, kept
  debit-normal) → ``Assets``) followed by the codes from the top-level subject
  down: ``Assets:1002:100202``, ``Liabilities:2241:224101``. A code that starts
  with a lowercase letter (a custom chart may have one; beancount names may
  not) is written ``C-<code>``, which no code can collide with (codes have no
  ``-``);
- one transaction per voucher, in date and number order: ``YYYY-MM-DD *
  "摘要"`` with the voucher's label (``voucher: "记-2026-11-0001"``), ``ref`` and
  ``kind`` as metadata, and one posting per line, debit positive and credit
  negative, the amount in the voucher's currency with the currency's decimals.
  The auxiliary value (辅助核算) is posting metadata (``aux: "merchant:m001"``,
  with ``dimension``), never part of the account name;
- one ``balance`` assertion per account and currency, dated the day after the
  last exported voucher (beancount checks a balance at the start of its day),
  with the closing balance of zhangfang's trial balance (``reports.trial_balance``),
  debit positive. Vouchers book to leaf subjects only, so every account is a
  leaf; should a parent subject ever carry lines, its assertion is the trial
  balance's rolled-up row, which is what beancount sums for a parent (the
  account and every account below it).

Strings are written in double quotes with ``\\``, ``"``, newlines, carriage
returns and tabs escaped. Amounts are the integers of the books formatted by
``money.format_minor``: no float on the way.

The vouchers are streamed, line by line, so the file's size is not held in
memory. The export reads the books several times (the accounts, the vouchers,
the trial balance): run it in one read-only transaction, on PostgreSQL a
``REPEATABLE READ`` one if vouchers may be posted meanwhile, so that all three
see the same books.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang import money
from zhangfang.accounting import reports
from zhangfang.accounting.tables import voucher_lines, vouchers

# The beancount root account each subject type is kept under.
ROOTS: dict[str, str] = {
    "asset": "Assets",
    "liability": "Liabilities",
    "equity": "Equity",
    "income": "Income",
    "expense": "Expenses",
    "common": "Assets",  # 共同类: clearing accounts, kept debit-normal in the books
}

OPERATING_CURRENCY = "CNY"
STREAM_BATCH = 1000  # rows fetched at a time from the database


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    vouchers: int  # transactions
    postings: int  # voucher lines
    accounts: int  # open directives
    assertions: int  # balance assertions
    first_date: dt.date | None  # the first and last voucher dates exported (None: no voucher)
    last_date: dt.date | None


def quote(text: str) -> str:
    """A beancount string literal: in double quotes, with backslashes, quotes and line breaks escaped."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _component(code: str) -> str:
    # Beancount account components start with an uppercase letter or a digit; subject codes are
    # letters and digits, so only a leading lowercase letter needs the (collision-free) prefix.
    return code if code[:1].isdigit() or code[:1].isupper() else f"C-{code}"


def account_name(chart: dict[str, reports.SubjectInfo], code: str) -> str:
    """The beancount account of a subject: its type's root, then the codes from the top-level subject down."""
    chain = reports.ancestors(chart, code)
    return ":".join([ROOTS[chart[code].type], *(_component(item) for item in reversed(chain))])


def _whole(amount: int | Decimal) -> int:
    # PostgreSQL sums BIGINT columns as NUMERIC, so the trial balance may hand back whole Decimals.
    whole = int(amount)
    if whole != amount:
        raise AssertionError(f"a balance of minor units must be whole, got {amount!r}")
    return whole


def voucher_label(period: str, number: int) -> str:
    """A posted voucher's number as finance staff write it (as ``models.Voucher.label``)."""
    return f"记-{period}-{number:04d}"


def export_beancount(
    conn: Connection,
    out: TextIO,
    *,
    through: dt.date | None = None,
    now: dt.datetime | None = None,
) -> ExportSummary:
    """Write the posted vouchers dated up to ``through`` (default: all) to ``out`` as beancount v3; see the module."""
    now = now or dt.datetime.now(dt.UTC)
    line, v = voucher_lines, vouchers
    exported = v.c.state == "posted"
    if through is not None:
        exported = sa.and_(exported, v.c.voucher_date <= through)
    chart = reports.load_subjects(conn)

    used = conn.execute(
        sa.select(
            line.c.subject_code,
            v.c.currency,
            sa.func.min(v.c.voucher_date).label("first"),
            sa.func.max(v.c.voucher_date).label("last"),
        )
        .select_from(line.join(v, v.c.id == line.c.voucher_id))
        .where(exported)
        .group_by(line.c.subject_code, v.c.currency)
    ).all()
    currencies: dict[str, set[str]] = defaultdict(set)
    for row in used:
        currencies[row.subject_code].add(row.currency)
    first_date = min((row.first for row in used), default=None)
    last_date = max((row.last for row in used), default=None)
    accounts = {code: account_name(chart, code) for code in currencies}

    out.write("; zhangfang (账房) books exported as a beancount v3 ledger, for independent checking (bean-check).\n")
    out.write(f"; Generated by zhangfang at {now.isoformat(timespec='seconds')}.\n")
    if first_date is None:
        out.write(
            "; No posted voucher"
            + (f" dated on or before {through.isoformat()}" if through is not None else "")
            + ".\n"
        )
    else:
        assert last_date is not None
        out.write(
            f"; Posted vouchers dated {first_date.isoformat()} to {last_date.isoformat()}, one transaction each;\n"
            f"; the balance assertions dated {(last_date + dt.timedelta(days=1)).isoformat()} are zhangfang's "
            "own trial balance.\n"
        )
    title = "zhangfang books" + (f" through {last_date.isoformat()}" if last_date else "")
    out.write(f"\noption {quote('title')} {quote(title)}\n")
    out.write(f"option {quote('operating_currency')} {quote(OPERATING_CURRENCY)}\n")

    if first_date is not None:
        out.write("\n")
        for code in sorted(accounts, key=lambda code: accounts[code]):
            subject = chart[code]
            out.write(f"{first_date.isoformat()} open {accounts[code]} {','.join(sorted(currencies[code]))}\n")
            out.write(f"  code: {quote(code)}\n")
            out.write(f"  name_zh: {quote(subject.name_zh)}\n")
            out.write(f"  name_en: {quote(subject.name_en)}\n")
            out.write(f"  type: {quote(subject.type)}\n")
            out.write(f"  normal_side: {quote(subject.normal_side)}\n")

    voucher_count = posting_count = 0
    current: int | None = None
    rows = conn.execute(
        sa.select(
            v.c.id,
            v.c.voucher_date,
            v.c.period,
            v.c.number,
            v.c.ref,
            v.c.kind,
            v.c.summary,
            v.c.currency,
            line.c.subject_code,
            line.c.dimension,
            line.c.aux,
            line.c.debit,
            line.c.credit,
        )
        .select_from(line.join(v, v.c.id == line.c.voucher_id))
        .where(exported)
        .order_by(v.c.voucher_date, v.c.period, v.c.number, v.c.id, line.c.line_no),
        execution_options={"yield_per": STREAM_BATCH},
    )
    for row in rows:
        if row.id != current:
            current = row.id
            voucher_count += 1
            out.write(f"\n{row.voucher_date.isoformat()} * {quote(row.summary)}\n")
            out.write(f"  voucher: {quote(voucher_label(row.period, row.number))}\n")
            out.write(f"  ref: {quote(row.ref)}\n")
            out.write(f"  kind: {quote(row.kind)}\n")
        posting_count += 1
        amount = money.format_minor(row.debit - row.credit, row.currency)
        out.write(f"  {accounts[row.subject_code]}  {amount} {row.currency}\n")
        if row.dimension is not None:
            out.write(f"    dimension: {quote(row.dimension)}\n")
        if row.aux:
            out.write(f"    aux: {quote(row.aux)}\n")

    assertion_count = 0
    if last_date is not None:
        balance_date = (last_date + dt.timedelta(days=1)).isoformat()
        trial = reports.trial_balance(conn, date=last_date)
        closing = {
            (row.subject.code, row.currency): _whole(row.closing_debit - row.closing_credit) for row in trial.rows
        }
        out.write(f"\n; Closing balances at the end of {last_date.isoformat()}: zhangfang's trial balance.\n")
        for code in sorted(accounts, key=lambda code: accounts[code]):
            for currency in sorted(currencies[code]):
                net = closing.get((code, currency), 0)
                out.write(f"{balance_date} balance {accounts[code]}  {money.format_minor(net, currency)} {currency}\n")
                assertion_count += 1
    return ExportSummary(
        vouchers=voucher_count,
        postings=posting_count,
        accounts=len(accounts),
        assertions=assertion_count,
        first_date=first_date,
        last_date=last_date,
    )
