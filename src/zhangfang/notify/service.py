"""Outbound merchant webhooks: emit an event, deliver it signed per Standard Webhooks, retry, dead-letter, replay.

A domain that has news for a merchant (a payment succeeded, a refund failed)
calls ``emit`` on its own connection, in the transaction that records the news:
the event row and its delivery job (``zhangfang.jobs.queue``, kind
``notify.deliver``) commit with the news or not at all. Workers then POST

    {"type": "payment.succeeded", "timestamp": "<event time, ISO 8601>", "data": {…}}

to the event's URL with the Standard Webhooks headers ``webhook-id`` (the
event's ``msg_…`` id, the same on every attempt and replay),
``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per valid secret,
space-separated), made by the ``standardwebhooks`` package.

Every function that takes a ``Connection`` expects it inside a transaction and
never commits: the caller owns the unit of work. The job handler ``deliver``
takes the engine and runs its own short transactions around the HTTP request.

Guarantees
- A rolled-back emit leaves nothing behind: no event, no job, no delivery.
- Emitting is idempotent on (merchant, ``idempotency_key``): the same key with
  the same type, data and URL returns the first event (``created=False``);
  with other content it is ``idempotency_key_conflict``. A refused emit writes
  nothing.
- At least once: a committed event is POSTed until a 2xx answers, a 410
  disables it, or the schedule runs out. A worker that dies mid-delivery
  (SIGKILL, power loss) leaves the job leased; when the lease runs out another
  worker sends the event again, with the same ``webhook-id``. Receivers
  deduplicate on ``webhook-id``.
- The retry schedule is ``RETRY_SCHEDULE_SECONDS`` after the first attempt:
  5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h after each failure
  (each stretched or shrunk by up to 10 % at random), ten attempts over more
  than three days. A ``Retry-After`` answer postpones the next attempt to at
  least that many seconds, bounded by ``RETRY_AFTER_SECONDS_MAX``. When the
  last attempt starts the event is ``dead`` unless that attempt succeeds.
- Every attempt is logged: its row is committed before the request leaves, then
  completed with status, duration, error and a 1 KB excerpt of the answer. An
  attempt whose worker died keeps a row without an outcome.
- Only the event's current job changes its state: after a replay, an older
  job's late answer is logged but decides nothing.
- Secrets: each merchant has one current secret (made on first use), and a
  rotated-out secret keeps signing beside the new one for
  ``secret_grace_seconds`` (24 h by default), so receivers can switch over
  without losing a delivery. The new secret is shown once, by ``rotate_secret``.
- A merchant only ever reaches its own events: another merchant's is
  ``webhook_event_not_found``, as for an id that does not exist.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from secrets import token_bytes
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row
from standardwebhooks import Webhook

from zhangfang import ids
from zhangfang.config import get_settings
from zhangfang.db.sql import insert_ignoring_conflict, request_digest
from zhangfang.db.uow import RetryableConflict, run_in_transaction
from zhangfang.jobs import queue
from zhangfang.jobs.models import Job
from zhangfang.notify import errors
from zhangfang.notify.models import (
    EVENT_STATES,
    REPLAYABLE_STATES,
    EmitResult,
    Page,
    SecretRotation,
    WebhookAttempt,
    WebhookEvent,
)
from zhangfang.notify.tables import CURRENT_SECRET_SQL, webhook_attempts, webhook_events, webhook_secrets
from zhangfang.parties import service as parties

__all__ = [
    "ATTEMPTS_MAX",
    "JOB_KIND",
    "RETRY_SCHEDULE_SECONDS",
    "DeliveryFailed",
    "check_url",
    "deliver",
    "emit",
    "get_event",
    "list_attempts",
    "list_events",
    "replay",
    "rotate_secret",
    "signature_header",
    "signing_secrets",
    "webhook_body",
]

logger = logging.getLogger(__name__)

JOB_KIND = "notify.deliver"
# The published schedule (docs/webhooks.md): the wait after each failed attempt. The first attempt is
# immediate; ten attempts in all, the last one 24 h after the ninth, about 75 h after the first.
RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
ATTEMPTS_MAX = len(RETRY_SCHEDULE_SECONDS) + 1
RETRY_JITTER_RATIO = 0.1
RETRY_AFTER_SECONDS_MAX = 3600

KEY_LENGTH_MAX = 200
EVENT_TYPE_LENGTH_MAX = 64
URL_LENGTH_MAX = 2048
PAYLOAD_BYTES_MAX = 64 * 1024
RESPONSE_EXCERPT_BYTES_MAX = 1024
ERROR_LENGTH_MAX = 2000
PAGE_LIMIT_MAX = 500
REF_LENGTH_MAX = 40
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = "zhangfang-webhooks/1"

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")


class DeliveryFailed(queue.RetryAfter):
    """An attempt got no 2xx (nor 410): the queue retries the job on the schedule, or after ``seconds``."""


# --------------------------------------------------------------------------- validation


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    assert now.tzinfo is not None and now.utcoffset() is not None, "now must be time zone aware"
    return now.astimezone(dt.UTC)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= KEY_LENGTH_MAX or not key.isascii() or not key.isprintable():
        raise errors.IdempotencyKeyInvalid(
            f"idempotency_key must be 1 to {KEY_LENGTH_MAX} printable ASCII characters", field="idempotency_key"
        )
    return key


def _check_event_type(event_type: Any) -> str:
    if (
        not isinstance(event_type, str)
        or len(event_type) > EVENT_TYPE_LENGTH_MAX
        or not _EVENT_TYPE.fullmatch(event_type)
    ):
        raise errors.EventTypeInvalid(
            "an event type is dotted lower-case words such as payment.succeeded, "
            f"at most {EVENT_TYPE_LENGTH_MAX} characters",
            field="event_type",
        )
    return event_type


def _check_data(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise errors.PayloadInvalid("data must be a JSON object", field="data")
    data = dict(data)
    try:
        encoded = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise errors.PayloadInvalid(f"data is not plain JSON: {exc}", field="data") from None
    if json.loads(encoded) != data:
        # json.dumps turns tuples into lists and 1 into "1" as a key: refuse what would not read back.
        raise errors.PayloadInvalid(
            "data must be plain JSON: string keys; dict, list, str, int, float, bool or None values", field="data"
        )
    if len(encoded.encode()) > PAYLOAD_BYTES_MAX:
        raise errors.PayloadInvalid(f"data exceeds {PAYLOAD_BYTES_MAX} bytes of JSON", field="data")
    return data


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: Any, *, allow_http: bool | None = None) -> str:
    """Returns ``url`` if webhooks may be sent to it; ``webhook_url_invalid`` or ``webhook_url_must_be_https``.

    An absolute ``https`` URL with a host, at most 2048 printable ASCII
    characters, no credentials, no fragment. ``http`` only to a loopback host
    (``localhost``, 127.0.0.0/8, ``::1``) or when ``allow_http`` (default: the
    ``ZHANGFANG_WEBHOOK_ALLOW_HTTP`` setting) is on.
    """
    if allow_http is None:
        allow_http = get_settings().webhook_allow_http
    reason = "a webhook URL is an absolute http(s) URL with a host, such as https://shop.example.com/notify"
    if (
        not isinstance(url, str)
        or not 1 <= len(url) <= URL_LENGTH_MAX
        or not url.isascii()
        or not url.isprintable()
        or any(char.isspace() for char in url)
    ):
        raise errors.UrlInvalid(f"{reason}; at most {URL_LENGTH_MAX} printable ASCII characters", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise errors.UrlInvalid(reason, field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.UrlInvalid(reason, field="url")
    if parts.username is not None or parts.password is not None:
        raise errors.UrlInvalid("a webhook URL carries no user name or password", field="url")
    if parts.fragment or url.endswith("#"):
        raise errors.UrlInvalid("a webhook URL has no #fragment", field="url")
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise errors.UrlMustBeHttps("webhooks are sent over https only (http only to a loopback host)", field="url")
    return url


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT_MAX:
        raise errors.LimitInvalid(f"limit must be from 1 to {PAGE_LIMIT_MAX}", field="limit")
    return limit


def _check_cursor(cursor: Any) -> int:
    if not isinstance(cursor, str) or not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise errors.CursorInvalid("cursor must be the next_cursor of a previous page", field="cursor")
    return int(cursor)


def _merchant_ref(conn: Connection, merchant_id: Any) -> str:
    """The ``mch_…`` id of the merchant with this internal key; ``merchant_not_found`` if there is none."""
    if isinstance(merchant_id, bool) or not isinstance(merchant_id, int) or merchant_id < 1:
        raise errors.MerchantNotFound(f"merchant {merchant_id!r} does not exist", field="merchant_id")
    merchant = parties.find_merchant_by_id(conn, merchant_id=merchant_id)
    if merchant is None:
        raise errors.MerchantNotFound(f"merchant {merchant_id} does not exist", field="merchant_id")
    return merchant.ref


# --------------------------------------------------------------------------- rows


def _event_from_row(row: Row[Any]) -> WebhookEvent:
    return WebhookEvent(
        id=row.id,
        ref=row.ref,
        merchant_id=row.merchant_id,
        merchant_ref=row.merchant_ref,
        idempotency_key=row.idempotency_key,
        event_type=row.event_type,
        data=row.payload,
        url=row.url,
        state=row.state,
        attempts=row.attempts,
        replays=row.replays,
        job_ref=row.job_ref,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )


def _attempt_from_row(row: Row[Any]) -> WebhookAttempt:
    return WebhookAttempt(
        number=row.number,
        job_ref=row.job_ref,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        status_code=row.status_code,
        outcome=row.outcome,
        error=row.error,
        response_excerpt=row.response_excerpt,
    )


# --------------------------------------------------------------------------- emit


def emit(
    conn: Connection,
    *,
    merchant_id: int,
    event_type: str,
    data: Mapping[str, Any],
    url: str,
    idempotency_key: str,
    now: dt.datetime | None = None,
    allow_http: bool | None = None,
) -> EmitResult:
    """Write an event for ``merchant_id`` (the internal key) and its delivery job, in the caller's transaction.

    Idempotent on (merchant, ``idempotency_key``); ``allow_http`` overrides the
    setting of that name. Refusals (``notify.errors``, in that order) write nothing.
    """
    key = _check_key(idempotency_key)
    event_type = _check_event_type(event_type)
    data = _check_data(data)
    url = check_url(url, allow_http=allow_http)
    merchant_ref = _merchant_ref(conn, merchant_id)
    digest = request_digest({"event_type": event_type, "data": data, "url": url})
    now = _now(now)

    def existing() -> Row[Any] | None:
        return conn.execute(
            sa.select(webhook_events).where(
                webhook_events.c.merchant_id == merchant_id, webhook_events.c.idempotency_key == key
            )
        ).first()

    row = existing()
    if row is None:
        ref = ids.new_id("msg")
        # A concurrent emit with the same key may commit first: do nothing then (PostgreSQL waits for it) and
        # answer with what it wrote.
        inserted = conn.execute(
            insert_ignoring_conflict(conn, webhook_events, ["merchant_id", "idempotency_key"])
            .values(
                ref=ref,
                merchant_id=merchant_id,
                merchant_ref=merchant_ref,
                idempotency_key=key,
                request_hash=digest,
                event_type=event_type,
                payload=data,
                url=url,
                state="pending",
                attempts=0,
                replays=0,
                created_at=now,
            )
            .returning(webhook_events.c.id)
        ).first()
        if inserted is not None:
            job = queue.enqueue(conn, kind=JOB_KIND, payload={"event": ref}, dedupe_key=ref, now=now)
            row = conn.execute(
                webhook_events.update()
                .where(webhook_events.c.id == inserted.id)
                .values(job_ref=job.ref)
                .returning(*webhook_events.c)
            ).one()
            return EmitResult(event=_event_from_row(row), created=True)
        row = existing()
        assert row is not None, f"idempotency key {key!r} conflicted but no event carries it"
    if row.request_hash != digest:
        raise errors.IdempotencyKeyConflict(
            "this merchant's idempotency key was used for an event with another type, data or URL",
            field="idempotency_key",
            event=row.ref,
        )
    return EmitResult(event=_event_from_row(row), created=False)


# --------------------------------------------------------------------------- reading


def _event_row(conn: Connection, event_id: Any, merchant_id: int | None, *, lock: bool = False) -> Row[Any]:
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= REF_LENGTH_MAX:
        raise errors.EventNotFound(f"webhook event {event_id!r} does not exist", field="event_id")
    query = sa.select(webhook_events).where(webhook_events.c.ref == event_id)
    if merchant_id is not None:
        query = query.where(webhook_events.c.merchant_id == merchant_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise errors.EventNotFound(f"webhook event {event_id} does not exist", field="event_id")
    return row


def get_event(conn: Connection, *, event_id: str, merchant_id: int | None = None) -> WebhookEvent:
    """Returns the event ``msg_…``; with ``merchant_id``, only if it is that merchant's."""
    return _event_from_row(_event_row(conn, event_id, merchant_id))


