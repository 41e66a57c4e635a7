"""The wechatpay adapter, through the real wechatpayv3 SDK, against the WeChat Pay v3 simulator over HTTP.

Each test serves its own simulator and its own notify receiver (which answers with the
adapter's ``parse_notify``/``ack_notify``, like a merchant server would) on loopback ports.
One channel second lasts ``SCALE`` wall seconds, so the notify retry schedule runs in ms.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zhangfang.channels.protocol import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    CreatePayment,
    Notify,
    NotifyInvalid,
    RefundRequest,
)
from zhangfang.channels.wechatpay import WechatPayAdapter
from zhangfang.money import parse_amount
from zhangfang.sandbox.server import RunningServer, serve_in_thread
from zhangfang.sandbox.wechatpay import (
    BILL_ALL_HEADER,
    BILL_SUMMARY_HEADER,
    NOTIFY_RETRY_SCHEDULE_SECONDS,
    SimulatedMerchant,
    WechatPaySimulator,
    create_simulator,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
CERT_SERIAL_NO = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3_KEY = "a12d3924fd499edac8a5efc6f0e4c2b1"
PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092024060100000000000001"
SCALE = 0.001  # wall seconds per channel second
RETURN_URL = "https://shop.example/pay/return?ref=pay_01J0000000000000000000001"


@dataclass(frozen=True)
class Keys:
    merchant_private: str
    merchant_public: str
    platform_private: str
    platform_public: str
    stranger_private: str


def _key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> Keys:
    merchant_private, merchant_public = _key_pair()
    platform_private, platform_public = _key_pair()
    stranger_private, _ = _key_pair()
    return Keys(merchant_private, merchant_public, platform_private, platform_public, stranger_private)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status_code: int
    notify: Notify | None


@dataclass
class Receiver:
    """The merchant's notify endpoint: answers 500 ``fail_first`` times, then verifies and acknowledges."""

    adapter: WechatPayAdapter | None = None
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            with self.lock:
                failing = self.fail_first > 0
                self.fail_first -= failing
            parsed: Notify | None = None
            if failing:
                status, content = 500, b"busy"
            else:
                assert self.adapter is not None
                try:
                    parsed = self.adapter.parse_notify(headers, body)
                    ack = self.adapter.ack_notify(True)
                except NotifyInvalid:
                    ack = self.adapter.ack_notify(False)
                status, content = ack.status_code, ack.body
            with self.lock:
                self.received.append(Received(headers, body, status, parsed))
            return Response(content, status_code=status, media_type="application/json")

        return Starlette(routes=[Route("/notify", notify, methods=["POST"])])

    def notifies(self) -> list[Notify]:
        with self.lock:
            return [item.notify for item in self.received if item.notify is not None]


@dataclass
class Env:
    sim: WechatPaySimulator
    server: RunningServer
    adapter: WechatPayAdapter
    receiver: Receiver
    notify_url: str
    keys: Keys

    def adapter_with(self, **overrides: Any) -> WechatPayAdapter:
        options: dict[str, Any] = {
            "mchid": MCHID,
            "appid": APPID,
            "private_key_pem": self.keys.merchant_private,
            "cert_serial_no": CERT_SERIAL_NO,
            "apiv3_key": APIV3_KEY,
            "platform_public_key_pem": self.keys.platform_public,
            "platform_public_key_id": PUBLIC_KEY_ID,
            "gateway": self.server.base_url,
            "timeout_seconds": 2.0,
        }
        options.update(overrides)
        return WechatPayAdapter(**options)

    def create(self, out_trade_no: str, amount_minor: int = 1000, method: str = "native", **extra: Any) -> Any:
        return self.adapter.create_payment(
            CreatePayment(
                out_trade_no=out_trade_no,
                amount_minor=amount_minor,
                currency="CNY",
                subject="账房测试商品",
                method=method,
                notify_url=self.notify_url,
                return_url=RETURN_URL,
            ),
            **extra,
        )

    def refund(self, out_trade_no: str, out_refund_no: str, refund_minor: int, total_minor: int = 1000) -> Any:
        return self.adapter.refund(
            RefundRequest(
                out_trade_no=out_trade_no,
                out_refund_no=out_refund_no,
                refund_minor=refund_minor,
                total_minor=total_minor,
                currency="CNY",
                reason="测试退款",
                notify_url=self.notify_url,
            )
        )


