"""The posting engine: validate a batch of planned entries against locked balances, then write it.

Every money-moving ledger operation (entries, reversals, holds and their
resolution) ends here, as a batch; the single-entry path is a batch of one.

Guarantees
- Per currency and per effect (posted, pending, release), the debits of an
  entry equal its credits — asserted before writing.
- An entry is applied entirely or not at all; with ``atomic=True`` so is the
  batch. A refused entry leaves no row and no balance change behind.
- Balances are changed only under a row lock taken in ascending account id
  order for the whole batch (``SELECT … ORDER BY id FOR UPDATE``), so writers
  never deadlock on accounts. Hot accounts are never locked: their changes are
  appended to ``ledger_hot_deltas`` and folded in later.
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
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from zhangfang import ids
from zhangfang.db.uow import RetryableConflict
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import errors
from zhangfang.ledger.models import Entry, EntryResult, Posting
from zhangfang.ledger.tables import (
    accounts,
    holds,
    hot_account_deltas,
    journal_entries,
    ledger_clock,
    postings,
)

SIDES = ("debit", "credit")


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PlannedLeg:
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


@dataclass
class _AccountState:
    id: int
    ref: str
    currency: str
    hot: bool
    closed: bool
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


@dataclass
class _Delta:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def add(self, side: str, effect: str, amount: int) -> None:
        if effect == "posted":
            name = f"{side}s_posted"
            setattr(self, name, getattr(self, name) + amount)
        else:
            name = f"{side}s_pending"
            setattr(self, name, getattr(self, name) + (amount if effect == "pending" else -amount))

    def merge(self, other: _Delta) -> None:
        self.debits_posted += other.debits_posted
        self.credits_posted += other.credits_posted
        self.debits_pending += other.debits_pending
        self.credits_pending += other.credits_pending

    def is_zero(self) -> bool:
        return not (self.debits_posted or self.credits_posted or self.debits_pending or self.credits_pending)


def request_hash(payload: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(payload))


def assert_balanced(legs: Iterable[PlannedLeg]) -> None:
    """Our own invariant: per currency and effect, debits equal credits."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for leg in legs:
        totals[(leg.currency, leg.effect)] += leg.amount if leg.side == "debit" else -leg.amount
    assert all(v == 0 for v in totals.values()), f"unbalanced entry reached the engine: {dict(totals)}"


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

    existing = _existing_entries(conn, [p.idempotency_key for _, p in candidates])
    account_refs = sorted({leg.account for _, p in candidates for leg in p.legs if p.idempotency_key not in existing})
    states = _lock_accounts(conn, account_refs)

    deltas: dict[int, _Delta] = defaultdict(_Delta)
    to_write: list[tuple[int, PlannedEntry]] = []
    replayed_ids: dict[int, int] = {}
    for index, item in candidates:
        stored = existing.get(item.idempotency_key)
        if stored is not None:
            if stored["request_hash"] == item.request_hash:
                replayed_ids[index] = stored["id"]
            else:
                refuse(index, _key_conflict(item.idempotency_key))
            continue
        error, entry_deltas = _check_against_state(item, states, deltas)
        if error is not None:
            refuse(index, error)
            continue
        for account_id, delta in entry_deltas.items():
            deltas[account_id].merge(delta)
        to_write.append((index, item))

    written = _write(conn, to_write, states, deltas, now) if to_write else {}

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


def fits_fast_path(conn: Connection | Engine, item: PlannedEntry | ZhangfangError) -> bool:
    return (
        conn.dialect.name == "postgresql"
        and isinstance(item, PlannedEntry)
        and item.kind == "entry"
        and item.new_hold is None
        and item.resolves_hold is None
    )


