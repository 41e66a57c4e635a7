"""A directly connected bank, end to end over HTTP: the adapter against the bank simulator, for both banks.

Every test runs once per bank profile (ICBC-like: form + JSON, ``sign`` field,
fen; CMB-like: XML, signature header, yuan, GBK bill), each with its own
simulator and notify receiver on loopback ports. Wire-format checks read the
raw bytes with the standard library and ``cryptography`` only, as the spec in
``docs/channels/bank_direct.md`` describes them, not through the codec under test.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import itertools
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zhangfang.channels.bank_direct import (
    CMB,
    ICBC,
    SHANGHAI,
    BankDirectAdapter,
    BankProfile,
    PayoutRequest,
    PayoutStatus,
)
from zhangfang.channels.protocol import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    CreatePayment,
    Notify,
    NotifyInvalid,
    RefundRequest,
)
from zhangfang.money import parse_amount
from zhangfang.sandbox.bank_direct import BankSimulator, create_bank_simulator
from zhangfang.sandbox.server import RunningServer, serve_in_thread

MERCHANT = "M100200300"
SCALE = 0.001  # one second of a bank's retry schedule takes 1 ms here
WAIT_SECONDS = 5.0
# The bank's clock starts at noon in Shanghai on a fixed day, so bill dates never straddle midnight.
CLOCK_START = dt.datetime(2025, 3, 14, 12, 0, tzinfo=SHANGHAI)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@dataclass(frozen=True)
class Keys:
    bank: RSAPrivateKey
    platform: RSAPrivateKey
    stranger: RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    def new() -> RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(bank=new(), platform=new(), stranger=new())


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_monotonic: float


@dataclass
class Receiver:
    """The merchant's notify endpoint: records every POST; answers 500 to the first ``fail_first``, then acks."""

    ack_status: int = 200
    ack_body: bytes = b""
    ack_headers: dict[str, str] = field(default_factory=dict)
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        with self._changed:
            self.received.append(Received(request.url.path, dict(request.headers), body, time.monotonic()))
            failing = len(self.received) <= self.fail_first
            self._changed.notify_all()
        if failing:
            return Response(b"busy", status_code=500)
        return Response(self.ack_body, status_code=self.ack_status, headers=self.ack_headers)

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[Received]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.received) >= count, timeout), (
                f"expected {count} notifies, got {len(self.received)}"
            )
            return list(self.received)


@dataclass
class Bank:
    profile: BankProfile
    keys: Keys
    sim: BankSimulator
    server: RunningServer
    adapter: BankDirectAdapter
    receiver: Receiver
    receiver_url: str
    started_monotonic: float = field(default_factory=time.monotonic)
    extra: list[BankDirectAdapter] = field(default_factory=list)

    def now(self) -> dt.datetime:
        return CLOCK_START + dt.timedelta(seconds=time.monotonic() - self.started_monotonic)

    @property
    def notify_url(self) -> str:
        return f"{self.receiver_url}/notify"

    def adapter_with(self, **overrides: Any) -> BankDirectAdapter:
        options: dict[str, Any] = {
            "profile": self.profile,
            "base_url": self.server.base_url,
            "merchant_id": MERCHANT,
            "platform_private_key": self.keys.platform,
            "bank_public_key": self.keys.bank.public_key(),
            "timeout_seconds": 3.0,
            "clock": self.now,
            **overrides,
        }
        adapter = BankDirectAdapter(**options)
        self.extra.append(adapter)
        return adapter

    def create(self, out_trade_no: str, amount_minor: int = 1234, **overrides: Any) -> str:
        """Creates a trade; returns the cashier URL."""
        request = CreatePayment(
            out_trade_no=out_trade_no,
            amount_minor=amount_minor,
            currency="CNY",
            subject=overrides.pop("subject", "测试商品"),
            method=overrides.pop("method", "page"),
            notify_url=self.notify_url,
            return_url=overrides.pop("return_url", "https://shop.example/return?from=bank"),
            **overrides,
        )
        action = self.adapter.create_payment(request)
        assert action.kind == "redirect" and action.url
        return action.url

    def pay_at_cashier(self, url: str, outcome: str | None = None) -> httpx.Response:
        page = httpx.get(url)
        assert page.status_code == 200 and "<button" in page.text and ">pay<" in page.text
        return httpx.post(url, params={"outcome": outcome} if outcome else None, follow_redirects=False)

    def paid_trade(self, out_trade_no: str, amount_minor: int = 1234) -> Notify:
        """Creates and pays a trade; returns its verified payment notify."""
        before = len(self.receiver.received)
        self.pay_at_cashier(self.create(out_trade_no, amount_minor))
        received = self.receiver.wait_for(before + 1)[before]
        return self.adapter.parse_notify(received.headers, received.body)

    def refund(self, out_trade_no: str, out_refund_no: str, refund_minor: int, total_minor: int = 1234) -> Any:
        return self.adapter.refund(
            RefundRequest(
                out_trade_no=out_trade_no,
                out_refund_no=out_refund_no,
                refund_minor=refund_minor,
                total_minor=total_minor,
                currency="CNY",
                reason="顾客退货",
            )
        )

    def today(self) -> dt.date:
        return CLOCK_START.date()