@pytest.fixture
def start(keys: Keys) -> Iterator[Callable[..., Env]]:
    simulators: list[WechatPaySimulator] = []
    servers: list[RunningServer] = []

    def _start(**simulator_options: Any) -> Env:
        receiver = Receiver()
        receiver_server = serve_in_thread(receiver.app())
        servers.append(receiver_server)
        options: dict[str, Any] = {"notify_delay_seconds": SCALE}
        options.update(simulator_options)
        sim = create_simulator(
            merchants=[
                SimulatedMerchant(
                    mchid=MCHID,
                    appid=APPID,
                    apiv3_key=APIV3_KEY,
                    cert_serial_no=CERT_SERIAL_NO,
                    public_key_pem=keys.merchant_public,
                )
            ],
            platform_private_key_pem=keys.platform_private,
            platform_public_key_id=PUBLIC_KEY_ID,
            **options,
        )
        simulators.append(sim)
        server = serve_in_thread(sim.app)
        servers.append(server)
        env = Env(sim, server, None, receiver, f"{receiver_server.base_url}/notify", keys)  # type: ignore[arg-type]
        env.adapter = env.adapter_with()
        receiver.adapter = env.adapter
        return env

    yield _start
    for sim in simulators:
        sim.close()  # first: stops notifies and wakes requests held by timeout_next, so the servers can stop
    for running in servers:
        running.server.should_exit = True  # ask all at once; each takes a tick of its loop to notice
    for running in servers:
        running.stop()