# One statement, one round trip: look up the key, lock the non-hot accounts in id
# order, check that the entry fits (accounts exist, currencies match, none closed,
# constraints hold afterwards), and only then insert the entry, its postings, the
# balance changes and the hot deltas. If it does not fit, nothing is written and
# the general path runs in the same transaction to decide, and to name the rule.
#
# ``locked`` must be MATERIALIZED: PostgreSQL inlines a CTE referenced once, and
# inlined into ``accts`` the row lock no longer hands back the latest committed
# balance, so two writers could both see the same funds (the concurrency test
# caught exactly that; the CHECK constraint refused the second write).
#
# The statement runs only in autocommit mode (``service.post_entry_alone``), where
# it is its own transaction: there the stress test holds. Run as one statement of
# a longer transaction, the CHECK constraint still fired now and then under
# contention, so inside a unit of work the general path is used instead. Either
# way the CHECK constraint is the last guard: a refusal by it rolls the statement
# back and the general path decides.
_FAST_POST_SQL = sa.text(
    """
WITH legs AS (
  SELECT l.account_ref, l.side, l.effect, l.amount, l.currency, (l.ord - 1)::smallint AS seq
  FROM unnest(CAST(:refs AS text[]), CAST(:sides AS text[]), CAST(:effects AS text[]),
              CAST(:amounts AS bigint[]), CAST(:currencies AS text[]))
       WITH ORDINALITY AS l(account_ref, side, effect, amount, currency, ord)
),
existing AS (
  SELECT id FROM ledger_entries WHERE idempotency_key = :key
),
locked AS MATERIALIZED (
  SELECT id, ref, currency, closed, hot, debits_must_not_exceed_credits AS dmnec,
         credits_must_not_exceed_debits AS cmned,
         debits_posted, credits_posted, debits_pending, credits_pending
  FROM ledger_accounts
  WHERE ref = ANY(CAST(:refs AS text[])) AND NOT hot AND NOT EXISTS (SELECT 1 FROM existing)
  ORDER BY id
  FOR UPDATE
),
accts AS (
  SELECT * FROM locked
  UNION ALL
  SELECT id, ref, currency, closed, hot, debits_must_not_exceed_credits, credits_must_not_exceed_debits,
         debits_posted, credits_posted, debits_pending, credits_pending
  FROM ledger_accounts WHERE ref = ANY(CAST(:refs AS text[])) AND hot
),
deltas AS (
  SELECT a.id, a.hot,
    sum(CASE WHEN g.side = 'debit' AND g.effect = 'posted' THEN g.amount ELSE 0 END) AS dp,
    sum(CASE WHEN g.side = 'credit' AND g.effect = 'posted' THEN g.amount ELSE 0 END) AS cp,
    sum(CASE WHEN g.side <> 'debit' THEN 0 WHEN g.effect = 'pending' THEN g.amount
             WHEN g.effect = 'release' THEN -g.amount ELSE 0 END) AS dpend,
    sum(CASE WHEN g.side <> 'credit' THEN 0 WHEN g.effect = 'pending' THEN g.amount
             WHEN g.effect = 'release' THEN -g.amount ELSE 0 END) AS cpend
  FROM legs g JOIN accts a ON a.ref = g.account_ref
  GROUP BY a.id, a.hot
),
feasible AS (
  SELECT NOT EXISTS (SELECT 1 FROM existing)
     AND (SELECT count(*) FROM legs g JOIN accts a
            ON a.ref = g.account_ref AND a.currency = g.currency AND NOT a.closed)
         = cardinality(CAST(:refs AS text[]))
     AND NOT EXISTS (
       SELECT 1 FROM deltas d JOIN accts a ON a.id = d.id
       WHERE (a.dmnec AND a.debits_posted + d.dp + a.debits_pending + d.dpend > a.credits_posted + d.cp)
          OR (a.cmned AND a.credits_posted + d.cp + a.credits_pending + d.cpend > a.debits_posted + d.dp)
          OR (NOT a.hot AND (a.debits_pending + d.dpend < 0 OR a.credits_pending + d.cpend < 0))
     ) AS ok
),
entry AS (
  INSERT INTO ledger_entries (ref, idempotency_key, request_hash, kind, business_code, accounting_date,
                              metadata, created_at)
  SELECT :ref, :key, :request_hash, :kind, :business_code, c.open_date, CAST(:metadata AS json), :created_at
  FROM ledger_clock c, feasible f
  WHERE c.id = 1 AND f.ok
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING id, accounting_date
),
posted AS (
  INSERT INTO ledger_postings (entry_id, seq, account_id, side, effect, amount, currency)
  SELECT e.id, g.seq, a.id, g.side, g.effect, g.amount, g.currency
  FROM entry e, legs g JOIN accts a ON a.ref = g.account_ref
),
balanced AS (
  UPDATE ledger_accounts a
  SET debits_posted = a.debits_posted + d.dp, credits_posted = a.credits_posted + d.cp,
      debits_pending = a.debits_pending + d.dpend, credits_pending = a.credits_pending + d.cpend
  FROM deltas d, entry e
  WHERE a.id = d.id AND NOT d.hot
),
hot_appended AS (
  INSERT INTO ledger_hot_deltas (account_id, debits_posted, credits_posted, debits_pending, credits_pending)
  SELECT d.id, d.dp, d.cp, d.dpend, d.cpend FROM deltas d, entry e WHERE d.hot
)
SELECT id, accounting_date FROM entry
"""
)


