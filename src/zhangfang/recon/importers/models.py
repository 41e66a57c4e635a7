"""The shapes every importer produces: normalized statement lines, line errors and running totals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Literal

from zhangfang.money import format_minor

Kind = Literal["payment", "refund", "credit", "debit"]
Direction = Literal["credit", "debit"]

# Stable codes of ``LineError.code``; the reason text says what exactly was wrong.
LINE_CODES = (
    "line_invalid",  # the default of a LineError built without a code (the importers always give one)
    "file_unreadable",  # not a zip/gzip it claims to be, XML not well-formed, nothing recognisable in it
    "header_missing",  # the bill's column header row was not found
    "encoding_invalid",  # the line has bytes that are not text in the file's encoding
    "column_count_invalid",  # a detail row with another number of columns than the header
    "kind_unknown",  # 业务类型 / 交易状态 / trade type / credit-debit mark not one the format has
    "status_unknown",  # camt ``Sts`` not BOOK/PDNG/INFO/FUTR
    "amount_invalid",  # not an amount, too many decimals, out of range
    "amount_sign_invalid",  # zero, or the sign the format does not use for this kind of line
    "fee_invalid",  # fee not an amount, or with the sign the format does not use
    "currency_unknown",  # not an ISO 4217 code with a minor unit
    "time_invalid",  # a date or time that does not parse
    "tag_invalid",  # an MT940 field the mt-940 library cannot read
    "batch_amount_mismatch",  # camt batch entry whose transactions do not add up to it
    "summary_missing",  # a channel bill that ends without its own summary (truncated file)
    "summary_mismatch",  # the bill's summary disagrees with its detail lines
    "balance_missing",  # a bank statement without opening or closing balance
    "balance_mismatch",  # opening + credits - debits != closing, or camt TxsSummry disagrees
)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One record of a bill or bank statement, in our terms.

    Constraints
    - ``line_no``: 1-based line of the file where the record starts (camt.053: the
      line of the ``Ntry``, or of the ``TxDtls`` for a split batch entry).
    - ``kind``: ``payment``/``refund`` on channel bills, ``credit``/``debit`` on bank statements.
    - ``direction``: money into our account is ``credit``: payments and credits;
      refunds and debits are ``debit``.
    - ``amount``: minor units, > 0 (the direction says which way it went).
    - ``fee``: minor units, >= 0, the channel's service fee on this line. On a
      payment it is the fee charged; on a refund it is the fee the channel gives
      back (WeChat Pay prints it negative, ``-0.06`` → 6; Alipay prints the sign
      of the money movement: its magnitude is kept). Bank statements: 0.
    - ``channel_ref``: the channel's number (trade no, refund no, bank reference);
      ``order_ref``: our number as the channel knows it (``pat_…`` for a payment
      attempt, ``rfd_…`` for a refund, the end-to-end id on a bank statement);
      ``original_ref``: on a refund, the payment's ``order_ref`` when the bill has it.
    - ``occurred_at``: UTC, aware (bill times are Beijing time, UTC+8); None when
      the format gives only dates. ``value_date``/``booking_date``: as the bank wrote them.
    """

    line_no: int
    kind: Kind
    channel_ref: str | None
    order_ref: str | None
    original_ref: str | None
    amount: int
    fee: int
    currency: str
    direction: Direction
    status: str | None
    occurred_at: dt.datetime | None
    value_date: dt.date | None
    description: str
    booking_date: dt.date | None = None

    def __post_init__(self) -> None:
        # One expression: this runs for every line of a million-line bill.
        assert (
            self.amount > 0
            and self.fee >= 0
            and self.line_no >= 1
            and (self.direction == "credit") is (self.kind == "payment" or self.kind == "credit")
            and (self.occurred_at is None or self.occurred_at.tzinfo is dt.UTC)
        ), self


_KIND_DIRECTIONS = frozenset({("payment", "credit"), ("credit", "credit"), ("refund", "debit"), ("debit", "debit")})


