"""The cashier (收银台): where a merchant sends its payer to pay an order.

- ``GET /cashier/{payment}``: the order (merchant, subject, amount, expiry) and
  the ways to pay it now — the payer methods whose channels are in rotation.
- ``POST /cashier/{payment}/pay`` (form ``method=…``): opens an attempt at the
  best channel for that method (``payments.flows.open_attempt``) and sends the
  payer on: a redirect to the channel's page, or a QR code to scan.
- ``GET /cashier/{payment}/return``: where channels send the browser back (the
  synchronous return). It shows what *we* know — the result comes only from
  the channel's notify or our query — and refreshes itself while the payment is
  pending. The link back to the merchant's ``return_url`` carries the payment's
  id and ``out_trade_no`` only, never a result: the merchant asks us.
- ``GET /cashier/{payment}/status``: the state as JSON, for the pages' polling.

The pages are not part of the OpenAPI document: they are for people. An
unknown payment is a 404 page; refusals show their stable code in the page
(``data-error``) so tests and support can read them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from zhangfang import money
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.parties import service as parties
from zhangfang.payments import flows, service
from zhangfang.payments.api import get_registry
from zhangfang.payments.models import METHOD_LABELS, PaymentOrder

router = APIRouter(prefix="/cashier", include_in_schema=False)

templates = Environment(
    loader=PackageLoader("zhangfang.web", "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
)

STATE_TEXT = {
    "pending": "等待支付结果 Waiting for the payment's confirmation",
    "succeeded": "支付成功 Paid",
    "refunded": "已退款 Refunded",
    "closed": "订单已关闭 This order is closed",
}
PENDING_REFRESH_SECONDS = 2


def _page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(labels=METHOD_LABELS, **context), status_code=status_code)


def _message(title: str, error: ZhangfangError, status_code: int) -> HTMLResponse:
    return _page("message.html", status_code, title=title, code=error.code, message=error.message)


def _amount_text(order: PaymentOrder) -> str:
    return money.format_money(order.amount, order.currency, "zh_CN")


def _merchant_name(conn: Connection, order: PaymentOrder) -> str:
    merchant = parties.find_merchant_by_id(conn, merchant_id=order.merchant_id)
    return merchant.name if merchant is not None else order.merchant_ref


def _local_time(moment: dt.datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def back_url(order: PaymentOrder) -> str | None:
    """The merchant's ``return_url`` with the payment's references added, and nothing that looks like a result."""
    if order.return_url is None:
        return None
    parts = urlsplit(order.return_url)
    query = [
        *parse_qsl(parts.query, keep_blank_values=True),
        ("payment_id", order.ref),
        ("out_trade_no", order.out_trade_no),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


@router.get("/{payment_id}")
async def cashier(payment_id: str, request: Request) -> Response:
    """The order and the methods the payer may choose."""
    return await run_in_threadpool(_cashier, request, payment_id, None)


def _cashier(request: Request, payment_id: str, error: ZhangfangError | None) -> Response:
    engine = request.app.state.engine
    settings = request.app.state.settings
    now = dt.datetime.now(dt.UTC)
    try:
        registry = get_registry(request)

        def read(conn: Connection) -> dict[str, Any]:
            order = service.get_order(conn, ref=payment_id)
            methods = []
            if service.is_payable(order, now):
                methods = flows.cashier_methods(conn, order=order, registry=registry, settings=settings, now=now)
            return {"order": order, "methods": methods, "merchant_name": _merchant_name(conn, order)}

        found = run_in_transaction(engine, read, readonly=True)
    except ZhangfangError as failure:
        return _message("收银台 Cashier", failure, 404 if failure.kind == "not_found" else 503)
    order: PaymentOrder = found["order"]
    if not service.is_payable(order, now):
        return _result(order, found["merchant_name"])
    return _page(
        "cashier.html",
        200 if error is None else 422,
        order=order,
        methods=found["methods"],
        merchant_name=found["merchant_name"],
        amount_text=_amount_text(order),
        expires_text=_local_time(order.expires_at, settings.timezone),
        error=error.message if error else None,
        error_code=error.code if error else None,
    )


def _result(order: PaymentOrder, merchant_name: str) -> HTMLResponse:
    state_text = STATE_TEXT[order.state]
    if order.state == "pending":
        state_text = "订单已过期 This order has expired"
    return _page(
        "result.html",
        order=order,
        merchant_name=merchant_name,
        amount_text=_amount_text(order),
        state_text=state_text,
        back_url=back_url(order),
    )


@router.post("/{payment_id}/pay")
async def pay(payment_id: str, request: Request) -> Response:
    """The payer chose a method: open a trade at a channel and send the payer there."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    method = form.get("method", "")
    return await run_in_threadpool(_pay, request, payment_id, method)


def _pay(request: Request, payment_id: str, method: str) -> Response:
    engine = request.app.state.engine
    try:
        attempt = flows.open_attempt(
            engine,
            order_ref=payment_id,
            method=method,
            registry=get_registry(request),
            settings=request.app.state.settings,
        )
    except ZhangfangError as error:
        if error.kind == "not_found":
            return _message("收银台 Cashier", error, 404)
        return _cashier(request, payment_id, error)
    if attempt.action_kind == "redirect" and attempt.action_url:
        return RedirectResponse(attempt.action_url, status_code=303)
    order = run_in_transaction(engine, lambda conn: service.get_order(conn, ref=payment_id), readonly=True)
    sandbox = getattr(request.app.state, "sandbox", None)
    phone_url = None
    if sandbox is not None and attempt.action_qr_code:
        phone_url = sandbox.phone_url(attempt.channel, attempt.action_qr_code)
    return _page(
        "qr.html",
        order=order,
        attempt=attempt,
        amount_text=_amount_text(order),
        phone_url=phone_url,
        refresh_seconds=PENDING_REFRESH_SECONDS * 2,
    )


@router.get("/{payment_id}/return")
async def payment_return(payment_id: str, request: Request) -> Response:
    """Where channels send the browser back: what we know now, never a result taken from the browser."""

    def read() -> Response:
        try:

            def load(conn: Connection) -> tuple[PaymentOrder, str]:
                order = service.get_order(conn, ref=payment_id)
                return order, _merchant_name(conn, order)

            order, merchant_name = run_in_transaction(request.app.state.engine, load, readonly=True)
        except ZhangfangError as error:
            return _message("收银台 Cashier", error, 404)
        page = _result(order, merchant_name)
        if order.state == "pending" and service.is_payable(order, dt.datetime.now(dt.UTC)):
            page = _page(
                "result.html",
                order=order,
                merchant_name=merchant_name,
                amount_text=_amount_text(order),
                state_text=STATE_TEXT["pending"],
                back_url=back_url(order),
                refresh_seconds=PENDING_REFRESH_SECONDS,
            )
        return page

    return await run_in_threadpool(read)


@router.get("/{payment_id}/status")
async def payment_status(payment_id: str, request: Request) -> Response:
    """The payment's state, for the cashier's own polling: ``{"id", "state"}``."""

    def read() -> Response:
        try:
            order = run_in_transaction(
                request.app.state.engine, lambda conn: service.get_order(conn, ref=payment_id), readonly=True
            )
        except ZhangfangError as error:
            return JSONResponse({"error": error.to_dict()}, status_code=404)
        return JSONResponse({"id": order.ref, "state": order.state})

    return await run_in_threadpool(read)
