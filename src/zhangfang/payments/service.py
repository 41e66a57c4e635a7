"""Payments (收单): orders, their attempts at channels, refunds and payouts — every decision and every write.

Every function that takes a ``Connection`` expects it inside a transaction and
never commits: the caller owns the unit of work. Nothing here talks to a
channel: ``flows`` calls the channels, outside any transaction, and records
what they said through these functions. Side effects (channel calls to make,
webhooks to send) leave through the job queue in the same transaction as the
state change that causes them (DESIGN.md, principle 4).

Guarantees
- Creating an order is idempotent on the merchant's ``out_trade_no``: the same
  content returns the first order (``created=False``), other content is
  ``out_trade_no_conflict``. Refunds and payouts likewise on ``out_refund_no``
  and ``out_payout_no``. A refused request writes nothing.
- State only moves along the machines in ``models``; a transition is made
  under the row's lock (the order's first, then the attempt's or refund's, in
  that order everywhere, so two paths never deadlock).
- Each attempt is booked in the ledger at most once (its entry key is
  ``payment:<pat_…>``): a duplicated or late notify, a query racing a notify,
  a job run twice — none can post a payment twice. A verified payment is always
  booked: on a pending order it pays the order; on an order already paid by
  another attempt, or closed, it is a duplicate payment, booked to
  ``platform:duplicate_payments`` and refunded to the payer automatically.
- A refund never takes more than was paid: the order's ``refunded +
  refunding`` never exceeds its amount (checked under the order's lock, and by
  a database constraint). The merchant's funds for a refund or a payout are
  reserved by a ledger hold when it is requested, so a merchant can never be
  refunded into the negative.
- The amount a channel reports for a payment must equal the attempt's amount,
  in the same currency; otherwise nothing changes (``apply_payment_success``
  answers ``amount_mismatch``).
- Webhooks: the order's ``notify_url`` hears ``payment.succeeded`` and
  ``payment.closed``; a refund's (or else its order's) hears
  ``refund.succeeded``/``refund.failed``; a payout's hears
  ``payout.succeeded``/``payout.failed``. Each is emitted once per object and
  event (its key is ``<ref>:<event>``), in the transaction of the change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from zhangfang import ids, money
from zhangfang.channels.registry import ChannelRegistry, Route
from zhangfang.config import Settings, get_settings
from zhangfang.db.sql import Prepared, insert_ignoring_conflict, insert_ignoring_conflict_in, request_digest
from zhangfang.errors import InvalidInput
from zhangfang.jobs import queue
from zhangfang.ledger import errors as ledger_errors
from zhangfang.notify import service as notify
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant
from zhangfang.payments import errors, postings
from zhangfang.payments.models import (
    ATTEMPT_TRANSITIONS,
    CLOSE_REASONS,
    LIVE_ATTEMPT_STATES,
    ORDER_STATES,
    ORDER_TRANSITIONS,
    OrderRequest,
    OrderResult,
    Page,
    PaymentAttempt,
    PaymentOrder,
    Payout,
    PayoutRequest,
    PayoutResult,
    Refund,
    RefundRequest,
    RefundResult,
    can_move,
)
from zhangfang.payments.tables import channel_notifies, payment_attempts, payment_orders, payouts, refunds

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Job kinds; their handlers live in ``flows``.
JOB_EXPIRE = "payments.expire"
JOB_POLL = "payments.poll"
JOB_CLOSE_ATTEMPT = "payments.close_attempt"
JOB_REFUND = "payments.refund"
JOB_PAYOUT = "payments.payout"

# The method of orders that withholding debits pay (``create_withholding_order``): no cashier offers it.
WITHHOLD_METHOD = "withhold"

AMOUNT_MAX_MINOR = 10_000_000_000  # 100,000,000.00 in a two-decimal currency: above any channel's ceiling
NUMBER_LENGTH_MAX = 64
SUBJECT_LENGTH_MAX = 256
DESCRIPTION_LENGTH_MAX = 1000
REASON_LENGTH_MAX = 256
REMARK_LENGTH_MAX = 100
URL_LENGTH_MAX = 2048
METADATA_BYTES_MAX = 4096
EXPIRY_SECONDS_MIN = 60
EXPIRY_SECONDS_MAX = 7 * 86400
PAGE_LIMIT_MAX = 500
ERROR_LENGTH_MAX = 500
EXCERPT_LENGTH_MAX = 2000
REUSE_ATTEMPT_SECONDS = 600

_NUMBER = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
_ACCOUNT_NUMBER = re.compile(r"[0-9]{8,32}")
_BANK_CODE = re.compile(r"[A-Za-z0-9]{2,16}")


# --------------------------------------------------------------------------- validation


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    assert now.tzinfo is not None, "now must be time zone aware"
    return now.astimezone(dt.UTC)


def _check_number(value: Any, error: type[InvalidInput], field: str) -> str:
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        raise error(f"{field} is 1 to {NUMBER_LENGTH_MAX} characters of A-Z, a-z, 0-9, _, -, . and :", field=field)
    return value


def _check_amount(value: Any, field: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.AmountMustBeInteger(
            f"{field} is an integer of the currency's minor unit (fen for CNY)", field=field
        )
    if value <= 0:
        raise errors.AmountMustBePositive(f"{field} must be positive", field=field)
    if value > AMOUNT_MAX_MINOR:
        raise errors.AmountTooLarge(f"{field} is at most {AMOUNT_MAX_MINOR}", field=field, amount_max=AMOUNT_MAX_MINOR)
    return value


def _check_currency(value: Any, field: str = "currency") -> str:
    if not isinstance(value, str) or not money.is_known_currency(value):
        raise money.CurrencyUnknown(f"{field} is not an ISO 4217 currency code", field=field)
    return value


def _check_text(value: Any, error: type[InvalidInput], field: str, length_max: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > length_max or not value.isprintable():
        raise error(f"{field} is 1 to {length_max} printable characters", field=field)
    return value.strip()


def _check_webhook_url(value: Any, field: str) -> str | None:
    """A URL our webhooks may go to: the rules of ``notify.check_url`` (https unless loopback or allowed)."""
    if value is None:
        return None
    try:
        return notify.check_url(value)
    except InvalidInput as error:
        raise errors.PaymentUrlInvalid(f"{field}: {error.message}", field=field) from None


def _check_return_url(value: Any, field: str = "return_url") -> str | None:
    """Where the payer's browser goes back: any absolute http(s) URL (the browser follows it, not us)."""
    if value is None:
        return None
    try:
        return notify.check_url(value, allow_http=True)
    except InvalidInput as error:
        raise errors.PaymentUrlInvalid(f"{field}: {error.message}", field=field) from None


def _check_expires_at(value: Any, now: dt.datetime) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise errors.ExpiresAtInvalid("expires_at is a time with its offset (RFC 3339)", field="expires_at")
    seconds = (value - now).total_seconds()
    if not EXPIRY_SECONDS_MIN <= seconds <= EXPIRY_SECONDS_MAX:
        raise errors.ExpiresAtInvalid(
            f"expires_at is {EXPIRY_SECONDS_MIN} seconds to {EXPIRY_SECONDS_MAX // 86400} days from now",
            field="expires_at",
        )
    return value.astimezone(dt.UTC)


