"""Alipay's trade bill (业务明细): the zip ``bill_download_url`` serves, or its bare GBK ``…_业务明细.csv``.

Layout (channels.md, "Bill (trade)"): ``#`` preamble lines (``#支付宝业务明细查询``,
``#账号：[…]``, ``#起始日期：[yyyy年MM月dd日 …]   终止日期：[…]``, the
``#---业务明细列表---`` marker), the 25-column header, the detail rows (values
may end in a tab), the ``#---业务明细列表结束---`` marker, then
``#交易合计：N笔，商家实收共X元，…``, ``#退款合计：N笔，商家实收退款共Y元，…`` and
``#导出时间：[…]``. Columns are found by their header name.

Mapping
- 业务类型 ``交易`` → ``payment``: ``channel_ref`` 支付宝交易号, ``order_ref`` 商户订单号
  (our payment attempt ``pat_…``).
- 业务类型 ``退款`` → ``refund``: ``channel_ref`` 支付宝交易号 (the trade's number:
  Alipay numbers refunds only by our request number), ``order_ref``
  退款批次号/请求号 (our refund ``rfd_…``, sent as ``out_request_no``),
  ``original_ref`` 商户订单号.
- ``amount`` is |商家实收（元）|: positive on a 交易 line, negative on a 退款 line
  (any other sign is a ``LineError``). ``fee`` is |服务费（元）| (an empty cell is 0).
- ``occurred_at`` is 完成时间 (Beijing time) in UTC; ``status`` is 业务类型;
  ``description`` is 商品名称, then 备注 after `` | `` when there is one; the
  currency is the reader's ``currency`` (the bill has no currency column).
- The period start (``#起始日期``) is the statement date.

Self-check: the 交易 lines must add up to ``#交易合计`` (count and 商家实收) and
the 退款 lines to ``#退款合计`` (count and |商家实收|); a bill without the end
marker or ``#交易合计`` is truncated. Either is a ``LineError`` on the summary line.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from itertools import repeat

from zhangfang.recon.importers._common import (
    _TWO_DECIMALS_LINES,
    BadValue,
    BlockParser,
    SourceUnreadable,
    TextLines,
    _exponent,
    amount_minor,
    beijing_time,
    fee_minor,
    mismatch,
    text_lines,
    uniform_line_ends,
    unwrap,
)
from zhangfang.recon.importers.models import BillSummary, LineBatch, LineError, StatementLine

ENCODING = "gb18030"  # a superset of GBK: every GBK file decodes the same
HEADER_FIRST = "支付宝交易号"
_DETAIL_END = "业务明细列表结束"
_TRADE_TOTAL = re.compile(r"#交易合计：(?P<count>\d+)笔，商家实收共(?P<sum>[-+]?[0-9]+(?:\.[0-9]+)?)元")
_REFUND_TOTAL = re.compile(r"#退款合计：(?P<count>\d+)笔，商家实收(?:退款)?共(?P<sum>[-+]?[0-9]+(?:\.[0-9]+)?)元")
_PERIOD_START = re.compile(r"#起始日期：\[(?P<year>\d{4})年(?P<month>\d{2})月(?P<day>\d{2})日")
_REQUIRED = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "完成时间",
    "商家实收（元）",
    "退款批次号/请求号",
    "服务费（元）",
)


def pick_detail_member(names: list[str]) -> str:
    """The 业务明细 file of the zip (not the 业务明细(汇总) one)."""
    details = [name for name in names if name.endswith("业务明细.csv")]
    if len(details) == 1:
        return details[0]
    others = [name for name in names if name.lower().endswith(".csv") and "汇总" not in name]
    if len(others) == 1:
        return others[0]
    raise SourceUnreadable(f"the zip archive holds no single …_业务明细.csv file: {names[:5]}")


class AlipayParser(BlockParser):
    def chunks(self) -> Iterator[LineBatch | StatementLine | LineError]:
        """The bill's records; a block of plain detail rows (about 64 KiB of text) goes through ``_bulk``
        a column at a time, anything else record by record through ``_record``: the same records."""
        lines = text_lines(unwrap(self.stream, pick_detail_member), ENCODING)
        self._index: dict[str, int] | None = None
        self._width = 0
        self._counted = {"payment": [0, 0], "refund": [0, 0]}  # kind → [count, 商家实收 as written]
        self._ended_at: int | None = None
        self._trade_total: tuple[int, re.Match[str]] | None = None
        self._refund_total: tuple[int, re.Match[str]] | None = None
        yield from self.read_blocks(lines)
        if self._index is None:
            yield LineError(self.line_no, f"no Alipay bill header row ({HEADER_FIRST},…) in the file", "header_missing")
            return
        yield from self._check_summary(self._ended_at, self._trade_total, self._refund_total)

    def _record(self, start: int, end: int, row: list[str] | str, lines: TextLines) -> StatementLine | LineError | None:
        """One record of the file, read on its own."""
        self.line_no = start
        if isinstance(row, str):
            return LineError(start, row, "column_count_invalid")
        if len(row) == 1 and not row[0].strip():
            return None
        if row[0].startswith("#"):
            text = ",".join(row).strip()
            if _DETAIL_END in text:
                self._ended_at = start
            elif (found := _TRADE_TOTAL.match(text)) is not None:
                self._trade_total = (start, found)
            elif (found := _REFUND_TOTAL.match(text)) is not None:
                self._refund_total = (start, found)
            elif (period := _PERIOD_START.match(text)) is not None:
                try:
                    self.totals.add_statement_date(dt.date(*(int(part) for part in period.groups())))
                except ValueError:
                    return LineError(start, f"the period start in {text!r} is not a date", "time_invalid")
            return None
        if lines.bad and lines.spans_bad(start, end):
            return LineError(start, "the line is not valid GBK text", "encoding_invalid")
        if self._index is None:
            if row[0].strip() == HEADER_FIRST:
                error = self._read_header(start, row)
                self.stopped = error is not None
                return error
            return LineError(start, f"a data line before the column header ({HEADER_FIRST},…)", "header_missing")
        return self._row(start, row)

    def _bulk(self, first: int, block: str) -> LineBatch | None:
        """The detail rows of ``block`` (lines ``first``…), read a column at a time; None when a row is not
        plain (the block is then read record by record, which gives each row its line error).

        Plain: no quote, no undecodable byte, no ``#`` line, no lone ``\\r``, every row the header's
        width, 业务类型 交易 or 退款, 商家实收 ``-?digits.dd`` with the sign of its kind, 服务费 the same or
        empty, times that parse, and the reader's currency with 2 decimals — so that ``_row`` would
        accept every row, as the same ``StatementLine``.
        """
        index = self._index
        if index is None or _exponent(self.currency) != 2:
            return None
        if '"' in block or "\ufffd" in block or "\x00" in block or block.startswith("#") or "\n#" in block:
            return None
        uniform = uniform_line_ends(block)
        if uniform is None:
            return None
        block, end = uniform
        count = block.count(end) + (not block.endswith(end))
        # Line ends become ",\0": the \0 then starts each row's first value, proving every row has the
        # header's width.
        cells = block.replace(end, ",\x00").split(",")
        width = self._width
        if block.endswith(end):
            cells.pop()  # the "\0" after the last line end
        if len(cells) != count * width or "".join(cells[width::width]).count("\x00") != count - 1:
            return None

        def column(name: str) -> list[str]:
            position = index[name]
            if position < 0:
                return [""] * count
            if position == 0:
                return list(map(str.strip, map(str.removeprefix, cells[0::width], repeat("\x00"))))
            return list(map(str.strip, cells[position::width]))

        kinds = column("业务类型")
        kind_set = set(kinds)
        if not kind_set <= {"交易", "退款"}:
            return None
        received_texts = column("商家实收（元）")
        joined = "\n".join(received_texts)
        if not _TWO_DECIMALS_LINES.fullmatch(joined) or "" in received_texts:
            return None
        received = list(map(int, joined.replace(".", "").split("\n")))
        fee_texts = column("服务费（元）")
        joined = "\n".join(fee_texts)
        if not _TWO_DECIMALS_LINES.fullmatch(joined):
            return None
        if "" in fee_texts:
            fees = [abs(int(text.replace(".", ""))) if text else 0 for text in fee_texts]
        else:
            fees = list(map(abs, map(int, joined.replace(".", "").split("\n"))))
        texts = column("完成时间")
        times: dict[str, dt.datetime] = {}
        for text in set(texts):
            try:
                times[text] = beijing_time(text, "完成时间")
            except BadValue:
                return None
        payment = [kind == "交易" for kind in kinds]
        if kind_set == {"交易"}:
            if min(received) <= 0:
                return None
            amount = received
            paid, refunded = (count, sum(received)), (0, 0)
        else:
            if any(flag != (value > 0) or value == 0 for flag, value in zip(payment, received, strict=True)):
                return None
            amount = list(map(abs, received))
            paid_sum = sum(value for value in received if value > 0)
            paid = (payment.count(True), paid_sum)
            refunded = (count - paid[0], sum(received) - paid_sum)
        out_trade_nos = [text or None for text in column("商户订单号")]
        descriptions = column("商品名称")
        if index["备注"] >= 0:
            descriptions = [
                f"{description} | {remark}" if remark else description
                for description, remark in zip(descriptions, column("备注"), strict=True)
            ]
        for kind, (number, total) in (("payment", paid), ("refund", refunded)):
            self._counted[kind][0] += number
            self._counted[kind][1] += total
        refund_nos = column("退款批次号/请求号")
        return LineBatch(
            line_no=list(range(first, first + count)),
            kind=["payment" if flag else "refund" for flag in payment],
            channel_ref=[text or None for text in column("支付宝交易号")],
            order_ref=[
                trade_no if flag else (refund_no or None)
                for flag, trade_no, refund_no in zip(payment, out_trade_nos, refund_nos, strict=True)
            ],
            original_ref=[None if flag else trade_no for flag, trade_no in zip(payment, out_trade_nos, strict=True)],
            amount=amount,
            fee=fees,
            currency=[self.currency] * count,
            direction=["credit" if flag else "debit" for flag in payment],
            status=kinds,  # type: ignore[arg-type]
            occurred_at=list(map(times.__getitem__, texts)),
            value_date=[None] * count,
            description=descriptions,
            booking_date=[None] * count,
        )

    def _read_header(self, line_no: int, row: list[str]) -> LineError | None:
        header = [cell.strip() for cell in row]
        missing = [name for name in _REQUIRED if name not in header]
        if missing:
            return LineError(line_no, f"the header has no column {', '.join(missing)}", "header_missing")
        self._index = {name: header.index(name) for name in _REQUIRED}
        self._index["备注"] = header.index("备注") if "备注" in header else -1
        self._width = len(header)
        return None

    def _row(self, line_no: int, row: list[str]) -> StatementLine | LineError:
        if len(row) != self._width:
            return LineError(line_no, f"{len(row)} columns, the header has {self._width}", "column_count_invalid")
        index = self._index
        assert index is not None
        kind_text = row[index["业务类型"]].strip()
        if kind_text == "交易":
            kind = "payment"
        elif kind_text == "退款":
            kind = "refund"
        else:
            return LineError(line_no, f"业务类型 {kind_text!r} is neither 交易 nor 退款", "kind_unknown")
        code = self.currency
        try:
            received_text = row[index["商家实收（元）"]].strip()
            received = amount_minor(received_text, code, "商家实收（元）")
            counted = self._counted[kind]
            counted[0] += 1
            counted[1] += received
            if kind == "payment" and received <= 0:
                raise BadValue(f"商家实收（元） {received_text} of a 交易 line must be positive", "amount_sign_invalid")
            if kind == "refund" and received >= 0:
                raise BadValue(f"商家实收（元） {received_text} of a 退款 line must be negative", "amount_sign_invalid")
            fee = abs(fee_minor(row[index["服务费（元）"]].strip(), code, "服务费（元）"))
            occurred_at = beijing_time(row[index["完成时间"]].strip(), "完成时间")
        except BadValue as error:
            return LineError(line_no, error.reason, error.code)
        out_trade_no = row[index["商户订单号"]].strip() or None
        description = row[index["商品名称"]].strip()
        if index["备注"] >= 0 and (remark := row[index["备注"]].strip()):
            description = f"{description} | {remark}"
        return StatementLine(
            line_no=line_no,
            kind=kind,
            channel_ref=row[index["支付宝交易号"]].strip() or None,
            order_ref=out_trade_no if kind == "payment" else (row[index["退款批次号/请求号"]].strip() or None),
            original_ref=None if kind == "payment" else out_trade_no,
            amount=abs(received),
            fee=fee,
            currency=code,
            direction="credit" if kind == "payment" else "debit",
            status=kind_text,
            occurred_at=occurred_at,
            value_date=None,
            description=description,
        )

    def _check_summary(
        self,
        ended_at: int | None,
        trade_total: tuple[int, re.Match[str]] | None,
        refund_total: tuple[int, re.Match[str]] | None,
    ) -> Iterator[LineError]:
        if ended_at is None or trade_total is None:
            self.totals.summary_agrees = False
            missing = "#---业务明细列表结束---" if ended_at is None else "#交易合计"
            yield LineError(self.line_no, f"the bill ends without its {missing} line (truncated?)", "summary_missing")
            return
        code = self.currency
        problems: list[LineError] = []
        line_no, found = trade_total
        summary = BillSummary(line_no=line_no)
        try:
            summary.payment_count = int(found["count"])
            summary.payment_sum = amount_minor(found["sum"], code, "商家实收共")
        except BadValue as error:
            problems.append(LineError(line_no, error.reason, "summary_mismatch"))
        else:
            summary.figures.update({"交易合计笔数": summary.payment_count, "商家实收共": summary.payment_sum})
            count, total = self._counted["payment"]
            if summary.payment_count != count:
                problems.append(
                    LineError(line_no, mismatch("交易合计", summary.payment_count, count, None), "summary_mismatch")
                )
            if summary.payment_sum != total:
                problems.append(
                    LineError(line_no, mismatch("商家实收共", summary.payment_sum, total, code), "summary_mismatch")
                )
        if refund_total is not None:
            line_no, found = refund_total
            try:
                summary.refund_count = int(found["count"])
                stated = amount_minor(found["sum"], code, "商家实收退款共")
            except BadValue as error:
                problems.append(LineError(line_no, error.reason, "summary_mismatch"))
            else:
                summary.refund_sum = abs(stated)
                summary.figures.update({"退款合计笔数": summary.refund_count, "商家实收退款共": stated})
                count, total = self._counted["refund"]
                if summary.refund_count != count:
                    problems.append(
                        LineError(line_no, mismatch("退款合计", summary.refund_count, count, None), "summary_mismatch")
                    )
                if summary.refund_sum != abs(total):
                    problems.append(
                        LineError(line_no, mismatch("商家实收退款共", stated, total, code), "summary_mismatch")
                    )
        self.totals.summary = summary
        self.totals.summary_agrees = not problems
        yield from problems