@dataclass(frozen=True, slots=True)
class LineBatch:
    """Accepted records of one stretch of a file, column by column: the fields of ``StatementLine``, as lists.

    What the bulk path of a parser gives (a block of plain detail rows read with a few calls per
    column, not per row) and what ``StatementReader.batches`` hands out; ``lines()`` gives the same
    records as ``StatementLine`` objects. The constraints are ``StatementLine``'s, checked per batch.
    """

    line_no: list[int]
    kind: list[str]
    channel_ref: list[str | None]
    order_ref: list[str | None]
    original_ref: list[str | None]
    amount: list[int]
    fee: list[int]
    currency: list[str]
    direction: list[str]
    status: list[str | None]
    occurred_at: list[dt.datetime | None]
    value_date: list[dt.date | None]
    description: list[str]
    booking_date: list[dt.date | None]

    def __post_init__(self) -> None:
        count = len(self.line_no)
        assert all(len(getattr(self, name)) == count for name in self.__slots__), "columns of unequal length"
        assert count == 0 or (
            min(self.amount) > 0
            and min(self.fee) >= 0
            and min(self.line_no) >= 1
            and set(zip(self.kind, self.direction, strict=True)) <= _KIND_DIRECTIONS
            and {at.tzinfo for at in set(self.occurred_at) if at is not None} <= {dt.UTC}
        ), "a batch breaks a StatementLine constraint"

    def __len__(self) -> int:
        return len(self.line_no)

    @classmethod
    def of(cls, lines: list[StatementLine]) -> LineBatch:
        """The batch of these lines."""
        columns = zip(*((*line_fields(line),) for line in lines), strict=True) if lines else [[]] * 14
        return cls(*(list(column) for column in columns))

    def lines(self) -> Iterator[StatementLine]:
        """The batch's records, one ``StatementLine`` each, in file order."""
        return map(StatementLine, *(getattr(self, name) for name in self.__slots__))