@pytest.fixture(scope="module")
def stopped_servers() -> Iterator[list[RunningServer]]:
    """Servers told to stop by a test's teardown; their threads are joined here, once, so the waits overlap."""
    servers: list[RunningServer] = []
    yield servers
    for running in servers:
        running.stop()


@pytest.fixture(params=[ICBC, CMB], ids=lambda profile: profile.code)
def bank(request: pytest.FixtureRequest, keys: Keys, stopped_servers: list[RunningServer]) -> Iterator[Bank]:
    profile: BankProfile = request.param
    started = time.monotonic()

    def clock() -> dt.datetime:
        return CLOCK_START + dt.timedelta(seconds=time.monotonic() - started)

    sim = create_bank_simulator(
        profile,
        bank_private_key=keys.bank,
        platform_public_key=keys.platform.public_key(),
        merchant_id=MERCHANT,
        notify_delay_seconds=SCALE,
        payout_settle_seconds=None,
        clock=clock,
    )
    server = serve_in_thread(sim.app)
    receiver = Receiver()
    receiver_server = serve_in_thread(receiver.app)
    adapter = BankDirectAdapter(
        profile=profile,
        base_url=server.base_url,
        merchant_id=MERCHANT,
        platform_private_key=keys.platform,
        bank_public_key=keys.bank.public_key(),
        timeout_seconds=3.0,
        clock=clock,
    )
    ack = adapter.ack_notify(True)
    receiver.ack_status, receiver.ack_body, receiver.ack_headers = ack.status_code, ack.body, dict(ack.headers)
    state = Bank(profile, keys, sim, server, adapter, receiver, receiver_server.base_url, started)
    try:
        yield state
    finally:
        sim.shutdown()
        for each in [adapter, *state.extra]:
            each.close()
        for running in (server, receiver_server):  # uvicorn stops within its 0.1 s tick; joined at module end
            running.server.should_exit = True
            stopped_servers.append(running)


# --------------------------------------------------------------------------- raw wire helpers (stdlib only)


def rewrite_notify(profile: BankProfile, body: bytes, changes: dict[str, Any]) -> bytes:
    """The notify body with some business fields changed and the signature left as it was."""
    if profile is ICBC:
        fields = dict(parse_qsl(body.decode()))
        biz = json.loads(fields["biz_content"])
        biz.update(changes)
        fields["biz_content"] = json.dumps(biz, ensure_ascii=False, separators=(",", ":"))
        return urlencode(fields).encode()
    root = ET.fromstring(body)
    for name, value in changes.items():
        root[1].find(name).text = str(value)  # type: ignore[union-attr]
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def notify_fields(profile: BankProfile, body: bytes) -> dict[str, Any]:
    """The business fields of a raw notify, read without the codec."""
    if profile is ICBC:
        return json.loads(dict(parse_qsl(body.decode()))["biz_content"])
    return {child.tag: child.text or "" for child in ET.fromstring(body)[1]}


def rsa2_verifies(public_key: Any, data: bytes, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64), data, padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


