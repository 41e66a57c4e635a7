"""Payments end to end: a merchant's signed API, the cashier, the channel simulators, notifies, jobs, ledger, webhooks.

Each test drives the whole stack over real HTTP (``tests/payments_env.py``): the
merchant creates an order with its signing client, the payer's browser goes
through our cashier and the channel's own page, the channel notifies our
``/v1/channels/{slug}/notify``, jobs run in this process (``payments.run_jobs``)
and the merchant's webhook endpoint (``receiver``) verifies every delivery with
the ``standardwebhooks`` package. What users care about is checked: order,
refund and payout states, the ledger's balances and entries, and the webhooks
with their data. Everything runs on SQLite and PostgreSQL.

The four simulators live for the whole module; tests that change their
behaviour (``delay_notify``, ``duplicate_notify``) are put back by
``channels_behave_normally`` after each test. Time passes for the jobs through
``payments.run_jobs(now=…)`` (queries that come due, orders that expire).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Engine
from tests.payments_env import PaymentsEnv, Shop
from tests.webhook_receiver import Received

from zhangfang.channels.bank_direct import PROFILES, load_public_key
from zhangfang.ledger.tables import journal_entries
from zhangfang.sandbox.environment import Sandbox

AMOUNT = 12345  # ¥123.45: its fee at 0.6 % is 74.07, so rounding matters
PAYEE = {"account_number": "6222020200112233445", "account_name": "张三"}
CLOSED_ACCOUNT = {"account_number": "6222020200112230000", "account_name": "李四"}  # the bank fails it
_STATE = re.compile(r'data-state="([a-z_]+)"')
_BACK_URL = re.compile(r'href="([^"]+)" data-back-url')


@dataclass(frozen=True)
class Way:
    """How a payer pays: the cashier's method, and the channel that should take it."""

    method: str
    channel: str

    @property
    def preferred_channel(self) -> str | None:
        return self.channel if self.method == "bank_card" else None


ALIPAY = Way("alipay", "alipay")
WECHATPAY = Way("wechatpay", "wechatpay")
ICBC = Way("bank_card", "bank_direct:icbc")
CMB = Way("bank_card", "bank_direct:cmb")
EVERY_WAY = [
    pytest.param(ALIPAY, id="alipay"),
    pytest.param(WECHATPAY, id="wechatpay"),
    pytest.param(ICBC, id="bank_card-icbc"),
    pytest.param(CMB, id="bank_card-cmb"),
]


def fee_at_six_per_mille(amount: int) -> int:
    """amount × 0.006 rounded half up, in integers (independent of ``postings.fee_for``)."""
    return (amount * 6 + 500) // 1000


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """A browser (or a channel's HTTP client) for the requests the tests make by hand."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def channels_behave_normally(sandbox: Sandbox) -> Iterator[None]:
    """Puts the simulators' notify behaviour back after each test (the sandbox lives for the module)."""
    yield
    sandbox.alipay.delay_notify(0)
    sandbox.wechatpay.delay_notify(0)
    for bank in sandbox.banks.values():
        bank.delay_notify(0)
        bank.duplicate_notify(1)


def new_order(payments: PaymentsEnv, shop: Shop, number: str, way: Way, amount: int = AMOUNT) -> dict[str, Any]:
    return payments.create_order(shop, number, amount=amount, preferred_channel=way.preferred_channel)


def open_at_channel(payments: PaymentsEnv, order: dict[str, Any], way: Way) -> tuple[httpx.Client, str, str]:
    """The payer picks ``way`` at the cashier and lands on the channel's page, without paying yet.

    Returns the browser, the channel page's URL and the attempt (the channel's ``out_trade_no``).
    """
    browser, answer = payments.open_payment(order, way.method)
    url = payments.channel_page(browser, answer, way.method)
    attempts = payments.order(order["id"])["attempts"]
    assert attempts[-1]["channel"] == way.channel and attempts[-1]["state"] == "open", attempts
    return browser, url, attempts[-1]["id"]


def delay_notifies(sandbox: Sandbox, channel: str) -> None:
    """The channel's next notifies wait far longer than any test: as if it could not deliver them."""
    if channel == "alipay":
        sandbox.alipay.delay_notify(3600)
    elif channel == "wechatpay":
        sandbox.wechatpay.delay_notify(10**7)  # channel seconds
    else:
        sandbox.simulator(channel).delay_notify(3600)  # type: ignore[attr-defined]


