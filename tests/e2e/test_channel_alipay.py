"""The Alipay adapter against the local Alipay simulator, over real HTTP, with the unmodified SDK.

Each test serves its own simulator and a small merchant receiver (which records
notifies and browser returns, and acknowledges through the adapter) with
``serve_in_thread``; the payer's browser is an ``httpx`` client.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from alipay import AliPay
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from zhangfang.channels.alipay import AlipayAdapter
from zhangfang.channels.protocol import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    CreatePayment,
    Notify,
    NotifyInvalid,
    RefundRequest,
)
from zhangfang.sandbox.alipay import (
    BILL_DETAIL_COLUMNS,
    NOTIFY_RETRY_MINUTES,
    AlipaySimulator,
    SandboxMerchant,
    create_alipay_simulator,
    rsa_sign,
    signing_string,
)
from zhangfang.sandbox.server import RunningServer, serve_in_thread

SHANGHAI = ZoneInfo("Asia/Shanghai")
APP_ID = "2021000000000001"
PID = "2088000000000001"
OTHER_APP_ID = "2021000000000002"
OTHER_PID = "2088000000000002"
START = dt.datetime(2024, 3, 5, 10, 0, 0, tzinfo=SHANGHAI)
RETURN_FIELDS = {
    "charset",
    "out_trade_no",
    "method",
    "total_amount",
    "trade_no",
    "auth_app_id",
    "app_id",
    "seller_id",
    "timestamp",
    "version",
    "sign_type",
    "sign",
}


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    private_key: rsa.RSAPrivateKey


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
    return KeyPair(private_pem, public_pem, key)


@dataclass(frozen=True)
class Keys:
    alipay: KeyPair
    app: KeyPair
    other_app: KeyPair
    forger: KeyPair


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(alipay=_key_pair(), app=_key_pair(), other_app=_key_pair(), forger=_key_pair())


class Clock:
    """The simulator's clock: stands still unless a test moves it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@dataclass
class Receiver:
    """The merchant's side: records notifies and browser returns; acknowledges notifies through the adapter."""

    adapter: AlipayAdapter | None = None
    fail_first: int = 0
    bodies: list[bytes] = field(default_factory=list)
    notifies: list[Notify] = field(default_factory=list)
    returns: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            body = await request.body()
            self.bodies.append(body)
            if self.fail_first > 0:
                self.fail_first -= 1
                return PlainTextResponse("internal error", status_code=500)
            assert self.adapter is not None
            try:
                parsed = self.adapter.parse_notify(dict(request.headers), body)
            except NotifyInvalid:
                ack = self.adapter.ack_notify(False)
            else:
                self.notifies.append(parsed)
                ack = self.adapter.ack_notify(True)
            return Response(ack.body, status_code=ack.status_code, headers=dict(ack.headers))

        async def back(request: Request) -> Response:
            self.returns.append(dict(parse_qsl(request.url.query, keep_blank_values=True)))
            return PlainTextResponse("thanks")

        return Starlette(routes=[Route("/notify", notify, methods=["POST"]), Route("/return", back)])


