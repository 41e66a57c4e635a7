"""Bill and statement importers (``zhangfang.recon.importers``), without a database.

Channel bills come from the simulators' own rendering: the Alipay and WeChat Pay
simulators are driven through their ASGI apps in process (signed requests, no
sockets) and asked for the day's bill; the direct banks' bills are rendered
with ``render_bill``. Expected values are written out from the scenario, not
read back from the importer. The real MT940 and camt.053 files under
``tests/data/recon`` import with the totals computed by hand in
``tests/data/README``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import io
import itertools
import json
import logging
import secrets
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from zhangfang import ids
from zhangfang.channels.bank_direct import CMB, ICBC
from zhangfang.errors import InvalidInput
from zhangfang.recon.errors import ReconFormatInvalid, ReconProfileInvalid
from zhangfang.recon.importers import FORMATS, LineError, StatementLine, iter_statement
from zhangfang.sandbox.alipay import (
    AlipaySimulator,
    SandboxMerchant,
    create_alipay_simulator,
    rsa_sign,
    signing_string,
)
from zhangfang.sandbox.bank_direct import BillRow, render_bill
from zhangfang.sandbox.wechatpay import SimulatedMerchant, WechatPaySimulator, create_simulator

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2024, 3, 5)
DATA = Path(__file__).resolve().parent.parent / "data" / "recon"


def beijing(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def read(source: Any, fmt: str, **options: Any) -> tuple[list[StatementLine], list[LineError], Any]:
    reader = iter_statement(source, fmt, **options)
    lines: list[StatementLine] = []
    errors: list[LineError] = []
    for item in reader:
        (lines if isinstance(item, StatementLine) else errors).append(item)  # type: ignore[arg-type]
    assert reader.totals.complete
    return lines, errors, reader.totals


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass(frozen=True)
class KeyPair:
    private_key: rsa.RSAPrivateKey
    private_pem: str
    public_pem: str


def _key_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(key, private_pem, public_pem)


@pytest.fixture(scope="module")
def keys() -> tuple[KeyPair, KeyPair]:
    return _key_pair(), _key_pair()


def asgi(app: Any, method: str, url: str, **options: Any) -> httpx.Response:
    """One request to an ASGI app in process."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
            return await client.request(method, url, **options)

    return asyncio.run(send())


# --------------------------------------------------------------------------- Alipay

ALIPAY_APP_ID = "2021000000000001"
ALIPAY_PID = "2088000000000001"


class AlipayDriver:
    def __init__(self, simulator: AlipaySimulator, app_key: KeyPair, clock: Clock) -> None:
        self.simulator = simulator
        self.app_key = app_key
        self.clock = clock

    def call(self, method: str, biz: dict[str, Any]) -> dict[str, Any]:
        params = {
            "app_id": ALIPAY_APP_ID,
            "method": method,
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": self.clock.now.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps(biz, separators=(",", ":")),
        }
        params["sign"] = rsa_sign(self.app_key.private_key, signing_string(params, exclude=("sign",)))
        response = asgi(self.simulator.app, "GET", "/gateway.do", params=params)
        body = response.json()[method.replace(".", "_") + "_response"]
        assert body["code"] == "10000", body
        return body

    def paid(self, out_trade_no: str, amount: str, at: dt.datetime) -> str:
        self.clock.now = at
        self.call("alipay.trade.precreate", {"out_trade_no": out_trade_no, "total_amount": amount, "subject": "洗衣"})
        return self.simulator.pay(out_trade_no)

    def refunded(self, out_trade_no: str, out_request_no: str, amount: str, at: dt.datetime) -> None:
        self.clock.now = at
        self.call(
            "alipay.trade.refund",
            {"out_trade_no": out_trade_no, "refund_amount": amount, "out_request_no": out_request_no},
        )


@dataclass
class AlipayDay:
    simulator: AlipaySimulator
    trade_nos: dict[str, str]
    payments: list[str]
    refunds: list[str]


@pytest.fixture
def alipay_day(keys: tuple[KeyPair, KeyPair]) -> Iterator[AlipayDay]:
    """Three payments and two refunds on DAY, and a payment just after midnight that is not on DAY's bill."""
    alipay_key, app_key = keys
    clock = Clock(beijing(9))
    simulator = create_alipay_simulator(
        alipay_private_key_pem=alipay_key.private_pem,
        merchants=[SandboxMerchant(app_id=ALIPAY_APP_ID, pid=ALIPAY_PID, app_public_key_pem=app_key.public_pem)],
        base_url="http://sim.test",
        clock=clock,
    )
    driver = AlipayDriver(simulator, app_key, clock)
    payments = [ids.new_id("pat") for _ in range(4)]
    refunds = [ids.new_id("rfd") for _ in range(2)]
    trade_nos = {
        payments[0]: driver.paid(payments[0], "120.00", beijing(10)),
        payments[1]: driver.paid(payments[1], "35.50", beijing(11, 30)),
    }
    driver.refunded(payments[0], refunds[0], "20.00", beijing(14))
    trade_nos[payments[2]] = driver.paid(payments[2], "8.88", beijing(23, 10))
    driver.refunded(payments[1], refunds[1], "35.50", beijing(23, 50))
    driver.paid(payments[3], "1.00", beijing(0, 10, DAY + dt.timedelta(days=1)))
    try:
        yield AlipayDay(simulator, trade_nos, payments, refunds)
    finally:
        simulator.close()