def _check_metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise errors.MetadataInvalid("metadata is a JSON object", field="metadata")
    try:
        # Not canonical_json: its default=str would let any object through, and NaN is not JSON (PostgreSQL refuses it).
        text = json.dumps(dict(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise errors.MetadataInvalid("metadata is a JSON object", field="metadata") from None
    if len(text.encode()) > METADATA_BYTES_MAX:
        raise errors.MetadataInvalid(f"metadata is at most {METADATA_BYTES_MAX} bytes of JSON", field="metadata")
    return dict(value)


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT_MAX:
        raise errors.LimitInvalid(f"limit must be from 1 to {PAGE_LIMIT_MAX}", field="limit")
    return limit


def _check_cursor(cursor: Any) -> int:
    if not isinstance(cursor, str) or not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise errors.CursorInvalid("cursor must be the next_cursor of a previous page", field="cursor")
    return int(cursor)


def _check_ref(value: Any, prefix: str) -> str | None:
    """``value`` if it could be one of our ids with this prefix; None otherwise (a lookup then finds nothing)."""
    return value if isinstance(value, str) and ids.is_valid_id(value, prefix) else None


def _excerpt(text: str | None, length_max: int = ERROR_LENGTH_MAX) -> str | None:
    return None if text is None else text[:length_max]


# --------------------------------------------------------------------------- reading rows


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _from_row(cls: type[T], row: Row[Any], **values: Any) -> T:
    """A model from a row whose columns (or labels) carry its field names; ``values`` give or override fields."""
    mapping = row._mapping
    return cls(**{name: values[name] if name in values else mapping[name] for name in _field_names(cls)})


def _order_from_row(row: Row[Any]) -> PaymentOrder:
    return _from_row(PaymentOrder, row, fee_rate=Decimal(row.fee_rate))


def _attempt_from_row(row: Row[Any], order_ref: str) -> PaymentAttempt:
    return _from_row(PaymentAttempt, row, order_ref=order_ref)


def _refund_from_row(row: Row[Any], order_ref: str, attempt_ref: str) -> Refund:
    return _from_row(Refund, row, order_ref=order_ref, attempt_ref=attempt_ref)


def _payout_from_row(row: Row[Any]) -> Payout:
    return _from_row(Payout, row)


_ORDER_REF = sa.select(payment_orders.c.ref).where(payment_orders.c.id == payment_attempts.c.order_id).scalar_subquery()


def _order_row(conn: Connection, *, ref: Any, merchant_id: int | None, lock: bool = False) -> Row[Any]:
    query = sa.select(payment_orders).where(payment_orders.c.ref == _check_ref(ref, "pay"))
    if merchant_id is not None:
        query = query.where(payment_orders.c.merchant_id == merchant_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise errors.PaymentNotFound(f"payment {ref} does not exist", field="payment")
    return row


def _lock_order_by_id(conn: Connection, order_id: int) -> Row[Any]:
    return conn.execute(sa.select(payment_orders).where(payment_orders.c.id == order_id).with_for_update()).one()


def _attempt_row(conn: Connection, ref: str, *, lock: bool = False) -> Row[Any] | None:
    query = sa.select(payment_attempts).where(payment_attempts.c.ref == ref)
    return conn.execute(query.with_for_update() if lock else query).first()


def get_order(conn: Connection, *, ref: str, merchant_id: int | None = None) -> PaymentOrder:
    """Returns an order; with ``merchant_id``, only that merchant's (another's is ``payment_not_found``)."""
    return _order_from_row(_order_row(conn, ref=ref, merchant_id=merchant_id))


def find_order(conn: Connection, *, merchant_id: int, out_trade_no: str) -> PaymentOrder:
    """Returns the merchant's order by its own number."""
    row = conn.execute(
        sa.select(payment_orders).where(
            payment_orders.c.merchant_id == merchant_id, payment_orders.c.out_trade_no == out_trade_no
        )
    ).first()
    if row is None:
        raise errors.PaymentNotFound(f"no payment has out_trade_no {out_trade_no!r}", field="out_trade_no")
    return _order_from_row(row)


def list_orders(
    conn: Connection,
    *,
    merchant_id: int | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Returns orders newest first, optionally one merchant's and of one state, one page at a time."""
    if state is not None and state not in ORDER_STATES:
        raise errors.PaymentStateInvalid(f"state is one of {', '.join(ORDER_STATES)}", field="state")
    limit = _check_limit(limit)
    query = sa.select(payment_orders).order_by(payment_orders.c.id.desc()).limit(limit + 1)
    if merchant_id is not None:
        query = query.where(payment_orders.c.merchant_id == merchant_id)
    if state is not None:
        query = query.where(payment_orders.c.state == state)
    if cursor is not None:
        query = query.where(payment_orders.c.id < _check_cursor(cursor))
    rows = conn.execute(query).all()
    items = [_order_from_row(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def list_attempts(conn: Connection, *, order: PaymentOrder) -> list[PaymentAttempt]:
    """An order's attempts at channels, oldest first."""
    rows = conn.execute(
        sa.select(payment_attempts).where(payment_attempts.c.order_id == order.id).order_by(payment_attempts.c.id)
    ).all()
    return [_attempt_from_row(row, order.ref) for row in rows]


def get_attempt(conn: Connection, *, ref: str) -> PaymentAttempt | None:
    """Returns an attempt by its ref (the channel's ``out_trade_no``), or None."""
    row = conn.execute(
        sa.select(payment_attempts, _ORDER_REF.label("order_ref")).where(payment_attempts.c.ref == ref)
    ).first()
    return None if row is None else _attempt_from_row(row, row.order_ref)


# --------------------------------------------------------------------------- views (API answers and webhook data)


def _iso(moment: dt.datetime | None) -> str | None:
    """UTC instants as the API writes them (``…Z``), so a webhook's data equals the API's answer byte for byte."""
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def order_view(order: PaymentOrder, *, public_base_url: str) -> dict[str, Any]:
    """The order as merchants see it, in the API and in webhooks (the same JSON in both)."""
    return {
        "id": order.ref,
        "out_trade_no": order.out_trade_no,
        "state": order.state,
        "amount": order.amount,
        "currency": order.currency,
        "subject": order.subject,
        "description": order.description,
        "user": order.user_ref,
        "method": order.method,
        "channel": order.channel,
        "channel_trade_no": order.channel_trade_no,
        "fee": order.fee,
        "refunded": order.refunded,
        "refunding": order.refunding,
        "notify_url": order.notify_url,
        "return_url": order.return_url,
        "metadata": order.metadata,
        "cashier_url": f"{public_base_url.rstrip('/')}/cashier/{order.ref}",
        "close_reason": order.close_reason,
        "created_at": _iso(order.created_at),
        "expires_at": _iso(order.expires_at),
        "paid_at": _iso(order.paid_at),
        "closed_at": _iso(order.closed_at),
    }


def refund_view(refund: Refund, *, out_trade_no: str) -> dict[str, Any]:
    """A merchant refund as merchants see it (API and webhooks)."""
    return {
        "id": refund.ref,
        "out_refund_no": refund.out_refund_no,
        "payment": refund.order_ref,
        "out_trade_no": out_trade_no,
        "state": refund.state,
        "amount": refund.amount,
        "currency": refund.currency,
        "fee_returned": refund.fee_returned,
        "reason": refund.reason,
        "channel": refund.channel,
        "channel_refund_no": refund.channel_refund_no,
        "failure_code": refund.failure_code,
        "failure_message": refund.failure_message,
        "created_at": _iso(refund.created_at),
        "finished_at": _iso(refund.finished_at),
    }


def payout_view(payout: Payout) -> dict[str, Any]:
    """A payout as merchants see it (API and webhooks); the payee's account number masked."""
    return {
        "id": payout.ref,
        "out_payout_no": payout.out_payout_no,
        "state": payout.state,
        "amount": payout.amount,
        "currency": payout.currency,
        "payee": {
            "account_number_masked": "****" + payout.payee_account_number[-4:],
            "account_name": payout.payee_account_name,
            "bank_code": payout.payee_bank_code,
        },
        "remark": payout.remark,
        "channel": payout.channel,
        "channel_payout_no": payout.channel_payout_no,
        "failure_code": payout.failure_code,
        "failure_message": payout.failure_message,
        "created_at": _iso(payout.created_at),
        "finished_at": _iso(payout.finished_at),
    }


def _emit(
    conn: Connection, *, merchant_id: int, url: str | None, event: str, ref: str, data: dict[str, Any], now: dt.datetime
) -> None:
    """Writes a webhook in this transaction; a URL the webhook rules now refuse is logged, never a reason to
    refuse recording money that has moved."""
    if url is None:
        return
    try:
        notify.emit(
            conn,
            merchant_id=merchant_id,
            event_type=event,
            data=data,
            url=url,
            idempotency_key=f"{ref}:{event}",
            now=now,
        )
    except InvalidInput as error:
        logger.error("payments: %s for %s not sent to %s: %s", event, ref, url, error.message)


def _emit_order(conn: Connection, order: PaymentOrder, event: str, settings: Settings, now: dt.datetime) -> None:
    """Tells the order's merchant (``notify_url``) what became of it, with the order as the API shows it."""
    data = order_view(order, public_base_url=settings.public_base_url)
    _emit(conn, merchant_id=order.merchant_id, url=order.notify_url, event=event, ref=order.ref, data=data, now=now)


# --------------------------------------------------------------------------- orders


def _order_digest(request: OrderRequest, fields: dict[str, Any]) -> str:
    return request_digest({**fields, "expires_at": _iso(request.expires_at)})


# Built once (``db.sql.Prepared``): creating orders is the merchant API's busiest path.
_INSERT_ORDER = Prepared(
    lambda dialect: insert_ignoring_conflict_in(dialect, payment_orders, ["merchant_id", "out_trade_no"]).returning(
        *payment_orders.c
    )
)


def create_order(
    conn: Connection,
    *,
    merchant: Merchant,
    request: OrderRequest,
    registry: ChannelRegistry,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> OrderResult:
    """Create an order for the payer to pay at the cashier, idempotently on ``out_trade_no``.

    Its expiry needs no job now: the periodic sweep (``enqueue_due_expiries``)
    finds it once ``expires_at`` passes. Refusals (``payments.errors``, in that
    order) write nothing.
    """
    settings = settings or get_settings()
    now = _now(now)
    out_trade_no = _check_number(request.out_trade_no, errors.OutTradeNoInvalid, "out_trade_no")
    amount = _check_amount(request.amount)
    currency = _check_currency(request.currency)
    subject = _check_text(request.subject, errors.SubjectInvalid, "subject", SUBJECT_LENGTH_MAX, required=True)
    description = _check_text(
        request.description, errors.DescriptionInvalid, "description", DESCRIPTION_LENGTH_MAX, required=False
    )
    notify_url = _check_webhook_url(request.notify_url, "notify_url")
    return_url = _check_return_url(request.return_url)
    expires_at = _check_expires_at(request.expires_at, now)
    metadata = _check_metadata(request.metadata)
    _check_routable(
        registry,
        currency=currency,
        amount=amount,
        method=request.method,
        preferred_channel=request.preferred_channel,
    )
    user_ref = None
    if request.user is not None:
        user_ref = parties.get_user(conn, merchant_id=merchant.id, ref=request.user).ref
    fields = {
        "amount": amount,
        "currency": currency,
        "subject": subject,
        "description": description,
        "user_ref": user_ref,
        "notify_url": notify_url,
        "return_url": return_url,
        "method": request.method,
        "preferred_channel": request.preferred_channel,
        "metadata": metadata,
    }
    digest = _order_digest(request, fields)

    ref = ids.new_id("pay")
    expires = expires_at or now + dt.timedelta(seconds=settings.payment_expiry_seconds)
    # Insert first: a new order (the common case) costs one statement. On conflict — a repeat of the number,
    # or a concurrent create that committed first — do nothing and answer with the order that has it.
    values = {
        "ref": ref,
        "merchant_id": merchant.id,
        "merchant_ref": merchant.ref,
        "out_trade_no": out_trade_no,
        "request_hash": digest,
        "state": "pending",
        "fee_rate": str(merchant.fee_rate),
        "refunded": 0,
        "refunding": 0,
        "created_at": now,
        "updated_at": now,
        "expires_at": expires,
        **fields,
    }
    inserted = conn.execute(_INSERT_ORDER(conn), values).first()
    if inserted is not None:
        return OrderResult(order=_order_from_row(inserted), created=True)
    row = conn.execute(
        sa.select(payment_orders).where(
            payment_orders.c.merchant_id == merchant.id, payment_orders.c.out_trade_no == out_trade_no
        )
    ).first()
    assert row is not None, f"out_trade_no {out_trade_no!r} conflicted but no order carries it"
    if row.request_hash != digest:
        raise errors.OutTradeNoConflict(
            "an order with this out_trade_no was created with other content",
            field="out_trade_no",
            payment=row.ref,
        )
    return OrderResult(order=_order_from_row(row), created=False)


def create_withholding_order(
    conn: Connection,
    *,
    merchant: Merchant,
    out_trade_no: str,
    amount: int,
    currency: str,
    subject: str,
    user_ref: str | None,
    expires_at: dt.datetime,
    metadata: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> PaymentOrder:
    """The order a withholding debit (协议代扣, ``mandates``) pays, idempotently on ``out_trade_no``.

    An ordinary order, so settlement, reconciliation and accounting see a
    debit like any paid order: its attempts go to the mandate's bank (through
    ``start_attempt``) and a success is recorded by ``apply_payment_success``.
    Its ``method`` is ``withhold``, which no cashier offers: the payer never
    pays it by hand. It sends no webhooks of its own (the debit's do). The
    caller (the mandates domain) has checked its input; the same number with
    other content is a bug there, not a request to refuse.
    """
    now = _now(now)
    fields = {
        "amount": amount,
        "currency": currency,
        "subject": subject,
        "description": None,
        "user_ref": user_ref,
        "notify_url": None,
        "return_url": None,
        "method": WITHHOLD_METHOD,
        "preferred_channel": None,
        "metadata": dict(metadata) if metadata is not None else None,
    }
    digest = request_digest({**fields, "expires_at": _iso(expires_at)})
    values = {
        "ref": ids.new_id("pay"),
        "merchant_id": merchant.id,
        "merchant_ref": merchant.ref,
        "out_trade_no": out_trade_no,
        "request_hash": digest,
        "state": "pending",
        "fee_rate": str(merchant.fee_rate),
        "refunded": 0,
        "refunding": 0,
        "created_at": now,
        "updated_at": now,
        "expires_at": expires_at.astimezone(dt.UTC),
        **fields,
    }
    inserted = conn.execute(_INSERT_ORDER(conn), values).first()
    if inserted is not None:
        return _order_from_row(inserted)
    return find_order(conn, merchant_id=merchant.id, out_trade_no=out_trade_no)


def enqueue_due_expiries(conn: Connection, *, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Hands pending orders whose expiry has passed, each once, to a ``payments.expire`` job; returns how many.

    Run by the workers' periodic round. On PostgreSQL orders another worker is
    handing over are skipped (``SKIP LOCKED``); the job's dedupe key makes a
    second hand-over of the same order harmless anyway.
    """
    now = _now(now)
    due = conn.execute(
        sa.select(payment_orders.c.id, payment_orders.c.ref)
        .where(
            payment_orders.c.state == "pending",
            payment_orders.c.expiry_job_ref.is_(None),
            payment_orders.c.expires_at <= now,
        )
        .order_by(payment_orders.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in due:
        job = queue.enqueue(conn, kind=JOB_EXPIRE, payload={"order": row.ref}, dedupe_key=f"{row.ref}:expire", now=now)
        conn.execute(payment_orders.update().where(payment_orders.c.id == row.id).values(expiry_job_ref=job.ref))
    return len(due)


def _check_routable(
    registry: ChannelRegistry, *, currency: str, amount: int, method: str | None, preferred_channel: str | None
) -> None:
    if not registry.routes(currency=currency):
        raise errors.CurrencyNotSupported(f"no channel collects {currency}", field="currency", currency=currency)
    if method is not None and not registry.routes(currency=currency, amount_minor=amount, method=method):
        raise errors.PaymentMethodUnavailable(
            f"method {method!r} is not offered for this currency and amount",
            field="method",
            methods=sorted({route.method for route in registry.routes(currency=currency, amount_minor=amount)}),
        )
    if preferred_channel is not None and preferred_channel not in registry.codes():
        raise errors.ChannelUnknown(f"no channel is called {preferred_channel!r}", field="preferred_channel")
    if not registry.routes(currency=currency, amount_minor=amount):
        raise errors.NoRouteForPayment(
            f"no channel takes {amount} in {currency}", field="amount", amount=amount, currency=currency
        )


def _move_order(conn: Connection, row: Row[Any], state: str, now: dt.datetime, **values: Any) -> PaymentOrder:
    assert can_move(ORDER_TRANSITIONS, row.state, state), (row.ref, row.state, state)
    updated = conn.execute(
        payment_orders.update()
        .where(payment_orders.c.id == row.id)
        .values(state=state, updated_at=now, **values)
        .returning(*payment_orders.c)
    ).one()
    return _order_from_row(updated)


def close_order(
    conn: Connection,
    *,
    ref: str,
    merchant_id: int | None = None,
    reason: str = "merchant",
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> PaymentOrder:
    """Close an unpaid order so it can no longer be paid; closing a closed order returns it unchanged.

    The order closes at once; its attempts still open at channels are closed
    there by jobs (``payments.close_attempt``), which first ask the channel
    whether the payer paid in the meantime — such a payment is refunded.
    """
    assert reason in CLOSE_REASONS, reason
    settings = settings or get_settings()
    now = _now(now)
    row = _order_row(conn, ref=ref, merchant_id=merchant_id, lock=True)
    if row.state == "closed":
        return _order_from_row(row)
    if row.state != "pending":
        raise errors.PaymentAlreadyPaid(
            f"payment {ref} is {row.state}; refund it instead of closing it", field="payment", state=row.state
        )
    order = _move_order(conn, row, "closed", now, close_reason=reason, closed_at=now)
    _close_live_attempts(conn, order_id=order.id, except_ref=None, now=now)
    _emit_order(conn, order, "payment.closed", settings, now)
    return order


def _close_live_attempts(conn: Connection, *, order_id: int, except_ref: str | None, now: dt.datetime) -> None:
    """Schedules closing, at their channels, the order's attempts that could still take the payer's money."""
    rows = conn.execute(
        sa.select(payment_attempts.c.ref).where(
            payment_attempts.c.order_id == order_id, payment_attempts.c.state.in_(LIVE_ATTEMPT_STATES)
        )
    ).all()
    for row in rows:
        if row.ref != except_ref:
            queue.enqueue(
                conn, kind=JOB_CLOSE_ATTEMPT, payload={"attempt": row.ref}, dedupe_key=f"{row.ref}:close", now=now
            )


# --------------------------------------------------------------------------- attempts


def is_payable(order: PaymentOrder, now: dt.datetime) -> bool:
    """True while the payer can still pay: pending and before its expiry."""
    return order.state == "pending" and _now(now) < order.expires_at


def reusable_attempt(conn: Connection, *, order: PaymentOrder, method: str, now: dt.datetime) -> PaymentAttempt | None:
    """An open attempt for this method made in the last ten minutes: a payer who reloads goes back to it."""
    since = _now(now) - dt.timedelta(seconds=REUSE_ATTEMPT_SECONDS)
    row = conn.execute(
        sa.select(payment_attempts)
        .where(
            payment_attempts.c.order_id == order.id,
            payment_attempts.c.method == method,
            payment_attempts.c.state == "open",
            payment_attempts.c.created_at >= since,
        )
        .order_by(payment_attempts.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _attempt_from_row(row, order.ref)


def start_attempt(conn: Connection, *, order_ref: str, route: Route, now: dt.datetime | None = None) -> PaymentAttempt:
    """Writes a new attempt (``opening``) of a payable order at ``route``'s channel, under the order's lock.

    The lock makes closing and paying take turns: an attempt started after the
    order closed is refused (``payment_not_payable``), and one started before is
    seen, and closed, by ``close_order``.
    """
    now = _now(now)
    row = _order_row(conn, ref=order_ref, merchant_id=None, lock=True)
    if not is_payable(_order_from_row(row), now):
        raise errors.PaymentNotPayable(f"payment {order_ref} is {row.state} and cannot be paid", field="payment")
    ref = ids.new_id("pat")
    inserted = conn.execute(
        payment_attempts.insert()
        .values(
            ref=ref,
            order_id=row.id,
            channel=route.channel,
            method=route.method,
            channel_method=route.channel_method,
            state="opening",
            amount=row.amount,
            currency=row.currency,
            duplicate=False,
            created_at=now,
            updated_at=now,
        )
        .returning(*payment_attempts.c)
    ).one()
    return _attempt_from_row(inserted, row.ref)


def _move_attempt(conn: Connection, row: Row[Any], state: str, now: dt.datetime, **values: Any) -> None:
    assert can_move(ATTEMPT_TRANSITIONS, row.state, state), (row.ref, row.state, state)
    conn.execute(
        payment_attempts.update().where(payment_attempts.c.id == row.id).values(state=state, updated_at=now, **values)
    )


def _locked_attempt(conn: Connection, ref: str) -> tuple[Row[Any], Row[Any]] | None:
    """The order's row and then the attempt's, both locked (always in this order), or None."""
    found = conn.execute(sa.select(payment_attempts.c.order_id).where(payment_attempts.c.ref == ref)).first()
    if found is None:
        return None
    order_row = _lock_order_by_id(conn, found.order_id)
    attempt_row = _attempt_row(conn, ref, lock=True)
    assert attempt_row is not None
    return order_row, attempt_row


def mark_attempt_open(
    conn: Connection,
    *,
    ref: str,
    action_kind: str,
    action_url: str | None,
    action_qr_code: str | None,
    channel_trade_no: str | None,
    poll_schedule_seconds: tuple[float, ...],
    now: dt.datetime | None = None,
) -> PaymentAttempt:
    """The channel accepted the attempt: keep how the payer pays it, and schedule its first query."""
    now = _now(now)
    locked = _locked_attempt(conn, ref)
    assert locked is not None, ref
    order_row, row = locked
    if row.state == "opening":
        _move_attempt(
            conn,
            row,
            "open",
            now,
            action_kind=action_kind,
            action_url=action_url,
            action_qr_code=action_qr_code,
            channel_trade_no=channel_trade_no or row.channel_trade_no,
        )
        schedule_poll(conn, attempt_ref=ref, round_number=1, schedule=poll_schedule_seconds, now=now)
    if order_row.state != "pending" and row.state == "opening":
        # The order closed while the channel was being called: close this trade too.
        queue.enqueue(conn, kind=JOB_CLOSE_ATTEMPT, payload={"attempt": ref}, dedupe_key=f"{ref}:close", now=now)
    attempt = get_attempt(conn, ref=ref)
    assert attempt is not None
    return attempt


def mark_attempt_failed(
    conn: Connection, *, ref: str, code: str | None, message: str, close_later: bool, now: dt.datetime | None = None
) -> None:
    """The channel refused the attempt, or did not answer; an unanswered one is closed later, to be sure."""
    now = _now(now)
    locked = _locked_attempt(conn, ref)
    if locked is None:
        return
    row = locked[1]
    if row.state in ("opening", "open"):
        _move_attempt(conn, row, "failed", now, error_code=_excerpt(code, 64), error_message=_excerpt(message))
    if close_later:
        queue.enqueue(conn, kind=JOB_CLOSE_ATTEMPT, payload={"attempt": ref}, dedupe_key=f"{ref}:close", now=now)


def mark_attempt_closed(conn: Connection, *, ref: str, now: dt.datetime | None = None) -> bool:
    """The channel says the trade is closed (or never existed); True if this changed the attempt."""
    now = _now(now)
    locked = _locked_attempt(conn, ref)
    if locked is None:
        return False
    row = locked[1]
    if row.state not in LIVE_ATTEMPT_STATES:
        return False
    _move_attempt(conn, row, "closed", now)
    return True


def flag_attempt(conn: Connection, *, ref: str, code: str, message: str, now: dt.datetime | None = None) -> None:
    """Notes an anomaly on an attempt for operators (``error_code``), without changing its state."""
    conn.execute(
        payment_attempts.update()
        .where(payment_attempts.c.ref == ref)
        .values(error_code=_excerpt(code, 64), error_message=_excerpt(message), updated_at=_now(now))
    )


def schedule_poll(
    conn: Connection, *, attempt_ref: str, round_number: int, schedule: tuple[float, ...], now: dt.datetime
) -> None:
    """Schedules query number ``round_number`` of an open attempt, on the poll schedule (its last wait repeats)."""
    wait = schedule[min(round_number, len(schedule)) - 1]
    queue.enqueue(
        conn,
        kind=JOB_POLL,
        payload={"attempt": attempt_ref, "round": round_number},
        run_at=now + dt.timedelta(seconds=wait),
        dedupe_key=f"{attempt_ref}:poll:{round_number}",
        now=now,
    )


def apply_payment_success(
    conn: Connection,
    *,
    attempt_ref: str,
    amount: int | None,
    currency: str | None,
    channel_trade_no: str | None,
    paid_at: dt.datetime | None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Records that the channel took the payer's money for an attempt; returns what it did.

    ``applied``: the order is paid, booked and its merchant told.
    ``duplicate``: the order was already paid (by another attempt) or closed:
    the money is booked as owed back and refunded automatically.
    ``already_applied``: this attempt was booked before; nothing changes.
    ``amount_mismatch``: the channel's amount or currency differs from the
    attempt's; nothing changes. ``unknown_attempt``: no such attempt.
    """
    settings = settings or get_settings()
    now = _now(now)
    locked = _locked_attempt(conn, attempt_ref)
    if locked is None:
        return "unknown_attempt"
    order_row, row = locked
    if row.state == "succeeded":
        return "already_applied"
    if amount != row.amount or currency != row.currency:
        logger.error(
            "payments: %s reported %s %s for attempt %s of %s %s; refused",
            row.channel,
            amount,
            currency,
            attempt_ref,
            row.amount,
            row.currency,
        )
        return "amount_mismatch"
    paid_at = paid_at or now
    trade_no = channel_trade_no or row.channel_trade_no
    if order_row.state != "pending":
        entry_ref = postings.post_duplicate_payment(
            conn,
            attempt_ref=attempt_ref,
            order_ref=order_row.ref,
            channel=row.channel,
            amount=row.amount,
            currency=row.currency,
            now=now,
        )
        _move_attempt(
            conn, row, "succeeded", now, duplicate=True, entry_ref=entry_ref, paid_at=paid_at, channel_trade_no=trade_no
        )
        _start_duplicate_refund(conn, order_row=order_row, attempt_row=row, now=now)
        logger.warning(
            "payments: attempt %s paid order %s, which is %s: refunding", attempt_ref, order_row.ref, order_row.state
        )
        return "duplicate"
    fee = postings.fee_for(row.amount, Decimal(order_row.fee_rate))
    entry_ref = postings.post_payment(
        conn,
        attempt_ref=attempt_ref,
        order_ref=order_row.ref,
        merchant_ref=order_row.merchant_ref,
        channel=row.channel,
        amount=row.amount,
        fee=fee,
        currency=row.currency,
        now=now,
    )
    _move_attempt(conn, row, "succeeded", now, entry_ref=entry_ref, paid_at=paid_at, channel_trade_no=trade_no)
    order = _move_order(
        conn,
        order_row,
        "succeeded",
        now,
        fee=fee,
        paid_at=paid_at,
        channel=row.channel,
        channel_trade_no=trade_no,
        attempt_ref=attempt_ref,
        entry_ref=entry_ref,
    )
    _close_live_attempts(conn, order_id=order.id, except_ref=attempt_ref, now=now)
    _emit_order(conn, order, "payment.succeeded", settings, now)
    for listener in list(_paid_listeners):
        listener(conn, order)
    return "applied"


# Other domains that must act when an order of theirs is paid (a loan repaid at the cashier): called in the
# transaction that books the payment, after it is booked; they recognise their orders by ``metadata``.
PaidListener = Callable[[Connection, PaymentOrder], None]
_paid_listeners: list[PaidListener] = []


def register_paid_listener(fn: PaidListener) -> PaidListener:
    """Call ``fn(conn, order)`` whenever an order is paid (once per order, in the booking transaction)."""
    if fn not in _paid_listeners:
        _paid_listeners.append(fn)
    return fn


def _start_duplicate_refund(conn: Connection, *, order_row: Row[Any], attempt_row: Row[Any], now: dt.datetime) -> None:
    ref = ids.new_id("rfd")
    conn.execute(
        insert_ignoring_conflict(conn, refunds, ["key"]).values(
            ref=ref,
            key=f"dup:{attempt_row.ref}",
            kind="duplicate",
            order_id=order_row.id,
            attempt_id=attempt_row.id,
            merchant_id=order_row.merchant_id,
            request_hash=request_digest({"duplicate": attempt_row.ref}),
            state="processing",
            amount=attempt_row.amount,
            currency=attempt_row.currency,
            fee_returned=0,
            reason="duplicate payment returned to the payer",
            channel=attempt_row.channel,
            created_at=now,
            updated_at=now,
        )
    )
    queue.enqueue(conn, kind=JOB_REFUND, payload={"refund": ref}, dedupe_key=f"{ref}:submit", now=now)


# --------------------------------------------------------------------------- refunds


def _refund_select() -> sa.Select:
    return sa.select(
        refunds,
        sa.select(payment_orders.c.ref)
        .where(payment_orders.c.id == refunds.c.order_id)
        .scalar_subquery()
        .label("order_ref"),
        sa.select(payment_attempts.c.ref)
        .where(payment_attempts.c.id == refunds.c.attempt_id)
        .scalar_subquery()
        .label("attempt_ref"),
    )


def _refund_of(row: Row[Any]) -> Refund:
    return _refund_from_row(row, row.order_ref, row.attempt_ref)


def get_refund(conn: Connection, *, ref: str, merchant_id: int | None = None) -> Refund:
    """Returns a refund; with ``merchant_id``, only that merchant's own (not duplicate-payment refunds)."""
    query = _refund_select().where(refunds.c.ref == _check_ref(ref, "rfd"))
    if merchant_id is not None:
        query = query.where(refunds.c.merchant_id == merchant_id, refunds.c.kind == "merchant")
    row = conn.execute(query).first()
    if row is None:
        raise errors.RefundNotFound(f"refund {ref} does not exist", field="refund")
    return _refund_of(row)


def list_refunds(conn: Connection, *, order: PaymentOrder, merchant_only: bool = True) -> list[Refund]:
    """An order's refunds, oldest first (the merchant's own unless ``merchant_only`` is False)."""
    query = _refund_select().where(refunds.c.order_id == order.id).order_by(refunds.c.id)
    if merchant_only:
        query = query.where(refunds.c.kind == "merchant")
    return [_refund_of(row) for row in conn.execute(query).all()]


def create_refund(
    conn: Connection,
    *,
    merchant: Merchant,
    order_ref: str,
    request: RefundRequest,
    now: dt.datetime | None = None,
) -> RefundResult:
    """Refund (part of) a paid order, idempotently on ``out_refund_no``; the channel is asked by a job.

    Reserves the refund from the merchant's pending settlement with a ledger
    hold in this transaction. Refusals (``payments.errors``) write nothing.
    """
    now = _now(now)
    out_refund_no = _check_number(request.out_refund_no, errors.OutRefundNoInvalid, "out_refund_no")
    amount = _check_amount(request.amount)
    reason = _check_text(request.reason, errors.RefundReasonInvalid, "reason", REASON_LENGTH_MAX, required=False)
    notify_url = _check_webhook_url(request.notify_url, "notify_url")
    order_row = _order_row(conn, ref=order_ref, merchant_id=merchant.id, lock=True)
    key = f"m:{merchant.id}:{out_refund_no}"
    digest = request_digest({"payment": order_row.ref, "amount": amount, "reason": reason, "notify_url": notify_url})
    existing = conn.execute(_refund_select().where(refunds.c.key == key)).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.OutRefundNoConflict(
                "a refund with this out_refund_no was requested with other content",
                field="out_refund_no",
                refund=existing.ref,
            )
        return RefundResult(refund=_refund_of(existing), created=False)
    order = _order_from_row(order_row)
    if order.state not in ("succeeded", "refunded"):
        raise errors.PaymentNotRefundable(
            f"payment {order.ref} is {order.state}: only a paid one is refunded", field="payment", state=order.state
        )
    if amount > order.refundable:
        raise errors.RefundExceedsPaid(
            f"at most {order.refundable} can still be refunded",
            field="amount",
            refundable=order.refundable,
            refunded=order.refunded,
            refunding=order.refunding,
        )
    assert order.channel is not None and order.attempt_ref is not None and order.fee is not None
    # The merchant gives back the refund less the part of our fee it returns. That part is known only when
    # the refund succeeds (it depends on what is refunded by then), so reserve the most the merchant can owe:
    # the refund less the least the fee's part can be (see ``postings.refund_hold_for``).
    held = postings.refund_hold_for(fee=order.fee, amount=order.amount, refund=amount)
    ref = ids.new_id("rfd")
    try:
        hold_ref = postings.hold_merchant_funds(
            conn,
            key=f"refund:{ref}:hold",
            business_code=postings.CODE_REFUND,
            merchant_ref=order.merchant_ref,
            channel=order.channel,
            amount=held,
            currency=order.currency,
            metadata={"refund": ref, "payment": order.ref},
            now=now,
        )
    except ledger_errors.DebitsExceedCredits:
        raise errors.MerchantBalanceInsufficient(
            "your pending-settlement balance cannot cover this refund now", field="amount"
        ) from None
    attempt_id = conn.execute(
        sa.select(payment_attempts.c.id).where(payment_attempts.c.ref == order.attempt_ref)
    ).scalar_one()
    conn.execute(
        refunds.insert().values(
            ref=ref,
            key=key,
            kind="merchant",
            order_id=order.id,
            attempt_id=attempt_id,
            merchant_id=merchant.id,
            out_refund_no=out_refund_no,
            request_hash=digest,
            state="processing",
            amount=amount,
            currency=order.currency,
            fee_returned=0,
            reason=reason,
            notify_url=notify_url,
            channel=order.channel,
            hold_ref=hold_ref,
            created_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        payment_orders.update()
        .where(payment_orders.c.id == order.id)
        .values(refunding=payment_orders.c.refunding + amount, updated_at=now)
    )
    queue.enqueue(conn, kind=JOB_REFUND, payload={"refund": ref}, dedupe_key=f"{ref}:submit", now=now)
    return RefundResult(refund=get_refund(conn, ref=ref))


def _locked_refund(conn: Connection, ref: str) -> tuple[Row[Any], Row[Any]] | None:
    """The order's row, then the refund's, both locked, or None."""
    found = conn.execute(sa.select(refunds.c.order_id).where(refunds.c.ref == ref)).first()
    if found is None:
        return None
    order_row = _lock_order_by_id(conn, found.order_id)
    row = conn.execute(_refund_select().where(refunds.c.ref == ref).with_for_update(of=refunds)).one()
    return order_row, row


def complete_refund(
    conn: Connection,
    *,
    ref: str,
    channel_refund_no: str | None,
    refunded_at: dt.datetime | None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The channel refunded: book it and tell the merchant; returns ``applied``, ``already_finished`` or
    ``unknown_refund``."""
    settings = settings or get_settings()
    now = _now(now)
    locked = _locked_refund(conn, ref)
    if locked is None:
        return "unknown_refund"
    order_row, row = locked
    if row.state != "processing":
        return "already_finished"
    finished = refunded_at or now
    if row.kind == "duplicate":
        entry_ref = postings.post_duplicate_refund(
            conn, refund_ref=ref, channel=row.channel, amount=row.amount, currency=row.currency, now=now
        )
        _finish_refund(
            conn, row, "succeeded", now, entry_ref=entry_ref, finished_at=finished, channel_refund_no=channel_refund_no
        )
        return "applied"
    assert order_row.fee is not None
    fee_returned = postings.fee_returned_for(
        fee=order_row.fee, amount=order_row.amount, refunded_before=order_row.refunded, refund=row.amount
    )
    net = row.amount - fee_returned  # never more than the hold: ``postings.refund_hold_for``
    if net:
        entry_ref = postings.post_held(conn, hold_ref=row.hold_ref, key=f"refund:{ref}:post", amount=net, now=now)
    else:
        postings.void_held(conn, hold_ref=row.hold_ref, key=f"refund:{ref}:post", now=now)
    if fee_returned:
        fee_entry = postings.post_fee_return(
            conn, refund_ref=ref, channel=row.channel, amount=fee_returned, currency=row.currency, now=now
        )
        entry_ref = entry_ref if net else fee_entry
    _finish_refund(
        conn,
        row,
        "succeeded",
        now,
        entry_ref=entry_ref,
        fee_returned=fee_returned,
        finished_at=finished,
        channel_refund_no=channel_refund_no,
    )
    refunded = order_row.refunded + row.amount
    values = {"refunding": order_row.refunding - row.amount, "refunded": refunded}
    if refunded == order_row.amount:
        _move_order(conn, order_row, "refunded", now, **values)
    else:
        conn.execute(
            payment_orders.update().where(payment_orders.c.id == order_row.id).values(updated_at=now, **values)
        )
    _emit_refund(conn, ref=ref, order_row=order_row, event="refund.succeeded", settings=settings, now=now)
    return "applied"


def fail_refund(
    conn: Connection,
    *,
    ref: str,
    code: str | None,
    message: str,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The channel refused the refund: release the merchant's funds and tell it; returns what it did."""
    settings = settings or get_settings()
    now = _now(now)
    locked = _locked_refund(conn, ref)
    if locked is None:
        return "unknown_refund"
    order_row, row = locked
    if row.state != "processing":
        return "already_finished"
    values = {"failure_code": _excerpt(code, 64), "failure_message": _excerpt(message), "finished_at": now}
    if row.kind == "duplicate":
        _finish_refund(conn, row, "failed", now, **values)
        logger.error("payments: duplicate payment %s could not be refunded (%s): operators must return it", ref, code)
        return "applied"
    postings.void_held(conn, hold_ref=row.hold_ref, key=f"refund:{ref}:void", now=now)
    _finish_refund(conn, row, "failed", now, **values)
    conn.execute(
        payment_orders.update()
        .where(payment_orders.c.id == order_row.id)
        .values(refunding=order_row.refunding - row.amount, updated_at=now)
    )
    _emit_refund(conn, ref=ref, order_row=order_row, event="refund.failed", settings=settings, now=now)
    return "applied"


def _finish_refund(conn: Connection, row: Row[Any], state: str, now: dt.datetime, **values: Any) -> None:
    conn.execute(refunds.update().where(refunds.c.id == row.id).values(state=state, updated_at=now, **values))


def _emit_refund(
    conn: Connection, *, ref: str, order_row: Row[Any], event: str, settings: Settings, now: dt.datetime
) -> None:
    refund = get_refund(conn, ref=ref)
    _emit(
        conn,
        merchant_id=refund.merchant_id,
        url=refund.notify_url or order_row.notify_url,
        event=event,
        ref=ref,
        data=refund_view(refund, out_trade_no=order_row.out_trade_no),
        now=now,
    )


# --------------------------------------------------------------------------- payouts


def get_payout(conn: Connection, *, ref: str, merchant_id: int | None = None) -> Payout:
    """Returns a payout; with ``merchant_id``, only that merchant's."""
    query = sa.select(payouts).where(payouts.c.ref == _check_ref(ref, "po"))
    if merchant_id is not None:
        query = query.where(payouts.c.merchant_id == merchant_id)
    row = conn.execute(query).first()
    if row is None:
        raise errors.PayoutNotFound(f"payout {ref} does not exist", field="payout")
    return _payout_from_row(row)


def _check_payee(request: PayoutRequest) -> tuple[str, str, str | None]:
    payee = request.payee
    number = getattr(payee, "account_number", None)
    if not isinstance(number, str) or not _ACCOUNT_NUMBER.fullmatch(number):
        raise errors.PayeeInvalid("payee.account_number is 8 to 32 digits", field="payee.account_number")
    name = _check_text(
        getattr(payee, "account_name", None), errors.PayeeInvalid, "payee.account_name", 100, required=True
    )
    bank_code = getattr(payee, "bank_code", None)
    if bank_code is not None and (not isinstance(bank_code, str) or not _BANK_CODE.fullmatch(bank_code)):
        raise errors.PayeeInvalid("payee.bank_code is 2 to 16 letters and digits", field="payee.bank_code")
    assert name is not None
    return number, name, bank_code


def create_payout(
    conn: Connection,
    *,
    merchant: Merchant,
    request: PayoutRequest,
    registry: ChannelRegistry,
    channel: str | None = None,
    now: dt.datetime | None = None,
) -> PayoutResult:
    """Pay from the merchant's balance to a bank account (代付), idempotently on ``out_payout_no``.

    ``channel`` is the one routing chose (the request's, if it named one). The
    funds are reserved by a ledger hold in this transaction; a job asks the bank.
    """
    now = _now(now)
    out_payout_no = _check_number(request.out_payout_no, errors.OutPayoutNoInvalid, "out_payout_no")
    amount = _check_amount(request.amount)
    currency = _check_currency(request.currency)
    number, name, bank_code = _check_payee(request)
    remark = _check_text(request.remark, errors.PayoutRemarkInvalid, "remark", REMARK_LENGTH_MAX, required=False)
    notify_url = _check_webhook_url(request.notify_url, "notify_url")
    chosen = channel or request.channel
    if request.channel is not None and request.channel not in registry.codes():
        raise errors.ChannelUnknown(f"no channel is called {request.channel!r}", field="channel")
    able = [code for code in registry.payout_channels() if currency in registry.adapter(code).currencies]
    if not able or (chosen is not None and chosen not in able):
        raise errors.PayoutChannelUnavailable(
            f"no channel pays out {currency}" + (f" as {chosen}" if chosen else ""), field="channel", channels=able
        )
    chosen = chosen or able[0]
    digest = request_digest(
        {
            "amount": amount,
            "currency": currency,
            "payee": [number, name, bank_code],
            "remark": remark,
            "notify_url": notify_url,
            "channel": request.channel,
        }
    )
    existing = conn.execute(
        sa.select(payouts).where(payouts.c.merchant_id == merchant.id, payouts.c.out_payout_no == out_payout_no)
    ).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.OutPayoutNoConflict(
                "a payout with this out_payout_no was requested with other content",
                field="out_payout_no",
                payout=existing.ref,
            )
        return PayoutResult(payout=_payout_from_row(existing), created=False)
    ref = ids.new_id("po")
    try:
        hold_ref = postings.hold_merchant_funds(
            conn,
            key=f"payout:{ref}:hold",
            business_code=postings.CODE_PAYOUT,
            merchant_ref=merchant.ref,
            channel=chosen,
            amount=amount,
            currency=currency,
            metadata={"payout": ref},
            now=now,
        )
    except ledger_errors.DebitsExceedCredits:
        raise errors.MerchantBalanceInsufficient(
            "your pending-settlement balance cannot cover this payout now", field="amount"
        ) from None
    row = conn.execute(
        payouts.insert()
        .values(
            ref=ref,
            merchant_id=merchant.id,
            merchant_ref=merchant.ref,
            out_payout_no=out_payout_no,
            request_hash=digest,
            state="processing",
            amount=amount,
            currency=currency,
            payee_account_number=number,
            payee_account_name=name,
            payee_bank_code=bank_code,
            remark=remark,
            notify_url=notify_url,
            channel=chosen,
            hold_ref=hold_ref,
            created_at=now,
            updated_at=now,
        )
        .returning(*payouts.c)
    ).one()
    queue.enqueue(conn, kind=JOB_PAYOUT, payload={"payout": ref}, dedupe_key=f"{ref}:submit", now=now)
    return PayoutResult(payout=_payout_from_row(row))


def _locked_payout(conn: Connection, ref: str) -> Row[Any] | None:
    return conn.execute(sa.select(payouts).where(payouts.c.ref == ref).with_for_update()).first()


def finish_payout(
    conn: Connection,
    *,
    ref: str,
    succeeded: bool,
    channel_payout_no: str | None,
    code: str | None = None,
    message: str | None = None,
    finished_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The bank paid (post the hold) or could not (void it); returns ``applied``, ``already_finished`` or
    ``unknown_payout``."""
    now = _now(now)
    row = _locked_payout(conn, ref)
    if row is None:
        return "unknown_payout"
    if row.state != "processing":
        return "already_finished"
    if succeeded:
        entry_ref = postings.post_held(
            conn, hold_ref=row.hold_ref, key=f"payout:{ref}:post", amount=row.amount, now=now
        )
        values: dict[str, Any] = {"state": "succeeded", "entry_ref": entry_ref}
    else:
        postings.void_held(conn, hold_ref=row.hold_ref, key=f"payout:{ref}:void", now=now)
        values = {"state": "failed", "failure_code": _excerpt(code, 64), "failure_message": _excerpt(message)}
    updated = conn.execute(
        payouts.update()
        .where(payouts.c.id == row.id)
        .values(
            channel_payout_no=channel_payout_no or row.channel_payout_no,
            finished_at=finished_at or now,
            updated_at=now,
            **values,
        )
        .returning(*payouts.c)
    ).one()
    payout = _payout_from_row(updated)
    event = "payout.succeeded" if succeeded else "payout.failed"
    _emit(
        conn,
        merchant_id=payout.merchant_id,
        url=payout.notify_url,
        event=event,
        ref=ref,
        data=payout_view(payout),
        now=now,
    )
    return "applied"


def set_payout_channel_no(conn: Connection, *, ref: str, channel_payout_no: str | None, now: dt.datetime) -> None:
    """Keeps the bank's number for a payout it accepted (the result comes later)."""
    if channel_payout_no:
        conn.execute(
            payouts.update()
            .where(payouts.c.ref == ref, payouts.c.channel_payout_no.is_(None))
            .values(channel_payout_no=channel_payout_no, updated_at=now)
        )


# --------------------------------------------------------------------------- received notifies


def record_notify(
    conn: Connection,
    *,
    channel: str,
    kind: str,
    notify_id: str | None,
    ref: str | None,
    outcome: str,
    reason: str | None,
    body: bytes,
    now: dt.datetime | None = None,
) -> None:
    """Keeps a notify a channel sent, whatever became of it (refused ones too: they are evidence)."""
    conn.execute(
        channel_notifies.insert().values(
            channel=channel,
            kind=kind,
            notify_id=_excerpt(notify_id, 128),
            ref=_excerpt(ref, 64),
            outcome=outcome,
            reason=_excerpt(reason),
            body_excerpt=body[:EXCERPT_LENGTH_MAX].decode("utf-8", "replace")[:EXCERPT_LENGTH_MAX],
            received_at=_now(now),
        )
    )


def list_notifies(conn: Connection, *, ref: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest notifies received, newest first (for operators), optionally about one attempt, refund or payout."""
    query = sa.select(channel_notifies).order_by(channel_notifies.c.id.desc()).limit(_check_limit(limit))
    if ref is not None:
        query = query.where(channel_notifies.c.ref == ref)
    return [dict(row._mapping) for row in conn.execute(query).all()]


# --------------------------------------------------------------------------- reads for settlement


def paid_orders_between(
    conn: Connection,
    *,
    paid_from: dt.datetime,
    paid_until: dt.datetime,
    currency: str,
    merchant_ids: list[int] | None = None,
) -> list[Row[Any]]:
    """Returns the orders paid in ``[paid_from, paid_until)`` in ``currency``, by merchant, then payment time.

    Each row: ``id, ref, merchant_id, merchant_ref, amount, fee, paid_at``.
    Refunded orders are included (they were paid); duplicate payments are not
    (they never belonged to an order). One query (per 500 merchants when
    ``merchant_ids`` narrows it).
    """
    o = payment_orders.c
    query = (
        sa.select(o.id, o.ref, o.merchant_id, o.merchant_ref, o.amount, o.fee, o.paid_at)
        .where(
            o.state.in_(("succeeded", "refunded")),
            o.currency == currency,
            o.paid_at >= paid_from,
            o.paid_at < paid_until,
        )
        .order_by(o.merchant_id, o.paid_at, o.id)
    )
    if merchant_ids is None:
        return list(conn.execute(query).all())
    found: list[Row[Any]] = []
    for start in range(0, len(merchant_ids), 500):
        found.extend(conn.execute(query.where(o.merchant_id.in_(merchant_ids[start : start + 500]))).all())
    found.sort(key=lambda row: (row.merchant_id, row.paid_at, row.id))
    return found


def refunds_finished_between(
    conn: Connection, *, finished_from: dt.datetime, finished_until: dt.datetime, currency: str
) -> list[Row[Any]]:
    """Returns the succeeded merchant refunds of the orders refunded in ``[finished_from, finished_until)``.

    Every succeeded merchant refund of those orders is returned, earlier and
    later ones too, ordered by order and finishing time, so a caller can tell
    what each order had refunded before each refund. Each row: ``id, ref,
    order_id, merchant_id, merchant_ref, amount, fee_returned, finished_at, order_amount,
    order_fee, order_paid_at, in_window`` (whether it finished in the window).
    """
    r, o = refunds.c, payment_orders.c
    refunded_orders = sa.select(r.order_id).where(
        r.kind == "merchant",
        r.state == "succeeded",
        r.currency == currency,
        r.finished_at >= finished_from,
        r.finished_at < finished_until,
    )
    in_window = sa.and_(r.finished_at >= finished_from, r.finished_at < finished_until)
    query = (
        sa.select(
            r.id,
            r.ref,
            r.order_id,
            r.merchant_id,
            o.merchant_ref,
            r.amount,
            r.fee_returned,
            r.finished_at,
            o.amount.label("order_amount"),
            o.fee.label("order_fee"),
            o.paid_at.label("order_paid_at"),
            sa.case((in_window, True), else_=False).label("in_window"),
        )
        .join(payment_orders, payment_orders.c.id == r.order_id)
        .where(r.kind == "merchant", r.state == "succeeded", r.order_id.in_(refunded_orders))
        .order_by(r.order_id, r.finished_at, r.id)
    )
    return list(conn.execute(query).all())


def payout_states(conn: Connection, *, refs: list[str]) -> dict[str, str]:
    """Returns the state (``processing``, ``succeeded``, ``failed``) of each of these payouts that exists."""
    found: dict[str, str] = {}
    for start in range(0, len(refs), 500):
        rows = conn.execute(
            sa.select(payouts.c.ref, payouts.c.state).where(payouts.c.ref.in_(refs[start : start + 500]))
        )
        found.update({row.ref: row.state for row in rows})
    return found
