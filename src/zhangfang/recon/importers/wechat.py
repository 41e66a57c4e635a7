"""WeChat Pay's trade bill (交易账单), plain or gzip (``tar_type=GZIP``), UTF-8.

Layout (channels.md, "Trade bill file"): the detail header row, the detail rows
(every value prefixed with a backtick), the summary header row
(``总交易单数,应结订单总金额,退款总金额,…``) and the summary values row.
Columns are found by header name, so the ALL layout (27 columns) reads, and so
do SUCCESS (no refund columns: only SUCCESS rows) and REFUND (with the refund
times). Legacy headers (总金额, 代金券或立减优惠金额) are not read.

Mapping
- 交易状态 ``SUCCESS`` → ``payment``: ``amount`` 应结订单金额, ``channel_ref``
  微信订单号, ``order_ref`` 商户订单号 (our payment attempt ``pat_…``),
  ``status`` ``SUCCESS``.
- 交易状态 ``REFUND`` → ``refund``: ``amount`` 退款金额, ``channel_ref`` 微信退款单号,
  ``order_ref`` 商户退款单号 (our refund ``rfd_…``), ``original_ref`` 商户订单号,
  ``status`` 退款状态 (``SUCCESS``, ``PROCESSING``, …; ``REFUND`` when empty).
- Any other 交易状态 (``REVOKED`` …) is a ``LineError``.
- ``fee`` is |手续费|. WeChat writes the fee of a payment positive and the fee it
  gives back on a refund negative; a payment with a negative fee or a refund
  with a positive one is a ``LineError`` (the sign would be lost otherwise).
- ``currency`` 货币种类 (the reader's ``currency`` when empty); ``occurred_at``
  交易时间 (Beijing time) in UTC; ``description`` 商品名称.

Self-check: every figure of the summary row is compared with the detail rows as
written: 总交易单数 with the number of rows, and each ``…总金额`` with the
signed sum of its column (应结订单金额, 退款金额, 充值券退款金额, 手续费,
订单金额, 申请退款金额). A bill without the summary is truncated. Either is a
``LineError`` on the summary values line.
"""

from __future__ import annotations

from collections.abc import Iterator

from zhangfang.recon.importers._common import (
    _TWO_DECIMALS,
    BadValue,
    Parser,
    _exponent,
    amount_minor,
    beijing_time,
    known_currency,
    mismatch,
    only_member,
    records,
    text_lines,
    unwrap,
)
from zhangfang.recon.importers.models import BillSummary, LineError, StatementLine

ENCODING = "utf-8-sig"
# 交易状态 values a row may carry (the trade states of the v3 API): SUCCESS and REFUND are what an
# ALL bill lists in practice; the others are accepted as payment rows with that status.
TRADE_STATES = frozenset({"SUCCESS", "REFUND", "REVOKED", "CLOSED", "NOTPAY", "USERPAYING", "PAYERROR"})
HEADER_FIRST = "交易时间"
SUMMARY_FIRST = "总交易单数"
_REQUIRED = ("交易时间", "微信订单号", "商户订单号", "交易状态", "应结订单金额", "手续费")
_OPTIONAL = ("货币种类", "微信退款单号", "商户退款单号", "退款金额", "退款状态", "商品名称")
# summary label → the detail column it sums
_SUMMED = {
    "应结订单总金额": "应结订单金额",
    "退款总金额": "退款金额",
    "充值券退款总金额": "充值券退款金额",
    "手续费总金额": "手续费",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
}


def _unquote(cell: str) -> str:
    return cell[1:].strip() if cell.startswith("`") else cell.strip()


