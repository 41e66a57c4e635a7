"""The importers' bulk path (``LineBatch``) against record-by-record reading, without a database.

The WeChat Pay and Alipay parsers read a block of plain detail rows a column at
a time and hand anything else to the record-by-record path. These tests read the same
bills both ways — normally, and with the bulk path switched off — and require
the same lines, the same errors on the same line numbers, and the same totals,
for clean bills and for bills damaged at random places (blocks are about
64 KiB, so a bill of a few thousand rows crosses several).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import random
from collections.abc import Iterator
from typing import Any

import pytest

from zhangfang.recon.importers import LineBatch, LineError, StatementLine, iter_statement
from zhangfang.recon.importers.alipay import AlipayParser
from zhangfang.recon.importers.wechat import WechatParser
from zhangfang.sandbox.wechatpay import BILL_ALL_HEADER, BILL_SUMMARY_HEADER

ROWS = 1_200  # about 270 KB: five blocks


def cells_of(n: int, rng: random.Random) -> list[str]:
    """A detail row of the ALL layout: mostly payments, some refunds (settled or not), a few other states."""
    second = n * 37 // 10
    at = dt.datetime(2024, 3, 5, 0, 0, 0) + dt.timedelta(seconds=second)
    amount = 1 + rng.randrange(99_999)
    fee = (amount * 6 + 500) // 1000
    state = rng.choices(["SUCCESS", "REFUND", "REVOKED"], weights=[85, 12, 3])[0]
    money = f"{amount // 100}.{amount % 100:02d}"
    fee_text = f"{fee // 100}.{fee % 100:02d}"
    refund_state = rng.choice(["SUCCESS", "PROCESSING", ""])
    row = {name: "" for name in BILL_ALL_HEADER}
    row.update(
        {
            "交易时间": at.strftime("%Y-%m-%d %H:%M:%S"),
            "公众账号ID": "wx0000000000000001",
            "商户号": "1900000001",
            "特约商户号": "0",
            "微信订单号": f"42{n:026d}",
            "商户订单号": f"pat_{n:026d}",
            "用户标识": "openid",
            "交易类型": "NATIVE",
            "交易状态": state,
            "付款银行": "OTHERS",
            "货币种类": rng.choice(["CNY", "CNY", "CNY", ""]),
            "应结订单金额": money if state != "REFUND" else "0.00",
            "代金券金额": "0.00",
            "充值券退款金额": "0.00",
            "商品名称": rng.choice(["洗衣", " 咖啡 ", "bench"]),
            "手续费": fee_text if state != "REFUND" else ("-" + fee_text if fee else "0.00"),
            "费率": "0.60%",
            "订单金额": money,
        }
    )
    if state == "REFUND":
        row.update(
            {
                "微信退款单号": f"50{n:026d}",
                "商户退款单号": f"rfd_{n:026d}",
                "退款金额": money,
                "退款类型": "ORIGINAL",
                "退款状态": refund_state,
                "申请退款金额": money,
            }
        )
    else:
        row.update({"退款金额": "0.00", "申请退款金额": "0.00"})
    return [row[name] for name in BILL_ALL_HEADER]


def bill_lines(rng: random.Random, rows: int = ROWS) -> list[str]:
    """The bill as its lines (no line ends), summary included and agreeing with the rows."""
    details = [cells_of(n, rng) for n in range(rows)]
    sums = []
    for label in BILL_SUMMARY_HEADER[1:]:
        column = BILL_ALL_HEADER.index("手续费" if label == "手续费总金额" else label.replace("总金额", "金额"))
        sums.append(sum(int(row[column].replace(".", "") or 0) for row in details))
    summary = [str(rows), *(f"{'-' if s < 0 else ''}{abs(s) // 100}.{abs(s) % 100:02d}" for s in sums)]
    out = [",".join(BILL_ALL_HEADER)]
    out += [",".join("`" + cell for cell in row) for row in details]
    out += [",".join(BILL_SUMMARY_HEADER), ",".join("`" + cell for cell in summary)]
    return out


def damaged(lines: list[str], rng: random.Random) -> list[str]:
    """The bill with a few lines damaged the ways bills are: cells, widths, quotes, blanks, line ends, bytes."""
    lines = list(lines)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(1, len(lines) - 2)
        cells = lines[at].split(",")
        how = rng.randrange(12)
        if how == 0:  # an amount that is not plain two decimals, or not an amount
            cells[12] = "`" + rng.choice(["abc", "1.5", "", "-1.00", "0.00", "1.234", "1,00", "+1.00", " 7.00"])
        elif how == 1:
            cells[22] = "`" + rng.choice(["-0.06", "0.06", "x", "", "1.000"])
        elif how == 2:
            cells.pop(rng.randrange(len(cells)))
        elif how == 3:
            cells[20] = '"`洗衣,烘干"'
        elif how == 4:
            cells[20] = '"`多行\n商品"'
        elif how == 5:
            lines.insert(at, rng.choice(["", "   ", "\r"]))
        elif how == 6:
            cells[11] = "`" + rng.choice(["USD", "XXX", "JPY", "cny", ""])
        elif how == 7:
            cells[9] = "`" + rng.choice(["BOUNCED", "REFUND", "CLOSED", " SUCCESS"])
        elif how == 8:
            cells[0] = "`" + rng.choice(["2024/03/05 10:00", "2024-02-30 10:00:00", "2024-03-05 24:00:00"])
        elif how == 9:
            cells[-1] += "\r"
        elif how == 10:
            lines.insert(at, ",".join(BILL_SUMMARY_HEADER))
        else:
            cells[6] = "`pat_\udcff"  # becomes an undecodable byte below
        lines[at] = ",".join(cells)
    if rng.random() < 0.2:
        lines = lines[: rng.randrange(2, len(lines))]  # cut short: no summary
    return lines


def encode(lines: list[str], rng: random.Random) -> bytes:
    end = rng.choice(["\r\n", "\n"])
    text = end.join(lines) + rng.choice([end, ""])
    return text.encode("utf-8", errors="surrogateescape")


def read_all(data: bytes, fmt: str = "wechat") -> tuple[list[StatementLine | LineError], dict[str, Any]]:
    reader = iter_statement(io.BytesIO(data), fmt)
    items = list(reader)
    return items, reader.totals.as_json()


def read_batches(data: bytes, fmt: str = "wechat") -> tuple[list[StatementLine | LineError], dict[str, Any]]:
    reader = iter_statement(io.BytesIO(data), fmt)
    items: list[StatementLine | LineError] = []
    for chunk in reader.batches():
        items.extend(chunk.lines() if isinstance(chunk, LineBatch) else [chunk])
    return items, reader.totals.as_json()


@pytest.fixture
def record_by_record(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Reads a bill with the bulk path switched off: what every line read on its own gives."""

    def read(data: bytes, fmt: str = "wechat") -> tuple[list[StatementLine | LineError], dict[str, Any]]:
        with monkeypatch.context() as patch:
            patch.setattr(WechatParser, "_bulk", lambda self, first, block: None)
            patch.setattr(AlipayParser, "_bulk", lambda self, first, block: None)
            return read_all(data, fmt)

    yield read