@dataclass
class World:
    sim: AlipaySimulator
    adapter: AlipayAdapter
    receiver: Receiver
    clock: Clock
    keys: Keys
    receiver_url: str
    servers: list[RunningServer]

    @property
    def notify_url(self) -> str:
        return f"{self.receiver_url}/notify"

    @property
    def return_url(self) -> str:
        return f"{self.receiver_url}/return"

    def order(self, out_trade_no: str, amount_minor: int, method: str = "page", **kwargs: Any) -> CreatePayment:
        return CreatePayment(
            out_trade_no=out_trade_no,
            amount_minor=amount_minor,
            currency="CNY",
            subject="测试商品 test item",
            method=method,
            notify_url=self.notify_url,
            return_url=self.return_url,
            **kwargs,
        )

    def adapter_for(self, **overrides: Any) -> AlipayAdapter:
        settings: dict[str, Any] = {
            "app_id": APP_ID,
            "app_private_key_pem": self.keys.app.private_pem,
            "alipay_public_key_pem": self.keys.alipay.public_pem,
            "seller_id": PID,
            "gateway_url": self.sim.gateway_url,
            "timeout_seconds": 2.0,
        }
        settings.update(overrides)
        return AlipayAdapter(**settings)

    def pay_in_browser(self, order: CreatePayment) -> httpx.Response:
        """Opens the payment URL, looks at the cashier page, presses pay; follows redirects to the return URL."""
        action = self.adapter.create_payment(order)
        assert action.kind == "redirect" and action.url is not None
        with httpx.Client(follow_redirects=True, timeout=5) as browser:
            cashier = browser.get(action.url)
            assert cashier.status_code == 200 and "id='pay'" in cashier.text, cashier.text
            return browser.post(str(cashier.url))

    def open_cashier(self, order: CreatePayment, adapter: AlipayAdapter | None = None) -> str:
        """Opens the payment at the cashier without paying; returns the cashier URL."""
        action = (adapter or self.adapter).create_payment(order)
        url = action.url if action.kind == "redirect" else action.qr_code
        assert url is not None
        with httpx.Client(follow_redirects=True, timeout=5) as browser:
            page = browser.get(url)
        assert page.status_code == 200 and "id='pay'" in page.text, page.text
        return str(page.url)


def _start_world(keys: Keys, *, notify_delay_seconds: float = 0.01, fail_first: int = 0) -> World:
    clock = Clock(START)
    sim = create_alipay_simulator(
        alipay_private_key_pem=keys.alipay.private_pem,
        merchants=[
            SandboxMerchant(app_id=APP_ID, pid=PID, app_public_key_pem=keys.app.public_pem),
            SandboxMerchant(app_id=OTHER_APP_ID, pid=OTHER_PID, app_public_key_pem=keys.other_app.public_pem),
        ],
        clock=clock,
        notify_delay_seconds=notify_delay_seconds,
    )
    sim_server = serve_in_thread(sim.app)
    sim.base_url = sim_server.base_url
    receiver = Receiver(fail_first=fail_first)
    receiver_server = serve_in_thread(receiver.app())
    world = World(
        sim=sim,
        adapter=None,  # type: ignore[arg-type]  # set below, needs the simulator's URL
        receiver=receiver,
        clock=clock,
        keys=keys,
        receiver_url=receiver_server.base_url,
        servers=[sim_server, receiver_server],
    )
    world.adapter = world.adapter_for()
    receiver.adapter = world.adapter
    return world


@pytest.fixture
def world(keys: Keys) -> Iterator[World]:
    started = _start_world(keys)
    yield started
    _stop(started)


def _stop(world: World) -> None:
    for server in world.servers:
        server.server.should_exit = True  # both shut down at once, then wait for each
    world.sim.close()
    for server in world.servers:
        server.stop()


