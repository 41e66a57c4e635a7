"""The posting engine: validate a batch of planned entries against locked balances, then write it.

Every money-moving ledger operation (entries, reversals, holds and their
resolution) ends here, as a batch; the single-entry path is a batch of one.
How rows are read and written on each database is in ``storage``.

Guarantees
- Per currency and per effect (posted, pending, release), the debits of an
  entry equal its credits — asserted before writing.
- An entry is applied entirely or not at all; with ``atomic=True`` so is the
  batch. A refused entry leaves no row and no balance change behind.
- Entries of a batch are checked in order, each against the balances the
  earlier ones left, so a batch never accepts what the same entries posted one
  by one would refuse.
- Balances are changed only under a row lock taken in ascending account id
  order for the whole batch, so writers never deadlock on accounts. Hot
  accounts are never locked: their changes are appended to
  ``ledger_hot_deltas`` and folded in later.
- Idempotency: the key is looked up first; a replay returns the stored entry,
  a different request under the same key is a conflict. A concurrent writer
  that commits the same key between our read and our insert is detected by
  ``ON CONFLICT DO NOTHING`` and the whole transaction re-runs
  (``RetryableConflict``), so the answer is always decided on committed state.
- The database checks the balance constraints once more (CHECK constraints):
  a disagreement between this code and the database aborts, it never persists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang import ids
from zhangfang.db.sql import canonical_json
from zhangfang.db.uow import RetryableConflict
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import errors, storage
from zhangfang.ledger.models import Entry, EntryResult, Posting
from zhangfang.ledger.storage import AccountState, EntryRows
from zhangfang.ledger.tables import accounts, holds, journal_entries, postings

SIDES = ("debit", "credit")
# (side, effect) -> (index into [debits_posted, credits_posted, debits_pending, credits_pending], sign)
_EFFECT_INDEX = {
    ("debit", "posted"): (0, 1),
    ("credit", "posted"): (1, 1),
    ("debit", "pending"): (2, 1),
    ("credit", "pending"): (3, 1),
    ("debit", "release"): (2, -1),
    ("credit", "release"): (3, -1),
}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class PlannedLeg(NamedTuple):
    account: str
    side: str
    effect: str
    amount: int
    currency: str


@dataclass
class PlannedEntry:
    """An entry ready for the engine: stateless checks passed, request hash computed."""

    idempotency_key: str
    request_hash: str
    kind: str
    business_code: str
    legs: tuple[PlannedLeg, ...]
    metadata: Mapping[str, Any] | None = None
    reverses_entry_id: int | None = None
    reverses_ref: str | None = None
    # A new hold this entry creates (kind == "hold").
    new_hold: dict[str, Any] | None = None
    # A hold this entry resolves (post, void, expire): id, state, posted_amount.
    resolves_hold: dict[str, Any] | None = None
    ref: str = field(default_factory=lambda: ids.new_id("je"))


def assert_balanced(legs: Iterable[PlannedLeg]) -> None:
    """Our own invariant: per currency and effect, debits equal credits."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for leg in legs:
        totals[(leg.currency, leg.effect)] += leg.amount if leg.side == "debit" else -leg.amount
    assert not any(totals.values()), f"unbalanced entry reached the engine: {dict(totals)}"


