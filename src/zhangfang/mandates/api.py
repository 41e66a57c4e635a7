"""Withholding mandates over HTTP: the merchant API (signed) and operators' views (admin key).

- ``router`` for merchants (``/v1/mandates``, every request and answer signed,
  ``zhangfang.api.merchant_auth``): request a mandate for one of your payers
  (the payer receives a one-time code by text message), pass on the code the
  payer gives you (``…/confirm``), send a new code, read, list and revoke
  mandates; debit under a mandate (``…/{mandate}/debits``), read debits; upload
  a withholding batch file (``/batches``) and download its per-row results.
  Creating a mandate, a debit or a batch takes an ``Idempotency-Key``. Another
  merchant's object is ``404`` (``mandate_not_found``, ``debit_not_found``,
  ``debit_batch_not_found``), exactly as an id that does not exist.
- ``admin_router`` (``/v1/admin/mandates``, admin key): any mandate; suspend,
  reinstate, revoke on a payer's behalf (customer service); the sandbox's text
  messages (``/sandbox/sms``, when ``ZHANGFANG_SANDBOX`` is on).

Each handler is one unit of work; services never commit. Amounts are integers
of the minor unit (fen for CNY), never JSON floats.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy.engine import Connection, Engine

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
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import NotFound
from zhangfang.mandates import batch, flows, service
from zhangfang.mandates.models import DEBIT_STATES, MANDATE_STATES, Limits, MandateRequest
from zhangfang.parties.models import Merchant
from zhangfang.payments.api import get_registry

# --------------------------------------------------------------------------- shapes


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


AMOUNT_DESCRIPTION = "integer amount in the currency's minor unit (fen for CNY), greater than zero"
MandateState = Literal["pending_authorization", "active", "suspended", "revoked", "expired", "failed"]
DebitState = Literal["pending", "processing", "retrying", "succeeded", "failed"]


class LimitsIn(_Request):
    per_debit: StrictInt = Field(description="the most one debit may take (" + AMOUNT_DESCRIPTION + ")")
    per_day: StrictInt = Field(description="the most all debits due on one day may take")
    per_month: StrictInt | None = Field(default=None, description="the most all debits due in one month may take")
    total: StrictInt | None = Field(default=None, description="the most all debits may take, ever")


class MandateIn(_Request):
    out_mandate_no: str = Field(description="your number for the mandate; requesting again with it is idempotent")
    user: str = Field(description="usr_… of one of your payers")
    account_number: str = Field(description="the payer's bank card or account, 8 to 32 digits")
    account_name: str = Field(description="the account holder's name")
    phone: str = Field(description="the payer's mainland mobile number; the one-time code goes there")
    limits: LimitsIn
    currency: str = Field(default="CNY")
    expires_at: dt.datetime | None = Field(default=None, description="no debit from then on (default: never)")
    description: str | None = Field(default=None, description="what the payer agrees to, in the text message")
    notify_url: str | None = Field(default=None, description="where mandate.* and debit.* webhooks go (https)")
    channel: str | None = Field(default=None, description="the bank (bank_direct:<bank>); default: the first")


class LimitsOut(BaseModel):
    per_debit: int
    per_day: int
    per_month: int | None
    total: int | None


class MandateOut(BaseModel):
    """A mandate, exactly as its webhooks carry it; account and phone masked."""

    id: str = Field(description="mdt_…")
    out_mandate_no: str
    user: str
    state: MandateState = Field(
        description="pending_authorization (awaiting the payer's code), active, suspended, revoked, expired, failed "
        "(the bank refused to sign)"
    )
    channel: str
    account_number_masked: str
    account_name: str
    phone_masked: str
    agreement_no: str | None = Field(description="the bank's agreement number, once signed")
    currency: str
    limits: LimitsOut
    description: str | None
    notify_url: str | None
    authorization_expires_at: dt.datetime | None
    expires_at: dt.datetime | None
    authorized_at: dt.datetime | None
    activated_at: dt.datetime | None
    suspended_at: dt.datetime | None
    ended_at: dt.datetime | None
    revoked_by: Literal["user", "merchant", "operator"] | None
    end_reason: str | None
    failure_code: str | None
    created_at: dt.datetime | None


class MandateCreatedOut(MandateOut):
    replayed: bool = Field(description="true when this out_mandate_no had requested this mandate before")


class MandatePage(BaseModel):
    items: list[MandateOut]
    next_cursor: str | None


class ConfirmIn(_Request):
    code: str = Field(description="the 6 digits the payer received", examples=["123456"])


class RevokeIn(_Request):
    by: Literal["merchant", "user"] = Field(default="merchant", description="who revokes: you, or your payer")
    reason: str | None = Field(default=None, description="at most 256 characters")


class ReasonIn(_Request):
    reason: str | None = Field(default=None, description="at most 256 characters")


class AdminRevokeIn(_Request):
    by: Literal["user", "operator"] = Field(default="user", description="the payer (through customer service)")
    reason: str | None = Field(default=None, description="at most 256 characters")


class DebitIn(_Request):
    out_debit_no: str = Field(description="your number for the debit: 1 to 64 of A-Z a-z 0-9 _ - . :; idempotent")
    amount: StrictInt = Field(description=AMOUNT_DESCRIPTION)
    currency: str = Field(default="CNY")
    due_date: dt.date | None = Field(default=None, description="debit on this day (Asia/Shanghai); default today")
    description: str | None = Field(default=None, description="on the payer's statement, at most 256 characters")
    notify_url: str | None = Field(default=None, description="debit.* webhooks (default: the mandate's)")


class DebitOut(BaseModel):
    id: str = Field(description="dbt_…")
    mandate: str
    key: str = Field(description="api:<out_debit_no> for debits made here")
    purpose: str
    purpose_ref: str | None
    state: DebitState = Field(
        description="pending, processing (at the bank), retrying (failed softly; tried again at next_try_at), "
        "succeeded, failed"
    )
    amount: int
    currency: str
    due_date: dt.date
    description: str | None
    tries: int
    next_try_at: dt.datetime | None
    payment: str | None = Field(description="pay_…, the payment order the debit pays")
    failure_class: Literal["soft", "hard"] | None
    failure_code: str | None = Field(
        description="insufficient_funds, channel_timeout (soft); mandate_revoked, mandate_suspended, "
        "mandate_expired, account_closed, agreement_invalid, industry_restricted, bank_refused (hard)"
    )
    failure_message: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class DebitCreatedOut(DebitOut):
    replayed: bool


class DebitPage(BaseModel):
    items: list[DebitOut]
    next_cursor: str | None


class BatchIn(_Request):
    content: str = Field(
        description="the CSV file: merchant_batch_no,row_no,mandate,amount,due_date,reference (amount in yuan)"
    )
    notify_url: str | None = Field(default=None, description="debit.* and debit_batch.finished webhooks")


class BatchOut(BaseModel):
    id: str = Field(description="dbb_…")
    merchant_batch_no: str
    state: Literal["processing", "finished"]
    row_count: int
    amount_total: int
    currency: str
    counts: dict[str, int] = Field(description="rows by result: pending, processing, retrying, succeeded, failed")
    created_at: dt.datetime
    finished_at: dt.datetime | None


class BatchCreatedOut(BatchOut):
    replayed: bool


class SmsOut(BaseModel):
    phone: str
    text: str
    code: str | None
    sent_at: dt.datetime


class SmsList(BaseModel):
    items: list[SmsOut]


def _batch_out(found: Any) -> dict[str, Any]:
    return {
        "id": found.ref,
        "merchant_batch_no": found.merchant_batch_no,
        "state": found.state,
        "row_count": found.row_count,
        "amount_total": found.amount_total,
        "currency": found.currency,
        "counts": dict(found.counts),
        "created_at": service._iso(found.created_at),
        "finished_at": service._iso(found.finished_at),
    }


CursorQuery = Query(default=None, description="next_cursor of the previous page")
LimitQuery = Query(default=50, description="1 to 500")
MANDATE_404 = error_doc("mandate_not_found")

# --------------------------------------------------------------------------- merchant API (signed)

router = make_merchant_router(prefix="/v1/mandates", tags=["merchant: mandates"])


@router.post(
    "",
    response_model=MandateCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Request a mandate; the payer gets a one-time code by text message",
    responses={
        201: signed_doc(MandateCreatedOut, "requested: pending_authorization", replayable=True),
        200: signed_doc(MandateCreatedOut, "this out_mandate_no requested this mandate before", replayable=True),
        404: error_doc("user_not_found"),
        409: error_doc("idempotency_key_conflict, out_mandate_no_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, out_mandate_no_invalid, currency_unknown, "
            "mandate_account_invalid, mandate_phone_invalid, mandate_limits_invalid, mandate_expires_at_invalid, "
            "mandate_description_invalid, mandate_url_invalid, mandate_channel_unavailable, "
            "mandate_industry_restricted"
        ),
    },
)
def create_mandate(
    body: MandateIn,
    request: Request,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> Response:
    registry = getattr(request.app.state, "registry", None) or channel_registry.installed()
    fields = body.model_dump(exclude={"limits"})
    mandate_request = MandateRequest(**fields, limits=Limits(**body.limits.model_dump()))
    sent: list[Any] = []

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        result = service.create_mandate(
            conn, merchant=merchant, request=mandate_request, registry=registry, settings=settings
        )
        if result.code is not None:
            sent.append((result.mandate, result.code))
        out = {**service.mandate_view(result.mandate), "replayed": not result.created}
        return (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK), out

    response = idempotency.respond(engine, work)
    for mandate, code in sent:  # after the commit: a rolled-back request texts nobody
        flows.send_code(engine, mandate=mandate, code=code, settings=settings)
    return response


@router.get(
    "",
    response_model=MandatePage,
    summary="Your mandates, newest first",
    responses={
        200: signed_doc(MandatePage, "a page of mandates"),
        422: error_doc("request_invalid, mandate_state_invalid, cursor_invalid, limit_invalid"),
    },
)
def list_mandates(
    user: str | None = Query(default=None, description="only this payer's (usr_…)"),
    state: str | None = Query(default=None, description="one state", json_schema_extra={"enum": list(MANDATE_STATES)}),
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    page = run_in_transaction(
        engine,
        lambda conn: service.list_mandates(
            conn, merchant_id=merchant.id, user_ref=user, state=state, cursor=cursor, limit=limit
        ),
        readonly=True,
    )
    return {"items": [service.mandate_view(m) for m in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/debits",
    response_model=DebitPage,
    summary="Your debits, newest first (optionally one mandate's)",
    responses={
        200: signed_doc(DebitPage, "a page of debits"),
        404: MANDATE_404,
        422: error_doc("request_invalid, mandate_state_invalid, cursor_invalid, limit_invalid"),
    },
)
def list_debits(
    mandate: str | None = Query(default=None, description="only this mandate's (mdt_…)"),
    state: str | None = Query(default=None, description="one state", json_schema_extra={"enum": list(DEBIT_STATES)}),
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    page = run_in_transaction(
        engine,
        lambda conn: service.list_debits(
            conn, merchant_id=merchant.id, mandate_ref=mandate, state=state, cursor=cursor, limit=limit
        ),
        readonly=True,
    )
    return {"items": [service.debit_view(d) for d in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/debits/{debit_id}",
    response_model=DebitOut,
    summary="One of your debits",
    responses={200: signed_doc(DebitOut, "the debit"), 404: error_doc("debit_not_found")},
)
def get_debit(
    debit_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    found = run_in_transaction(
        engine, lambda conn: service.get_debit(conn, ref=debit_id, merchant_id=merchant.id), readonly=True
    )
    return service.debit_view(found)


@router.post(
    "/batches",
    response_model=BatchCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Upload a withholding batch file (代扣文件); its rows are debited one by one",
    responses={
        201: signed_doc(BatchCreatedOut, "accepted: processing", replayable=True),
        200: signed_doc(BatchCreatedOut, "this merchant_batch_no was uploaded before", replayable=True),
        409: error_doc("idempotency_key_conflict, merchant_batch_no_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, mandate_url_invalid, batch_file_invalid (details.errors "
            "lists every problem with its row_no, line and code; nothing was created)"
        ),
    },
)
def upload_batch(
    body: BatchIn,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> Response:
    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        result = batch.upload(
            conn, merchant=merchant, content=body.content, notify_url=body.notify_url, settings=settings
        )
        out = {**_batch_out(result.batch), "replayed": not result.created}
        return (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK), out

    return idempotency.respond(engine, work)


@router.get(
    "/batches/{batch_id}",
    response_model=BatchOut,
    summary="A batch and its rows counted by result",
    responses={200: signed_doc(BatchOut, "the batch"), 404: error_doc("debit_batch_not_found")},
)
def get_batch(
    batch_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    found = run_in_transaction(
        engine, lambda conn: batch.get_batch(conn, ref=batch_id, merchant_id=merchant.id), readonly=True
    )
    return _batch_out(found)


@router.get(
    "/batches/{batch_id}/results",
    summary="A batch's per-row results (CSV, UTF-8)",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "one line per row: state, failure class, reason, debit"},
        404: error_doc("debit_batch_not_found"),
    },
)
def batch_results(
    batch_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> Response:
    text = run_in_transaction(
        engine, lambda conn: batch.results_csv(conn, ref=batch_id, merchant_id=merchant.id), readonly=True
    )
    return Response(
        content=text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="results-{batch_id}.csv"'},
    )


@router.get(
    "/{mandate_id}",
    response_model=MandateOut,
    summary="One of your mandates",
    responses={200: signed_doc(MandateOut, "the mandate"), 404: MANDATE_404},
)
def get_mandate(
    mandate_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    found = run_in_transaction(
        engine, lambda conn: service.get_mandate(conn, ref=mandate_id, merchant_id=merchant.id), readonly=True
    )
    return service.mandate_view(found)


@router.post(
    "/{mandate_id}/codes",
    response_model=MandateOut,
    summary="Text the payer a new one-time code (the earlier one stops working)",
    responses={
        200: signed_doc(MandateOut, "sent"),
        404: MANDATE_404,
        422: error_doc("mandate_not_pending"),
    },
)
def resend_code(
    mandate_id: str,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    found = flows.resend_code(engine, ref=mandate_id, merchant_id=merchant.id, settings=settings)
    return service.mandate_view(found)


@router.post(
    "/{mandate_id}/confirm",
    response_model=MandateOut,
    summary="Pass on the code the payer gave; the bank then signs (active) — safe to repeat",
    responses={
        200: signed_doc(MandateOut, "active; failed if the bank refused; pending_authorization if it did not answer"),
        404: MANDATE_404,
        422: error_doc(
            "request_invalid, mandate_not_pending, authorization_code_format_invalid, authorization_code_missing, "
            "authorization_code_expired, authorization_code_attempts_exceeded, authorization_code_wrong"
        ),
        503: error_doc("channels_not_configured"),
    },
)
def confirm(
    mandate_id: str,
    body: ConfirmIn,
    request: Request,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    found = flows.confirm(
        engine,
        ref=mandate_id,
        code=body.code,
        merchant_id=merchant.id,
        registry=get_registry(request),
        settings=settings,
    )
    return service.mandate_view(found)


@router.post(
    "/{mandate_id}/revoke",
    response_model=MandateOut,
    summary="Revoke a mandate (yours or your payer's wish): no debit from now on; pending debits fail",
    responses={
        200: signed_doc(MandateOut, "revoked (revoking a revoked mandate changes nothing)"),
        404: MANDATE_404,
        422: error_doc("request_invalid, mandate_reason_invalid, mandate_transition_not_allowed"),
    },
)
def revoke(
    mandate_id: str,
    body: RevokeIn,
    merchant: Merchant = Depends(authenticated_merchant),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    found = run_in_transaction(
        engine,
        lambda conn: service.revoke_mandate(
            conn, ref=mandate_id, by=body.by, reason=body.reason, merchant_id=merchant.id, settings=settings
        ),
    )
    return service.mandate_view(found)


@router.post(
    "/{mandate_id}/debits",
    response_model=DebitCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Debit the payer under the mandate (on its due date); the result comes by webhook",
    responses={
        201: signed_doc(DebitCreatedOut, "accepted: pending", replayable=True),
        200: signed_doc(DebitCreatedOut, "this out_debit_no requested this debit before", replayable=True),
        404: MANDATE_404,
        409: error_doc("idempotency_key_conflict, debit_key_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, debit_key_invalid, amount_must_be_positive, amount_too_large, "
            "currency_unknown, due_date_invalid, mandate_description_invalid, mandate_url_invalid, currency_mismatch, "
            "mandate_not_active, mandate_industry_restricted, amount_exceeds_debit_limit, daily_limit_exceeded, "
            "monthly_limit_exceeded, total_limit_exceeded"
        ),
    },
)
def create_debit(
    mandate_id: str,
    body: DebitIn,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> Response:
    if not isinstance(body.out_debit_no, str) or not service._NUMBER.fullmatch(body.out_debit_no):
        from zhangfang.mandates import errors

        raise errors.DebitKeyInvalid("out_debit_no is 1 to 64 of A-Z a-z 0-9 _ - . :", field="out_debit_no")

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        result = service.request_debit(
            conn,
            merchant_id=merchant.id,
            mandate_ref=mandate_id,
            amount=body.amount,
            currency=body.currency,
            key=f"api:{body.out_debit_no}",
            due_date=body.due_date,
            description=body.description,
            notify_url=body.notify_url,
            settings=settings,
        )
        out = {**service.debit_view(result.debit), "replayed": not result.created}
        return (status.HTTP_201_CREATED if result.created else status.HTTP_200_OK), out

    return idempotency.respond(engine, work)


# --------------------------------------------------------------------------- operators (admin key)

admin_router = make_admin_router(prefix="/v1/admin/mandates", tags=["admin: mandates"])


class SandboxSmsOff(NotFound):
    code = "sandbox_not_enabled"


@admin_router.get(
    "/sandbox/sms",
    response_model=SmsList,
    summary="The sandbox's text messages (one-time codes), newest first; only with ZHANGFANG_SANDBOX=1",
    responses={404: error_doc("sandbox_not_enabled")},
)
def sandbox_sms(
    phone: str | None = Query(default=None, description="only those to this phone"),
    limit: int = Query(default=20, ge=1, le=500),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    if not settings.sandbox:
        raise SandboxSmsOff("the sandbox is not enabled on this server (ZHANGFANG_SANDBOX=1)")
    found = flows.sms_gateway(settings).messages(phone)[-limit:]
    return {
        "items": [{"phone": m.phone, "text": m.text, "code": m.code, "sent_at": m.sent_at} for m in reversed(found)]
    }


@admin_router.get(
    "",
    response_model=MandatePage,
    summary="Every mandate, newest first",
    responses={422: error_doc("request_invalid, mandate_state_invalid, cursor_invalid, limit_invalid")},
)
def admin_list(
    state: str | None = Query(default=None, description="one state", json_schema_extra={"enum": list(MANDATE_STATES)}),
    cursor: str | None = CursorQuery,
    limit: int = LimitQuery,
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    page = run_in_transaction(
        engine, lambda conn: service.list_mandates(conn, state=state, cursor=cursor, limit=limit), readonly=True
    )
    return {"items": [service.mandate_view(m) for m in page.items], "next_cursor": page.next_cursor}


@admin_router.get("/{mandate_id}", response_model=MandateOut, summary="A mandate", responses={404: MANDATE_404})
def admin_get(mandate_id: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(engine, lambda conn: service.get_mandate(conn, ref=mandate_id), readonly=True)
    return service.mandate_view(found)


CHANGE_422 = error_doc("request_invalid, mandate_reason_invalid, mandate_transition_not_allowed")


@admin_router.post(
    "/{mandate_id}/suspend",
    response_model=MandateOut,
    summary="Suspend an active mandate: no debit until reinstated; pending debits fail",
    responses={404: MANDATE_404, 422: CHANGE_422},
)
def admin_suspend(
    mandate_id: str, body: ReasonIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> dict[str, Any]:
    found = run_in_transaction(
        engine, lambda conn: service.suspend_mandate(conn, ref=mandate_id, reason=body.reason, settings=settings)
    )
    return service.mandate_view(found)


@admin_router.post(
    "/{mandate_id}/resume",
    response_model=MandateOut,
    summary="Reinstate a suspended mandate",
    responses={404: MANDATE_404, 422: CHANGE_422},
)
def admin_resume(mandate_id: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(engine, lambda conn: service.resume_mandate(conn, ref=mandate_id))
    return service.mandate_view(found)


@admin_router.post(
    "/{mandate_id}/revoke",
    response_model=MandateOut,
    summary="Revoke a mandate on the payer's behalf (customer service) or as the platform",
    responses={404: MANDATE_404, 422: CHANGE_422},
)
def admin_revoke(
    mandate_id: str,
    body: AdminRevokeIn,
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    found = run_in_transaction(
        engine,
        lambda conn: service.revoke_mandate(conn, ref=mandate_id, by=body.by, reason=body.reason, settings=settings),
    )
    return service.mandate_view(found)
