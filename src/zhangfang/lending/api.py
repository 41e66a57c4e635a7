"""Loans over HTTP (``/v1/lending``), for operators: admin key only.

- ``POST /loans``: a drawdown (idempotent on the merchant's ``key``): 201 created, 200 replayed.
- ``GET /loans?merchant=&state=``: loans, oldest first.
- ``GET /loans/{loan}?as_of=D``: a loan with its installments and what it owes as of ``D``.
- ``POST /loans/{loan}/repayments``: a repayment from the merchant's balance (idempotent on ``key``):
  201 applied, 200 replayed.
- ``GET /loans/{loan}/repayments``: its repayments, oldest first.
- ``GET /credit-line/{merchant}?as_of=D``: the merchant's POS credit line (授信额度).
- ``GET /aging?as_of=D``: active loans by delinquency bucket (账龄), one row per bucket, one line per loan.
- ``POST /accrue?as_of=D``: interest due and penalty (罚息) through ``D`` recognised; what the daily job runs.

``as_of`` defaults to today in the business time zone (Asia/Shanghai). Amounts are integers
of the minor unit (fen); rates are decimal strings (``"0.12"``), never floats.

Translation only: ``lending.service`` decides; errors keep their codes (``zhangfang.errors``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy.engine import Connection, Engine

from zhangfang.api.deps import get_engine, get_settings, make_admin_router
from zhangfang.api.responses import error_doc
from zhangfang.channels import registry as channel_registry
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs.periodic import business_today
from zhangfang.lending import pos, service
from zhangfang.lending.allocation import DEFAULT_ORDER
from zhangfang.lending.delinquency import AgingReport
from zhangfang.lending.models import LoanRequest
from zhangfang.lending.schedule import DEFAULT_DAY_COUNT, Method
from zhangfang.payments import errors as payment_errors
from zhangfang.payments import service as payments

router = make_admin_router(prefix="/v1/lending", tags=["lending"])

LOAN_404 = {404: error_doc("no such loan (loan_not_found)")}
AS_OF_422 = error_doc("as_of outside the years 1900 to 2999 (as_of_date_invalid), or request_invalid")
AS_OF_DESCRIPTION = "a business date, YYYY-MM-DD; default today (Asia/Shanghai)"


class LoanIn(BaseModel):
    """A drawdown; a field left out takes the default shown."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="the merchant's idempotency key: the same key replays the loan")
    merchant: str = Field(description="the borrower, mch_…")
    principal: StrictInt = Field(description="minor units (fen)", examples=[1_000_000])
    annual_rate: str = Field(description="nominal annual rate, decimal text", examples=["0.12"])
    periods: StrictInt = Field(description="term in months, 1 to 600")
    start: dt.date = Field(description="disbursement date; periods fall due monthly from it")
    method: str = Field(
        default=Method.EQUAL_INSTALLMENT.value,
        description="equal-installment, equal-principal, interest-first or bullet",
    )
    day_count: str = Field(default=DEFAULT_DAY_COUNT.value, description="30/360, actual/365 or actual/360")
    kind: str = Field(default=LoanRequest.kind, description="pos (limited by the credit line) or term")
    currency: str = LoanRequest.currency
    penalty_daily_rate: str = Field(
        default=str(LoanRequest.penalty_daily_rate), description="罚息 a day on overdue principal, 0 to 0.01"
    )
    allocation_order: list[str] = Field(
        default=[str(c) for c in DEFAULT_ORDER],
        description="the order a repayment pays components in: penalty, fee, interest, principal, each once",
    )
    settlement_share: str | None = Field(
        default=str(LoanRequest.settlement_share), description="POS: share of each settlement taken, 0 to 1"
    )
    mandate: str | None = Field(default=None, max_length=40, description="withholding mandate for due dates, mdt_…")


class RepaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: StrictInt = Field(description="minor units (fen), taken from the merchant's balance")
    source: str = Field(description="settlement, withholding or manual")
    key: str = Field(description="idempotency key, per loan")
    as_of: dt.date | None = Field(default=None, description=AS_OF_DESCRIPTION)