def line_fields(line: StatementLine) -> tuple[Any, ...]:
    """A line's fields in ``StatementLine``'s order (a tuple, not ``dataclasses.astuple``'s deep copy)."""
    return (
        line.line_no, line.kind, line.channel_ref, line.order_ref, line.original_ref, line.amount, line.fee,
        line.currency, line.direction, line.status, line.occurred_at, line.value_date, line.description,
        line.booking_date,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LineError:
    """A record the importer could not accept, or a disagreement of the file with itself.

    ``line_no`` is the 1-based line the problem is on (for a summary or balance
    disagreement: the summary or closing-balance line; 0: the file as a whole,
    e.g. an archive that cannot be opened). ``reason`` is for people and stable
    for the same input; ``code`` is one of ``LINE_CODES``.
    """

    line_no: int
    reason: str
    code: str = "line_invalid"


@dataclass
class CurrencyTotals:
    """Counts and sums of the accepted lines in one currency (minor units), plus the statement balances."""

    currency: str
    line_count: int = 0
    credit_count: int = 0
    credit_sum: int = 0
    debit_count: int = 0
    debit_sum: int = 0
    fee_sum: int = 0  # net: fees charged on credit lines minus fees given back on debit lines
    opening_balance: int | None = None  # signed; first statement of the file in this currency
    closing_balance: int | None = None  # signed; last statement of the file in this currency

    def as_json(self) -> dict[str, Any]:
        def text(value: int | None) -> str | None:
            return None if value is None else format_minor(value, self.currency)

        return {
            "line_count": self.line_count,
            "credit_count": self.credit_count,
            "credit_sum": self.credit_sum,
            "credit_sum_text": text(self.credit_sum),
            "debit_count": self.debit_count,
            "debit_sum": self.debit_sum,
            "debit_sum_text": text(self.debit_sum),
            "fee_sum": self.fee_sum,
            "opening_balance": self.opening_balance,
            "opening_balance_text": text(self.opening_balance),
            "closing_balance": self.closing_balance,
            "closing_balance_text": text(self.closing_balance),
        }


@dataclass(frozen=True)
class StatementBalance:
    """One bank statement of the file (an MT940 ``:20:`` block or page, a camt ``Stmt``) and its balance check."""

    line_no: int  # the closing balance's line
    account: str | None
    currency: str
    opening_balance: int
    closing_balance: int
    credit_sum: int  # booked lines of this statement that were accepted
    debit_sum: int
    closing_date: dt.date | None

    @property
    def agrees(self) -> bool:
        return self.opening_balance + self.credit_sum - self.debit_sum == self.closing_balance


@dataclass
class BillSummary:
    """What a channel bill says about itself in its summary or footer lines.

    ``figures`` keeps every figure under the file's own label (counts as ``int``,
    amounts in minor units, signed as written). The named fields are the same
    figures in our terms, None where the format does not state them.
    """

    line_no: int
    figures: dict[str, int] = field(default_factory=dict)
    line_count: int | None = None  # detail rows, payments and refunds
    payment_count: int | None = None
    payment_sum: int | None = None
    refund_count: int | None = None
    refund_sum: int | None = None  # positive
    fee_sum: int | None = None  # net, as the file sums it


@dataclass
class ParseTotals:
    """Running totals of a reader; complete once the reader is exhausted (``complete``).

    Per currency: the accepted lines' counts and sums (``currencies``). Bank
    statements: each statement's balances (``statements``; per currency, the
    file's first opening and last closing balance) and their dates. Channel bills:
    the bill date(s) (``statement_dates``) and the file's own summary
    (``summary``), and whether the detail lines agree with it (``summary_agrees``;
    None while unknown or when the format has no summary). Every disagreement
    is also a ``LineError``.
    """

    format: str
    currencies: dict[str, CurrencyTotals] = field(default_factory=dict)
    line_count: int = 0
    error_count: int = 0
    statement_dates: list[dt.date] = field(default_factory=list)
    statements: list[StatementBalance] = field(default_factory=list)
    summary: BillSummary | None = None
    summary_agrees: bool | None = None
    complete: bool = False

    @property
    def valid(self) -> bool:
        """Read to the end without a single ``LineError``."""
        return self.complete and self.error_count == 0

    def currency(self, code: str) -> CurrencyTotals:
        found = self.currencies.get(code)
        if found is None:
            found = self.currencies[code] = CurrencyTotals(code)
        return found

    def add_line(self, line: StatementLine) -> None:
        totals = self.currencies.get(line.currency) or self.currency(line.currency)
        totals.line_count += 1
        self.line_count += 1
        if line.direction == "credit":
            totals.credit_count += 1
            totals.credit_sum += line.amount
            totals.fee_sum += line.fee
        else:
            totals.debit_count += 1
            totals.debit_sum += line.amount
            totals.fee_sum -= line.fee

    def add_batch(self, batch: LineBatch) -> None:
        """``add_line`` for every line of ``batch``, a few calls per column."""
        codes = set(batch.currency)
        if len(codes) > 1:
            for line in batch.lines():
                self.add_line(line)
            return
        if not codes:
            return
        totals = self.currency(codes.pop())
        count = len(batch)
        credits = batch.direction.count("credit")
        totals.line_count += count
        self.line_count += count
        totals.credit_count += credits
        totals.debit_count += count - credits
        if credits == count:
            totals.credit_sum += sum(batch.amount)
            totals.fee_sum += sum(batch.fee)
            return
        credit = [direction == "credit" for direction in batch.direction]
        debit = [not flag for flag in credit]
        totals.credit_sum += sum(compress(batch.amount, credit))
        totals.debit_sum += sum(compress(batch.amount, debit))
        totals.fee_sum += sum(compress(batch.fee, credit)) - sum(compress(batch.fee, debit))

    def add_statement_date(self, day: dt.date) -> None:
        if day not in self.statement_dates:
            self.statement_dates.append(day)

    def add_statement(self, statement: StatementBalance) -> None:
        self.statements.append(statement)
        totals = self.currency(statement.currency)
        if totals.opening_balance is None:
            totals.opening_balance = statement.opening_balance
        totals.closing_balance = statement.closing_balance
        if statement.closing_date is not None:
            self.add_statement_date(statement.closing_date)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view: plain types, amounts in minor units (with a text form), dates ISO."""
        summary = None
        if self.summary is not None:
            summary = {
                "line_no": self.summary.line_no,
                "figures": dict(self.summary.figures),
                "line_count": self.summary.line_count,
                "payment_count": self.summary.payment_count,
                "payment_sum": self.summary.payment_sum,
                "refund_count": self.summary.refund_count,
                "refund_sum": self.summary.refund_sum,
                "fee_sum": self.summary.fee_sum,
            }
        return {
            "format": self.format,
            "complete": self.complete,
            "line_count": self.line_count,
            "error_count": self.error_count,
            "currencies": {code: totals.as_json() for code, totals in sorted(self.currencies.items())},
            "statement_dates": [day.isoformat() for day in self.statement_dates],
            "statements": [
                {
                    "line_no": s.line_no,
                    "account": s.account,
                    "currency": s.currency,
                    "opening_balance": s.opening_balance,
                    "closing_balance": s.closing_balance,
                    "credit_sum": s.credit_sum,
                    "debit_sum": s.debit_sum,
                    "closing_date": None if s.closing_date is None else s.closing_date.isoformat(),
                    "agrees": s.agrees,
                }
                for s in self.statements
            ],
            "summary": summary,
            "summary_agrees": self.summary_agrees,
        }
