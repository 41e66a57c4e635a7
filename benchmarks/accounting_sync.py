"""Accounting (会计) of ledger entries into vouchers on SQLite and PostgreSQL, printed as JSON lines.

    python benchmarks/accounting_sync.py [--databases sqlite,postgresql] [--entries 1000000]
        [--days 1] [--mode summary|entry|summary,entry] [--merchants 1000]

Figures (each a line ``{"name", "value", "unit", "database", ...}``):

- ``accounting_sync_setup``: seconds spent preparing the books, not part of the figure: a migrated
  fresh database, the accounts (2 hot channel clearing accounts, one merchant_pending account per
  merchant, hot fee income) opened through ``ledger.open_account``, the journal written by the
  fastest bulk path of the database straight into ``ledger_entries`` and ``ledger_postings``
  (``COPY`` on PostgreSQL, ``executemany`` in one transaction on SQLite; 90% payments of three
  postings — Dr channel clearing, Cr merchant net, Cr fee income — and 10% refunds of two — Dr
  merchant, Cr channel clearing), every ledger day closed by ``ledger.close_day`` (day-end
  snapshots its balances from the postings), and ``ANALYZE`` on PostgreSQL. Broken down into
  ``migrate_seconds``, ``accounts_seconds``, ``journal_seconds``, ``close_seconds`` and
  ``analyze_seconds``.
- ``accounting_sync_summary`` (``--mode summary``, the default): one ``accounting.sync.sync`` call
  booking every closed day into daily summarized vouchers (汇总凭证, one per business code and
  currency), in ledger entries per second of its wall time; ``target`` is 100,000 entries/s.
- ``accounting_sync_entry`` (``--mode entry``): the same with one voucher per entry, a line per
  posting — reported separately, no target.
- ``accounting_sync_check``: 1 when, after the timed sync, every entry was booked and none reported
  as an exception, the voucher lines' debits and credits each equal the posted postings' debits and
  credits, every voucher's debits equal its credits and its total, and the trial balance
  (``accounting.reports.trial_balance`` at the last day) is balanced; 0 otherwise, and the script
  then exits non-zero.

Each mode of each database gets a fresh database (a booked day cannot be booked again).
PostgreSQL comes from ``ZHANGFANG_TEST_POSTGRES_URL`` (default postgres@127.0.0.1:5432); the script
creates its own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench_db import emit, fresh_database
from zhangfang import ids
from zhangfang.accounting import reports
from zhangfang.accounting import sync as accounting
from zhangfang.db.engine import create_engine
from zhangfang.db.migrate import upgrade
from zhangfang.db.sql import request_digest
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.payments.postings import (
    CODE_PAYMENT,
    CODE_REFUND,
    channel_clearing_request,
    fee_income_request,
    merchant_pending_request,
)

TARGET = 100_000  # entries/s, summary mode
CHANNELS = ("alipay", "wechatpay")
CURRENCY = "CNY"
REFUND_SHARE = 0.1
CHUNK = 50_000  # entries generated and written at a time

ENTRY_COLUMNS = "id, ref, idempotency_key, request_hash, kind, business_code, accounting_date, created_at"
POSTING_COLUMNS = "entry_id, seq, account_id, side, effect, amount, currency"


# --------------------------------------------------------------------------- setup


def open_accounts(engine: Engine, merchants: int) -> tuple[list[int], list[int], int]:
    """The channels' clearing accounts, the merchants' pending accounts and fee income: their ids."""

    def work(conn) -> tuple[list[int], list[int], int]:
        def opened(request) -> int:
            ref = ledger.open_account(conn, request=request)[0].ref
            return conn.execute(sa.text("SELECT id FROM ledger_accounts WHERE ref = :ref"), {"ref": ref}).scalar_one()

        clearing = [opened(channel_clearing_request(channel, CURRENCY)) for channel in CHANNELS]
        pending = [opened(merchant_pending_request(f"m{n:04d}", CURRENCY)) for n in range(merchants)]
        return clearing, pending, opened(fee_income_request(CURRENCY))

    return run_in_transaction(engine, work)


def journal(
    count: int, days: list[dt.date], first_id: int, clearing: list[int], pending: list[int], fees: int, sqlite: bool
) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """Chunks of (entries, postings) rows, exactly as ``ledger.post_entries`` would write them, spread over ``days``."""
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    created_at = now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now  # SQLAlchemy's SQLite text form
    per_day, extra = divmod(count, len(days))
    dates = [day for n, day in enumerate(days) for _ in range(per_day + (n < extra))]
    entries: list[tuple] = []
    rows: list[tuple] = []
    for n in range(count):
        entry_id = first_id + n
        day = dates[n].isoformat() if sqlite else dates[n]
        channel = rng.choice(clearing)
        merchant = rng.choice(pending)
        if rng.random() >= REFUND_SHARE:
            amount = rng.randint(100, 500_000)
            fee = (amount * 6 + 500) // 1000  # 0.6%, half up: at least 1 fen
            key = f"payment:bench-{n}"
            code = CODE_PAYMENT
            rows.append((entry_id, 0, channel, "debit", "posted", amount, CURRENCY))
            rows.append((entry_id, 1, merchant, "credit", "posted", amount - fee, CURRENCY))
            rows.append((entry_id, 2, fees, "credit", "posted", fee, CURRENCY))
        else:
            amount = rng.randint(100, 100_000)
            key = f"refund:bench-{n}"
            code = CODE_REFUND
            rows.append((entry_id, 0, merchant, "debit", "posted", amount, CURRENCY))
            rows.append((entry_id, 1, channel, "credit", "posted", amount, CURRENCY))
        digest = request_digest({"idempotency_key": key, "business_code": code, "amount": amount})
        entries.append((entry_id, ids.new_id("je"), key, digest, "entry", code, day, created_at))
        if len(entries) == CHUNK:
            yield entries, rows
            entries, rows = [], []
    if entries:
        yield entries, rows


def write_journal(
    engine: Engine, count: int, days: list[dt.date], clearing: list[int], pending: list[int], fees: int
) -> int:
    """Write the journal by the database's fastest bulk path, in one transaction; returns the postings written."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        first_id = (conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM ledger_entries")).scalar() or 0) + 1
    written = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        for entries, rows in journal(count, days, first_id, clearing, pending, fees, sqlite):
            if sqlite:
                cursor.executemany(f"INSERT INTO ledger_entries ({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", entries)
                cursor.executemany(f"INSERT INTO ledger_postings ({POSTING_COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)
            else:
                with cursor.copy(f"COPY ledger_entries ({ENTRY_COLUMNS}) FROM STDIN") as copy:
                    for row in entries:
                        copy.write_row(row)
                with cursor.copy(f"COPY ledger_postings ({POSTING_COLUMNS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            written += len(rows)
        raw.commit()
    finally:
        raw.close()
    if not sqlite:
        with engine.begin() as conn:
            conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('ledger_entries', 'id'), max(id)) FROM ledger_entries")
            )
    return written