def post_one_postgres(conn: Connection, item: PlannedEntry, now: dt.datetime) -> Entry | None:
    """PostgreSQL's one-round-trip path for a single plain entry; None when it did not write."""
    assert_balanced(item.legs)
    row = conn.execute(
        _FAST_POST_SQL,
        {
            "refs": [leg.account for leg in item.legs],
            "sides": [leg.side for leg in item.legs],
            "effects": [leg.effect for leg in item.legs],
            "amounts": [leg.amount for leg in item.legs],
            "currencies": [leg.currency for leg in item.legs],
            "key": item.idempotency_key,
            "ref": item.ref,
            "request_hash": item.request_hash,
            "kind": item.kind,
            "business_code": item.business_code,
            "metadata": canonical_json(dict(item.metadata)) if item.metadata is not None else None,
            "created_at": now,
        },
    ).first()
    if row is None:
        return None
    return _entry_from_plan(item, row.id, row.accounting_date, now)


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


def _key_conflict(key: str) -> ZhangfangError:
    return errors.IdempotencyKeyConflict(
        "this idempotency key was already used for a different request", field="idempotency_key", key=key
    )


def _existing_entries(conn: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    if not keys:
        return {}
    e = journal_entries
    rows = conn.execute(
        sa.select(e.c.id, e.c.idempotency_key, e.c.request_hash).where(e.c.idempotency_key.in_(keys))
    ).all()
    return {row.idempotency_key: {"id": row.id, "request_hash": row.request_hash} for row in rows}


_ACCOUNT_STATE_COLUMNS = (
    accounts.c.id,
    accounts.c.ref,
    accounts.c.currency,
    accounts.c.hot,
    accounts.c.closed,
    accounts.c.debits_must_not_exceed_credits,
    accounts.c.credits_must_not_exceed_debits,
    accounts.c.debits_posted,
    accounts.c.credits_posted,
    accounts.c.debits_pending,
    accounts.c.credits_pending,
)


def _lock_accounts(conn: Connection, refs: list[str]) -> dict[str, _AccountState]:
    """Read the accounts of a batch, locking every non-hot one in ascending id order.

    One statement: the locked rows come from a ``FOR UPDATE`` sub-select (so
    their balances are the latest committed ones), hot rows from a plain read.
    """
    if not refs:
        return {}
    locked = (
        sa.select(*_ACCOUNT_STATE_COLUMNS)
        .where(accounts.c.ref.in_(refs), sa.not_(accounts.c.hot))
        .order_by(accounts.c.id)
        .with_for_update()
        .cte("locked")
        # Materialized, so the locked rows (latest committed balances) are what we read; see _FAST_POST_SQL.
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    unlocked = sa.select(*_ACCOUNT_STATE_COLUMNS).where(accounts.c.ref.in_(refs), accounts.c.hot)
    rows = conn.execute(sa.union_all(sa.select(locked), unlocked)).all()
    return {row.ref: _AccountState(**row._mapping) for row in rows}


def _check_against_state(
    item: PlannedEntry, states: Mapping[str, _AccountState], batch_deltas: Mapping[int, _Delta]
) -> tuple[ZhangfangError | None, dict[int, _Delta]]:
    """Check one entry against the accounts as the batch has left them so far."""
    entry_deltas: dict[int, _Delta] = defaultdict(_Delta)
    for position, leg in enumerate(item.legs):
        state = states.get(leg.account)
        field_name = f"legs.{position}.account"
        if state is None:
            return errors.AccountNotFound(f"account {leg.account} does not exist", field=field_name), {}
        if state.currency != leg.currency:
            return (
                errors.AccountCurrencyMismatch(
                    f"account {leg.account} holds {state.currency}, not {leg.currency}",
                    field=f"legs.{position}.currency",
                    account=leg.account,
                ),
                {},
            )
        if state.closed:
            return errors.AccountClosed(f"account {leg.account} is closed", field=field_name), {}
        entry_deltas[state.id].add(leg.side, leg.effect, leg.amount)
    for position, leg in enumerate(item.legs):
        state = states[leg.account]
        if state.hot:
            continue
        total = _Delta()
        total.merge(batch_deltas.get(state.id, _Delta()))
        total.merge(entry_deltas[state.id])
        debits = state.debits_posted + total.debits_posted
        credits = state.credits_posted + total.credits_posted
        debits_pending = state.debits_pending + total.debits_pending
        credits_pending = state.credits_pending + total.credits_pending
        if state.debits_must_not_exceed_credits and debits + debits_pending > credits:
            return (
                errors.DebitsExceedCredits(
                    f"account {leg.account} does not have enough available funds for this entry",
                    field=f"legs.{position}.amount",
                    account=leg.account,
                    available=_available_before(state, batch_deltas.get(state.id)),
                ),
                {},
            )
        if state.credits_must_not_exceed_debits and credits + credits_pending > debits:
            return (
                errors.CreditsExceedDebits(
                    f"account {leg.account} may not be credited beyond its debits",
                    field=f"legs.{position}.amount",
                    account=leg.account,
                ),
                {},
            )
    return None, entry_deltas


def _available_before(state: _AccountState, batch: _Delta | None) -> int:
    batch = batch or _Delta()
    return (
        state.credits_posted
        + batch.credits_posted
        - state.debits_posted
        - batch.debits_posted
        - state.debits_pending
        - batch.debits_pending
    )


def _open_date(conn: Connection) -> dt.date:
    return conn.execute(sa.select(ledger_clock.c.open_date).where(ledger_clock.c.id == 1)).scalar_one()


def _insert(conn: Connection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _write(
    conn: Connection,
    to_write: list[tuple[int, PlannedEntry]],
    states: Mapping[str, _AccountState],
    deltas: Mapping[int, _Delta],
    now: dt.datetime,
) -> dict[int, Entry]:
    accounting_date = _open_date(conn)
    entry_rows = []
    for _, item in to_write:
        assert_balanced(item.legs)
        entry_rows.append(
            {
                "ref": item.ref,
                "idempotency_key": item.idempotency_key,
                "request_hash": item.request_hash,
                "kind": item.kind,
                "business_code": item.business_code,
                "accounting_date": accounting_date,
                "metadata": dict(item.metadata) if item.metadata is not None else None,
                "reverses_entry_id": item.reverses_entry_id,
                "hold_id": (item.resolves_hold or {}).get("id"),
                "created_at": now,
            }
        )
    statement = (
        _insert(conn, journal_entries)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(journal_entries.c.id, journal_entries.c.idempotency_key)
    )
    inserted = {row.idempotency_key: row.id for row in conn.execute(statement, entry_rows)}
    if len(inserted) != len(entry_rows):
        # Another transaction committed one of these keys after we looked: decide again on fresh state.
        raise RetryableConflict("idempotency key committed concurrently")

    posting_rows = []
    for _, item in to_write:
        entry_id = inserted[item.idempotency_key]
        for seq, leg in enumerate(item.legs):
            posting_rows.append(
                {
                    "entry_id": entry_id,
                    "seq": seq,
                    "account_id": states[leg.account].id,
                    "side": leg.side,
                    "effect": leg.effect,
                    "amount": leg.amount,
                    "currency": leg.currency,
                }
            )
    conn.execute(postings.insert(), posting_rows)

    hot_ids = {s.id for s in states.values() if s.hot}
    balance_updates = []
    hot_rows = []
    for account_id, delta in sorted(deltas.items()):
        if delta.is_zero():
            continue
        row = {
            "d_debits_posted": delta.debits_posted,
            "d_credits_posted": delta.credits_posted,
            "d_debits_pending": delta.debits_pending,
            "d_credits_pending": delta.credits_pending,
        }
        if account_id in hot_ids:
            hot_rows.append({"account_id": account_id, **{k.removeprefix("d_"): v for k, v in row.items()}})
        else:
            balance_updates.append({"account_id_": account_id, **row})
    if balance_updates:
        a = accounts.c
        conn.execute(
            accounts.update()
            .where(a.id == sa.bindparam("account_id_"))
            .values(
                debits_posted=a.debits_posted + sa.bindparam("d_debits_posted"),
                credits_posted=a.credits_posted + sa.bindparam("d_credits_posted"),
                debits_pending=a.debits_pending + sa.bindparam("d_debits_pending"),
                credits_pending=a.credits_pending + sa.bindparam("d_credits_pending"),
            ),
            balance_updates,
        )
    if hot_rows:
        conn.execute(hot_account_deltas.insert(), hot_rows)

    for _, item in to_write:
        entry_id = inserted[item.idempotency_key]
        if item.new_hold is not None:
            hold = dict(item.new_hold)
            hold["debit_account_id"] = states[hold.pop("debit_account")].id
            hold["credit_account_id"] = states[hold.pop("credit_account")].id
            conn.execute(holds.insert().values(**hold, entry_id=entry_id, created_at=now))
        if item.resolves_hold is not None:
            _resolve_hold(conn, item.resolves_hold, entry_id, now)

    return {
        index: _entry_from_plan(item, inserted[item.idempotency_key], accounting_date, now) for index, item in to_write
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
            created_at=_utc(row.created_at),
            reverses=row.reverses_ref,
            hold=row.hold_ref,
            seal_seq=row.seal_seq,
        )
        for row in entry_rows
    }


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
