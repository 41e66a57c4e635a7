"""The payments service on SQLite and PostgreSQL, without HTTP: orders, payments, refunds, payouts, closing.

Channels are fakes that are never called (the service never calls a channel;
``flows`` does): a registry of an "alipay" and a bank, built from ``Route``s.
Every refusal is checked twice: its stable code, and that the database holds
exactly the rows it held before.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from tests.snapshots import snapshot

from zhangfang.api import merchant_auth
from zhangfang.channels.registry import ChannelRegistry, Route
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.jobs.tables import jobs
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import Balance
from zhangfang.ledger.tables import accounts
from zhangfang.notify.tables import webhook_events
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant, MerchantRequest, SettlementAccount
from zhangfang.payments import flows, postings, service  # noqa: F401  (flows registers the job handlers)
from zhangfang.payments.api import PaymentCreatedOut
from zhangfang.payments.models import (
    ATTEMPT_STATES,
    ATTEMPT_TRANSITIONS,
    ORDER_STATES,
    ORDER_TRANSITIONS,
    PAYOUT_TRANSITIONS,
    REFUND_STATES,
    REFUND_TRANSITIONS,
    OrderRequest,
    Payee,
    PaymentOrder,
    PayoutRequest,
    RefundRequest,
    can_move,
)
from zhangfang.payments.tables import payment_attempts, payment_orders, refunds

SETTINGS = Settings(public_base_url="https://pay.example.com")
NOTIFY_URL = "https://shop.example.com/notify"
ALIPAY_MAX = 100_000_000  # 1,000,000.00 yuan
BANK_MAX = 5_000_000
NO_ROUTE_AMOUNT = 200_000_000  # above every route, below service.AMOUNT_MAX_MINOR


class FakeChannel:
    """Enough of a channel adapter for the registry; the service never calls a channel."""

    connection = "indirect"

    def __init__(self, code: str, methods: set[str], currencies: set[str]) -> None:
        self.code = code
        self.methods = frozenset(methods)
        self.currencies = frozenset(currencies)


class FakeBank(FakeChannel):
    connection = "direct"

    def create_payout(self, request: Any) -> Any:  # present so the registry lets it pay out
        raise AssertionError("the service never calls a channel")


ALIPAY_ROUTE = Route(
    channel="alipay",
    method="alipay",
    channel_method="page",
    currency="CNY",
    amount_min_minor=1,
    amount_max_minor=ALIPAY_MAX,
    cost_rate=Decimal("0.0038"),
    cost_fixed_minor=0,
    priority=100,
)
BANK_ROUTE = Route(
    channel="bank_direct:icbc",
    method="bank_card",
    channel_method="bank_card",
    currency="CNY",
    amount_min_minor=1,
    amount_max_minor=BANK_MAX,
    cost_rate=Decimal("0.0020"),
    cost_fixed_minor=0,
    priority=100,
)


def make_registry() -> ChannelRegistry:
    return ChannelRegistry(
        {
            "alipay": FakeChannel("alipay", {"page"}, {"CNY"}),
            "bank_direct:icbc": FakeBank("bank_direct:icbc", {"bank_card"}, {"CNY"}),
        },
        [ALIPAY_ROUTE, BANK_ROUTE],
        payout_channels=["bank_direct:icbc"],
    )


REGISTRY = make_registry()


# --------------------------------------------------------------------------- helpers


def tx(engine: Engine, work: Callable[[Connection], Any]) -> Any:
    return run_in_transaction(engine, work)


def refused(engine: Engine, work: Callable[[Connection], Any]) -> ZhangfangError:
    """Runs ``work``, which must raise; checks that nothing changed; returns the error."""
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as caught:
        tx(engine, work)
    assert snapshot(engine) == before, f"{caught.value.code} changed the database"
    return caught.value


def refusal_code(engine: Engine, work: Callable[[Connection], Any]) -> str:
    """The code ``work`` is refused with (``"accepted"`` if it is not), after checking it changed nothing."""
    before = snapshot(engine)
    try:
        tx(engine, work)
    except ZhangfangError as error:
        assert snapshot(engine) == before, f"{error.code} changed the database"
        return error.code
    return "accepted"


def new_merchant(engine: Engine, key: str = "shop", fee_rate: str = "0.006") -> Merchant:
    request = MerchantRequest(
        key=key,
        name=f"商户 {key}",
        mcc="5812",
        fee_rate=fee_rate,
        settlement_account=SettlementAccount("招商银行上海分行", "6214830212345678", "示例商户"),
        sign_type="HMAC-SHA256",
    )
    return tx(engine, lambda conn: parties.create_merchant(conn, request=request)).merchant


def order_request(out_trade_no: str = "T1", amount: int = 10_000, **changes: Any) -> OrderRequest:
    return OrderRequest(
        out_trade_no=out_trade_no,
        amount=amount,
        currency="CNY",
        subject="西湖龙井 250g",
        notify_url=NOTIFY_URL,
        **changes,
    )


def create(engine: Engine, merchant: Merchant, request: OrderRequest) -> Any:
    return tx(
        engine,
        lambda conn: service.create_order(
            conn, merchant=merchant, request=request, registry=REGISTRY, settings=SETTINGS
        ),
    )


def new_order(engine: Engine, merchant: Merchant, out_trade_no: str = "T1", amount: int = 10_000) -> PaymentOrder:
    return create(engine, merchant, order_request(out_trade_no, amount)).order


def start(engine: Engine, order: PaymentOrder, route: Route = ALIPAY_ROUTE) -> str:
    return tx(engine, lambda conn: service.start_attempt(conn, order_ref=order.ref, route=route)).ref


def apply(engine: Engine, attempt_ref: str, amount: int | None, currency: str | None = "CNY") -> str:
    return tx(
        engine,
        lambda conn: service.apply_payment_success(
            conn,
            attempt_ref=attempt_ref,
            amount=amount,
            currency=currency,
            channel_trade_no=f"CH{attempt_ref[-8:]}",
            paid_at=None,
            settings=SETTINGS,
        ),
    )


def paid_order(engine: Engine, merchant: Merchant, out_trade_no: str = "T1", amount: int = 10_000) -> PaymentOrder:
    order = new_order(engine, merchant, out_trade_no, amount)
    assert apply(engine, start(engine, order), amount) == "applied"
    return get_order(engine, order.ref)


def get_order(engine: Engine, ref: str) -> PaymentOrder:
    return tx(engine, lambda conn: service.get_order(conn, ref=ref))


def refund(engine: Engine, merchant: Merchant, order: PaymentOrder, number: str, amount: int, **extra: Any) -> Any:
    request = RefundRequest(out_refund_no=number, amount=amount, **extra)
    return tx(engine, lambda conn: service.create_refund(conn, merchant=merchant, order_ref=order.ref, request=request))


def complete(engine: Engine, refund_ref: str) -> str:
    return tx(
        engine,
        lambda conn: service.complete_refund(
            conn, ref=refund_ref, channel_refund_no=f"R{refund_ref[-8:]}", refunded_at=None, settings=SETTINGS
        ),
    )


def fail(engine: Engine, refund_ref: str) -> str:
    return tx(
        engine,
        lambda conn: service.fail_refund(conn, ref=refund_ref, code="REFUND_REFUSED", message="no", settings=SETTINGS),
    )


PAYEE = Payee(account_number="6222020200112233445", account_name="张三", bank_code="ICBC")


def payout_request(number: str = "P1", amount: int = 1_000, **changes: Any) -> PayoutRequest:
    return PayoutRequest(out_payout_no=number, amount=amount, currency="CNY", payee=PAYEE, **changes)


def payout(engine: Engine, merchant: Merchant, request: PayoutRequest) -> Any:
    return tx(engine, lambda conn: service.create_payout(conn, merchant=merchant, request=request, registry=REGISTRY))


def finish_payout(engine: Engine, ref: str, *, succeeded: bool) -> str:
    return tx(
        engine,
        lambda conn: service.finish_payout(
            conn, ref=ref, succeeded=succeeded, channel_payout_no="B1", code=None if succeeded else "ACCOUNT_CLOSED"
        ),
    )


def balance(engine: Engine, key: str) -> Balance:
    """The balance of the ledger account with this key (all zero when it is not opened yet)."""

    def read(conn: Connection) -> Balance:
        ref = conn.execute(sa.select(accounts.c.ref).where(accounts.c.key == key)).scalar()
        if ref is None:
            return Balance("CNY", "credit", 0, 0, 0, 0)
        return ledger.get_account(conn, ref=ref).balance

    return run_in_transaction(engine, read, readonly=True)


def merchant_key(merchant: Merchant) -> str:
    return postings.merchant_pending_request(merchant.ref, "CNY").key


CLEARING = "channel:alipay:clearing"
FEE_INCOME = "platform:fee_income"
DUPLICATES = "platform:duplicate_payments"


def rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def job_payloads(engine: Engine, kind: str) -> list[dict[str, Any]]:
    return [row.payload for row in rows(engine, sa.select(jobs.c.payload).where(jobs.c.kind == kind))]


def webhook_types(engine: Engine) -> list[str]:
    return sorted(row.event_type for row in rows(engine, sa.select(webhook_events.c.event_type)))


# --------------------------------------------------------------------------- state machines (no database)


def test_every_arrow_of_the_documented_state_machines_is_allowed_and_nothing_else() -> None:
    # Written out from the models' docstring, independently of the tables the code uses.
    expected = {
        "order": (
            ORDER_STATES,
            ORDER_TRANSITIONS,
            {("pending", "succeeded"), ("pending", "closed"), ("succeeded", "refunded")},
        ),
        "attempt": (
            ATTEMPT_STATES,
            ATTEMPT_TRANSITIONS,
            {
                ("opening", "open"),
                ("opening", "failed"),
                ("open", "closed"),
                ("open", "failed"),
                *((state, "succeeded") for state in ("opening", "open", "failed", "closed")),
                ("opening", "closed"),  # an unanswered opening attempt is closed at its channel, to be sure
                ("failed", "closed"),
            },
        ),
        "refund": (REFUND_STATES, REFUND_TRANSITIONS, {("processing", "succeeded"), ("processing", "failed")}),
        "payout": (REFUND_STATES, PAYOUT_TRANSITIONS, {("processing", "succeeded"), ("processing", "failed")}),
    }
    for name, (states, transitions, arrows) in expected.items():
        assert set(transitions) == set(states), name
        for current, target in itertools.product(states, states):
            assert can_move(transitions, current, target) == ((current, target) in arrows), (name, current, target)
        assert not can_move(transitions, "no_such_state", states[0])


def test_final_states_have_no_way_out() -> None:
    for transitions, final in (
        (ORDER_TRANSITIONS, ("refunded", "closed")),
        (ATTEMPT_TRANSITIONS, ("succeeded",)),
        (REFUND_TRANSITIONS, ("succeeded", "failed")),
    ):
        for state in final:
            assert transitions[state] == frozenset()


# --------------------------------------------------------------------------- creating orders


def test_an_order_is_created_pending_and_handed_to_an_expiry_job_once_it_expires(engine: Engine) -> None:
    shop = new_merchant(engine)
    result = create(engine, shop, order_request("T1", 1999, metadata={"cart": [1, 2]}))
    order = result.order
    assert result.created
    assert order.ref.startswith("pay_") and order.state == "pending"
    assert (order.amount, order.currency, order.fee_rate, order.fee) == (1999, "CNY", Decimal("0.006"), None)
    assert (order.refunded, order.refunding, order.refundable) == (0, 0, 0)
    assert order.metadata == {"cart": [1, 2]}
    expiry = (order.expires_at - order.created_at).total_seconds()
    assert expiry == SETTINGS.payment_expiry_seconds
    # No job yet: the workers' sweep hands the order to one once it has expired, and only once.
    due = order.expires_at
    assert tx(engine, lambda conn: service.enqueue_due_expiries(conn, now=due - dt.timedelta(seconds=1))) == 0
    assert job_payloads(engine, service.JOB_EXPIRE) == []
    assert tx(engine, lambda conn: service.enqueue_due_expiries(conn, now=due)) == 1
    assert tx(engine, lambda conn: service.enqueue_due_expiries(conn, now=due + dt.timedelta(hours=1))) == 0
    assert job_payloads(engine, service.JOB_EXPIRE) == [{"order": order.ref}]


def test_the_same_out_trade_no_and_content_returns_the_first_order_and_other_content_is_a_conflict(
    engine: Engine,
) -> None:
    shop = new_merchant(engine)
    first = create(engine, shop, order_request("T1", 1999))
    before = snapshot(engine)
    again = create(engine, shop, order_request("T1", 1999))
    assert (again.created, again.order) == (False, first.order)
    assert snapshot(engine) == before
    for other in (
        order_request("T1", 2000),
        order_request("T1", 1999, description="another"),
        replace(order_request("T1", 1999), notify_url=None),
        order_request("T1", 1999, method="alipay"),
    ):
        error = refused(
            engine,
            lambda conn, other=other: service.create_order(
                conn, merchant=shop, request=other, registry=REGISTRY, settings=SETTINGS
            ),
        )
        assert error.code == "out_trade_no_conflict" and error.field == "out_trade_no"
        assert error.details["payment"] == first.order.ref


def test_two_merchants_may_use_the_same_out_trade_no(engine: Engine) -> None:
    a, b = new_merchant(engine, "a"), new_merchant(engine, "b")
    first, second = create(engine, a, order_request("T1")), create(engine, b, order_request("T1", 5))
    assert first.created and second.created and first.order.ref != second.order.ref


def test_concurrent_creations_with_one_out_trade_no_make_one_order(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writers with BEGIN IMMEDIATE; the race is PostgreSQL's")
    shop = new_merchant(engine)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list[Any] = []
    failures: list[BaseException] = []

    def create_one() -> None:
        try:
            barrier.wait()
            results.append(create(engine, shop, order_request("RACE", 777)))
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=create_one) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(result.created for result in results) == [False] * (threads_count - 1) + [True]
    assert len({result.order.ref for result in results}) == 1
    assert len(rows(engine, sa.select(payment_orders.c.id))) == 1


NOW = dt.datetime.now(dt.UTC)  # only for building expiries in the case table (each is far from a boundary)


def order_refusals() -> list[tuple[str, dict[str, Any]]]:
    """Requests breaking one rule each, in the catalogue's order: (code, changes to a good request)."""
    return [
        ("out_trade_no_invalid", {"out_trade_no": ""}),
        ("out_trade_no_invalid", {"out_trade_no": "has space"}),
        ("out_trade_no_invalid", {"out_trade_no": "x" * 65}),
        ("out_trade_no_invalid", {"out_trade_no": "订单1"}),
        ("out_trade_no_invalid", {"out_trade_no": None}),
        ("amount_must_be_integer", {"amount": 19.99}),
        ("amount_must_be_integer", {"amount": 20.0}),
        ("amount_must_be_integer", {"amount": "1999"}),
        ("amount_must_be_integer", {"amount": Decimal("19.99")}),
        ("amount_must_be_integer", {"amount": True}),
        ("amount_must_be_positive", {"amount": 0}),
        ("amount_must_be_positive", {"amount": -1}),
        ("amount_too_large", {"amount": service.AMOUNT_MAX_MINOR + 1}),
        ("currency_unknown", {"currency": "XYZ"}),
        ("currency_unknown", {"currency": "cny"}),
        ("currency_unknown", {"currency": ""}),
        ("subject_invalid", {"subject": ""}),
        ("subject_invalid", {"subject": "   "}),
        ("subject_invalid", {"subject": "x" * 257}),
        ("subject_invalid", {"subject": "line\nbreak"}),
        ("subject_invalid", {"subject": None}),
        ("description_invalid", {"description": "x" * 1001}),
        ("description_invalid", {"description": ""}),
        ("payment_url_invalid", {"notify_url": "http://shop.example.com/notify"}),
        ("payment_url_invalid", {"notify_url": "ftp://shop.example.com/notify"}),
        ("payment_url_invalid", {"notify_url": "/notify"}),
        ("payment_url_invalid", {"return_url": "javascript:alert(1)"}),
        ("payment_url_invalid", {"return_url": "shop.example.com/return"}),
        ("expires_at_invalid", {"expires_at": NOW - dt.timedelta(minutes=5)}),
        ("expires_at_invalid", {"expires_at": NOW + dt.timedelta(seconds=30)}),
        ("expires_at_invalid", {"expires_at": NOW + dt.timedelta(days=8)}),
        ("expires_at_invalid", {"expires_at": (NOW + dt.timedelta(hours=1)).replace(tzinfo=None)}),
        ("expires_at_invalid", {"expires_at": "2030-01-01T00:00:00Z"}),
        ("metadata_invalid", {"metadata": ["a", "list"]}),
        ("metadata_invalid", {"metadata": {1: "key not text"}}),
        ("metadata_invalid", {"metadata": {"big": "x" * 5000}}),
        ("metadata_invalid", {"metadata": {"not_json": float("nan")}}),
        ("metadata_invalid", {"metadata": {"not_json": float("inf")}}),
        ("metadata_invalid", {"metadata": {"not_json": object()}}),
        ("currency_not_supported", {"currency": "USD"}),
        ("payment_method_unavailable", {"method": "wechatpay"}),
        ("payment_method_unavailable", {"method": "bank_card", "amount": BANK_MAX + 1}),
        ("channel_unknown", {"preferred_channel": "nope"}),
        ("no_route_for_payment", {"amount": NO_ROUTE_AMOUNT}),
        ("user_not_found", {"user": "usr_01J0000000000000000000000"}),
        ("user_not_found", {"user": "not-an-id"}),
    ]


