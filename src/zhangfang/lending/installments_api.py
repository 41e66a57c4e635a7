"""Installment plans (分期) over HTTP: the merchant API (signed) and operators' views (admin key).

- ``router`` for merchants (``/v1/installment-plans``, every request and answer
  signed, ``zhangfang.api.merchant_auth``), exactly like ``/v1/mandates``:

  - ``POST ""``: a plan for one of your active mandates, its periods given or
    computed from principal, annual rate, term and method; idempotent twice over:
    on the ``Idempotency-Key`` header (the same request replays the stored answer
    byte for byte) and on the body's ``key`` (the same plan: 200 with
    ``replayed: true``; another plan: ``409 installment_plan_key_conflict``).
    201 created, 200 replayed.
  - ``GET /{plan}``: the plan and its periods.
  - ``POST /{plan}/early-repayment``: debit everything still owed at once (later
    periods' interest waived); answers the debit (``dbt_…``) and the plan.
  - ``POST /{plan}/cancel``: end the plan (``advance`` mode: the unpaid principal
    is returned from your balance).

  Both POSTs on a plan move money, so they take an ``Idempotency-Key`` too.
  Another merchant's plan is ``404 installment_plan_not_found``, exactly as an id
  that does not exist; a plan on another merchant's mandate is ``404
  mandate_not_found``.
- ``admin_router`` (``/v1/admin/installment-plans``, admin key): any plan; plans
  newest first, of one merchant and/or in one state.

Each handler is one unit of work; ``lending.installments`` decides and never
commits. Amounts are integers of the minor unit (fen for CNY); rates are decimal
strings (``"0.12"``), never JSON floats.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt
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
from zhangfang.lending import installments
from zhangfang.parties.models import Merchant

# --------------------------------------------------------------------------- shapes

AMOUNT_DESCRIPTION = "integer amount in the currency's minor unit (fen for CNY)"
PlanMode = Literal["per_period", "advance"]
PlanState = Literal["active", "completed", "cancelled"]
PeriodState = Literal["scheduled", "collecting", "paid", "overdue", "cancelled"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeriodIn(_Request):
    due_date: dt.date = Field(description="the business date (Asia/Shanghai) it is debited on; not in the past")
    amount: StrictInt = Field(description=AMOUNT_DESCRIPTION + ", 1 to 10,000,000,000; all principal")


class PlanIn(_Request):
    """A plan: give ``periods``, or ``principal``, ``annual_rate`` and ``term`` (with ``method``, ``start``)."""

    key: str = Field(description="your key for the plan, 1 to 200 printable ASCII; the same key replays the plan")
    mandate: str = Field(description="mdt_… of one of your active mandates; the periods are debited under it")
    mode: str = Field(
        default="per_period",
        description="per_period (分期回款: each installment is yours, settled like any payment) or advance "
        "(不分期回款: the principal is credited to your balance now; what is collected is deducted at settlement)",
    )
    periods: list[PeriodIn] | None = Field(default=None, description="1 to 120 periods, due dates increasing")
    principal: StrictInt | None = Field(default=None, description=AMOUNT_DESCRIPTION + ": the amount financed")
    annual_rate: str | None = Field(default=None, description="nominal annual rate, decimal text", examples=["0.12"])
    term: StrictInt | None = Field(default=None, description="months, 1 to 120")
    method: str = Field(
        default="equal-installment", description="equal-installment, equal-principal, interest-first or bullet"
    )
    start: dt.date | None = Field(default=None, description="periods fall due monthly from it (default: today)")
    currency: str = Field(default="CNY", description="the mandate's currency")
    penalty_daily_rate: str = Field(
        default="0.0005", description="罚息 a day on an overdue period's principal, decimal text from 0 to 0.01"
    )
    notify_url: str | None = Field(default=None, description="where installment_plan.* and installment.* go (https)")


class PeriodOut(BaseModel):
    period: int = Field(description="1, 2, …")
    due_date: dt.date
    principal: int
    interest: int = Field(description="0 for given periods; waived (0) for periods repaid early before due")
    penalty: int = Field(description="罚息 accrued while overdue")
    amount: int = Field(description="principal + interest + penalty")
    state: PeriodState = Field(
        description="scheduled, collecting (a debit at the bank), paid, overdue (debited again every 3 days, "
        "with penalty), cancelled"
    )
    tries: int = Field(description="debits made for the period")
    debit: str | None = Field(description="dbt_…, the latest debit")
    collected: int = Field(description="what its debit collected once paid: amount and penalty at that time")
    paid_at: dt.datetime | None


class PlanOut(BaseModel):
    """A plan, exactly as its webhooks carry it."""

    id: str = Field(description="ipl_…")
    merchant: str
    mandate: str
    mode: PlanMode
    currency: str
    principal: int = Field(description="the sum of the periods' principal")
    annual_rate: str | None = Field(description="when the platform computed the periods")
    method: str | None = Field(description="when the platform computed the periods")
    penalty_daily_rate: str
    state: PlanState
    advance_entry: str | None = Field(description="advance mode: the ledger entry that credited the principal")
    collected: int = Field(description="what the periods collected so far")
    periods: list[PeriodOut]
    created_at: dt.datetime
    finished_at: dt.datetime | None


class PlanCreatedOut(PlanOut):
    replayed: bool = Field(description="true when this key had created this plan before")


class EarlyRepaymentOut(BaseModel):
    debit: str = Field(description="dbt_…: the debit of everything owed; its result comes by webhook")
    plan: PlanOut


class PlanList(BaseModel):
    items: list[PlanOut]


def _request(body: PlanIn) -> installments.PlanRequest:
    periods = None
    if body.periods is not None:
        periods = tuple(installments.PeriodIn(due_date=p.due_date, amount=p.amount) for p in body.periods)
    return installments.PlanRequest(
        key=body.key,
        mandate_ref=body.mandate,
        mode=body.mode,
        periods=periods,
        principal=body.principal,
        annual_rate=body.annual_rate,
        term=body.term,
        method=body.method,
        start=body.start,
        currency=body.currency,
        penalty_daily_rate=body.penalty_daily_rate,
        notify_url=body.notify_url,
    )


PLAN_404 = error_doc("installment_plan_not_found")
MOVE_409 = error_doc("idempotency_key_conflict, installment_plan_not_active (completed or cancelled)")

# --------------------------------------------------------------------------- merchant API (signed)

router = make_merchant_router(prefix="/v1/installment-plans", tags=["merchant: installment plans"])


@router.post(
    "",
    response_model=PlanCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an installment plan (分期) on one of your mandates; its periods are debited on their due dates",
    responses={
        201: signed_doc(PlanCreatedOut, "created: active", replayable=True),
        200: signed_doc(PlanCreatedOut, "this key created this plan before; nothing was written", replayable=True),
        404: error_doc("mandate_not_found (not yours, or no such mandate)"),
        409: error_doc("idempotency_key_conflict, installment_plan_key_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, installment_mode_unknown, penalty_rate_invalid, "
            "webhook_url_invalid, webhook_url_must_be_https, installment_plan_invalid, annual_rate_invalid, "
            "period_count_invalid, amortization_method_unknown, start_date_invalid, amount_must_be_integer, "
            "amount_must_be_positive, loan_principal_too_large, currency_unknown, installment_mandate_not_active"
        ),
    },
)
def create_plan(
    body: PlanIn,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
) -> Response:
    request = _request(body)

    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        plan, created = installments.create_plan(conn, merchant_id=merchant.id, request=request)
        return (status.HTTP_201_CREATED if created else status.HTTP_200_OK), {**plan, "replayed": not created}

    return idempotency.respond(engine, work)


@router.get(
    "/{plan_id}",
    response_model=PlanOut,
    summary="One of your installment plans, with its periods",
    responses={200: signed_doc(PlanOut, "the plan"), 404: PLAN_404},
)
def get_plan(
    plan_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    return run_in_transaction(
        engine, lambda conn: installments.get_plan(conn, ref=plan_id, merchant_id=merchant.id), readonly=True
    )


@router.post(
    "/{plan_id}/early-repayment",
    response_model=EarlyRepaymentOut,
    status_code=status.HTTP_201_CREATED,
    summary="Repay early: one debit of every unpaid period's principal and penalty (interest of periods not yet "
    "due is waived); the plan completes when it succeeds",
    responses={
        201: signed_doc(EarlyRepaymentOut, "the debit is made: pending", replayable=True),
        404: PLAN_404,
        409: error_doc(
            "idempotency_key_conflict, installment_plan_not_active, installment_debit_in_flight (a period's debit "
            "is at the bank: ask again once it is answered)"
        ),
        422: error_doc(
            "idempotency_key_invalid, mandate_not_active, mandate_industry_restricted, amount_exceeds_debit_limit, "
            "daily_limit_exceeded, monthly_limit_exceeded, total_limit_exceeded (the mandate refuses the debit)"
        ),
    },
)
def repay_early(
    plan_id: str,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
) -> Response:
    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        debit = installments.repay_early(conn, ref=plan_id, merchant_id=merchant.id)
        plan = installments.get_plan(conn, ref=plan_id, merchant_id=merchant.id)
        return status.HTTP_201_CREATED, {"debit": debit, "plan": plan}

    return idempotency.respond(engine, work)


@router.post(
    "/{plan_id}/cancel",
    response_model=PlanOut,
    summary="Cancel a plan: periods not at the bank are cancelled (advance mode: their principal is returned "
    "from your balance)",
    responses={
        200: signed_doc(PlanOut, "cancelled; a debit already at the bank finishes and counts", replayable=True),
        404: PLAN_404,
        409: MOVE_409,
        422: error_doc(
            "idempotency_key_invalid, debits_exceed_credits (advance mode: your balance is short of the principal "
            "to return)"
        ),
    },
)
def cancel_plan(
    plan_id: str,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
) -> Response:
    def work(conn: Connection) -> tuple[int, dict[str, Any]]:
        return status.HTTP_200_OK, installments.cancel(conn, ref=plan_id, merchant_id=merchant.id)

    return idempotency.respond(engine, work)


# --------------------------------------------------------------------------- operators (admin key)

admin_router = make_admin_router(prefix="/v1/admin/installment-plans", tags=["admin: installment plans"])


@admin_router.get(
    "",
    response_model=PlanList,
    summary="Installment plans, newest first; of one merchant and/or in one state",
    responses={422: error_doc("request_invalid, installment_plan_state_invalid, installment_plan_limit_invalid")},
)
def admin_list(
    merchant: str | None = Query(default=None, description="only this merchant's plans, mch_…"),
    state: PlanState | None = Query(default=None, description="only plans in this state"),
    limit: int = Query(default=100, ge=1, le=installments.LIST_LIMIT_MAX, description="at most this many"),
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    found = run_in_transaction(
        engine,
        lambda conn: installments.list_plans(conn, merchant_ref=merchant, state=state, limit=limit),
        readonly=True,
    )
    return {"items": found}


@admin_router.get("/{plan_id}", response_model=PlanOut, summary="An installment plan", responses={404: PLAN_404})
def admin_get(plan_id: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    return run_in_transaction(engine, lambda conn: installments.get_plan(conn, ref=plan_id), readonly=True)
