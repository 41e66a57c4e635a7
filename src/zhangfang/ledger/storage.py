"""How the posting engine reads and writes its rows, per database: the fast paths live here.

Same operations on both databases, chosen by dialect (DESIGN principle 6):

==================  ===============================================  ==========================================
operation           PostgreSQL                                       SQLite
==================  ===============================================  ==========================================
existing keys       ``= ANY(array)``: one short statement             ``IN (...)``
lock accounts       ``FOR UPDATE`` in id order, materialized CTE     the write lock (``BEGIN IMMEDIATE``) is
                                                                      already held by the transaction
write a batch       one statement: ``unnest`` arrays into entries,   ids assigned from ``max(id)`` (one writer
                    postings, balance updates and hot deltas          at a time) and ``executemany`` per table
==================  ===============================================  ==========================================

Arrays keep the PostgreSQL statement short and constant, so it is parsed
once and prepared; SQLite's ``executemany`` runs each row in C.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from psycopg.errors import CheckViolation
from sqlalchemy.engine import Connection, Engine

from zhangfang.db.uow import RetryableConflict
from zhangfang.ledger import day_end

BALANCE_COLUMNS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
_STATE_COLUMNS = (
    "id, ref, currency, hot, closed, debits_must_not_exceed_credits, credits_must_not_exceed_debits, "
    "debits_posted, credits_posted, debits_pending, credits_pending"
)


class AccountState:
    """An account as the batch sees it: locked balances, then the effect of each accepted entry."""

    __slots__ = ("balances", "closed", "credits_limited", "currency", "debits_limited", "hot", "id", "initial", "ref")

    def __init__(self, row: Sequence[Any]) -> None:
        self.id, self.ref, self.currency = row[0], row[1], row[2]
        # SQLite answers 0/1 for booleans.
        self.hot, self.closed, self.debits_limited, self.credits_limited = (bool(v) for v in row[3:7])
        self.initial = [int(v) for v in row[7:11]]
        self.balances = list(self.initial)

    def change(self) -> list[int]:
        return [now - before for now, before in zip(self.balances, self.initial, strict=True)]


@dataclass
class EntryRows:
    """Column arrays of the entries and postings of one batch, in batch order."""

    refs: list[str]
    keys: list[str]
    hashes: list[str]
    kinds: list[str]
    business_codes: list[str]
    metadata: list[str | None]
    reverses: list[int | None]
    holds: list[int | None]
    posting_entry: list[int]  # position of the posting's entry in the arrays above
    posting_seq: list[int]
    posting_account: list[int]
    posting_side: list[str]
    posting_effect: list[str]
    posting_amount: list[int]
    posting_currency: list[str]


def _postgres(conn: Connection, statement: sa.TextClause, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a PostgreSQL statement of this module on the transaction's own psycopg connection, binary.

    Binary parameters send the arrays without quoting every element in Python; the statement
    text stays constant, so psycopg prepares it once per connection.
    """
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_pyformat(statement), params, binary=True)
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


_PYFORMAT: dict[int, str] = {}


def _pyformat(statement: sa.TextClause) -> str:
    """``:name`` placeholders of a text() statement as psycopg's ``%(name)b`` (binary)."""
    key = id(statement)
    if key not in _PYFORMAT:
        _PYFORMAT[key] = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)b", statement.text)
    return _PYFORMAT[key]


def existing_entries(conn: Connection, keys: list[str]) -> dict[str, tuple[int, str]]:
    """Entries already stored under these idempotency keys: key -> (id, request hash)."""
    if not keys:
        return {}
    if conn.dialect.name == "postgresql":
        rows = _postgres(conn, _EXISTING_POSTGRES, {"keys": keys})
    else:
        rows = conn.execute(
            sa.text(
                "SELECT idempotency_key, id, request_hash FROM ledger_entries WHERE idempotency_key IN :keys"
            ).bindparams(sa.bindparam("keys", expanding=True)),
            {"keys": keys},
        )
    return {key: (entry_id, digest) for key, entry_id, digest in rows}


_EXISTING_POSTGRES = sa.text(
    "SELECT idempotency_key, id, request_hash FROM ledger_entries WHERE idempotency_key = ANY(CAST(:keys AS text[]))"
)