def _alipay_expected(day: AlipayDay) -> list[tuple[Any, ...]]:
    p, r, t = day.payments, day.refunds, day.trade_nos
    return [
        # line, kind, channel_ref, order_ref, original_ref, amount, direction, status, occurred_at (UTC)
        (6, "payment", t[p[0]], p[0], None, 12000, "credit", "交易", utc(beijing(10))),
        (7, "payment", t[p[1]], p[1], None, 3550, "credit", "交易", utc(beijing(11, 30))),
        (8, "refund", t[p[0]], r[0], p[0], 2000, "debit", "退款", utc(beijing(14))),
        (9, "payment", t[p[2]], p[2], None, 888, "credit", "交易", utc(beijing(23, 10))),
        (10, "refund", t[p[1]], r[1], p[1], 3550, "debit", "退款", utc(beijing(23, 50))),
    ]


def sums(totals: Any, code: str = "CNY") -> tuple[int, int, int, int, int]:
    """(credit count, credit sum, debit count, debit sum, net fee) of one currency."""
    t = totals.currencies[code]
    return (t.credit_count, t.credit_sum, t.debit_count, t.debit_sum, t.fee_sum)


def _as_tuples(lines: list[StatementLine]) -> list[tuple[Any, ...]]:
    return [
        (
            line.line_no,
            line.kind,
            line.channel_ref,
            line.order_ref,
            line.original_ref,
            line.amount,
            line.direction,
            line.status,
            line.occurred_at,
        )
        for line in lines
    ]


def test_an_alipay_day_of_payments_and_refunds_imports_from_the_simulators_zip(alipay_day: AlipayDay) -> None:
    lines, errors, totals = read(io.BytesIO(alipay_day.simulator.bill_zip(DAY)), "alipay")

    assert errors == []
    assert _as_tuples(lines) == _alipay_expected(alipay_day)
    assert all(line.currency == "CNY" and line.fee == 0 and line.description == "洗衣" for line in lines)
    cny = totals.currencies["CNY"]
    assert (cny.line_count, cny.credit_count, cny.credit_sum, cny.debit_count, cny.debit_sum) == (5, 3, 16438, 2, 5550)
    assert totals.summary_agrees is True
    assert totals.summary.payment_count == 3 and totals.summary.payment_sum == 16438
    assert totals.summary.refund_count == 2 and totals.summary.refund_sum == 5550
    assert totals.statement_dates == [DAY]
    assert totals.valid
    assert json.loads(json.dumps(totals.as_json()))["currencies"]["CNY"]["credit_sum_text"] == "164.38"


def test_the_bare_gbk_csv_and_a_non_seekable_zip_stream_import_the_same_lines(alipay_day: AlipayDay) -> None:
    content = alipay_day.simulator.bill_zip(DAY)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        (detail,) = [name for name in archive.namelist() if name.endswith("_业务明细.csv")]
        csv_bytes = archive.read(detail)

    class Unseekable(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: Any) -> int:
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    from_csv, csv_errors, _ = read(io.BytesIO(csv_bytes), "alipay")
    from_stream, stream_errors, _ = read(Unseekable(content), "alipay")

    assert csv_errors == stream_errors == []
    assert _as_tuples(from_csv) == _as_tuples(from_stream) == _alipay_expected(alipay_day)


# --------------------------------------------------------------------------- WeChat Pay

WECHAT_MCHID = "1900000001"
WECHAT_APPID = "wx0000000000000001"
WECHAT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"


class WechatDriver:
    def __init__(self, simulator: WechatPaySimulator, merchant_key: KeyPair, clock: Clock) -> None:
        self.simulator = simulator
        self.merchant_key = merchant_key
        self.clock = clock

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(body).encode()
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        message = f"POST\n{path}\n{timestamp}\n{nonce}\n".encode() + raw + b"\n"
        signature = base64.b64encode(
            self.merchant_key.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        ).decode()
        authorization = (
            f'WECHATPAY2-SHA256-RSA2048 mchid="{WECHAT_MCHID}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{WECHAT_SERIAL}"'
        )
        headers = {"Authorization": authorization, "Content-Type": "application/json"}
        response = asgi(self.simulator.app, "POST", path, content=raw, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def paid(self, out_trade_no: str, total: int, at: dt.datetime) -> str:
        self.clock.now = at
        order = {
            "appid": WECHAT_APPID,
            "mchid": WECHAT_MCHID,
            "description": "洗衣",
            "out_trade_no": out_trade_no,
            "notify_url": "http://127.0.0.1:9/notify",
            "amount": {"total": total, "currency": "CNY"},
        }
        self.post("/v3/pay/transactions/native", order)
        return self.simulator.pay(out_trade_no)

    def refunded(self, out_trade_no: str, out_refund_no: str, refund: int, total: int, at: dt.datetime) -> str:
        self.clock.now = at
        body = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": "CNY"},
        }
        return self.post("/v3/refund/domestic/refunds", body)["refund_id"]