def read_bill(profile: BankProfile, content: bytes) -> tuple[list[dict[str, str]], list[str]]:
    """Returns (data rows keyed by header title, footer lines) of a bill file, read with the csv module."""
    if profile is ICBC:
        rows = list(csv.reader(io.StringIO(content.decode("utf-8"), newline=""), delimiter="|"))
        header, data, footer = rows[0], rows[1:-1], rows[-1]
        assert footer[0] == "TOTAL"
        return [dict(zip(header, row, strict=True)) for row in data], ["|".join(footer)]
    text = content.decode("gbk")
    assert "\r\n" in text
    lines = text.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    assert comments[:2] == ["#招商银行商户交易明细", f"#商户号：[{MERCHANT}]"]
    assert comments[2].startswith("#账单日期：[")
    rows = list(csv.reader([line for line in lines if not line.startswith("#")], delimiter=","))
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]], comments[3:]


def bill_entries(profile: BankProfile, content: bytes) -> list[tuple[str, str, str, int, int]]:
    """(kind, out_trade_no, out_refund_no, amount in fen (refunds negative), fee in fen) per bill row."""
    rows, _ = read_bill(profile, content)
    if profile is ICBC:
        return [
            (
                row["trade_type"],
                row["out_trade_no"],
                row["out_refund_no"],
                int(row["trade_amt"]) * (-1 if row["trade_type"] == "REFUND" else 1),
                int(row["fee_amt"]),
            )
            for row in rows
        ]
    kinds = {"支付": "PAY", "退款": "REFUND"}
    return [
        (
            kinds[row["交易类型"]],
            row["商户订单号"],
            row["商户退款单号"],
            parse_amount(row["交易金额（元）"], "CNY"),
            parse_amount(row["手续费（元）"], "CNY"),
        )
        for row in rows
    ]


# --------------------------------------------------------------------------- payments


@pytest.mark.parametrize("profile", [ICBC, CMB], ids=lambda profile: profile.code)
def test_the_adapter_keeps_the_channel_protocol(profile: BankProfile, keys: Keys) -> None:
    adapter = BankDirectAdapter(
        profile=profile,
        base_url="http://127.0.0.1:9",
        merchant_id=MERCHANT,
        platform_private_key=keys.platform,
        bank_public_key=keys.bank.public_key(),
    )
    assert isinstance(adapter, ChannelAdapter)
    assert adapter.code == f"bank_direct:{profile.code}"
    assert adapter.connection == "direct"
    assert adapter.methods == {"bank_card", "page"} and adapter.currencies == {"CNY"}
    adapter.close()


def test_a_payer_paying_at_the_cashier_brings_a_notify_that_verifies(bank: Bank) -> None:
    url = bank.create("T-PAY-1", 1234, method="bank_card")
    bank.pay_at_cashier(url)

    [received] = bank.receiver.wait_for(1)
    notify = bank.adapter.parse_notify(received.headers, received.body)

    assert notify.kind == "payment" and notify.state == "succeeded"
    assert (notify.out_trade_no, notify.amount_minor, notify.currency) == ("T-PAY-1", 1234, "CNY")
    assert notify.channel_trade_no == urlsplit(url).path.rsplit("/", 1)[1]
    assert notify.occurred_at is not None and abs(notify.occurred_at - bank.now()).total_seconds() < 60
    wait_until(lambda: len(bank.sim.notifies_sent()) == 1)
    [delivery] = bank.sim.notifies_sent()
    assert delivery.acknowledged and delivery.notify_id == notify.notify_id


def test_the_return_url_carries_only_the_order_reference(bank: Bank) -> None:
    response = bank.pay_at_cashier(bank.create("T-RET-1"))

    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "shop.example", "/return")
    reference = {"out_trade_no": "T-RET-1"} if bank.profile is ICBC else {"MCHNBR": MERCHANT, "ORDNBR": "T-RET-1"}
    assert dict(parse_qsl(location.query)) == {"from": "bank", **reference}


def test_query_says_pending_before_paying_and_succeeded_after(bank: Bank) -> None:
    url = bank.create("T-Q-1", 999)
    before = bank.adapter.query_payment("T-Q-1")
    assert (before.state, before.amount_minor, before.currency, before.paid_at) == ("pending", 999, "CNY", None)

    bank.pay_at_cashier(url)
    after = bank.adapter.query_payment("T-Q-1")

    assert (after.state, after.amount_minor, after.channel_trade_no) == ("succeeded", 999, before.channel_trade_no)
    assert after.paid_at is not None


