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

import datetime as dt
from collections.abc import Iterator
from itertools import repeat

from zhangfang.recon.importers._common import (
    _TWO_DECIMALS,
    _TWO_DECIMALS_LINES,
    BadValue,
    BlockParser,
    TextLines,
    _exponent,
    amount_minor,
    beijing_time,
    known_currency,
    mismatch,
    only_member,
    text_lines,
    uniform_line_ends,
    unwrap,
)
from zhangfang.recon.importers.models import BillSummary, LineBatch, LineError, StatementLine

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
_PER_LINE = frozenset({"应结订单总金额", "退款总金额", "手续费总金额"})  # the sums whose column a line keeps


def _unquote(cell: str) -> str:
    return cell[1:].strip() if cell.startswith("`") else cell.strip()


class WechatParser(BlockParser):
    def chunks(self) -> Iterator[LineBatch | StatementLine | LineError]:
        """The bill's records; a block of plain detail rows (as decoded, about 64 KiB) goes through
        ``_bulk`` in a few calls per column, anything else (header, summary, a quoted value, a row
        ``_bulk`` would not take as it is) record by record through ``_record``: the same records."""
        lines = text_lines(unwrap(self.stream, only_member), ENCODING)
        self._index: dict[str, int] | None = None
        self._width = 0
        self._row_count = 0
        self._sums: dict[str, int] = {}
        self._summed: list[tuple[str, int]] = []  # (summary label, column index)
        self._bill_currency = self.currency  # the summary's amounts are in the rows' currency
        self._summary_header: list[str] | None = None
        self._summary_values: tuple[int, list[str]] | None = None
        yield from self.read_blocks(lines, prefix="`")
        if self._index is None:
            yield LineError(self.line_no, f"no WeChat Pay bill header row ({HEADER_FIRST},…)", "header_missing")
            return
        yield from self._check_summary(self._summary_header, self._summary_values)

    def _record(self, start: int, end: int, row: list[str] | str, lines: TextLines) -> StatementLine | LineError | None:
        """One record of the file, read on its own."""
        self.line_no = start
        if isinstance(row, str):
            return LineError(start, row, "column_count_invalid")
        if len(row) == 1 and not row[0].strip():
            return None
        if lines.bad and lines.spans_bad(start, end):
            return LineError(start, "the line is not valid UTF-8 text", "encoding_invalid")
        if self._summary_header is not None:
            if self._summary_values is None:
                self._summary_values = (start, [cell.strip() for cell in row])
                return None
            return LineError(start, "a line after the summary values row", "column_count_invalid")
        first = row[0].strip()
        if self._index is None:
            if first == HEADER_FIRST:
                error = self._read_header(start, row)
                self.stopped = error is not None
                return error
            return LineError(start, f"a data line before the column header ({HEADER_FIRST},…)", "header_missing")
        if first == SUMMARY_FIRST:
            self._summary_header = [cell.strip() for cell in row]
            return None
        return self._row(start, row)

    def _bulk(self, first: int, block: str) -> LineBatch | None:
        """The detail rows of ``block`` (lines ``first``…), read a column at a time; None when a row is not
        plain (the block is then read record by record, which gives each row its line error).

        Plain: no quote, no undecodable byte, no summary, no lone ``\\r``, every value with its
        backtick, every row the header's width, the bill's currency (with 2 decimals), amounts
        ``-?digits.dd`` or empty, known trade states, times that parse, and each amount and fee with
        the sign its trade state needs — so that ``_row`` would accept every row, as the same
        ``StatementLine``.
        """
        index = self._index
        if index is None or self._summary_header is not None:
            return None
        if '"' in block or "\ufffd" in block or "\x00" in block or SUMMARY_FIRST in block:
            return None
        uniform = uniform_line_ends(block)
        if uniform is None:
            return None
        block, end = uniform
        ended = block.endswith(end)
        count = block.count(end) + (not ended)
        # Every value starts with the backtick: cut at ",`" and at line ends, which become ",`\0" (the
        # \0 then starts each row's first value, proving every row has the header's width).
        if not block.startswith("`") or block.count(",") != block.count(",`") or block.count(end + "`") != count - 1:
            return None
        cells = block.replace(end + "`", ",`\x00").split(",`")
        width = self._width
        if len(cells) != count * width or "".join(cells[width::width]).count("\x00") != count - 1:
            return None
        cells[0] = cells[0][1:]

        def column(name: str) -> list[str]:
            return values_at(index[name])

        def values_at(position: int) -> list[str]:
            if position < 0:
                return [""] * count
            if position == 0:
                return list(map(str.strip, map(str.removeprefix, cells[0::width], repeat("\x00"))))
            return list(map(str.strip, cells[position::width]))  # the last line's last value keeps its line end

        codes = set(column("货币种类"))
        if "" in codes:
            codes = (codes - {""}) | {self.currency}
        if codes != {self._bill_currency} or _exponent(self._bill_currency) != 2:
            return None
        states = column("交易状态")
        state_set = set(states)
        if not state_set <= TRADE_STATES:
            return None
        values: dict[str, list[int]] = {}
        sums: dict[str, int] = {}
        for label, position in self._summed:
            texts = values_at(position)
            distinct = set(texts)
            if distinct <= {"0.00", ""}:
                sums[label] = 0
                if label in _PER_LINE:
                    values[label] = [0] * count
                continue
            joined = "\n".join(texts)
            if not _TWO_DECIMALS_LINES.fullmatch(joined):
                return None
            if "" in distinct:
                numbers = [int(text.replace(".", "")) if text else 0 for text in texts]
            else:
                numbers = list(map(int, joined.replace(".", "").split("\n")))
            sums[label] = sum(numbers)
            if label in _PER_LINE:
                values[label] = numbers
        texts = column("交易时间")
        times: dict[str, dt.datetime] = {}
        for text in set(texts):
            try:
                times[text] = beijing_time(text, "交易时间")
            except BadValue:
                return None
        occurred_at: list[dt.datetime | None] = list(map(times.__getitem__, texts))
        settled, fees = values["应结订单总金额"], values["手续费总金额"]
        trade_refs = [text or None for text in column("微信订单号")]
        out_trade_nos = [text or None for text in column("商户订单号")]
        if "REFUND" not in state_set:
            if min(settled) <= 0 or min(fees) < 0:
                return None
            amount, fee = settled, fees
            kind, direction = ["payment"] * count, ["credit"] * count
            channel_ref, order_ref, original_ref = trade_refs, out_trade_nos, [None] * count
            status: list[str | None] = list(states)
        else:
            if "退款总金额" not in values:
                return None
            refund = [state == "REFUND" for state in states]
            refunded = values["退款总金额"]
            amount = [r if is_refund else s for is_refund, s, r in zip(refund, settled, refunded, strict=True)]
            fee = [-f if is_refund else f for is_refund, f in zip(refund, fees, strict=True)]
            if min(amount) <= 0 or min(fee) < 0:
                return None
            kind = ["refund" if is_refund else "payment" for is_refund in refund]
            direction = ["debit" if is_refund else "credit" for is_refund in refund]
            channel_ref = [
                (refund_id or None) if is_refund else trade_ref
                for is_refund, refund_id, trade_ref in zip(refund, column("微信退款单号"), trade_refs, strict=True)
            ]
            order_ref = [
                (refund_no or None) if is_refund else trade_no
                for is_refund, refund_no, trade_no in zip(refund, column("商户退款单号"), out_trade_nos, strict=True)
            ]
            original_ref = [
                trade_no if is_refund else None for is_refund, trade_no in zip(refund, out_trade_nos, strict=True)
            ]
            status = [
                (refund_state or state) if is_refund else state
                for is_refund, refund_state, state in zip(refund, column("退款状态"), states, strict=True)
            ]
        self._row_count += count
        for label, total in sums.items():
            self._sums[label] += total
        return LineBatch(
            line_no=list(range(first, first + count)),
            kind=kind,
            channel_ref=channel_ref,
            order_ref=order_ref,
            original_ref=original_ref,
            amount=amount,
            fee=fee,
            currency=[self._bill_currency] * count,
            direction=direction,
            status=status,
            occurred_at=occurred_at,
            value_date=[None] * count,
            description=column("商品名称"),
            booking_date=[None] * count,
        )

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
