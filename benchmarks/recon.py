"""Reconciliation (对账) of a 1,000,000-line channel bill against 1,000,000 orders, printed as JSON lines.

    python benchmarks/recon.py [--databases sqlite,postgresql] [--lines 1000000] [--differ 1000]

Figures (each a line ``{"name", "value", "unit", "database", ...}``):

- ``recon_setup``: seconds spent preparing, not part of the figures: a migrated fresh database,
  one merchant, ``--lines`` succeeded payment orders and attempts at WeChat Pay paid during one
  business day (written by the bulk path: ``COPY`` on PostgreSQL, ``executemany`` on SQLite), and
  the channel's bill of that day as a WeChat Pay ALL trade bill (backtick-prefixed CSV with its
  summary), with ``--differ`` of its lines made to disagree (half an amount, half a status).
- ``recon_import``: ``recon.service.import_bill`` of the file (streamed: read 64 KiB at a time,
  plain detail rows parsed a column at a time, written in batches while the next is parsed), in
  bill lines per second.
- ``recon_match``: ``recon.service.run`` for the day, in bill lines per second.
- ``recon_end_to_end``: both, lines per second of their total; the issue's target is 100,000.
- ``recon_memory``: the peak resident memory of the process that imported and matched (a fresh
  interpreter), in MiB, against the file's size: it must not grow with the file.
- ``recon_check``: 1 when the run matched every agreeing line and found exactly the ``--differ``
  discrepancies; 0 otherwise, and the script then exits non-zero.

PostgreSQL comes from ``ZHANGFANG_TEST_POSTGRES_URL`` (default postgres@127.0.0.1:5432); the script
creates its own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench_db import emit, fresh_database
from zhangfang import ids
from zhangfang.db.engine import create_engine
from zhangfang.db.migrate import upgrade
from zhangfang.db.uow import run_in_transaction
from zhangfang.money import format_minor
from zhangfang.parties import service as parties
from zhangfang.parties.models import MerchantRequest, SettlementAccount
from zhangfang.payments.tables import payment_attempts, payment_orders
from zhangfang.recon import service as recon
from zhangfang.sandbox.wechatpay import BILL_ALL_HEADER, BILL_SUMMARY_HEADER

SHANGHAI = ZoneInfo("Asia/Shanghai")
CHANNEL = "wechatpay"
BATCH = 20_000
DAY = dt.date(2026, 11, 2)


def amount_of(n: int) -> int:
    return 100 + (n * 7919) % 99_900  # 1.00 to 999.99, spread


def paid_at(n: int, count: int) -> dt.datetime:
    # spread over the day from 00:30 to 22:30, Asia/Shanghai: nothing near midnight, nothing carried
    start = dt.datetime.combine(DAY, dt.time(0, 30), SHANGHAI)
    return (start + dt.timedelta(seconds=79_200 * n // max(count, 1))).astimezone(dt.UTC)


def write_orders(engine, count: int) -> int:
    """One merchant and ``count`` paid orders with their succeeded attempts; returns the merchant's id."""
    request = MerchantRequest(
        key="bench-recon",
        name="对账商户",
        mcc="5812",
        fee_rate="0.006",
        settlement_account=SettlementAccount("ICBC", "6222000000000000", "对账商户"),
        sign_type="HMAC-SHA256",
    )
    merchant = run_in_transaction(engine, lambda conn: parties.create_merchant(conn, request=request)).merchant
    now = dt.datetime.now(dt.UTC)
    for first in range(0, count, BATCH):
        numbers = range(first, min(first + BATCH, count))
        orders = [
            {
                "id": n + 1,
                "ref": f"pay_{n:026d}",
                "merchant_id": merchant.id,
                "merchant_ref": merchant.ref,
                "out_trade_no": f"o{n}",
                "request_hash": "0" * 64,
                "state": "succeeded",
                "amount": amount_of(n),
                "currency": "CNY",
                "subject": "bench",
                "fee_rate": "0.006",
                "fee": (amount_of(n) * 6 + 500) // 1000,
                "refunded": 0,
                "refunding": 0,
                "channel": CHANNEL,
                "attempt_ref": f"pat_{n:026d}",
                "entry_ref": f"je_{n:026d}",
                "created_at": now,
                "updated_at": now,
                "expires_at": now,
                "paid_at": paid_at(n, count),
            }
            for n in numbers
        ]
        attempts = [
            {
                "id": n + 1,
                "ref": f"pat_{n:026d}",
                "order_id": n + 1,
                "channel": CHANNEL,
                "method": "wechatpay",
                "channel_method": "native",
                "state": "succeeded",
                "amount": amount_of(n),
                "currency": "CNY",
                "channel_trade_no": f"42{n:026d}",
                "duplicate": False,
                "entry_ref": f"je_{n:026d}",
                "created_at": now,
                "updated_at": now,
                "paid_at": paid_at(n, count),
            }
            for n in numbers
        ]
        with engine.begin() as conn:
            conn.execute(payment_orders.insert(), orders)
            conn.execute(payment_attempts.insert(), attempts)
    return merchant.id