def test_a_payment_failed_at_the_cashier_is_notified_as_failed(bank: Bank) -> None:
    bank.pay_at_cashier(bank.create("T-FAIL-1"), outcome="fail")

    [received] = bank.receiver.wait_for(1)
    assert bank.adapter.parse_notify(received.headers, received.body).state == "failed"
    assert bank.adapter.query_payment("T-FAIL-1").state == "failed"


def test_creating_the_same_trade_twice_is_idempotent_and_another_amount_is_refused(bank: Bank) -> None:
    first = bank.create("T-IDEM-1", 500)
    assert bank.create("T-IDEM-1", 500) == first

    with pytest.raises(ChannelRejected) as refused:
        bank.create("T-IDEM-1", 501)
    assert refused.value.code == bank.profile.error_codes["out_trade_no_reused"]

    bank.pay_at_cashier(first)
    with pytest.raises(ChannelRejected) as paid:
        bank.create("T-IDEM-1", 500)
    assert paid.value.code == bank.profile.error_codes["trade_already_paid"]


def test_an_unpaid_trade_closes_and_can_no_longer_be_paid_but_a_paid_one_cannot_close(bank: Bank) -> None:
    url = bank.create("T-CLOSE-1")

    bank.adapter.close_payment("T-CLOSE-1")
    bank.adapter.close_payment("T-CLOSE-1")  # closing again is harmless

    assert bank.adapter.query_payment("T-CLOSE-1").state == "closed"
    assert httpx.get(url).status_code == 410
    assert httpx.post(url, follow_redirects=False).status_code == 409
    assert bank.sim.notifies_sent() == []

    bank.paid_trade("T-CLOSE-2")

    with pytest.raises(ChannelRejected) as refused:
        bank.adapter.close_payment("T-CLOSE-2")

    assert refused.value.code == bank.profile.error_codes["trade_already_paid"]
    assert bank.profile.error_name(refused.value.code) == "trade_already_paid"


def test_an_expired_trade_is_closed(bank: Bank) -> None:
    url = bank.create("T-EXP-1", expires_at=bank.now() - dt.timedelta(seconds=1))

    assert bank.adapter.query_payment("T-EXP-1").state == "closed"
    assert httpx.post(url, follow_redirects=False).status_code == 409


def test_querying_an_unknown_trade_is_rejected_with_the_bank_code(bank: Bank) -> None:
    with pytest.raises(ChannelRejected) as refused:
        bank.adapter.query_payment("T-NOPE")
    assert refused.value.code == bank.profile.error_codes["trade_not_found"]


# --------------------------------------------------------------------------- refunds


def test_partial_and_full_refunds_succeed_and_a_refund_above_what_was_paid_is_refused(bank: Bank) -> None:
    bank.create("T-REF-1", 1000)
    with pytest.raises(ChannelRejected) as unpaid:
        bank.refund("T-REF-1", "R-0", 100, 1000)
    assert unpaid.value.code == bank.profile.error_codes["trade_not_paid"]
    bank.pay_at_cashier(bank.create("T-REF-1", 1000))

    partial = bank.refund("T-REF-1", "R-1", 301, 1000)
    with pytest.raises(ChannelRejected) as refused:
        bank.refund("T-REF-1", "R-2", 700, 1000)
    rest = bank.refund("T-REF-1", "R-3", 699, 1000)

    assert (partial.state, partial.refund_minor, rest.state, rest.refund_minor) == ("succeeded", 301, "succeeded", 699)
    assert refused.value.code == bank.profile.error_codes["refund_exceeds_paid"]
    assert bank.adapter.query_refund("T-REF-1", "R-1").refund_minor == 301
    assert bank.adapter.query_payment("T-REF-1").raw[bank.profile.fields["refunded_total"]] in (1000, "10.00")
    with pytest.raises(ChannelRejected) as nothing_left:
        bank.refund("T-REF-1", "R-4", 1, 1000)
    assert nothing_left.value.code == bank.profile.error_codes["refund_exceeds_paid"]


