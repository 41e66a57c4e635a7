"""Bad input to the payments API over HTTP: every refusal has its stable code and status, and changes nothing.

The world is built once per database (SQLite, PostgreSQL) for the whole module,
because no case changes it: two merchants, each with an order paid through the
cashier and the Alipay simulator, a refund and a payout in flight; the first
merchant also has a pending order. Each case is sent with the merchant's
signing client (or signed by hand with ``parties.signing`` when the signature
itself is the point) and must leave every row as it was — except the nonce an
authenticated request leaves in ``request_nonces``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from tests.conftest import reset_postgres
from tests.payments_env import ADMIN_KEY, PaymentsEnv, Shop, _free_port
from tests.snapshots import snapshot

from zhangfang.api.app import create_app
from zhangfang.channels import registry as channel_registry
from zhangfang.config import Settings
from zhangfang.db.engine import create_engine
from zhangfang.db.uow import run_in_transaction
from zhangfang.parties import service as parties
from zhangfang.parties import signing
from zhangfang.parties.tables import request_nonces
from zhangfang.payments import flows
from zhangfang.sandbox.environment import Sandbox
from zhangfang.sandbox.server import serve_in_thread

MISSING_PAY = "pay_01J0000000000000000000000"
MISSING_REFUND = "rfd_01J0000000000000000000000"
MISSING_PAYOUT = "po_01J0000000000000000000000"
PAYEE = {"account_number": "6222020200112233445", "account_name": "张三"}


@dataclass
class World:
    env: PaymentsEnv
    shop: Shop
    shop_secret: str
    other: Shop
    paid: str  # the shop's paid order (10,000, of which 1,000 being refunded)
    pending: str  # the shop's pending order (out_trade_no PENDING, 1,999)
    other_paid: str
    other_refund: str
    other_payout: str

    @property
    def engine(self) -> Engine:
        return self.env.engine


def _build_env(engine: Engine, sandbox: Sandbox, receiver: Any) -> PaymentsEnv:
    """What the ``payments`` fixture builds, once for the module (see the module docstring)."""
    port = _free_port()
    settings = Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        run_jobs_in_server=False,
        public_base_url=f"http://127.0.0.1:{port}",
    )
    registry = sandbox.registry()
    server = serve_in_thread(create_app(settings, engine, registry=registry), port=port)
    admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    return PaymentsEnv(engine, settings, registry, sandbox, server, admin, receiver)


def _paid_order(env: PaymentsEnv, shop: Shop, out_trade_no: str) -> str:
    order = env.create_order(shop, out_trade_no, amount=10_000)
    env.pay(order, "alipay")
    env.wait_for(lambda: env.order(order["id"])["state"] == "succeeded", jobs=False)
    return order["id"]


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, sandbox: Sandbox, receiver_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("bad-input") / "zhangfang.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        engine = create_engine(f"sqlite:///{path}")
    else:
        engine = create_engine(request.getfixturevalue("postgres_database"))
        reset_postgres(engine)
    receiver = receiver_server.server.config.app
    receiver.base_url = receiver_server.base_url
    env = _build_env(engine, sandbox, receiver)
    try:
        shop, other = env.merchant("shop"), env.merchant("other")
        secret = run_in_transaction(engine, lambda conn: parties.get_merchant(conn, ref=shop.ref).hmac_secret)
        paid, other_paid = _paid_order(env, shop, "PAID"), _paid_order(env, other, "OTHER-PAID")
        pending = env.create_order(shop, "PENDING", amount=1_999)["id"]
        refund_body = {"out_refund_no": "R1", "amount": 1_000}
        _created(shop.client.post(f"/v1/merchant/payments/{paid}/refunds", refund_body, idempotency_key="R1"))
        payout_body = {"out_payout_no": "P1", "amount": 1_000, "payee": PAYEE}
        _created(shop.client.post("/v1/merchant/payouts", payout_body, idempotency_key="P1"))
        other_refund = _created(
            other.client.post(
                f"/v1/merchant/payments/{other_paid}/refunds",
                {"out_refund_no": "OR1", "amount": 100},
                idempotency_key="OR1",
            )
        )["id"]
        other_payout = _created(
            other.client.post(
                "/v1/merchant/payouts", {"out_payout_no": "OP1", "amount": 100, "payee": PAYEE}, idempotency_key="OP1"
            )
        )["id"]
        yield World(env, shop, secret, other, paid, pending, other_paid, other_refund, other_payout)
    finally:
        env.admin.close()
        env.server.stop()
        channel_registry.install(None)
        flows.install_settings(None)
        env.registry.close()
        engine.dispose()


# --------------------------------------------------------------------------- how cases send


Send = Callable[[], httpx.Response]
_keys = itertools.count()


def post(path: Callable[[World], str], body: Any) -> Callable[[World], Send]:
    """A signed POST by the shop, under a fresh Idempotency-Key."""
    return lambda w: lambda: w.shop.client.post(path(w), body, idempotency_key=f"bad-{next(_keys)}")


def get(path: Callable[[World], str]) -> Callable[[World], Send]:
    return lambda w: lambda: w.shop.client.get(path(w))


def signed_by_hand(
    w: World,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> signing.SignedRequest:
    return signing.sign_request(
        method=method,
        path=path,
        app_id=w.shop.app_id,
        sign_type=signing.SIGN_TYPE_HMAC,
        hmac_secret=w.shop_secret,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
    )


def send_raw(w: World, request: signing.SignedRequest, **headers: str) -> httpx.Response:
    all_headers = {**request.headers, "Content-Type": "application/json", **headers}
    with httpx.Client(base_url=w.env.base_url, timeout=10) as http:
        return http.request(request.method, request.url, content=request.body, headers=all_headers)


def payment(**changes: Any) -> dict[str, Any]:
    """A good order body with ``changes``; a change to ``None`` leaves the field out."""
    body = {
        "out_trade_no": "NEW-ORDER",
        "amount": 1_999,
        "currency": "CNY",
        "subject": "西湖龙井 250g",
        "notify_url": "http://127.0.0.1:9/webhooks",
        "return_url": "https://shop.example/return",
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not None}


def create_payment(**changes: Any) -> Callable[[World], Send]:
    return post(lambda w: "/v1/merchant/payments", payment(**changes))


def refund_of(order: Callable[[World], str], **changes: Any) -> Callable[[World], Send]:
    body = {"out_refund_no": "NEW-REFUND", "amount": 100, **changes}
    return post(lambda w: f"/v1/merchant/payments/{order(w)}/refunds", {k: v for k, v in body.items() if v is not None})


def payout_of(**changes: Any) -> Callable[[World], Send]:
    body = {"out_payout_no": "NEW-PAYOUT", "amount": 100, "payee": PAYEE, **changes}
    return post(lambda w: "/v1/merchant/payouts", {k: v for k, v in body.items() if v is not None})


def tampered_body(w: World) -> Send:
    request = signed_by_hand(w, "POST", "/v1/merchant/payments", json.dumps(payment()).encode())
    forged = signing.SignedRequest(request.method, request.url, request.headers, json.dumps(payment(amount=1)).encode())
    return lambda: send_raw(w, forged, **{"Idempotency-Key": "tampered"})


def other_merchants_signature(w: World) -> Send:
    request = signed_by_hand(w, "GET", f"/v1/merchant/payments/{w.paid}")
    headers = {**request.headers, signing.HEADER_APP_ID: w.other.app_id}
    return lambda: send_raw(w, signing.SignedRequest(request.method, request.url, headers, request.body))


def replayed_nonce(w: World) -> Send:
    request = signed_by_hand(w, "GET", f"/v1/merchant/payments/{w.paid}")
    first = send_raw(w, request)
    assert first.status_code == 200, first.text  # accepted once: its nonce is now spent
    return lambda: send_raw(w, request)


def replayed_nonce_on_a_post(w: World) -> Send:
    nonce = signing.new_nonce()
    first = send_raw(w, signed_by_hand(w, "GET", "/v1/merchant/me", nonce=nonce))
    assert first.status_code == 200, first.text
    request = signed_by_hand(w, "POST", "/v1/merchant/payments", json.dumps(payment()).encode(), nonce=nonce)
    return lambda: send_raw(w, request, **{"Idempotency-Key": "replayed-nonce"})


def stale(seconds: int) -> Callable[[World], Send]:
    def make(w: World) -> Send:
        body = json.dumps(payment()).encode()
        request = signed_by_hand(w, "POST", "/v1/merchant/payments", body, timestamp=int(time.time()) + seconds)
        return lambda: send_raw(w, request, **{"Idempotency-Key": f"stale-{seconds}"})

    return make


def raw_body(body: bytes) -> Callable[[World], Send]:
    def make(w: World) -> Send:
        request = signed_by_hand(w, "POST", "/v1/merchant/payments", body)
        return lambda: send_raw(w, request, **{"Idempotency-Key": f"raw-{next(_keys)}"})

    return make


def without_idempotency_key(w: World) -> Send:
    request = signed_by_hand(w, "POST", "/v1/merchant/payments", json.dumps(payment()).encode())
    return lambda: send_raw(w, request)


def create_payment_again_with_other_content(w: World) -> Send:
    return create_payment(out_trade_no="PENDING", amount=2_000)(w)


PAST = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()

# (id, status, code, field or None, how to send)
CASES: list[tuple[str, int, str, str | None, Callable[[World], Send]]] = [
    # signatures
    ("tampered body", 401, "signature_invalid", "Zhangfang-Signature", tampered_body),
    ("another merchant's app_id", 401, "signature_invalid", "Zhangfang-Signature", other_merchants_signature),
    ("replayed request", 401, "nonce_replayed", "Zhangfang-Nonce", replayed_nonce),
    ("nonce reused on another request", 401, "nonce_replayed", "Zhangfang-Nonce", replayed_nonce_on_a_post),
    ("timestamp 10 minutes old", 401, "timestamp_stale", "Zhangfang-Timestamp", stale(-600)),
    ("timestamp 10 minutes ahead", 401, "timestamp_stale", "Zhangfang-Timestamp", stale(600)),
    # amounts
    ("amount 0", 422, "amount_must_be_positive", "amount", create_payment(amount=0)),
    ("amount negative", 422, "amount_must_be_positive", "amount", create_payment(amount=-1_999)),
    ("amount a float", 422, "request_invalid", "amount", create_payment(amount=19.99)),
    ("amount a whole float", 422, "request_invalid", "amount", create_payment(amount=20.0)),
    ("amount a string", 422, "request_invalid", "amount", create_payment(amount="19.99")),
    ("amount true", 422, "request_invalid", "amount", create_payment(amount=True)),
    ("amount above the maximum", 422, "amount_too_large", "amount", create_payment(amount=10_000_000_001)),
    ("refund amount a float", 422, "request_invalid", "amount", refund_of(lambda w: w.paid, amount=1.5)),
    ("refund amount 0", 422, "amount_must_be_positive", "amount", refund_of(lambda w: w.paid, amount=0)),
    ("payout amount negative", 422, "amount_must_be_positive", "amount", payout_of(amount=-5)),
    # unknown orders, and another merchant's, are not found
    ("GET unknown payment", 404, "payment_not_found", "payment", get(lambda w: f"/v1/merchant/payments/{MISSING_PAY}")),
    ("GET malformed id", 404, "payment_not_found", "payment", get(lambda w: "/v1/merchant/payments/nonsense")),
    (
        "GET other's payment",
        404,
        "payment_not_found",
        "payment",
        get(lambda w: f"/v1/merchant/payments/{w.other_paid}"),
    ),
    (
        "close unknown payment",
        404,
        "payment_not_found",
        "payment",
        post(lambda w: f"/v1/merchant/payments/{MISSING_PAY}/close", {}),
    ),
    (
        "close other's payment",
        404,
        "payment_not_found",
        "payment",
        post(lambda w: f"/v1/merchant/payments/{w.other_paid}/close", {}),
    ),
    ("refund unknown payment", 404, "payment_not_found", "payment", refund_of(lambda w: MISSING_PAY)),
    ("refund other's payment", 404, "payment_not_found", "payment", refund_of(lambda w: w.other_paid)),
    (
        "list refunds of other's payment",
        404,
        "payment_not_found",
        "payment",
        get(lambda w: f"/v1/merchant/payments/{w.other_paid}/refunds"),
    ),
    (
        "find other's out_trade_no",
        404,
        "payment_not_found",
        "out_trade_no",
        get(lambda w: "/v1/merchant/payments?out_trade_no=OTHER-PAID"),
    ),
    ("GET unknown refund", 404, "refund_not_found", "refund", get(lambda w: f"/v1/merchant/refunds/{MISSING_REFUND}")),
    ("GET other's refund", 404, "refund_not_found", "refund", get(lambda w: f"/v1/merchant/refunds/{w.other_refund}")),
    ("GET unknown payout", 404, "payout_not_found", "payout", get(lambda w: f"/v1/merchant/payouts/{MISSING_PAYOUT}")),
    ("GET other's payout", 404, "payout_not_found", "payout", get(lambda w: f"/v1/merchant/payouts/{w.other_payout}")),
    # refunds and closing against the order's state
    ("refund above paid", 422, "refund_exceeds_paid", "amount", refund_of(lambda w: w.paid, amount=10_001)),
    ("refund above what is left", 422, "refund_exceeds_paid", "amount", refund_of(lambda w: w.paid, amount=9_001)),
    ("refund a pending order", 422, "payment_not_refundable", "payment", refund_of(lambda w: w.pending)),
    (
        "refund number reused",
        409,
        "out_refund_no_conflict",
        "out_refund_no",
        refund_of(lambda w: w.paid, out_refund_no="R1", amount=999),
    ),
    (
        "close a paid order",
        422,
        "payment_already_paid",
        "payment",
        post(lambda w: f"/v1/merchant/payments/{w.paid}/close", {}),
    ),
    # currencies
    ("currency XYZ", 422, "currency_unknown", "currency", create_payment(currency="XYZ")),
    ("currency USD", 422, "currency_not_supported", "currency", create_payment(currency="USD")),
    ("payout currency XYZ", 422, "currency_unknown", "currency", payout_of(currency="XYZ")),
    # missing and unknown fields
    ("no out_trade_no", 422, "request_invalid", "out_trade_no", create_payment(out_trade_no=None)),
    ("no amount", 422, "request_invalid", "amount", create_payment(amount=None)),
    ("no subject", 422, "request_invalid", "subject", create_payment(subject=None)),
    ("an unknown field", 422, "request_invalid", "colour", create_payment(colour="red")),
    ("refund without amount", 422, "request_invalid", "amount", refund_of(lambda w: w.paid, amount=None)),
    ("payout without payee", 422, "request_invalid", "payee", payout_of(payee=None)),
    (
        "payout payee without name",
        422,
        "request_invalid",
        "payee.account_name",
        payout_of(payee={"account_number": "6222020200112233445"}),
    ),
    ("body not JSON", 422, "request_invalid", "body", raw_body(b'{"out_trade_no": ')),
    ("body a JSON array", 422, "request_invalid", None, raw_body(b"[]")),
    ("no Idempotency-Key", 422, "request_invalid", "Idempotency-Key", without_idempotency_key),
    # the order's other fields
    ("unknown method", 422, "payment_method_unavailable", "method", create_payment(method="paypal")),
    ("unknown preferred channel", 422, "channel_unknown", "preferred_channel", create_payment(preferred_channel="x")),
    (
        "notify_url over http to another host",
        422,
        "payment_url_invalid",
        "notify_url",
        create_payment(notify_url="http://shop.example.com/notify"),
    ),
    ("notify_url not a URL", 422, "payment_url_invalid", "notify_url", create_payment(notify_url="notify")),
    ("return_url javascript", 422, "payment_url_invalid", "return_url", create_payment(return_url="javascript:x")),
    ("expires_at in the past", 422, "expires_at_invalid", "expires_at", create_payment(expires_at=PAST)),
    (
        "expires_at without offset",
        422,
        "expires_at_invalid",
        "expires_at",
        create_payment(expires_at="2099-01-01T00:00:00"),
    ),
    (
        "metadata NaN",
        422,
        "metadata_invalid",
        "metadata",
        raw_body(b'{"out_trade_no": "N", "amount": 1, "subject": "s", "metadata": {"x": NaN}}'),
    ),
    ("out_trade_no with spaces", 422, "out_trade_no_invalid", "out_trade_no", create_payment(out_trade_no="a b")),
    ("subject empty", 422, "subject_invalid", "subject", create_payment(subject="")),
    (
        "out_trade_no reused with other content",
        409,
        "out_trade_no_conflict",
        "out_trade_no",
        create_payment_again_with_other_content,
    ),
    # payouts
    ("payout above the balance", 422, "merchant_balance_insufficient", "amount", payout_of(amount=1_000_000)),
    ("payout number reused", 409, "out_payout_no_conflict", "out_payout_no", payout_of(out_payout_no="P1")),
    (
        "payout payee account not digits",
        422,
        "payee_invalid",
        "payee.account_number",
        payout_of(payee={**PAYEE, "account_number": "abc"}),
    ),
    ("payout through an unknown channel", 422, "channel_unknown", "channel", payout_of(channel="nope")),
]


@pytest.mark.parametrize("status, code, field, make", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_refusal_has_its_code_and_status_and_changes_nothing(
    world: World, status: int, code: str, field: str | None, make: Callable[[World], Send]
) -> None:
    send = make(world)
    before = snapshot(world.engine, without=[request_nonces])
    response = send()
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    if field is not None:
        assert body["error"].get("field") == field, body
    assert body["error"]["message"]
    assert snapshot(world.engine, without=[request_nonces]) == before


# --------------------------------------------------------------------------- another merchant's objects


ACCESSES = [
    ("read a payment", "GET", "/v1/merchant/payments/{pay}", None),
    ("list a payment's refunds", "GET", "/v1/merchant/payments/{pay}/refunds", None),
    ("close a payment", "POST", "/v1/merchant/payments/{pay}/close", {}),
    ("refund a payment", "POST", "/v1/merchant/payments/{pay}/refunds", {"out_refund_no": "X1", "amount": 1}),
    ("read a refund", "GET", "/v1/merchant/refunds/{rfd}", None),
    ("read a payout", "GET", "/v1/merchant/payouts/{po}", None),
]


@pytest.mark.parametrize("method, template, body", [a[1:] for a in ACCESSES], ids=[a[0] for a in ACCESSES])
def test_another_merchants_object_is_answered_exactly_as_a_missing_one(
    world: World, method: str, template: str, body: Any
) -> None:
    def send(pay: str, rfd: str, po: str) -> httpx.Response:
        path = template.format(pay=pay, rfd=rfd, po=po)
        key = {"idempotency_key": f"cross-{next(_keys)}"} if method == "POST" else {}
        return world.shop.client.request(method, path, body=body, **key)

    before = snapshot(world.engine, without=[request_nonces])
    others = send(world.other_paid, world.other_refund, world.other_payout)
    missing = send(MISSING_PAY, MISSING_REFUND, MISSING_PAYOUT)
    assert others.status_code == missing.status_code == 404
    assert others.json()["error"]["code"] == missing.json()["error"]["code"]
    assert others.json()["error"]["field"] == missing.json()["error"]["field"]
    assert snapshot(world.engine, without=[request_nonces]) == before
    # ...while its owner reaches it
    path = template.format(pay=world.other_paid, rfd=world.other_refund, po=world.other_payout)
    if method == "GET":
        assert world.other.client.get(path).status_code == 200


def test_a_merchant_lists_only_its_own_payments(world: World) -> None:
    mine = world.shop.client.get("/v1/merchant/payments", query={"limit": "500"})
    assert mine.status_code == 200, mine.text
    assert {item["id"] for item in mine.json()["items"]} == {world.paid, world.pending}
    theirs = world.other.client.get("/v1/merchant/payments", query={"limit": "500"})
    assert {item["id"] for item in theirs.json()["items"]} == {world.other_paid}
