"""SWIFT MT940 customer statements, read through the ``mt-940`` library (``import mt940``).

How it streams: the file is read a line at a time and cut into fields
(``:61:``, ``:86:``, …) here, keeping each field's line number. The library only
parses whole strings, so it is handed one complete field at a time
(``mt940.models.Transactions.parse``), into the current statement's
``Transactions``, which never holds more than the one ``:61:`` waiting for its
``:86:``: a line is given out, and forgotten, when the next field that is not
its ``:86:`` arrives. Files may carry SWIFT envelope lines (``{1:…}{4:``,
``-}``) and ``-`` separators; they are skipped. Lines are UTF-8, or Latin-1
where they are not (SWIFT's character set is ASCII; banks add their umlauts).

Mapping (statements.md, "MT940")
- each ``:61:`` → ``credit`` (mark ``C`` or ``RD``, a reversed debit) or
  ``debit`` (``D`` or ``RC``), ``amount`` the 15d amount, ``currency`` the
  statement's (``:60F:``), ``value_date`` the value date, ``booking_date`` the
  entry date, ``channel_ref`` the bank reference (after ``//``), ``order_ref``
  the customer reference (``NONREF`` is none), ``status`` the mark as written,
  ``description`` the supplementary details and the following ``:86:``, ``fee`` 0,
  ``occurred_at`` None (MT940 has dates only).
- a ``:20:`` starts a statement; its opening balance is ``:60F:``/``:60M:``
  (or ``:60:``), its closing balance ``:62F:``/``:62M:`` (or ``:62:``), signed
  (D is negative). A ``:86:`` after the closing balance describes the statement
  and is not given to any line.
- every field the library cannot read is a ``LineError`` on the field's line.

Self-check per statement (each ``:20:`` block, so each page of a multi-page
statement): opening + credits - debits must equal closing, else a
``balance_mismatch`` on the closing balance's line; a statement without either
balance is ``balance_missing``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import mt940

from zhangfang.money import AmountHasTooManyDecimals, AmountOutOfRange, format_minor, is_known_currency, to_minor
from zhangfang.recon.importers._common import Parser, only_member, unwrap
from zhangfang.recon.importers.models import LineError, StatementBalance, StatementLine

_TAG = re.compile(r"^:(?P<tag>[0-9]{2}[A-Z]?|NS):")
_ENVELOPE = re.compile(r"^(\{|-\}?\s*$)")
_OPENING = ("final_opening_balance", "intermediate_opening_balance", "opening_balance")
_CLOSING = ("final_closing_balance", "intermediate_closing_balance", "closing_balance")
_CLOSING_TAGS = ("62F", "62M", "62", "64", "65")
_CREDIT_MARKS = {"C": "credit", "RD": "credit", "D": "debit", "RC": "debit"}
_STRUCTURED_DETAILS = ("posting_text", "purpose", "additional_purpose", "applicant_name", "recipient_name")


@dataclass
class _Pending:
    """A ``:61:`` read, waiting for its ``:86:``; the fields are copied before ``:86:`` can overwrite them."""

    line_no: int
    transaction: Any  # mt940.models.Transaction
    fields: dict[str, Any]


@dataclass
class _Statement:
    line_no: int
    transactions: Any = field(default_factory=lambda: mt940.models.Transactions())
    credit_sum: int = 0
    debit_sum: int = 0
    closing_line_no: int | None = None


class Mt940Parser(Parser):
    def items(self) -> Iterator[StatementLine | LineError]:
        self._statement: _Statement | None = None
        self._pending: _Pending | None = None
        tag: tuple[int, str, list[str]] | None = None  # (line, tag, value lines)
        line_no = 0
        for raw in unwrap(self.stream, only_member):
            line_no += 1
            line = _decode(raw).rstrip("\r\n")
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            found = _TAG.match(line)
            if found is None and not _ENVELOPE.match(line):
                if tag is not None:
                    tag[2].append(line)
                continue
            if tag is not None:
                self.line_no = tag[0]
                yield from self._field(*tag)
                tag = None
            if found is not None:
                tag = (line_no, found["tag"], [line[found.end() :]])
        if tag is not None:
            self.line_no = tag[0]
            yield from self._field(*tag)
        self.line_no = line_no
        yield from self._end_statement()
        if not self.totals.statements and self.totals.error_count == 0 and self.totals.line_count == 0:
            yield LineError(max(line_no, 1), "no MT940 statement (:20: … :62F:) in the file", "file_unreadable")

    def _field(self, line_no: int, tag: str, lines: list[str]) -> Iterator[StatementLine | LineError]:
        if tag == "20":
            yield from self._end_statement()
            self._statement = _Statement(line_no)
        elif self._statement is None:
            self._statement = _Statement(line_no)
        if tag == "61" or tag in _CLOSING_TAGS:
            yield from self._flush()
        statement = self._statement
        value = "\n".join(lines)
        before = len(statement.transactions.transactions)
        try:
            statement.transactions.parse(f":{tag}:{value}")
        except Exception as error:  # the library's failures (RuntimeError, ArithmeticError, ValueError…) are no API
            yield LineError(line_no, f":{tag}: {value.strip()!r} cannot be read ({_short(error)})", "tag_invalid")
            return
        if tag == "61" and len(statement.transactions.transactions) > before:
            transaction = statement.transactions.transactions[-1]
            self._pending = _Pending(line_no, transaction, dict(transaction.data))
        if tag in ("62F", "62M", "62"):
            statement.closing_line_no = line_no

    def _flush(self) -> Iterator[StatementLine | LineError]:
        """Gives out the waiting ``:61:`` line (now that its ``:86:`` is read) and forgets it."""
        pending, self._pending = self._pending, None
        if self._statement is not None:
            self._statement.transactions.transactions.clear()
        if pending is None:
            return
        data = pending.fields
        mark = str(data.get("status") or "").upper()
        direction = _CREDIT_MARKS.get(mark)
        if direction is None:
            yield LineError(pending.line_no, f":61: debit/credit mark {mark!r} is not C, D, RC or RD", "kind_unknown")
            return
        code = data.get("currency")
        if not code or not is_known_currency(code):
            reason = f":61: currency {code!r} is not known (is there an opening balance :60F: before it?)"
            yield LineError(pending.line_no, reason, "currency_unknown")
            return
        decimal_amount = data["amount"].amount
        try:
            amount = abs(to_minor(decimal_amount, code))
        except (AmountHasTooManyDecimals, AmountOutOfRange) as error:
            yield LineError(pending.line_no, f":61: amount {abs(decimal_amount)} {code}: {error}", "amount_invalid")
            return
        if amount == 0:
            yield LineError(pending.line_no, f":61: amount of 0 {code}", "amount_sign_invalid")
            return
        after = pending.transaction.data  # with what the :86: added
        parts = [str(data.get("extra_details") or "").strip(), _one_line(after.get("transaction_details"))]
        if "transaction_details" not in after:  # a structured :86: (GVC ?-subfields), read into named fields
            parts += [_one_line(after.get(key)) for key in _STRUCTURED_DETAILS]
        customer_reference = str(data.get("customer_reference") or "").strip()
        bank_reference = str(data.get("bank_reference") or "").strip()
        statement = self._statement
        assert statement is not None
        if direction == "credit":
            statement.credit_sum += amount
        else:
            statement.debit_sum += amount
        yield StatementLine(
            line_no=pending.line_no,
            kind=direction,  # type: ignore[arg-type]
            channel_ref=bank_reference or None,
            order_ref=None if customer_reference.upper() in ("", "NONREF") else customer_reference,
            original_ref=None,
            amount=amount,
            fee=0,
            currency=code,
            direction=direction,  # type: ignore[arg-type]
            status=str(data.get("status")),
            occurred_at=None,
            value_date=_date(data.get("date")),
            description=" ".join(part for part in parts if part),
            booking_date=_date(data.get("entry_date")),
        )

    def _end_statement(self) -> Iterator[StatementLine | LineError]:
        yield from self._flush()
        statement, self._statement = self._statement, None
        if statement is None:
            return
        data = statement.transactions.data
        opening = next((data[key] for key in _OPENING if key in data), None)
        closing = next((data[key] for key in _CLOSING if key in data), None)
        line_no = statement.closing_line_no or statement.line_no
        if opening is None or closing is None:
            missing = "opening balance (:60F:/:60M:)" if opening is None else "closing balance (:62F:/:62M:)"
            yield LineError(
                line_no, f"the statement starting at line {statement.line_no} has no {missing}", "balance_missing"
            )
            return
        try:
            opening_minor, code = _balance(opening)
            closing_minor, closing_code = _balance(closing)
        except ValueError as error:
            yield LineError(line_no, f"the statement's balance cannot be read: {error}", "balance_missing")
            return
        if closing_code != code:
            yield LineError(
                line_no, f"opening balance in {code} but closing balance in {closing_code}", "balance_mismatch"
            )
            return
        account = data.get("account_identification")
        balance = StatementBalance(
            line_no=line_no,
            account=str(account).strip() if account else None,
            currency=code,
            opening_balance=opening_minor,
            closing_balance=closing_minor,
            credit_sum=statement.credit_sum,
            debit_sum=statement.debit_sum,
            closing_date=_date(getattr(closing, "date", None)),
        )
        self.totals.add_statement(balance)
        if not balance.agrees:
            expected = opening_minor + statement.credit_sum - statement.debit_sum
            yield LineError(
                line_no,
                f"closing balance {format_minor(closing_minor, code)} {code} is not opening "
                f"{format_minor(opening_minor, code)} + credits {format_minor(statement.credit_sum, code)} "
                f"- debits {format_minor(statement.debit_sum, code)} = {format_minor(expected, code)}",
                "balance_mismatch",
            )


def _decode(raw: bytes) -> str:
    """A line in UTF-8, or else in Latin-1 (SWIFT's own character set is ASCII; banks add their umlauts)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _balance(balance: Any) -> tuple[int, str]:
    """A library ``Balance`` as (signed minor units, currency)."""
    amount = getattr(balance, "amount", None)
    code = getattr(amount, "currency", None)
    value = getattr(amount, "amount", None)
    if not isinstance(value, Decimal) or not isinstance(code, str) or not is_known_currency(code):
        raise ValueError(f"{balance!r} has no amount in a known currency")
    try:
        return to_minor(value, code), code
    except (AmountHasTooManyDecimals, AmountOutOfRange) as error:
        raise ValueError(str(error)) from None


def _date(value: Any) -> dt.date | None:
    """A library ``Date`` as a plain ``datetime.date`` (None stays None)."""
    if value is None:
        return None
    return dt.date(value.year, value.month, value.day)


def _one_line(text: Any) -> str:
    if not text:
        return ""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _short(error: Exception) -> str:
    text = str(error.args[0]) if error.args else type(error).__name__
    return text if len(text) <= 120 else text[:120] + "…"