def seconds_from_now(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def state_of(payments: PaymentsEnv, order: dict[str, Any]) -> str:
    return payments.order(order["id"])["state"]


def wait_for_state(payments: PaymentsEnv, order: dict[str, Any], state: str, *, jobs: bool = False) -> dict[str, Any]:
    payments.wait_for(lambda: state_of(payments, order) == state, jobs=jobs)
    return payments.order(order["id"])


def notify_outcomes(payments: PaymentsEnv, ref: str) -> list[str]:
    """What became of each notify about an attempt, refund or payout, oldest first."""
    answer = payments.admin.get("/v1/admin/channel-notifies", params={"ref": ref})
    assert answer.status_code == 200, answer.text
    return [row["outcome"] for row in reversed(answer.json())]


def merchant_get(shop: Shop, path: str) -> dict[str, Any]:
    answer = shop.client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def merchant_post(shop: Shop, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    return shop.client.post(path, body, idempotency_key=key)


def error_code(answer: httpx.Response, status_code: int) -> str:
    assert answer.status_code == status_code, answer.text
    return answer.json()["error"]["code"]


def webhooks(payments: PaymentsEnv, shop: Shop) -> list[Received]:
    """Every webhook delivery the merchant received, oldest first; each one verified with its secret."""
    received = payments.receiver.requests(f"/webhooks/{shop.ref}")
    index = payments.receiver.secrets.index(shop.webhook_secret)
    assert all(r.verified_by == [index] for r in received), [r.verified_by for r in received]
    return received


def webhook_events(payments: PaymentsEnv, shop: Shop) -> list[tuple[str, str]]:
    """(type, object id) of each webhook the merchant received, oldest first."""
    return [(r.json()["type"], r.json()["data"]["id"]) for r in webhooks(payments, shop)]


def webhook_data(payments: PaymentsEnv, shop: Shop, event_type: str, ref: str) -> dict[str, Any]:
    """The data of the one webhook of this type about ``ref`` (delivered exactly once here)."""
    found = [r.json() for r in webhooks(payments, shop) if r.json()["type"] == event_type]
    matching = [body["data"] for body in found if body["data"]["id"] == ref]
    assert len(matching) == 1, found
    return matching[0]


def payment_entries(engine: Engine, order_ref: str) -> list[str]:
    """Business codes of the ledger entries booking a payment of this order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(journal_entries.c.business_code, journal_entries.c.metadata).where(
                journal_entries.c.business_code.in_(["payment", "duplicate_payment"])
            )
        ).all()
    return [row.business_code for row in rows if (row.metadata or {}).get("payment") == order_ref]


def clearing(channel: str) -> str:
    return f"channel:{channel}:clearing"


def page_state(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    match = _STATE.search(page.text)
    assert match, page.text
    return match.group(1)


def channel_acknowledged(sandbox: Sandbox, channel: str, answer: httpx.Response) -> bool:
    """Whether the channel would take our answer to its notify as an acknowledgement (and stop retrying)."""
    if channel == "alipay":
        return answer.status_code == 200 and answer.text == "success"
    if channel == "wechatpay":
        return 200 <= answer.status_code < 300
    profile = channel.removeprefix("bank_direct:")
    key = load_public_key((sandbox.directory / "keys" / f"{profile}-platform.pub.pem").read_bytes())
    return PROFILES[profile].wire.is_ack(answer.status_code, answer.content, public_key=key)


def notifies_about(sandbox: Sandbox, channel: str, attempt: str) -> list[Any]:
    """Every delivery of a payment notify the channel made about ``attempt``, oldest first."""
    if channel == "alipay":
        return [d for d in sandbox.alipay.notifies_sent() if d.out_trade_no == attempt]
    if channel == "wechatpay":
        sent = [d for d in sandbox.wechatpay.notifies_sent() if d.event_type == "TRANSACTION.SUCCESS"]
        return [d for d in sent if _wechat_resource(sandbox, d.body)["out_trade_no"] == attempt]
    bank: Any = sandbox.simulator(channel)
    return [d for d in bank.notifies_sent() if d.kind == "payment" and attempt.encode() in d.body]


def genuine_notify(sandbox: Sandbox, channel: str, attempt: str) -> tuple[dict[str, str], bytes]:
    """The headers and body of the payment notify the channel sent for ``attempt``, byte for byte."""
    delivery = notifies_about(sandbox, channel, attempt)[0]
    if channel == "alipay":
        return {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, urlencode(delivery.params).encode()
    return dict(delivery.headers), delivery.body


def _apiv3_key(sandbox: Sandbox) -> str:
    return (sandbox.directory / "keys" / "wechatpay-apiv3.key").read_text().strip()


def _wechat_resource(sandbox: Sandbox, body: bytes) -> dict[str, Any]:
    sealed = json.loads(body)["resource"]
    plain = AESGCM(_apiv3_key(sandbox).encode()).decrypt(
        sealed["nonce"].encode(), base64.b64decode(sealed["ciphertext"]), sealed["associated_data"].encode()
    )
    return json.loads(plain)


def forged_notify(sandbox: Sandbox, channel: str, paid: str, target: str) -> tuple[dict[str, str], bytes]:
    """The genuine notify of attempt ``paid``, made to claim that attempt ``target`` was paid.

    Alipay and the banks: the signed body tampered with (the attempt's id
    swapped). WeChat Pay: a well-formed notify for ``target``, encrypted with
    the right APIv3 key, but signed with a key that is not the platform's.
    """
    headers, body = genuine_notify(sandbox, channel, paid)
    if channel == "alipay":
        params = dict(parse_qsl(body.decode()))
        params["out_trade_no"] = target
        return headers, urlencode(params).encode()
    if channel == "wechatpay":
        resource = {**_wechat_resource(sandbox, body), "out_trade_no": target}
        forged = sandbox.wechatpay.notify_body(
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            original_type="transaction",
            resource=resource,
            apiv3_key=_apiv3_key(sandbox),
        )
        wrong_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = wrong_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return sandbox.wechatpay.notify_headers(forged, private_key_pem=pem), forged
    assert paid.encode() in body
    return headers, body.replace(paid.encode(), target.encode())


def post_notify(
    http: httpx.Client, payments: PaymentsEnv, channel: str, headers: dict[str, str], body: bytes
) -> httpx.Response:
    url = f"{payments.base_url}/v1/channels/{payments.registry.slug(channel)}/notify"
    return http.post(url, content=body, headers=headers)


def assert_booked_once(payments: PaymentsEnv, shop: Shop, order: dict[str, Any], channel: str) -> None:
    """The order's money is in the ledger exactly once: channel owes it, merchant is owed it less the fee."""
    fee = fee_at_six_per_mille(order["amount"])
    assert payment_entries(payments.engine, order["id"]) == ["payment"]
    assert payments.balance(clearing(channel)) == order["amount"]
    assert payments.merchant_balance(shop) == order["amount"] - fee
    assert payments.balance("platform:fee_income") == fee


# --------------------------------------------------------------------------- the happy path, per channel


@pytest.mark.parametrize(
    ("way", "sign_type"),
    [
        pytest.param(ALIPAY, "RSA2", id="alipay-rsa2-merchant"),
        pytest.param(WECHATPAY, "HMAC-SHA256", id="wechatpay"),
        pytest.param(ICBC, "HMAC-SHA256", id="bank_card-icbc"),
        pytest.param(CMB, "RSA2", id="bank_card-cmb-rsa2-merchant"),
    ],
)
def test_a_payer_pays_at_the_channel_and_the_order_is_booked_once_and_the_merchant_told(
    payments: PaymentsEnv, http: httpx.Client, way: Way, sign_type: str
) -> None:
    shop = payments.merchant(sign_type=sign_type)
    created = new_order(payments, shop, "T-1001", way)
    assert (created["state"], created["fee"], created["replayed"]) == ("pending", None, False)
    assert created["cashier_url"] == f"{payments.base_url}/cashier/{created['id']}"
    order_id = created["id"]

    paid = payments.pay(created, way.method)
    order = wait_for_state(payments, created, "succeeded")  # no job ran: the channel's notify decided
    [attempt] = order["attempts"]
    assert (attempt["channel"], attempt["state"], attempt["duplicate"]) == (way.channel, "succeeded", False)
    assert order["channel"] == way.channel and order["channel_trade_no"] == attempt["channel_trade_no"]
    assert order["fee"] == fee_at_six_per_mille(AMOUNT) == 74
    assert notify_outcomes(payments, attempt["id"]) == ["applied"]
    assert_booked_once(payments, shop, order, way.channel)

    # The synchronous return: the browser lands on our return page, whose link back to the merchant
    # carries the payment's references and nothing that looks like a result.
    return_page = f"{payments.base_url}/cashier/{order_id}/return"
    if way.method == "wechatpay":  # a QR payment has no redirect: the payer taps "I have paid"
        landed = http.get(return_page)
    else:
        assert paid.status_code in (302, 303) and paid.headers["location"].startswith(f"{return_page}?")
        landed = http.get(paid.headers["location"])
    assert page_state(landed) == "succeeded"
    back = urlsplit(_BACK_URL.search(landed.text).group(1).replace("&amp;", "&"))  # type: ignore[union-attr]
    assert f"{back.scheme}://{back.netloc}{back.path}" == "https://shop.example/return"
    assert parse_qsl(back.query) == [("payment_id", order_id), ("out_trade_no", "T-1001")]

    assert webhook_events(payments, shop) == []  # webhooks leave through the job queue
    payments.run_jobs()
    assert webhook_events(payments, shop) == [("payment.succeeded", order_id)]
    data = webhook_data(payments, shop, "payment.succeeded", order_id)
    assert data == merchant_get(shop, f"/v1/merchant/payments/{order_id}")
    assert (data["state"], data["amount"], data["fee"], data["channel"]) == ("succeeded", AMOUNT, 74, way.channel)

    assert new_order(payments, shop, "T-1001", way) == created  # a retried creation is answered as the first
    assert_booked_once(payments, shop, order, way.channel)


# --------------------------------------------------------------------------- notifies


@pytest.mark.parametrize("way", EVERY_WAY)
def test_a_repeated_notify_books_once_a_forged_one_is_refused_and_a_late_one_changes_nothing(
    payments: PaymentsEnv, http: httpx.Client, way: Way
) -> None:
    shop = payments.merchant()
    simulator: Any = payments.sandbox.simulator(way.channel)
    first = new_order(payments, shop, "T-2001", way)
    simulator.duplicate_notify(2)
    payments.pay(first, way.method)
    simulator.duplicate_notify(1)
    paid_attempt = payments.wait_for(lambda: payments.order(first["id"])["attempt"], jobs=False)
    payments.wait_for(lambda: len(notifies_about(payments.sandbox, way.channel, paid_attempt)) >= 2, jobs=False)
    repeated = notifies_about(payments.sandbox, way.channel, paid_attempt)
    assert len(repeated) == 2 and len({d.notify_id for d in repeated}) == 1
    assert all(d.acknowledged for d in repeated)  # the repeat is acknowledged too, so the channel stops
    payments.wait_for(lambda: len(notify_outcomes(payments, paid_attempt)) == 2, jobs=False)
    assert notify_outcomes(payments, paid_attempt) == ["applied", "already_applied"]
    first = payments.order(first["id"])
    assert first["state"] == "succeeded"
    assert_booked_once(payments, shop, first, way.channel)

    # A forged notify claims that the payer of a second order, still at the channel's page, has paid.
    second = new_order(payments, shop, "T-2002", way)
    browser, channel_page, open_attempt = open_at_channel(payments, second, way)
    headers, body = forged_notify(payments.sandbox, way.channel, paid_attempt, open_attempt)
    answer = post_notify(http, payments, way.channel, headers, body)
    assert not channel_acknowledged(payments.sandbox, way.channel, answer), answer.text
    assert state_of(payments, second) == "pending"
    assert payments.order(second["id"])["attempts"][-1]["state"] == "open"
    assert_booked_once(payments, shop, first, way.channel)
    kept = payments.admin.get("/v1/admin/channel-notifies").json()
    [refused] = [row for row in kept if row["outcome"] == "refused"]
    assert refused["channel"] == way.channel and "signature" in refused["reason"]  # kept as evidence, with why

    # The genuine notify of the first order, arriving again late: acknowledged, and nothing changes.
    headers, body = genuine_notify(payments.sandbox, way.channel, paid_attempt)
    late = post_notify(http, payments, way.channel, headers, body)
    assert channel_acknowledged(payments.sandbox, way.channel, late), late.text
    assert notify_outcomes(payments, paid_attempt) == ["applied", "already_applied", "already_applied"]
    assert payments.order(first["id"]) == first
    assert_booked_once(payments, shop, first, way.channel)

    # The refused notify did not spoil the second order: its payer still pays it.
    assert browser.post(channel_page, data={}).status_code in (200, 302, 303)
    wait_for_state(payments, second, "succeeded")
    assert payment_entries(payments.engine, second["id"]) == ["payment"]
    assert payments.balance(clearing(way.channel)) == 2 * AMOUNT
    payments.run_jobs()
    assert webhook_events(payments, shop) == [("payment.succeeded", first["id"]), ("payment.succeeded", second["id"])]


@pytest.mark.parametrize("way", [pytest.param(WECHATPAY, id="wechatpay"), pytest.param(CMB, id="bank_card-cmb")])
def test_a_notify_reporting_another_amount_leaves_the_order_pending_and_unbooked(
    payments: PaymentsEnv, way: Way
) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-4001", way)
    browser, channel_page, attempt = open_at_channel(payments, order, way)
    simulator: Any = payments.sandbox.simulator(way.channel)
    simulator.disagree_amount(attempt, AMOUNT - 1)
    assert browser.post(channel_page, data={}).status_code in (200, 302, 303)
    # The simulator records its delivery only once our answer is back, a moment after we logged the notify.
    payments.wait_for(
        lambda: notify_outcomes(payments, attempt) and notifies_about(payments.sandbox, way.channel, attempt),
        jobs=False,
    )

    assert set(notify_outcomes(payments, attempt)) == {"amount_mismatch"}
    sent = notifies_about(payments.sandbox, way.channel, attempt)
    assert sent and not any(d.acknowledged for d in sent)  # refused: the channel will try again
    # Our own query hears the same wrong amount: it books nothing either.
    payments.run_jobs(now=seconds_from_now(3))
    refreshed = payments.order(order["id"])
    assert (refreshed["state"], refreshed["fee"], refreshed["entry"]) == ("pending", None, None)
    assert payment_entries(payments.engine, order["id"]) == []
    assert payments.balance(clearing(way.channel)) == 0 and payments.merchant_balance(shop) == 0
    assert webhook_events(payments, shop) == []


@pytest.mark.parametrize(  # ICBC's query is the one the worker makes in test_payments_crash.py
    "way",
    [pytest.param(ALIPAY, id="alipay"), pytest.param(WECHATPAY, id="wechatpay"), pytest.param(CMB, id="bank_card-cmb")],
)
def test_when_no_notify_comes_the_poll_asks_the_channel_and_completes_the_order(
    payments: PaymentsEnv, http: httpx.Client, way: Way
) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-5001", way)
    delay_notifies(payments.sandbox, way.channel)
    paid = payments.pay(order, way.method)
    attempt = payments.order(order["id"])["attempts"][-1]["id"]

    # The payer's browser coming back decides nothing: the order waits for the channel's word.
    return_page = f"{payments.base_url}/cashier/{order['id']}/return"
    landed = http.get(paid.headers["location"] if way.method != "wechatpay" else return_page)
    assert page_state(landed) == "pending"
    assert state_of(payments, order) == "pending"

    payments.run_jobs(now=seconds_from_now(2))
    order = payments.order(order["id"])
    assert order["state"] == "succeeded" and order["fee"] == 74
    assert notify_outcomes(payments, attempt) == []  # no notify came: our query decided
    assert_booked_once(payments, shop, order, way.channel)
    assert page_state(http.get(return_page)) == "succeeded"
    data = webhook_data(payments, shop, "payment.succeeded", order["id"])
    assert data == merchant_get(shop, f"/v1/merchant/payments/{order['id']}")


# --------------------------------------------------------------------------- refunds


@pytest.mark.parametrize(
    "way",
    [pytest.param(ALIPAY, id="alipay"), pytest.param(WECHATPAY, id="wechatpay"), pytest.param(CMB, id="bank_card-cmb")],
)
def test_an_order_refunded_in_three_parts_is_refunded_with_its_whole_fee_returned(
    payments: PaymentsEnv, way: Way
) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-6001", way)
    payments.pay(order, way.method)
    wait_for_state(payments, order, "succeeded")
    order_id, fee = order["id"], 74
    refunds_path = f"/v1/merchant/payments/{order_id}/refunds"

    def refund(number: str, amount: int) -> httpx.Response:
        return merchant_post(shop, refunds_path, {"out_refund_no": number, "amount": amount}, key=number)

    def settled(answer: httpx.Response) -> dict[str, Any]:
        assert answer.status_code == 201, answer.text
        assert (answer.json()["state"], answer.json()["replayed"]) == ("processing", False)
        path = f"/v1/merchant/refunds/{answer.json()['id']}"
        payments.wait_for(lambda: merchant_get(shop, path)["state"] != "processing")
        return merchant_get(shop, path)

    first = settled(refund("R-1", 1000))
    assert (first["state"], first["amount"], first["fee_returned"]) == ("succeeded", 1000, 6)  # 74 × 1000/12345
    assert payments.merchant_balance(shop) == AMOUNT - fee - (1000 - 6)

    second = refund("R-2", 4000)
    assert second.status_code == 201, second.text
    # While the second is in flight, more than what is left is refused, and changes nothing.
    balances = (payments.merchant_balance(shop), payments.balance(clearing(way.channel)))
    too_much = refund("R-X", AMOUNT - 1000 - 4000 + 1)
    assert error_code(too_much, 422) == "refund_exceeds_paid"
    assert too_much.json()["error"]["details"]["refundable"] == AMOUNT - 5000
    assert (payments.merchant_balance(shop), payments.balance(clearing(way.channel))) == balances
    second_done = settled(second)
    assert (second_done["state"], second_done["fee_returned"]) == ("succeeded", 24)  # 74 × 5000/12345 → 30, less 6
    assert payments.order(order_id)["state"] == "succeeded"

    third = settled(refund("R-3", AMOUNT - 5000))
    assert (third["state"], third["fee_returned"]) == ("succeeded", 44)
    assert first["fee_returned"] + second_done["fee_returned"] + third["fee_returned"] == fee

    final = payments.order(order_id)
    assert (final["state"], final["refunded"], final["refunding"]) == ("refunded", AMOUNT, 0)
    assert [r["id"] for r in final["refunds"]] == [first["id"], second_done["id"], third["id"]]
    assert {(r["kind"], r["state"]) for r in final["refunds"]} == {("merchant", "succeeded")}
    assert payments.merchant_balance(shop) == 0
    assert payments.balance("platform:fee_income") == 0
    assert payments.balance(clearing(way.channel)) == 0
    assert error_code(refund("R-4", 1), 422) == "refund_exceeds_paid"
    assert len(payments.order(order_id)["refunds"]) == 3

    payments.run_jobs()
    refund_ids = [first["id"], second_done["id"], third["id"]]
    assert webhook_events(payments, shop) == [("payment.succeeded", order_id)] + [
        ("refund.succeeded", ref) for ref in refund_ids
    ]
    for ref in refund_ids:
        assert webhook_data(payments, shop, "refund.succeeded", ref) == merchant_get(
            shop, f"/v1/merchant/refunds/{ref}"
        )
    assert merchant_get(shop, f"/v1/merchant/payments/{order_id}")["state"] == "refunded"


# --------------------------------------------------------------------------- closing and expiry


def test_a_merchant_closes_a_pending_order_the_trade_closes_at_the_channel_and_a_paid_one_cannot_close(
    payments: PaymentsEnv,
    http: httpx.Client,
) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-7001", ALIPAY)
    _, _, attempt = open_at_channel(payments, order, ALIPAY)
    close_path = f"/v1/merchant/payments/{order['id']}/close"

    closed = merchant_post(shop, close_path, {}, key="close-1")
    assert closed.status_code == 200, closed.text
    assert (closed.json()["state"], closed.json()["close_reason"]) == ("closed", "merchant")
    again = merchant_post(shop, close_path, {}, key="close-2")
    assert again.status_code == 200 and again.json() == closed.json()

    payments.run_jobs()  # closes the payer's open trade at Alipay
    assert payments.order(order["id"])["attempts"][-1]["state"] == "closed"
    assert payments.sandbox.alipay.trade_status(attempt) == "TRADE_CLOSED"
    assert webhook_events(payments, shop) == [("payment.closed", order["id"])]
    data = webhook_data(payments, shop, "payment.closed", order["id"])
    assert data == merchant_get(shop, f"/v1/merchant/payments/{order['id']}") == closed.json()

    # The cashier shows the order closed and opens no new trade.
    assert page_state(http.get(order["cashier_url"])) == "closed"
    tried = http.post(f"{order['cashier_url']}/pay", data={"method": "alipay"})
    assert page_state(tried) == "closed"
    assert len(payments.order(order["id"])["attempts"]) == 1

    paid = new_order(payments, shop, "T-7002", ALIPAY)
    payments.pay(paid, "alipay")
    wait_for_state(payments, paid, "succeeded")
    refused = merchant_post(shop, f"/v1/merchant/payments/{paid['id']}/close", {}, key="close-3")
    assert error_code(refused, 422) == "payment_already_paid"
    assert state_of(payments, paid) == "succeeded"


def test_an_unpaid_order_closes_as_expired_once_its_time_has_passed(payments: PaymentsEnv, http: httpx.Client) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-7101", WECHATPAY)
    _, _, attempt = open_at_channel(payments, order, WECHATPAY)  # the payer scanned, and walked away
    expires_at = dt.datetime.fromisoformat(order["expires_at"])

    payments.run_jobs(now=expires_at - dt.timedelta(seconds=5))
    assert state_of(payments, order) == "pending"
    payments.run_jobs(now=expires_at + dt.timedelta(seconds=1))
    expired = payments.order(order["id"])
    assert (expired["state"], expired["close_reason"]) == ("closed", "expired")
    assert expired["attempts"][-1]["state"] == "closed"
    assert payments.sandbox.wechatpay.trade_state(attempt) == "CLOSED"
    assert webhook_events(payments, shop) == [("payment.closed", order["id"])]
    data = webhook_data(payments, shop, "payment.closed", order["id"])
    assert data == merchant_get(shop, f"/v1/merchant/payments/{order['id']}")
    assert data["close_reason"] == "expired"
    assert page_state(http.get(order["cashier_url"])) == "closed"
    assert payments.merchant_balance(shop) == 0


def test_a_payment_made_after_the_order_closed_is_booked_as_a_duplicate_and_refunded_to_the_payer(
    payments: PaymentsEnv,
) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-7201", ALIPAY)
    _, _, attempt = open_at_channel(payments, order, ALIPAY)
    closed = merchant_post(shop, f"/v1/merchant/payments/{order['id']}/close", {}, key="close-1")
    assert closed.status_code == 200, closed.text

    payments.sandbox.alipay.pay(attempt)  # the payer was quicker than our close of the trade at Alipay
    payments.wait_for(lambda: notify_outcomes(payments, attempt), jobs=False)
    assert notify_outcomes(payments, attempt) == ["duplicate"]
    seen = payments.order(order["id"])
    assert (seen["state"], seen["fee"], seen["entry"]) == ("closed", None, None)
    [paid_attempt] = seen["attempts"]
    assert (paid_attempt["state"], paid_attempt["duplicate"]) == ("succeeded", True)
    [returning] = seen["refunds"]
    assert (returning["kind"], returning["state"], returning["amount"]) == ("duplicate", "processing", AMOUNT)
    assert payment_entries(payments.engine, order["id"]) == ["duplicate_payment"]
    assert payments.balance("platform:duplicate_payments") == AMOUNT
    assert payments.balance(clearing("alipay")) == AMOUNT
    assert payments.merchant_balance(shop) == 0 and payments.balance("platform:fee_income") == 0

    payments.run_jobs()
    final = payments.order(order["id"])
    assert final["state"] == "closed"
    [returned] = final["refunds"]
    assert (returned["id"], returned["kind"], returned["state"]) == (returning["id"], "duplicate", "succeeded")
    assert payments.balance("platform:duplicate_payments") == 0
    assert payments.balance(clearing("alipay")) == 0
    assert payments.sandbox.alipay.trade_status(attempt) == "TRADE_CLOSED"  # refunded in full at Alipay
    assert webhook_events(payments, shop) == [("payment.closed", order["id"])]  # no payment for the merchant


# --------------------------------------------------------------------------- routing and the circuit breaker


def test_a_failing_bank_is_passed_over_for_the_other_and_its_breaker_opens_until_an_operator_resets_it(
    payments: PaymentsEnv,
) -> None:
    shop = payments.merchant()
    icbc = payments.sandbox.banks["icbc"]
    numbers = iter(range(8001, 8100))

    def bank_card_order(amount: int = AMOUNT) -> tuple[str, list[tuple[str, str]]]:
        """A payer picks bank card; returns the cashier's answer's kind and the attempts made."""
        order = payments.create_order(shop, f"T-{next(numbers)}", amount=amount)
        _, answer = payments.open_payment(order, "bank_card")
        attempts = [(a["channel"], a["state"]) for a in payments.order(order["id"])["attempts"]]
        return str(answer.status_code), attempts

    def breaker(code: str) -> dict[str, Any]:
        answer = payments.admin.get("/v1/admin/channels")
        assert answer.status_code == 200, answer.text
        [channel] = [c for c in answer.json()["items"] if c["code"] == code]
        return channel

    assert bank_card_order() == ("303", [("bank_direct:icbc", "open")])  # ICBC is the cheaper bank
    assert bank_card_order(6_000_000) == ("303", [("bank_direct:cmb", "open")])  # above ICBC's band

    icbc.fail_next(1)
    assert bank_card_order() == ("303", [("bank_direct:icbc", "failed"), ("bank_direct:cmb", "open")])
    assert (breaker("bank_direct:icbc")["breaker"], breaker("bank_direct:icbc")["consecutive_failures"]) == (
        "closed",
        1,
    )
    icbc.fail_next(1)
    assert bank_card_order() == ("303", [("bank_direct:icbc", "failed"), ("bank_direct:cmb", "open")])
    tripped = breaker("bank_direct:icbc")
    assert (tripped["breaker"], tripped["consecutive_failures"]) == ("open", 2) and tripped["last_error"]
    assert breaker("bank_direct:cmb")["breaker"] == "closed"

    # Out of rotation: ICBC is not even tried.
    assert bank_card_order() == ("303", [("bank_direct:cmb", "open")])

    reset = payments.admin.post("/v1/admin/channels/bank_direct:icbc/reset")
    assert reset.status_code == 200, reset.text
    [after] = [c for c in reset.json()["items"] if c["code"] == "bank_direct:icbc"]
    assert (after["breaker"], after["consecutive_failures"]) == ("closed", 0)
    assert bank_card_order() == ("303", [("bank_direct:icbc", "open")])


# --------------------------------------------------------------------------- payouts (代付)


def test_a_merchant_pays_out_its_balance_and_a_payout_the_bank_fails_gives_the_funds_back(
    payments: PaymentsEnv,
) -> None:
    shop = payments.merchant()
    order = new_order(payments, shop, "T-9001", ICBC, amount=100_000)
    payments.pay(order, "bank_card")
    wait_for_state(payments, order, "succeeded")
    balance = 100_000 - 600
    assert payments.merchant_balance(shop) == balance
    notify_url = f"{payments.receiver.base_url}/webhooks/{shop.ref}"

    def payout(number: str, amount: int, payee: dict[str, str]) -> httpx.Response:
        body = {"out_payout_no": number, "amount": amount, "payee": payee, "notify_url": notify_url}
        return merchant_post(shop, "/v1/merchant/payouts", body, key=number)

    def finished(answer: httpx.Response) -> dict[str, Any]:
        assert answer.status_code == 201, answer.text
        assert answer.json()["state"] == "processing"
        path = f"/v1/merchant/payouts/{answer.json()['id']}"
        payments.wait_for(lambda: merchant_get(shop, path)["state"] != "processing")
        return merchant_get(shop, path)

    first = payout("P-1", 30_000, PAYEE)
    assert first.status_code == 201, first.text
    # The funds of a payout in flight are reserved: what is left cannot be paid out twice.
    assert error_code(payout("P-X", balance - 30_000 + 1, PAYEE), 422) == "merchant_balance_insufficient"
    done = finished(first)
    assert (done["state"], done["amount"], done["payee"]["account_number_masked"]) == ("succeeded", 30_000, "****3445")
    assert payments.merchant_balance(shop) == balance - 30_000

    failing = finished(payout("P-2", balance - 30_000, CLOSED_ACCOUNT))
    assert failing["state"] == "failed" and failing["failure_code"]
    assert payments.merchant_balance(shop) == balance - 30_000

    assert error_code(payout("P-3", balance - 30_000 + 1, PAYEE), 422) == "merchant_balance_insufficient"
    rest = finished(payout("P-4", balance - 30_000, PAYEE))  # the failed payout's hold was released
    assert rest["state"] == "succeeded"
    assert payments.merchant_balance(shop) == 0

    payments.run_jobs()
    assert webhook_events(payments, shop) == [
        ("payment.succeeded", order["id"]),
        ("payout.succeeded", done["id"]),
        ("payout.failed", failing["id"]),
        ("payout.succeeded", rest["id"]),
    ]
    for event, found in (("payout.succeeded", done), ("payout.failed", failing), ("payout.succeeded", rest)):
        assert webhook_data(payments, shop, event, found["id"]) == merchant_get(
            shop, f"/v1/merchant/payouts/{found['id']}"
        )