def post_planned(
    conn: Connection,
    planned: Sequence[PlannedEntry | ZhangfangError],
    *,
    atomic: bool,
    now: dt.datetime | None = None,
) -> list[EntryResult | ZhangfangError]:
    """Apply planned entries in order; return one result (or the refusal) per input.

    With ``atomic=True`` the first refusal is raised (with its batch ``index`` in
    the details) and nothing is written. Inputs that are already errors (refused
    by stateless validation) are passed through, or raised when atomic.
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if len(planned) == 1 and fits_fast_path(conn, planned[0]):
        written = storage.post_one_postgres(conn, planned[0], now)  # type: ignore[arg-type]
        if written is not None:
            return [EntryResult(entry=_entry_from_plan(planned[0], written[0], written[1], now))]  # type: ignore[arg-type]
        # A replay, a refusal or a race: the general path decides, and names the rule.
    results: list[EntryResult | ZhangfangError | None] = [None] * len(planned)

    def refuse(index: int, error: ZhangfangError) -> None:
        if atomic:
            error.details.setdefault("index", index)
            raise error
        results[index] = error

    candidates: list[tuple[int, PlannedEntry]] = []
    first_by_key: dict[str, tuple[int, PlannedEntry]] = {}
    replay_of: dict[int, int] = {}
    for index, item in enumerate(planned):
        if isinstance(item, ZhangfangError):
            refuse(index, item)
            continue
        earlier = first_by_key.get(item.idempotency_key)
        if earlier is None:
            first_by_key[item.idempotency_key] = (index, item)
            candidates.append((index, item))
        elif earlier[1].request_hash == item.request_hash:
            replay_of[index] = earlier[0]
        else:
            refuse(index, _key_conflict(item.idempotency_key))

    existing = storage.existing_entries(conn, [item.idempotency_key for _, item in candidates])
    refs = sorted({leg.account for _, item in candidates if item.idempotency_key not in existing for leg in item.legs})
    states = storage.lock_accounts(conn, refs)

    to_write: list[tuple[int, PlannedEntry]] = []
    replayed_ids: dict[int, int] = {}
    for index, item in candidates:
        stored = existing.get(item.idempotency_key)
        if stored is not None:
            if stored[1] == item.request_hash:
                replayed_ids[index] = stored[0]
            else:
                refuse(index, _key_conflict(item.idempotency_key))
            continue
        error = _apply(item, states)
        if error is not None:
            refuse(index, error)
            continue
        to_write.append((index, item))

    written = _write(conn, to_write, states, now) if to_write else {}

    loaded = load_entries(conn, list(replayed_ids.values())) if replayed_ids else {}
    for index, entry_id in replayed_ids.items():
        results[index] = EntryResult(entry=loaded[entry_id], replayed=True)
    for index, entry in written.items():
        results[index] = EntryResult(entry=entry)
    for index, first in replay_of.items():
        first_result = results[first]
        results[index] = (
            EntryResult(entry=first_result.entry, replayed=True)
            if isinstance(first_result, EntryResult)
            else first_result
        )
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _key_conflict(key: str) -> ZhangfangError:
    return errors.IdempotencyKeyConflict(
        "this idempotency key was already used for a different request", field="idempotency_key", key=key
    )


def _apply(item: PlannedEntry, states: Mapping[str, AccountState]) -> ZhangfangError | None:
    """Check one entry against the balances the batch has reached; if it fits, apply it to them."""
    changes: dict[AccountState, list[int]] = {}
    for position, leg in enumerate(item.legs):
        state = states.get(leg.account)
        if state is None:
            return errors.AccountNotFound(f"account {leg.account} does not exist", field=f"legs.{position}.account")
        if state.currency != leg.currency:
            return errors.AccountCurrencyMismatch(
                f"account {leg.account} holds {state.currency}, not {leg.currency}",
                field=f"legs.{position}.currency",
                account=leg.account,
            )
        if state.closed:
            return errors.AccountClosed(f"account {leg.account} is closed", field=f"legs.{position}.account")
        change = changes.get(state)
        if change is None:
            change = changes[state] = [0, 0, 0, 0]
        index, sign = _EFFECT_INDEX[leg.side, leg.effect]
        change[index] += sign * leg.amount
    for position, leg in enumerate(item.legs):
        state = states[leg.account]
        if not (state.debits_limited or state.credits_limited):
            continue
        before, change = state.balances, changes[state]
        debits, credits = before[0] + change[0], before[1] + change[1]
        if state.debits_limited and debits + before[2] + change[2] > credits:
            return errors.DebitsExceedCredits(
                f"account {leg.account} does not have enough available funds for this entry",
                field=f"legs.{position}.amount",
                account=leg.account,
                available=before[1] - before[0] - before[2],
            )
        if state.credits_limited and credits + before[3] + change[3] > debits:
            return errors.CreditsExceedDebits(
                f"account {leg.account} may not be credited beyond its debits",
                field=f"legs.{position}.amount",
                account=leg.account,
            )
    for state, change in changes.items():
        balances = state.balances
        for i in range(4):
            balances[i] += change[i]
    return None


def _write(
    conn: Connection,
    to_write: list[tuple[int, PlannedEntry]],
    states: Mapping[str, AccountState],
    now: dt.datetime,
) -> dict[int, Entry]:
    rows = EntryRows([], [], [], [], [], [], [], [], [], [], [], [], [], [], [])
    for position, (_, item) in enumerate(to_write):
        assert_balanced(item.legs)
        rows.refs.append(item.ref)
        rows.keys.append(item.idempotency_key)
        rows.hashes.append(item.request_hash)
        rows.kinds.append(item.kind)
        rows.business_codes.append(item.business_code)
        rows.metadata.append(canonical_json(item.metadata) if item.metadata is not None else None)
        rows.reverses.append(item.reverses_entry_id)
        rows.holds.append(item.resolves_hold["id"] if item.resolves_hold else None)
        for seq, leg in enumerate(item.legs):
            rows.posting_entry.append(position)
            rows.posting_seq.append(seq)
            rows.posting_account.append(states[leg.account].id)
            rows.posting_side.append(leg.side)
            rows.posting_effect.append(leg.effect)
            rows.posting_amount.append(leg.amount)
            rows.posting_currency.append(leg.currency)
    entry_ids, accounting_date = storage.write_batch(conn, rows, list(states.values()), now)

    for entry_id, (_, item) in zip(entry_ids, to_write, strict=True):
        if item.new_hold is not None:
            hold = dict(item.new_hold)
            hold["debit_account_id"] = states[hold.pop("debit_account")].id
            hold["credit_account_id"] = states[hold.pop("credit_account")].id
            conn.execute(holds.insert().values(**hold, entry_id=entry_id, created_at=now))
        if item.resolves_hold is not None:
            _resolve_hold(conn, item.resolves_hold, entry_id, now)
    return {
        index: _entry_from_plan(item, entry_id, accounting_date, now)
        for entry_id, (index, item) in zip(entry_ids, to_write, strict=True)
    }


def _resolve_hold(conn: Connection, resolution: Mapping[str, Any], entry_id: int, now: dt.datetime) -> None:
    """Compare-and-set the hold out of ``pending``; losing the race re-runs the transaction."""
    result = conn.execute(
        holds.update()
        .where(holds.c.id == resolution["id"], holds.c.state == "pending")
        .values(
            state=resolution["state"],
            posted_amount=resolution.get("posted_amount"),
            resolving_entry_id=entry_id,
            resolved_at=now,
        )
    )
    if result.rowcount != 1:
        raise RetryableConflict("hold resolved concurrently")


def _entry_from_plan(item: PlannedEntry, entry_id: int, accounting_date: dt.date, now: dt.datetime) -> Entry:
    return Entry(
        id=entry_id,
        ref=item.ref,
        idempotency_key=item.idempotency_key,
        kind=item.kind,
        business_code=item.business_code,
        accounting_date=accounting_date,
        metadata=dict(item.metadata) if item.metadata is not None else None,
        postings=tuple(
            Posting(seq, leg.account, leg.side, leg.effect, leg.amount, leg.currency)
            for seq, leg in enumerate(item.legs)
        ),
        created_at=now,
        reverses=item.reverses_ref,
        hold=(item.new_hold or item.resolves_hold or {}).get("ref"),
    )


def fits_fast_path(conn: Connection | Engine, item: PlannedEntry | ZhangfangError) -> bool:
    return (
        conn.dialect.name == "postgresql"
        and isinstance(item, PlannedEntry)
        and item.kind == "entry"
        and item.new_hold is None
        and item.resolves_hold is None
    )


def post_one_alone(engine: Engine, item: PlannedEntry, now: dt.datetime) -> Entry | None:
    """PostgreSQL's one-round-trip path for a single plain entry, its own transaction; None if declined."""
    assert_balanced(item.legs)
    written = storage.post_one_postgres_alone(engine, item, now)
    if written is None:
        return None
    return _entry_from_plan(item, written[0], written[1], now)