def test_the_same_out_refund_no_twice_refunds_once(bank: Bank) -> None:
    bank.paid_trade("T-REF-2", 1000)

    first = bank.refund("T-REF-2", "R-X", 400, 1000)
    again = bank.refund("T-REF-2", "R-X", 400, 1000)

    assert again.channel_refund_no == first.channel_refund_no and again.refund_minor == 400
    rows = [row for row in bank.sim.bill_rows(bank.today()) if row.kind == "refund"]
    assert [(row.out_refund_no, row.amount_minor) for row in rows] == [("R-X", 400)]
    with pytest.raises(ChannelRejected) as conflict:
        bank.refund("T-REF-2", "R-X", 401, 1000)
    assert conflict.value.code == bank.profile.error_codes["out_refund_no_reused"]


def test_a_refund_with_a_notify_url_is_notified(bank: Bank) -> None:
    bank.paid_trade("T-REF-4", 1000)

    bank.adapter.refund(
        RefundRequest("T-REF-4", "R-N", 250, 1000, "CNY", notify_url=f"{bank.receiver_url}/refund-notify")
    )

    received = bank.receiver.wait_for(2)[1]
    notify = bank.adapter.parse_notify(received.headers, received.body)
    assert (notify.kind, notify.state, notify.out_refund_no, notify.amount_minor) == ("refund", "succeeded", "R-N", 250)


# --------------------------------------------------------------------------- notifies that must not be believed


def test_a_notify_signed_with_another_key_is_invalid(bank: Bank) -> None:
    genuine = bank.paid_trade("T-FORGE-1")
    forged = bank.profile.wire.encode_notify(
        bank.profile.notify_types["payment"],
        dict(genuine.raw),
        notify_id="N-FORGED",
        timestamp=bank.profile.time_to_wire(bank.now()),
        private_key=bank.keys.stranger,
    )

    with pytest.raises(NotifyInvalid, match="does not verify"):
        bank.adapter.parse_notify(forged.headers, forged.body)


def test_an_unsigned_notify_is_invalid(bank: Bank) -> None:
    bank.paid_trade("T-UNSIGNED-1")
    [received] = bank.receiver.received
    if bank.profile is ICBC:
        fields = dict(parse_qsl(received.body.decode()))
        del fields["sign"]
        headers, body = received.headers, urlencode(fields).encode()
    else:
        headers = {k: v for k, v in received.headers.items() if k != "x-cmb-signature"}
        body = received.body

    with pytest.raises(NotifyInvalid):
        bank.adapter.parse_notify(headers, body)


def test_a_notify_with_a_tampered_amount_is_invalid(bank: Bank) -> None:
    bank.paid_trade("T-TAMPER-1", 1234)
    [received] = bank.receiver.received
    amount_field = bank.profile.fields["amount"]
    tampered = rewrite_notify(bank.profile, received.body, {amount_field: bank.profile.amount_to_wire(1)})
    assert notify_fields(bank.profile, tampered)[amount_field] in (1, "0.01")

    with pytest.raises(NotifyInvalid):
        bank.adapter.parse_notify(received.headers, tampered)


def test_a_notify_for_another_merchant_is_invalid(bank: Bank) -> None:
    genuine = bank.paid_trade("T-OTHER-1")
    for_another = bank.profile.wire.encode_notify(
        bank.profile.notify_types["payment"],
        {**genuine.raw, bank.profile.fields["merchant_id"]: "M999"},
        notify_id="N-OTHER",
        timestamp=bank.profile.time_to_wire(bank.now()),
        private_key=bank.keys.bank,  # a genuine bank signature, for someone else
    )

    with pytest.raises(NotifyInvalid, match="M999"):
        bank.adapter.parse_notify(for_another.headers, for_another.body)


# --------------------------------------------------------------------------- delivery


def test_the_bank_retries_a_refused_notify_on_schedule_and_stops_after_the_ack(bank: Bank) -> None:
    bank.receiver.fail_first = 2
    bank.pay_at_cashier(bank.create("T-RETRY-1"))

    bank.receiver.wait_for(3)
    schedule = bank.profile.notify_retry_intervals_seconds
    time.sleep(schedule[2] * SCALE + 0.1)  # past when a fourth attempt would have come

    deliveries = bank.sim.notifies_sent()
    assert [(d.attempt, d.status_code, d.acknowledged) for d in deliveries] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert len({d.notify_id for d in deliveries}) == 1 and len({d.body for d in deliveries}) == 1
    gaps = [later.sent_at_monotonic - earlier.sent_at_monotonic for earlier, later in itertools.pairwise(deliveries)]
    for gap, scheduled in zip(gaps, schedule, strict=False):
        assert scheduled * SCALE <= gap < scheduled * SCALE + 1.0
    assert len(bank.receiver.received) == 3


