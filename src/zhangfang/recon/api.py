"""Reconciliation over HTTP (``/v1/recon``), for the operations console: admin key only.

The console names the signed-on person in ``X-Operator`` (the actor of every
workflow step); the admin key authenticates the console itself. Bills are
uploaded as the request body (``application/octet-stream``), streamed to a
temporary file, then imported like ``zhangfang recon import``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from zhangfang.api.deps import get_engine, make_admin_router
from zhangfang.api.responses import ErrorResponse
from zhangfang.channels import registry as channel_registry
from zhangfang.db.uow import run_in_transaction
from zhangfang.recon import service, workflow
from zhangfang.recon.importers import FORMATS

router = make_admin_router(prefix="/v1/recon", tags=["reconciliation"])

OperatorHeader = Header(alias="X-Operator", description="the signed-on person acting", examples=["chen.yunying"])
Format = Literal["bank_direct", "alipay", "wechat", "mt940", "camt053"]
assert set(Format.__args__) == set(FORMATS)  # type: ignore[attr-defined]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        404: "no such discrepancy (discrepancy_not_found)",
        409: "the day is reconciled already, or the discrepancy is not in a state for this step",
        422: "the request breaks a rule (recon_file_invalid, approver_must_differ, resolution_action_invalid, …)",
    }
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in statuses}


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["no_action", "supplement", "write_off", "book_overage"]
    reason: str


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: str


@router.post("/bills", summary="Import a channel's bill for a day (the file as the body)", responses=_errors(409, 422))
async def import_bill(
    request: Request,
    channel: str,
    bill_date: dt.date,
    format: Format,
    partial: bool = False,
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"{channel.replace(':', '_')}-{bill_date}.{format}"
        with path.open("wb") as file:
            async for chunk in request.stream():
                file.write(chunk)
        result = await run_in_threadpool(
            service.import_bill, engine, channel=channel, bill_date=bill_date, path=path, fmt=format, partial=partial
        )
    return {
        "bill": result.ref,
        "channel": result.channel,
        "bill_date": result.bill_date,
        "lines": result.line_count,
        "rejected": [{"line": error.line_no, "reason": error.reason} for error in result.rejected],
        "replayed": result.replayed,
        "totals": result.totals,
    }


@router.post("/runs", summary="Match a day's bill against our records, then resolve the safe discrepancies",
             responses=_errors(409))  # fmt: skip
def run(channel: str, bill_date: dt.date, auto: bool = True, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    registry = channel_registry.installed()
    result = service.run(engine, channel=channel, bill_date=bill_date, registry=registry)
    resolved = workflow.auto_resolve(engine, channel=channel, bill_date=bill_date) if auto and registry else 0
    return {**vars(result), "auto_resolved": resolved}


@router.get("/report", summary="A channel's day: matched, carried, discrepancies by class and state")
def report(channel: str, bill_date: dt.date, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(
        engine, lambda conn: service.report(conn, channel=channel, bill_date=bill_date), readonly=True
    )
    return vars(found)


@router.get("/discrepancies", summary="Discrepancies, oldest first")
def list_discrepancies(
    channel: str | None = None,
    bill_date: dt.date | None = None,
    state: Literal["open", "assigned", "pending_approval", "resolved", "auto_resolved"] | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    engine: Engine = Depends(get_engine),
) -> dict[str, Any]:
    found = run_in_transaction(
        engine,
        lambda conn: service.list_discrepancies(conn, channel=channel, bill_date=bill_date, state=state, limit=limit),
        readonly=True,
    )
    return {"discrepancies": found}


@router.get("/discrepancies/{ref}", summary="A discrepancy and every step taken on it", responses=_errors(404))
def get_discrepancy(ref: str, engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    def work(conn: Any) -> dict[str, Any]:
        return {**service.get_discrepancy(conn, ref=ref), "history": workflow.history(conn, ref=ref)}

    return run_in_transaction(engine, work, readonly=True)


@router.post("/discrepancies/{ref}/assign", summary="Give a discrepancy to a person", responses=_errors(404, 409, 422))
def assign(ref: str, body: AssignIn, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)) -> dict:
    run_in_transaction(engine, lambda conn: workflow.assign(conn, ref=ref, assignee=body.assignee, actor=operator))
    return {"ref": ref, "state": "assigned", "assignee": body.assignee}


@router.post("/discrepancies/{ref}/resolve", summary="Resolve a discrepancy", responses=_errors(404, 409, 422))
def resolve(ref: str, body: ResolveIn, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)) -> dict:
    state = workflow.resolve(engine, ref=ref, action=body.action, reason=body.reason, actor=operator)
    return {"ref": ref, "state": state}


@router.post(
    "/discrepancies/{ref}/approve",
    summary="Approve a money-moving resolution (not by its resolver)",
    responses=_errors(404, 409, 422),
)
def approve(ref: str, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)) -> dict:
    entry = run_in_transaction(engine, lambda conn: workflow.approve(conn, ref=ref, actor=operator))
    return {"ref": ref, "state": "resolved", "entry": entry}