# --------------------------------------------------------------------------- the check


def check(engine: Engine, result: accounting.SyncResult, count: int, last_day: dt.date) -> dict[str, object]:
    """What must hold after the sync; ``ok`` is whether it all does."""
    with engine.connect() as conn:
        posted = conn.execute(
            sa.text(
                "SELECT coalesce(sum(CASE WHEN side = 'debit' THEN amount ELSE 0 END), 0),"
                " coalesce(sum(CASE WHEN side = 'credit' THEN amount ELSE 0 END), 0)"
                " FROM ledger_postings WHERE effect = 'posted'"
            )
        ).one()
        booked = conn.execute(
            sa.text(
                "SELECT coalesce(sum(l.debit), 0), coalesce(sum(l.credit), 0) FROM accounting_voucher_lines l"
                " JOIN accounting_vouchers v ON v.id = l.voucher_id WHERE v.kind IN ('summary', 'entry')"
            )
        ).one()
        unbalanced = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT v.id FROM accounting_vouchers v"
                " JOIN accounting_voucher_lines l ON l.voucher_id = v.id GROUP BY v.id, v.total"
                " HAVING sum(l.debit) <> sum(l.credit) OR sum(l.debit) <> v.total) AS u"
            )
        ).scalar_one()
        voucher_entries = conn.execute(
            sa.text("SELECT coalesce(sum(entry_count), 0) FROM accounting_vouchers WHERE kind IN ('summary', 'entry')")
        ).scalar()
        trial = reports.trial_balance(conn, date=last_day)
    facts = {
        "entries_booked": result.entry_count,
        "exceptions": result.exception_count,
        "voucher_entry_count": int(voucher_entries),
        "posted_debits": int(posted[0]),
        "voucher_debits": int(booked[0]),
        "posted_credits": int(posted[1]),
        "voucher_credits": int(booked[1]),
        "unbalanced_vouchers": int(unbalanced),
        "trial_balance_balanced": trial.balanced,
    }
    facts["ok"] = (
        result.entry_count == count
        and result.exception_count == 0
        and facts["voucher_entry_count"] == count
        and facts["posted_debits"] == facts["voucher_debits"] == facts["posted_credits"] == facts["voucher_credits"]
        and facts["unbalanced_vouchers"] == 0
        and trial.balanced
    )
    return facts


