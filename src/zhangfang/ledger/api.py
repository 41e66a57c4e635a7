"""The ledger's HTTP router (``/v1/ledger``): translation between JSON and ``ledger.service``.

Every route needs the admin key. Each handler is one unit of work:
``run_in_transaction(engine, ...)`` (read-only handlers pass ``readonly=True``),
except ``POST /entries`` (``post_entry_alone`` owns its transaction, the fast
path) and ``POST /day-end`` (day-end owns its transactions). Services never
commit; a refused request raises before anything is committed, so it changes
nothing.

Status codes: a write that creates something answers 201, and 200 when the
idempotency key replays an earlier result (``replayed: true``). Refusals are
the error shape of ``zhangfang.api.app``.

Times given to the service are converted to UTC here: SQLite stores a
timestamp's wall-clock digits without its offset, so ``+08:00`` must not reach
it. A time without a zone is passed on unchanged for the service to refuse.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Body, Depends, Header, Query, Response, status
from pydantic import AwareDatetime
from sqlalchemy.engine import Connection, Engine

from zhangfang.api.deps import get_engine, get_settings, make_admin_router
from zhangfang.api.responses import ErrorBody, ErrorResponse
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.errors import DateRangeInvalid, IdempotencyKeyMismatch
from zhangfang.ledger.models import AccountRequest, EntryRequest, EntryResult, Leg
from zhangfang.ledger.schemas import (
    AccountBalanceOut,
    AccountIn,
    AccountOut,
    AccountPage,
    BatchEntryIn,
    BatchIn,
    BatchItemOut,
    BatchOut,
    ChainStatusOut,
    DayBalanceOut,
    DayCloseIn,
    DayCloseOut,
    DayEndOut,
    EntryIn,
    EntryOut,
    EntryResultOut,
    HoldIn,
    HoldOut,
    HoldPostIn,
    HoldResultOut,
    HoldVoidIn,
    ReverseIn,
    StatementLineOut,
    StatementPage,
    VerifyReportOut,
)

HISTORY_DAYS_DEFAULT = 31
HISTORY_DAYS_MAX = 366


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        404: "a referenced account, entry or hold does not exist",
        409: "the idempotency key was used for a different request, or the state already moved on",
        422: "the request is malformed (request_invalid, or a rule such as entry_must_balance) "
        "or the ledger's state refuses it (debits_exceed_credits, account_closed, hold_expired, …)",
    }
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in statuses}


router = make_admin_router(prefix="/v1/ledger", tags=["ledger"])


def _entry_request(body: BatchEntryIn | EntryIn, idempotency_key: str | None) -> EntryRequest:
    return EntryRequest(
        idempotency_key=idempotency_key,  # type: ignore[arg-type]  # None is refused by the service
        business_code=body.business_code,
        legs=tuple(Leg(leg.account, leg.side, leg.amount, leg.currency) for leg in body.legs),
        metadata=body.metadata,
    )


def _created_or_replayed(response: Response, replayed: bool) -> None:
    response.status_code = status.HTTP_200_OK if replayed else status.HTTP_201_CREATED


def _replayed(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": "the key replayed an earlier result; nothing was written"}}


# --------------------------------------------------------------------------- accounts


@router.post(
    "/accounts",
    response_model=AccountOut,
    status_code=status.HTTP_201_CREATED,
    summary="Open an account (idempotent on key)",
    responses={**_replayed(AccountOut), **_errors(409, 422)},
)
def open_account(body: AccountIn, response: Response, engine: Engine = Depends(get_engine)) -> AccountOut:
    request = AccountRequest(**body.model_dump())
    account, created = run_in_transaction(engine, lambda conn: ledger.open_account(conn, request=request))
    _created_or_replayed(response, replayed=not created)
    return AccountOut.of(account)


@router.get("/accounts", response_model=AccountPage, summary="List accounts in creation order")
def list_accounts(
    owner_ref: str | None = None,
    ledger_code: str | None = None,
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, description="1 to 500"),
    engine: Engine = Depends(get_engine),
) -> AccountPage:
    page = run_in_transaction(
        engine,
        lambda conn: ledger.list_accounts(
            conn, owner_ref=owner_ref, ledger_code=ledger_code, cursor=cursor, limit=limit
        ),
        readonly=True,
    )
    return AccountPage(items=[AccountOut.of(a) for a in page.items], next_cursor=page.next_cursor)


@router.get("/accounts/{ref}", response_model=AccountOut, summary="An account", responses=_errors(404))
def get_account(ref: str, engine: Engine = Depends(get_engine)) -> AccountOut:
    account = run_in_transaction(engine, lambda conn: ledger.get_account(conn, ref=ref), readonly=True)
    return AccountOut.of(account)


@router.post(
    "/accounts/{ref}/close",
    response_model=AccountOut,
    summary="Close an account whose balance is zero (closing again returns it unchanged)",
    responses=_errors(404, 422),
)
def close_account(ref: str, engine: Engine = Depends(get_engine)) -> AccountOut:
    account = run_in_transaction(engine, lambda conn: ledger.close_account(conn, ref=ref))
    return AccountOut.of(account)


@router.get(
    "/accounts/{ref}/balance",
    response_model=AccountBalanceOut,
    summary="An account's balance now, or as of an entry or a time (inclusive)",
    responses=_errors(404),
)
def account_balance(
    ref: str,
    as_of_entry: str | None = Query(default=None, description="an entry id"),
    as_of_time: AwareDatetime | None = Query(default=None, description="ISO 8601 time with a zone"),
    engine: Engine = Depends(get_engine),
) -> AccountBalanceOut:
    balance = run_in_transaction(
        engine,
        lambda conn: ledger.balance(conn, ref=ref, as_of_entry=as_of_entry, as_of_time=as_of_time),
        readonly=True,
    )
    return AccountBalanceOut(account=ref, as_of_entry=as_of_entry, as_of_time=as_of_time, **balance.as_dict())


@router.get(
    "/accounts/{ref}/statement",
    response_model=StatementPage,
    summary="An account's postings oldest first, with the posted balance after each (账户明细)",
    responses=_errors(404),
)
def account_statement(
    ref: str,
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, description="1 to 500"),
    engine: Engine = Depends(get_engine),
) -> StatementPage:
    page = run_in_transaction(
        engine,
        lambda conn: ledger.account_statement(conn, ref=ref, cursor=cursor, limit=limit),
        readonly=True,
    )
    return StatementPage(items=[StatementLineOut(**item) for item in page.items], next_cursor=page.next_cursor)


@router.get(
    "/accounts/{ref}/history",
    response_model=list[DayBalanceOut],
    summary="Closing balances per closed accounting date (default: the last 31 days up to today)",
    responses=_errors(404),
)
def account_history(
    ref: str,
    date_from: dt.date | None = Query(default=None, description="first accounting date (YYYY-MM-DD)"),
    date_to: dt.date | None = Query(default=None, description="last accounting date; default today"),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> list[DayBalanceOut]:
    date_to = date_to or dt.datetime.now(ZoneInfo(settings.timezone)).date()
    if date_from is None:
        # Clamped: a date_to in year 1 has no 31 days before it.
        date_from = max(
            dt.date.min, date_to - dt.timedelta(days=min(HISTORY_DAYS_DEFAULT - 1, date_to.toordinal() - 1))
        )
    if date_from > date_to:
        raise DateRangeInvalid("date_from must not be after date_to", field="date_from")
    if (date_to - date_from).days >= HISTORY_DAYS_MAX:
        raise DateRangeInvalid(f"at most {HISTORY_DAYS_MAX} days at a time", field="date_from")
    history = run_in_transaction(
        engine,
        lambda conn: ledger.balance_history(conn, ref=ref, date_from=date_from, date_to=date_to),
        readonly=True,
    )
    return [DayBalanceOut(accounting_date=day, **balance.as_dict()) for day, balance in history]


# --------------------------------------------------------------------------- entries


@router.post(
    "/entries",
    response_model=EntryResultOut,
    status_code=status.HTTP_201_CREATED,
    summary="Post one balanced entry (idempotent on idempotency_key)",
    responses={**_replayed(EntryResultOut), **_errors(404, 409, 422)},
)
def post_entry(
    body: EntryIn,
    response: Response,
    idempotency_key_header: str | None = Header(
        default=None,
        alias="Idempotency-Key",
        description="the idempotency key, when the body does not carry one",
    ),
    engine: Engine = Depends(get_engine),
) -> EntryResultOut:
    key = body.idempotency_key
    if key is None:
        key = idempotency_key_header
    elif idempotency_key_header is not None and idempotency_key_header != key:
        raise IdempotencyKeyMismatch(
            "the Idempotency-Key header and the body's idempotency_key differ", field="idempotency_key"
        )
    result = ledger.post_entry_alone(engine, request=_entry_request(body, key))
    _created_or_replayed(response, result.replayed)
    return EntryResultOut.of_result(result)


@router.post(
    "/entries/batch",
    response_model=BatchOut,
    summary="Post up to 5000 entries in one transaction (the fast path)",
    description=(
        "atomic=true: all or nothing; the first refusal answers with its error and details.index. "
        "atomic=false: each entry is posted, replayed or refused on its own; the answer is 200 either way."
    ),
    responses=_errors(404, 409, 422),
)
def post_batch(body: BatchIn, engine: Engine = Depends(get_engine)) -> BatchOut:
    requests = [_entry_request(entry, entry.idempotency_key) for entry in body.entries]
    results = run_in_transaction(engine, lambda conn: ledger.post_entries(conn, requests=requests, atomic=body.atomic))
    items = []
    for index, result in enumerate(results):
        if isinstance(result, EntryResult):
            items.append(
                BatchItemOut(
                    index=index,
                    status="replayed" if result.replayed else "posted",
                    entry=EntryOut.of(result.entry),
                )
            )
        else:
            items.append(BatchItemOut(index=index, status="refused", error=ErrorBody(**result.to_dict())))
    return BatchOut(results=items)


@router.get("/entries/{ref}", response_model=EntryOut, summary="An entry and its postings", responses=_errors(404))
def get_entry(ref: str, engine: Engine = Depends(get_engine)) -> EntryOut:
    return EntryOut.of(run_in_transaction(engine, lambda conn: ledger.get_entry(conn, ref=ref), readonly=True))


@router.post(
    "/entries/{ref}/reverse",
    response_model=EntryResultOut,
    status_code=status.HTTP_201_CREATED,
    summary="Post the mirror of a plain entry (an entry is reversed once)",
    responses={**_replayed(EntryResultOut), **_errors(404, 409, 422)},
)
def reverse_entry(
    ref: str,
    response: Response,
    body: ReverseIn | None = Body(default=None),
    engine: Engine = Depends(get_engine),
) -> EntryResultOut:
    body = body or ReverseIn()
    result = run_in_transaction(
        engine,
        lambda conn: ledger.reverse_entry(conn, ref=ref, idempotency_key=body.idempotency_key, metadata=body.metadata),
    )
    _created_or_replayed(response, result.replayed)
    return EntryResultOut.of_result(result)


# --------------------------------------------------------------------------- holds


@router.post(
    "/holds",
    response_model=HoldResultOut,
    status_code=status.HTTP_201_CREATED,
    summary="Reserve funds (冻结) to move later",
    responses={**_replayed(HoldResultOut), **_errors(404, 409, 422)},
)
def create_hold(body: HoldIn, response: Response, engine: Engine = Depends(get_engine)) -> HoldResultOut:
    result = run_in_transaction(
        engine,
        lambda conn: ledger.create_hold(
            conn,
            idempotency_key=body.idempotency_key,
            debit_account=body.debit_account,
            credit_account=body.credit_account,
            amount=body.amount,
            currency=body.currency,
            business_code=body.business_code,
            expires_at=body.expires_at,
            metadata=body.metadata,
        ),
    )
    _created_or_replayed(response, result.replayed)
    return HoldResultOut.of(result)


@router.get("/holds/{ref}", response_model=HoldOut, summary="A hold and its state", responses=_errors(404))
def get_hold(ref: str, engine: Engine = Depends(get_engine)) -> HoldOut:
    return HoldOut.of(run_in_transaction(engine, lambda conn: ledger.get_hold(conn, ref=ref), readonly=True))


@router.post(
    "/holds/{ref}/post",
    response_model=HoldResultOut,
    summary="Post a pending hold: move all or part of it, release the rest",
    responses=_errors(404, 409, 422),
)
def post_hold(ref: str, body: HoldPostIn, engine: Engine = Depends(get_engine)) -> HoldResultOut:
    result = run_in_transaction(
        engine,
        lambda conn: ledger.post_hold(
            conn, ref=ref, idempotency_key=body.idempotency_key, amount=body.amount, metadata=body.metadata
        ),
    )
    return HoldResultOut.of(result)


@router.post(
    "/holds/{ref}/void",
    response_model=HoldResultOut,
    summary="Release a pending hold entirely (解冻)",
    responses=_errors(404, 409, 422),
)
def void_hold(ref: str, body: HoldVoidIn, engine: Engine = Depends(get_engine)) -> HoldResultOut:
    result = run_in_transaction(
        engine,
        lambda conn: ledger.void_hold(conn, ref=ref, idempotency_key=body.idempotency_key, metadata=body.metadata),
    )
    return HoldResultOut.of(result)


# --------------------------------------------------------------------------- day-end and chain


@router.get("/day-end", response_model=DayEndOut, summary="The open accounting date and the recent closes")
def day_end_status(engine: Engine = Depends(get_engine)) -> DayEndOut:
    def read(conn: Connection) -> DayEndOut:
        closes = ledger.list_day_closes(conn)
        return DayEndOut(open_date=ledger.open_date(conn), closes=[DayCloseOut.of(c) for c in closes])

    return run_in_transaction(engine, read, readonly=True)


@router.post(
    "/day-end",
    response_model=DayCloseOut,
    summary="Close the open accounting date (日切); closing a closed date returns its close",
    responses=_errors(422),
)
def close_day(
    body: DayCloseIn,
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> DayCloseOut:
    close = ledger.close_day(
        engine, accounting_date=body.accounting_date, wait_seconds_max=settings.transaction_age_max_seconds
    )
    return DayCloseOut.of(close)


@router.get("/chain", response_model=ChainStatusOut, summary="How far the hash chain has sealed the journal")
def chain_status(engine: Engine = Depends(get_engine)) -> ChainStatusOut:
    return ChainStatusOut.of(run_in_transaction(engine, lambda conn: ledger.chain_status(conn), readonly=True))


@router.post(
    "/chain/verify",
    response_model=VerifyReportOut,
    summary="Recompute every seal and report the first entry that no longer matches",
)
def verify_chain(engine: Engine = Depends(get_engine)) -> VerifyReportOut:
    return VerifyReportOut.of(run_in_transaction(engine, lambda conn: ledger.verify_chain(conn), readonly=True))
