"""The accounting system's HTTP router (``/v1/accounting``), for finance staff's console: admin key only.

Translation between JSON and the accounting services. Each handler is one
unit of work, except ``POST /sync`` (the sync owns one transaction per day).
The configured chart and rules are installed when the app starts, and again
by every sync.

Who acts: maker-checker needs to know the person, not only that the console
is allowed in. The console signs its users on and names the person in the
``X-Operator`` header; the admin key authenticates the console. A voucher's
maker is the operator who submits it, its checker the one who approves it.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, Header, Query, Response, status
from sqlalchemy.engine import Engine

from zhangfang.accounting import beancount, errors, reports, service, statements
from zhangfang.accounting import export as table_export
from zhangfang.accounting import sync as accounting_sync
from zhangfang.accounting.chart import configured
from zhangfang.accounting.schemas import (
    CheckOut,
    ExceptionOut,
    ManualVoucherIn,
    PeriodOut,
    RejectIn,
    SyncedDayOut,
    SyncIn,
    TrialBalanceOut,
    VoucherOut,
    VoucherPage,
)
from zhangfang.api.deps import get_engine, get_settings, make_admin_router
from zhangfang.api.responses import ErrorResponse
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import InvalidInput

router = make_admin_router(prefix="/v1/accounting", tags=["accounting"])

OperatorHeader = Header(
    alias="X-Operator", description="the signed-on person acting (maker, checker, closer)", examples=["li.kuaiji"]
)
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        404: "no such voucher (voucher_not_found) or subject (subject_not_found)",
        409: "the key was used for another voucher, or the voucher is no longer pending",
        422: "the request breaks a rule (voucher_must_balance, period_closed, maker_cannot_approve, "
        "period_not_synced, day_not_accounted, …)",
    }
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in statuses}


# --------------------------------------------------------------------------- sync and checks


@router.post("/sync", summary="Book closed ledger days into vouchers", responses=_errors(422))
def sync(
    body: SyncIn, engine: Engine = Depends(get_engine), settings: Settings = Depends(get_settings)
) -> dict[str, list[SyncedDayOut]]:
    chart, posting_rules = configured(settings)
    result = accounting_sync.sync(
        engine,
        chart=chart,
        posting_rules=posting_rules,
        mode=body.mode or settings.accounting_sync_mode,
        through=body.through,
    )
    return {"days": [SyncedDayOut.of(day) for day in result.days]}


@router.get("/days", summary="Booked ledger days, newest first")
def days(limit: int = Query(default=31, ge=1, le=366), engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    found = run_in_transaction(engine, lambda conn: service.list_synced_days(conn, limit=limit), readonly=True)
    return {"days": [SyncedDayOut.of(day) for day in found]}


@router.get(
    "/trial-balance", response_model=TrialBalanceOut, summary="试算平衡表 of a date or a period", responses=_errors(422)
)
def trial_balance(
    date: dt.date | None = Query(default=None, description="the month of this date up to it"),
    period: str | None = Query(default=None, description="YYYY-MM, whole"),
    currency: str | None = None,
    engine: Engine = Depends(get_engine),
) -> TrialBalanceOut:
    trial = run_in_transaction(
        engine,
        lambda conn: reports.trial_balance(conn, date=date, period=period, currency=currency),
        readonly=True,
    )
    return TrialBalanceOut.of(trial)


@router.get("/check", response_model=CheckOut, summary="账账核对 at a booked day", responses=_errors(422))
def check(date: dt.date, engine: Engine = Depends(get_engine)) -> CheckOut:
    result = run_in_transaction(engine, lambda conn: reports.check_ledger(conn, date=date), readonly=True)
    return CheckOut.of(result)


@router.get("/exceptions", summary="Ledger entries no posting rule covers")
def exceptions(limit: int = Query(default=100, ge=1, le=1000), engine: Engine = Depends(get_engine)) -> dict:
    items = run_in_transaction(engine, lambda conn: service.list_exceptions(conn, limit=limit), readonly=True)
    return {"exceptions": [ExceptionOut.of(item) for item in items]}


@router.get("/chart", summary="The installed chart of accounts")
def chart(engine: Engine = Depends(get_engine)) -> dict[str, Any]:
    subjects = run_in_transaction(engine, reports.load_subjects, readonly=True)
    return {"subjects": [vars(subject) for subject in subjects.values()]}


# --------------------------------------------------------------------------- statements and exports

ReportName = Literal["general-ledger", "subsidiary", "balance-sheet", "income-statement"]


@router.get(
    "/reports/{name}",
    summary="A statement as JSON, or as a CSV or XLSX download (?format=)",
    responses={
        200: {"content": {value: {} for value in CONTENT_TYPES.values()}, "description": "the report"},
        **_errors(404, 422),
    },
)
def report(
    name: ReportName,
    date: dt.date | None = Query(default=None, description="balance sheet: the day; income statement: up to it"),
    period: str | None = Query(default=None, description="income statement: YYYY-MM"),
    subject: str | None = Query(default=None, description="general ledger and subsidiary ledger: the subject"),
    date_from: dt.date | None = Query(default=None, alias="from"),
    date_to: dt.date | None = Query(default=None, alias="to"),
    aux: str | None = None,
    currency: str = "CNY",
    format: Literal["json", "csv", "xlsx"] = "json",
    engine: Engine = Depends(get_engine),
) -> Any:
    def build(conn: Any) -> table_export.Table:
        if name == "balance-sheet":
            return statements.balance_sheet(conn, date=_required(date, "date"), currency=currency).to_table()
        if name == "income-statement":
            first, last = reports.report_range(date=date, period=period)
            return statements.income_statement(conn, date_from=first, date_to=last, currency=currency).to_table()
        first, last = _required(date_from, "from"), _required(date_to, "to")
        code = _required(subject, "subject")
        if name == "general-ledger":
            return statements.general_ledger(
                conn, subject_code=code, date_from=first, date_to=last, currency=currency
            ).to_table()
        return statements.subsidiary_ledger(
            conn, subject_code=code, date_from=first, date_to=last, currency=currency, aux=aux
        ).to_table()

    table = run_in_transaction(engine, build, readonly=True)
    if format == "json":
        return table.as_json()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"{name}.{format}"
        table_export.write_table(table, path, format)
        content = path.read_bytes()
    return Response(
        content,
        media_type=CONTENT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}.{format}"'},
    )


def _required(value: Any, field: str) -> Any:
    if value is None:
        raise InvalidInput(f"{field} is required for this report", field=field)
    return value


@router.get(
    "/export/beancount",
    summary="The books as a beancount file (bean-check verifies it)",
    responses={200: {"content": {"text/plain": {}}, "description": "the beancount file"}, **_errors(422)},
)
def export_beancount(through: dt.date | None = None, engine: Engine = Depends(get_engine)) -> Response:
    buffer = io.StringIO()
    run_in_transaction(engine, lambda conn: beancount.export_beancount(conn, buffer, through=through), readonly=True)
    return Response(
        buffer.getvalue(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="zhangfang.beancount"'},
    )


# --------------------------------------------------------------------------- vouchers


@router.get(
    "/vouchers", response_model=VoucherPage, summary="Vouchers in the order they were made", responses=_errors(422)
)
def list_vouchers(
    period: str | None = None,
    state: Literal["pending", "posted", "rejected"] | None = None,
    kind: Literal["summary", "entry", "manual", "closing"] | None = None,
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, ge=1, le=500),
    engine: Engine = Depends(get_engine),
) -> VoucherPage:
    def work(conn: Any) -> list[Any]:
        after_id = service.voucher_id_of(conn, cursor) if cursor else None
        if cursor and after_id is None:
            raise errors.CursorInvalid(f"cursor {cursor!r} is not the ref of a voucher", field="cursor")
        return service.list_vouchers(conn, period=period, state=state, kind=kind, limit=limit, after_id=after_id)

    found = run_in_transaction(engine, work, readonly=True)
    return VoucherPage(
        data=[VoucherOut.of(voucher) for voucher in found],
        next_cursor=found[-1].ref if len(found) == limit else None,
    )


@router.get("/vouchers/{ref}", response_model=VoucherOut, summary="A voucher and its lines", responses=_errors(404))
def get_voucher(ref: str, engine: Engine = Depends(get_engine)) -> VoucherOut:
    voucher = run_in_transaction(engine, lambda conn: service.get_voucher(conn, ref=ref), readonly=True)
    return VoucherOut.of(voucher)


@router.post(
    "/vouchers",
    response_model=VoucherOut,
    status_code=status.HTTP_201_CREATED,
    summary="Make a manual voucher (pending a second person's approval)",
    responses={
        200: {"model": VoucherOut, "description": "the key replayed an earlier voucher"},
        **_errors(404, 409, 422),
    },
)
def submit_voucher(
    body: ManualVoucherIn, response: Response, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)
) -> VoucherOut:
    request = body.to_request(maker=operator)
    voucher, created = run_in_transaction(engine, lambda conn: service.submit_manual_voucher(conn, request=request))
    if not created:
        response.status_code = status.HTTP_200_OK
    return VoucherOut.of(voucher)


@router.post(
    "/vouchers/{ref}/approve",
    response_model=VoucherOut,
    summary="Approve and post a manual voucher (not by its maker)",
    responses=_errors(404, 409, 422),
)
def approve_voucher(ref: str, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)) -> VoucherOut:
    voucher = run_in_transaction(engine, lambda conn: service.approve_voucher(conn, ref=ref, checker=operator))
    return VoucherOut.of(voucher)


@router.post(
    "/vouchers/{ref}/reject",
    response_model=VoucherOut,
    summary="Reject a manual voucher",
    responses=_errors(404, 409, 422),
)
def reject_voucher(
    ref: str, body: RejectIn, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)
) -> VoucherOut:
    voucher = run_in_transaction(
        engine, lambda conn: service.reject_voucher(conn, ref=ref, checker=operator, reason=body.reason)
    )
    return VoucherOut.of(voucher)


# --------------------------------------------------------------------------- periods


@router.get("/periods", summary="Periods, oldest first")
def list_periods(engine: Engine = Depends(get_engine)) -> dict[str, list[PeriodOut]]:
    found = run_in_transaction(engine, service.list_periods, readonly=True)
    return {"periods": [PeriodOut.of(period) for period in found]}


@router.post(
    "/periods/{period}/close",
    response_model=PeriodOut,
    summary="Close a period (月结; December: 年结 with the closing voucher)",
    responses=_errors(422),
)
def close_period(period: str, operator: str = OperatorHeader, engine: Engine = Depends(get_engine)) -> PeriodOut:
    closed = run_in_transaction(engine, lambda conn: service.close_period(conn, period=period, operator=operator))
    return PeriodOut.of(closed)