class WechatParser(Parser):
    def items(self) -> Iterator[StatementLine | LineError]:
        lines = text_lines(unwrap(self.stream, only_member), ENCODING)
        self._index: dict[str, int] | None = None
        self._width = 0
        self._row_count = 0
        self._sums: dict[str, int] = {}
        self._summed: list[tuple[str, int]] = []  # (summary label, column index)
        self._bill_currency = self.currency  # the summary's amounts are in the rows' currency
        summary_header: list[str] | None = None
        summary_values: tuple[int, list[str]] | None = None
        for start, end, row in records(lines, prefix="`"):
            self.line_no = start
            if isinstance(row, str):
                yield LineError(start, row, "column_count_invalid")
                continue
            if len(row) == 1 and not row[0].strip():
                continue
            if lines.bad and lines.spans_bad(start, end):
                yield LineError(start, "the line is not valid UTF-8 text", "encoding_invalid")
                continue
            if summary_header is not None:
                if summary_values is None:
                    summary_values = (start, [cell.strip() for cell in row])
                else:
                    yield LineError(start, "a line after the summary values row", "column_count_invalid")
                continue
            first = row[0].strip()
            if self._index is None:
                if first == HEADER_FIRST:
                    error = self._read_header(start, row)
                    if error is not None:
                        yield error
                        return
                    continue
                yield LineError(start, f"a data line before the column header ({HEADER_FIRST},…)", "header_missing")
                continue
            if first == SUMMARY_FIRST:
                summary_header = [cell.strip() for cell in row]
                continue
            yield self._row(start, row)
        if self._index is None:
            yield LineError(self.line_no, f"no WeChat Pay bill header row ({HEADER_FIRST},…)", "header_missing")
            return
        yield from self._check_summary(summary_header, summary_values)

    def _read_header(self, line_no: int, row: list[str]) -> LineError | None:
        header = [_unquote(cell) for cell in row]
        missing = [name for name in _REQUIRED if name not in header]
        if missing:
            return LineError(line_no, f"the header has no column {', '.join(missing)}", "header_missing")
        self._index = {name: header.index(name) if name in header else -1 for name in _REQUIRED + _OPTIONAL}
        self._width = len(header)
        self._summed = [(label, header.index(column)) for label, column in _SUMMED.items() if column in header]
        self._sums = {label: 0 for label, _ in self._summed}
        return None

    def _row(self, line_no: int, cells: list[str]) -> StatementLine | LineError:
        """One detail row, its backticks already off; written flat because it runs for every row."""
        if len(cells) != self._width:
            return LineError(line_no, f"{len(cells)} columns, the header has {self._width}", "column_count_invalid")
        index = self._index
        assert index is not None
        self._row_count += 1
        position = index["货币种类"]
        code = (cells[position].strip() if position >= 0 else "") or self.currency
        if code != self._bill_currency:
            try:
                known_currency(code, "货币种类")
            except BadValue as error:
                return LineError(line_no, error.reason, error.code)
            self._bill_currency = code
        two_decimals = _exponent(code) == 2
        values: dict[str, int] = {}
        failure: BadValue | None = None
        sums = self._sums
        for label, position in self._summed:
            text = cells[position].strip()
            if text == "0.00" or not text:
                value = 0
            elif two_decimals and _TWO_DECIMALS.fullmatch(text):
                value = int(text.replace(".", ""))
            else:
                column = _SUMMED[label]
                try:
                    value = amount_minor(text, code, column)
                except BadValue as error:
                    failure = failure or BadValue(error.reason, "fee_invalid" if column == "手续费" else error.code)
                    continue
            sums[label] += value
            values[label] = value
        state = cells[index["交易状态"]].strip()
        if state not in TRADE_STATES:
            return LineError(line_no, f"交易状态 {state!r} is not a WeChat Pay trade state", "kind_unknown")
        if failure is not None:
            return LineError(line_no, failure.reason, failure.code)
        fee = values["手续费总金额"]
        try:
            occurred_at = beijing_time(cells[index["交易时间"]].strip(), "交易时间")
            if state != "REFUND":
                amount = values["应结订单总金额"]
                if amount <= 0:
                    shown = cells[index["应结订单金额"]].strip()
                    raise BadValue(f"应结订单金额 {shown!r} of a payment must be positive", "amount_sign_invalid")
                if fee < 0:
                    shown = cells[index["手续费"]].strip()
                    raise BadValue(f"手续费 {shown} of a payment must not be negative", "fee_invalid")
            else:
                if "退款总金额" not in values:
                    raise BadValue("a REFUND row in a bill without the 退款金额 column", "column_count_invalid")
                amount = values["退款总金额"]
                if amount <= 0:
                    shown = cells[index["退款金额"]].strip()
                    raise BadValue(f"退款金额 {shown!r} of a refund must be positive", "amount_sign_invalid")
                if fee > 0:
                    shown = cells[index["手续费"]].strip()
                    raise BadValue(f"手续费 {shown} of a refund must not be positive", "fee_invalid")
        except BadValue as error:
            return LineError(line_no, error.reason, error.code)
        position = index["商品名称"]
        subject = cells[position].strip() if position >= 0 else ""
        out_trade_no = cells[index["商户订单号"]].strip() or None
        if state != "REFUND":
            # A payment row; a state other than SUCCESS (a revoked or failed trade listed anyway) is kept as
            # the line's status, for matching to call it a status mismatch.
            return StatementLine(
                line_no,
                "payment",
                cells[index["微信订单号"]].strip() or None,
                out_trade_no,
                None,
                amount,
                fee,
                code,
                "credit",
                state,
                occurred_at,
                None,
                subject,
            )
        refund_id, out_refund_no, refund_state = (
            cells[position].strip() if position >= 0 else ""
            for position in (index["微信退款单号"], index["商户退款单号"], index["退款状态"])
        )
        return StatementLine(
            line_no=line_no,
            kind="refund",
            channel_ref=refund_id or None,
            order_ref=out_refund_no or None,
            original_ref=out_trade_no,
            amount=amount,
            fee=-fee,
            currency=code,
            direction="debit",
            status=refund_state or state,
            occurred_at=occurred_at,
            value_date=None,
            description=subject,
        )

    def _check_summary(self, header: list[str] | None, values: tuple[int, list[str]] | None) -> Iterator[LineError]:
        if header is None or values is None:
            self.totals.summary_agrees = False
            missing = f"summary header ({SUMMARY_FIRST},…)" if header is None else "summary values row"
            yield LineError(self.line_no, f"the bill ends without its {missing} (truncated?)", "summary_missing")
            return
        line_no, cells = values
        if len(cells) != len(header):
            self.totals.summary_agrees = False
            yield LineError(
                line_no, f"{len(cells)} summary values for {len(header)} summary columns", "summary_mismatch"
            )
            return
        code = self._bill_currency
        summary = BillSummary(line_no=line_no)
        problems: list[LineError] = []
        for label, text in zip(header, cells, strict=True):
            try:
                if label == SUMMARY_FIRST:
                    if not text.isdigit():
                        raise BadValue(f"{SUMMARY_FIRST} {text!r} is not a count", "summary_mismatch")
                    value = int(text)
                else:
                    value = amount_minor(text, code, label)
            except BadValue as error:
                problems.append(LineError(line_no, error.reason, "summary_mismatch"))
                continue
            summary.figures[label] = value
            if label == SUMMARY_FIRST:
                summary.line_count = value
                if value != self._row_count:
                    problems.append(
                        LineError(line_no, mismatch(label, value, self._row_count, None), "summary_mismatch")
                    )
            elif label in self._sums and value != self._sums[label]:
                problems.append(LineError(line_no, mismatch(label, value, self._sums[label], code), "summary_mismatch"))
        summary.payment_sum = summary.figures.get("应结订单总金额")
        summary.refund_sum = summary.figures.get("退款总金额")
        summary.fee_sum = summary.figures.get("手续费总金额")
        self.totals.summary = summary
        self.totals.summary_agrees = not problems
        yield from problems