# Each request breaks two rules; the first named wins (errors.py's order), whatever the database holds.
ORDER_PRECEDENCE = [
    ("out_trade_no_invalid", {"out_trade_no": "", "amount": 0}),
    ("amount_must_be_integer", {"amount": -1.5}),
    ("amount_must_be_positive", {"amount": 0, "currency": "XYZ"}),
    ("amount_too_large", {"amount": service.AMOUNT_MAX_MINOR + 1, "currency": "XYZ"}),
    ("currency_unknown", {"currency": "XYZ", "subject": ""}),
    ("subject_invalid", {"subject": "", "description": "x" * 1001}),
    ("description_invalid", {"description": "x" * 1001, "notify_url": "http://shop.example.com/"}),
    ("payment_url_invalid", {"notify_url": "http://shop.example.com/", "expires_at": NOW - dt.timedelta(hours=1)}),
    ("expires_at_invalid", {"expires_at": NOW - dt.timedelta(hours=1), "metadata": ["x"]}),
    ("metadata_invalid", {"metadata": ["x"], "currency": "USD"}),
    ("currency_not_supported", {"currency": "USD", "method": "wechatpay"}),
    ("payment_method_unavailable", {"method": "wechatpay", "preferred_channel": "nope"}),
    ("channel_unknown", {"preferred_channel": "nope", "amount": NO_ROUTE_AMOUNT}),
    ("no_route_for_payment", {"amount": NO_ROUTE_AMOUNT, "user": "usr_01J0000000000000000000000"}),
    # "EXISTING" was created with other content: the missing user is reported, not the conflict,
    ("user_not_found", {"out_trade_no": "EXISTING", "user": "usr_01J0000000000000000000000"}),
    # and a stateless rule beats the conflict too.
    ("amount_must_be_positive", {"out_trade_no": "EXISTING", "amount": 0}),
    ("channel_unknown", {"out_trade_no": "EXISTING", "preferred_channel": "nope"}),
]


