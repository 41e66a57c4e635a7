"""Settlement over HTTP (``/v1/settlement``), for operators: admin key only.

- ``GET/PATCH /merchants/{merchant}``: a merchant's settlement terms (PATCH sets
  only the fields sent; ``null`` returns a term to its default).
- ``POST /runs?settlement_date=D``: the settlement run of a date (idempotent).
- ``GET /batches?settlement_date=D``: the batches of a date.
- ``GET /statements/{merchant}/{settlement_date}``: the statement CSV (UTF-8 with BOM).
- ``GET /float?as_of=D``: the float (沉淀资金).
- ``POST /reserve-check?date=D&format=camt053|mt940``: the reserve-fund check (备付金)
  against the custody bank's statement sent as the body.

Translation only: the domain decides; errors keep their codes (``zhangfang.errors``).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine

from zhangfang.api.deps import get_engine, make_admin_router
from zhangfang.api.responses import error_doc
from zhangfang.channels import registry as channel_registry
from zhangfang.db.uow import run_in_transaction
from zhangfang.lending import pos as pos_loans
from zhangfang.settlement import service
from zhangfang.settlement.models import PayoutAccount

router = make_admin_router(prefix="/v1/settlement", tags=["settlement"])

MERCHANT_404 = {404: error_doc("no such merchant (merchant_not_found)")}
BATCH_404 = {404: error_doc("no such merchant (merchant_not_found), or no batch that day (settlement_batch_not_found)")}


class PayoutAccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_number: str
    account_name: str
    bank_code: str | None = None


class MerchantSettingsIn(BaseModel):
    """The terms to change; a field left out stays, ``null`` returns it to its default."""

    model_config = ConfigDict(extra="forbid")
    cycle: str | None = None
    fee_contract: dict[str, Any] | None = None
    payout_account: PayoutAccountIn | None = None
    payout_minimum: int | None = None


@router.get("/merchants/{merchant}", summary="A merchant's settlement terms", responses=MERCHANT_404)
def get_merchant_settings(merchant: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(
        engine, lambda conn: service.get_merchant_settings(conn, merchant_ref=merchant), readonly=True
    )
    return found.as_json()


@router.patch(
    "/merchants/{merchant}",
    summary="Set some of a merchant's settlement terms",
    responses={
        **MERCHANT_404,
        422: error_doc(
            "a term breaks its rule (settlement_cycle_invalid, fee_contract_invalid, fee_model_invalid, "
            "settlement_payee_invalid, payout_minimum_invalid, request_invalid)"
        ),
    },
)
def set_merchant_settings(
    merchant: str, body: MerchantSettingsIn, engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name == "cycle" and value is None:
            value = str(service.DEFAULT_CYCLE)
        if name == "payout_account" and value is not None:
            value = PayoutAccount(value.account_number, value.account_name, value.bank_code)
        changes[name] = value
    found = run_in_transaction(
        engine, lambda conn: service.set_merchant_settings(conn, merchant_ref=merchant, **changes)
    )
    return found.as_json()


@router.post(
    "/runs",
    summary="Settle every merchant whose cycle pays on the date (idempotent)",
    responses={
        422: error_doc(
            "no channel pays out (settlement_payout_channel_unavailable), or the calendar does not cover "
            "the date (settlement_calendar_unknown_year)"
        )
    },
)
def run(settlement_date: dt.date, channel: str | None = None, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    registry = channel_registry.installed()
    result = run_in_transaction(
        engine,
        lambda conn: service.run_settlement(
            conn,
            settlement_date=settlement_date,
            registry=registry,
            channel=channel,
            deduction_providers=pos_loans.settlement_deductions(),
        ),
    )
    return result.as_json()


@router.get("/batches", summary="The settlement batches of a date")
def list_batches(settlement_date: dt.date, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(
        engine,
        lambda conn: service.list_batches(conn, settlement_date=settlement_date, with_days=True),
        readonly=True,
    )
    return {"settlement_date": settlement_date, "batches": [batch.as_json() for batch in found]}


@router.get(
    "/statements/{merchant}/{settlement_date}",
    summary="A merchant's settlement statement (CSV, UTF-8 with BOM)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the statement"}, **BATCH_404},
)
def statement(merchant: str, settlement_date: dt.date, engine: Engine = Depends(get_engine)) -> Response:
    text = run_in_transaction(
        engine,
        lambda conn: service.statement_csv(conn, merchant_ref=merchant, settlement_date=settlement_date),
        readonly=True,
    )
    filename = f"statement-{merchant}-{settlement_date.isoformat()}.csv"
    return Response(
        content=text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/float", summary="沉淀资金: funds collected but not yet paid out, per date and merchant")
def float_report(
    as_of: dt.date, date_from: dt.date | None = None, engine: Engine = Depends(get_engine)
) -> dict[str, Any]:
    report = run_in_transaction(
        engine, lambda conn: service.float_report(conn, as_of=as_of, date_from=date_from), readonly=True
    )
    return report.as_json()


@router.post(
    "/reserve-check",
    summary="备付金: customer funds in the ledger against the custody account's statement (the body)",
    responses={
        422: error_doc(
            "a malformed statement or one without a closing balance (reserve_statement_invalid), "
            "or one closing on another date (reserve_statement_date_mismatch)"
        )
    },
)
async def reserve_check(
    request: Request,
    date: dt.date,
    format: Literal["camt053", "mt940"],
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"statement.{format}"
        with path.open("wb") as file:
            async for chunk in request.stream():
                file.write(chunk)
        check = await run_in_threadpool(
            run_in_transaction,
            engine,
            lambda conn: service.reserve_check(conn, date=date, statement=path, fmt=format),
            readonly=True,
        )
    return check.as_json()