@dataclass
class WechatDay:
    simulator: WechatPaySimulator
    transaction_ids: dict[str, str]
    refund_ids: dict[str, str]
    payments: list[str]
    refunds: list[str]


@pytest.fixture
def wechat_day(keys: tuple[KeyPair, KeyPair]) -> Iterator[WechatDay]:
    """Two payments and two refunds (one settled, one still PROCESSING) on DAY, fee 0.60%."""
    platform_key, merchant_key = keys
    clock = Clock(beijing(8))
    simulator = create_simulator(
        merchants=[
            SimulatedMerchant(
                mchid=WECHAT_MCHID,
                appid=WECHAT_APPID,
                apiv3_key="0123456789abcdef0123456789abcdef",
                cert_serial_no=WECHAT_SERIAL,
                public_key_pem=merchant_key.public_pem,
            )
        ],
        platform_private_key_pem=platform_key.private_pem,
        platform_public_key_id="PUB_KEY_ID_0000000000000000000001",
        base_url="http://sim.test",
        clock=clock,
        notify_delay_seconds=0.0001,
        refund_settle_seconds=None,
        fee_rate_bp=60,
    )
    driver = WechatDriver(simulator, merchant_key, clock)
    payments = [ids.new_id("pat") for _ in range(2)]
    refunds = [ids.new_id("rfd") for _ in range(2)]
    try:
        transaction_ids = {
            payments[0]: driver.paid(payments[0], 10000, beijing(9)),
            payments[1]: driver.paid(payments[1], 3333, beijing(12)),
        }
        refund_ids = {refunds[0]: driver.refunded(payments[0], refunds[0], 4000, 10000, beijing(15))}
        simulator.settle_refund(refunds[0])
        refund_ids[refunds[1]] = driver.refunded(payments[1], refunds[1], 1000, 3333, beijing(16))
        yield WechatDay(simulator, transaction_ids, refund_ids, payments, refunds)
    finally:
        simulator.close()


def test_a_wechat_day_imports_with_fees_and_the_refunds_own_status(wechat_day: WechatDay) -> None:
    text = wechat_day.simulator.bill_text(DAY)
    p, r = wechat_day.payments, wechat_day.refunds
    t, f = wechat_day.transaction_ids, wechat_day.refund_ids
    expected = [
        (2, "payment", t[p[0]], p[0], None, 10000, "credit", "SUCCESS", utc(beijing(9))),
        (3, "payment", t[p[1]], p[1], None, 3333, "credit", "SUCCESS", utc(beijing(12))),
        (4, "refund", f[r[0]], r[0], p[0], 4000, "debit", "SUCCESS", utc(beijing(15))),
        (5, "refund", f[r[1]], r[1], p[1], 1000, "debit", "PROCESSING", utc(beijing(16))),
    ]

    for source in (io.BytesIO(text.encode()), io.BytesIO(gzip.compress(text.encode()))):
        lines, errors, totals = read(source, "wechat")

        assert errors == []
        assert _as_tuples(lines) == expected
        # 0.60% half up: 100.00 → 0.60, 33.33 → 0.20; refunds give back 40.00 → 0.24, 10.00 → 0.06
        assert [line.fee for line in lines] == [60, 20, 24, 6]
        assert sums(totals) == (2, 13333, 2, 5000, 50)
        assert totals.summary_agrees is True
        assert totals.summary.line_no == 7
        assert totals.summary.figures["总交易单数"] == 4
        assert (totals.summary.payment_sum, totals.summary.refund_sum, totals.summary.fee_sum) == (13333, 5000, 50)


# --------------------------------------------------------------------------- direct banks


def _bank_rows() -> list[BillRow]:
    pay_a, pay_b, refund = ids.new_id("pat"), ids.new_id("pat"), ids.new_id("rfd")
    return [
        BillRow("payment", utc(beijing(9, 15)), pay_a, "BKT0001", None, None, "CNY", 250000, 150, "page", "年费"),
        BillRow("payment", utc(beijing(13, 2)), pay_b, "BKT0002", None, None, "CNY", 199, 0, "bank_card", "coffee"),
        BillRow("refund", utc(beijing(17, 45)), pay_a, "BKT0001", refund, "BKR0001", "CNY", 50000, 0, "page", "年费"),
    ]


