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
- ``POST /products``: a loan product (贷款产品) for the catalogue (idempotent on its ``code``): 201 created,
  200 replayed.
- ``GET /products?state=``: the catalogue, by code. ``GET /products/{code}``: one product.
- ``POST /products/{code}/retire``: the product takes no new loans; its loans run on.

A drawdown naming a ``product`` takes the product's terms for the fields it leaves out (a field
sent as ``null`` is left out, except ``settlement_share``: null there means no share).

``as_of`` defaults to today in the business time zone (Asia/Shanghai). Amounts are integers
of the minor unit (fen); rates are decimal strings (``"0.12"``), never floats.

Translation only: ``lending.service`` decides; errors keep their codes (``zhangfang.errors``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from sqlalchemy.engine import Connection, Engine

from zhangfang.api.deps import get_engine, get_settings, make_admin_router
from zhangfang.api.responses import error_doc
from zhangfang.channels import registry as channel_registry
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs.periodic import business_today
from zhangfang.lending import pos, products, service
from zhangfang.lending.allocation import DEFAULT_ORDER
from zhangfang.lending.delinquency import AgingReport
from zhangfang.lending.models import (
    DEFAULT_CURRENCY,
    DEFAULT_KIND,
    DEFAULT_METHOD,
    DEFAULT_PENALTY_DAILY_RATE,
    DEFAULT_SETTLEMENT_SHARE,
    UNSET,
    LoanProductRequest,
    LoanRequest,
)
from zhangfang.lending.schedule import DEFAULT_DAY_COUNT
from zhangfang.payments import errors as payment_errors
from zhangfang.payments import service as payments

router = make_admin_router(prefix="/v1/lending", tags=["lending"])

LOAN_404 = {404: error_doc("no such loan (loan_not_found)")}
PRODUCT_404 = {404: error_doc("no such loan product (loan_product_not_found)")}
AS_OF_422 = error_doc("as_of outside the years 1900 to 2999 (as_of_date_invalid), or request_invalid")
AS_OF_DESCRIPTION = "a business date, YYYY-MM-DD; default today (Asia/Shanghai)"


class _Terms(BaseModel):
    """The terms a drawdown and a loan product both give, with the defaults a field left out takes."""

    model_config = ConfigDict(extra="forbid")
    currency: str = DEFAULT_CURRENCY
    method: str = Field(
        default=DEFAULT_METHOD.value, description="equal-installment, equal-principal, interest-first or bullet"
    )
    day_count: str = Field(default=DEFAULT_DAY_COUNT.value, description="30/360, actual/365 or actual/360")
    penalty_daily_rate: str = Field(
        default=str(DEFAULT_PENALTY_DAILY_RATE), description="罚息 a day on overdue principal, 0 to 0.01"
    )
    allocation_order: list[str] = Field(
        default=[str(c) for c in DEFAULT_ORDER],
        description="the order a repayment pays components in: penalty, fee, interest, principal, each once",
    )


class LoanIn(_Terms):
    """A drawdown; a field left out is the product's when a product is named, otherwise the default shown."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="the merchant's idempotency key: the same key replays the loan")
    merchant: str = Field(description="the borrower, mch_…")
    principal: StrictInt = Field(description="minor units (fen)", examples=[1_000_000])
    annual_rate: str | None = Field(
        default=None,
        description="nominal annual rate, decimal text; required unless the product allows a single rate",
        examples=["0.12"],
    )
    periods: StrictInt | None = Field(
        default=None, description="term in months, 1 to 600; required unless the product allows a single term"
    )
    start: dt.date = Field(description="disbursement date; periods fall due monthly from it")
    kind: str = Field(default=DEFAULT_KIND, description="pos (limited by the credit line) or term")
    settlement_share: str | None = Field(
        default=str(DEFAULT_SETTLEMENT_SHARE),
        description="POS: share of each settlement taken, 0 to 1; null: none",
    )
    mandate: str | None = Field(default=None, max_length=40, description="withholding mandate for due dates, mdt_…")
    product: str | None = Field(
        default=None, max_length=40, description="a loan product's code: its terms fill in and bound the drawdown's"
    )

    @model_validator(mode="after")
    def _terms_without_product(self) -> LoanIn:
        if self.product is None and (self.annual_rate is None or self.periods is None):
            raise ValueError("annual_rate and periods are required when no product is named")
        return self

    def term(self, name: str) -> Any:
        """The field as the request gives it, or ``UNSET`` when left out (or null, but for settlement_share)."""
        value = getattr(self, name)
        if name not in self.model_fields_set or (value is None and name != "settlement_share"):
            return UNSET
        return tuple(value) if name == "allocation_order" else value


class ProductIn(_Terms):
    """A loan product; a field left out takes the default shown (``credit_…``: ``CreditPolicy``'s)."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(description="URL-safe name: 1 to 40 of a-z, 0-9, - and _", examples=["pos-90d"])
    name: str = Field(description="for people, 1 to 100 characters", examples=["POS贷 90 天"])
    kind: str = Field(description="pos (limited by the credit line, repaid from settlement first) or term")
    annual_rate_min: str = Field(description="the lowest nominal annual rate offered, decimal text", examples=["0.1"])
    annual_rate_max: str = Field(description="the highest, decimal text; equal to the min: a single rate")
    periods_min: StrictInt = Field(description="the shortest term, months, 1 to 600")
    periods_max: StrictInt = Field(description="the longest term, months; equal to the min: a single term")
    principal_min: StrictInt = Field(description="the smallest loan, minor units (fen)")
    principal_max: StrictInt = Field(description="the largest loan, minor units (fen)")
    settlement_share: str | None = Field(
        default=str(DEFAULT_SETTLEMENT_SHARE),
        description="POS: share of each settlement taken, 0 to 1; null: none. Ignored for term",
    )
    credit_ratio: str | None = Field(default=None, description="POS: credit line = ratio × settled volume")
    credit_lookback_days: StrictInt | None = Field(default=None, description="POS: days of settled volume counted")
    credit_step: StrictInt | None = Field(default=None, description="POS: the line is rounded down to it, minor units")
    credit_maximum: StrictInt | None = Field(default=None, description="POS: the line's cap, minor units")


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
        404: error_doc(
            "no such merchant (merchant_not_found), mandate (mandate_not_found) or product (loan_product_not_found)"
        ),
        409: error_doc("the key was used for a loan on other terms (loan_key_conflict)"),
        422: error_doc(
            "a term breaks its rule (idempotency_key_invalid, loan_term_required, loan_kind_unknown, "
            "settlement_share_invalid, penalty_rate_invalid, annual_rate_invalid, period_count_invalid, "
            "amortization_method_unknown, start_date_invalid, day_count_unknown, currency_unknown, "
            "allocation_order_invalid, amount_must_be_…, loan_principal_too_large, request_invalid), a term the "
            "product does not offer (loan_terms_outside_product), a retired product (loan_product_retired), or a "
            "POS loan beyond the credit line (credit_line_exceeded)"
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
        start=body.start,
        mandate_ref=body.mandate,
        product=body.product,
        **{
            name: body.term(name)
            for name in (
                "annual_rate",
                "periods",
                "method",
                "day_count",
                "kind",
                "currency",
                "penalty_daily_rate",
                "allocation_order",
                "settlement_share",
            )
        },
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


# --------------------------------------------------------------------------- loan products (贷款产品)


@router.post(
    "/products",
    status_code=status.HTTP_201_CREATED,
    summary="Add a loan product to the catalogue (idempotent on code)",
    responses={
        200: {"description": "the code replayed the same definition; nothing was written"},
        409: error_doc("the code holds another definition (loan_product_conflict)"),
        422: error_doc(
            "a field breaks its rule (loan_product_code_invalid, loan_product_name_invalid, loan_kind_unknown, "
            "currency_unknown, amortization_method_unknown, day_count_unknown, annual_rate_invalid, "
            "period_count_invalid, amount_must_be_…, loan_principal_too_large, loan_product_bounds_invalid, "
            "penalty_rate_invalid, allocation_order_invalid, settlement_share_invalid, credit_policy_invalid, "
            "request_invalid)"
        ),
    },
)
def create_product(body: ProductIn, response: Response, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    request = LoanProductRequest(**{**body.model_dump(), "allocation_order": tuple(body.allocation_order)})
    product, created = run_in_transaction(engine, lambda conn: products.create_product(conn, request=request))
    _created_or_replayed(response, replayed=not created)
    return product.as_json()


@router.get("/products", summary="The loan product catalogue, by code; of one state")
def list_products(
    state: Literal["active", "retired"] | None = None, engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    found = run_in_transaction(engine, lambda conn: products.list_products(conn, state=state), readonly=True)
    return {"products": [product.as_json() for product in found]}


@router.get("/products/{code}", summary="A loan product", responses=PRODUCT_404)
def get_product(code: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    product = run_in_transaction(engine, lambda conn: products.get_product(conn, code=code), readonly=True)
    return product.as_json()


@router.post(
    "/products/{code}/retire",
    summary="Retire a loan product: it takes no new loans, its loans run on (retiring again changes nothing)",
    responses=PRODUCT_404,
)
def retire_product(code: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    product, retired = run_in_transaction(engine, lambda conn: products.retire_product(conn, code=code))
    return {**product.as_json(), "retired_now": retired}