def test_an_answer_that_is_not_the_bank_ack_is_retried(bank: Bank) -> None:
    bank.receiver.ack_body = b"success" if bank.profile is CMB else b'{"return_code":0}'  # wrong text / unsigned

    bank.pay_at_cashier(bank.create("T-NACK-1"))

    received = bank.receiver.wait_for(2)
    assert bank.sim.notifies_sent()[0].status_code == 200 and not bank.sim.notifies_sent()[0].acknowledged
    assert received[0].body == received[1].body


def test_a_duplicated_notify_arrives_twice_with_the_same_notify_id(bank: Bank) -> None:
    bank.sim.duplicate_notify(2)

    bank.pay_at_cashier(bank.create("T-DUP-1"))

    first, second = bank.receiver.wait_for(2)
    notifies = [bank.adapter.parse_notify(r.headers, r.body) for r in (first, second)]
    assert notifies[0] == notifies[1] and notifies[0].notify_id
    wait_until(lambda: len(bank.sim.notifies_sent()) == 2)
    assert [d.acknowledged for d in bank.sim.notifies_sent()] == [True, True]


def test_a_delayed_notify_comes_after_the_delay(bank: Bank) -> None:
    bank.sim.delay_notify(0.3)
    started = time.monotonic()

    bank.create("T-DELAY-1")
    bank.sim.pay("T-DELAY-1")

    [received] = bank.receiver.wait_for(1)
    assert received.at_monotonic - started >= 0.3


# --------------------------------------------------------------------------- an unreliable bank


def test_fail_next_makes_the_call_unavailable_and_changes_nothing(bank: Bank) -> None:
    bank.sim.fail_next(1, status=503)

    with pytest.raises(ChannelUnavailable, match="503"):
        bank.create("T-500-1")

    with pytest.raises(ChannelRejected) as unknown:
        bank.adapter.query_payment("T-500-1")
    assert unknown.value.code == bank.profile.error_codes["trade_not_found"]
    bank.create("T-500-1")


def test_timeout_next_makes_the_call_unavailable_within_the_adapter_timeout(bank: Bank) -> None:
    impatient = bank.adapter_with(timeout_seconds=0.2)
    bank.sim.timeout_next(1, 0.35)
    started = time.monotonic()

    with pytest.raises(ChannelUnavailable, match="did not answer"):
        impatient.query_payment("T-SLOW-1")

    assert time.monotonic() - started < 0.5


def test_a_timed_out_create_may_still_have_happened_so_query_before_retrying(bank: Bank) -> None:
    impatient = bank.adapter_with(timeout_seconds=0.2)
    bank.sim.timeout_next(1, 0.35)

    with pytest.raises(ChannelUnavailable):
        impatient.create_payment(CreatePayment("T-SLOW-2", 100, "CNY", "慢", "page", bank.notify_url))

    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            assert bank.adapter.query_payment("T-SLOW-2").state == "pending"
            break
        except ChannelRejected:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_response_signed_with_another_key_is_unavailable(bank: Bank) -> None:
    bank.create("T-SIG-1")
    believing_a_stranger = bank.adapter_with(bank_public_key=bank.keys.stranger.public_key())

    with pytest.raises(ChannelUnavailable, match="signature"):
        believing_a_stranger.query_payment("T-SIG-1")


def test_a_request_signed_with_another_key_is_rejected_with_the_bank_signature_code(bank: Bank) -> None:
    impostor = bank.adapter_with(platform_private_key=bank.keys.stranger)

    with pytest.raises(ChannelRejected) as refused:
        impostor.create_payment(CreatePayment("T-SIG-2", 100, "CNY", "x", "page", bank.notify_url))

    assert refused.value.code == bank.profile.error_codes["signature_invalid"]
    with pytest.raises(ChannelRejected):
        bank.adapter.query_payment("T-SIG-2")  # nothing was created