def test_a_clean_bill_reads_the_same_through_the_bulk_path_and_mostly_goes_through_it(record_by_record) -> None:
    rng = random.Random(7)
    data = encode(bill_lines(rng), rng)
    bulk_batches = 0
    original = WechatParser._bulk

    def counting(self: WechatParser, first: int, block: str) -> LineBatch | None:
        nonlocal bulk_batches
        batch = original(self, first, block)
        bulk_batches += batch is not None
        return batch

    expected = record_by_record(data)
    WechatParser._bulk = counting  # type: ignore[method-assign]
    try:
        assert read_all(data) == expected
    finally:
        WechatParser._bulk = original  # type: ignore[method-assign]
    assert read_batches(data) == expected
    assert not any(isinstance(item, LineError) for item in expected[0])
    assert bulk_batches >= 3
    assert sum(isinstance(item, StatementLine) for item in expected[0]) == ROWS


@pytest.mark.parametrize("seed", range(40))
def test_a_damaged_bill_gives_the_same_lines_errors_and_totals_either_way(seed: int, record_by_record) -> None:
    rng = random.Random(seed)
    data = encode(damaged(bill_lines(rng, rows=rng.choice([300, ROWS])), rng), rng)

    expected = record_by_record(data)

    assert read_all(data) == expected
    assert read_batches(data) == expected


