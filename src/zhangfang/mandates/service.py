"""Withholding mandates (协议代扣): requesting, authorizing, revoking, and the debits made under them.

Every function that takes a ``Connection`` expects it inside a transaction and
never commits: the caller owns the unit of work. Nothing here talks to a bank
or sends a text message: ``flows`` does, outside any transaction, and records
what happened through these functions. Side effects (bank calls to make,
webhooks to send) leave through the job queue in the transaction of the state
change that causes them (DESIGN.md, principle 4).

Guarantees
- No debit without an active mandate of that merchant: a mandate belongs to
  one merchant and one of its users, and another merchant naming it is
  ``mandate_not_found`` exactly as a mandate that does not exist.
- A mandate becomes ``active`` only after its payer gave the one-time code
  sent to the phone on the mandate (6 digits, ``ZHANGFANG_MANDATE_CODE_SECONDS``
  valid, ``ZHANGFANG_MANDATE_CODE_ATTEMPTS_MAX`` wrong tries, stored as a
  salted hash) and the bank signed it, answering its agreement number.
- Limits hold under concurrency: a debit is admitted under the mandate row's
  lock (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serializes writers), and
  the sums it checks — per debit, per due date, per due month, in total, over
  every debit not failed — include every debit admitted before it. The
  platform's caps (``ZHANGFANG_MANDATE_DEBIT_AMOUNT_MAX``,
  ``…_DAILY_AMOUNT_MAX``) and restricted industries
  (``ZHANGFANG_MANDATE_RESTRICTED_MCCS``) apply on top.
- Creating a debit is idempotent on the caller's ``key`` (per merchant): the
  same content returns the first debit, other content is
  ``debit_key_conflict``. A refused request writes nothing.
- A succeeded debit is a paid payment order: its order (``payments``
  ``create_withholding_order``) is paid through ``apply_payment_success`` by an
  attempt at the mandate's bank, so the ledger, settlement, reconciliation and
  accounting see it as any paid order. A debit is booked at most once: each try
  is one attempt (one ``out_trade_no`` at the bank), and a try whose answer was
  lost sends the same ``out_trade_no`` again, which the bank answers with the
  debit it made rather than making another.
- Revoking (by the user, the merchant or an operator) stops every future debit
  at once: nothing is admitted after it commits, and debits pending or waiting
  to retry fail in the same transaction (hard, ``mandate_revoked``). A try
  already at the bank finishes with the bank's answer; if that is a soft
  failure it is final. Suspending and expiry do the same with
  ``mandate_suspended`` and ``mandate_expired``.
- Failures are classified: soft (``insufficient_funds``, ``channel_timeout``)
  are tried again after each wait of ``ZHANGFANG_MANDATE_RETRY_SCHEDULE``, then
  fail; hard ones (``mandate_revoked``, ``account_closed``,
  ``agreement_invalid``, …) fail at once. A failed debit's order is closed.
- Every result reaches the merchant by webhook, in the transaction of the
  change: ``mandate.activated``, ``mandate.failed``, ``mandate.suspended``,
  ``mandate.reinstated``, ``mandate.revoked``, ``mandate.expired``,
  ``debit.succeeded``, ``debit.retrying``, ``debit.failed``,
  ``debit_batch.finished`` (to the debit's, batch's or mandate's ``notify_url``).
- Listeners (``register_debit_listener``) of a debit's ``purpose`` are called
  in the transaction that makes the debit final (succeeded, or failed for
  good), once.

Locks are taken in one order everywhere — the mandate, then the debit, then
(inside ``payments``) the order and its attempt — so two paths never deadlock.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from zhangfang import ids, money
from zhangfang.channels.registry import ChannelRegistry, Route
from zhangfang.config import Settings, get_settings
from zhangfang.db.sql import request_digest, sum_minor
from zhangfang.errors import InvalidInput
from zhangfang.jobs import queue
from zhangfang.mandates import errors
from zhangfang.mandates.models import (
    COUNTED_DEBIT_STATES,
    DEBIT_STATES,
    DEBIT_TRANSITIONS,
    FINAL_DEBIT_STATES,
    MANDATE_STATES,
    MANDATE_TRANSITIONS,
    REVOKED_BY,
    SOFT_REASONS,
    Debit,
    DebitResult,
    Limits,
    Mandate,
    MandateRequest,
    MandateResult,
    Page,
    can_move,
    mask,
)
from zhangfang.mandates.tables import mandate_batch_rows, mandate_batches, mandate_codes, mandate_debits, mandates
from zhangfang.notify import service as notify
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant
from zhangfang.payments import errors as payment_errors
from zhangfang.payments import service as payments

logger = logging.getLogger(__name__)
T = TypeVar("T")
SHANGHAI = ZoneInfo("Asia/Shanghai")

# Job kinds; their handlers live in ``flows``.
JOB_SIGN = "mandates.sign"
JOB_UNSIGN = "mandates.unsign"
JOB_DEBIT = "mandates.debit"
JOB_BATCH = "mandates.batch"

WITHHOLD_CHANNEL_PREFIX = "bank_direct:"
CODE_DIGITS = 6
AUTHORIZATION_SECONDS = 86400  # a requested mandate awaits its payer's code for a day, then expires
DUE_DAYS_AHEAD_MAX = 366
ORDER_MARGIN_SECONDS = 2 * 86400  # a debit's order outlives its last retry by this much
NUMBER_LENGTH_MAX = 64
KEY_LENGTH_MAX = 200
TEXT_LENGTH_MAX = 256
PAGE_LIMIT_MAX = 500
ERROR_LENGTH_MAX = 500

_NUMBER = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
_ACCOUNT_NUMBER = re.compile(r"[0-9]{8,32}")
_PHONE = re.compile(r"(?:\+?86)?(1[0-9]{10})")
_CODE = re.compile(r"[0-9]{6}")
_PURPOSE = re.compile(r"[a-z0-9_]{1,32}")
_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# --------------------------------------------------------------------------- settings


def retry_schedule_seconds(settings: Settings) -> tuple[int, ...]:
    """``ZHANGFANG_MANDATE_RETRY_SCHEDULE`` (``3d,7d,7d``) as seconds: the wait before each retry."""
    return parse_schedule(settings.mandate_retry_schedule)


def parse_schedule(text: str) -> tuple[int, ...]:
    """``"1d,2d,4d"`` → ``(86400, 172800, 345600)``; units s, m, h, d. ``ValueError`` for anything else."""
    waits = []
    for part in text.split(","):
        found = _DURATION.fullmatch(part.strip())
        if found is None:
            raise ValueError(f"{part.strip()!r} is not a duration such as 3d, 12h, 30m or 45s")
        waits.append(int(found.group(1)) * _UNIT_SECONDS[found.group(2)])
    return tuple(waits)


def restricted_mccs(settings: Settings) -> frozenset[str]:
    """The merchant categories refused for withholding (``ZHANGFANG_MANDATE_RESTRICTED_MCCS``)."""
    return frozenset(part.strip() for part in settings.mandate_restricted_mccs.split(",") if part.strip())


# --------------------------------------------------------------------------- small helpers


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    assert now.tzinfo is not None, "now must be time zone aware"
    return now.astimezone(dt.UTC)


def business_date(moment: dt.datetime) -> dt.date:
    """The date in Asia/Shanghai of an instant: what a due date is compared with."""
    return moment.astimezone(SHANGHAI).date()


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=SHANGHAI).astimezone(dt.UTC)


def _excerpt(text: str | None, length_max: int = ERROR_LENGTH_MAX) -> str | None:
    return None if text is None else text[:length_max]


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _check_number(value: Any, error: type[InvalidInput], field: str) -> str:
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        raise error(f"{field} is 1 to {NUMBER_LENGTH_MAX} characters of A-Z, a-z, 0-9, _, -, . and :", field=field)
    return value


def _check_text(value: Any, field: str, *, length_max: int = TEXT_LENGTH_MAX) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > length_max or not value.isprintable():
        raise errors.MandateDescriptionInvalid(f"{field} is 1 to {length_max} printable characters", field=field)
    return value.strip()


def _check_url(value: Any, field: str = "notify_url") -> str | None:
    if value is None:
        return None
    try:
        return notify.check_url(value)
    except InvalidInput as error:
        raise errors.MandateUrlInvalid(f"{field}: {error.message}", field=field) from None


def _check_amount(value: Any, field: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.AmountMustBeInteger(f"{field} is an integer of the currency's minor unit (fen)", field=field)
    if value <= 0:
        raise errors.AmountMustBePositive(f"{field} must be positive", field=field)
    if value > payments.AMOUNT_MAX_MINOR:
        raise errors.AmountTooLarge(f"{field} is at most {payments.AMOUNT_MAX_MINOR}", field=field)
    return value


def _check_currency(value: Any) -> str:
    if not isinstance(value, str) or not money.is_known_currency(value):
        raise money.CurrencyUnknown("currency is not an ISO 4217 currency code", field="currency")
    return value


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT_MAX:
        raise errors.ListLimitInvalid(f"limit must be from 1 to {PAGE_LIMIT_MAX}", field="limit")
    return limit


def _check_cursor(cursor: Any) -> int:
    if not isinstance(cursor, str) or not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise errors.CursorInvalid("cursor must be the next_cursor of a previous page", field="cursor")
    return int(cursor)


def _check_ref(value: Any, prefix: str) -> str | None:
    return value if isinstance(value, str) and ids.is_valid_id(value, prefix) else None


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _from_row(cls: type[T], row: Row[Any], **values: Any) -> T:
    mapping = row._mapping
    return cls(**{name: values[name] if name in values else mapping[name] for name in _field_names(cls)})


# --------------------------------------------------------------------------- mandates: reading


def _mandate_from_row(row: Row[Any]) -> Mandate:
    return _from_row(Mandate, row)


def _mandate_row(conn: Connection, *, ref: Any, merchant_id: int | None, lock: bool = False) -> Row[Any]:
    query = sa.select(mandates).where(mandates.c.ref == _check_ref(ref, "mdt"))
    if merchant_id is not None:
        query = query.where(mandates.c.merchant_id == merchant_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise errors.MandateNotFound(f"mandate {ref} does not exist", field="mandate")
    return row


def lock_mandate(conn: Connection, *, ref: str) -> None:
    """Lock a mandate's row for the rest of the transaction.

    For other domains that change their own rows and then debit under the mandate (installment
    plans): taking the mandate first keeps the lock order every path here follows — the mandate,
    then its debits and whatever their listeners lock — so the two never deadlock.
    """
    _mandate_row(conn, ref=ref, merchant_id=None, lock=True)


def _lock_mandate_by_id(conn: Connection, mandate_id: int) -> Row[Any]:
    return conn.execute(sa.select(mandates).where(mandates.c.id == mandate_id).with_for_update()).one()


def get_mandate(conn: Connection, *, ref: str, merchant_id: int | None = None) -> Mandate:
    """Returns a mandate; with ``merchant_id``, only that merchant's (another's is ``mandate_not_found``)."""
    return _mandate_from_row(_mandate_row(conn, ref=ref, merchant_id=merchant_id))


def list_mandates(
    conn: Connection,
    *,
    merchant_id: int | None = None,
    user_ref: str | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Returns mandates newest first, optionally one merchant's, one user's, of one state; a page at a time."""
    if state is not None and state not in MANDATE_STATES:
        raise errors.MandateStateInvalid(f"state is one of {', '.join(MANDATE_STATES)}", field="state")
    limit = _check_limit(limit)
    query = sa.select(mandates).order_by(mandates.c.id.desc()).limit(limit + 1)
    if merchant_id is not None:
        query = query.where(mandates.c.merchant_id == merchant_id)
    if user_ref is not None:
        query = query.where(mandates.c.user_ref == user_ref)
    if state is not None:
        query = query.where(mandates.c.state == state)
    if cursor is not None:
        query = query.where(mandates.c.id < _check_cursor(cursor))
    rows = conn.execute(query).all()
    items = [_mandate_from_row(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def mandate_view(mandate: Mandate) -> dict[str, Any]:
    """The mandate as merchants see it, in the API and in webhooks: account and phone masked."""
    return {
        "id": mandate.ref,
        "out_mandate_no": mandate.out_mandate_no,
        "user": mandate.user_ref,
        "state": mandate.state,
        "channel": mandate.channel,
        "account_number_masked": mask(mandate.account_number),
        "account_name": mandate.account_name,
        "phone_masked": mask(mandate.phone),
        "agreement_no": mandate.agreement_no,
        "currency": mandate.currency,
        "limits": {
            "per_debit": mandate.amount_per_debit_max,
            "per_day": mandate.amount_per_day_max,
            "per_month": mandate.amount_per_month_max,
            "total": mandate.amount_total_max,
        },
        "description": mandate.description,
        "notify_url": mandate.notify_url,
        "authorization_expires_at": _iso(mandate.authorization_expires_at),
        "expires_at": _iso(mandate.expires_at),
        "authorized_at": _iso(mandate.authorized_at),
        "activated_at": _iso(mandate.activated_at),
        "suspended_at": _iso(mandate.suspended_at),
        "ended_at": _iso(mandate.ended_at),
        "revoked_by": mandate.revoked_by,
        "end_reason": mandate.end_reason,
        "failure_code": mandate.failure_code,
        "created_at": _iso(mandate.created_at),
    }


def _emit(
    conn: Connection,
    *,
    merchant_id: int,
    url: str | None,
    event: str,
    key: str,
    data: dict[str, Any],
    now: dt.datetime,
) -> None:
    """Writes a webhook in this transaction; a URL the webhook rules now refuse is logged, never a reason to
    refuse recording what happened."""
    if url is None:
        return
    try:
        notify.emit(conn, merchant_id=merchant_id, event_type=event, data=data, url=url, idempotency_key=key, now=now)
    except InvalidInput as error:
        logger.error("mandates: %s for %s not sent to %s: %s", event, key, url, error.message)


def _emit_mandate(conn: Connection, mandate: Mandate, event: str, now: dt.datetime, *, once: bool = True) -> None:
    key = f"{mandate.ref}:{event}" if once else f"{mandate.ref}:{event}:{_iso(now)}"
    _emit(
        conn,
        merchant_id=mandate.merchant_id,
        url=mandate.notify_url,
        event=event,
        key=key,
        data=mandate_view(mandate),
        now=now,
    )


# --------------------------------------------------------------------------- mandates: requesting


def _check_limits(limits: Any, settings: Settings) -> Limits:
    if not isinstance(limits, Limits):
        raise errors.MandateLimitsInvalid("limits has per_debit, per_day, per_month and total", field="limits")
    values: dict[str, int | None] = {}
    for name in ("per_debit", "per_day", "per_month", "total"):
        value = getattr(limits, name)
        if value is None and name in ("per_month", "total"):
            values[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > payments.AMOUNT_MAX_MINOR:
            raise errors.MandateLimitsInvalid(
                f"limits.{name} is a positive integer of the minor unit", field=f"limits.{name}"
            )
        values[name] = value
    per_debit, per_day, per_month, total = (values[n] for n in ("per_debit", "per_day", "per_month", "total"))
    assert per_debit is not None and per_day is not None
    if per_debit > settings.mandate_debit_amount_max:
        raise errors.MandateLimitsInvalid(
            f"limits.per_debit is at most the platform's {settings.mandate_debit_amount_max}",
            field="limits.per_debit",
        )
    if per_day > settings.mandate_daily_amount_max:
        raise errors.MandateLimitsInvalid(
            f"limits.per_day is at most the platform's {settings.mandate_daily_amount_max}", field="limits.per_day"
        )
    ordered = [value for value in (per_debit, per_day, per_month, total) if value is not None]
    if ordered != sorted(ordered):
        raise errors.MandateLimitsInvalid(
            "limits must satisfy per_debit <= per_day <= per_month <= total", field="limits"
        )
    return Limits(per_debit, per_day, per_month, total)


def _check_phone(value: Any) -> str:
    found = _PHONE.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise errors.MandatePhoneInvalid(
            "phone is a mainland mobile number: 11 digits from 1, +86 optional", field="phone"
        )
    return found.group(1)


def withholding_channels(registry: ChannelRegistry) -> list[str]:
    """The configured banks that sign withholding agreements and debit under them."""
    return [
        code
        for code in registry.codes()
        if code.startswith(WITHHOLD_CHANNEL_PREFIX)
        and registry.is_enabled(code)
        and callable(getattr(registry.adapter(code), "withhold", None))
    ]


def _check_channel(registry: ChannelRegistry | None, channel: str | None, currency: str) -> str:
    able = [] if registry is None else withholding_channels(registry)
    able = [code for code in able if registry is not None and currency in registry.adapter(code).currencies]
    if not able or (channel is not None and channel not in able):
        raise errors.MandateChannelUnavailable(
            f"no bank signs withholding agreements in {currency}" + (f" as {channel}" if channel else ""),
            field="channel",
            channels=able,
        )
    return channel or able[0]


def _check_industry(merchant_mcc: str, settings: Settings) -> None:
    if merchant_mcc in restricted_mccs(settings):
        raise errors.MandateIndustryRestricted(
            f"merchants of category {merchant_mcc} may not debit by withholding", field="merchant", mcc=merchant_mcc
        )


def _new_code(conn: Connection, *, mandate_id: int, settings: Settings, now: dt.datetime) -> str:
    """A fresh 6-digit code for the mandate (earlier ones are superseded); only its salted hash is kept."""
    conn.execute(
        mandate_codes.update()
        .where(mandate_codes.c.mandate_id == mandate_id, mandate_codes.c.state == "pending")
        .values(state="superseded")
    )
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    salt = secrets.token_hex(16)
    conn.execute(
        mandate_codes.insert().values(
            mandate_id=mandate_id,
            salt=salt,
            code_hash=_code_hash(salt, code),
            state="pending",
            attempts=0,
            expires_at=now + dt.timedelta(seconds=settings.mandate_code_seconds),
            created_at=now,
        )
    )
    return code


def _code_hash(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}{code}".encode()).hexdigest()


def code_message(mandate: Mandate, code: str, merchant_name: str, settings: Settings) -> str:
    """The text message that carries a code to the payer."""
    minutes = max(1, settings.mandate_code_seconds // 60)
    what = f"（{mandate.description}）" if mandate.description else ""
    return (
        f"【账房】验证码 {code}：您正在授权 {merchant_name} 从尾号 {mandate.account_number[-4:]} 的账户协议代扣{what}，"
        f"{minutes} 分钟内有效。如非本人操作请忽略。"
    )


def create_mandate(
    conn: Connection,
    *,
    merchant: Merchant,
    request: MandateRequest,
    registry: ChannelRegistry | None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> MandateResult:
    """Request a mandate for one of the merchant's payers, idempotently on ``out_mandate_no``.

    The new mandate is ``pending_authorization`` and the result carries a fresh
    one-time code for the caller to send to the payer's phone (after commit);
    a replay carries none. Refusals (``mandates.errors``, in that order) write nothing.
    """
    settings = settings or get_settings()
    now = _now(now)
    out_mandate_no = _check_number(request.out_mandate_no, errors.OutMandateNoInvalid, "out_mandate_no")
    currency = _check_currency(request.currency)
    account_number = request.account_number
    if not isinstance(account_number, str) or not _ACCOUNT_NUMBER.fullmatch(account_number):
        raise errors.MandateAccountInvalid("account_number is 8 to 32 digits", field="account_number")
    account_name = request.account_name
    if not isinstance(account_name, str) or not account_name.strip() or len(account_name) > 100:
        raise errors.MandateAccountInvalid("account_name is 1 to 100 characters", field="account_name")
    account_name = account_name.strip()
    phone = _check_phone(request.phone)
    limits = _check_limits(request.limits, settings)
    expires_at = request.expires_at
    if expires_at is not None:
        if not isinstance(expires_at, dt.datetime) or expires_at.tzinfo is None or expires_at.utcoffset() is None:
            raise errors.MandateExpiresAtInvalid("expires_at is a time with its offset", field="expires_at")
        if expires_at <= now:
            raise errors.MandateExpiresAtInvalid("expires_at must be in the future", field="expires_at")
        expires_at = expires_at.astimezone(dt.UTC)
    description = _check_text(request.description, "description")
    notify_url = _check_url(request.notify_url)
    channel = _check_channel(registry, request.channel, currency)
    _check_industry(merchant.mcc, settings)
    user = parties.get_user(conn, merchant_id=merchant.id, ref=request.user)
    digest = request_digest(
        {
            "user": user.ref,
            "account": [account_number, account_name, phone],
            "limits": dataclasses.asdict(limits),
            "currency": currency,
            "expires_at": _iso(expires_at),
            "description": description,
            "notify_url": notify_url,
            "channel": request.channel,
        }
    )
    existing = conn.execute(
        sa.select(mandates).where(mandates.c.merchant_id == merchant.id, mandates.c.out_mandate_no == out_mandate_no)
    ).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.OutMandateNoConflict(
                "a mandate with this out_mandate_no was requested with other content",
                field="out_mandate_no",
                mandate=existing.ref,
            )
        return MandateResult(mandate=_mandate_from_row(existing), created=False)
    row = conn.execute(
        mandates.insert()
        .values(
            ref=ids.new_id("mdt"),
            merchant_id=merchant.id,
            merchant_ref=merchant.ref,
            out_mandate_no=out_mandate_no,
            request_hash=digest,
            user_id=user.id,
            user_ref=user.ref,
            state="pending_authorization",
            channel=channel,
            account_number=account_number,
            account_name=account_name,
            phone=phone,
            currency=currency,
            amount_per_debit_max=limits.per_debit,
            amount_per_day_max=limits.per_day,
            amount_per_month_max=limits.per_month,
            amount_total_max=limits.total,
            description=description,
            notify_url=notify_url,
            authorization_expires_at=now + dt.timedelta(seconds=AUTHORIZATION_SECONDS),
            expires_at=expires_at,
            created_at=now,
            updated_at=now,
        )
        .returning(*mandates.c)
    ).one()
    code = _new_code(conn, mandate_id=row.id, settings=settings, now=now)
    return MandateResult(mandate=_mandate_from_row(row), created=True, code=code)


def _check_pending(row: Row[Any], now: dt.datetime) -> None:
    if row.state != "pending_authorization" or row.authorized_at is not None:
        raise errors.MandateNotPending(
            f"mandate {row.ref} is {row.state}" + (" and already authorized" if row.authorized_at else ""),
            field="mandate",
            state=row.state,
        )
    if now >= row.authorization_expires_at:
        raise errors.MandateNotPending(
            f"mandate {row.ref} was not authorized in time; request a new one", field="mandate", state="expired"
        )


def issue_code(
    conn: Connection,
    *,
    ref: str,
    merchant_id: int | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> tuple[Mandate, str]:
    """A new one-time code for a mandate awaiting authorization (the earlier one stops working); send it after
    commit. Refused: ``mandate_not_found``, ``mandate_not_pending``."""
    settings = settings or get_settings()
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=merchant_id, lock=True)
    _check_pending(row, now)
    return _mandate_from_row(row), _new_code(conn, mandate_id=row.id, settings=settings, now=now)


def check_code(
    conn: Connection,
    *,
    ref: str,
    code: Any,
    merchant_id: int | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> tuple[Mandate, errors.ZhangfangError | None]:
    """Checks the code the payer gave; returns the mandate and the refusal, if any, for the caller to raise
    AFTER committing — a wrong code is counted, and that count must stick.

    The right code marks the mandate authorized and schedules its signing at the
    bank (``mandates.sign``). A mandate already authorized is returned as it is,
    with no refusal, so a confirmation whose answer was lost can be repeated.
    """
    settings = settings or get_settings()
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=merchant_id, lock=True)
    if row.authorized_at is not None:
        return _mandate_from_row(row), None
    _check_pending(row, now)
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise errors.AuthorizationCodeFormatInvalid("code is the 6 digits sent to the payer's phone", field="code")
    current = conn.execute(
        sa.select(mandate_codes)
        .where(mandate_codes.c.mandate_id == row.id, mandate_codes.c.state == "pending")
        .order_by(mandate_codes.c.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    mandate = _mandate_from_row(row)
    if current is None:
        return mandate, errors.AuthorizationCodeMissing(
            "no code is waiting: ask for a new one", field="code", mandate=row.ref
        )
    if now >= current.expires_at:
        return mandate, errors.AuthorizationCodeExpired("the code has expired: ask for a new one", field="code")
    if not secrets.compare_digest(_code_hash(current.salt, code), current.code_hash):
        attempts = current.attempts + 1
        spent = attempts >= settings.mandate_code_attempts_max
        conn.execute(
            mandate_codes.update()
            .where(mandate_codes.c.id == current.id)
            .values(attempts=attempts, state="spent" if spent else "pending")
        )
        if spent:
            return mandate, errors.AuthorizationCodeAttemptsExceeded(
                f"{attempts} wrong codes: this code no longer works; ask for a new one", field="code"
            )
        return mandate, errors.AuthorizationCodeWrong(
            "the code is wrong", field="code", attempts_left=settings.mandate_code_attempts_max - attempts
        )
    conn.execute(mandate_codes.update().where(mandate_codes.c.id == current.id).values(state="used", used_at=now))
    updated = conn.execute(
        mandates.update()
        .where(mandates.c.id == row.id)
        .values(authorized_at=now, updated_at=now)
        .returning(*mandates.c)
    ).one()
    queue.enqueue(conn, kind=JOB_SIGN, payload={"mandate": row.ref}, dedupe_key=f"{row.ref}:sign", now=now)
    return _mandate_from_row(updated), None


def _move_mandate(conn: Connection, row: Row[Any], state: str, now: dt.datetime, **values: Any) -> Mandate:
    assert can_move(MANDATE_TRANSITIONS, row.state, state), (row.ref, row.state, state)
    updated = conn.execute(
        mandates.update()
        .where(mandates.c.id == row.id)
        .values(state=state, updated_at=now, **values)
        .returning(*mandates.c)
    ).one()
    return _mandate_from_row(updated)


def activate_mandate(conn: Connection, *, ref: str, agreement_no: str, now: dt.datetime | None = None) -> str:
    """The bank signed: the mandate is active with the bank's agreement number; returns what it did
    (``applied``, ``already_active``, or the state that kept it from activating)."""
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=None, lock=True)
    if row.state == "active" and row.agreement_no == agreement_no:
        return "already_active"
    if row.state != "pending_authorization" or row.authorized_at is None:
        # Revoked (or expired) while the bank was signing: the agreement must not stay signed.
        if row.agreement_no is None:
            conn.execute(mandates.update().where(mandates.c.id == row.id).values(agreement_no=agreement_no))
            queue.enqueue(conn, kind=JOB_UNSIGN, payload={"mandate": ref}, dedupe_key=f"{ref}:unsign", now=now)
        return row.state
    mandate = _move_mandate(conn, row, "active", now, agreement_no=agreement_no, activated_at=now)
    _emit_mandate(conn, mandate, "mandate.activated", now)
    return "applied"


def fail_mandate(conn: Connection, *, ref: str, code: str, message: str, now: dt.datetime | None = None) -> str:
    """The bank refused to sign (closed account, invalid card): the mandate fails for good."""
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=None, lock=True)
    if row.state != "pending_authorization":
        return row.state
    mandate = _move_mandate(
        conn, row, "failed", now, ended_at=now, failure_code=_excerpt(code, 64), end_reason=_excerpt(message, 256)
    )
    _emit_mandate(conn, mandate, "mandate.failed", now)
    return "applied"


# --------------------------------------------------------------------------- mandates: changing


def _check_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > TEXT_LENGTH_MAX or not reason.isprintable():
        raise errors.MandateReasonInvalid(f"reason is 1 to {TEXT_LENGTH_MAX} printable characters", field="reason")
    return reason.strip()


def _refuse_transition(row: Row[Any], target: str) -> errors.MandateTransitionNotAllowed:
    return errors.MandateTransitionNotAllowed(
        f"mandate {row.ref} is {row.state}: it cannot become {target}", field="mandate", state=row.state
    )


def revoke_mandate(
    conn: Connection,
    *,
    ref: str,
    by: str,
    reason: str | None = None,
    merchant_id: int | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> Mandate:
    """Revoke a mandate (by the ``user``, the ``merchant`` or an ``operator``): no debit from now on.

    Debits pending or waiting to retry fail in this transaction (hard,
    ``mandate_revoked``); the bank cancels the agreement by a job
    (``mandates.unsign``). Revoking a revoked mandate returns it unchanged;
    an expired or failed one is ``mandate_transition_not_allowed``.
    """
    settings = settings or get_settings()
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=merchant_id, lock=True)
    if by not in REVOKED_BY:
        raise errors.MandateRevokedByInvalid(f"by is one of {', '.join(REVOKED_BY)}", field="by")
    reason = _check_reason(reason)
    if row.state == "revoked":
        return _mandate_from_row(row)
    if not can_move(MANDATE_TRANSITIONS, row.state, "revoked"):
        raise _refuse_transition(row, "revoked")
    mandate = _move_mandate(conn, row, "revoked", now, ended_at=now, revoked_by=by, end_reason=reason)
    _fail_open_debits(conn, mandate_row=row, code="mandate_revoked", settings=settings, now=now)
    if row.agreement_no is not None:
        queue.enqueue(conn, kind=JOB_UNSIGN, payload={"mandate": ref}, dedupe_key=f"{ref}:unsign", now=now)
    _emit_mandate(conn, mandate, "mandate.revoked", now)
    return mandate


def suspend_mandate(
    conn: Connection,
    *,
    ref: str,
    reason: str | None = None,
    merchant_id: int | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> Mandate:
    """Suspend an active mandate: no debit until it is reinstated; debits pending or waiting to retry fail
    (hard, ``mandate_suspended``). Suspending a suspended mandate returns it unchanged."""
    settings = settings or get_settings()
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=merchant_id, lock=True)
    reason = _check_reason(reason)
    if row.state == "suspended":
        return _mandate_from_row(row)
    if row.state != "active":
        raise _refuse_transition(row, "suspended")
    mandate = _move_mandate(conn, row, "suspended", now, suspended_at=now, end_reason=reason)
    _fail_open_debits(conn, mandate_row=row, code="mandate_suspended", settings=settings, now=now)
    _emit_mandate(conn, mandate, "mandate.suspended", now, once=False)
    return mandate


def resume_mandate(
    conn: Connection, *, ref: str, merchant_id: int | None = None, now: dt.datetime | None = None
) -> Mandate:
    """Reinstate a suspended mandate (GoCardless ``reinstated``); resuming an active one returns it unchanged."""
    now = _now(now)
    row = _mandate_row(conn, ref=ref, merchant_id=merchant_id, lock=True)
    if row.state == "active":
        return _mandate_from_row(row)
    if row.state != "suspended" or _expired(row, now):
        raise _refuse_transition(row, "active")
    mandate = _move_mandate(conn, row, "active", now, suspended_at=None, end_reason=None)
    _emit_mandate(conn, mandate, "mandate.reinstated", now, once=False)
    return mandate


def _expired(row: Row[Any], now: dt.datetime) -> bool:
    if row.state == "pending_authorization":
        return now >= row.authorization_expires_at and row.authorized_at is None
    return row.state in ("active", "suspended") and row.expires_at is not None and now >= row.expires_at


def _expire(conn: Connection, row: Row[Any], settings: Settings, now: dt.datetime) -> Mandate:
    mandate = _move_mandate(conn, row, "expired", now, ended_at=now)
    _fail_open_debits(conn, mandate_row=row, code="mandate_expired", settings=settings, now=now)
    if row.agreement_no is not None:
        queue.enqueue(conn, kind=JOB_UNSIGN, payload={"mandate": row.ref}, dedupe_key=f"{row.ref}:unsign", now=now)
    _emit_mandate(conn, mandate, "mandate.expired", now)
    return mandate


def expire_due_mandates(
    conn: Connection, *, settings: Settings | None = None, now: dt.datetime | None = None, limit: int = 500
) -> int:
    """Expires mandates past their end, and requests not authorized in time; returns how many.

    Debits are refused on such a mandate even before this runs (the check reads
    the times); this makes the state say so, fails their open debits and
    cancels their agreements.
    """
    settings = settings or get_settings()
    now = _now(now)
    due = conn.execute(
        sa.select(mandates.c.id)
        .where(
            sa.or_(
                sa.and_(
                    mandates.c.state == "pending_authorization",
                    mandates.c.authorized_at.is_(None),
                    mandates.c.authorization_expires_at <= now,
                ),
                sa.and_(mandates.c.state.in_(("active", "suspended")), mandates.c.expires_at <= now),
            )
        )
        .order_by(mandates.c.id)
        .limit(limit)
    ).all()
    count = 0
    for found in due:
        row = _lock_mandate_by_id(conn, found.id)
        if _expired(row, now):
            _expire(conn, row, settings, now)
            count += 1
    return count


# --------------------------------------------------------------------------- debits: reading

_MANDATE_REF = sa.select(mandates.c.ref).where(mandates.c.id == mandate_debits.c.mandate_id).scalar_subquery()


def _debit_select() -> sa.Select:
    return sa.select(mandate_debits, _MANDATE_REF.label("mandate_ref"))


def _debit_from_row(row: Row[Any]) -> Debit:
    return _from_row(Debit, row)


def get_debit(conn: Connection, *, ref: str, merchant_id: int | None = None) -> Debit:
    """Returns a debit; with ``merchant_id``, only that merchant's."""
    query = _debit_select().where(mandate_debits.c.ref == _check_ref(ref, "dbt"))
    if merchant_id is not None:
        query = query.where(mandate_debits.c.merchant_id == merchant_id)
    row = conn.execute(query).first()
    if row is None:
        raise errors.DebitNotFound(f"debit {ref} does not exist", field="debit")
    return _debit_from_row(row)


def list_debits(
    conn: Connection,
    *,
    merchant_id: int | None = None,
    mandate_ref: str | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Returns debits newest first, optionally one merchant's, one mandate's, of one state."""
    if state is not None and state not in DEBIT_STATES:
        raise errors.MandateStateInvalid(f"state is one of {', '.join(DEBIT_STATES)}", field="state")
    limit = _check_limit(limit)
    query = _debit_select().order_by(mandate_debits.c.id.desc()).limit(limit + 1)
    if merchant_id is not None:
        query = query.where(mandate_debits.c.merchant_id == merchant_id)
    if mandate_ref is not None:
        mandate_id = _mandate_row(conn, ref=mandate_ref, merchant_id=merchant_id).id
        query = query.where(mandate_debits.c.mandate_id == mandate_id)
    if state is not None:
        query = query.where(mandate_debits.c.state == state)
    if cursor is not None:
        query = query.where(mandate_debits.c.id < _check_cursor(cursor))
    rows = conn.execute(query).all()
    items = [_debit_from_row(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def debit_view(debit: Debit) -> dict[str, Any]:
    """A debit as merchants see it (API and webhooks)."""
    return {
        "id": debit.ref,
        "mandate": debit.mandate_ref,
        "key": debit.key,
        "purpose": debit.purpose,
        "purpose_ref": debit.purpose_ref,
        "state": debit.state,
        "amount": debit.amount,
        "currency": debit.currency,
        "due_date": debit.due_date.isoformat(),
        "description": debit.description,
        "tries": debit.tries,
        "next_try_at": _iso(debit.next_try_at),
        "payment": debit.order_ref,
        "failure_class": debit.failure_class,
        "failure_code": debit.failure_code,
        "failure_message": debit.failure_message,
        "created_at": _iso(debit.created_at),
        "finished_at": _iso(debit.finished_at),
    }


# --------------------------------------------------------------------------- debits: listeners

DebitListener = Callable[[Connection, Debit], None]
_listeners: dict[str, list[DebitListener]] = {}
_listeners_lock = threading.Lock()


def register_debit_listener(purpose: str, fn: DebitListener) -> DebitListener:
    """Call ``fn(conn, debit)`` whenever a debit of ``purpose`` becomes final (succeeded, or failed for good).

    It runs in the transaction that makes the debit final (an exception rolls
    that back, and the job retries), once per debit. Registering the same
    function again is harmless. Returns ``fn``, so it works as a decorator
    factory's result: ``register_debit_listener("loan", on_loan_debit)``.
    """
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise ValueError(f"purpose must match {_PURPOSE.pattern}, got {purpose!r}")
    with _listeners_lock:
        found = _listeners.setdefault(purpose, [])
        if fn not in found:
            found.append(fn)
    return fn


def unregister_debit_listener(purpose: str, fn: DebitListener) -> None:
    """Stop calling ``fn`` for ``purpose`` (tests)."""
    with _listeners_lock:
        if fn in _listeners.get(purpose, []):
            _listeners[purpose].remove(fn)


def _debit_finished(conn: Connection, debit: Debit, now: dt.datetime) -> None:
    """A debit became final: tell the listeners of its purpose, its merchant, and its batch."""
    with _listeners_lock:
        listeners = list(_listeners.get(debit.purpose, []))
    for listener in listeners:
        listener(conn, debit)
    event = "debit.succeeded" if debit.state == "succeeded" else "debit.failed"
    _emit_debit(conn, debit, event, now)
    if debit.batch_id is not None:
        finish_batch_if_done(conn, batch_id=debit.batch_id, now=now)


def _emit_debit(conn: Connection, debit: Debit, event: str, now: dt.datetime, *, key: str | None = None) -> None:
    url = debit.notify_url
    if url is None:
        url = conn.execute(sa.select(mandates.c.notify_url).where(mandates.c.id == debit.mandate_id)).scalar_one()
    _emit(
        conn,
        merchant_id=debit.merchant_id,
        url=url,
        event=event,
        key=key or f"{debit.ref}:{event}",
        data=debit_view(debit),
        now=now,
    )


# --------------------------------------------------------------------------- debits: creating


def _check_due_date(value: Any, now: dt.datetime) -> dt.date:
    today = business_date(now)
    if value is None:
        return today
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise errors.DueDateInvalid("due_date is a date (YYYY-MM-DD, Asia/Shanghai)", field="due_date")
    if not today <= value <= today + dt.timedelta(days=DUE_DAYS_AHEAD_MAX):
        raise errors.DueDateInvalid(
            f"due_date is from today to {DUE_DAYS_AHEAD_MAX} days ahead (Asia/Shanghai)", field="due_date"
        )
    return value


def _check_key(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= KEY_LENGTH_MAX
        or not value.isascii()
        or not value.isprintable()
    ):
        raise errors.DebitKeyInvalid(f"key is 1 to {KEY_LENGTH_MAX} printable ASCII characters", field="key")
    return value


def _mandate_refusal(row: Row[Any], settings: Settings, merchant_mcc: str, now: dt.datetime) -> str | None:
    """Why this mandate may not be debited now (a debit failure reason), or None."""
    if row.state == "revoked":
        return "mandate_revoked"
    if row.state == "suspended":
        return "mandate_suspended"
    if row.state == "expired" or _expired(row, now):
        return "mandate_expired"
    if row.state != "active":
        return "mandate_not_active"
    if merchant_mcc in restricted_mccs(settings):
        return "industry_restricted"
    return None


def _check_within_limits(
    conn: Connection, row: Row[Any], *, amount: int, due_date: dt.date, settings: Settings
) -> None:
    """Refuses a debit the mandate's or the platform's limits do not allow; the mandate row is locked."""
    per_debit = min(row.amount_per_debit_max, settings.mandate_debit_amount_max)
    if amount > per_debit:
        raise errors.AmountExceedsDebitLimit(
            f"one debit may take at most {per_debit}", field="amount", limit=per_debit, amount=amount
        )
    first = due_date.replace(day=1)
    last = due_date.replace(day=calendar.monthrange(due_date.year, due_date.month)[1])
    d = mandate_debits.c
    sums = conn.execute(
        sa.select(
            sum_minor(sa.case((d.due_date == due_date, d.amount), else_=0)).label("day"),
            sum_minor(sa.case((d.due_date.between(first, last), d.amount), else_=0)).label("month"),
            sum_minor(d.amount).label("total"),
        ).where(d.mandate_id == row.id, d.state.in_(COUNTED_DEBIT_STATES))
    ).one()
    day, month, total = sums.day or 0, sums.month or 0, sums.total or 0
    per_day = min(row.amount_per_day_max, settings.mandate_daily_amount_max)
    if day + amount > per_day:
        raise errors.DailyLimitExceeded(
            f"debits due on {due_date} would exceed the daily limit of {per_day}",
            field="amount",
            limit=per_day,
            used=day,
        )
    if row.amount_per_month_max is not None and month + amount > row.amount_per_month_max:
        raise errors.MonthlyLimitExceeded(
            f"debits due in {due_date:%Y-%m} would exceed the monthly limit of {row.amount_per_month_max}",
            field="amount",
            limit=row.amount_per_month_max,
            used=month,
        )
    if row.amount_total_max is not None and total + amount > row.amount_total_max:
        raise errors.TotalLimitExceeded(
            f"debits would exceed the mandate's total limit of {row.amount_total_max}",
            field="amount",
            limit=row.amount_total_max,
            used=total,
        )


def request_debit(
    conn: Connection,
    *,
    merchant_id: int,
    mandate_ref: str,
    amount: int,
    currency: str,
    key: str,
    due_date: dt.date | None = None,
    purpose: str = "single",
    purpose_ref: str | None = None,
    description: str | None = None,
    notify_url: str | None = None,
    batch_id: int | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> DebitResult:
    """``create_debit`` that also says whether the debit is new (``created``) or a replay of ``key``."""
    settings = settings or get_settings()
    now = _now(now)
    key = _check_key(key)
    amount = _check_amount(amount)
    currency = _check_currency(currency)
    due = _check_due_date(due_date, now)
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise errors.DebitPurposeInvalid("purpose is 1 to 32 of a-z, 0-9 and _", field="purpose")
    if purpose_ref is not None and (
        not isinstance(purpose_ref, str) or not 1 <= len(purpose_ref) <= 64 or not purpose_ref.isprintable()
    ):
        raise errors.DebitPurposeInvalid("purpose_ref is 1 to 64 printable characters", field="purpose_ref")
    description = _check_text(description, "description")
    notify_url = _check_url(notify_url)
    found = conn.execute(
        sa.select(mandates.c.id).where(
            mandates.c.ref == _check_ref(mandate_ref, "mdt"), mandates.c.merchant_id == merchant_id
        )
    ).first()
    if found is None:
        raise errors.MandateNotFound(f"mandate {mandate_ref} does not exist", field="mandate")
    # The mandate's lock serializes every debit of this mandate: the sums below see all admitted before.
    row = _lock_mandate_by_id(conn, found.id)
    digest = request_digest(
        {
            "mandate": row.ref,
            "amount": amount,
            "currency": currency,
            "due_date": due.isoformat(),
            "purpose": purpose,
            "purpose_ref": purpose_ref,
            "description": description,
            "notify_url": notify_url,
        }
    )
    existing = conn.execute(
        _debit_select().where(mandate_debits.c.merchant_id == merchant_id, mandate_debits.c.key == key)
    ).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.DebitKeyConflict(
                "a debit with this key was requested with other content", field="key", debit=existing.ref
            )
        return DebitResult(debit=_debit_from_row(existing), created=False)
    if currency != row.currency:
        raise errors.CurrencyMismatch(f"the mandate debits {row.currency}", field="currency")
    merchant = parties.find_merchant_by_id(conn, merchant_id=merchant_id)
    assert merchant is not None
    refusal = _mandate_refusal(row, settings, merchant.mcc, now)
    if refusal == "industry_restricted":
        _check_industry(merchant.mcc, settings)
    if refusal is not None:
        state = "expired" if refusal == "mandate_expired" else row.state
        raise errors.MandateNotActive(f"mandate {row.ref} is {state}", field="mandate", state=state)
    _check_within_limits(conn, row, amount=amount, due_date=due, settings=settings)
    inserted = conn.execute(
        mandate_debits.insert()
        .values(
            ref=ids.new_id("dbt"),
            mandate_id=row.id,
            merchant_id=merchant_id,
            key=key,
            request_hash=digest,
            purpose=purpose,
            purpose_ref=purpose_ref,
            state="pending",
            amount=amount,
            currency=currency,
            due_date=due,
            description=description,
            notify_url=notify_url,
            batch_id=batch_id,
            tries=0,
            attempt_unknown=False,
            created_at=now,
            updated_at=now,
        )
        .returning(mandate_debits.c.ref)
    ).one()
    run_at = max(now, _start_of(due))
    queue.enqueue(
        conn,
        kind=JOB_DEBIT,
        payload={"debit": inserted.ref},
        run_at=run_at,
        dedupe_key=f"{inserted.ref}:try:1",
        now=now,
    )
    return DebitResult(debit=get_debit(conn, ref=inserted.ref))


def create_debit(
    conn: Connection,
    *,
    merchant_id: int,
    mandate_ref: str,
    amount: int,
    currency: str,
    key: str,
    due_date: dt.date | None = None,
    purpose: str = "single",
    purpose_ref: str | None = None,
    now: dt.datetime | None = None,
) -> Debit:
    """Debit the payer of ``mandate_ref`` (one of ``merchant_id``'s mandates), idempotently on ``key``.

    The debit is admitted within the mandate's limits and due on ``due_date``
    (today in Asia/Shanghai by default); a job (``mandates.debit``) asks the
    bank on that day. ``purpose`` and ``purpose_ref`` tell other domains
    (installments, loans) which debits are theirs: their listeners
    (``register_debit_listener``) learn the outcome. Refusals
    (``mandates.errors``, in that order) write nothing.
    """
    return request_debit(
        conn,
        merchant_id=merchant_id,
        mandate_ref=mandate_ref,
        amount=amount,
        currency=currency,
        key=key,
        due_date=due_date,
        purpose=purpose,
        purpose_ref=purpose_ref,
        now=now,
    ).debit


# --------------------------------------------------------------------------- debits: trying at the bank


@dataclass(frozen=True)
class DebitTry:
    """One call to make to the bank: ``withhold(agreement_no, amount, out_trade_no=attempt_ref)``."""

    debit_ref: str
    attempt_ref: str
    channel: str
    agreement_no: str
    amount: int
    currency: str
    subject: str
    tries: int


def _locked_debit(conn: Connection, ref: str) -> tuple[Row[Any], Row[Any]] | None:
    """The mandate's row, then the debit's, both locked (always in this order), or None."""
    found = conn.execute(sa.select(mandate_debits.c.mandate_id).where(mandate_debits.c.ref == ref)).first()
    if found is None:
        return None
    mandate_row = _lock_mandate_by_id(conn, found.mandate_id)
    debit_row = conn.execute(
        _debit_select().where(mandate_debits.c.ref == ref).with_for_update(of=mandate_debits)
    ).one()
    return mandate_row, debit_row


def _move_debit(conn: Connection, row: Row[Any], state: str, now: dt.datetime, **values: Any) -> Debit:
    assert row.state == state or can_move(DEBIT_TRANSITIONS, row.state, state), (row.ref, row.state, state)
    conn.execute(
        mandate_debits.update().where(mandate_debits.c.id == row.id).values(state=state, updated_at=now, **values)
    )
    return get_debit(conn, ref=row.ref)


def _merchant_mcc(conn: Connection, merchant_id: int) -> str:
    merchant = parties.find_merchant_by_id(conn, merchant_id=merchant_id)
    assert merchant is not None
    return merchant.mcc


def _order_expiry(due_date: dt.date, settings: Settings, now: dt.datetime) -> dt.datetime:
    return max(now, _start_of(due_date)) + dt.timedelta(
        seconds=sum(retry_schedule_seconds(settings)) + ORDER_MARGIN_SECONDS
    )


def begin_try(
    conn: Connection, *, ref: str, settings: Settings | None = None, now: dt.datetime | None = None
) -> DebitTry | None:
    """Prepares the next call to the bank for a debit (``processing``); None when there is nothing to call.

    A debit whose mandate no longer allows debits fails here (hard). A debit
    whose last call got no answer (or whose worker died during it) calls again
    with the same attempt, so the bank answers the debit it made, if it made
    one. Otherwise a new attempt of the debit's order (created on the first
    try) is started at the mandate's bank.
    """
    settings = settings or get_settings()
    now = _now(now)
    locked = _locked_debit(conn, ref)
    if locked is None:
        return None
    mandate_row, row = locked
    if row.state in FINAL_DEBIT_STATES:
        return None
    if _expired(mandate_row, now):
        # Expiring fails the debits not at the bank; one whose last call got no answer is asked once more below.
        _expire(conn, mandate_row, settings, now)
        locked = _locked_debit(conn, ref)
        assert locked is not None
        mandate_row, row = locked
        if row.state in FINAL_DEBIT_STATES:
            return None
    again = row.attempt_ref is not None and (row.state == "processing" or row.attempt_unknown)
    refusal = _mandate_refusal(mandate_row, settings, _merchant_mcc(conn, row.merchant_id), now)
    if refusal is not None and not again:
        _fail(conn, mandate_row, row, "hard", refusal, f"the mandate does not allow debits: {refusal}", settings, now)
        return None
    order_ref = row.order_ref
    subject = row.description or mandate_row.description or f"协议代扣 {mandate_row.ref}"
    if again:
        attempt_ref = row.attempt_ref
    else:
        merchant = parties.find_merchant_by_id(conn, merchant_id=row.merchant_id)
        assert merchant is not None
        order = payments.create_withholding_order(
            conn,
            merchant=merchant,
            out_trade_no=row.ref,
            amount=row.amount,
            currency=row.currency,
            subject=subject,
            user_ref=mandate_row.user_ref,
            expires_at=_order_expiry(row.due_date, settings, now),
            metadata={"mandate": mandate_row.ref, "debit": row.ref, "purpose": row.purpose},
            now=now,
        )
        order_ref = order.ref
        route = Route(
            channel=mandate_row.channel,
            method="bank_card",
            channel_method="withhold",
            currency=row.currency,
            amount_min_minor=1,
            amount_max_minor=payments.AMOUNT_MAX_MINOR,
            cost_rate=Decimal(0),
            cost_fixed_minor=0,
            priority=0,
        )
        try:
            attempt_ref = payments.start_attempt(conn, order_ref=order.ref, route=route, now=now).ref
        except payment_errors.PaymentNotPayable:
            _fail(
                conn,
                mandate_row,
                row,
                "hard",
                "order_closed",
                f"payment {order.ref} is no longer payable",
                settings,
                now,
            )
            return None
    debit = _move_debit(
        conn,
        row,
        "processing",
        now,
        tries=row.tries if again else row.tries + 1,
        order_ref=order_ref,
        attempt_ref=attempt_ref,
        attempt_unknown=False,
        next_try_at=None,
    )
    assert mandate_row.agreement_no is not None and attempt_ref is not None
    return DebitTry(
        debit_ref=ref,
        attempt_ref=attempt_ref,
        channel=mandate_row.channel,
        agreement_no=mandate_row.agreement_no,
        amount=debit.amount,
        currency=debit.currency,
        subject=subject,
        tries=debit.tries,
    )


def record_success(
    conn: Connection,
    *,
    ref: str,
    attempt_ref: str,
    amount: int | None,
    currency: str | None,
    channel_trade_no: str | None,
    paid_at: dt.datetime | None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The bank debited: the order is paid (booked as any payment) and the debit succeeded; returns what it did.

    ``applied``; ``already_finished``; ``amount_mismatch`` (the bank reports
    another amount: nothing is booked and the debit stays ``processing`` for
    operators); ``duplicate`` (the debit had failed meanwhile — its order was
    closed — so ``payments`` books the money as owed back and refunds it).
    """
    settings = settings or get_settings()
    now = _now(now)
    locked = _locked_debit(conn, ref)
    assert locked is not None, ref
    row = locked[1]
    outcome = payments.apply_payment_success(
        conn,
        attempt_ref=attempt_ref,
        amount=amount,
        currency=currency,
        channel_trade_no=channel_trade_no,
        paid_at=paid_at,
        settings=settings,
        now=now,
    )
    if outcome == "amount_mismatch":
        payments.flag_attempt(
            conn, ref=attempt_ref, code="amount_mismatch", message=f"the bank reports {amount} {currency}", now=now
        )
        conn.execute(
            mandate_debits.update()
            .where(mandate_debits.c.id == row.id)
            .values(failure_message=f"the bank reports {amount} {currency}: operators must look", updated_at=now)
        )
        return outcome
    if outcome == "duplicate" or row.state in FINAL_DEBIT_STATES:
        if outcome == "duplicate":
            logger.warning("mandates: debit %s is %s but the bank debited %s: refunding", ref, row.state, attempt_ref)
        return "duplicate" if outcome == "duplicate" else "already_finished"
    debit = _move_debit(
        conn,
        row,
        "succeeded",
        now,
        finished_at=now,
        attempt_unknown=False,
        failure_class=None,
        failure_code=None,
        failure_message=None,
    )
    _debit_finished(conn, debit, now)
    return "applied"


def record_failure(
    conn: Connection,
    *,
    ref: str,
    attempt_ref: str,
    reason: str,
    message: str,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The bank refused the debit, or did not answer (``channel_timeout``); returns the debit's new state.

    Soft reasons (``insufficient_funds``, ``channel_timeout``) wait for the
    next retry of the schedule (``retrying``, a job at ``next_try_at``), or
    fail once the schedule is spent; hard reasons fail at once. A debit whose
    mandate was revoked, suspended or expired meanwhile fails hard for that
    reason. An unanswered call leaves its attempt open: the next try asks with it.
    """
    settings = settings or get_settings()
    now = _now(now)
    locked = _locked_debit(conn, ref)
    assert locked is not None, ref
    mandate_row, row = locked
    if row.state in FINAL_DEBIT_STATES or row.attempt_ref != attempt_ref:
        return row.state
    unknown = reason == "channel_timeout"
    if not unknown:
        payments.mark_attempt_failed(conn, ref=attempt_ref, code=reason, message=message, close_later=False, now=now)
    refusal = _mandate_refusal(mandate_row, settings, _merchant_mcc(conn, row.merchant_id), now)
    if refusal is not None:
        # No retry under a mandate that no longer allows debits. An unanswered call's order is closed too:
        # its attempt is then asked about at the bank, and a debit made after all is refunded (``payments``).
        _fail(conn, mandate_row, row, "hard", refusal, f"{message}; the mandate does not allow debits", settings, now)
        return "failed"
    if reason not in SOFT_REASONS:
        _fail(conn, mandate_row, row, "hard", reason, message, settings, now)
        return "failed"
    schedule = retry_schedule_seconds(settings)
    if row.tries > len(schedule):
        _fail(conn, mandate_row, row, "soft", reason, f"{message} (after {row.tries} tries)", settings, now)
        return "failed"
    next_try_at = now + dt.timedelta(seconds=schedule[row.tries - 1])
    debit = _move_debit(
        conn,
        row,
        "retrying",
        now,
        next_try_at=next_try_at,
        attempt_unknown=unknown,
        failure_class="soft",
        failure_code=reason,
        failure_message=_excerpt(message),
    )
    queue.enqueue(
        conn,
        kind=JOB_DEBIT,
        payload={"debit": ref},
        run_at=next_try_at,
        dedupe_key=f"{ref}:try:{row.tries + 1}",
        now=now,
    )
    _emit_debit(conn, debit, "debit.retrying", now, key=f"{ref}:debit.retrying:{row.tries}")
    return "retrying"


def _fail(
    conn: Connection,
    mandate_row: Row[Any],
    row: Row[Any],
    failure_class: str,
    code: str,
    message: str,
    settings: Settings,
    now: dt.datetime,
) -> Debit:
    """Fails a debit for good: its order closes (so nothing can pay it later) and everyone is told."""
    debit = _move_debit(
        conn,
        row,
        "failed",
        now,
        finished_at=now,
        next_try_at=None,
        failure_class=failure_class,
        failure_code=_excerpt(code, 64),
        failure_message=_excerpt(message),
    )
    if row.order_ref is not None:
        order = payments.get_order(conn, ref=row.order_ref)
        if order.state == "pending":
            # Its attempts are closed at the bank by jobs, which first ask whether one was paid after all;
            # such a payment is refunded (``payments``).
            payments.close_order(conn, ref=order.ref, reason="merchant", settings=settings, now=now)
    _debit_finished(conn, debit, now)
    return debit


def _fail_open_debits(
    conn: Connection, *, mandate_row: Row[Any], code: str, settings: Settings, now: dt.datetime
) -> int:
    """Fails the mandate's debits not yet at the bank (pending, or waiting to retry); the mandate is locked."""
    rows = conn.execute(
        _debit_select()
        .where(mandate_debits.c.mandate_id == mandate_row.id, mandate_debits.c.state.in_(("pending", "retrying")))
        .order_by(mandate_debits.c.id)
        .with_for_update(of=mandate_debits)
    ).all()
    for row in rows:
        _fail(conn, mandate_row, row, "hard", code, f"the mandate is {code.removeprefix('mandate_')}", settings, now)
    return len(rows)


# --------------------------------------------------------------------------- batches: progress


def finish_batch_if_done(conn: Connection, *, batch_id: int, now: dt.datetime | None = None) -> bool:
    """Marks a batch finished once every row is final (refused, or its debit succeeded or failed) and tells
    the merchant (``debit_batch.finished``); True if this call finished it."""
    now = _now(now)
    batch = conn.execute(sa.select(mandate_batches).where(mandate_batches.c.id == batch_id).with_for_update()).one()
    if batch.state == "finished":
        return False
    r, d = mandate_batch_rows.c, mandate_debits.c
    open_rows = conn.execute(
        sa.select(sa.func.count())
        .select_from(mandate_batch_rows.outerjoin(mandate_debits, d.id == r.debit_id))
        .where(
            r.batch_id == batch_id,
            sa.or_(r.state == "pending", sa.and_(r.state == "submitted", d.state.not_in(FINAL_DEBIT_STATES))),
        )
    ).scalar_one()
    if open_rows:
        return False
    conn.execute(
        mandate_batches.update()
        .where(mandate_batches.c.id == batch_id)
        .values(state="finished", finished_at=now, updated_at=now)
    )
    counts = batch_counts(conn, batch_id=batch_id)
    _emit(
        conn,
        merchant_id=batch.merchant_id,
        url=batch.notify_url,
        event="debit_batch.finished",
        key=f"{batch.ref}:debit_batch.finished",
        data={
            "id": batch.ref,
            "merchant_batch_no": batch.merchant_batch_no,
            "state": "finished",
            "row_count": batch.row_count,
            "amount_total": batch.amount_total,
            "currency": batch.currency,
            "counts": counts,
            "finished_at": _iso(now),
        },
        now=now,
    )
    return True


def batch_counts(conn: Connection, *, batch_id: int) -> dict[str, int]:
    """A batch's rows by result: pending, processing, retrying, succeeded, failed (refused rows are failed)."""
    r, d = mandate_batch_rows.c, mandate_debits.c
    state = sa.case((r.state == "refused", "failed"), (r.state == "pending", "pending"), else_=d.state)
    rows = conn.execute(
        sa.select(state.label("state"), sa.func.count().label("n"))
        .select_from(mandate_batch_rows.outerjoin(mandate_debits, d.id == r.debit_id))
        .where(r.batch_id == batch_id)
        .group_by(state)
    ).all()
    counts = dict.fromkeys(DEBIT_STATES, 0)
    counts.update({row.state: row.n for row in rows})
    return counts


def merchant_mandates(conn: Connection, *, merchant_id: int, refs: Collection[str]) -> dict[str, Row[Any]]:
    """The merchant's mandates among ``refs``: ref → (ref, currency, state); refs it has not are left out."""
    refs = sorted({ref for ref in refs if _check_ref(ref, "mdt")})
    found: dict[str, Row[Any]] = {}
    for start in range(0, len(refs), 500):
        for row in conn.execute(
            sa.select(mandates.c.ref, mandates.c.currency, mandates.c.state).where(
                mandates.c.merchant_id == merchant_id, mandates.c.ref.in_(refs[start : start + 500])
            )
        ):
            found[row.ref] = row
    return found
