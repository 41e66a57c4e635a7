"""账务 — the account system: accounts, journal entries, holds, balances.

Every function takes a ``Connection`` already inside a transaction and never
commits: the caller owns the unit of work (``zhangfang.db.uow``).

Guarantees
- Money is integer minor units of the account's currency; every movement is a
  journal entry whose debits equal its credits per currency.
- Every write carries an idempotency key. The same key with the same request
  returns the first result (``replayed=True``); with a different request it is
  ``idempotency_key_conflict``. Opening an account is idempotent on its ``key``.
- A refused request raises a ``ZhangfangError`` before anything is written
  (see ``ledger.errors`` for the catalogue and its precedence).
- Entries are never updated or deleted; a correction is ``reverse_entry``.
- A hold (冻结) reserves funds against the account's constraint at once; it is
  later posted (all or part, the rest released), voided, or expired by
  ``expire_holds``. Exactly one of these happens to each hold.
- A hot account's balance is its folded row plus its unfolded deltas, so
  reading it is exact at any time.

Hash chain, hot folding and day-end live in ``chain``, ``hot`` and ``day_end``
and are re-exported here, so other domains only ever import this module.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang import ids, money
from zhangfang.db.sql import insert_ignoring_conflict, request_digest
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import errors
from zhangfang.ledger.chain import chain_status, seal_entries, verify_chain
from zhangfang.ledger.day_end import close_day, day_balances, get_day_close, list_day_closes, open_date
from zhangfang.ledger.hot import fold_hot_accounts, hot_delta_sums
from zhangfang.ledger.models import (
    Account,
    AccountRequest,
    Balance,
    Entry,
    EntryRequest,
    EntryResult,
    Hold,
    HoldResult,
    Leg,
    Page,
)
from zhangfang.ledger.posting import (
    SIDES,
    PlannedEntry,
    PlannedLeg,
    fits_fast_path,
    load_entries,
    post_one_alone,
    post_planned,
    sha256_hex,
)
from zhangfang.ledger.tables import accounts, holds, journal_entries, postings

__all__ = [
    "account_statement",
    "balance",
    "balance_history",
    "chain_status",
    "close_account",
    "close_day",
    "create_hold",
    "ensure_account",
    "expire_holds",
    "fold_hot_accounts",
    "get_account",
    "get_day_close",
    "get_entry",
    "get_hold",
    "list_accounts",
    "list_day_closes",
    "open_account",
    "open_date",
    "plan_entry",
    "post_entries",
    "post_entry",
    "post_entry_alone",
    "post_hold",
    "reverse_entry",
    "seal_entries",
    "verify_chain",
    "void_hold",
]

KEY_LENGTH_MAX = 200
CODE_LENGTH_MAX = 64
METADATA_BYTES_MAX = 4096
PAGE_LIMIT_MAX = 500


# --------------------------------------------------------------------------- validation


def _check_key(key: Any, field: str = "idempotency_key") -> str:
    if not isinstance(key, str) or not (1 <= len(key) <= KEY_LENGTH_MAX) or not key.isprintable() or not key.isascii():
        raise errors.IdempotencyKeyInvalid(
            f"{field} must be 1 to {KEY_LENGTH_MAX} printable ASCII characters", field=field
        )
    return key


def _check_code(code: Any, error: type[ZhangfangError], field: str) -> str:
    if not isinstance(code, str) or not (1 <= len(code) <= CODE_LENGTH_MAX) or not code.isprintable():
        raise error(f"{field} must be 1 to {CODE_LENGTH_MAX} printable characters", field=field)
    return code


def _check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise errors.MetadataInvalid("metadata must be a JSON object", field="metadata")
    try:
        encoded = json.dumps(dict(metadata), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.MetadataInvalid(f"metadata is not plain JSON: {exc}", field="metadata") from exc
    if len(encoded.encode()) > METADATA_BYTES_MAX:
        raise errors.MetadataInvalid(f"metadata exceeds {METADATA_BYTES_MAX} bytes", field="metadata")
    return json.loads(encoded)


def _utc_time(value: Any, field: str) -> dt.datetime:
    """A time zone aware instant, converted to UTC: SQLite keeps the clock time and drops the offset."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise errors.TimeZoneMissing(f"{field} must be a time with a time zone (ISO 8601 with offset)", field=field)
    return value.astimezone(dt.UTC)