@pytest.mark.parametrize("profile", [ICBC, CMB], ids=["icbc", "cmb"])
def test_a_direct_banks_bill_imports_in_its_own_layout_whichever_profile(profile: Any) -> None:
    rows = _bank_rows()
    content = render_bill(profile, merchant_id="M0001", bill_date=DAY, rows=rows, exported_at=utc(beijing(23, 59)))
    first = 2 if profile is ICBC else 5  # CMB: three # preamble lines, then the header

    for options in ({}, {"profile": profile.code}):
        lines, errors, totals = read(io.BytesIO(content), "bank_direct", **options)

        assert errors == []
        pay_a, pay_b, refund = rows
        assert _as_tuples(lines) == [
            (first, "payment", "BKT0001", pay_a.out_trade_no, None, 250000, "credit", None, pay_a.occurred_at),
            (first + 1, "payment", "BKT0002", pay_b.out_trade_no, None, 199, "credit", None, pay_b.occurred_at),
            (first + 2, "refund", "BKR0001", refund.out_refund_no, pay_a.out_trade_no, 50000, "debit", None,
             refund.occurred_at),
        ]  # fmt: skip
        assert [line.fee for line in lines] == [150, 0, 0]
        assert sums(totals) == (2, 250199, 1, 50000, 150)
        assert totals.summary_agrees is True
        assert (totals.summary.payment_count, totals.summary.refund_count, totals.summary.fee_sum) == (2, 1, 150)
        assert totals.statement_dates == [DAY]


# --------------------------------------------------------------------------- real third-party files


@pytest.fixture(autouse=True)
def _quiet_mt940_library() -> Iterator[None]:
    """The mt-940 library logs every field it cannot match at ERROR level; the LineErrors say it already."""
    logger = logging.getLogger("mt940")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_the_cmxl_mt940_sample_imports_with_the_totals_in_the_readme() -> None:
    lines, errors, totals = read(DATA / "mt940_cmxl.sta", "mt940")

    assert errors == []
    assert len(lines) == 16
    expected = {
        # currency: line count, credits (count, sum), debits (count, sum), opening, closing
        "DEM": (11, 4, 4939674, 7, 4930944, 8434974, 8443704),
        "EUR": (2, 1, 300000, 1, 80000, 218795, 438795),
        "PLN": (3, 2, 2004000, 1, 1000000, 4000000, 5004000),
    }
    for code, (count, credits, credit_sum, debits, debit_sum, opening, closing) in expected.items():
        t = totals.currencies[code]
        assert (t.line_count, t.credit_count, t.credit_sum, t.debit_count, t.debit_sum) == (
            count,
            credits,
            credit_sum,
            debits,
            debit_sum,
        ), code
        assert (t.opening_balance, t.closing_balance) == (opening, closing), code
    assert [s.agrees for s in totals.statements] == [True, True, True]
    assert totals.statement_dates == [dt.date(2013, 10, 17), dt.date(2002, 11, 30), dt.date(2002, 3, 25)]
    first, eur_debit, pln_debit = lines[0], lines[11], lines[14]
    assert (first.line_no, first.kind, first.amount, first.currency, first.value_date) == (
        5,
        "debit",
        680000,
        "DEM",
        dt.date(2013, 10, 17),
    )
    assert (eur_debit.line_no, eur_debit.channel_ref, eur_debit.order_ref, eur_debit.booking_date) == (
        36,
        "55555",
        None,  # NONREF
        dt.date(2002, 11, 2),
    )
    assert (pln_debit.channel_ref, pln_debit.order_ref) == ("8327000090031790", "REF 25611247")
    assert pln_debit.description.startswith("Transfer Wyplata-(dysp/przel) ")  # :61: details, then the :86:


def test_the_camt053_v02_sample_splits_its_batch_entry_and_imports_with_the_readme_totals() -> None:
    lines, errors, totals = read(DATA / "camt053_v02_viafintech.xml", "camt053")

    assert errors == []
    assert [(line.line_no, line.direction, line.amount, line.channel_ref, line.order_ref) for line in lines] == [
        (60, "debit", 200, "2013122710583450000", "EndToEndReference"),
        (156, "debit", 300, "2013122710583600000", None),  # EndToEndId NOTPROVIDED
        (217, "credit", 100, "2013122711085260000", None),
        (275, "debit", 350, "2013122711513230000", "STZV-EtE27122013-11:02-1"),  # batch of 6.00: 3.50 + 2.50
        (319, "debit", 250, "2013122711513230000", "STZV-EtE27122013-11:02-2"),
    ]
    assert all(line.status == "BOOK" and line.booking_date == dt.date(2013, 12, 27) for line in lines)
    eur = totals.currencies["EUR"]
    assert (eur.line_count, eur.credit_count, eur.credit_sum, eur.debit_count, eur.debit_sum) == (5, 1, 100, 4, 1100)
    assert (eur.opening_balance, eur.closing_balance) == (3306, 2306)
    assert totals.statements[0].account == "DE14740618130000033626"
    assert totals.statement_dates == [dt.date(2013, 12, 27)]
    assert totals.valid