_LOCK_POSTGRES = sa.text(
    f"""
WITH locked AS MATERIALIZED (
  SELECT {_STATE_COLUMNS} FROM ledger_accounts
  WHERE ref = ANY(CAST(:refs AS text[])) AND NOT hot
  ORDER BY id
  FOR UPDATE
)
SELECT * FROM locked
UNION ALL
SELECT {_STATE_COLUMNS} FROM ledger_accounts WHERE ref = ANY(CAST(:refs AS text[])) AND hot
"""
)
# Materialized, so the lock is taken by this CTE, in id order, whatever the planner does with the rest.

_READ_SQLITE = sa.text(f"SELECT {_STATE_COLUMNS} FROM ledger_accounts WHERE ref IN :refs").bindparams(
    sa.bindparam("refs", expanding=True)
)


def lock_accounts(conn: Connection, refs: list[str]) -> dict[str, AccountState]:
    """The batch's accounts, every non-hot one locked (in ascending id order, so writers never deadlock)."""
    if not refs:
        return {}
    if conn.dialect.name == "postgresql":
        rows = _postgres(conn, _LOCK_POSTGRES, {"refs": refs})
    else:
        rows = conn.execute(_READ_SQLITE, {"refs": refs}).all()
    return {row[1]: AccountState(row) for row in rows}


def write_batch(
    conn: Connection, rows: EntryRows, states: Sequence[AccountState], now: dt.datetime
) -> tuple[list[int], dt.date]:
    """Insert the batch's entries and postings and apply its balance changes; returns the entry ids."""
    if conn.dialect.name == "postgresql":
        return _write_postgres(conn, rows, states, now)
    return _write_sqlite(conn, rows, states, now)


_WRITE_POSTGRES = sa.text(
    """
WITH clock AS (
  SELECT open_date FROM ledger_clock WHERE id = 1
),
entry AS (
  INSERT INTO ledger_entries (ref, idempotency_key, request_hash, kind, business_code, accounting_date,
                              metadata, reverses_entry_id, hold_id, created_at)
  SELECT e.ref, e.key, e.hash, e.kind, e.code, clock.open_date, CAST(e.metadata AS json), e.reverses, e.hold,
         :created_at
  FROM unnest(CAST(:refs AS text[]), CAST(:keys AS text[]), CAST(:hashes AS text[]), CAST(:kinds AS text[]),
              CAST(:codes AS text[]), CAST(:metadata AS text[]), CAST(:reverses AS bigint[]),
              CAST(:holds AS bigint[])) AS e(ref, key, hash, kind, code, metadata, reverses, hold),
       clock
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING id, ref, accounting_date
),
complete AS (
  SELECT count(*) = :entry_count AS ok FROM entry
),
posted AS (
  INSERT INTO ledger_postings (entry_id, seq, account_id, side, effect, amount, currency)
  SELECT entry.id, p.seq, p.account_id, p.side, p.effect, p.amount, p.currency
  FROM unnest(CAST(:p_ref AS text[]), CAST(:p_seq AS smallint[]), CAST(:p_account AS bigint[]),
              CAST(:p_side AS text[]), CAST(:p_effect AS text[]), CAST(:p_amount AS bigint[]),
              CAST(:p_currency AS text[])) AS p(entry_ref, seq, account_id, side, effect, amount, currency)
  JOIN entry ON entry.ref = p.entry_ref
),
balanced AS (
  UPDATE ledger_accounts a
  SET debits_posted = a.debits_posted + d.dp, credits_posted = a.credits_posted + d.cp,
      debits_pending = a.debits_pending + d.dpend, credits_pending = a.credits_pending + d.cpend
  FROM unnest(CAST(:u_id AS bigint[]), CAST(:u_dp AS bigint[]), CAST(:u_cp AS bigint[]),
              CAST(:u_dpend AS bigint[]), CAST(:u_cpend AS bigint[])) AS d(id, dp, cp, dpend, cpend),
       complete
  WHERE a.id = d.id AND complete.ok
),
hot AS (
  INSERT INTO ledger_hot_deltas (account_id, debits_posted, credits_posted, debits_pending, credits_pending)
  SELECT d.id, d.dp, d.cp, d.dpend, d.cpend
  FROM unnest(CAST(:h_id AS bigint[]), CAST(:h_dp AS bigint[]), CAST(:h_cp AS bigint[]),
              CAST(:h_dpend AS bigint[]), CAST(:h_cpend AS bigint[])) AS d(id, dp, cp, dpend, cpend),
       complete
  WHERE complete.ok
)
SELECT id, ref, accounting_date FROM entry
"""
)


