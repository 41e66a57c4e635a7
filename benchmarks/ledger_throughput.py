"""Ledger throughput on SQLite and PostgreSQL, printed as JSON lines.

    python benchmarks/ledger_throughput.py [--databases sqlite,postgresql] [--scale 1.0]

Figures (each a line ``{"name", "value", "unit", "database", ...}``):

- ``single_entry_1_writer`` / ``single_entry_8_writers``: two-posting transfers through
  ``ledger.post_entry_alone`` (each its own transaction), 1 and 8 processes, every writer on
  accounts of its own.
- ``batched_entries``: ``ledger.post_entries`` with batches of 1,000 two-posting transfers between
  200 constrained wallets (every entry checked against balances, one transaction per batch).
- ``storage_limit``: the same rows (entries and postings) written with no ledger logic by the fastest
  bulk path of the database (``COPY`` on PostgreSQL, ``executemany`` in one transaction on SQLite),
  and ``batched_vs_storage_limit``, the ratio of the two.
- ``hot_account_4_writers`` / ``spread_accounts_4_writers``: 4 processes, each entry crediting one
  shared hot account, against the same load crediting one account per writer; and their ratio.
- ``commit_baseline``: one-row INSERT + COMMIT transactions per second on one connection, with no
  ledger at all — the machine's own speed in this run, to read the other figures against (a shared
  host's fsync and CPU vary from run to run).

PostgreSQL comes from ``ZHANGFANG_TEST_POSTGRES_URL`` (default postgres@127.0.0.1:5432); the script
creates its own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import random
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench_db import emit, fresh_database
from zhangfang import ids
from zhangfang.db.engine import create_engine
from zhangfang.db.migrate import upgrade
from zhangfang.db.sql import request_digest
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg

BATCH_SIZE = 1_000


def transfer(key: str, debit: str, credit: str, amount: int) -> EntryRequest:
    return EntryRequest(
        idempotency_key=key,
        business_code="bench",
        legs=(Leg(debit, "debit", amount, "CNY"), Leg(credit, "credit", amount, "CNY")),
    )


def open_accounts(engine, prefix: str, count: int, **flags) -> list[str]:
    def work(conn):
        return [
            ledger.open_account(
                conn, request=AccountRequest(key=f"{prefix}-{i}", ledger_code=prefix, currency="CNY", **flags)
            )[0].ref
            for i in range(count)
        ]

    return run_in_transaction(engine, work)


def fund(engine, bank: str, wallets: list[str], amount: int) -> None:
    requests = [transfer(f"fund-{w}", bank, w, amount) for w in wallets]
    run_in_transaction(engine, lambda conn: ledger.post_entries(conn, requests=requests))


# --------------------------------------------------------------------------- single-entry path


def _single_writer(url: str, source: str, target: str, count: int, tag: str, start, queue) -> None:
    engine = create_engine(url, pool_size=1)
    requests = [transfer(f"{tag}-{i}", source, target, 1) for i in range(count)]
    ledger.post_entry_alone(engine, request=transfer(f"{tag}-warm", source, target, 1))
    start.wait()
    began = time.perf_counter()
    for request in requests:
        ledger.post_entry_alone(engine, request=request)
    queue.put((began, time.perf_counter()))
    engine.dispose()


def run_writers(url: str, pairs: list[tuple[str, str]], count: int, tag: str) -> float:
    """Start one process per (source, target) pair, each posting ``count`` entries; return entries/s."""
    context = multiprocessing.get_context("spawn")
    start, queue = context.Event(), context.Queue()
    processes = [
        context.Process(target=_single_writer, args=(url, s, t, count, f"{tag}-{n}", start, queue))
        for n, (s, t) in enumerate(pairs)
    ]
    for process in processes:
        process.start()
    time.sleep(1.5)  # let every writer import, connect and warm up
    start.set()
    spans = [queue.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return len(pairs) * count / elapsed


# --------------------------------------------------------------------------- batches and the storage limit


def batched(engine, wallets: list[str], batches: int, rng: random.Random, tag: str) -> float:
    elapsed = 0.0
    for b in range(batches):
        requests = []
        for i in range(BATCH_SIZE):
            debit, credit = rng.sample(wallets, 2)
            requests.append(transfer(f"{tag}-{b}-{i}", debit, credit, rng.randint(1, 100)))
        began = time.perf_counter()
        run_in_transaction(engine, lambda conn, r=requests: ledger.post_entries(conn, requests=r))
        elapsed += time.perf_counter() - began
    return batches * BATCH_SIZE / elapsed


def storage_rows(engine, wallets: list[str], batch: int, first_id: int, open_date: dt.date):
    """Rows exactly like a batch of transfers produces, for writing with no ledger logic at all."""
    with engine.connect() as conn:
        account_ids = dict(conn.execute(sa.text("SELECT ref, id FROM ledger_accounts")).all())
    now = dt.datetime.now(dt.UTC)
    entries, postings = [], []
    for i in range(BATCH_SIZE):
        entry_id = first_id + i
        debit, credit = random.sample(wallets, 2)
        key = f"raw-{batch}-{i}"
        entries.append(
            (entry_id, ids.new_id("je"), key, request_digest({"k": key}), "entry", "bench", open_date, None, now)
        )
        postings.append((entry_id, 0, account_ids[debit], "debit", "posted", 5, "CNY"))
        postings.append((entry_id, 1, account_ids[credit], "credit", "posted", 5, "CNY"))
    return entries, postings


ENTRY_COLUMNS = "id, ref, idempotency_key, request_hash, kind, business_code, accounting_date, metadata, created_at"
POSTING_COLUMNS = "entry_id, seq, account_id, side, effect, amount, currency"


def storage_limit(engine, wallets: list[str], batches: int) -> float:
    with engine.connect() as conn:
        first_id = (conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM ledger_entries")).scalar() or 0) + 1
        open_date = conn.execute(sa.text("SELECT open_date FROM ledger_clock")).scalar()
    prepared = []
    for b in range(batches):
        prepared.append(storage_rows(engine, wallets, b, first_id + b * BATCH_SIZE, open_date))
    elapsed = 0.0
    raw = engine.raw_connection()
    try:
        for entries, postings in prepared:
            began = time.perf_counter()
            cursor = raw.cursor()
            if engine.dialect.name == "postgresql":
                with cursor.copy(f"COPY ledger_entries ({ENTRY_COLUMNS}) FROM STDIN") as copy:
                    for row in entries:
                        copy.write_row(row)
                with cursor.copy(f"COPY ledger_postings ({POSTING_COLUMNS}) FROM STDIN") as copy:
                    for row in postings:
                        copy.write_row(row)
            else:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(f"INSERT INTO ledger_entries ({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", entries)
                cursor.executemany(f"INSERT INTO ledger_postings ({POSTING_COLUMNS}) VALUES (?,?,?,?,?,?,?)", postings)
            raw.commit()
            elapsed += time.perf_counter() - began
    finally:
        raw.close()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('ledger_entries', 'id'), max(id)) FROM ledger_entries")
            )
    return batches * BATCH_SIZE / elapsed


# --------------------------------------------------------------------------- driver


def commit_baseline(engine, seconds: float = 2.0) -> float:
    """Transactions per second of a bare one-row insert and commit: the floor every write pays."""
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE bench_baseline (id INTEGER PRIMARY KEY, v INTEGER)"))
        conn.commit()
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            conn.execute(sa.text("INSERT INTO bench_baseline (id, v) VALUES (:id, 1)"), {"id": count})
            conn.commit()
            count += 1
        elapsed = time.perf_counter() - began
        conn.execute(sa.text("DROP TABLE bench_baseline"))
        conn.commit()
    return count / elapsed


def bench(kind: str, scale: float, workdir: Path) -> None:
    url, drop = fresh_database(kind, workdir)
    try:
        engine = create_engine(url)
        upgrade(engine)
        emit("commit_baseline", commit_baseline(engine), "transactions/s", kind)
        rng = random.Random(7)
        bank = open_accounts(engine, "bank", 1, normal_side="debit")[0]

        # Single-entry path: each writer moves money between two accounts of its own.
        sources = open_accounts(engine, "source", 8, normal_side="debit")
        targets = open_accounts(engine, "target", 8)
        count = int(1_500 * scale)
        rate = run_writers(url, [(sources[0], targets[0])], count * 2, "one")
        emit("single_entry_1_writer", rate, "entries/s", kind, target=1_500 if kind == "postgresql" else None)
        rate = run_writers(url, list(zip(sources, targets, strict=True)), count, "eight")
        emit("single_entry_8_writers", rate, "entries/s", kind, target=3_000 if kind == "postgresql" else None)

        # Hot account against spread accounts: 4 writers, the same load.
        hot = open_accounts(engine, "fee", 1, hot=True)[0]
        spread = open_accounts(engine, "spread", 4)
        hot_rate = run_writers(url, [(sources[n], hot) for n in range(4)], count, "hot")
        spread_rate = run_writers(url, [(sources[n], spread[n]) for n in range(4)], count, "spread")
        emit("hot_account_4_writers", hot_rate, "entries/s", kind)
        emit("spread_accounts_4_writers", spread_rate, "entries/s", kind)
        emit("hot_vs_spread", hot_rate / spread_rate, "ratio", kind, target=0.7)

        # Batches of 1,000 checked transfers between constrained wallets, and the storage limit.
        wallets = open_accounts(engine, "wallet", 200, debits_must_not_exceed_credits=True)
        fund(engine, bank, wallets, 10**12)
        batches = max(2, int(20 * scale))
        batched(engine, wallets, 1, rng, "warm")
        batch_rate = batched(engine, wallets, batches, rng, "batch")
        limit_rate = storage_limit(engine, wallets, batches)
        target = 30_000 if kind == "postgresql" else 60_000
        emit("batched_entries", batch_rate, "entries/s", kind, batch_size=BATCH_SIZE, target=target)
        emit("storage_limit", limit_rate, "entries/s", kind, method="COPY" if kind == "postgresql" else "executemany")
        emit("batched_vs_storage_limit", batch_rate / limit_rate, "ratio", kind, target=0.3)
        engine.dispose()
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the amount of work")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zf-bench-") as workdir:
        for kind in args.databases.split(","):
            bench(kind.strip(), args.scale, Path(workdir))


if __name__ == "__main__":
    main()