def test_the_camt053_v08_sample_imports_and_its_missing_entries_show_as_a_balance_mismatch() -> None:
    lines, errors, totals = read(DATA / "camt053_v08_viafintech.xml", "camt053")

    assert [(line.line_no, line.direction, line.amount, line.order_ref) for line in lines] == [
        (84, "credit", 47440, "80000004540000100095"),
        (169, "credit", 8885, "435A9287E088BDB1D97FAABD181C70C8"),  # a batch of one: one line
        (259, "debit", 1969, "1208481"),
    ]
    chf = totals.currencies["CHF"]
    assert (chf.credit_count, chf.credit_sum, chf.debit_count, chf.debit_sum) == (2, 56325, 1, 1969)
    assert (chf.opening_balance, chf.closing_balance) == (8272195, 8451525)
    assert errors == [
        LineError(
            60,
            "closing balance (CLBD) 84515.25 CHF is not opening 82721.95 + booked credits 563.25 "
            "- booked debits 19.69 = 83265.51",
            "balance_mismatch",
        )
    ]
    assert not totals.valid


# --------------------------------------------------------------------------- malformed lines

ALIPAY_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def alipay_row(trade: str, order: str, kind: str, received: str, finished: str, request_no: str = "") -> str:
    cells = [f"{trade}\t", f"{order}\t", kind, "洗衣", "2024-03-05 09:59:00", finished, "", "", "", "", "b***@x"]
    cells += [received.lstrip("-"), received, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00"]
    cells += [f"{request_no}\t" if request_no else "", "-0.06", "0.00", ""]
    return ",".join(cells)


def alipay_bill(rows: list[str], footer: list[str]) -> bytes:
    head = [
        "#支付宝业务明细查询",
        "#账号：[20880000000000010156]",
        "#起始日期：[2024年03月05日 00:00:00]   终止日期：[2024年03月06日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ALIPAY_HEADER,
    ]
    return "\r\n".join([*head, *rows, *footer, ""]).encode("gbk")


ALIPAY_END = "#-----------------------------------------业务明细列表结束------------------------------------"


def test_malformed_alipay_lines_are_reported_with_their_line_numbers_and_the_rest_imports() -> None:
    rows = [
        alipay_row("2024030522001000001", "pat_a", "交易", "10.00", "2024-03-05 10:00:00"),  # line 6
        alipay_row("2024030522001000002", "pat_b", "交易", "12.345", "2024-03-05 10:01:00"),  # 7
        alipay_row("2024030522001000003", "pat_c", "交易", "1.00", "2024-03-05 10:02:00").rsplit(",", 1)[0],  # 8
        alipay_row("2024030522001000004", "pat_d", "交易", "7.00", "2024-03-05 25:00:00"),  # 9
        alipay_row("2024030522001000005", "pat_e", "转账", "3.00", "2024-03-05 10:04:00"),  # 10
        alipay_row("2024030522001000001", "pat_a", "退款", "-5.00", "2024-03-05 11:00:00", "rfd_a"),  # 11
    ]
    # The summary counts what Alipay wrote: the rows whose kind and amount can be read (6, 9 and 11).
    footer = [
        ALIPAY_END,
        "#交易合计：2笔，商家实收共17.00元，商家优惠共0.00元",
        "#退款合计：1笔，商家实收退款共-5.00元",
    ]

    lines, errors, totals = read(io.BytesIO(alipay_bill(rows, footer)), "alipay")

    assert errors == [
        LineError(7, "商家实收（元） 12.345 has more than 2 decimals", "amount_invalid"),
        LineError(8, "24 columns, the header has 25", "column_count_invalid"),
        LineError(9, "完成时间 '2024-03-05 25:00:00' is not a time (YYYY-MM-DD HH:MM:SS)", "time_invalid"),
        LineError(10, "业务类型 '转账' is neither 交易 nor 退款", "kind_unknown"),
    ]
    assert [(line.line_no, line.kind, line.order_ref, line.original_ref, line.amount, line.fee) for line in lines] == [
        (6, "payment", "pat_a", None, 1000, 6),
        (11, "refund", "rfd_a", "pat_a", 500, 6),
    ]
    assert totals.summary_agrees is True
    assert totals.error_count == 4 and not totals.valid


def test_an_alipay_bill_that_disagrees_with_its_summary_or_is_cut_short_fails_on_the_summary_line() -> None:
    rows = [alipay_row("2024030522001000001", "pat_a", "交易", "10.00", "2024-03-05 10:00:00")]
    wrong = [ALIPAY_END, "#交易合计：2笔，商家实收共20.00元，商家优惠共0.00元", "#退款合计：0笔，商家实收退款共0.00元"]

    _, errors, totals = read(io.BytesIO(alipay_bill(rows, wrong)), "alipay")
    assert errors == [
        LineError(8, "the file's summary says 交易合计 2 but its detail lines count 1", "summary_mismatch"),
        LineError(8, "the file's summary says 商家实收共 20.00 but its detail lines sum to 10.00", "summary_mismatch"),
    ]
    assert totals.summary_agrees is False

    _, errors, _ = read(io.BytesIO(alipay_bill(rows, [])), "alipay")
    assert errors == [
        LineError(6, "the bill ends without its #---业务明细列表结束--- line (truncated?)", "summary_missing")
    ]


WECHAT_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
WECHAT_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def wechat_row(state: str, amount: str, refund: str, fee: str, *, when: str = "2024-03-05 10:00:00") -> str:
    refund_cells = ["500000001", "rfd_x", refund, "0.00", "ORIGINAL", "SUCCESS"] if state == "REFUND" else ["0", "0"]
    refund_cells += ["0.00", "0.00", "", ""] if state != "REFUND" else []
    cells = [when, WECHAT_APPID, WECHAT_MCHID, "0", "", "4200000001", "pat_x", "oUser", "NATIVE", state, "OTHERS"]
    cells += ["CNY", amount, "0.00", *refund_cells, "洗衣", "", fee, "0.60%", amount, refund, ""]
    return ",".join("`" + cell for cell in cells)


def test_malformed_wechat_rows_are_reported_and_a_refund_fee_with_the_wrong_sign_is_refused() -> None:
    rows = [
        wechat_row("SUCCESS", "100.00", "0.00", "0.60"),  # line 2
        wechat_row("BOUNCED", "1.00", "0.00", "0.01"),  # 3: not a trade state
        wechat_row("REFUND", "0.00", "40.00", "0.24"),  # 4: a refund's fee is given back, written negative
        wechat_row("SUCCESS", "abc", "0.00", "0.00"),  # 5
        wechat_row("SUCCESS", "5.00", "0.00", "0.03", when="2024/03/05 10:00"),  # 6
        wechat_row("REFUND", "0.00", "10.00", "-0.06"),  # 7
        wechat_row("SUCCESS", "2.00", "0.00", "0.01").rsplit(",", 2)[0],  # 8
    ]
    summary = ",".join("`" + cell for cell in ["6", "106.00", "50.00", "0.00", "0.82", "106.00", "50.00"])
    text = "\r\n".join([WECHAT_HEADER, *rows, WECHAT_SUMMARY, summary, ""])

    lines, errors, totals = read(io.BytesIO(text.encode()), "wechat")

    assert errors == [
        LineError(3, "交易状态 'BOUNCED' is not a WeChat Pay trade state", "kind_unknown"),
        LineError(4, "手续费 0.24 of a refund must not be positive", "fee_invalid"),
        LineError(5, "应结订单金额 'abc' is not an amount", "amount_invalid"),
        LineError(6, "交易时间 '2024/03/05 10:00' is not a time (YYYY-MM-DD HH:MM:SS)", "time_invalid"),
        LineError(8, "25 columns, the header has 27", "column_count_invalid"),
    ]
    assert [(line.line_no, line.kind, line.amount, line.fee) for line in lines] == [
        (2, "payment", 10000, 60),
        (7, "refund", 1000, 6),
    ]
    assert totals.summary_agrees is True


def test_an_mt940_field_the_library_cannot_read_is_reported_on_its_line_and_the_balance_then_disagrees() -> None:
    text = "\r\n".join(
        [
            ":20:STMT1",  # 1
            ":25:NL00BANK0123456789",
            ":28C:1/1",
            ":60F:C240305CNY1000,00",
            ":61:2403050305C250,00NTRFpat_0001//B0001",  # 5
            ":86:first",
            ":61:2403X50305D50,00NTRFrfd_0001//B0002",  # 7: not a date
            ":86:second",
            ":61:2403050305D10,001NTRFNONREF//B0003",  # 9: three decimals
            ":62F:C240305CNY1200,00",  # 10
            "-",
        ]
    )

    lines, errors, totals = read(io.BytesIO(text.encode()), "mt940")

    assert [(line.line_no, line.direction, line.amount, line.order_ref, line.channel_ref) for line in lines] == [
        (5, "credit", 25000, "pat_0001", "B0001"),
    ]
    assert lines[0].description == "first"
    assert [(error.line_no, error.code) for error in errors] == [
        (7, "tag_invalid"),
        (9, "amount_invalid"),
        (10, "balance_mismatch"),
    ]
    assert errors[0].reason.startswith(":61: '2403X50305D50,00NTRFrfd_0001//B0002' cannot be read")
    assert errors[2].reason == (
        "closing balance 1200.00 CNY is not opening 1000.00 + credits 250.00 - debits 0.00 = 1250.00"
    )
    assert totals.currencies["CNY"].opening_balance == 100000


CAMT_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.13">
<BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId><CreDtTm>2024-03-05T23:00:00+08:00</CreDtTm></GrpHdr>
<Stmt><Id>S1</Id>
<Acct><Id><Othr><Id>6222000011112222</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2024-03-05</Dt></Dt></Bal>
<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">130.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2024-03-05</Dt></Dt></Bal>
"""  # noqa: E501


def camt_entry(amount: str, indicator: str = "CRDT", status: str = "BOOK", ref: str = "po_1") -> str:
    return (
        f'<Ntry><Amt Ccy="CNY">{amount}</Amt><CdtDbtInd>{indicator}</CdtDbtInd><Sts><Cd>{status}</Cd></Sts>'
        "<BookgDt><DtTm>2024-03-05T10:00:00+08:00</DtTm></BookgDt><ValDt><Dt>2024-03-05</Dt></ValDt>"
        f"<AcctSvcrRef>B-{ref}</AcctSvcrRef><NtryDtls><TxDtls><Refs><EndToEndId>{ref}</EndToEndId></Refs>"
        "</TxDtls></NtryDtls></Ntry>\n"
    )


def test_malformed_camt053_entries_are_reported_on_their_lines_and_a_cut_file_is_unreadable() -> None:
    body = (
        camt_entry("30.00", ref="po_good")  # line 8
        + camt_entry("1.234")  # 9
        + camt_entry("5.00", status="WHAT")  # 10
        + camt_entry("5.00", indicator="BOTH")  # 11
    )
    document = CAMT_HEAD + body + "</Stmt></BkToCstmrStmt></Document>\n"

    lines, errors, totals = read(io.BytesIO(document.encode()), "camt053")

    assert [(line.line_no, line.amount, line.order_ref, line.channel_ref, line.occurred_at) for line in lines] == [
        (8, 3000, "po_good", "B-po_good", utc(beijing(10))),
    ]
    assert errors == [
        LineError(9, "Ntry/Amt 1.234 has more than 2 decimals", "amount_invalid"),
        LineError(10, "Ntry/Sts 'WHAT' is not one of BOOK, PDNG, INFO, FUTR", "status_unknown"),
        LineError(11, "Ntry/CdtDbtInd 'BOTH' is neither CRDT nor DBIT", "kind_unknown"),
    ]
    assert totals.statements[0].agrees and totals.statements[0].account == "6222000011112222"

    _, errors, _ = read(io.BytesIO((CAMT_HEAD + camt_entry("30.00")).encode()), "camt053")
    assert [(error.line_no, error.code) for error in errors] == [(9, "file_unreadable")]  # where the file ends
    assert errors[0].reason.startswith("the XML is not well-formed: no element found")


def test_a_camt053_batch_must_add_up_and_pending_entries_stay_out_of_the_booked_balance() -> None:
    def batch(total: str, *parts: str) -> str:
        txs = "".join(
            f'<TxDtls><Refs><EndToEndId>po_{n}</EndToEndId></Refs><Amt Ccy="CNY">{part}</Amt></TxDtls>\n'
            for n, part in enumerate(parts)
        )
        return (
            f'<Ntry><Amt Ccy="CNY">{total}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>'
            f"<BookgDt><Dt>2024-03-05</Dt></BookgDt><NtryRef>N-{total}</NtryRef><NtryDtls>\n{txs}</NtryDtls></Ntry>\n"
        )

    body = (
        batch("30.00", "10.00", "20.00")  # lines 8-11, its TxDtls on 9 and 10
        + batch("5.00", "1.00", "2.00")  # 12-15: 1.00 + 2.00 is not 5.00
        + camt_entry("99.00", status="PDNG", ref="po_later")  # 16: pending, not in the booked balance
    )
    document = CAMT_HEAD + body + "</Stmt></BkToCstmrStmt></Document>\n"

    lines, errors, totals = read(io.BytesIO(document.encode()), "camt053")

    assert [(line.line_no, line.amount, line.order_ref, line.channel_ref, line.status) for line in lines] == [
        (9, 1000, "po_0", "N-30.00", "BOOK"),
        (10, 2000, "po_1", "N-30.00", "BOOK"),
        (16, 9900, "po_later", "B-po_later", "PDNG"),
    ]
    assert errors == [
        LineError(12, "batch entry of 5.00 CNY but its 2 transactions add up to 3.00", "batch_amount_mismatch")
    ]
    assert totals.statements[0].agrees  # 100.00 + 30.00 booked = 130.00; the pending 99.00 is not booked
    assert totals.currencies["CNY"].credit_sum == 12900  # every accepted line counts in the totals


def test_mt940_in_a_swift_envelope_reads_and_a_statement_level_86_belongs_to_no_line() -> None:
    text = "\n".join(
        [
            "{1:F01BANKCNBJAXXX0000000000}{2:O9401200240305BANKCNBJAXXX00000000002403051200N}{4:",
            ":20:STMT2",
            ":25:6222000011112222",
            ":28C:7/1",
            ":60F:D240304CNY50,00",  # 5: a debit (negative) opening balance
            ":61:240305C100,00NTRFpat_0002//B9",
            ":86:payment",
            ":62F:C240305CNY50,00",  # 8
            ":86:statement information",
            "-}",
        ]
    )

    lines, errors, totals = read(io.BytesIO(text.encode()), "mt940")

    assert errors == []
    assert [(line.line_no, line.amount, line.order_ref, line.description) for line in lines] == [
        (6, 10000, "pat_0002", "payment"),
    ]
    assert (totals.statements[0].opening_balance, totals.statements[0].closing_balance) == (-5000, 5000)
    assert totals.statements[0].account == "6222000011112222" and totals.statement_dates == [DAY]


def test_a_file_that_is_not_the_format_it_claims_is_one_line_error_not_an_exception() -> None:
    _, errors, _ = read(io.BytesIO(b"PK\x03\x04 not really a zip"), "alipay")
    assert [(error.line_no, error.code) for error in errors] == [(0, "file_unreadable")]

    _, errors, _ = read(io.BytesIO(b"\x1f\x8b\x08\x00 cut gzip"), "wechat")
    assert [error.code for error in errors] == ["file_unreadable"]

    _, errors, _ = read(io.BytesIO(b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.052.001.02'/>"), "camt053")
    assert [(error.line_no, error.code) for error in errors] == [(1, "file_unreadable")]


def test_a_line_that_is_not_gbk_is_reported_and_its_neighbours_still_import() -> None:
    rows = [
        alipay_row("2024030522001000001", "pat_a", "交易", "10.00", "2024-03-05 10:00:00"),  # line 6
        alipay_row("2024030522001000002", "pat_b", "交易", "2.00", "2024-03-05 10:01:00"),  # 7, then spoiled
    ]
    footer = [ALIPAY_END, "#交易合计：2笔，商家实收共12.00元，商家优惠共0.00元", "#退款合计：0笔，商家实收退款共0.00元"]
    content = alipay_bill(rows, footer).replace(b"pat_b", b"pat_\xff\xff")

    lines, errors, _ = read(io.BytesIO(content), "alipay")

    assert [line.line_no for line in lines] == [6]
    assert errors == [
        LineError(7, "the line is not valid GBK text", "encoding_invalid"),
        # …and so the lines no longer add up to the summary Alipay wrote:
        LineError(9, "the file's summary says 交易合计 2 but its detail lines count 1", "summary_mismatch"),
        LineError(9, "the file's summary says 商家实收共 12.00 but its detail lines sum to 10.00", "summary_mismatch"),
    ]


# --------------------------------------------------------------------------- the API's refusals


def test_an_unknown_format_is_refused_with_a_stable_code_before_anything_is_read() -> None:
    assert FORMATS == ("bank_direct", "alipay", "wechat", "mt940", "camt053")
    with pytest.raises(ReconFormatInvalid) as refused:
        iter_statement(io.BytesIO(b""), "ofx")
    assert refused.value.code == "recon_format_invalid"
    assert isinstance(refused.value, InvalidInput)
    with pytest.raises(ReconProfileInvalid):
        iter_statement(io.BytesIO(b""), "alipay", profile="icbc")
    with pytest.raises(InvalidInput) as unknown_currency:
        iter_statement(io.BytesIO(b""), "alipay", currency="XYZ")
    assert unknown_currency.value.code == "currency_unknown"


# --------------------------------------------------------------------------- streaming

STREAM_ROWS = 200_000


def test_a_200000_line_wechat_bill_streams_without_holding_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(WECHAT_HEADER + "\r\n")
        for n in range(STREAM_ROWS):
            out.write(
                f"`2024-03-05 10:00:00,`{WECHAT_APPID},`{WECHAT_MCHID},`0,`,`42000{n:023d},`pat_{n:026d},`oUser,"
                f"`NATIVE,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`洗衣,`,`0.01,`0.60%,`1.00,`0.00,`\r\n"
            )
        out.write(WECHAT_SUMMARY + "\r\n")
        total = f"{STREAM_ROWS}.00"
        fees = f"{STREAM_ROWS // 100}.00"
        out.write(",".join("`" + cell for cell in [str(STREAM_ROWS), total, "0.00", "0.00", fees, total, "0.00"]))
        out.write("\r\n")
    size = path.stat().st_size
    reader = iter_statement(path, "wechat")
    count = last_line_no = 0

    def consume(rows: int | None) -> None:
        nonlocal count, last_line_no
        for item in itertools.islice(reader, rows):
            assert isinstance(item, StatementLine), item
            count += 1
            last_line_no = item.line_no

    def traced_peak(rows: int | None) -> int:
        """Peak of Python objects allocated while ``rows`` more lines are read (tracing is slow: two windows)."""
        tracemalloc.start()
        try:
            consume(rows)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    first_peak = traced_peak(10_000)  # a reader that loaded the file first would show it here
    consume(STREAM_ROWS - 60_000)
    last_peak = traced_peak(None)  # and one that kept its lines, here: 50,000 of them

    assert count == STREAM_ROWS and last_line_no == STREAM_ROWS + 1
    cny = reader.totals.currencies["CNY"]
    assert (cny.credit_count, cny.credit_sum, cny.fee_sum) == (STREAM_ROWS, STREAM_ROWS * 100, STREAM_ROWS)
    assert reader.totals.valid
    assert size > 40_000_000  # about 46 MB of bill; each window peaks near 0.6 MB
    assert first_peak < size // 20 and last_peak < size // 20, (first_peak, last_peak, size)