def _changes(states: Sequence[AccountState], hot: bool) -> list[tuple[int, int, int, int, int]]:
    changed = []
    for state in states:
        if state.hot is hot:
            change = state.change()
            if any(change):
                changed.append((state.id, *change))
    return changed


def _columns(rows: list[tuple[int, int, int, int, int]], prefix: str) -> dict[str, list[int]]:
    names = ("id", "dp", "cp", "dpend", "cpend")
    columns = list(zip(*rows, strict=True)) if rows else [()] * 5
    return {f"{prefix}_{name}": list(column) for name, column in zip(names, columns, strict=True)}


def _write_postgres(
    conn: Connection, rows: EntryRows, states: Sequence[AccountState], now: dt.datetime
) -> tuple[list[int], dt.date]:
    result = _postgres(
        conn,
        _WRITE_POSTGRES,
        {
            "refs": rows.refs,
            "keys": rows.keys,
            "hashes": rows.hashes,
            "kinds": rows.kinds,
            "codes": rows.business_codes,
            "metadata": rows.metadata,
            "reverses": rows.reverses,
            "holds": rows.holds,
            "created_at": now,
            "entry_count": len(rows.refs),
            "p_ref": [rows.refs[i] for i in rows.posting_entry],
            "p_seq": rows.posting_seq,
            "p_account": rows.posting_account,
            "p_side": rows.posting_side,
            "p_effect": rows.posting_effect,
            "p_amount": rows.posting_amount,
            "p_currency": rows.posting_currency,
            **_columns(_changes(states, hot=False), "u"),
            **_columns(_changes(states, hot=True), "h"),
        },
    )
    if len(result) != len(rows.refs):
        # Another transaction committed one of these keys after we looked: decide again on fresh state.
        raise RetryableConflict("idempotency key committed concurrently")
    ids_by_ref = {ref: entry_id for entry_id, ref, _ in result}
    return [ids_by_ref[ref] for ref in rows.refs], result[0][2]


def _sqlite_time(value: dt.datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime type stores (UTC, no offset), so reads parse it back."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _write_sqlite(
    conn: Connection, rows: EntryRows, states: Sequence[AccountState], now: dt.datetime
) -> tuple[list[int], dt.date]:
    # The transaction holds SQLite's write lock (BEGIN IMMEDIATE): nobody else can take these ids,
    # and the keys looked up earlier in this transaction cannot have been taken since.
    first_id = conn.execute(sa.text("SELECT coalesce(max(id), 0) + 1 FROM ledger_entries")).scalar_one()
    accounting_date = day_end.open_date(conn)
    entry_ids = list(range(first_id, first_id + len(rows.refs)))
    created_at, day = _sqlite_time(now), accounting_date.isoformat()
    conn.exec_driver_sql(
        "INSERT INTO ledger_entries (id, ref, idempotency_key, request_hash, kind, business_code, accounting_date, "
        "metadata, reverses_entry_id, hold_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        list(
            zip(
                entry_ids, rows.refs, rows.keys, rows.hashes, rows.kinds, rows.business_codes,
                [day] * len(entry_ids), rows.metadata, rows.reverses, rows.holds, [created_at] * len(entry_ids),
                strict=True,
            )
        ),
    )  # fmt: skip
    conn.exec_driver_sql(
        "INSERT INTO ledger_postings (entry_id, seq, account_id, side, effect, amount, currency) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        list(
            zip(
                [entry_ids[i] for i in rows.posting_entry], rows.posting_seq, rows.posting_account,
                rows.posting_side, rows.posting_effect, rows.posting_amount, rows.posting_currency,
                strict=True,
            )
        ),
    )  # fmt: skip
    updates = _changes(states, hot=False)
    if updates:
        conn.exec_driver_sql(
            "UPDATE ledger_accounts SET debits_posted = debits_posted + ?, credits_posted = credits_posted + ?, "
            "debits_pending = debits_pending + ?, credits_pending = credits_pending + ? WHERE id = ?",
            [(*change, account_id) for account_id, *change in updates],
        )
    hot = _changes(states, hot=True)
    if hot:
        conn.exec_driver_sql(
            "INSERT INTO ledger_hot_deltas (account_id, debits_posted, credits_posted, debits_pending, "
            "credits_pending) VALUES (?, ?, ?, ?, ?)",
            hot,
        )
    return entry_ids, accounting_date