def test_disagree_amount_shows_in_query_notify_and_bill(bank: Bank) -> None:
    url = bank.create("T-DIS-1", 1000)
    bank.sim.disagree_amount("T-DIS-1", 990)

    bank.pay_at_cashier(url)

    [received] = bank.receiver.wait_for(1)
    assert bank.adapter.parse_notify(received.headers, received.body).amount_minor == 990
    assert bank.adapter.query_payment("T-DIS-1").amount_minor == 990
    bill = bank.adapter.download_bill(bank.today())
    assert bill_entries(bank.profile, bill) == [("PAY", "T-DIS-1", "", 990, 0)]


# --------------------------------------------------------------------------- bills


def test_the_bill_for_the_day_reads_back_to_the_trades_and_refunds(bank: Bank) -> None:
    bank.sim.fee_rate_bp = 60  # 0.6 %, rounded half up to the fen
    bank.paid_trade("T-BILL-1", 1234)
    bank.paid_trade("T-BILL-2", 100_000_01)
    bank.refund("T-BILL-1", "R-BILL-1", 234, 1234)
    bank.create("T-BILL-3", 500)  # unpaid: not in the bill

    content = bank.adapter.download_bill(bank.today())

    assert sorted(bill_entries(bank.profile, content)) == sorted(
        [
            ("PAY", "T-BILL-1", "", 1234, 7),
            ("PAY", "T-BILL-2", "", 100_000_01, 60_000),
            ("REFUND", "T-BILL-1", "R-BILL-1", -234, 0),
        ]
    )
    _, footer = read_bill(bank.profile, content)
    if bank.profile is ICBC:
        assert footer == ["TOTAL|3|2|10001235|1|234|60007"]
    else:
        assert footer[0] == "#合计：支付2笔，共100012.35元；退款1笔，共2.34元；手续费600.07元"
        assert footer[1].startswith("#导出时间：[")
    rows, _ = read_bill(bank.profile, content)
    assert "测试商品" in rows[0].values()
    if bank.profile is ICBC:
        assert {row["bill_date"] for row in rows} == {"2025-03-14"} and rows[0]["trade_time"][:10] == "2025-03-14"
    else:
        assert "#账单日期：[20250314]" in content.decode("gbk") and {row["交易日期"] for row in rows} == {"20250314"}
    assert content == bank.sim.bill_file(bank.today())
    assert bill_entries(bank.profile, bank.adapter.download_bill(bank.today() - dt.timedelta(days=1))) == []


# --------------------------------------------------------------------------- the documented wire format


def test_the_wire_format_is_the_documented_one(bank: Bank) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [sent.append]})
    recording = bank.adapter_with(http_client=client)
    recording.create_payment(CreatePayment("T-WIRE-1", 1234, "CNY", "商品", "page", bank.notify_url))
    bank.sim.pay("T-WIRE-1")
    [received] = bank.receiver.wait_for(1)
    request = sent[0]
    platform, bank_key = bank.keys.platform.public_key(), bank.keys.bank.public_key()

    if bank.profile is ICBC:
        assert request.url.path == "/api/pay/order/create/V1"
        form = dict(parse_qsl(request.content.decode()))
        assert set(form) == {"msg_id", "timestamp", "format", "charset", "sign_type", "biz_content", "sign"}
        signed = request.url.path + "?" + "&".join(f"{k}={form[k]}" for k in sorted(form) if k != "sign")
        assert rsa2_verifies(platform, signed.encode(), form["sign"])
        biz = json.loads(form["biz_content"])
        assert (biz["mer_id"], biz["order_amt"], biz["cur_type"], biz["pay_mode"]) == (MERCHANT, 1234, "001", "01")

        notify = dict(parse_qsl(received.body.decode()))
        assert notify["api"] == "/notify/pay/V1"
        signed = "&".join(f"{k}={notify[k]}" for k in sorted(notify) if k != "sign")
        assert rsa2_verifies(bank_key, signed.encode(), notify["sign"])
        assert json.loads(notify["biz_content"])["order_amt"] == 1234
        assert json.loads(notify["biz_content"])["pay_status"] == "1"

        ack = bank.adapter.ack_notify(True).body.decode()
        value = ack[len('{"response_biz_content":') : ack.index(',"sign_type":"RSA2"')]
        assert json.loads(value) == {"return_code": 0, "return_msg": "success"}
        assert rsa2_verifies(platform, value.encode(), json.loads(ack)["sign"])
    else:
        assert request.url.path == "/cdcserver/api/v2"
        assert rsa2_verifies(platform, request.content, request.headers["X-CMB-Signature"])
        root = ET.fromstring(request.content)
        assert root.tag == "CMBSDKPGK" and root.findtext("INFO/FUNNAM") == "NTPAYCRT"
        body = root.find("NTPAYCRTX")
        assert body is not None
        assert (body.findtext("MCHNBR"), body.findtext("TRSAMT"), body.findtext("CCYNBR")) == (MERCHANT, "12.34", "10")

        assert rsa2_verifies(bank_key, received.body, received.headers["x-cmb-signature"])
        notify_root = ET.fromstring(received.body)
        assert notify_root.findtext("INFO/FUNNAM") == "NTPAYNTF" and notify_root.findtext("INFO/NTFSEQ")
        assert notify_root.findtext("NTPAYNTFZ/TRSAMT") == "12.34"
        assert notify_root.findtext("NTPAYNTFZ/ORDSTS") == "S"

        assert bank.adapter.ack_notify(True).body == b"SUCCESS"
    assert bank.adapter.ack_notify(False).body != bank.adapter.ack_notify(True).body