def load_entries(conn: Connection, entry_ids: Sequence[int]) -> dict[int, Entry]:
    """Read entries with their postings, by internal id."""
    if not entry_ids:
        return {}
    e, p, a = journal_entries, postings, accounts
    reversed_entry = journal_entries.alias("reversed_entry")
    created_hold, resolved_hold = holds.alias("created_hold"), holds.alias("resolved_hold")
    entry_rows = conn.execute(
        sa.select(
            e,
            reversed_entry.c.ref.label("reverses_ref"),
            sa.func.coalesce(created_hold.c.ref, resolved_hold.c.ref).label("hold_ref"),
        )
        .select_from(
            e.outerjoin(reversed_entry, reversed_entry.c.id == e.c.reverses_entry_id)
            .outerjoin(created_hold, created_hold.c.entry_id == e.c.id)
            .outerjoin(resolved_hold, resolved_hold.c.id == e.c.hold_id)
        )
        .where(e.c.id.in_(entry_ids))
    ).all()
    posting_rows = conn.execute(
        sa.select(p.c.entry_id, p.c.seq, a.c.ref, p.c.side, p.c.effect, p.c.amount, p.c.currency)
        .join(a, a.c.id == p.c.account_id)
        .where(p.c.entry_id.in_(entry_ids))
        .order_by(p.c.entry_id, p.c.seq)
    ).all()
    by_entry: dict[int, list[Posting]] = defaultdict(list)
    for row in posting_rows:
        by_entry[row.entry_id].append(Posting(row.seq, row.ref, row.side, row.effect, row.amount, row.currency))
    return {
        row.id: Entry(
            id=row.id,
            ref=row.ref,
            idempotency_key=row.idempotency_key,
            kind=row.kind,
            business_code=row.business_code,
            accounting_date=row.accounting_date,
            metadata=row.metadata,
            postings=tuple(by_entry[row.id]),
            created_at=row.created_at,
            reverses=row.reverses_ref,
            hold=row.hold_ref,
            seal_seq=row.seal_seq,
        )
        for row in entry_rows
    }