def test_a_gzip_bill_cut_short_is_unreadable_on_the_same_line_either_way(record_by_record) -> None:
    rng = random.Random(3)
    packed = gzip.compress(encode(bill_lines(rng), rng))
    data = packed[: len(packed) * 2 // 3]

    expected = record_by_record(data)

    assert read_all(data) == expected
    assert read_batches(data) == expected
    assert isinstance(expected[0][-1], LineError) and expected[0][-1].code == "file_unreadable"


# --------------------------------------------------------------------------- Alipay

ALIPAY_HEADER = (
    "支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称", "操作员",
    "终端号", "对方账户", "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）",
    "商家优惠（元）", "券核销金额（元）", "券名称", "商家红包消费金额（元）", "卡消费金额（元）", "退款批次号/请求号",
    "服务费（元）", "分润（元）", "备注",
)  # fmt: skip


def alipay_bill_lines(rng: random.Random, rows: int = ROWS) -> list[str]:
    """An Alipay 业务明细 as its lines: preamble, header, 交易 and 退款 rows (values ending in a tab), footer."""
    details = []
    counted = {"交易": [0, 0], "退款": [0, 0]}
    for n in range(rows):
        kind = rng.choices(["交易", "退款"], weights=[85, 15])[0]
        amount = 1 + rng.randrange(99_999)
        received = amount if kind == "交易" else -amount
        fee = (amount * 6 + 500) // 1000
        at = (dt.datetime(2024, 3, 5) + dt.timedelta(seconds=n * 37 // 10)).strftime("%Y-%m-%d %H:%M:%S")
        row = dict.fromkeys(ALIPAY_HEADER, "")
        row.update(
            {
                "支付宝交易号": f"2024030522{n:018d}\t",
                "商户订单号": f"pat_{n:026d}\t",
                "业务类型": kind,
                "商品名称": rng.choice(["洗衣", " 咖啡 ", "bench"]),
                "创建时间": at,
                "完成时间": at,
                "对方账户": "b***@x",
                "订单金额（元）": f"{amount / 100:.2f}",
                "商家实收（元）": f"{received / 100:.2f}",
                "退款批次号/请求号": f"rfd_{n:026d}\t" if kind == "退款" else "",
                "服务费（元）": rng.choice([f"{(fee if kind == '交易' else -fee) / 100:.2f}", ""]),
                "分润（元）": "0.00",
                "备注": rng.choice(["", "", "加急"]),
            }
        )
        counted[kind][0] += 1
        counted[kind][1] += received
        details.append(",".join(row[name] for name in ALIPAY_HEADER))
    return [
        "#支付宝业务明细查询",
        "#账号：[20880000000000010156]",
        "#起始日期：[2024年03月05日 00:00:00]   终止日期：[2024年03月06日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ",".join(ALIPAY_HEADER),
        *details,
        "#-----------------------------------------业务明细列表结束------------------------------------",
        f"#交易合计：{counted['交易'][0]}笔，商家实收共{counted['交易'][1] / 100:.2f}元，商家实收退款共0.00元",
        f"#退款合计：{counted['退款'][0]}笔，商家实收退款共{counted['退款'][1] / 100:.2f}元",
        "#导出时间：[2024年03月06日 08:00:00]",
    ]


def alipay_damaged(lines: list[str], rng: random.Random) -> list[str]:
    """The bill with a few detail lines damaged: amounts, fees, kinds, times, widths, quotes, blanks, comments."""
    lines = list(lines)
    first, last = 5, len(lines) - 5
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(first, last)
        cells = lines[at].split(",")
        how = rng.randrange(9)
        if how == 0:
            cells[12] = rng.choice(["abc", "1.5", "", "-0.00", "0.00", "1.234", "+1.00", " 7.00 "])
        elif how == 1:
            cells[22] = rng.choice(["x", "-", "1.000", "0.5", " -0.06"])
        elif how == 2:
            cells[2] = rng.choice(["转账", " 交易", "退款 "])
        elif how == 3:
            cells[5] = rng.choice(["2024/03/05 10:00", "2024-02-30 10:00:00", ""])
        elif how == 4:
            cells.pop(rng.randrange(len(cells)))
        elif how == 5:
            cells[3] = '"洗衣,烘干"'
        elif how == 6:
            lines.insert(at, rng.choice(["", "#备注行", " "]))
        elif how == 7:
            cells[0] = "#" + cells[0]
        else:
            cells[24] += "\r"
        lines[at] = ",".join(cells)
    return lines


def test_a_clean_alipay_bill_reads_the_same_through_the_bulk_path(record_by_record) -> None:
    rng = random.Random(11)
    data = "\r\n".join(alipay_bill_lines(rng)).encode("gbk") + b"\r\n"
    bulk_batches = 0
    original = AlipayParser._bulk

    def counting(self: AlipayParser, first: int, block: str) -> LineBatch | None:
        nonlocal bulk_batches
        batch = original(self, first, block)
        bulk_batches += batch is not None
        return batch

    expected = record_by_record(data, "alipay")
    AlipayParser._bulk = counting  # type: ignore[method-assign]
    try:
        assert read_all(data, "alipay") == expected
    finally:
        AlipayParser._bulk = original  # type: ignore[method-assign]
    assert read_batches(data, "alipay") == expected
    assert not any(isinstance(item, LineError) for item in expected[0])
    assert bulk_batches >= 2


@pytest.mark.parametrize("seed", range(30))
def test_a_damaged_alipay_bill_gives_the_same_lines_errors_and_totals_either_way(seed: int, record_by_record) -> None:
    rng = random.Random(seed)
    lines = alipay_damaged(alipay_bill_lines(rng, rows=rng.choice([300, ROWS])), rng)
    data = rng.choice(["\r\n", "\n"]).join(lines).encode("gbk") + rng.choice([b"\r\n", b""])

    expected = record_by_record(data, "alipay")

    assert read_all(data, "alipay") == expected
    assert read_batches(data, "alipay") == expected