# --------------------------------------------------------------------------- payouts (代付)


def payout(bank: Bank, out_payout_no: str, account: str, amount_minor: int = 50_000, name: str = "张三") -> Any:
    return bank.adapter.create_payout(
        PayoutRequest(
            out_payout_no=out_payout_no,
            amount_minor=amount_minor,
            currency="CNY",
            payee_account=account,
            payee_name=name,
            payee_bank="CMB" if bank.profile is ICBC else "ICBC",
            remark="结算款",
            notify_url=f"{bank.receiver_url}/payout-notify",
        )
    )


def test_a_payout_is_processing_then_succeeds_and_is_notified(bank: Bank) -> None:
    accepted = payout(bank, "PO-1", "6222020200112233")
    assert (accepted.state, accepted.amount_minor, accepted.failure_code) == ("processing", 50_000, None)
    assert bank.adapter.query_payout("PO-1").state == "processing"

    assert bank.sim.settle_payouts() == 1

    done = bank.adapter.query_payout("PO-1")
    assert (done.state, done.bank_payout_no, done.failure_code) == ("succeeded", accepted.bank_payout_no, None)
    assert done.finished_at is not None
    [received] = bank.receiver.wait_for(1)
    notified = bank.adapter.parse_payout_notify(received.headers, received.body)
    assert notified.notify_id and notified.status.state == "succeeded" and notified.status.out_payout_no == "PO-1"
    with pytest.raises(NotifyInvalid, match="payout notify"):
        bank.adapter.parse_notify(received.headers, received.body)
    payment = bank.paid_trade("T-PO-1")
    with pytest.raises(NotifyInvalid, match="payment notify"):
        bank.adapter.parse_payout_notify(bank.receiver.received[1].headers, bank.receiver.received[1].body)
    assert payment.kind == "payment"


def test_a_payout_to_an_account_ending_in_0000_fails_as_account_closed(bank: Bank) -> None:
    payout(bank, "PO-2", "6222020200110000")
    bank.sim.settle_payouts()

    failed: PayoutStatus = bank.adapter.query_payout("PO-2")

    assert failed.state == "failed"
    assert failed.failure_code == bank.profile.error_codes["account_closed"]
    assert bank.profile.error_name(failed.failure_code) == "account_closed"
    [received] = bank.receiver.wait_for(1)
    assert bank.adapter.parse_payout_notify(received.headers, received.body).status.state == "failed"


def test_the_same_out_payout_no_twice_pays_once_and_other_content_is_refused(bank: Bank) -> None:
    first = payout(bank, "PO-3", "6222020200114455")
    again = payout(bank, "PO-3", "6222020200114455")

    assert again.bank_payout_no == first.bank_payout_no
    assert bank.sim.settle_payouts() == 1
    assert payout(bank, "PO-3", "6222020200114455").state == "succeeded"
    with pytest.raises(ChannelRejected) as conflict:
        payout(bank, "PO-3", "6222020200114455", amount_minor=50_001)
    assert conflict.value.code == bank.profile.error_codes["out_payout_no_reused"]
    with pytest.raises(ChannelRejected) as unknown:
        bank.adapter.query_payout("PO-NOPE")
    assert unknown.value.code == bank.profile.error_codes["payout_not_found"]
