"""The webhooks' HTTP routers: a merchant's own events and signing secret (signed), every event for operators.

- ``router`` (``/v1/merchant/webhooks/…``, every request and response signed,
  ``zhangfang.api.merchant_auth``): list your events, read one with its
  attempts, replay one, rotate your signing secret (``Idempotency-Key``; the
  new secret is in that answer only, and in its replays). Another merchant's
  event is ``404 webhook_event_not_found``, exactly as an id that does not exist.
- ``admin_router`` (``/v1/admin/webhooks/…``, admin bearer key): list any
  merchant's events, read one, replay one.

Each handler is one unit of work (``run_in_transaction``); services never
commit. A replay answers 202: the event is pending again and a worker delivers it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine

from zhangfang.api.deps import get_engine, make_admin_router
from zhangfang.api.merchant_auth import (
    IdempotentPost,
    authenticated_merchant,
    idempotent_post,
    make_merchant_router,
    signed_doc,
)
from zhangfang.api.responses import error_doc
from zhangfang.db.uow import run_in_transaction
from zhangfang.notify import service as notify
from zhangfang.notify.models import EVENT_STATES, Page, SecretRotation, WebhookAttempt, WebhookEvent
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant

# --------------------------------------------------------------------------- shapes

EventState = Literal["pending", "delivered", "dead", "disabled"]
STATE_DESCRIPTION = "pending, delivered, dead or disabled"


class WebhookAttemptOut(BaseModel):
    number: int = Field(description="1, 2, … for this event, replays included")
    started_at: dt.datetime
    finished_at: dt.datetime | None = Field(description="null while it runs, or if the sending worker died")
    duration_ms: int | None = Field(description="the HTTP exchange, in milliseconds")
    status_code: int | None = Field(description="your endpoint's HTTP status; null when no answer came")
    outcome: Literal["delivered", "failed", "gone"] | None = Field(
        description="delivered (2xx), gone (410: the event is disabled), failed (anything else); null unfinished"
    )
    error: str | None = Field(description="why no answer came (timeout, connection refused, …)")
    response_excerpt: str | None = Field(description="the first 1 KB of your endpoint's answer")

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> WebhookAttemptOut:
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.status_code,
            outcome=attempt.outcome,
            error=attempt.error,
            response_excerpt=attempt.response_excerpt,
        )


class WebhookEventOut(BaseModel):
    id: str = Field(description="msg_…, sent as the webhook-id header on every attempt and replay")
    type: str = Field(examples=["payment.succeeded"])
    state: EventState = Field(
        description="pending (attempts to come), delivered (a 2xx answered), dead (the schedule ran out), "
        "disabled (your endpoint answered 410 Gone)"
    )
    url: str
    data: dict[str, Any] = Field(description="the event's data, as in the webhook body")
    attempt_count: int = Field(description="attempts started so far, replays included")
    created_at: dt.datetime = Field(description="the event's time: the body's timestamp")
    delivered_at: dt.datetime | None = Field(description="the last 2xx answer")

    @classmethod
    def fields_of(cls, event: WebhookEvent) -> dict[str, Any]:
        return {
            "id": event.ref,
            "type": event.event_type,
            "state": event.state,
            "url": event.url,
            "data": dict(event.data),
            "attempt_count": event.attempts,
            "created_at": event.created_at,
            "delivered_at": event.delivered_at,
        }

    @classmethod
    def of(cls, event: WebhookEvent) -> WebhookEventOut:
        return cls(**cls.fields_of(event))


class WebhookEventDetailOut(WebhookEventOut):
    attempts: list[WebhookAttemptOut] = Field(description="every attempt, first first")

    @classmethod
    def of_detail(cls, event: WebhookEvent, attempts: list[WebhookAttempt]) -> WebhookEventDetailOut:
        return cls(**WebhookEventOut.fields_of(event), attempts=[WebhookAttemptOut.of(a) for a in attempts])


class WebhookEventPage(BaseModel):
    items: list[WebhookEventOut]
    next_cursor: str | None = Field(description="pass as cursor for older events; null on the last page")


class AdminWebhookEventOut(WebhookEventOut):
    merchant_id: str = Field(description="mch_…")
    idempotency_key: str = Field(description="the emitter's key")
    replays: int
    job_id: str | None = Field(description="the job (job_…) delivering the event now")

    @classmethod
    def fields_of(cls, event: WebhookEvent) -> dict[str, Any]:
        return {
            **WebhookEventOut.fields_of(event),
            "merchant_id": event.merchant_ref,
            "idempotency_key": event.idempotency_key,
            "replays": event.replays,
            "job_id": event.job_ref,
        }

    @classmethod
    def of(cls, event: WebhookEvent) -> AdminWebhookEventOut:
        return cls(**cls.fields_of(event))


class AdminWebhookEventDetailOut(AdminWebhookEventOut):
    attempts: list[WebhookAttemptOut]

    @classmethod
    def of_detail(cls, event: WebhookEvent, attempts: list[WebhookAttempt]) -> AdminWebhookEventDetailOut:
        return cls(**AdminWebhookEventOut.fields_of(event), attempts=[WebhookAttemptOut.of(a) for a in attempts])


class AdminWebhookEventPage(BaseModel):
    items: list[AdminWebhookEventOut]
    next_cursor: str | None


class WebhookSecretOut(BaseModel):
    secret: str = Field(
        description="whsec_ and the base64 of 32 random bytes: the Standard Webhooks secret, shown in this answer "
        "only (and in its replays under the same Idempotency-Key)"
    )
    created_at: dt.datetime
    previous_secret_expires_at: dt.datetime | None = Field(
        description="until then your previous secret signs too (each webhook carries both signatures); "
        "null when there was none"
    )

    @classmethod
    def of(cls, rotation: SecretRotation) -> WebhookSecretOut:
        return cls(
            secret=rotation.secret,
            created_at=rotation.created_at,
            previous_secret_expires_at=rotation.previous_expires_at,
        )


# --------------------------------------------------------------------------- helpers


def _page(page: Page) -> WebhookEventPage:
    return WebhookEventPage(items=[WebhookEventOut.of(e) for e in page.items], next_cursor=page.next_cursor)


StateQuery = Query(default=None, description=STATE_DESCRIPTION, json_schema_extra={"enum": list(EVENT_STATES)})
CursorQuery = Query(default=None, description="next_cursor of the previous page")
LimitQuery = Query(default=50, description="1 to 500")

# --------------------------------------------------------------------------- merchant API (signed)

merchant_router = make_merchant_router(prefix="/v1/merchant/webhooks", tags=["merchant: webhooks"])


@merchant_router.get(
    "/events",
    response_model=WebhookEventPage,
    summary="Your webhook events, newest first",
    responses={
        200: signed_doc(WebhookEventPage, "a page of your events"),
        422: error_doc("request_invalid, webhook_event_state_invalid, cursor_invalid, limit_invalid"),
    },
)
def list_events(
    state: str | None = StateQuery,
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
) -> WebhookEventPage:
    page = run_in_transaction(
        engine,
        lambda conn: notify.list_events(conn, merchant_id=merchant.id, state=state, cursor=cursor, limit=limit),
        readonly=True,
    )
    return _page(page)


@merchant_router.get(
    "/events/{event_id}",
    response_model=WebhookEventDetailOut,
    summary="One of your webhook events, with every delivery attempt",
    responses={
        200: signed_doc(WebhookEventDetailOut, "the event and its attempts"),
        404: error_doc("webhook_event_not_found (also for another merchant's event)"),
    },
)
def get_event(
    event_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> WebhookEventDetailOut:
    def read(conn: Connection) -> WebhookEventDetailOut:
        event = notify.get_event(conn, event_id=event_id, merchant_id=merchant.id)
        return WebhookEventDetailOut.of_detail(event, notify.list_attempts(conn, event_id=event_id))

    return run_in_transaction(engine, read, readonly=True)


@merchant_router.post(
    "/events/{event_id}/replay",
    response_model=WebhookEventOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver one of your events again, with the same webhook-id (delivered, dead or disabled events)",
    responses={
        202: signed_doc(WebhookEventOut, "the event, pending again: a worker delivers it shortly"),
        404: error_doc("webhook_event_not_found (also for another merchant's event)"),
        422: error_doc("webhook_event_not_replayable (the event is still pending)"),
    },
)
def replay_event(
    event_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> WebhookEventOut:
    event = run_in_transaction(engine, lambda conn: notify.replay(conn, event_id=event_id, merchant_id=merchant.id))
    return WebhookEventOut.of(event)


@merchant_router.post(
    "/secret/rotate",
    response_model=WebhookSecretOut,
    summary="Make a new webhook signing secret (shown in this answer only); the previous one signs on for 24 h",
    responses={
        200: signed_doc(WebhookSecretOut, "the new secret", replayable=True),
        409: error_doc("idempotency_key_conflict"),
        422: error_doc("request_invalid (Idempotency-Key missing, …), idempotency_key_invalid"),
    },
)
def rotate_secret(
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
) -> Response:
    def work(conn: Connection) -> tuple[int, BaseModel]:
        return status.HTTP_200_OK, WebhookSecretOut.of(notify.rotate_secret(conn, merchant_id=merchant.id))

    return idempotency.respond(engine, work)


# --------------------------------------------------------------------------- admin

admin_router = make_admin_router(prefix="/v1/admin/webhooks", tags=["admin: webhooks"])


@admin_router.get(
    "/events",
    response_model=AdminWebhookEventPage,
    summary="Webhook events of every merchant (or of one), newest first",
    responses={
        404: error_doc("merchant_not_found"),
        422: error_doc("request_invalid, webhook_event_state_invalid, cursor_invalid, limit_invalid"),
    },
)
def admin_list_events(
    state: str | None = StateQuery,
    merchant: str | None = Query(default=None, description="only this merchant's (mch_…)"),
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    engine: Engine = Depends(get_engine),
) -> AdminWebhookEventPage:
    def read(conn: Connection) -> Page:
        merchant_id = None if merchant is None else parties.get_merchant(conn, ref=merchant).id
        return notify.list_events(conn, merchant_id=merchant_id, state=state, cursor=cursor, limit=limit)

    page = run_in_transaction(engine, read, readonly=True)
    return AdminWebhookEventPage(items=[AdminWebhookEventOut.of(e) for e in page.items], next_cursor=page.next_cursor)


@admin_router.get(
    "/events/{event_id}",
    response_model=AdminWebhookEventDetailOut,
    summary="A webhook event with every delivery attempt",
    responses={404: error_doc("webhook_event_not_found")},
)
def admin_get_event(event_id: str, engine: Engine = Depends(get_engine)) -> AdminWebhookEventDetailOut:
    def read(conn: Connection) -> AdminWebhookEventDetailOut:
        event = notify.get_event(conn, event_id=event_id)
        return AdminWebhookEventDetailOut.of_detail(event, notify.list_attempts(conn, event_id=event_id))

    return run_in_transaction(engine, read, readonly=True)


@admin_router.post(
    "/events/{event_id}/replay",
    response_model=AdminWebhookEventOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver an event again, with the same webhook-id (delivered, dead or disabled events)",
    responses={
        404: error_doc("webhook_event_not_found"),
        422: error_doc("webhook_event_not_replayable (the event is still pending)"),
    },
)
def admin_replay_event(event_id: str, engine: Engine = Depends(get_engine)) -> AdminWebhookEventOut:
    event = run_in_transaction(engine, lambda conn: notify.replay(conn, event_id=event_id))
    return AdminWebhookEventOut.of(event)


# --------------------------------------------------------------------------- what the app includes

router = APIRouter()
router.include_router(merchant_router)