def write_bill(path: Path, count: int, differ: int) -> int:
    """The day's ALL trade bill, streamed to ``path``; ``differ`` lines disagree. Returns the file's size."""
    every = max(count // max(differ, 1), 1)
    settled = fees = 0
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\r\n")
        writer.writerow(BILL_ALL_HEADER)
        for n in range(count):
            amount, state = amount_of(n), "SUCCESS"
            if differ and n % every == 0 and n // every < differ:
                if (n // every) % 2:
                    state = "PAYERROR"
                else:
                    amount += 1
            fee = (amount * 38 * 2 + 10_000) // 20_000
            settled, fees = settled + amount, fees + fee
            at = paid_at(n, count).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
            total = format_minor(amount, "CNY")
            row = [at, "wx0000000000000001", "1900000001", "0", "", f"42{n:026d}", f"pat_{n:026d}", "openid",
                   "NATIVE", state, "OTHERS", "CNY", total, "0.00", "0", "0", "0.00", "0.00", "", "", "bench", "",
                   format_minor(fee, "CNY"), "0.38%", total, "0.00", ""]  # fmt: skip
            writer.writerow(["`" + value for value in row])
        writer.writerow(BILL_SUMMARY_HEADER)
        summary = [str(count), format_minor(settled, "CNY"), "0.00", "0.00", format_minor(fees, "CNY")]
        writer.writerow(["`" + value for value in [*summary, format_minor(settled, "CNY"), "0.00"]])
    return path.stat().st_size


def import_and_match(url: str, bill: str) -> tuple[int, int, dict, float, float, int]:
    """In a child process: import the bill and run the day; the figures and the peak RSS in KiB."""
    engine = create_engine(url)
    started = time.perf_counter()
    imported = recon.import_bill(engine, channel=CHANNEL, bill_date=DAY, path=Path(bill), fmt="wechat")
    import_done = time.perf_counter()
    result = recon.run(engine, channel=CHANNEL, bill_date=DAY)
    match_done = time.perf_counter()
    engine.dispose()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        imported.line_count,
        result.matched_count,
        result.counts,
        import_done - started,
        match_done - import_done,
        peak_kib,
    )


def bench(kind: str, count: int, differ: int, workdir: Path) -> bool:
    url, drop = fresh_database(kind, workdir)
    try:
        engine = create_engine(url)
        began = time.perf_counter()
        upgrade(engine)
        write_orders(engine, count)
        bill = workdir / f"wechat-{ids.new_id('rcb')}.csv"
        size = write_bill(bill, count, differ)
        if kind == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))
        emit("recon_setup", time.perf_counter() - began, "s", kind, lines=count, file_bytes=size)

        # Import and matching run in a fresh interpreter, so its peak resident memory is theirs alone.
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            imported_lines, matched, counts, import_seconds, match_seconds, peak_kib = pool.apply(
                import_and_match, (url, str(bill))
            )
        started, import_done, match_done = 0.0, import_seconds, import_seconds + match_seconds
        emit("recon_import", count / (import_done - started), "lines/s", kind, seconds=round(import_done - started, 3))
        emit(
            "recon_match",
            count / (match_done - import_done),
            "lines/s",
            kind,
            seconds=round(match_done - import_done, 3),
        )
        emit(
            "recon_end_to_end",
            count / (match_done - started),
            "lines/s",
            kind,
            seconds=round(match_done - started, 3),
            target=100_000,
        )
        emit("recon_memory", peak_kib / 1024, "MiB", kind, file_mib=round(size / 2**20, 1), measure="peak RSS")
        found = sum(figures["count"] for figures in counts.values())
        ok = imported_lines == count and matched == count - differ and found == differ
        emit(
            "recon_check",
            1 if ok else 0,
            "ok",
            kind,
            lines=imported_lines,
            matched=matched,
            discrepancies=counts,
        )
        engine.dispose()
        return ok
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--differ", type=int, default=1_000)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as directory:
        for kind in args.databases.split(","):
            ok = bench(kind.strip(), args.lines, args.differ, Path(directory)) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