# One statement, one round trip: look up the key, lock the non-hot accounts in id
# order, check that the entry fits (accounts exist, currencies match, none closed,
# constraints hold afterwards), and only then insert the entry, its postings, the
# balance changes and the hot deltas. If it does not fit, nothing is written and
# the general path runs in the same transaction to decide, and to name the rule.
#
# Balances are set from ``locked`` (the row versions we hold locked, so the latest
# committed ones), not from ``a``: PostgreSQL computes the updated row from the
# version the statement's snapshot sees and checks CHECK constraints on it *before*
# it notices a concurrent update and re-evaluates against the latest version. With
# ``a.debits_posted + d.dp`` a wallet credited by another writer after our snapshot
# failed ``debits_must_not_exceed_credits`` spuriously (the concurrency test caught
# it); computed from the locked row the first evaluation is already the right one.
# A balance constraint that still refuses the statement rolls it back whole, and
# the general path decides.
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
  SET debits_posted = l.debits_posted + d.dp, credits_posted = l.credits_posted + d.cp,
      debits_pending = l.debits_pending + d.dpend, credits_pending = l.credits_pending + d.cpend
  FROM deltas d JOIN locked l ON l.id = d.id, entry e
  WHERE a.id = d.id
),
hot_appended AS (
  INSERT INTO ledger_hot_deltas (account_id, debits_posted, credits_posted, debits_pending, credits_pending)
  SELECT d.id, d.dp, d.cp, d.dpend, d.cpend FROM deltas d, entry e WHERE d.hot
)
SELECT id, accounting_date FROM entry
"""
)


def _fast_params(item: Any, now: dt.datetime) -> dict[str, Any]:
    legs = item.legs
    return {
        "refs": [leg.account for leg in legs],
        "sides": [leg.side for leg in legs],
        "effects": [leg.effect for leg in legs],
        "amounts": [leg.amount for leg in legs],
        "currencies": [leg.currency for leg in legs],
        "key": item.idempotency_key,
        "ref": item.ref,
        "request_hash": item.request_hash,
        "kind": item.kind,
        "business_code": item.business_code,
        "metadata": json.dumps(item.metadata, sort_keys=True) if item.metadata is not None else None,
        "created_at": now,
    }


def post_one_postgres(conn: Connection, item: Any, now: dt.datetime) -> tuple[int, dt.date] | None:
    """The one-statement path for a single plain entry, inside the caller's transaction.

    Returns (entry id, accounting date), or None when the statement declined to write.
    """
    rows = _postgres(conn, _FAST_POST_SQL, _fast_params(item, now))
    return (rows[0][0], rows[0][1]) if rows else None


def post_one_postgres_alone(engine: Engine, item: Any, now: dt.datetime) -> tuple[int, dt.date] | None:
    """The one-statement path as a transaction of its own (autocommit): one round trip in all.

    Returns (entry id, accounting date), or None when the statement declined to write — or when
    a balance CHECK constraint refused it, which rolls the statement back all the same.
    """
    pooled = engine.raw_connection()
    try:
        driver = pooled.driver_connection
        driver.autocommit = True  # the statement is the transaction, commit included
        try:
            with driver.cursor() as cursor:
                cursor.execute(_pyformat(_FAST_POST_SQL), _fast_params(item, now), binary=True)
                row = cursor.fetchone()
        except CheckViolation:
            return None
        finally:
            driver.autocommit = False
    finally:
        pooled.close()
    return None if row is None else (row[0], row[1])