@pytest.mark.parametrize("table", ["each rule", "precedence"])
def test_every_order_refusal_has_its_code_in_precedence_order_and_writes_nothing(engine: Engine, table: str) -> None:
    shop = new_merchant(engine)
    other = new_merchant(engine, "other")
    others_user, _ = tx(engine, lambda conn: parties.create_user(conn, merchant_id=other.id, external_ref="u1"))
    create(engine, shop, order_request("EXISTING", 12_345))
    cases = order_refusals() if table == "each rule" else ORDER_PRECEDENCE
    cases = [*cases, ("user_not_found", {"user": others_user.ref})] if table == "each rule" else cases
    wrong = []
    for code, changes in cases:
        request = replace(order_request("NEW", 10_000), **changes)
        got = refusal_code(
            engine,
            lambda conn, request=request: service.create_order(
                conn, merchant=shop, request=request, registry=REGISTRY, settings=SETTINGS
            ),
        )
        if got != code:
            wrong.append((changes, code, got))
    assert wrong == [], "(changes, expected, got)"


def test_an_order_for_one_of_the_merchants_payers_keeps_the_user(engine: Engine) -> None:
    shop = new_merchant(engine)
    user, _ = tx(engine, lambda conn: parties.create_user(conn, merchant_id=shop.id, external_ref="u1"))
    order = create(engine, shop, order_request("T1", user=user.ref)).order
    assert order.user_ref == user.ref