def _created_or_replayed(response: Response, replayed: bool) -> None:
    response.status_code = status.HTTP_200_OK if replayed else status.HTTP_201_CREATED


def _today(settings: Settings, as_of: dt.date | None) -> dt.date:
    return as_of if as_of is not None else business_today(settings)


def aging_as_json(report: AgingReport) -> dict[str, Any]:
    """The aging report in plain JSON types (amounts in minor units)."""
    return {
        "as_of": report.as_of.isoformat(),
        "thresholds": {"m1_days_max": report.thresholds.m1_days_max, "m2_days_max": report.thresholds.m2_days_max},
        "loan_count": report.loan_count,
        "outstanding_principal": report.outstanding_minor,
        "rows": [
            {"bucket": str(row.bucket), "loan_count": row.loan_count, "outstanding_principal": row.outstanding_minor}
            for row in report.rows
        ],
        "lines": [
            {
                "loan": line.loan_ref,
                "days_past_due": line.days_past_due,
                "bucket": str(line.bucket),
                "outstanding_principal": line.outstanding_minor,
            }
            for line in report.lines
        ],
    }


def loan_view(conn: Connection, *, ref: str, as_of: dt.date) -> dict[str, Any]:
    """A loan with its installments and ``owed``: what is due by ``as_of`` and unpaid, penalty through it."""
    owed = service.owed(conn, loan_ref=ref, as_of=as_of)
    return {**service.get_loan(conn, ref=ref).as_json(as_of), "as_of": as_of.isoformat(), "owed": owed}


