"""The directly connected banks' own trade bills (直连对账单), read through their ``BankProfile.bill`` layout.

The layout is data (``zhangfang.channels.bank_direct.BillLayout``): encoding,
delimiter, ``#`` preamble and footer templates, columns by logical name, and the
labels of kinds and currencies. The simulator renders bills from it and this
module reads them back with the same description, so a new bank profile needs
no new importer. ``profile`` is ``ICBC``/``CMB`` or their code; left out, the
profile is recognised from the first line (its header row or first preamble line).

Mapping
- ``kind``: the profile's kind label (``PAY``/``REFUND``, ``支付``/``退款``).
- payment: ``channel_ref`` the bank's trade number, ``order_ref`` our
  ``out_trade_no`` (the payment attempt ``pat_…``).
- refund: ``channel_ref`` the bank's refund number, ``order_ref`` our
  ``out_refund_no`` (``rfd_…``), ``original_ref`` our ``out_trade_no``.
- ``amount``: fen or yuan as the profile writes them; refunds are positive, or
  negative where the layout says ``refunds_negative`` (another sign is a
  ``LineError``). ``fee``: the bank's fee, never negative (0 on refunds).
- ``status``: None (the bill lists only succeeded trades and has no status
  column); ``occurred_at``: the trade time (Asia/Shanghai) in UTC;
  ``description``: the subject. The bill date (preamble or column) is the
  statement date.

Self-check: the footer's figures (row, payment and refund counts and totals, fee
total: whichever the template has) must match the detail rows; a bill without
its footer is truncated. Either is a ``LineError`` on the footer line.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterator
from typing import BinaryIO

from zhangfang.channels.bank_direct import PROFILES, BankProfile
from zhangfang.recon.importers._common import (
    BEIJING,
    BadValue,
    Parser,
    mismatch,
    only_member,
    records,
    text_lines,
    unwrap,
)
from zhangfang.recon.importers.models import BillSummary, LineError, ParseTotals, StatementLine

_FIELD = re.compile(r"\{(\w+)\}")
_COUNTS = {"row_count": "line_count", "payment_count": "payment_count", "refund_count": "refund_count"}
_AMOUNTS = {"payment_total": "payment_sum", "refund_total": "refund_sum", "fee_total": "fee_sum"}


def _template(template: str) -> tuple[str, re.Pattern[str]]:
    """A preamble/footer ``str.format`` template as (its literal start, a regex with one group per field)."""
    parts = _FIELD.split(template)
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>.*?)" for i, part in enumerate(parts))
    return parts[0], re.compile(pattern + r"\s*$")


def _python_encoding(encoding: str) -> str:
    lowered = encoding.lower().replace("_", "-")
    if lowered in ("gbk", "gb2312", "cp936"):
        return "gb18030"
    if lowered in ("utf-8", "utf8"):
        return "utf-8-sig"
    return encoding


def detect_profile(first_line: bytes) -> BankProfile | None:
    """The profile whose header row or first preamble line ``first_line`` is."""
    for profile in PROFILES.values():
        layout = profile.bill
        text = first_line.decode(_python_encoding(layout.encoding), errors="replace").rstrip("\r\n")
        if text == layout.delimiter.join(title for title, _ in layout.columns):
            return profile
        if layout.preamble and _template(layout.preamble[0])[1].match(text):
            return profile
    return None


class BankDirectParser(Parser):
    def __init__(
        self, stream: BinaryIO, totals: ParseTotals, *, currency: str, profile: BankProfile | None = None
    ) -> None:
        super().__init__(stream, totals, currency=currency)
        self.profile = profile

    def items(self) -> Iterator[StatementLine | LineError]:
        stream = unwrap(self.stream, only_member)
        first = stream.readline()
        profile = self.profile or detect_profile(first)
        if profile is None:
            self.line_no = 1
            yield LineError(
                1, "not a bank bill of a known profile (icbc, cmb): first line not recognised", "header_missing"
            )
            return
        self.profile = profile
        layout = profile.bill
        encoding = _python_encoding(layout.encoding)
        head = first.decode(encoding, errors="replace")
        rest = text_lines(stream, encoding)
        titles = [title for title, _ in layout.columns]
        self._keys = [key for _, key in layout.columns]
        self._titles = dict(zip(self._keys, titles, strict=True))
        self._index = {key: position for position, key in enumerate(self._keys)}
        self._kinds = {label: kind for kind, label in layout.kind_labels.items()}
        self._currencies = {label: code for code, label in layout.currency_labels.items()}
        self._counted = {"row_count": 0, "payment_count": 0, "payment_total": 0, "refund_count": 0, "refund_total": 0}
        self._counted["fee_total"] = 0
        preamble = [_template(line) for line in layout.preamble]
        footers = [_template(line) for line in layout.footer]
        footer_leads = {prefix.split(layout.delimiter)[0] for prefix, _ in footers}  # a footer's first value
        header_seen = False
        footer_found: tuple[int, re.Match[str]] | None = None
        for start, end, row in records(itertools.chain([head], rest), layout.delimiter):
            if isinstance(row, str):
                self.line_no = start
                yield LineError(start, row, "column_count_invalid")
                continue
            self.line_no = start
            if len(row) == 1 and not row[0].strip():
                continue
            if ("\ufffd" in head and start == 1) or (rest.bad and rest.spans_bad(start - 1, end - 1)):
                yield LineError(start, f"the line is not valid {layout.encoding.upper()} text", "encoding_invalid")
                continue
            if header_seen and not row[0].startswith("#") and row[0] not in footer_leads:
                yield self._row(start, row)
                continue
            text = layout.delimiter.join(row).strip()
            if not header_seen:
                if row == titles:
                    header_seen = True
                    continue
                for _, pattern in preamble:
                    if (found := pattern.match(text)) is not None:
                        yield from self._preamble_fields(start, found)
                        break
                else:
                    if not text.startswith("#"):
                        yield LineError(start, f"a line before the column header ({titles[0]}…)", "header_missing")
                continue
            footer = next(
                (found for prefix, pattern in footers if text.startswith(prefix) and (found := pattern.match(text))),
                None,
            )
            if footer is not None:
                if any(name in _COUNTS or name in _AMOUNTS for name in footer.groupdict()):
                    footer_found = (start, footer)
            elif not text.startswith("#"):
                yield self._row(start, row)
        if not header_seen:
            yield LineError(self.line_no, f"no bill header row ({layout.delimiter.join(titles)})", "header_missing")
            return
        yield from self._check_footer(footer_found)

    def _preamble_fields(self, line_no: int, found: re.Match[str]) -> Iterator[LineError]:
        bill_date = found.groupdict().get("bill_date")
        if bill_date is not None:
            assert self.profile is not None
            try:
                self.totals.add_statement_date(self.profile.date_from_wire(bill_date))
            except ValueError:
                yield LineError(line_no, f"bill date {bill_date!r} is not a date", "time_invalid")

    def _row(self, line_no: int, row: list[str]) -> StatementLine | LineError:
        profile = self.profile
        assert profile is not None
        layout = profile.bill
        if len(row) != len(self._keys):
            return LineError(line_no, f"{len(row)} columns, the header has {len(self._keys)}", "column_count_invalid")
        index = self._index

        def cell(key: str) -> str:
            return row[index[key]].strip() if key in index else ""

        self._counted["row_count"] += 1
        kind = self._kinds.get(cell("kind"))
        if kind is None:
            labels = " or ".join(self._kinds)
            return LineError(line_no, f"{self._titles['kind']} {cell('kind')!r} is not {labels}", "kind_unknown")
        try:
            currency = self._currencies.get(cell("currency")) if "currency" in index else self.currency
            if currency is None:
                raise BadValue(
                    f"{self._titles['currency']} {cell('currency')!r} is not a known currency", "currency_unknown"
                )
            amount = self._amount("amount", cell("amount"))
            self._counted[f"{kind}_count"] += 1
            self._counted[f"{kind}_total"] += abs(amount)
            negative = kind == "refund" and layout.refunds_negative
            if (amount >= 0) if negative else (amount <= 0):
                sign = "negative" if negative else "positive"
                raise BadValue(
                    f"{self._titles['amount']} {cell('amount')} of a {kind} must be {sign}", "amount_sign_invalid"
                )
            fee = self._amount("fee", cell("fee")) if "fee" in index and cell("fee") else 0
            self._counted["fee_total"] += fee
            if fee < 0:
                raise BadValue(f"{self._titles['fee']} {cell('fee')} must not be negative", "fee_invalid")
            occurred_at = self._time(cell)
            if "bill_date" in index:
                try:
                    self.totals.add_statement_date(profile.date_from_wire(cell("bill_date")))
                except ValueError:
                    raise BadValue(
                        f"{self._titles['bill_date']} {cell('bill_date')!r} is not a date", "time_invalid"
                    ) from None
        except BadValue as error:
            return LineError(line_no, error.reason, error.code)
        payment = kind == "payment"
        return StatementLine(
            line_no=line_no,
            kind=kind,  # type: ignore[arg-type]
            channel_ref=(cell("bank_trade_no") if payment else cell("bank_refund_no")) or None,
            order_ref=(cell("out_trade_no") if payment else cell("out_refund_no")) or None,
            original_ref=None if payment else (cell("out_trade_no") or None),
            amount=abs(amount),
            fee=fee,
            currency=currency,
            direction="credit" if payment else "debit",
            status=None,
            occurred_at=occurred_at,
            value_date=None,
            description=cell("subject"),
        )

    def _amount(self, key: str, text: str) -> int:
        assert self.profile is not None
        try:
            return self.profile.amount_from_wire(text)
        except ValueError as error:
            raise BadValue(
                f"{self._titles[key]}: {error}", "fee_invalid" if key == "fee" else "amount_invalid"
            ) from None

    def _time(self, cell: object) -> dt.datetime:
        assert self.profile is not None and callable(cell)
        layout = self.profile.bill
        if "occurred_at" in self._index:
            text, pattern, title = cell("occurred_at"), layout.occurred_at_format, self._titles["occurred_at"]
        else:
            text = f"{cell('occurred_date')} {cell('occurred_time')}"
            pattern = f"{layout.occurred_date_format} {layout.occurred_time_format}"
            title = f"{self._titles.get('occurred_date', '')}/{self._titles.get('occurred_time', '')}"
        try:
            local = dt.datetime.strptime(text, pattern)
        except ValueError:
            raise BadValue(f"{title} {text!r} is not a time ({pattern})", "time_invalid") from None
        return local.replace(tzinfo=BEIJING).astimezone(dt.UTC)

    def _check_footer(self, footer: tuple[int, re.Match[str]] | None) -> Iterator[LineError]:
        if footer is None:
            self.totals.summary_agrees = False
            yield LineError(self.line_no, "the bill ends without its totals line (truncated?)", "summary_missing")
            return
        line_no, found = footer
        summary = BillSummary(line_no=line_no)
        problems: list[LineError] = []
        currencies = {code for code in self.totals.currencies} or {self.currency}
        code = next(iter(currencies)) if len(currencies) == 1 else None
        for name, text in found.groupdict().items():
            try:
                if name in _COUNTS:
                    if not text.isdigit():
                        raise BadValue(f"{name} {text!r} is not a count", "summary_mismatch")
                    value = int(text)
                    setattr(summary, _COUNTS[name], value)
                elif name in _AMOUNTS:
                    value = self._amount("amount", text)
                    setattr(summary, _AMOUNTS[name], value)
                else:
                    continue
            except BadValue as error:
                problems.append(LineError(line_no, error.reason, "summary_mismatch"))
                continue
            summary.figures[name] = value
            counted = self._counted[name]
            if value != counted:
                problems.append(
                    LineError(
                        line_no, mismatch(name, value, counted, None if name in _COUNTS else code), "summary_mismatch"
                    )
                )
        self.totals.summary = summary
        self.totals.summary_agrees = not problems
        yield from problems