# --------------------------------------------------------------------------- driver


def bench(kind: str, mode: str, count: int, day_count: int, merchants: int, workdir: Path) -> bool:
    url, drop = fresh_database(kind, workdir)
    try:
        engine = create_engine(url)
        began = time.perf_counter()
        upgrade(engine)
        migrated = time.perf_counter()
        clearing, pending, fees = open_accounts(engine, merchants)
        opened = time.perf_counter()
        with engine.connect() as conn:
            first_day = ledger.open_date(conn)
        days = [first_day + dt.timedelta(days=n) for n in range(day_count)]
        posting_count = write_journal(engine, count, days, clearing, pending, fees)
        written = time.perf_counter()
        for day in days:
            ledger.close_day(engine, accounting_date=day, wait_seconds_max=30)
        closed = time.perf_counter()
        if kind == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))
        analyzed = time.perf_counter()
        emit(
            "accounting_sync_setup",
            analyzed - began,
            "s",
            kind,
            mode=mode,
            entries=count,
            postings=posting_count,
            days=day_count,
            merchants=merchants,
            migrate_seconds=round(migrated - began, 3),
            accounts_seconds=round(opened - migrated, 3),
            journal_seconds=round(written - opened, 3),
            close_seconds=round(closed - written, 3),
            analyze_seconds=round(analyzed - closed, 3),
            method="COPY" if kind == "postgresql" else "executemany",
        )

        started = time.perf_counter()
        result = accounting.sync(engine, mode=mode)
        seconds = time.perf_counter() - started
        emit(
            f"accounting_sync_{mode}",
            count / seconds,
            "entries/s",
            kind,
            entries=count,
            postings=posting_count,
            vouchers=result.voucher_count,
            days=len(result.days),
            seconds=round(seconds, 3),
            target=TARGET if mode == "summary" else None,
        )

        facts = check(engine, result, count, days[-1])
        ok = bool(facts.pop("ok"))
        emit("accounting_sync_check", 1 if ok else 0, "ok", kind, mode=mode, **facts)
        engine.dispose()
        return ok
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--entries", type=int, default=1_000_000, help="ledger entries to book")
    parser.add_argument("--days", type=int, default=1, help="ledger days the entries are spread over")
    parser.add_argument("--mode", default="summary", help="summary, entry, or both: summary,entry")
    parser.add_argument("--merchants", type=int, default=1_000)
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.mode.split(",")]
    if any(mode not in ("summary", "entry") for mode in modes):
        parser.error("--mode is summary, entry or summary,entry")
    if args.entries < 1 or args.days < 1 or args.merchants < 1:
        parser.error("--entries, --days and --merchants are at least 1")
    ok = True
    with tempfile.TemporaryDirectory(prefix="zf-bench-") as workdir:
        for kind in args.databases.split(","):
            for mode in modes:
                ok = bench(kind.strip(), mode, args.entries, args.days, args.merchants, Path(workdir)) and ok
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