def list_attempts(conn: Connection, *, event_id: str, merchant_id: int | None = None) -> list[WebhookAttempt]:
    """Returns the event's attempts, first first; with ``merchant_id``, only if it is that merchant's event."""
    row = _event_row(conn, event_id, merchant_id)
    rows = conn.execute(
        sa.select(webhook_attempts).where(webhook_attempts.c.event_id == row.id).order_by(webhook_attempts.c.number)
    ).all()
    return [_attempt_from_row(attempt) for attempt in rows]


def list_events(
    conn: Connection,
    *,
    merchant_id: int | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Returns events newest first, optionally one merchant's and of one state; pass ``next_cursor`` for older."""
    if state is not None and state not in EVENT_STATES:
        raise errors.EventStateInvalid(f"state must be one of {', '.join(EVENT_STATES)}", field="state")
    limit = _check_limit(limit)
    query = sa.select(webhook_events).order_by(webhook_events.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(webhook_events.c.id < _check_cursor(cursor))
    if merchant_id is not None:
        query = query.where(webhook_events.c.merchant_id == merchant_id)
    if state is not None:
        query = query.where(webhook_events.c.state == state)
    rows = conn.execute(query).all()
    items = [_event_from_row(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


# --------------------------------------------------------------------------- replay


def replay(
    conn: Connection, *, event_id: str, merchant_id: int | None = None, now: dt.datetime | None = None
) -> WebhookEvent:
    """Deliver a delivered, dead or disabled event again: a new job, the same ``webhook-id``; returns it pending.

    A ``pending`` event whose job ended without delivering it (its worker died
    on the last attempt before the attempt was logged) is replayable too. With
    ``merchant_id``, only that merchant's event. The new job has the whole
    schedule ahead of it; the attempts are numbered on from the earlier ones.
    """
    row = _event_row(conn, event_id, merchant_id, lock=True)
    if row.state not in REPLAYABLE_STATES and not _job_ended(conn, row.job_ref):
        raise errors.EventNotReplayable(
            f"webhook event {row.ref} is {row.state}: its delivery is under way; "
            f"only a {', '.join(REPLAYABLE_STATES[:-1])} or {REPLAYABLE_STATES[-1]} event can be replayed",
            field="event_id",
            state=row.state,
        )
    now = _now(now)
    replays = row.replays + 1
    job = queue.enqueue(
        conn, kind=JOB_KIND, payload={"event": row.ref}, dedupe_key=f"{row.ref}:replay:{replays}", now=now
    )
    updated = conn.execute(
        webhook_events.update()
        .where(webhook_events.c.id == row.id)
        .values(state="pending", replays=replays, job_ref=job.ref)
        .returning(*webhook_events.c)
    ).one()
    logger.info("webhooks: %s replayed (%d) as job %s", row.ref, replays, job.ref)
    return _event_from_row(updated)


def _job_ended(conn: Connection, job_ref: str | None) -> bool:
    if job_ref is None:
        return False
    return queue.get_job(conn, ref=job_ref).state in ("dead", "failed")


# --------------------------------------------------------------------------- secrets


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def _valid_secrets(conn: Connection, merchant_id: int, now: dt.datetime) -> list[Row[Any]]:
    return conn.execute(
        sa.select(webhook_secrets)
        .where(
            webhook_secrets.c.merchant_id == merchant_id,
            sa.or_(webhook_secrets.c.expires_at.is_(None), webhook_secrets.c.expires_at > now),
        )
        .order_by(webhook_secrets.c.expires_at.is_not(None), webhook_secrets.c.id.desc())
    ).all()


def _insert_current_secret(conn: Connection, merchant_id: int, now: dt.datetime) -> str | None:
    """Insert a new current secret; None if another transaction made one first."""
    secret = _new_secret()
    inserted = conn.execute(
        insert_ignoring_conflict(conn, webhook_secrets, ["merchant_id"], where=sa.text(CURRENT_SECRET_SQL))
        .values(merchant_id=merchant_id, secret=secret, created_at=now, expires_at=None)
        .returning(webhook_secrets.c.id)
    ).first()
    return None if inserted is None else secret


def signing_secrets(conn: Connection, *, merchant_id: int, now: dt.datetime | None = None) -> list[str]:
    """The secrets that sign the merchant's webhooks now, current first; the first use makes the current one."""
    now = _now(now)
    rows = _valid_secrets(conn, merchant_id, now)
    if not rows or rows[0].expires_at is not None:
        _insert_current_secret(conn, merchant_id, now)
        rows = _valid_secrets(conn, merchant_id, now)
    assert rows and rows[0].expires_at is None, f"merchant {merchant_id} has no current webhook secret"
    return [row.secret for row in rows]


def rotate_secret(
    conn: Connection, *, merchant_id: int, now: dt.datetime | None = None, grace_seconds: int | None = None
) -> SecretRotation:
    """Make a new current secret for the merchant and return it (this once).

    The secret it replaces keeps signing for ``grace_seconds`` (default: the
    ``secret_grace_seconds`` setting, 24 h); any older one stops now. Not
    idempotent by itself: the API's ``Idempotency-Key`` makes a retried
    rotation answer the first one.
    """
    _merchant_ref(conn, merchant_id)
    now = _now(now)
    grace = get_settings().webhook_secret_grace_seconds if grace_seconds is None else grace_seconds
    assert grace >= 0, grace
    conn.execute(
        webhook_secrets.update()
        .where(
            webhook_secrets.c.merchant_id == merchant_id,
            webhook_secrets.c.expires_at.is_not(None),
            webhook_secrets.c.expires_at > now,
        )
        .values(expires_at=now)
    )
    previous_expires_at = now + dt.timedelta(seconds=grace)
    previous = conn.execute(
        webhook_secrets.update()
        .where(webhook_secrets.c.merchant_id == merchant_id, sa.text(CURRENT_SECRET_SQL))
        .values(expires_at=previous_expires_at)
        .returning(webhook_secrets.c.id)
    ).first()
    secret = _insert_current_secret(conn, merchant_id, now)
    if secret is None:
        raise RetryableConflict("a concurrent rotation or first use made a current webhook secret first")
    return SecretRotation(
        secret=secret, created_at=now, previous_expires_at=previous_expires_at if previous is not None else None
    )


# --------------------------------------------------------------------------- signing


def webhook_body(event: WebhookEvent) -> str:
    """The JSON text POSTed for ``event``: ``{"type", "timestamp", "data"}``, the same on every attempt."""
    timestamp = event.created_at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    body = {"type": event.event_type, "timestamp": timestamp, "data": dict(event.data)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def signature_header(*, msg_id: str, timestamp: dt.datetime, body: str, secrets: Sequence[str]) -> str:
    """``webhook-signature``: ``v1,<base64>`` per secret, space-separated (``standardwebhooks`` signs)."""
    assert secrets, "a webhook is signed with at least one secret"
    at = timestamp.astimezone(dt.UTC)  # Webhook.sign reads the time as UTC whatever its zone
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


# --------------------------------------------------------------------------- delivery (the job handler)


@dataclass(frozen=True)
class _Delivery:
    event_id: int
    ref: str
    url: str
    body: str
    attempt_id: int
    number: int
    secrets: list[str] = field(repr=False)


@dataclass(frozen=True)
class _Answer:
    status_code: int | None
    retry_after: str | None
    excerpt: str | None
    error: str | None


def _start_attempt(conn: Connection, *, event_ref: str, job: Job, now: dt.datetime) -> _Delivery | None:
    """Log the attempt about to be made; None when there is nothing to send (settled, or replayed under another job)."""
    row = conn.execute(sa.select(webhook_events).where(webhook_events.c.ref == event_ref).with_for_update()).first()
    if row is None:
        logger.error("webhooks: job %s names event %r, which does not exist", job.ref, event_ref)
        return None
    if row.job_ref != job.ref or row.state != "pending":
        logger.info("webhooks: %s is %s (job %s); job %s sends nothing", row.ref, row.state, row.job_ref, job.ref)
        return None
    number = row.attempts + 1
    last = job.attempts >= job.attempts_max
    # When the last attempt starts, no automatic attempt follows whatever happens to this one: the event is dead
    # unless it succeeds, also if the worker dies during it (the queue then dead-letters the job).
    conn.execute(
        webhook_events.update()
        .where(webhook_events.c.id == row.id)
        .values(attempts=number, state="dead" if last else "pending")
    )
    attempt_id = conn.execute(
        webhook_attempts.insert()
        .values(event_id=row.id, number=number, job_ref=job.ref, started_at=now)
        .returning(webhook_attempts.c.id)
    ).scalar_one()
    return _Delivery(
        event_id=row.id,
        ref=row.ref,
        url=row.url,
        body=webhook_body(_event_from_row(row)),
        attempt_id=attempt_id,
        number=number,
        secrets=signing_secrets(conn, merchant_id=row.merchant_id, now=now),
    )


def _excerpt(response: httpx.Response) -> str:
    collected = bytearray()
    for chunk in response.iter_bytes():
        collected += chunk
        if len(collected) >= RESPONSE_EXCERPT_BYTES_MAX:
            break
    # Cut at 1024 bytes; a character cut in two (or any invalid byte) is dropped.
    return bytes(collected[:RESPONSE_EXCERPT_BYTES_MAX]).decode("utf-8", errors="ignore")


_http_client: httpx.Client | None = None
_http_client_lock = threading.Lock()


def _client() -> httpx.Client:
    """One HTTP client per process, kept: building one loads the CA bundle (about 16 ms of CPU), which per
    delivery was most of a worker's time; it also keeps connections to busy receivers open."""
    global _http_client
    if _http_client is None:
        with _http_client_lock:
            if _http_client is None:
                _http_client = httpx.Client(follow_redirects=False)
    return _http_client


def _post(url: str, body: bytes, headers: dict[str, str], timeout_seconds: float) -> _Answer:
    status_code: int | None = None
    retry_after: str | None = None
    try:
        with _client().stream("POST", url, content=body, headers=headers, timeout=timeout_seconds) as response:
            status_code, retry_after = response.status_code, response.headers.get("retry-after")
            return _Answer(status_code=status_code, retry_after=retry_after, excerpt=_excerpt(response), error=None)
    except httpx.HTTPError as error:
        text = f"{type(error).__name__}: {error}".strip()
        return _Answer(status_code=status_code, retry_after=retry_after, excerpt=None, error=text[:ERROR_LENGTH_MAX])


def _retry_after_seconds(value: str | None, now: dt.datetime) -> float:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date), bounded; 0 when absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)  # seconds, not money
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_SECONDS_MAX)


def _finish_attempt(
    conn: Connection,
    *,
    delivery: _Delivery,
    job: Job,
    answer: _Answer,
    outcome: str,
    duration_ms: int,
    now: dt.datetime,
) -> None:
    conn.execute(
        webhook_attempts.update()
        .where(webhook_attempts.c.id == delivery.attempt_id)
        .values(
            finished_at=now,
            duration_ms=duration_ms,
            status_code=answer.status_code,
            outcome=outcome,
            error=answer.error,
            response_excerpt=answer.excerpt,
        )
    )
    values = {"delivered": {"state": "delivered", "delivered_at": now}, "gone": {"state": "disabled"}}.get(outcome)
    if values is not None:
        conn.execute(
            webhook_events.update()
            .where(
                webhook_events.c.id == delivery.event_id,
                webhook_events.c.job_ref == job.ref,  # a replay since then decides for itself
                webhook_events.c.state.in_(("pending", "dead")),
            )
            .values(**values)
        )


@queue.handler(
    JOB_KIND,
    attempts_max=ATTEMPTS_MAX,
    retry_schedule_seconds=RETRY_SCHEDULE_SECONDS,
    jitter_ratio=RETRY_JITTER_RATIO,
)
def deliver(engine: Engine, job: Job) -> None:
    """The ``notify.deliver`` job: one signed POST of the job's event; raises ``DeliveryFailed`` to be retried.

    2xx: delivered. 410 Gone: disabled, no retry. Anything else (another
    status, a timeout, a refused connection): the attempt failed and the queue
    retries on the schedule (or after ``Retry-After``), until the job is dead.
    """
    settings = get_settings()
    event_ref = str(job.payload.get("event", ""))
    delivery = run_in_transaction(
        engine, lambda conn: _start_attempt(conn, event_ref=event_ref, job=job, now=_now(None))
    )
    if delivery is None:
        return
    signed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.ref,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": signature_header(
            msg_id=delivery.ref, timestamp=signed_at, body=delivery.body, secrets=delivery.secrets
        ),
    }
    started = time.monotonic()
    answer = _post(delivery.url, delivery.body.encode("utf-8"), headers, settings.webhook_timeout_seconds)
    duration_ms = max(0, round((time.monotonic() - started) * 1000))
    status = answer.status_code
    if status is not None and 200 <= status <= 299:
        outcome = "delivered"
    elif status == 410:
        outcome = "gone"
    else:
        outcome = "failed"
    finished_at = _now(None)
    run_in_transaction(
        engine,
        lambda conn: _finish_attempt(
            conn, delivery=delivery, job=job, answer=answer, outcome=outcome, duration_ms=duration_ms, now=finished_at
        ),
    )
    where = f"{delivery.ref} attempt {delivery.number} (job {job.ref} {job.attempts}/{job.attempts_max})"
    if outcome == "delivered":
        logger.info("webhooks: %s delivered: HTTP %s in %d ms", where, status, duration_ms)
        return
    if outcome == "gone":
        logger.warning("webhooks: %s: HTTP 410 Gone; the event is disabled", where)
        return
    reason = f"HTTP {status}" if status is not None else answer.error or "no answer"
    raise DeliveryFailed(
        f"webhook {where} to {delivery.url} failed: {reason}",
        seconds=_retry_after_seconds(answer.retry_after, finished_at),
    )