# --------------------------------------------------------------------------- attempts and payment


def test_an_attempt_opens_fails_and_closes_along_its_machine(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = new_order(engine, shop)
    ref = start(engine, order)
    attempt = tx(engine, lambda conn: service.get_attempt(conn, ref=ref))
    assert (attempt.state, attempt.order_ref, attempt.amount, attempt.channel) == (
        "opening",
        order.ref,
        10_000,
        "alipay",
    )
    opened = tx(
        engine,
        lambda conn: service.mark_attempt_open(
            conn,
            ref=ref,
            action_kind="redirect",
            action_url="https://alipay.example/pay",
            action_qr_code=None,
            channel_trade_no=None,
            poll_schedule_seconds=(15, 30),
        ),
    )
    assert opened.state == "open" and opened.action_url == "https://alipay.example/pay"
    assert job_payloads(engine, service.JOB_POLL) == [{"attempt": ref, "round": 1}]
    tx(engine, lambda conn: service.mark_attempt_failed(conn, ref=ref, code="E", message="refused", close_later=True))
    failed = tx(engine, lambda conn: service.get_attempt(conn, ref=ref))
    assert (failed.state, failed.error_code) == ("failed", "E")
    assert job_payloads(engine, service.JOB_CLOSE_ATTEMPT) == [{"attempt": ref}]
    assert tx(engine, lambda conn: service.mark_attempt_closed(conn, ref=ref)) is True
    assert tx(engine, lambda conn: service.mark_attempt_closed(conn, ref=ref)) is False
    assert tx(engine, lambda conn: service.get_attempt(conn, ref=ref)).state == "closed"
    assert get_order(engine, order.ref).state == "pending"


def test_a_payment_is_applied_once_and_booked_with_its_fee(engine: Engine) -> None:
    shop = new_merchant(engine, fee_rate="0.006")
    order = new_order(engine, shop, amount=12_345)
    attempt_ref = start(engine, order)
    assert apply(engine, attempt_ref, 12_345) == "applied"
    paid = get_order(engine, order.ref)
    fee = 74  # 12345 × 0.006 = 74.07
    assert (paid.state, paid.fee, paid.channel, paid.attempt_ref) == ("succeeded", fee, "alipay", attempt_ref)
    assert paid.paid_at is not None and paid.entry_ref is not None and paid.refundable == 12_345
    assert tx(engine, lambda conn: service.get_attempt(conn, ref=attempt_ref)).state == "succeeded"

    entry = tx(engine, lambda conn: ledger.get_entry(conn, ref=paid.entry_ref))
    assert entry.business_code == postings.CODE_PAYMENT and entry.idempotency_key == f"payment:{attempt_ref}"
    keys = {}
    for posting in entry.postings:
        keys[posting.account] = tx(engine, lambda conn, p=posting: ledger.get_account(conn, ref=p.account)).key
    legs = sorted((keys[p.account], p.side, p.amount) for p in entry.postings)
    assert legs == sorted(
        [(CLEARING, "debit", 12_345), (merchant_key(shop), "credit", 12_345 - fee), (FEE_INCOME, "credit", fee)]
    )
    assert all(p.effect == "posted" and p.currency == "CNY" for p in entry.postings)
    debits = sum(p.amount for p in entry.postings if p.side == "debit")
    assert debits == sum(p.amount for p in entry.postings if p.side == "credit")
    assert balance(engine, merchant_key(shop)).posted == 12_345 - fee
    assert balance(engine, FEE_INCOME).posted == fee
    assert balance(engine, CLEARING).posted == 12_345
    assert webhook_types(engine) == ["payment.succeeded"]

    before = snapshot(engine)
    assert apply(engine, attempt_ref, 12_345) == "already_applied"
    assert snapshot(engine) == before


def test_a_zero_fee_books_two_legs(engine: Engine) -> None:
    shop = new_merchant(engine, fee_rate="0.006")
    order = paid_order(engine, shop, amount=83)  # 83 × 0.006 = 0.498: rounds to 0
    assert order.fee == 0
    entry = tx(engine, lambda conn: ledger.get_entry(conn, ref=order.entry_ref))
    assert sorted((p.side, p.amount) for p in entry.postings) == [("credit", 83), ("debit", 83)]


@pytest.mark.parametrize(
    "amount, currency", [(10_001, "CNY"), (9_999, "CNY"), (None, "CNY"), (10_000, "USD"), (10_000, None)]
)
def test_a_payment_whose_amount_or_currency_differs_changes_nothing(
    engine: Engine, amount: int | None, currency: str | None
) -> None:
    shop = new_merchant(engine)
    order = new_order(engine, shop)
    attempt_ref = start(engine, order)
    before = snapshot(engine)
    assert apply(engine, attempt_ref, amount, currency) == "amount_mismatch"
    assert snapshot(engine) == before
    assert apply(engine, attempt_ref, 10_000) == "applied"


def test_a_payment_of_an_unknown_attempt_changes_nothing(engine: Engine) -> None:
    new_merchant(engine)
    before = snapshot(engine)
    assert apply(engine, "pat_01J0000000000000000000000", 100) == "unknown_attempt"
    assert snapshot(engine) == before


def test_a_payment_on_a_closed_order_is_a_duplicate_refunded_automatically(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = new_order(engine, shop)
    attempt_ref = start(engine, order)
    tx(engine, lambda conn: service.close_order(conn, ref=order.ref, merchant_id=shop.id, settings=SETTINGS))
    assert apply(engine, attempt_ref, 10_000) == "duplicate"

    closed = get_order(engine, order.ref)
    assert (closed.state, closed.fee, closed.attempt_ref, closed.refunded) == ("closed", None, None, 0)
    attempt = tx(engine, lambda conn: service.get_attempt(conn, ref=attempt_ref))
    assert (attempt.state, attempt.duplicate) == ("succeeded", True)
    duplicates = tx(engine, lambda conn: service.list_refunds(conn, order=closed, merchant_only=False))
    assert [(r.kind, r.state, r.amount, r.attempt_ref, r.channel) for r in duplicates] == [
        ("duplicate", "processing", 10_000, attempt_ref, "alipay")
    ]
    assert tx(engine, lambda conn: service.list_refunds(conn, order=closed)) == []  # not the merchant's
    assert job_payloads(engine, service.JOB_REFUND) == [{"refund": duplicates[0].ref}]
    assert balance(engine, DUPLICATES).posted == 10_000 and balance(engine, CLEARING).posted == 10_000
    assert balance(engine, merchant_key(shop)).posted == 0 and balance(engine, FEE_INCOME).posted == 0
    assert "payment.succeeded" not in webhook_types(engine)

    before = snapshot(engine)
    assert apply(engine, attempt_ref, 10_000) == "already_applied"
    assert snapshot(engine) == before

    assert complete(engine, duplicates[0].ref) == "applied"
    assert balance(engine, DUPLICATES).posted == 0 and balance(engine, CLEARING).posted == 0
    done = tx(engine, lambda conn: service.get_refund(conn, ref=duplicates[0].ref))
    assert done.state == "succeeded" and done.entry_ref is not None


def test_a_second_attempt_paying_a_paid_order_is_a_duplicate(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = new_order(engine, shop)
    first, second = start(engine, order), start(engine, order, BANK_ROUTE)
    assert apply(engine, first, 10_000) == "applied"
    assert job_payloads(engine, service.JOB_CLOSE_ATTEMPT) == [{"attempt": second}]  # the other one is closed
    assert apply(engine, second, 10_000) == "duplicate"
    paid = get_order(engine, order.ref)
    assert (paid.state, paid.attempt_ref, paid.channel) == ("succeeded", first, "alipay")
    assert balance(engine, merchant_key(shop)).posted == 10_000 - 60
    assert balance(engine, "channel:bank_direct:icbc:clearing").posted == 10_000
    assert balance(engine, DUPLICATES).posted == 10_000
    kinds = [r.kind for r in tx(engine, lambda conn: service.list_refunds(conn, order=paid, merchant_only=False))]
    assert kinds == ["duplicate"]


def test_an_attempt_cannot_start_on_a_closed_or_paid_order(engine: Engine) -> None:
    shop = new_merchant(engine)
    paid = paid_order(engine, shop, "PAID")
    closed = new_order(engine, shop, "CLOSED")
    tx(engine, lambda conn: service.close_order(conn, ref=closed.ref, settings=SETTINGS))
    for order in (paid, closed):
        error = refused(engine, lambda conn, o=order: service.start_attempt(conn, order_ref=o.ref, route=ALIPAY_ROUTE))
        assert error.code == "payment_not_payable"


# --------------------------------------------------------------------------- closing


def test_closing_a_pending_order_closes_it_and_its_live_attempts_and_again_changes_nothing(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = new_order(engine, shop)
    attempt_ref = start(engine, order)
    closed = tx(engine, lambda conn: service.close_order(conn, ref=order.ref, merchant_id=shop.id, settings=SETTINGS))
    assert (closed.state, closed.close_reason) == ("closed", "merchant") and closed.closed_at is not None
    assert job_payloads(engine, service.JOB_CLOSE_ATTEMPT) == [{"attempt": attempt_ref}]
    assert webhook_types(engine) == ["payment.closed"]
    before = snapshot(engine)
    again = tx(engine, lambda conn: service.close_order(conn, ref=order.ref, merchant_id=shop.id, settings=SETTINGS))
    assert again == closed
    assert snapshot(engine) == before


def test_a_paid_or_refunded_order_cannot_be_closed_and_another_merchants_is_not_found(engine: Engine) -> None:
    shop, other = new_merchant(engine), new_merchant(engine, "other")
    paid = paid_order(engine, shop, "PAID")
    refunded = paid_order(engine, shop, "REFUNDED", 500)
    complete(engine, refund(engine, shop, refunded, "R1", 500).refund.ref)
    assert get_order(engine, refunded.ref).state == "refunded"
    for order in (paid, refunded):
        error = refused(engine, lambda conn, o=order: service.close_order(conn, ref=o.ref, merchant_id=shop.id))
        assert error.code == "payment_already_paid"
    pending = new_order(engine, shop, "PENDING")
    for ref in (pending.ref, "pay_01J0000000000000000000000", "nonsense"):
        error = refused(engine, lambda conn, r=ref: service.close_order(conn, ref=r, merchant_id=other.id))
        assert error.code == "payment_not_found"
    assert get_order(engine, pending.ref).state == "pending"


# --------------------------------------------------------------------------- refunds


def test_an_order_refunded_in_parts_returns_the_fee_in_proportion_and_ends_refunded(engine: Engine) -> None:
    shop = new_merchant(engine, fee_rate="0.006")
    paid_order(engine, shop, "CUSHION", amount=1_000)  # fee 6: the merchant has 994 besides (refund_hold_for)
    order = paid_order(engine, shop, amount=10_000)  # fee 60; the merchant has 9,940 from it
    merchant = merchant_key(shop)

    first = refund(engine, shop, order, "R1", 3_000, reason="退一半不到").refund
    assert (first.state, first.amount, first.kind, first.fee_returned) == ("processing", 3_000, "merchant", 0)
    assert job_payloads(engine, service.JOB_REFUND) == [{"refund": first.ref}]
    # reserved, not moved: what the merchant will give back, the refund less its share of the fee (18)
    assert balance(engine, merchant).available == (994 + 9_940) - (3_000 - 18)
    assert balance(engine, merchant).posted == (994 + 9_940)
    in_flight = get_order(engine, order.ref)
    assert (in_flight.refunding, in_flight.refunded, in_flight.refundable) == (3_000, 0, 7_000)

    assert complete(engine, first.ref) == "applied"
    assert tx(engine, lambda conn: service.get_refund(conn, ref=first.ref)).fee_returned == 18
    after_first = get_order(engine, order.ref)
    assert (after_first.state, after_first.refunding, after_first.refunded) == ("succeeded", 0, 3_000)
    assert balance(engine, merchant).posted == (994 + 9_940) - (3_000 - 18)
    assert balance(engine, merchant).available == (994 + 9_940) - (3_000 - 18)
    assert balance(engine, FEE_INCOME).posted == 6 + 60 - 18

    second = refund(engine, shop, order, "R2", 6_999).refund
    third = refund(engine, shop, order, "R3", 1).refund
    assert get_order(engine, order.ref).refundable == 0
    assert complete(engine, third.ref) == "applied"  # out of order
    assert complete(engine, second.ref) == "applied"
    returned = [tx(engine, lambda conn, r=r: service.get_refund(conn, ref=r.ref)).fee_returned for r in (second, third)]
    assert 18 + sum(returned) == 60

    done = get_order(engine, order.ref)
    assert (done.state, done.refunded, done.refunding, done.refundable) == ("refunded", 10_000, 0, 0)
    assert balance(engine, merchant).posted == 994 and balance(engine, merchant).available == 994
    assert balance(engine, FEE_INCOME).posted == 6
    assert balance(engine, CLEARING).posted == 1_000
    assert webhook_types(engine).count("refund.succeeded") == 3

    error = refused(
        engine,
        lambda conn: service.create_refund(
            conn, merchant=shop, order_ref=order.ref, request=RefundRequest(out_refund_no="R4", amount=1)
        ),
    )
    assert error.code == "refund_exceeds_paid"


def test_a_merchant_with_one_paid_order_can_refund_it_in_full(engine: Engine) -> None:
    shop = new_merchant(engine, fee_rate="0.006")
    order = paid_order(engine, shop, amount=10_000)  # the merchant was credited 9,940
    created = refund(engine, shop, order, "R1", 10_000).refund
    assert complete(engine, created.ref) == "applied"
    assert get_order(engine, order.ref).state == "refunded"
    assert tx(engine, lambda conn: service.get_refund(conn, ref=created.ref)).fee_returned == 60
    assert balance(engine, merchant_key(shop)).posted == 0
    assert balance(engine, FEE_INCOME).posted == 0 and balance(engine, CLEARING).posted == 0


# (fee rate, amount, refunds all requested before any finishes, the order they finish in)
REFUNDS_IN_FLIGHT = [
    ("0.006", 10_000, [3_000, 7_000], [0, 1]),
    ("0.006", 10_000, [3_000, 7_000], [1, 0]),
    ("0.1", 10, [5, 5], [0, 1]),  # fee 1: the first five takes it (0.5 rounds up)
    ("0.1", 10, [5, 5], [1, 0]),
    ("0.1", 15, [5, 5, 5], [2, 0, 1]),  # fee 2 (1.5)
    ("0.006", 250, [125, 125], [1, 0]),  # fee 2 (1.5)
    ("0.1", 30, [1, 1, 28], [2, 1, 0]),  # fee 3
]


@pytest.mark.parametrize("rate, amount, parts, order_of_finishing", REFUNDS_IN_FLIGHT)
def test_refunds_in_flight_finishing_in_any_order_give_back_exactly_what_was_paid(
    engine: Engine, rate: str, amount: int, parts: list[int], order_of_finishing: list[int]
) -> None:
    shop = new_merchant(engine, fee_rate=rate)
    cushion = paid_order(engine, shop, "CUSHION", amount=1_000)  # holds may reserve a fen more than is finally owed
    order = paid_order(engine, shop, amount=amount)
    assert order.fee == postings.fee_for(amount, Decimal(rate))
    made = [refund(engine, shop, order, f"R{i}", part).refund for i, part in enumerate(parts)]
    for index in order_of_finishing:
        assert complete(engine, made[index].ref) == "applied"
    returned = [tx(engine, lambda conn, r=r: service.get_refund(conn, ref=r.ref)).fee_returned for r in made]
    assert all(0 <= back <= part for back, part in zip(returned, parts, strict=True)), returned
    assert sum(returned) == order.fee, returned
    assert get_order(engine, order.ref).state == "refunded"
    merchant = balance(engine, merchant_key(shop))
    assert cushion.fee is not None
    assert (merchant.posted, merchant.available) == (1_000 - cushion.fee, 1_000 - cushion.fee)
    assert balance(engine, FEE_INCOME).posted == cushion.fee  # the platform neither keeps nor gives away a fen
    assert balance(engine, CLEARING).posted == 1_000


def test_refunds_in_flight_at_once_may_need_a_fen_more_than_the_merchant_finally_gives_back(engine: Engine) -> None:
    shop = new_merchant(engine, fee_rate="0.1")
    order = paid_order(engine, shop, amount=10)  # fee 1: the merchant has 9
    first = refund(engine, shop, order, "R1", 5).refund  # reserves 5: its part of the fee may be 0 or 1
    before = snapshot(engine)
    error = refused(
        engine,
        lambda conn: service.create_refund(
            conn, merchant=shop, order_ref=order.ref, request=RefundRequest(out_refund_no="R2", amount=5)
        ),
    )
    assert error.code == "merchant_balance_insufficient"
    assert snapshot(engine) == before
    assert complete(engine, first.ref) == "applied"  # it returned the fee: the merchant gave back 4
    second = refund(engine, shop, order, "R2", 5).refund
    assert complete(engine, second.ref) == "applied"
    assert get_order(engine, order.ref).state == "refunded"
    assert balance(engine, merchant_key(shop)).posted == 0 and balance(engine, FEE_INCOME).posted == 0


# (fee rate, amount, steps): ("ask", name, amount), ("fail", name) or ("finish", name); every fen ends refunded
REFUNDS_WITH_A_FAILURE = [
    ("0.006", 10_000, [("ask", "A", 3_000), ("ask", "B", 7_000), ("fail", "A"), ("finish", "B"), ("ask", "C", 3_000)]),
    # fee 1 on 10: whichever refund takes it, it goes back once, whatever failed before
    ("0.1", 10, [("ask", "A", 5), ("ask", "B", 5), ("fail", "A"), ("finish", "B"), ("ask", "C", 5)]),
    ("0.1", 10, [("ask", "A", 4), ("ask", "B", 1), ("fail", "A"), ("ask", "C", 4), ("finish", "B"), ("ask", "D", 5)]),
]


@pytest.mark.parametrize("rate, amount, steps", REFUNDS_WITH_A_FAILURE)
def test_a_refund_failing_while_others_are_in_flight_still_gives_back_exactly_what_was_paid(
    engine: Engine, rate: str, amount: int, steps: list[tuple[Any, ...]]
) -> None:
    shop = new_merchant(engine, fee_rate=rate)
    cushion = paid_order(engine, shop, "CUSHION", amount=1_000)  # holds may reserve a fen more than is finally owed
    order = paid_order(engine, shop, amount=amount)
    made: dict[str, Any] = {}
    for step in steps:
        if step[0] == "ask":
            made[step[1]] = refund(engine, shop, order, step[1], step[2]).refund
        elif step[0] == "fail":
            assert fail(engine, made[step[1]].ref) == "applied"
        else:
            assert complete(engine, made[step[1]].ref) == "applied"
    for name, made_refund in made.items():  # what is still in flight finishes now
        if tx(engine, lambda conn, r=made_refund: service.get_refund(conn, ref=r.ref)).state == "processing":
            assert complete(engine, made_refund.ref) == "applied", name
    final = [tx(engine, lambda conn, r=r: service.get_refund(conn, ref=r.ref)) for r in made.values()]
    assert sum(r.fee_returned for r in final if r.state == "succeeded") == order.fee
    assert get_order(engine, order.ref).state == "refunded"
    merchant = balance(engine, merchant_key(shop))
    assert cushion.fee is not None
    assert (merchant.posted, merchant.available) == (1_000 - cushion.fee, 1_000 - cushion.fee)
    assert balance(engine, FEE_INCOME).posted == cushion.fee
    assert balance(engine, CLEARING).posted == 1_000


def test_a_failed_refund_releases_the_funds_and_leaves_the_order_paid(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = paid_order(engine, shop)
    created = refund(engine, shop, order, "R1", 4_000).refund
    assert fail(engine, created.ref) == "applied"
    failed = tx(engine, lambda conn: service.get_refund(conn, ref=created.ref, merchant_id=shop.id))
    assert (failed.state, failed.failure_code, failed.entry_ref) == ("failed", "REFUND_REFUSED", None)
    assert failed.finished_at is not None
    after = get_order(engine, order.ref)
    assert (after.state, after.refunding, after.refunded, after.refundable) == ("succeeded", 0, 0, 10_000)
    assert balance(engine, merchant_key(shop)).available == 9_940
    assert "refund.failed" in webhook_types(engine)
    before = snapshot(engine)
    assert fail(engine, created.ref) == "already_finished"
    assert complete(engine, created.ref) == "already_finished"
    assert complete(engine, "rfd_01J0000000000000000000000") == "unknown_refund"
    assert snapshot(engine) == before


def test_a_refund_replays_on_its_number_and_other_content_is_a_conflict(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = paid_order(engine, shop)
    first = refund(engine, shop, order, "R1", 1_000, reason="坏了")
    before = snapshot(engine)
    again = refund(engine, shop, order, "R1", 1_000, reason="坏了")
    assert (again.created, again.refund) == (False, first.refund)
    assert snapshot(engine) == before
    other_order = paid_order(engine, shop, "T2")
    for target, request in (
        (order, RefundRequest(out_refund_no="R1", amount=1_001, reason="坏了")),
        (order, RefundRequest(out_refund_no="R1", amount=1_000, reason="换了")),
        (other_order, RefundRequest(out_refund_no="R1", amount=1_000, reason="坏了")),
        # the conflict is reported before the amount is judged
        (order, RefundRequest(out_refund_no="R1", amount=9_001)),
    ):
        error = refused(
            engine,
            lambda conn, t=target, r=request: service.create_refund(conn, merchant=shop, order_ref=t.ref, request=r),
        )
        assert error.code == "out_refund_no_conflict"
        assert error.details["refund"] == first.refund.ref


def test_every_refund_refusal_has_its_code_and_writes_nothing(engine: Engine) -> None:
    shop, other = new_merchant(engine), new_merchant(engine, "other")
    paid = paid_order(engine, shop, "PAID", 10_000)
    pending = new_order(engine, shop, "PENDING")
    closed = new_order(engine, shop, "CLOSED")
    tx(engine, lambda conn: service.close_order(conn, ref=closed.ref, settings=SETTINGS))
    others = paid_order(engine, other, "OTHER")
    refund(engine, shop, paid, "IN-FLIGHT", 2_500)

    cases = [
        ("out_refund_no_invalid", paid, {"out_refund_no": "bad number"}),
        ("out_refund_no_invalid", paid, {"out_refund_no": ""}),
        ("amount_must_be_integer", paid, {"amount": 10.5}),
        ("amount_must_be_positive", paid, {"amount": 0}),
        ("amount_must_be_positive", paid, {"amount": -100}),
        ("amount_too_large", paid, {"amount": service.AMOUNT_MAX_MINOR + 1}),
        ("refund_reason_invalid", paid, {"reason": "x" * 257}),
        ("refund_reason_invalid", paid, {"reason": ""}),
        ("payment_url_invalid", paid, {"notify_url": "http://shop.example.com/refunds"}),
        ("payment_not_found", others, {}),
        ("payment_not_refundable", pending, {}),
        ("payment_not_refundable", closed, {}),
        ("refund_exceeds_paid", paid, {"amount": 7_501}),  # 10,000 paid, 2,500 being refunded
        # precedence
        ("out_refund_no_invalid", others, {"out_refund_no": "bad number", "amount": 0}),
        ("amount_must_be_positive", others, {"amount": 0, "reason": ""}),
        ("refund_reason_invalid", others, {"reason": "", "notify_url": "ftp://x"}),
        ("payment_url_invalid", others, {"notify_url": "ftp://x"}),
        ("payment_not_found", others, {"out_refund_no": "IN-FLIGHT", "amount": 99_999}),
        ("payment_not_refundable", pending, {"amount": 99_999}),
    ]
    wrong = []
    for code, order, changes in cases:
        request = replace(RefundRequest(out_refund_no="NEW", amount=100), **changes)
        got = refusal_code(
            engine,
            lambda conn, o=order, r=request: service.create_refund(conn, merchant=shop, order_ref=o.ref, request=r),
        )
        if got != code:
            wrong.append((changes, code, got))
    assert wrong == [], "(changes, expected, got)"
    # exactly what is left can be refunded
    assert refund(engine, shop, paid, "REST", 7_500).created


def test_a_refund_cannot_take_funds_a_payout_holds(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = paid_order(engine, shop)  # the merchant has 9,940
    held = payout(engine, shop, payout_request("P1", 9_940)).payout
    assert balance(engine, merchant_key(shop)).available == 0
    error = refused(
        engine,
        lambda conn: service.create_refund(
            conn, merchant=shop, order_ref=order.ref, request=RefundRequest(out_refund_no="R1", amount=1)
        ),
    )
    assert (error.code, error.field) == ("merchant_balance_insufficient", "amount")
    assert finish_payout(engine, held.ref, succeeded=False) == "applied"
    assert refund(engine, shop, order, "R1", 1).created


# --------------------------------------------------------------------------- payouts


def test_a_payout_holds_the_funds_then_posts_them_on_success(engine: Engine) -> None:
    shop = new_merchant(engine)
    paid_order(engine, shop)  # 9,940
    merchant = merchant_key(shop)
    result = payout(engine, shop, payout_request("P1", 4_000, remark="工资", notify_url=NOTIFY_URL))
    made = result.payout
    assert result.created and made.ref.startswith("po_")
    assert (made.state, made.channel, made.amount, made.payee_account_number) == (
        "processing",
        "bank_direct:icbc",
        4_000,
        PAYEE.account_number,
    )
    assert job_payloads(engine, service.JOB_PAYOUT) == [{"payout": made.ref}]
    assert (balance(engine, merchant).posted, balance(engine, merchant).available) == (9_940, 5_940)

    before = snapshot(engine)
    again = payout(engine, shop, payout_request("P1", 4_000, remark="工资", notify_url=NOTIFY_URL))
    assert (again.created, again.payout) == (False, made)
    assert snapshot(engine) == before
    conflict = refused(
        engine,
        lambda conn: service.create_payout(
            conn, merchant=shop, request=payout_request("P1", 4_001, remark="工资"), registry=REGISTRY
        ),
    )
    assert conflict.code == "out_payout_no_conflict"

    assert finish_payout(engine, made.ref, succeeded=True) == "applied"
    done = tx(engine, lambda conn: service.get_payout(conn, ref=made.ref, merchant_id=shop.id))
    assert (done.state, done.channel_payout_no) == ("succeeded", "B1") and done.entry_ref is not None
    assert (balance(engine, merchant).posted, balance(engine, merchant).available) == (5_940, 5_940)
    assert balance(engine, "channel:bank_direct:icbc:clearing").posted == -4_000
    assert "payout.succeeded" in webhook_types(engine)
    before = snapshot(engine)
    assert finish_payout(engine, made.ref, succeeded=False) == "already_finished"
    assert snapshot(engine) == before


def test_a_failed_payout_releases_the_funds(engine: Engine) -> None:
    shop = new_merchant(engine)
    paid_order(engine, shop)
    made = payout(engine, shop, payout_request("P1", 9_940, notify_url=NOTIFY_URL)).payout
    assert finish_payout(engine, made.ref, succeeded=False) == "applied"
    done = tx(engine, lambda conn: service.get_payout(conn, ref=made.ref))
    assert (done.state, done.failure_code, done.entry_ref) == ("failed", "ACCOUNT_CLOSED", None)
    assert balance(engine, merchant_key(shop)).available == 9_940
    assert "payout.failed" in webhook_types(engine)
    assert tx(engine, lambda conn: service.finish_payout(conn, ref="po_x", succeeded=True, channel_payout_no=None)) == (
        "unknown_payout"
    )


def test_every_payout_refusal_has_its_code_and_writes_nothing(engine: Engine) -> None:
    shop, other = new_merchant(engine), new_merchant(engine, "other")
    paid_order(engine, shop)  # 9,940
    paid_order(engine, other, "T-OTHER", 50_000)
    payout(engine, shop, payout_request("P1", 1_000))
    cases = [
        ("out_payout_no_invalid", {"out_payout_no": "no spaces"}),
        ("amount_must_be_integer", {"amount": "100"}),
        ("amount_must_be_positive", {"amount": 0}),
        ("amount_too_large", {"amount": service.AMOUNT_MAX_MINOR + 1}),
        ("currency_unknown", {"currency": "XYZ"}),
        ("payee_invalid", {"payee": replace(PAYEE, account_number="12ab")}),
        ("payee_invalid", {"payee": replace(PAYEE, account_name="")}),
        ("payee_invalid", {"payee": replace(PAYEE, bank_code="工行")}),
        ("payout_remark_invalid", {"remark": "x" * 101}),
        ("payment_url_invalid", {"notify_url": "http://shop.example.com/payouts"}),
        ("channel_unknown", {"channel": "nope"}),
        ("payout_channel_unavailable", {"channel": "alipay"}),
        ("payout_channel_unavailable", {"currency": "USD"}),
        ("out_payout_no_conflict", {"out_payout_no": "P1", "amount": 1_001}),
        ("merchant_balance_insufficient", {"amount": 8_941}),  # 9,940 - 1,000 held
        # precedence
        ("amount_must_be_positive", {"amount": 0, "currency": "XYZ"}),
        ("payee_invalid", {"payee": replace(PAYEE, account_number="1"), "remark": "x" * 101}),
        ("channel_unknown", {"channel": "nope", "currency": "USD"}),
        ("out_payout_no_conflict", {"out_payout_no": "P1", "amount": 99_999}),
    ]
    wrong = []
    for code, changes in cases:
        request = replace(payout_request("NEW", 100), **changes)
        got = refusal_code(
            engine,
            lambda conn, r=request: service.create_payout(conn, merchant=shop, request=r, registry=REGISTRY),
        )
        if got != code:
            wrong.append((changes, code, got))
    assert wrong == [], "(changes, expected, got)"
    assert payout(engine, shop, payout_request("REST", 8_940)).created


def test_a_merchant_reads_only_its_own_orders_refunds_and_payouts(engine: Engine) -> None:
    shop, other = new_merchant(engine), new_merchant(engine, "other")
    order = paid_order(engine, shop)
    made_refund = refund(engine, shop, order, "R1", 100).refund
    made_payout = payout(engine, shop, payout_request("P1", 100)).payout
    for read, code in (
        (lambda conn: service.get_order(conn, ref=order.ref, merchant_id=other.id), "payment_not_found"),
        (lambda conn: service.get_refund(conn, ref=made_refund.ref, merchant_id=other.id), "refund_not_found"),
        (lambda conn: service.get_payout(conn, ref=made_payout.ref, merchant_id=other.id), "payout_not_found"),
        (lambda conn: service.find_order(conn, merchant_id=other.id, out_trade_no="T1"), "payment_not_found"),
    ):
        assert refused(engine, read).code == code
    assert tx(engine, lambda conn: service.get_order(conn, ref=order.ref, merchant_id=shop.id)).ref == order.ref
    page = tx(engine, lambda conn: service.list_orders(conn, merchant_id=other.id))
    assert page.items == []


def test_the_database_refuses_refunding_more_than_was_paid(engine: Engine) -> None:
    shop = new_merchant(engine)
    order = paid_order(engine, shop)

    def overdraw(conn: Connection) -> None:
        conn.execute(payment_orders.update().where(payment_orders.c.id == order.id).values(refunding=10_001))

    with pytest.raises(sa.exc.IntegrityError):
        tx(engine, overdraw)
    assert rows(engine, sa.select(refunds.c.id)) == []
    assert rows(engine, sa.select(payment_attempts.c.state)) == [("succeeded",)]


# --------------------------------------------------------------------------- views


def test_a_created_order_is_answered_with_json_its_documented_model_would_produce(engine: Engine) -> None:
    """The create endpoint sends the order's view as it is (no pydantic round trip): it must be the model's JSON."""
    shop = new_merchant(engine)
    order = create(engine, shop, order_request("T1", 1999, metadata={"cart": [1, 2]}, description="两包")).order
    paid = paid_order(engine, shop, "T2", 5000)
    for view in (service.order_view(o, public_base_url="https://pay.example") for o in (order, paid)):
        answer = {**view, "replayed": False}
        assert PaymentCreatedOut.model_validate(answer).model_dump(mode="json") == answer
        assert merchant_auth._render(answer) == merchant_auth._render(PaymentCreatedOut.model_validate(answer))