def wait_until(predicate: Callable[[], Any], timeout_seconds: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not met in time")


def pay_in_browser(env: Env, payment_code: str, **params: str) -> httpx.Response:
    url = env.sim.cashier_url(payment_code)
    page = httpx.get(url)
    assert page.status_code == 200 and "支付" in page.text
    if params:  # httpx replaces the URL's own query with ``params``, so only pass it when there is one
        return httpx.post(httpx.URL(url).copy_merge_params(params), follow_redirects=False)
    return httpx.post(url, follow_redirects=False)


def decrypt_resource(body: bytes) -> dict[str, Any]:
    resource = json.loads(body)["resource"]
    plain = AESGCM(APIV3_KEY.encode()).decrypt(
        resource["nonce"].encode(), base64.b64decode(resource["ciphertext"]), resource["associated_data"].encode()
    )
    return json.loads(plain)


def read_bill(data: bytes) -> tuple[list[dict[str, str]], dict[str, str]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert tuple(rows[0]) == BILL_ALL_HEADER and len(rows[0]) == 27
    summary_at = next(index for index, row in enumerate(rows) if row and row[0] == "总交易单数")
    assert tuple(rows[summary_at]) == BILL_SUMMARY_HEADER
    for row in [*rows[1:summary_at], rows[summary_at + 1]]:
        assert all(value.startswith("`") for value in row), row
    details = [dict(zip(rows[0], [value[1:] for value in row], strict=True)) for row in rows[1:summary_at]]
    summary = dict(zip(rows[summary_at], [value[1:] for value in rows[summary_at + 1]], strict=True))
    assert len(rows) == summary_at + 2
    return details, summary


# ----------------------------------------------------------------------------- payments


def test_the_adapter_keeps_the_channel_adapter_protocol(start: Callable[..., Env]) -> None:
    env = start()
    assert isinstance(env.adapter, ChannelAdapter)
    assert (env.adapter.code, env.adapter.connection) == ("wechatpay", "indirect")
    assert env.adapter.methods == {"native", "h5", "jsapi"} and env.adapter.currencies == {"CNY"}


def test_a_native_payment_paid_on_the_cashier_page_notifies_the_receiver_with_a_verified_notify(
    start: Callable[..., Env],
) -> None:
    env = start()
    action = env.create("pay_native_0001", 1234)
    assert action.kind == "qr_code" and action.qr_code.startswith("weixin://wxpay/bizpayurl?pr=")

    paid = pay_in_browser(env, action.qr_code)

    assert paid.status_code == 200 and "支付成功" in paid.text
    (notify,) = wait_until(env.receiver.notifies)
    status = env.adapter.query_payment("pay_native_0001")
    assert notify.kind == "payment" and notify.state == "succeeded"
    assert (notify.out_trade_no, notify.amount_minor, notify.currency) == ("pay_native_0001", 1234, "CNY")
    assert notify.channel_trade_no == status.channel_trade_no and notify.channel_trade_no
    assert notify.occurred_at == status.paid_at and notify.occurred_at.tzinfo is not None
    assert notify.raw["event_type"] == "TRANSACTION.SUCCESS"
    (attempt,) = wait_until(env.sim.notifies_sent)
    assert attempt.acknowledged and attempt.status_code == 200 and attempt.notify_id == notify.notify_id
    assert {"wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial"} <= set(
        env.receiver.received[0].headers
    )


def test_h5_payment_returns_the_browser_to_return_url_with_no_result_in_it(start: Callable[..., Env]) -> None:
    env = start()
    action = env.create("pay_h5_000001", 500, method="h5", payer_client_ip="203.0.113.7")
    assert action.kind == "redirect" and "redirect_url=" in action.url

    back = pay_in_browser(env, action.url)

    assert back.status_code == 303
    assert back.headers["location"] == RETURN_URL  # only the reference we put there ourselves
    (notify,) = wait_until(env.receiver.notifies)
    assert (notify.out_trade_no, notify.amount_minor) == ("pay_h5_000001", 500)
    assert env.adapter.query_payment("pay_h5_000001").raw["trade_type"] == "MWEB"


def test_jsapi_payment_gives_bridge_parameters_signed_with_the_merchant_key(start: Callable[..., Env]) -> None:
    env = start()
    with pytest.raises(ValueError, match="openid"):
        env.create("pay_jsapi_0001", 800, method="jsapi")
    action = env.create("pay_jsapi_0001", 800, method="jsapi", payer_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")

    assert action.kind == "form" and action.form["package"].startswith("prepay_id=wx")
    assert env.sim.verify_jsapi_params(action.form)
    assert not env.sim.verify_jsapi_params({**action.form, "nonceStr": "tampered"})
    pay_in_browser(env, action.form["package"])
    (notify,) = wait_until(env.receiver.notifies)
    assert notify.raw["resource"]["payer"]["openid"] == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def test_creating_the_same_out_trade_no_twice_returns_the_same_code_and_different_content_is_refused(
    start: Callable[..., Env],
) -> None:
    env = start()
    first = env.create("pay_twice_0001", 1000)
    assert env.create("pay_twice_0001", 1000).qr_code == first.qr_code
    with pytest.raises(ChannelRejected) as refused:
        env.create("pay_twice_0001", 999)
    assert refused.value.code == "OUT_TRADE_NO_USED"


def test_query_says_pending_before_paying_failed_after_a_failed_attempt_and_succeeded_after_paying(
    start: Callable[..., Env],
) -> None:
    env = start()
    action = env.create("pay_query_0001", 2500)

    before = env.adapter.query_payment("pay_query_0001")
    assert (before.state, before.amount_minor, before.currency, before.channel_trade_no) == (
        "pending",
        2500,
        "CNY",
        None,
    )
    pay_in_browser(env, action.qr_code, outcome="fail")
    assert env.adapter.query_payment("pay_query_0001").state == "failed"
    time.sleep(0.05)
    assert env.sim.notifies_sent() == []  # only successful payments notify
    pay_in_browser(env, action.qr_code)
    after = env.adapter.query_payment("pay_query_0001")
    assert after.state == "succeeded" and after.amount_minor == 2500 and after.paid_at is not None
    assert after.channel_trade_no and after.channel_trade_no.startswith("42000")


def test_querying_an_unknown_trade_is_refused_with_order_not_exist(start: Callable[..., Env]) -> None:
    env = start()
    with pytest.raises(ChannelRejected) as refused:
        env.adapter.query_payment("pay_nobody_0001")
    assert refused.value.code == "ORDER_NOT_EXIST"


def test_closing_an_unpaid_trade_closes_it_and_it_can_no_longer_be_paid(start: Callable[..., Env]) -> None:
    env = start()
    action = env.create("pay_close_0001", 300)

    env.adapter.close_payment("pay_close_0001")

    assert env.adapter.query_payment("pay_close_0001").state == "closed"
    assert httpx.post(env.sim.cashier_url(action.qr_code)).status_code == 400
    with pytest.raises(ValueError, match="cannot be paid"):
        env.sim.pay("pay_close_0001")
    env.create("pay_close_0002", 300)
    env.sim.pay("pay_close_0002")
    with pytest.raises(ChannelRejected) as refused:
        env.adapter.close_payment("pay_close_0002")
    assert refused.value.code == "ORDERPAID"


# ----------------------------------------------------------------------------- refunds


def test_partial_then_full_refunds_succeed_and_a_refund_above_what_is_left_is_refused(
    start: Callable[..., Env],
) -> None:
    env = start(refund_settle_seconds=None)
    env.create("pay_refund_0001", 1000)
    env.sim.pay("pay_refund_0001")

    first = env.refund("pay_refund_0001", "ref_0001_a", 300)
    assert (first.state, first.refund_minor) == ("processing", 300) and first.channel_refund_no
    with pytest.raises(ChannelRejected) as refused:
        env.refund("pay_refund_0001", "ref_0001_b", 701)
    assert refused.value.code == "INVALID_REQUEST"
    rest = env.refund("pay_refund_0001", "ref_0001_c", 700)
    assert rest.state == "processing"
    with pytest.raises(ChannelRejected) as refused:
        env.refund("pay_refund_0001", "ref_0001_d", 1)
    assert refused.value.code == "INVALID_REQUEST"

    env.sim.settle_refund("ref_0001_a")
    env.sim.settle_refund("ref_0001_c", "ABNORMAL")
    assert env.adapter.query_refund("pay_refund_0001", "ref_0001_a").state == "succeeded"
    assert env.adapter.query_refund("pay_refund_0001", "ref_0001_c").state == "failed"
    assert env.adapter.query_payment("pay_refund_0001").state == "succeeded"  # trade_state REFUND: it was paid
    with pytest.raises(ChannelRejected) as refused:
        env.adapter.query_refund("pay_refund_0001", "ref_unknown")
    assert refused.value.code == "RESOURCE_NOT_EXISTS"


def test_the_same_out_refund_no_twice_refunds_once(start: Callable[..., Env]) -> None:
    env = start(refund_settle_seconds=None)
    env.create("pay_refund_0002", 1000)
    env.sim.pay("pay_refund_0002")

    first = env.refund("pay_refund_0002", "ref_0002_a", 600)
    again = env.refund("pay_refund_0002", "ref_0002_a", 600)

    assert again.channel_refund_no == first.channel_refund_no and again.refund_minor == 600
    assert env.refund("pay_refund_0002", "ref_0002_b", 400).state == "processing"  # 600 + 400, not 1200
    with pytest.raises(ChannelRejected) as refused:
        env.refund("pay_refund_0002", "ref_0002_a", 500)
    assert refused.value.code == "INVALID_REQUEST"


def test_a_refund_goes_from_processing_to_succeeded_and_notifies_the_receiver(start: Callable[..., Env]) -> None:
    env = start(refund_settle_seconds=50)
    env.create("pay_refund_0003", 1000)
    env.sim.pay("pay_refund_0003")

    assert env.refund("pay_refund_0003", "ref_0003_a", 250).state == "processing"

    notify = wait_until(lambda: [n for n in env.receiver.notifies() if n.kind == "refund"])[0]
    assert (notify.state, notify.out_trade_no, notify.out_refund_no, notify.amount_minor, notify.currency) == (
        "succeeded",
        "pay_refund_0003",
        "ref_0003_a",
        250,
        "CNY",
    )
    done = env.adapter.query_refund("pay_refund_0003", "ref_0003_a")
    assert done.state == "succeeded" and done.refunded_at == notify.occurred_at is not None


# ----------------------------------------------------------------------------- notifies


def _payment_resource(out_trade_no: str, mchid: str = MCHID, total: int = 1000) -> dict[str, Any]:
    return {
        "appid": APPID,
        "mchid": mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000000202406010000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": "2024-06-01T10:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    }


def _build(env: Env, resource: dict[str, Any]) -> bytes:
    return env.sim.notify_body(
        event_type="TRANSACTION.SUCCESS",
        summary="支付成功",
        original_type="transaction",
        resource=resource,
        apiv3_key=APIV3_KEY,
    )


def test_a_notify_signed_with_another_key_is_invalid(start: Callable[..., Env]) -> None:
    env = start()
    body = _build(env, _payment_resource("pay_forged_0001"))
    assert env.adapter.parse_notify(env.sim.notify_headers(body), body).amount_minor == 1000  # the genuine one

    forged_headers = env.sim.notify_headers(body, private_key_pem=env.keys.stranger_private)

    with pytest.raises(NotifyInvalid) as invalid:
        env.adapter.parse_notify(forged_headers, body)
    assert invalid.value.code == "notify_signature_invalid"
    with pytest.raises(NotifyInvalid):
        env.adapter.parse_notify({**env.sim.notify_headers(body), "Wechatpay-Serial": "PUB_KEY_ID_OTHER"}, body)
    with pytest.raises(NotifyInvalid) as invalid:
        env.adapter.parse_notify({}, body)
    assert invalid.value.code == "notify_headers_missing"


def test_a_notify_with_a_tampered_amount_is_invalid(start: Callable[..., Env]) -> None:
    env = start()
    env.create("pay_tamper_0001", 1000)
    env.sim.pay("pay_tamper_0001")
    (received,) = wait_until(lambda: list(env.receiver.received))
    envelope = json.loads(received.body)
    resource = decrypt_resource(received.body)
    resource["amount"]["total"] = resource["amount"]["payer_total"] = 1
    nonce = "abcdefghijkl"
    sealed = AESGCM(APIV3_KEY.encode()).encrypt(nonce.encode(), json.dumps(resource).encode(), b"transaction")
    envelope["resource"].update(nonce=nonce, ciphertext=base64.b64encode(sealed).decode())
    tampered = json.dumps(envelope, ensure_ascii=False).encode()

    with pytest.raises(NotifyInvalid) as invalid:
        env.adapter.parse_notify(received.headers, tampered)
    assert invalid.value.code == "notify_signature_invalid"


def test_a_notify_for_another_merchant_id_is_invalid(start: Callable[..., Env]) -> None:
    env = start()
    body = _build(env, _payment_resource("pay_other_0001", mchid="1900000999"))

    with pytest.raises(NotifyInvalid) as invalid:
        env.adapter.parse_notify(env.sim.notify_headers(body), body)
    assert invalid.value.code == "notify_merchant_mismatch"


def test_a_receiver_failing_twice_gets_retries_on_the_schedule_and_none_after_its_ack(
    start: Callable[..., Env],
) -> None:
    scale = 0.01  # 15 s → 150 ms, so the gaps can be told apart from jitter
    env = start(notify_delay_seconds=scale)
    env.receiver.fail_first = 2
    env.create("pay_retry_0001", 1000)
    env.sim.pay("pay_retry_0001")

    attempts = wait_until(lambda: [a for a in env.sim.notifies_sent() if a.acknowledged] and env.sim.notifies_sent())
    time.sleep(NOTIFY_RETRY_SCHEDULE_SECONDS[2] * scale * 2)  # past when a 4th attempt would have gone out

    assert env.sim.notifies_sent() == attempts
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert [a.attempt for a in attempts] == [1, 2, 3] and len({a.notify_id for a in attempts}) == 1
    gaps = [later.sent_monotonic - earlier.sent_monotonic for earlier, later in itertools.pairwise(attempts)]
    for gap, scheduled in zip(gaps, NOTIFY_RETRY_SCHEDULE_SECONDS, strict=False):
        assert scheduled * scale <= gap < scheduled * scale + 0.25, gaps
    (notify,) = env.receiver.notifies()
    assert notify.notify_id == attempts[0].notify_id


def test_a_duplicated_notify_arrives_twice_with_the_same_notify_id(start: Callable[..., Env]) -> None:
    env = start()
    env.sim.duplicate_notify(2)
    env.create("pay_dup_0001", 1000)
    env.sim.pay("pay_dup_0001")

    first, second = wait_until(lambda: len(env.receiver.notifies()) == 2 and env.receiver.notifies())

    assert first.notify_id == second.notify_id and first.out_trade_no == second.out_trade_no == "pay_dup_0001"
    attempts = wait_until(lambda: len(env.sim.notifies_sent()) == 2 and env.sim.notifies_sent())
    assert [a.acknowledged for a in attempts] == [True, True]


def test_a_delayed_notify_waits_before_its_first_delivery(start: Callable[..., Env]) -> None:
    env = start()
    env.sim.delay_notify(200)  # channel seconds: 0.2 s of wall time
    env.create("pay_delay_0001", 1000)
    paid_at = time.monotonic()
    env.sim.pay("pay_delay_0001")

    (attempt,) = wait_until(env.sim.notifies_sent)

    assert attempt.sent_monotonic - paid_at >= 0.2


def test_ack_notify_answers_200_with_success_or_500_to_be_retried(start: Callable[..., Env]) -> None:
    env = start()
    accepted, refused = env.adapter.ack_notify(True), env.adapter.ack_notify(False)
    assert accepted.status_code == 200 and json.loads(accepted.body) == {"code": "SUCCESS", "message": "成功"}
    assert refused.status_code == 500


# ----------------------------------------------------------------------------- failures


def test_fail_next_makes_the_adapter_raise_channel_unavailable(start: Callable[..., Env]) -> None:
    env = start()
    env.sim.fail_next(1)
    with pytest.raises(ChannelUnavailable) as unavailable:
        env.create("pay_fail_0001", 1000)
    assert unavailable.value.code == "SYSTEM_ERROR"
    with pytest.raises(ChannelRejected):  # the failed request was not processed
        env.adapter.query_payment("pay_fail_0001")
    env.sim.fail_next(1, status=503)
    with pytest.raises(ChannelUnavailable):
        env.adapter.query_payment("pay_fail_0001")


def test_timeout_next_makes_the_adapter_raise_channel_unavailable_within_its_timeout(
    start: Callable[..., Env],
) -> None:
    env = start()
    adapter = env.adapter_with(timeout_seconds=0.3)
    env.sim.timeout_next(1, seconds=0.8)
    request = CreatePayment(
        out_trade_no="pay_slow_0001",
        amount_minor=1000,
        currency="CNY",
        subject="慢",
        method="native",
        notify_url=env.notify_url,
    )
    started = time.monotonic()
    with pytest.raises(ChannelUnavailable) as unavailable:
        adapter.create_payment(request)
    assert time.monotonic() - started < 0.3 + 0.3
    assert unavailable.value.code == "timeout"
    # The outcome was unknown: the channel did create the trade after all, and creating again is idempotent.
    status = wait_until(lambda: _query_or_none(adapter, "pay_slow_0001"), timeout_seconds=3)
    assert status.state == "pending"
    assert adapter.create_payment(request).kind == "qr_code"


def _query_or_none(adapter: WechatPayAdapter, out_trade_no: str) -> Any:
    try:
        return adapter.query_payment(out_trade_no)
    except ChannelRejected:
        return None


def test_an_answer_with_a_bad_or_missing_signature_is_channel_unavailable(start: Callable[..., Env]) -> None:
    env = start()
    env.create("pay_sig_0001", 1000)
    env.sim.bad_signature_next(1)
    with pytest.raises(ChannelUnavailable) as unavailable:
        env.adapter.query_payment("pay_sig_0001")
    assert unavailable.value.code == "response_signature_invalid"
    env.sim.bad_signature_next(1, drop_headers=True)
    with pytest.raises(ChannelUnavailable):
        env.adapter.query_payment("pay_sig_0001")
    wrong_platform_key = env.adapter_with(platform_public_key_pem=env.keys.merchant_public)
    with pytest.raises(ChannelUnavailable):
        wrong_platform_key.query_payment("pay_sig_0001")
    assert env.adapter.query_payment("pay_sig_0001").state == "pending"


def test_requests_signed_with_another_merchant_key_are_refused_with_sign_error(start: Callable[..., Env]) -> None:
    env = start()
    impostor = env.adapter_with(private_key_pem=env.keys.stranger_private)
    with pytest.raises(ChannelRejected) as refused:
        impostor.query_payment("pay_any_0001")
    assert refused.value.code == "SIGN_ERROR"


# ----------------------------------------------------------------------------- disagreement and bills


def test_disagree_amount_shows_in_the_notify_the_query_and_the_bill(start: Callable[..., Env]) -> None:
    env = start()
    env.create("pay_disagree_0001", 1000)
    env.sim.disagree_amount("pay_disagree_0001", 990)
    env.sim.pay("pay_disagree_0001")

    (notify,) = wait_until(env.receiver.notifies)
    assert notify.amount_minor == 990
    assert env.adapter.query_payment("pay_disagree_0001").amount_minor == 990
    today = dt.datetime.now(SHANGHAI).date()
    (row,) = read_bill(env.adapter.download_bill(today))[0]
    assert parse_amount(row["应结订单金额"], "CNY") == parse_amount(row["订单金额"], "CNY") == 990


def test_the_day_bill_parses_back_to_the_trades_and_refunds_made(start: Callable[..., Env]) -> None:
    moment = dt.datetime(2024, 6, 1, 10, 30, tzinfo=SHANGHAI)
    env = start(clock=lambda: moment, refund_settle_seconds=None)
    amounts = {"pay_bill_0001": 1999, "pay_bill_0002": 5, "pay_bill_0003": 100000}
    for out_trade_no, amount_minor in amounts.items():
        env.create(out_trade_no, amount_minor)
    env.sim.pay("pay_bill_0001")
    env.sim.pay("pay_bill_0003")  # pay_bill_0002 stays unpaid: not in the bill
    env.refund("pay_bill_0001", "ref_bill_0001", 1, total_minor=1999)
    env.refund("pay_bill_0003", "ref_bill_0003", 100000, total_minor=100000)
    env.sim.settle_refund("ref_bill_0003")

    details, summary = read_bill(env.adapter.download_bill(moment.date()))

    payments = {row["商户订单号"]: row for row in details if row["交易状态"] == "SUCCESS"}
    refunds = {row["商户退款单号"]: row for row in details if row["交易状态"] == "REFUND"}
    assert {no: parse_amount(row["应结订单金额"], "CNY") for no, row in payments.items()} == {
        "pay_bill_0001": 1999,
        "pay_bill_0003": 100000,
    }
    assert {
        no: (row["商户订单号"], parse_amount(row["退款金额"], "CNY"), row["退款状态"]) for no, row in refunds.items()
    } == {
        "ref_bill_0001": ("pay_bill_0001", 1, "PROCESSING"),
        "ref_bill_0003": ("pay_bill_0003", 100000, "SUCCESS"),
    }
    for row in details:
        assert (row["交易时间"], row["商户号"], row["公众账号ID"], row["货币种类"]) == (
            "2024-06-01 10:30:00",
            MCHID,
            APPID,
            "CNY",
        )
        assert row["微信订单号"] == env.adapter.query_payment(row["商户订单号"]).channel_trade_no
    assert parse_amount(payments["pay_bill_0001"]["手续费"], "CNY") == 12  # 0.60% of 19.99 is 11.994 fen
    assert summary["总交易单数"] == "4"
    assert parse_amount(summary["应结订单总金额"], "CNY") == 101999
    assert parse_amount(summary["退款总金额"], "CNY") == 100001
    assert parse_amount(summary["订单总金额"], "CNY") == 101999
    assert parse_amount(summary["手续费总金额"], "CNY") == sum(parse_amount(r["手续费"], "CNY") for r in details)
    assert details == env.sim.bill_rows(moment.date())
    with pytest.raises(ChannelRejected) as refused:
        env.adapter.download_bill(moment.date() - dt.timedelta(days=1))
    assert refused.value.code == "NO_STATEMENT_EXIST"