@router.post(
    "/loans",
    status_code=status.HTTP_201_CREATED,
    summary="Lend to a merchant: the principal is credited to its balance (idempotent on key)",
    responses={
        200: {"description": "the key replayed an earlier loan with the same terms; nothing was written"},
        404: error_doc("no such merchant (merchant_not_found)"),
        409: error_doc("the key was used for a loan on other terms (loan_key_conflict)"),
        422: error_doc(
            "a term breaks its rule (idempotency_key_invalid, loan_kind_unknown, settlement_share_invalid, "
            "penalty_rate_invalid, annual_rate_invalid, period_count_invalid, amortization_method_unknown, "
            "start_date_invalid, day_count_unknown, currency_unknown, allocation_order_invalid, amount_must_be_…, "
            "loan_principal_too_large, request_invalid), or a POS loan beyond the credit line (credit_line_exceeded)"
        ),
    },
)
def drawdown(
    body: LoanIn,
    response: Response,
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    request = LoanRequest(
        key=body.key,
        merchant_ref=body.merchant,
        principal=body.principal,
        annual_rate=body.annual_rate,
        periods=body.periods,
        start=body.start,
        method=body.method,
        day_count=body.day_count,
        kind=body.kind,
        currency=body.currency,
        penalty_daily_rate=body.penalty_daily_rate,
        allocation_order=tuple(body.allocation_order),
        settlement_share=body.settlement_share,
        mandate_ref=body.mandate,
    )

    def lend(conn: Connection) -> tuple[dict[str, Any], bool]:
        loan, created = service.disburse(conn, request=request)
        return loan.as_json(business_today(settings)), created

    loan, created = run_in_transaction(engine, lend)
    _created_or_replayed(response, replayed=not created)
    return loan


@router.get("/loans", summary="Loans, oldest first; of one merchant and/or in one state")
def list_loans(
    merchant: str | None = None,
    state: Literal["active", "settled"] | None = None,
    as_of: dt.date | None = Query(default=None, description=AS_OF_DESCRIPTION),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, as_of)
    found = run_in_transaction(
        engine, lambda conn: service.list_loans(conn, merchant_ref=merchant, state=state), readonly=True
    )
    return {"loans": [loan.as_json(day) for loan in found]}


@router.get(
    "/loans/{loan}",
    summary="A loan with its installments and what it owes as of a date",
    responses={**LOAN_404, 422: AS_OF_422},
)
def get_loan(
    loan: str,
    as_of: dt.date | None = Query(default=None, description=AS_OF_DESCRIPTION),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, as_of)
    return run_in_transaction(engine, lambda conn: loan_view(conn, ref=loan, as_of=day), readonly=True)


@router.post(
    "/loans/{loan}/repayments",
    status_code=status.HTTP_201_CREATED,
    summary="Repay from the merchant's balance: what is due first, in the loan's order (idempotent on key)",
    responses={
        200: {"description": "the key replayed an earlier repayment; nothing was written"},
        **LOAN_404,
        409: error_doc(
            "the key was used for another repayment (repayment_key_conflict), or the loan is settled (loan_settled)"
        ),
        422: error_doc(
            "repayment_source_invalid, repayment_amount_invalid, idempotency_key_invalid, as_of_date_invalid, "
            "request_invalid, or the merchant's balance is short (the ledger's refusal)"
        ),
    },
)
def repay(
    loan: str,
    body: RepaymentIn,
    response: Response,
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, body.as_of)
    repayment = run_in_transaction(
        engine,
        lambda conn: service.repay(
            conn, loan_ref=loan, amount=body.amount, source=body.source, key=body.key, as_of=day
        ),
    )
    _created_or_replayed(response, replayed=repayment.replayed)
    return repayment.as_json()


@router.post(
    "/loans/{loan}/cashier-order",
    summary="An order for what the loan owes by as_of, for the merchant to pay at the cashier; its payment repays",
    responses={
        **LOAN_404,
        409: error_doc("the loan is settled (loan_settled)"),
        422: error_doc("nothing is owed by as_of (repayment_amount_invalid), or as_of_date_invalid"),
        503: error_doc("no channel is configured (channels_not_configured)"),
    },
)
def cashier_order(
    loan: str,
    as_of: dt.date | None = Query(default=None, description=AS_OF_DESCRIPTION),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, as_of)
    registry = channel_registry.installed()
    if registry is None:
        raise payment_errors.ChannelsNotConfigured("no payment channel is configured: set ZHANGFANG_CHANNELS_FILE")
    order = run_in_transaction(
        engine, lambda conn: pos.cashier_order(conn, loan_ref=loan, as_of=day, registry=registry)
    )
    return payments.order_view(order, public_base_url=settings.public_base_url)


@router.get("/loans/{loan}/repayments", summary="A loan's repayments, oldest first", responses=LOAN_404)
def list_repayments(loan: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(engine, lambda conn: service.list_repayments(conn, loan_ref=loan), readonly=True)
    return {"loan": loan, "repayments": [repayment.as_json() for repayment in found]}


@router.get(
    "/credit-line/{merchant}",
    summary="授信额度: a merchant's POS credit line, from its settled volume",
    responses={404: error_doc("no such merchant (merchant_not_found)"), 422: AS_OF_422},
)
def credit_line(
    merchant: str,
    as_of: dt.date | None = Query(default=None, description=AS_OF_DESCRIPTION),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, as_of)
    line = run_in_transaction(
        engine, lambda conn: service.credit_line(conn, merchant_ref=merchant, as_of=day), readonly=True
    )
    return line.as_json()


@router.get(
    "/aging",
    summary="账龄: active loans by delinquency bucket (current, M1, M2, M3+) with principal outstanding",
    responses={422: AS_OF_422},
)
def aging(
    as_of: dt.date | None = Query(default=None, description=AS_OF_DESCRIPTION),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, as_of)
    report = run_in_transaction(engine, lambda conn: service.aging(conn, as_of=day), readonly=True)
    return aging_as_json(report)


@router.post(
    "/accrue",
    summary="Recognise interest due and penalty through a date on every active loan (the daily job; repeatable)",
    responses={422: AS_OF_422},
)
def accrue(
    as_of: dt.date | None = Query(default=None, description=AS_OF_DESCRIPTION),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    day = _today(settings, as_of)
    touched = run_in_transaction(engine, lambda conn: service.accrue(conn, as_of=day))
    return {"as_of": day.isoformat(), "loans_accrued": touched}
