"""The payments' HTTP routers: the merchant API (signed), operators' views (admin key), and channel callbacks.

- ``router`` for merchants (``/v1/merchant/payments|refunds|payouts``, every
  request and answer signed, ``zhangfang.api.merchant_auth``): create an order
  (201, or 200 when its ``out_trade_no`` replays an earlier creation) and send
  the payer to its ``cashier_url``; read, list and close orders; refund them;
  pay out to bank accounts. Every POST takes an ``Idempotency-Key``. Another
  merchant's object is ``404 payment_not_found`` (or ``refund_``/``payout_``),
  exactly as an id that does not exist.
- ``admin_router`` (``/v1/admin/payments``, ``/v1/admin/channels``, admin key):
  every order with its attempts and refunds, the notifies channels sent, each
  channel's routes and circuit breaker, and putting a channel back in rotation.
- ``channel_router``: where channels send their notifies
  (``POST /v1/channels/{channel}/notify`` and ``…/payout-notify``). Not in the
  OpenAPI document: it speaks each channel's protocol (its signature, its
  acknowledgement), not ours.

Each handler is one unit of work; services never commit. Amounts are integers
of the minor unit (fen for CNY), never JSON floats.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool

from zhangfang.api.deps import get_engine, get_settings, make_admin_router
from zhangfang.api.merchant_auth import (
    IdempotentPost,
    authenticated_merchant,
    idempotent_post,
    make_merchant_router,
    signed_doc,
)
from zhangfang.api.responses import error_doc
from zhangfang.channels import registry as channel_registry
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant
from zhangfang.payments import errors, flows, routing, service
from zhangfang.payments.models import (
    ORDER_STATES,
    OrderRequest,
    Payee,
    PaymentAttempt,
    PaymentOrder,
    PayoutRequest,
    Refund,
    RefundRequest,
)

# --------------------------------------------------------------------------- shapes


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


OrderState = Literal["pending", "succeeded", "refunded", "closed"]
AMOUNT_DESCRIPTION = "integer amount in the currency's minor unit (fen for CNY), greater than zero"


class PaymentIn(_Request):
    out_trade_no: str = Field(
        description="your order number: 1 to 64 of A-Z a-z 0-9 _ - . : — creating again with the same number and "
        "content returns the same payment",
        examples=["20261130-0001"],
    )
    amount: StrictInt = Field(description=AMOUNT_DESCRIPTION, examples=[1999])
    currency: str = Field(default="CNY", description="ISO 4217", examples=["CNY"])
    subject: str = Field(description="what the payer sees, 1 to 256 characters", examples=["西湖龙井 250g"])
    description: str | None = Field(default=None, description="at most 1000 characters")
    user: str | None = Field(default=None, description="usr_… of one of your payers")
    notify_url: str | None = Field(
        default=None, description="where payment.succeeded and payment.closed webhooks go (https)"
    )
    return_url: str | None = Field(
        default=None,
        description="where the payer's browser goes after paying; it carries the payment's id only, never a result",
    )
    expires_at: dt.datetime | None = Field(
        default=None, description="when the payment stops being payable: 1 minute to 7 days ahead (default 30 min)"
    )
    method: str | None = Field(
        default=None, description="offer the payer only this method: alipay, wechatpay or bank_card"
    )
    preferred_channel: str | None = Field(default=None, description="try this channel first when it can take it")
    metadata: dict[str, Any] | None = Field(default=None, description="your own data, at most 4 KiB of JSON")


class PaymentOut(BaseModel):
    """A payment order, exactly as its webhooks carry it."""

    id: str = Field(description="pay_…")
    out_trade_no: str
    state: OrderState = Field(
        description="pending (awaiting the payer), succeeded (paid), refunded (in full), closed (unpaid, by you or "
        "by expiry)"
    )
    amount: int
    currency: str
    subject: str
    description: str | None
    user: str | None
    method: str | None
    channel: str | None = Field(description="the channel that took the money")
    channel_trade_no: str | None
    fee: int | None = Field(description="our fee, minor units; set when paid")
    refunded: int = Field(description="refunded so far")
    refunding: int = Field(description="in refunds not finished yet")
    notify_url: str | None
    return_url: str | None
    metadata: dict[str, Any] | None
    cashier_url: str = Field(description="send the payer here to pay (收银台)")
    close_reason: Literal["merchant", "operator", "expired"] | None
    created_at: dt.datetime
    expires_at: dt.datetime
    paid_at: dt.datetime | None
    closed_at: dt.datetime | None


class PaymentCreatedOut(PaymentOut):
    replayed: bool = Field(description="true when this out_trade_no had created this payment before")


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None = Field(description="pass as cursor for older payments; null on the last page")


class RefundIn(_Request):
    out_refund_no: str = Field(description="your refund number, like out_trade_no; makes the refund idempotent")
    amount: StrictInt = Field(description=AMOUNT_DESCRIPTION)
    reason: str | None = Field(default=None, description="at most 256 characters")
    notify_url: str | None = Field(default=None, description="refund webhooks (default: the payment's notify_url)")


class RefundOut(BaseModel):
    id: str = Field(description="rfd_…")
    out_refund_no: str | None
    payment: str = Field(description="pay_…")
    out_trade_no: str
    state: Literal["processing", "succeeded", "failed"]
    amount: int
    currency: str
    fee_returned: int = Field(description="the part of our fee this refund gives back")
    reason: str | None
    channel: str
    channel_refund_no: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class RefundCreatedOut(RefundOut):
    replayed: bool


class RefundList(BaseModel):
    items: list[RefundOut]


class PayeeIn(_Request):
    account_number: str = Field(description="8 to 32 digits", examples=["6222020200112233445"])
    account_name: str = Field(description="the account holder's name", examples=["张三"])
    bank_code: str | None = Field(default=None, description="the payee's bank; omit for an account at the paying bank")


class PayoutIn(_Request):
    out_payout_no: str = Field(description="your payout number; makes the payout idempotent")
    amount: StrictInt = Field(description=AMOUNT_DESCRIPTION)
    currency: str = Field(default="CNY")
    payee: PayeeIn
    remark: str | None = Field(default=None, description="用途 on the payee's statement, at most 100 characters")
    notify_url: str | None = Field(default=None, description="payout.succeeded and payout.failed webhooks")
    channel: str | None = Field(default=None, description="pay out through this bank")


class PayeeOut(BaseModel):
    account_number_masked: str
    account_name: str
    bank_code: str | None


class PayoutOut(BaseModel):
    id: str = Field(description="po_…")
    out_payout_no: str
    state: Literal["processing", "succeeded", "failed"]
    amount: int
    currency: str
    payee: PayeeOut
    remark: str | None
    channel: str
    channel_payout_no: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class PayoutCreatedOut(PayoutOut):
    replayed: bool


class AttemptOut(BaseModel):
    id: str = Field(description="pat_…, the channel's out_trade_no")
    channel: str
    method: str
    channel_method: str
    state: Literal["opening", "open", "succeeded", "failed", "closed"]
    amount: int
    currency: str
    channel_trade_no: str | None
    duplicate: bool = Field(description="paid on an order already paid or closed: refunded automatically")
    error_code: str | None
    error_message: str | None
    created_at: dt.datetime
    paid_at: dt.datetime | None

    @classmethod
    def of(cls, attempt: PaymentAttempt) -> AttemptOut:
        return cls(
            id=attempt.ref,
            channel=attempt.channel,
            method=attempt.method,
            channel_method=attempt.channel_method,
            state=attempt.state,  # type: ignore[arg-type]
            amount=attempt.amount,
            currency=attempt.currency,
            channel_trade_no=attempt.channel_trade_no,
            duplicate=attempt.duplicate,
            error_code=attempt.error_code,
            error_message=attempt.error_message,
            created_at=attempt.created_at,
            paid_at=attempt.paid_at,
        )


class AdminRefundOut(RefundOut):
    kind: Literal["merchant", "duplicate"]
    attempt: str


class AdminPaymentSummaryOut(PaymentOut):
    merchant_id: str = Field(description="mch_…")

    @classmethod
    def of(cls, order: PaymentOrder, settings: Settings) -> AdminPaymentSummaryOut:
        return cls(**payment_out(order, settings), merchant_id=order.merchant_ref)


class AdminPaymentPage(BaseModel):
    items: list[AdminPaymentSummaryOut]
    next_cursor: str | None = Field(description="pass as cursor for older payments; null on the last page")


class AdminPaymentOut(AdminPaymentSummaryOut):
    fee_rate: str
    attempt: str | None = Field(description="the paying attempt")
    entry: str | None = Field(description="the ledger entry of the payment")
    attempts: list[AttemptOut]
    refunds: list[AdminRefundOut]


class NotifyOut(BaseModel):
    channel: str
    kind: str
    notify_id: str | None
    ref: str | None = Field(
        description="what it is about: our attempt (pat_…, the channel's out_trade_no), refund (rfd_…) or payout (po_…)"
    )
    outcome: str = Field(
        description="applied, already_applied, duplicate, no_change, refused (signature), amount_mismatch, "
        "unknown_attempt, unknown_refund, unknown_payout, already_finished"
    )
    reason: str | None
    received_at: dt.datetime


class RouteOut(BaseModel):
    method: str
    channel_method: str
    currency: str
    amount_min: int
    amount_max: int
    cost_rate: str
    cost_fixed: int
    priority: int


class ChannelOut(BaseModel):
    code: str
    enabled: bool = Field(description="a disabled channel takes no new payments; its old ones are still followed")
    connection: str = Field(description="direct (直连) or indirect (间连)")
    breaker: Literal["closed", "open", "half_open"] = Field(
        description="closed: in rotation; open: cooling down after failures; half_open: the next call is a trial"
    )
    consecutive_failures: int
    open_until: dt.datetime | None
    last_error: str | None
    payouts: bool
    routes: list[RouteOut]


class ChannelList(BaseModel):
    items: list[ChannelOut]


# --------------------------------------------------------------------------- helpers


def get_registry(request: Request) -> ChannelRegistry:
    """The channels this server pays through; ``channels_not_configured`` (503) when it has none."""
    registry = getattr(request.app.state, "registry", None) or channel_registry.installed()
    if registry is None:
        raise errors.ChannelsNotConfigured(
            "this server has no payment channels: set ZHANGFANG_CHANNELS_FILE, or ZHANGFANG_SANDBOX=1 to develop"
        )
    return registry


async def registry_dependency(request: Request) -> ChannelRegistry:
    """``get_registry`` as a dependency (``async``: no threadpool hop for it)."""
    return get_registry(request)


def payment_out(order: PaymentOrder, settings: Settings) -> dict[str, Any]:
    return service.order_view(order, public_base_url=settings.public_base_url)


def _refund_out(refund: Refund, order: PaymentOrder) -> dict[str, Any]:
    return service.refund_view(refund, out_trade_no=order.out_trade_no)


CursorQuery = Query(default=None, description="next_cursor of the previous page")
LimitQuery = Query(default=50, description="1 to 500")
StateQuery = Query(
    default=None, description="pending, succeeded, refunded or closed", json_schema_extra={"enum": list(ORDER_STATES)}
)

# --------------------------------------------------------------------------- merchant API (signed)

payments_router = make_merchant_router(prefix="/v1/merchant", tags=["merchant: payments"])


@payments_router.post(
    "/payments",
    response_model=PaymentCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a payment order; send the payer to its cashier_url",
    responses={
        201: signed_doc(PaymentCreatedOut, "created", replayable=True),
        200: signed_doc(PaymentCreatedOut, "this out_trade_no created this payment before", replayable=True),
        404: error_doc("user_not_found"),
        409: error_doc("idempotency_key_conflict, out_trade_no_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, out_trade_no_invalid, amount_must_be_positive, "
            "amount_too_large, currency_unknown, subject_invalid, description_invalid, payment_url_invalid, "
            "expires_at_invalid, metadata_invalid, currency_not_supported, payment_method_unavailable, "
            "channel_unknown, no_route_for_payment"
        ),
        503: error_doc("channels_not_configured"),
    },
)
def create_payment(
    body: PaymentIn,
    request: Request,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
) -> Response:
    # The busiest endpoint reads the app's engine, settings and channels itself: three dependencies fewer to
    # solve on every order.
    engine: Engine = request.app.state.engine
    settings: Settings = request.app.state.settings
    registry = get_registry(request)
    order_request = OrderRequest(**body.model_dump())

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        result = service.create_order(
            conn, merchant=merchant, request=order_request, registry=registry, settings=settings
        )
        # The view is PaymentCreatedOut's JSON already (tests hold them equal): sent as it is.
        out = {**payment_out(result.order, settings), "replayed": not result.created}
        return (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK), out

    return idempotency.respond(engine, work)


@payments_router.get(
    "/payments",
    response_model=PaymentPage,
    summary="Your payments, newest first; or the one with out_trade_no",
    responses={
        200: signed_doc(PaymentPage, "a page of payments"),
        404: error_doc("payment_not_found"),
        422: error_doc("request_invalid, payment_state_invalid, cursor_invalid, limit_invalid"),
    },
)
def list_payments(
    out_trade_no: str | None = Query(default=None, description="your order number: answers a page of one"),
    state: str | None = StateQuery,
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> PaymentPage:
    def read(conn: Connection) -> PaymentPage:
        if out_trade_no is not None:
            order = service.find_order(conn, merchant_id=merchant.id, out_trade_no=out_trade_no)
            return PaymentPage(items=[PaymentOut(**payment_out(order, settings))], next_cursor=None)
        page = service.list_orders(conn, merchant_id=merchant.id, state=state, cursor=cursor, limit=limit)
        return PaymentPage(
            items=[PaymentOut(**payment_out(o, settings)) for o in page.items], next_cursor=page.next_cursor
        )

    return run_in_transaction(engine, read, readonly=True)


@payments_router.get(
    "/payments/{payment_id}",
    response_model=PaymentOut,
    summary="One of your payments (query it when a webhook is late)",
    responses={200: signed_doc(PaymentOut, "the payment"), 404: error_doc("payment_not_found")},
)
def get_payment(
    payment_id: str,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> PaymentOut:
    order = run_in_transaction(
        engine, lambda conn: service.get_order(conn, ref=payment_id, merchant_id=merchant.id), readonly=True
    )
    return PaymentOut(**payment_out(order, settings))


@payments_router.post(
    "/payments/{payment_id}/close",
    response_model=PaymentOut,
    summary="Close an unpaid payment so it can no longer be paid (closing a closed one changes nothing)",
    responses={
        200: signed_doc(PaymentOut, "the closed payment", replayable=True),
        404: error_doc("payment_not_found"),
        409: error_doc("idempotency_key_conflict"),
        422: error_doc("request_invalid, idempotency_key_invalid, payment_already_paid"),
    },
)
def close_payment(
    payment_id: str,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> Response:
    def work(conn: Connection) -> tuple[int, BaseModel]:
        order = service.close_order(conn, ref=payment_id, merchant_id=merchant.id, settings=settings)
        return status.HTTP_200_OK, PaymentOut(**payment_out(order, settings))

    return idempotency.respond(engine, work)


@payments_router.post(
    "/payments/{payment_id}/refunds",
    response_model=RefundCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Refund all or part of a paid payment; the result comes by webhook (or query the refund)",
    responses={
        201: signed_doc(RefundCreatedOut, "accepted: processing", replayable=True),
        200: signed_doc(RefundCreatedOut, "this out_refund_no requested this refund before", replayable=True),
        404: error_doc("payment_not_found"),
        409: error_doc("idempotency_key_conflict, out_refund_no_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, out_refund_no_invalid, amount_must_be_positive, "
            "amount_too_large, refund_reason_invalid, payment_url_invalid, payment_not_refundable, "
            "refund_exceeds_paid, merchant_balance_insufficient"
        ),
    },
)
def create_refund(
    payment_id: str,
    body: RefundIn,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
) -> Response:
    request = RefundRequest(**body.model_dump())

    def work(conn: Connection) -> tuple[int, BaseModel]:
        result = service.create_refund(conn, merchant=merchant, order_ref=payment_id, request=request)
        order = service.get_order(conn, ref=payment_id)
        out = RefundCreatedOut(**_refund_out(result.refund, order), replayed=not result.created)
        return (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK), out

    return idempotency.respond(engine, work)


@payments_router.get(
    "/payments/{payment_id}/refunds",
    response_model=RefundList,
    summary="A payment's refunds, oldest first",
    responses={200: signed_doc(RefundList, "the refunds"), 404: error_doc("payment_not_found")},
)
def list_refunds(
    payment_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> RefundList:
    def read(conn: Connection) -> RefundList:
        order = service.get_order(conn, ref=payment_id, merchant_id=merchant.id)
        return RefundList(items=[RefundOut(**_refund_out(r, order)) for r in service.list_refunds(conn, order=order)])

    return run_in_transaction(engine, read, readonly=True)


@payments_router.get(
    "/refunds/{refund_id}",
    response_model=RefundOut,
    summary="One of your refunds",
    responses={200: signed_doc(RefundOut, "the refund"), 404: error_doc("refund_not_found")},
)
def get_refund(
    refund_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> RefundOut:
    def read(conn: Connection) -> RefundOut:
        refund = service.get_refund(conn, ref=refund_id, merchant_id=merchant.id)
        return RefundOut(**_refund_out(refund, service.get_order(conn, ref=refund.order_ref)))

    return run_in_transaction(engine, read, readonly=True)


@payments_router.post(
    "/payouts",
    response_model=PayoutCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Pay from your balance to a bank account (代付); the result comes by webhook (or query the payout)",
    responses={
        201: signed_doc(PayoutCreatedOut, "accepted: processing", replayable=True),
        200: signed_doc(PayoutCreatedOut, "this out_payout_no requested this payout before", replayable=True),
        409: error_doc("idempotency_key_conflict, out_payout_no_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, out_payout_no_invalid, amount_must_be_positive, "
            "amount_too_large, currency_unknown, payee_invalid, payout_remark_invalid, payment_url_invalid, "
            "channel_unknown, payout_channel_unavailable, merchant_balance_insufficient"
        ),
        503: error_doc("channels_not_configured"),
    },
)
def create_payout(
    body: PayoutIn,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
    registry: ChannelRegistry = Depends(registry_dependency),
) -> Response:
    fields = body.model_dump(exclude={"payee"})
    request = PayoutRequest(**fields, payee=Payee(**body.payee.model_dump()))

    def work(conn: Connection) -> tuple[int, BaseModel]:
        result = service.create_payout(conn, merchant=merchant, request=request, registry=registry)
        out = PayoutCreatedOut(**service.payout_view(result.payout), replayed=not result.created)
        return (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK), out

    return idempotency.respond(engine, work)


@payments_router.get(
    "/payouts/{payout_id}",
    response_model=PayoutOut,
    summary="One of your payouts",
    responses={200: signed_doc(PayoutOut, "the payout"), 404: error_doc("payout_not_found")},
)
def get_payout(
    payout_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> PayoutOut:
    payout = run_in_transaction(
        engine, lambda conn: service.get_payout(conn, ref=payout_id, merchant_id=merchant.id), readonly=True
    )
    return PayoutOut(**service.payout_view(payout))


# --------------------------------------------------------------------------- admin

admin_router = make_admin_router(prefix="/v1/admin", tags=["admin: payments"])


def admin_payment_out(conn: Connection, order: PaymentOrder, settings: Settings) -> AdminPaymentOut:
    """An order with everything operators look at: its attempts, its refunds (duplicates too), its entry."""
    attempts = service.list_attempts(conn, order=order)
    refunds = service.list_refunds(conn, order=order, merchant_only=False)
    return AdminPaymentOut(
        **payment_out(order, settings),
        merchant_id=order.merchant_ref,
        fee_rate=str(order.fee_rate),
        attempt=order.attempt_ref,
        entry=order.entry_ref,
        attempts=[AttemptOut.of(a) for a in attempts],
        refunds=[AdminRefundOut(**_refund_out(r, order), kind=r.kind, attempt=r.attempt_ref) for r in refunds],
    )


@admin_router.get(
    "/payments",
    response_model=AdminPaymentPage,
    summary="Payments of every merchant (or one), newest first",
    responses={
        404: error_doc("merchant_not_found"),
        422: error_doc("request_invalid, payment_state_invalid, cursor_invalid, limit_invalid"),
    },
)
def admin_list_payments(
    merchant_id: str | None = Query(default=None, description="mch_…"),
    state: str | None = StateQuery,
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> AdminPaymentPage:
    def read(conn: Connection) -> AdminPaymentPage:
        internal = parties.get_merchant(conn, ref=merchant_id).id if merchant_id is not None else None
        page = service.list_orders(conn, merchant_id=internal, state=state, cursor=cursor, limit=limit)
        return AdminPaymentPage(
            items=[AdminPaymentSummaryOut.of(o, settings) for o in page.items], next_cursor=page.next_cursor
        )

    return run_in_transaction(engine, read, readonly=True)


@admin_router.get(
    "/payments/{payment_id}",
    response_model=AdminPaymentOut,
    summary="A payment with its attempts at channels and all its refunds",
    responses={404: error_doc("payment_not_found")},
)
def admin_get_payment(
    payment_id: str, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> AdminPaymentOut:
    return run_in_transaction(
        engine,
        lambda conn: admin_payment_out(conn, service.get_order(conn, ref=payment_id), settings),
        readonly=True,
    )


@admin_router.get(
    "/channel-notifies",
    response_model=list[NotifyOut],
    summary="The latest notifies channels sent, newest first, with what became of each (refused ones too)",
    responses={422: error_doc("request_invalid, limit_invalid")},
)
def admin_list_notifies(
    ref: str | None = Query(default=None, description="only those about this attempt, refund or payout"),
    limit: int = Query(default=100, description="1 to 500"),
    engine: Engine = Depends(get_engine),
) -> list[NotifyOut]:
    rows = run_in_transaction(engine, lambda conn: service.list_notifies(conn, ref=ref, limit=limit), readonly=True)
    return [NotifyOut(**row) for row in rows]


def channels_out(conn: Connection, registry: ChannelRegistry, settings: Settings) -> ChannelList:
    """Each configured channel with its routes and its breaker, as operators see them."""
    healths = routing.health(conn)
    now = dt.datetime.now(dt.UTC)
    items = []
    for code in registry.codes():
        entry = healths.get(code)
        routes = [r for r in registry.routes() if r.channel == code]
        items.append(
            ChannelOut(
                code=code,
                enabled=registry.is_enabled(code),
                connection=registry.adapter(code).connection,
                breaker=entry.state(now, settings.channel_failure_threshold) if entry else "closed",
                consecutive_failures=entry.consecutive_failures if entry else 0,
                open_until=entry.open_until if entry else None,
                last_error=entry.last_error if entry else None,
                payouts=code in registry.payout_channels(),
                routes=[
                    RouteOut(
                        method=r.method,
                        channel_method=r.channel_method,
                        currency=r.currency,
                        amount_min=r.amount_min_minor,
                        amount_max=r.amount_max_minor,
                        cost_rate=str(r.cost_rate),
                        cost_fixed=r.cost_fixed_minor,
                        priority=r.priority,
                    )
                    for r in routes
                ],
            )
        )
    return ChannelList(items=items)


@admin_router.get(
    "/channels",
    response_model=ChannelList,
    summary="The configured channels, their routes and their circuit breakers",
    responses={503: error_doc("channels_not_configured")},
)
def admin_list_channels(
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
    registry: ChannelRegistry = Depends(registry_dependency),
) -> ChannelList:
    return run_in_transaction(engine, lambda conn: channels_out(conn, registry, settings), readonly=True)


@admin_router.post(
    "/channels/{channel}/reset",
    response_model=ChannelList,
    summary="Put a channel back in rotation now (close its breaker)",
    responses={404: error_doc("channel_not_configured"), 503: error_doc("channels_not_configured")},
)
def admin_reset_channel(
    channel: str,
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
    registry: ChannelRegistry = Depends(registry_dependency),
) -> ChannelList:
    if channel not in registry.codes():
        raise errors.ChannelNotConfigured(f"no channel is called {channel!r}", field="channel")

    def reset(conn: Connection) -> ChannelList:
        routing.reset(conn, channel=channel, now=dt.datetime.now(dt.UTC))
        return channels_out(conn, registry, settings)

    return run_in_transaction(engine, reset)


# --------------------------------------------------------------------------- channel callbacks


channel_router = APIRouter(prefix="/v1/channels", include_in_schema=False)


def _ack(ack: Any) -> Response:
    return Response(content=ack.body, status_code=ack.status_code, headers=dict(ack.headers))


def _slug_registry(request: Request, slug: str) -> ChannelRegistry:
    registry = get_registry(request)
    try:
        registry.code_for_slug(slug)
    except LookupError:
        raise errors.ChannelNotConfigured(f"no channel answers at {slug!r}", field="channel") from None
    return registry


@channel_router.post("/{channel}/notify")
async def channel_notify(channel: str, request: Request) -> Response:
    """A channel's payment or refund notify: verified, applied, and answered the way that channel expects."""
    registry = _slug_registry(request, channel)
    body = await request.body()
    ack = await run_in_threadpool(
        flows.handle_notify,
        request.app.state.engine,
        slug=channel,
        headers=dict(request.headers),
        body=body,
        registry=registry,
        settings=request.app.state.settings,
    )
    return _ack(ack)


@channel_router.post("/{channel}/payout-notify")
async def channel_payout_notify(channel: str, request: Request) -> Response:
    """A bank's payout notify."""
    registry = _slug_registry(request, channel)
    body = await request.body()
    ack = await run_in_threadpool(
        flows.handle_payout_notify,
        request.app.state.engine,
        slug=channel,
        headers=dict(request.headers),
        body=body,
        registry=registry,
    )
    return _ack(ack)


# --------------------------------------------------------------------------- what the app includes

router = APIRouter()
router.include_router(payments_router)
router.include_router(channel_router)