def _wait_for(predicate: Any, timeout_seconds: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _notify_body(params: dict[str, str]) -> bytes:
    return urlencode(params).encode("ascii")


def _read_bill(zip_bytes: bytes) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """Header lines, detail rows (tabs stripped from values), footer lines of the 业务明细 file."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        names = archive.namelist()
        detail_name = next(name for name in names if name.endswith("_业务明细.csv"))
        text = archive.read(detail_name).decode("gbk")
    lines = text.split("\r\n")
    head = lines[:4]
    end = next(index for index, line in enumerate(lines) if line.startswith("#") and "业务明细列表结束" in line)
    reader = csv.reader(io.StringIO("\r\n".join(lines[4:end])))
    header = next(reader)
    assert tuple(header) == BILL_DETAIL_COLUMNS
    rows = [{name: value.strip("\t") for name, value in zip(header, row, strict=True)} for row in reader]
    return head, rows, [line for line in lines[end:] if line]


# ---------------------------------------------------------------------- paying


def test_the_adapter_keeps_the_channel_adapter_protocol(world: World) -> None:
    assert isinstance(world.adapter, ChannelAdapter)
    assert (world.adapter.code, world.adapter.connection) == ("alipay", "indirect")
    assert world.adapter.methods == {"page", "wap", "qr"} and world.adapter.currencies == {"CNY"}


def test_a_payer_who_pays_at_the_cashier_produces_a_verified_notify_with_the_order_amount(world: World) -> None:
    landed = world.pay_in_browser(world.order("o-paid", 12345))

    assert landed.status_code == 200 and landed.text == "thanks"
    _wait_for(lambda: len(world.receiver.notifies) == 1)
    notify = world.receiver.notifies[0]
    assert (notify.kind, notify.state, notify.out_trade_no) == ("payment", "succeeded", "o-paid")
    assert (notify.amount_minor, notify.currency) == (12345, "CNY")
    assert notify.raw["total_amount"] == "123.45" and notify.raw["trade_status"] == "TRADE_SUCCESS"
    assert notify.occurred_at == START.astimezone(dt.UTC)
    delivery = world.sim.wait_for_notifies(1)[0]
    assert delivery.acknowledged and delivery.response_text == "success"
    assert delivery.notify_id == notify.notify_id
    assert notify.channel_trade_no == world.adapter.query_payment("o-paid").channel_trade_no


def test_the_return_url_carries_only_the_order_reference_and_no_result(world: World) -> None:
    world.pay_in_browser(world.order("o-return", 500))

    (returned,) = world.receiver.returns
    assert set(returned) == RETURN_FIELDS
    assert "trade_status" not in returned and returned["method"] == "alipay.trade.page.pay.return"
    assert world.adapter.parse_return(returned) == "o-return"
    tampered = {**returned, "out_trade_no": "o-other"}
    with pytest.raises(NotifyInvalid):
        world.adapter.parse_return(tampered)


def test_a_wap_payment_goes_through_the_same_cashier_and_returns_as_wap(world: World) -> None:
    world.pay_in_browser(world.order("o-wap", 100, method="wap"))

    assert world.receiver.returns[0]["method"] == "alipay.trade.wap.pay.return"
    assert world.adapter.query_payment("o-wap").state == "succeeded"


def test_a_qr_payment_shows_a_code_that_opens_the_cashier(world: World) -> None:
    action = world.adapter.create_payment(world.order("o-qr", 990, method="qr"))

    assert action.kind == "qr_code" and action.qr_code is not None
    with httpx.Client(follow_redirects=True, timeout=5) as phone:
        cashier = phone.get(action.qr_code)
        assert "9.90" in cashier.text
        phone.post(str(cashier.url))
    _wait_for(lambda: len(world.receiver.notifies) == 1)
    assert world.receiver.notifies[0].amount_minor == 990
    assert world.receiver.returns == []  # precreate has no return_url


def test_a_failed_attempt_at_the_cashier_leaves_the_trade_payable_and_sends_nothing(world: World) -> None:
    cashier_url = world.open_cashier(world.order("o-declined", 700))
    with httpx.Client(timeout=5) as browser:
        declined = browser.post(cashier_url, params={"outcome": "fail"})

    assert "failed" in declined.text
    assert world.adapter.query_payment("o-declined").state == "pending"
    world.sim.wait_until_idle()
    assert world.sim.notifies_sent() == [] and world.receiver.returns == []


# ---------------------------------------------------------------------- query and close


def test_query_says_unknown_before_the_cashier_is_opened_pending_after_and_succeeded_once_paid(world: World) -> None:
    order = world.order("o-query", 2000)
    world.adapter.create_payment(order)
    with pytest.raises(ChannelRejected) as unknown:
        world.adapter.query_payment("o-query")
    assert unknown.value.code == "ACQ.TRADE_NOT_EXIST"

    world.open_cashier(order)
    pending = world.adapter.query_payment("o-query")
    assert (pending.state, pending.amount_minor, pending.paid_at) == ("pending", 2000, None)

    world.sim.pay("o-query", app_id=APP_ID)
    paid = world.adapter.query_payment("o-query")
    assert (paid.state, paid.amount_minor, paid.currency) == ("succeeded", 2000, "CNY")
    assert paid.paid_at == START.astimezone(dt.UTC) and paid.raw["trade_status"] == "TRADE_SUCCESS"


def test_closing_an_opened_unpaid_trade_closes_it_for_good(world: World) -> None:
    order = world.order("o-close", 300)
    cashier_url = world.open_cashier(order)

    world.adapter.close_payment("o-close")

    assert world.adapter.query_payment("o-close").state == "closed"
    with httpx.Client(timeout=5) as browser:
        assert "ACQ.TRADE_HAS_CLOSE" in browser.post(cashier_url).text
    with pytest.raises(ChannelRejected) as again:
        world.adapter.close_payment("o-close")
    assert again.value.code == "ACQ.TRADE_STATUS_ERROR"
    world.sim.wait_until_idle()
    assert world.sim.notifies_sent() == []  # page pay notifies TRADE_SUCCESS only


def test_closing_a_wap_trade_sends_a_closed_notify(world: World) -> None:
    world.open_cashier(world.order("o-wap-close", 300, method="wap"))

    world.adapter.close_payment("o-wap-close")

    _wait_for(lambda: len(world.receiver.notifies) == 1)
    notify = world.receiver.notifies[0]
    assert (notify.kind, notify.state, notify.amount_minor) == ("payment", "closed", 300)


def test_a_trade_past_its_expiry_is_closed(world: World) -> None:
    order = world.order("o-expire", 300, expires_at=START + dt.timedelta(minutes=15))
    world.open_cashier(order)

    world.clock.advance(dt.timedelta(minutes=16))

    assert world.adapter.query_payment("o-expire").state == "closed"


# ---------------------------------------------------------------------- refunds


def _paid(world: World, out_trade_no: str, amount_minor: int) -> None:
    world.open_cashier(world.order(out_trade_no, amount_minor))
    world.sim.pay(out_trade_no, app_id=APP_ID)


def _refund(out_trade_no: str, out_refund_no: str, refund_minor: int, total_minor: int) -> RefundRequest:
    return RefundRequest(
        out_trade_no=out_trade_no,
        out_refund_no=out_refund_no,
        refund_minor=refund_minor,
        total_minor=total_minor,
        currency="CNY",
        reason="客户退货",
    )


def test_a_partial_then_a_full_refund_leave_the_payment_succeeded_and_are_notified(world: World) -> None:
    _paid(world, "o-refund", 10000)

    first = world.adapter.refund(_refund("o-refund", "r-1", 3001, 10000))
    assert (first.state, first.refund_minor) == ("succeeded", 3001)
    assert first.raw["fund_change"] == "Y" and first.raw["refund_fee"] == "30.01"
    assert world.sim.trade_status("o-refund", app_id=APP_ID) == "TRADE_SUCCESS"

    second = world.adapter.refund(_refund("o-refund", "r-2", 6999, 10000))
    assert second.raw["refund_fee"] == "100.00"
    assert world.sim.trade_status("o-refund", app_id=APP_ID) == "TRADE_CLOSED"
    assert world.adapter.query_payment("o-refund").state == "succeeded"  # paid, then refunded in full

    queried = world.adapter.query_refund("o-refund", "r-1")
    assert (queried.state, queried.refund_minor) == ("succeeded", 3001)
    _wait_for(lambda: len(world.receiver.notifies) == 2)  # payment, partial refund (page pay: no CLOSED notify)
    refund_notify = world.receiver.notifies[1]
    assert (refund_notify.kind, refund_notify.out_refund_no, refund_notify.amount_minor) == ("refund", "r-1", 3001)


def test_a_refund_above_what_was_paid_is_refused_with_alipays_code(world: World) -> None:
    _paid(world, "o-over", 1000)
    world.adapter.refund(_refund("o-over", "r-1", 600, 1000))

    with pytest.raises(ChannelRejected) as refused:
        world.adapter.refund(_refund("o-over", "r-2", 401, 1000))

    assert refused.value.code == "ACQ.REASON_TRADE_REFUND_FEE_ERR"
    assert world.adapter.query_refund("o-over", "r-2").state == "failed"  # Alipay has no such refund


def test_the_same_refund_number_twice_refunds_once(world: World) -> None:
    _paid(world, "o-twice", 1000)

    first = world.adapter.refund(_refund("o-twice", "r-1", 250, 1000))
    again = world.adapter.refund(_refund("o-twice", "r-1", 250, 1000))

    assert (first.raw["fund_change"], again.raw["fund_change"]) == ("Y", "N")
    assert first.raw["refund_fee"] == again.raw["refund_fee"] == "2.50"
    assert first.raw["gmt_refund_pay"] == again.raw["gmt_refund_pay"]
    with pytest.raises(ChannelRejected) as different:
        world.adapter.refund(_refund("o-twice", "r-1", 300, 1000))
    assert different.value.code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    world.clock.advance(dt.timedelta(days=1))
    rows = _read_bill(world.adapter.download_bill(START.date()))[1]
    assert [row["业务类型"] for row in rows] == ["交易", "退款"]


def test_an_unpaid_trade_cannot_be_refunded(world: World) -> None:
    world.open_cashier(world.order("o-unpaid", 1000))

    with pytest.raises(ChannelRejected) as refused:
        world.adapter.refund(_refund("o-unpaid", "r-1", 100, 1000))

    assert refused.value.code == "ACQ.TRADE_STATUS_ERROR"


# ---------------------------------------------------------------------- notify verification


def _delivered_params(world: World, out_trade_no: str) -> dict[str, str]:
    _wait_for(lambda: any(d.out_trade_no == out_trade_no for d in world.sim.notifies_sent()))
    delivery = next(d for d in world.sim.notifies_sent() if d.out_trade_no == out_trade_no)
    return dict(delivery.params)


def test_a_genuine_notify_parses_and_a_forged_one_signed_with_another_key_does_not(world: World) -> None:
    _paid(world, "o-forge", 800)
    genuine = _delivered_params(world, "o-forge")
    assert world.adapter.parse_notify({}, _notify_body(genuine)).amount_minor == 800

    forged = {key: value for key, value in genuine.items() if key != "sign"}
    forged["notify_id"] = "forged-1"
    forged["sign"] = rsa_sign(world.keys.forger.private_key, signing_string(forged, exclude=("sign", "sign_type")))

    with pytest.raises(NotifyInvalid) as invalid:
        world.adapter.parse_notify({}, _notify_body(forged))
    assert invalid.value.code == "signature_invalid"


def test_a_notify_with_a_tampered_amount_does_not_verify(world: World) -> None:
    _paid(world, "o-tamper", 800)
    tampered = {**_delivered_params(world, "o-tamper"), "total_amount": "0.01"}

    with pytest.raises(NotifyInvalid) as invalid:
        world.adapter.parse_notify({}, _notify_body(tampered))

    assert invalid.value.code == "signature_invalid"


def test_a_notify_for_another_merchant_is_invalid_though_alipay_signed_it(world: World) -> None:
    other = world.adapter_for(app_id=OTHER_APP_ID, app_private_key_pem=world.keys.other_app.private_pem, seller_id=None)
    world.open_cashier(world.order("o-theirs", 800), other)
    world.sim.pay("o-theirs", app_id=OTHER_APP_ID)
    theirs = _delivered_params(world, "o-theirs")
    assert other.parse_notify({}, _notify_body(theirs)).out_trade_no == "o-theirs"

    with pytest.raises(NotifyInvalid) as invalid:
        world.adapter.parse_notify({}, _notify_body(theirs))
    assert invalid.value.code == "app_id_mismatch"

    _paid(world, "o-ours", 800)
    ours = _delivered_params(world, "o-ours")
    with pytest.raises(NotifyInvalid) as wrong_seller:
        world.adapter_for(seller_id="2088999999999999").parse_notify({}, _notify_body(ours))
    assert wrong_seller.value.code == "seller_id_mismatch"


def test_a_notify_that_is_not_a_form_or_unsigned_is_invalid(world: World) -> None:
    with pytest.raises(NotifyInvalid):
        world.adapter.parse_notify({}, b"\xff\xfe")
    with pytest.raises(NotifyInvalid) as unsigned:
        world.adapter.parse_notify({}, b"notify_type=trade_status_sync&app_id=" + APP_ID.encode())
    assert unsigned.value.code == "signature_missing"


def test_ack_is_the_text_success_and_anything_else_keeps_alipay_retrying(world: World) -> None:
    assert world.adapter.ack_notify(True).body == b"success"
    assert world.adapter.ack_notify(False).body != b"success"


# ---------------------------------------------------------------------- notify delivery


def test_a_receiver_that_fails_twice_gets_retries_on_schedule_and_none_after_its_ack(keys: Keys) -> None:
    world = _start_world(keys, notify_delay_seconds=0.02, fail_first=2)
    try:
        _paid(world, "o-retry", 100)
        deliveries = world.sim.wait_for_notifies(3)
        time.sleep(NOTIFY_RETRY_MINUTES[2] * 0.02 * 2)  # past when a fourth delivery would be due
        deliveries = world.sim.notifies_sent()
    finally:
        _stop(world)

    assert [d.attempt for d in deliveries] == [1, 2, 3]
    assert [d.acknowledged for d in deliveries] == [False, False, True]
    assert len({d.notify_id for d in deliveries}) == 1
    gaps = [later.sent_at_monotonic - earlier.sent_at_monotonic for earlier, later in itertools.pairwise(deliveries)]
    for gap, minutes in zip(gaps, NOTIFY_RETRY_MINUTES, strict=False):
        assert minutes * 0.02 <= gap < minutes * 0.02 + 0.5
    assert len(world.receiver.notifies) == 1


def test_a_receiver_that_never_acknowledges_gets_eight_deliveries_in_all(keys: Keys) -> None:
    world = _start_world(keys, notify_delay_seconds=0.0005, fail_first=100)
    try:
        _paid(world, "o-never", 100)
        world.sim.wait_for_notifies(8)
        world.sim.wait_until_idle()
        deliveries = world.sim.notifies_sent()
    finally:
        _stop(world)

    assert [d.attempt for d in deliveries] == list(range(1, 9))
    assert not any(d.acknowledged for d in deliveries)


def test_a_duplicated_notify_arrives_twice_with_the_same_notify_id(world: World) -> None:
    world.sim.duplicate_notify(2)

    _paid(world, "o-dup", 100)

    _wait_for(lambda: len(world.receiver.notifies) == 2)
    first, second = world.receiver.notifies
    assert first.notify_id == second.notify_id and first.out_trade_no == second.out_trade_no == "o-dup"
    world.sim.wait_until_idle()
    assert len(world.sim.notifies_sent()) == 2


def test_a_delayed_notify_arrives_only_after_the_delay(world: World) -> None:
    world.sim.delay_notify(0.3)
    started = time.monotonic()

    _paid(world, "o-late", 100)

    delivery = world.sim.wait_for_notifies(1)[0]
    assert delivery.sent_at_monotonic - started >= 0.3


# ---------------------------------------------------------------------- failures


def test_a_5xx_from_the_gateway_is_channel_unavailable_and_the_next_call_works(world: World) -> None:
    world.sim.fail_next(1, status=502)

    with pytest.raises(ChannelUnavailable):
        world.adapter.create_payment(world.order("o-5xx", 100, method="qr"))

    assert world.adapter.create_payment(world.order("o-5xx", 100, method="qr")).kind == "qr_code"


def test_a_gateway_that_does_not_answer_in_time_is_channel_unavailable_within_the_timeout(world: World) -> None:
    adapter = world.adapter_for(timeout_seconds=0.3)
    world.sim.timeout_next(1, 1.0)
    started = time.monotonic()

    with pytest.raises(ChannelUnavailable):
        adapter.query_payment("o-slow")

    assert time.monotonic() - started < 0.8


def test_a_response_that_does_not_verify_with_alipays_key_is_channel_unavailable(world: World) -> None:
    _paid(world, "o-badsig", 100)
    adapter = world.adapter_for(alipay_public_key_pem=world.keys.forger.public_pem)

    with pytest.raises(ChannelUnavailable):
        adapter.query_payment("o-badsig")


def test_a_refused_connection_is_channel_unavailable(world: World) -> None:
    adapter = world.adapter_for(gateway_url="http://127.0.0.1:9/gateway.do")

    with pytest.raises(ChannelUnavailable):
        adapter.query_payment("o-nowhere")


# ---------------------------------------------------------------------- disagreement and bill


def test_a_disagreeing_amount_shows_in_the_notify_the_query_and_the_bill(world: World) -> None:
    world.open_cashier(world.order("o-disagree", 5000))
    world.sim.disagree_amount("o-disagree", 4999, app_id=APP_ID)

    world.sim.pay("o-disagree", app_id=APP_ID)

    _wait_for(lambda: len(world.receiver.notifies) == 1)
    assert world.receiver.notifies[0].amount_minor == 4999
    assert world.adapter.query_payment("o-disagree").amount_minor == 4999
    world.clock.advance(dt.timedelta(days=1))
    (row,) = _read_bill(world.adapter.download_bill(START.date()))[1]
    assert (row["订单金额（元）"], row["商家实收（元）"]) == ("49.99", "49.99")


def test_the_days_bill_parses_back_to_the_payments_and_refunds_made(world: World) -> None:
    _paid(world, "o-bill-1", 12345)
    _paid(world, "o-bill-2", 1)
    world.adapter.refund(_refund("o-bill-1", "r-bill-1", 2345, 12345))
    world.clock.advance(dt.timedelta(days=1))
    _paid(world, "o-next-day", 700)  # on the next day's bill
    world.clock.advance(dt.timedelta(days=1))

    head, rows, foot = _read_bill(world.adapter.download_bill(START.date()))

    assert head[0] == "#支付宝业务明细查询" and head[1] == f"#账号：[{PID}0156]"
    assert "2024年03月05日 00:00:00" in head[2] and "业务明细列表" in head[3]
    got = [
        (r["商户订单号"], r["业务类型"], r["订单金额（元）"], r["商家实收（元）"], r["退款批次号/请求号"]) for r in rows
    ]
    assert got == [
        ("o-bill-1", "交易", "123.45", "123.45", ""),
        ("o-bill-2", "交易", "0.01", "0.01", ""),
        ("o-bill-1", "退款", "123.45", "-23.45", "r-bill-1"),
    ]
    assert rows[0]["支付宝交易号"] == world.adapter.query_payment("o-bill-1").channel_trade_no
    assert all(row["完成时间"].startswith("2024-03-05 ") for row in rows)
    assert foot[1].startswith("#交易合计：2笔，商家实收共123.46元")
    assert foot[2].startswith("#退款合计：1笔，商家实收退款共-23.45元")
    assert foot[-1].startswith("#导出时间：")
    assert [r["商户订单号"] for r in world.sim.bill_rows(START.date() + dt.timedelta(days=1), app_id=APP_ID)] == [
        "o-next-day\t"
    ]


def test_the_bill_file_names_and_raw_id_fields_follow_alipays_layout(world: World) -> None:
    _paid(world, "o-raw", 100)
    world.clock.advance(dt.timedelta(days=1))

    archive = zipfile.ZipFile(io.BytesIO(world.adapter.download_bill(START.date())))

    assert sorted(archive.namelist()) == [f"{PID}_20240305_业务明细(汇总).csv", f"{PID}_20240305_业务明细.csv"]
    raw_row = archive.read(f"{PID}_20240305_业务明细.csv").decode("gbk").split("\r\n")[5]
    assert raw_row.split(",")[1] == "o-raw\t" and len(next(csv.reader([raw_row]))) == 25


def test_a_bill_for_today_does_not_exist_yet(world: World) -> None:
    with pytest.raises(ChannelRejected) as missing:
        world.adapter.download_bill(START.date())

    assert missing.value.code == "isp.bill_not_exist"


def test_the_bill_download_url_expires_after_30_seconds(world: World) -> None:
    world.clock.advance(dt.timedelta(days=1))
    client = AliPay(
        appid=APP_ID,
        app_private_key_string=world.keys.app.private_pem,
        alipay_public_key_string=world.keys.alipay.public_pem,
    )
    client._gateway = world.sim.gateway_url
    answer = client.server_api(
        "alipay.data.dataservice.bill.downloadurl.query",
        biz_content={"bill_type": "trade", "bill_date": START.date().isoformat()},
    )
    url = answer["bill_download_url"]
    assert urlsplit(url).path == "/downloadBillFile.resource"

    world.clock.advance(dt.timedelta(seconds=29))
    assert httpx.get(url).status_code == 200
    world.clock.advance(dt.timedelta(seconds=1))
    assert httpx.get(url).status_code == 403