def _now(now: dt.datetime | None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else _utc_time(now, "now")


def _check_amount(amount: Any, field: str) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise errors.AmountMustBeInteger("amounts are integers in the currency's minor unit (fen for CNY)", field=field)
    if amount <= 0:
        raise errors.AmountMustBePositive("amount must be greater than zero", field=field)
    return amount


def _check_currency(code: Any, field: str) -> str:
    try:
        return money.currency(code).code
    except ZhangfangError as exc:
        exc.field = field
        raise


def _check_account_ref(ref: Any, field: str) -> str:
    if not isinstance(ref, str) or not (1 <= len(ref) <= 40):
        raise errors.AccountRefInvalid("account must be an account id such as acc_…", field=field)
    return ref


def _check_leg(leg: Leg, position: int) -> PlannedLeg:
    # The common case first and cheap: field names are only spelled out for a refusal.
    account, side, amount, currency = leg.account, leg.side, leg.amount, leg.currency
    if (
        type(account) is str
        and 1 <= len(account) <= 40
        and type(amount) is int
        and amount > 0
        and side in SIDES
        and money.is_known_currency(currency)
    ):
        return PlannedLeg(account, side, "posted", amount, currency)
    prefix = f"legs.{position}"
    account = _check_account_ref(account, f"{prefix}.account")
    amount = _check_amount(amount, f"{prefix}.amount")
    currency = _check_currency(currency, f"{prefix}.currency")
    if side not in SIDES:
        raise errors.SideInvalid("side must be 'debit' or 'credit'", field=f"{prefix}.side")
    raise AssertionError(f"leg {position} passed every check yet was not accepted")  # pragma: no cover


def _check_balanced(legs: Sequence[PlannedLeg]) -> None:
    totals: dict[str, int] = {}
    for leg in legs:
        totals[leg.currency] = totals.get(leg.currency, 0) + (leg.amount if leg.side == "debit" else -leg.amount)
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        raise errors.EntryMustBalance(
            "debits must equal credits in every currency", field="legs", difference=unbalanced
        )


def plan_entry(request: EntryRequest) -> PlannedEntry:
    """Check an entry request without the database; raise the first broken rule, or return the plan."""
    key = _check_key(request.idempotency_key)
    business_code = _check_code(request.business_code, errors.BusinessCodeInvalid, "business_code")
    if not isinstance(request.legs, list | tuple) or len(request.legs) < 2:
        raise errors.PostingsTooFew("an entry needs at least two legs", field="legs")
    legs = tuple([_check_leg(leg, position) for position, leg in enumerate(request.legs)])
    _check_balanced(legs)
    metadata = _check_metadata(request.metadata)
    # A plain list in a fixed order, dumped by json's cached C encoder: canonical (metadata
    # comes back from _check_metadata with its keys sorted) and about twice as fast as a dict.
    payload = ["entry", business_code, [[leg.account, leg.side, leg.amount, leg.currency] for leg in legs], metadata]
    return PlannedEntry(
        idempotency_key=key,
        request_hash=sha256_hex(json.dumps(payload)),
        kind="entry",
        business_code=business_code,
        legs=legs,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- accounts


def _account_payload(request: AccountRequest) -> dict[str, Any]:
    ledger_code = _check_code(request.ledger_code, errors.LedgerCodeInvalid, "ledger_code")
    currency = _check_currency(request.currency, "currency")
    if request.normal_side not in SIDES:
        raise errors.NormalSideInvalid("normal_side must be 'debit' or 'credit'", field="normal_side")
    flags = {
        "debits_must_not_exceed_credits": bool(request.debits_must_not_exceed_credits),
        "credits_must_not_exceed_debits": bool(request.credits_must_not_exceed_debits),
        "hot": bool(request.hot),
    }
    if flags["debits_must_not_exceed_credits"] and flags["credits_must_not_exceed_debits"]:
        raise errors.AccountFlagsInvalid("an account takes at most one of the two balance constraints", field="flags")
    if flags["hot"] and (flags["debits_must_not_exceed_credits"] or flags["credits_must_not_exceed_debits"]):
        raise errors.AccountFlagsInvalid(
            "a hot account cannot have a balance constraint: its balance is folded after posting",
            field="flags",
        )
    owner_ref = request.owner_ref
    if owner_ref is not None and (not isinstance(owner_ref, str) or not (1 <= len(owner_ref) <= 100)):
        raise errors.AccountRefInvalid("owner_ref must be 1 to 100 characters", field="owner_ref")
    return {
        "ledger_code": ledger_code,
        "currency": currency,
        "normal_side": request.normal_side,
        "owner_ref": owner_ref,
        **flags,
        "metadata": _check_metadata(request.metadata),
    }


def open_account(conn: Connection, *, request: AccountRequest, now: dt.datetime | None = None) -> tuple[Account, bool]:
    """Open an account, idempotently on ``request.key``; returns the account and whether it is new."""
    key = _check_key(request.key, "key")
    payload = _account_payload(request)
    digest = request_digest(payload)
    existing = conn.execute(sa.select(accounts.c.ref, accounts.c.request_hash).where(accounts.c.key == key)).first()
    if existing is None:
        ref = ids.new_id("acc")
        inserted = conn.execute(
            insert_ignoring_conflict(conn, accounts, ["key"])
            .returning(accounts.c.id)
            .values(
                ref=ref,
                key=key,
                request_hash=digest,
                created_at=now or dt.datetime.now(dt.UTC),
                debits_posted=0,
                credits_posted=0,
                debits_pending=0,
                credits_pending=0,
                closed=False,
                **payload,
            )
        )
        if inserted.first() is not None:
            return get_account(conn, ref=ref), True
        existing = conn.execute(sa.select(accounts.c.ref, accounts.c.request_hash).where(accounts.c.key == key)).one()
    if existing.request_hash != digest:
        raise errors.IdempotencyKeyConflict(
            "an account with this key was opened with different attributes", field="key", key=key
        )
    return get_account(conn, ref=existing.ref), False


def ensure_account(conn: Connection, *, request: AccountRequest, now: dt.datetime | None = None) -> str:
    """Returns the ref of the account ``request.key`` names, opening it first if it does not exist.

    The cheap path for other domains that post to well-known accounts (a
    merchant's pending settlement, a channel's clearing account): one indexed
    read when the account exists with these attributes. Different attributes
    under the key are ``idempotency_key_conflict``, as with ``open_account``.
    """
    key = _check_key(request.key, "key")
    row = conn.execute(sa.select(accounts.c.ref, accounts.c.request_hash).where(accounts.c.key == key)).first()
    if row is not None and row.request_hash == request_digest(_account_payload(request)):
        return row.ref
    account, _created = open_account(conn, request=request, now=now)
    return account.ref


def _account_select() -> sa.Select:
    a = accounts.c
    sums = hot_delta_sums()
    return sa.select(
        accounts,
        sums.c.debits_posted.label("hot_debits_posted"),
        sums.c.credits_posted.label("hot_credits_posted"),
        sums.c.debits_pending.label("hot_debits_pending"),
        sums.c.credits_pending.label("hot_credits_pending"),
    ).select_from(accounts.outerjoin(sums, sums.c.account_id == a.id))


def _account_from_row(row: Any) -> Account:
    def total(name: str) -> int:
        return getattr(row, name) + int(getattr(row, f"hot_{name}") or 0)

    balance = Balance(
        currency=row.currency,
        normal_side=row.normal_side,
        debits_posted=total("debits_posted"),
        credits_posted=total("credits_posted"),
        debits_pending=total("debits_pending"),
        credits_pending=total("credits_pending"),
    )
    return Account(
        id=row.id,
        ref=row.ref,
        key=row.key,
        ledger_code=row.ledger_code,
        currency=row.currency,
        owner_ref=row.owner_ref,
        normal_side=row.normal_side,
        debits_must_not_exceed_credits=row.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits=row.credits_must_not_exceed_debits,
        hot=row.hot,
        closed=row.closed,
        balance=balance,
        metadata=row.metadata,
        created_at=row.created_at,
        closed_at=row.closed_at,
    )


def get_account(conn: Connection, *, ref: str) -> Account:
    """Return an account with its current balances (hot accounts: folded row plus unfolded deltas)."""
    row = conn.execute(_account_select().where(accounts.c.ref == ref)).first()
    if row is None:
        raise errors.AccountNotFound(f"account {ref} does not exist", field="account")
    return _account_from_row(row)


def list_accounts(
    conn: Connection,
    *,
    owner_ref: str | None = None,
    ledger_code: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Return accounts in creation order, optionally filtered, one page at a time."""
    limit = _check_limit(limit)
    query = _account_select().order_by(accounts.c.id).limit(limit + 1)
    if owner_ref is not None:
        query = query.where(accounts.c.owner_ref == owner_ref)
    if ledger_code is not None:
        query = query.where(accounts.c.ledger_code == ledger_code)
    if cursor is not None:
        query = query.where(accounts.c.id > _decode_cursor(cursor))
    rows = conn.execute(query).all()
    items = [_account_from_row(row) for row in rows[:limit]]
    next_cursor = str(items[-1].id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def close_account(conn: Connection, *, ref: str, now: dt.datetime | None = None) -> Account:
    """Close an account whose balances net to zero; closing a closed account returns it unchanged."""
    row = conn.execute(
        sa.select(accounts.c.id, accounts.c.closed, accounts.c.hot).where(accounts.c.ref == ref).with_for_update()
    ).first()
    if row is None:
        raise errors.AccountNotFound(f"account {ref} does not exist", field="account")
    if row.closed:
        return get_account(conn, ref=ref)
    if row.hot:
        fold_hot_accounts(conn, account_ids=[row.id])
    account = get_account(conn, ref=ref)
    b = account.balance
    if b.debits_posted != b.credits_posted or b.debits_pending or b.credits_pending:
        raise errors.AccountBalanceNotZero(
            "only an account whose posted balance is zero and that has no pending holds can be closed",
            field="account",
            posted=b.posted,
        )
    conn.execute(
        accounts.update().where(accounts.c.id == row.id).values(closed=True, closed_at=now or dt.datetime.now(dt.UTC))
    )
    return get_account(conn, ref=ref)


# --------------------------------------------------------------------------- entries


def post_entry(conn: Connection, *, request: EntryRequest, now: dt.datetime | None = None) -> EntryResult:
    """Post one balanced entry (a batch of one); raise the broken rule if it is refused."""
    result = post_entries(conn, requests=[request], atomic=True, now=now)[0]
    assert isinstance(result, EntryResult)
    return result


def post_entry_alone(engine: Engine, *, request: EntryRequest, now: dt.datetime | None = None) -> EntryResult:
    """Post one entry as a transaction of its own — the fastest single-entry path.

    Owns its transaction (use ``post_entry`` inside a wider unit of work). On
    PostgreSQL a plain entry is one statement in autocommit mode: one round
    trip, the statement is the transaction. If that statement declines to
    write (a replay, a refusal, a race), the general path decides in a normal
    transaction, with retries.
    """
    plan = plan_entry(request)
    now = _now(now)
    if fits_fast_path(engine, plan):
        entry = post_one_alone(engine, plan, now)
        if entry is not None:
            return EntryResult(entry=entry)

    def general(conn: Connection) -> EntryResult:
        result = post_planned(conn, [plan], atomic=True, now=now)[0]
        assert isinstance(result, EntryResult)
        return result

    return run_in_transaction(engine, general)


def post_entries(
    conn: Connection,
    *,
    requests: Sequence[EntryRequest],
    atomic: bool = True,
    now: dt.datetime | None = None,
) -> list[EntryResult | ZhangfangError]:
    """Post many entries in this transaction, in order.

    ``atomic=True``: all or nothing; the first refusal is raised with its
    ``index``. ``atomic=False``: each entry stands alone and the result list
    holds an ``EntryResult`` or the refusal for each request.
    """
    planned: list[PlannedEntry | ZhangfangError] = []
    for index, request in enumerate(requests):
        try:
            planned.append(plan_entry(request))
        except ZhangfangError as error:
            if atomic:
                error.details.setdefault("index", index)
                raise
            planned.append(error)
    return post_planned(conn, planned, atomic=atomic, now=now)


def get_entry(conn: Connection, *, ref: str) -> Entry:
    """Return an entry with its postings."""
    entry_id = conn.execute(sa.select(journal_entries.c.id).where(journal_entries.c.ref == ref)).scalar()
    if entry_id is None:
        raise errors.EntryNotFound(f"entry {ref} does not exist", field="entry")
    return load_entries(conn, [entry_id])[entry_id]


def reverse_entry(
    conn: Connection,
    *,
    ref: str,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> EntryResult:
    """Post the mirror of a plain entry (every leg on the other side); an entry is reversed once."""
    key = _check_key(idempotency_key or f"reverse:{ref}")
    metadata = _check_metadata(metadata)
    original = get_entry(conn, ref=ref)
    if original.kind != "entry":
        raise errors.EntryNotReversible(
            f"entry {ref} is a {original.kind}; only plain entries are reversed (void a hold instead)",
            field="entry",
        )
    legs = tuple(
        PlannedLeg(p.account, "credit" if p.side == "debit" else "debit", "posted", p.amount, p.currency)
        for p in original.postings
    )
    payload = {"kind": "reversal", "reverses": ref, "metadata": metadata}
    plan = PlannedEntry(
        idempotency_key=key,
        request_hash=request_digest(payload),
        kind="reversal",
        business_code=original.business_code,
        legs=legs,
        metadata=metadata,
        reverses_entry_id=original.id,
        reverses_ref=original.ref,
    )
    earlier = conn.execute(
        sa.select(journal_entries.c.idempotency_key).where(journal_entries.c.reverses_entry_id == original.id)
    ).scalar()
    if earlier is not None and earlier != key:
        raise errors.EntryAlreadyReversed(f"entry {ref} was already reversed", field="entry")
    result = post_planned(conn, [plan], atomic=True, now=now)[0]
    assert isinstance(result, EntryResult)
    return result


def account_statement(conn: Connection, *, ref: str, cursor: str | None = None, limit: int = 50) -> Page:
    """Return an account's postings oldest first, each with the posted balance after it (账户明细)."""
    limit = _check_limit(limit)
    account = get_account(conn, ref=ref)
    after_entry = _decode_cursor(cursor) if cursor else 0
    p, e = postings, journal_entries
    rows = conn.execute(
        sa.select(
            p.c.entry_id,
            p.c.seq,
            p.c.side,
            p.c.effect,
            p.c.amount,
            e.c.ref,
            e.c.kind,
            e.c.business_code,
            e.c.accounting_date,
            e.c.created_at,
        )
        .join(e, e.c.id == p.c.entry_id)
        .where(p.c.account_id == account.id, p.c.entry_id > after_entry)
        .order_by(p.c.entry_id, p.c.seq)
        .limit(limit + 1)
    ).all()
    running = balance(conn, ref=ref, as_of_entry_id=after_entry).posted if after_entry else 0
    sign = 1 if account.normal_side == "credit" else -1
    items = []
    for row in rows[:limit]:
        if row.effect == "posted":
            running += sign * (row.amount if row.side == "credit" else -row.amount)
        items.append(
            {
                "entry": row.ref,
                "kind": row.kind,
                "business_code": row.business_code,
                "accounting_date": row.accounting_date,
                "created_at": row.created_at,
                "side": row.side,
                "effect": row.effect,
                "amount": row.amount,
                "posted_balance_after": running,
            }
        )
    next_cursor = str(rows[limit - 1].entry_id) if len(rows) > limit else None
    if next_cursor and rows[limit].entry_id == rows[limit - 1].entry_id:
        # Never split one entry's postings across pages.
        items = [item for item, row in zip(items, rows, strict=False) if row.entry_id != rows[limit - 1].entry_id]
        next_cursor = str(rows[len(items) - 1].entry_id) if items else None
        if next_cursor is None:
            raise errors.LimitInvalid("limit is smaller than one entry's postings on this account", field="limit")
    return Page(items=items, next_cursor=next_cursor)


def balance(
    conn: Connection,
    *,
    ref: str,
    as_of_entry_id: int | None = None,
    as_of_entry: str | None = None,
    as_of_time: dt.datetime | None = None,
) -> Balance:
    """Return an account's balance now, or as of an entry (inclusive) or a time (inclusive).

    As of an entry means: the postings of every entry with an id up to that
    entry's, which is the order the ledger numbered them in.
    """
    account = get_account(conn, ref=ref)
    if as_of_entry_id is None and as_of_entry is None and as_of_time is None:
        return account.balance
    p, e = postings, journal_entries
    query = sa.select(p.c.side, p.c.effect, sa.func.sum(p.c.amount).label("total")).where(p.c.account_id == account.id)
    if as_of_entry is not None:
        as_of_entry_id = get_entry(conn, ref=as_of_entry).id
    if as_of_entry_id is not None:
        query = query.where(p.c.entry_id <= as_of_entry_id)
    if as_of_time is not None:
        as_of_time = _utc_time(as_of_time, "as_of_time")
        query = query.join(e, e.c.id == p.c.entry_id).where(e.c.created_at <= as_of_time)
    totals = {"debits_posted": 0, "credits_posted": 0, "debits_pending": 0, "credits_pending": 0}
    for row in conn.execute(query.group_by(p.c.side, p.c.effect)):
        name = f"{row.side}s_{'posted' if row.effect == 'posted' else 'pending'}"
        totals[name] += int(row.total) * (-1 if row.effect == "release" else 1)
    return Balance(currency=account.currency, normal_side=account.normal_side, **totals)


def balance_history(
    conn: Connection, *, ref: str, date_from: dt.date, date_to: dt.date
) -> list[tuple[dt.date, Balance]]:
    """Closing balances of an account for each closed accounting date in the range."""
    account = get_account(conn, ref=ref)
    return day_balances(
        conn,
        account_id=account.id,
        currency=account.currency,
        normal_side=account.normal_side,
        date_from=date_from,
        date_to=date_to,
    )


def balances_by_key(conn: Connection, *, keys: Sequence[str]) -> dict[str, Balance]:
    """Returns the balances of the accounts with these keys (those that exist), in one query per 500 keys.

    For reports and runs over many accounts (a settlement run reads every
    merchant's pending-settlement balance this way). Hot accounts' columns lag
    their postings until folded; read those with ``balance``.
    """
    found: dict[str, Balance] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        rows = conn.execute(
            sa.select(
                accounts.c.key,
                accounts.c.currency,
                accounts.c.normal_side,
                accounts.c.debits_posted,
                accounts.c.credits_posted,
                accounts.c.debits_pending,
                accounts.c.credits_pending,
            ).where(accounts.c.key.in_(chunk))
        )
        for row in rows:
            found[row.key] = Balance(
                currency=row.currency,
                normal_side=row.normal_side,
                debits_posted=row.debits_posted,
                credits_posted=row.credits_posted,
                debits_pending=row.debits_pending,
                credits_pending=row.credits_pending,
            )
    return found


def posted_totals_by_ledger_code(
    conn: Connection, *, ledger_codes: Sequence[str], through_date: dt.date
) -> dict[tuple[str, str], int]:
    """Returns the posted balance per (ledger code, currency) of ``ledger_codes`` at the end of an accounting date.

    The sum of the postings of entries dated up to ``through_date`` (inclusive)
    on the accounts of those codes, signed on each account's normal side (a
    credit-normal customer balance is positive). Holds do not count until posted.
    """
    p, e, a = postings, journal_entries, accounts
    signed = sa.case(
        (p.c.side == a.c.normal_side, p.c.amount),
        else_=-p.c.amount,
    )
    rows = conn.execute(
        sa.select(a.c.ledger_code, a.c.currency, sa.func.coalesce(sa.func.sum(signed), 0))
        .select_from(p.join(a, a.c.id == p.c.account_id).join(e, e.c.id == p.c.entry_id))
        .where(a.c.ledger_code.in_(list(ledger_codes)), p.c.effect == "posted", e.c.accounting_date <= through_date)
        .group_by(a.c.ledger_code, a.c.currency)
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}


# --------------------------------------------------------------------------- holds


def _hold_from_row(row: Any) -> Hold:
    return Hold(
        id=row.id,
        ref=row.ref,
        debit_account=row.debit_ref,
        credit_account=row.credit_ref,
        amount=row.amount,
        currency=row.currency,
        state=row.state,
        expires_at=row.expires_at,
        posted_amount=row.posted_amount,
        entry=row.entry_ref,
        resolving_entry=row.resolving_ref,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


@functools.cache  # a Select is immutable (``where`` makes a new one); building the aliases cost 0.5 ms a call
def _hold_select() -> sa.Select:
    h = holds
    debit, credit = accounts.alias("debit"), accounts.alias("credit")
    entry, resolving = journal_entries.alias("entry"), journal_entries.alias("resolving")
    return sa.select(
        h,
        debit.c.ref.label("debit_ref"),
        credit.c.ref.label("credit_ref"),
        entry.c.ref.label("entry_ref"),
        entry.c.business_code.label("business_code"),
        resolving.c.ref.label("resolving_ref"),
    ).select_from(
        h.join(debit, debit.c.id == h.c.debit_account_id)
        .join(credit, credit.c.id == h.c.credit_account_id)
        .join(entry, entry.c.id == h.c.entry_id)
        .outerjoin(resolving, resolving.c.id == h.c.resolving_entry_id)
    )


def get_hold(conn: Connection, *, ref: str) -> Hold:
    """Return a hold and its state."""
    row = conn.execute(_hold_select().where(holds.c.ref == ref)).first()
    if row is None:
        raise errors.HoldNotFound(f"hold {ref} does not exist", field="hold")
    return _hold_from_row(row)


def create_hold(
    conn: Connection,
    *,
    idempotency_key: str,
    debit_account: str,
    credit_account: str,
    amount: int,
    currency: str,
    business_code: str,
    expires_at: dt.datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> HoldResult:
    """Reserve ``amount`` to move from ``debit_account`` to ``credit_account`` (冻结), checked now."""
    now = _now(now)
    key = _check_key(idempotency_key)
    code = _check_code(business_code, errors.BusinessCodeInvalid, "business_code")
    debit_ref = _check_account_ref(debit_account, "debit_account")
    credit_ref = _check_account_ref(credit_account, "credit_account")
    amount = _check_amount(amount, "amount")
    currency = _check_currency(currency, "currency")
    if debit_ref == credit_ref:
        raise errors.HoldAccountsMustDiffer("a hold moves funds between two different accounts", field="credit_account")
    metadata = _check_metadata(metadata)
    if expires_at is not None:
        expires_at = _utc_time(expires_at, "expires_at")
    payload = {
        "kind": "hold",
        "business_code": code,
        "debit": debit_ref,
        "credit": credit_ref,
        "amount": amount,
        "currency": currency,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "metadata": metadata,
    }
    digest = request_digest(payload)
    replay = _replayed_hold(conn, key, digest)
    if replay is not None:
        return replay
    if expires_at is not None and expires_at <= now:
        raise errors.HoldExpiryInPast("expires_at must be in the future", field="expires_at")
    hold_ref = ids.new_id("hld")
    plan = PlannedEntry(
        idempotency_key=key,
        request_hash=digest,
        kind="hold",
        business_code=code,
        legs=(
            PlannedLeg(debit_ref, "debit", "pending", amount, currency),
            PlannedLeg(credit_ref, "credit", "pending", amount, currency),
        ),
        metadata=metadata,
        new_hold={
            "ref": hold_ref,
            "debit_account": debit_ref,
            "credit_account": credit_ref,
            "amount": amount,
            "currency": currency,
            "state": "pending",
            "expires_at": expires_at,
        },
    )
    result = post_planned(conn, [plan], atomic=True, now=now)[0]
    assert isinstance(result, EntryResult)
    return HoldResult(hold=get_hold(conn, ref=hold_ref), entry=result.entry, replayed=result.replayed)


def _replayed_hold(conn: Connection, key: str, digest: str) -> HoldResult | None:
    """If ``key`` was used already, return that result (same request) or raise the conflict."""
    row = conn.execute(
        sa.select(journal_entries.c.id, journal_entries.c.request_hash).where(journal_entries.c.idempotency_key == key)
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise errors.IdempotencyKeyConflict(
            "this idempotency key was already used for a different request", field="idempotency_key", key=key
        )
    entry = load_entries(conn, [row.id])[row.id]
    assert entry.hold is not None
    return HoldResult(hold=get_hold(conn, ref=entry.hold), entry=entry, replayed=True)


def _locked_pending_hold(conn: Connection, ref: str, now: dt.datetime) -> Any:
    locked = conn.execute(sa.select(holds.c.id).where(holds.c.ref == ref).with_for_update()).first()
    if locked is None:
        raise errors.HoldNotFound(f"hold {ref} does not exist", field="hold")
    row = conn.execute(_hold_select().where(holds.c.id == locked.id)).one()
    if row.state == "expired":
        raise errors.HoldExpired(f"hold {ref} expired and its funds were released", field="hold")
    if row.state != "pending":
        raise errors.HoldAlreadyResolved(f"hold {ref} is already {row.state}", field="hold", state=row.state)
    if row.expires_at is not None and row.expires_at <= now:
        raise errors.HoldExpired(f"hold {ref} expired at {row.expires_at.isoformat()}", field="hold")
    return row


def _release_legs(row: Any) -> tuple[PlannedLeg, PlannedLeg]:
    return (
        PlannedLeg(row.debit_ref, "debit", "release", row.amount, row.currency),
        PlannedLeg(row.credit_ref, "credit", "release", row.amount, row.currency),
    )


def post_hold(
    conn: Connection,
    *,
    ref: str,
    idempotency_key: str,
    amount: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> HoldResult:
    """Post a pending hold: move ``amount`` (default: all of it) and release the rest."""
    now = _now(now)
    key = _check_key(idempotency_key)
    if amount is not None:
        amount = _check_amount(amount, "amount")
    metadata = _check_metadata(metadata)
    digest = request_digest({"kind": "hold_post", "hold": ref, "amount": amount, "metadata": metadata})
    replay = _replayed_hold(conn, key, digest)
    if replay is not None:
        return replay
    row = _locked_pending_hold(conn, ref, now)
    posted_amount = row.amount if amount is None else amount
    if posted_amount > row.amount:
        raise errors.HoldPostAmountExceedsHold(
            f"hold {ref} reserves {row.amount}; cannot post {posted_amount}", field="amount", held=row.amount
        )
    plan = PlannedEntry(
        idempotency_key=key,
        request_hash=digest,
        kind="hold_post",
        business_code=row.business_code,
        legs=(
            *_release_legs(row),
            PlannedLeg(row.debit_ref, "debit", "posted", posted_amount, row.currency),
            PlannedLeg(row.credit_ref, "credit", "posted", posted_amount, row.currency),
        ),
        metadata=metadata,
        resolves_hold={"id": row.id, "ref": ref, "state": "posted", "posted_amount": posted_amount},
    )
    result = post_planned(conn, [plan], atomic=True, now=now)[0]
    assert isinstance(result, EntryResult)
    return HoldResult(hold=get_hold(conn, ref=ref), entry=result.entry)


def void_hold(
    conn: Connection,
    *,
    ref: str,
    idempotency_key: str,
    metadata: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> HoldResult:
    """Release a pending hold entirely (解冻); nothing moves."""
    now = _now(now)
    key = _check_key(idempotency_key)
    metadata = _check_metadata(metadata)
    digest = request_digest({"kind": "hold_void", "hold": ref, "metadata": metadata})
    replay = _replayed_hold(conn, key, digest)
    if replay is not None:
        return replay
    row = _locked_pending_hold(conn, ref, now)
    plan = PlannedEntry(
        idempotency_key=key,
        request_hash=digest,
        kind="hold_void",
        business_code=row.business_code,
        legs=_release_legs(row),
        metadata=metadata,
        resolves_hold={"id": row.id, "ref": ref, "state": "voided"},
    )
    result = post_planned(conn, [plan], atomic=True, now=now)[0]
    assert isinstance(result, EntryResult)
    return HoldResult(hold=get_hold(conn, ref=ref), entry=result.entry)


def expire_holds(conn: Connection, *, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Release holds whose expiry has passed (the expiry job); returns how many it released."""
    now = _now(now)
    due = (
        sa.select(holds.c.id)
        .where(holds.c.state == "pending", holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    due_ids = list(conn.execute(due).scalars())
    if not due_ids:
        return 0
    rows = conn.execute(_hold_select().where(holds.c.id.in_(due_ids)).order_by(holds.c.id)).all()
    plans = [
        PlannedEntry(
            idempotency_key=f"hold-expire:{row.ref}",
            request_hash=request_digest({"kind": "hold_expire", "hold": row.ref}),
            kind="hold_expire",
            business_code=row.business_code,
            legs=_release_legs(row),
            resolves_hold={"id": row.id, "ref": row.ref, "state": "expired"},
        )
        for row in rows
    ]
    results = post_planned(conn, plans, atomic=False, now=now)
    return sum(1 for r in results if isinstance(r, EntryResult) and not r.replayed)


# --------------------------------------------------------------------------- helpers


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not (1 <= limit <= PAGE_LIMIT_MAX):
        raise errors.LimitInvalid(f"limit must be an integer from 1 to {PAGE_LIMIT_MAX}", field="limit")
    return limit


def _decode_cursor(cursor: str) -> int:
    if not isinstance(cursor, str) or not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise errors.CursorInvalid("cursor must be a value returned as next_cursor", field="cursor")
    return int(cursor)
