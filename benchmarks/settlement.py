"""A settlement run (清结算) for many merchants on SQLite and PostgreSQL, printed as JSON lines.

    python benchmarks/settlement.py [--databases sqlite,postgresql] [--merchants 100000] [--payments 2]

Figures (each a line ``{"name", "value", "unit", "database", ...}``):

- ``settlement_setup``: seconds spent preparing, not part of the figure: a migrated fresh database;
  the merchants and their orders written straight into ``merchants`` and ``payment_orders``
  (``--payments`` paid orders per merchant on Monday 2025-09-29, 0.6 % fee booked); each merchant's
  pending-settlement account opened through ``ledger.open_account``, its balance (what the orders
  booked) written straight into the account row, as the payment entries would have left it; one
  merchant in ten on a 0.5 % contract (``settlement_merchants``), so its run posts a fee adjustment.
- ``settlement_run``: one ``settlement.service.run_settlement`` for Tuesday 2025-09-30 (T1 pays
  Monday), in one transaction, in merchants settled per second of its wall time: the statement of
  every merchant from one query of the payments, the fee adjustments, a batch and its lines and a
  payout (a ledger hold, the payout row, its job) per merchant.
- ``settlement_check``: 1 when every merchant got one batch paying exactly its hand-computed net and
  a second run of the date created nothing; 0 otherwise, and the script then exits non-zero.

PostgreSQL comes from ``ZHANGFANG_TEST_POSTGRES_URL`` (default postgres@127.0.0.1:5432); the script
creates its own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bench_db import emit, fresh_database
from zhangfang import ids
from zhangfang.db.engine import create_engine
from zhangfang.db.migrate import upgrade
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.tables import accounts
from zhangfang.parties.tables import merchants
from zhangfang.payments import flows as _payment_jobs  # noqa: F401 - registers the payout job
from zhangfang.payments import postings
from zhangfang.payments.tables import payment_orders
from zhangfang.settlement import service as settlement
from zhangfang.settlement.fees import FeeContract, Percentage
from zhangfang.settlement.tables import settlement_merchants

SHANGHAI = ZoneInfo("Asia/Shanghai")
BUSINESS_DATE = dt.date(2025, 9, 29)
SETTLEMENT_DATE = dt.date(2025, 9, 30)
FEE_RATE = Decimal("0.006")
CONTRACT_RATE = Decimal("0.005")
CHUNK = 10_000


class _Adapter:
    currencies = ("CNY",)

    def create_payout(self, *args: object) -> None:  # pragma: no cover - never called: jobs do not run here
        raise AssertionError("the benchmark runs no jobs")


class PayoutOnlyRegistry:
    """Just what a settlement run asks of the channel registry: one bank that pays out CNY."""

    code = "bank_direct:bench"

    def payout_channels(self) -> tuple[str, ...]:
        return (self.code,)

    def adapter(self, code: str) -> _Adapter:
        return _Adapter()

    def codes(self) -> tuple[str, ...]:
        return (self.code,)


def amount_of(merchant: int, payment: int) -> int:
    return 1_000 + (merchant * 37 + payment * 101) % 50_000


def setup(engine: Engine, merchant_count: int, payments: int) -> dict[str, float]:
    """The merchants, their orders and balances (see the module doc); seconds per part."""
    seconds: dict[str, float] = {}
    now = dt.datetime(2025, 9, 29, 4, tzinfo=dt.UTC)
    started = time.perf_counter()
    refs = [ids.new_id("mch") for _ in range(merchant_count)]
    with engine.begin() as conn:
        for start in range(0, merchant_count, CHUNK):
            conn.execute(
                merchants.insert(),
                [
                    {
                        "ref": refs[i],
                        "key": f"bench-{i}",
                        "request_hash": "0" * 64,
                        "name": f"商户 {i}",
                        "mcc": "5812",
                        "status": "active",
                        "fee_rate": str(FEE_RATE),
                        "bank_name": "招商银行",
                        "bank_account_number": f"62148302{i:08d}",
                        "bank_account_name": f"商户 {i}",
                        "app_id": f"app_{i:016x}",
                        "sign_type": "HMAC-SHA256",
                        "hmac_secret": "0" * 64,
                        "created_at": now,
                    }
                    for i in range(start, min(start + CHUNK, merchant_count))
                ],
            )
        ids_by_ref = dict(conn.execute(sa.select(merchants.c.ref, merchants.c.id)).all())
    seconds["merchants_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, merchant_count, CHUNK):
            rows = []
            for i in range(start, min(start + CHUNK, merchant_count)):
                for p in range(payments):
                    paid_at = dt.datetime.combine(BUSINESS_DATE, dt.time(9), SHANGHAI) + dt.timedelta(minutes=p)
                    amount = amount_of(i, p)
                    rows.append(
                        {
                            "ref": ids.new_id("pay"),
                            "merchant_id": ids_by_ref[refs[i]],
                            "merchant_ref": refs[i],
                            "out_trade_no": f"o-{p}",
                            "request_hash": "0" * 64,
                            "state": "succeeded",
                            "amount": amount,
                            "currency": "CNY",
                            "subject": "茶",
                            "fee_rate": str(FEE_RATE),
                            "fee": postings.fee_for(amount, FEE_RATE),
                            "channel": "alipay",
                            "attempt_ref": ids.new_id("pat"),
                            "created_at": paid_at,
                            "updated_at": paid_at,
                            "expires_at": paid_at + dt.timedelta(hours=2),
                            "paid_at": paid_at,
                        }
                    )
            conn.execute(payment_orders.insert(), rows)
        conn.execute(
            settlement_merchants.insert(),
            [
                {
                    "merchant_id": ids_by_ref[refs[i]],
                    "merchant_ref": refs[i],
                    "cycle": "T1",
                    "fee_contract": FeeContract(Percentage(CONTRACT_RATE)).to_dict(),
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(0, merchant_count, 10)
            ],
        )
    seconds["orders_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    for start in range(0, merchant_count, CHUNK):

        def open_chunk(conn: Connection, start: int = start) -> None:
            for i in range(start, min(start + CHUNK, merchant_count)):
                ledger.open_account(conn, request=postings.merchant_pending_request(refs[i], "CNY"), now=now)
                booked = sum(amount_of(i, p) - postings.fee_for(amount_of(i, p), FEE_RATE) for p in range(payments))
                conn.execute(
                    accounts.update()
                    .where(accounts.c.key == postings.merchant_pending_request(refs[i], "CNY").key)
                    .values(credits_posted=booked)
                )

        run_in_transaction(engine, open_chunk)
    seconds["accounts_seconds"] = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
        seconds["analyze_seconds"] = time.perf_counter() - started
    return seconds


def expected_nets(merchant_count: int, payments: int) -> int:
    total = 0
    for i in range(merchant_count):
        rate = CONTRACT_RATE if i % 10 == 0 else FEE_RATE
        total += sum(amount_of(i, p) - postings.fee_for(amount_of(i, p), rate) for p in range(payments))
    return total


def bench(kind: str, merchant_count: int, payments: int, workdir: Path) -> bool:
    url, drop = fresh_database(kind, workdir)
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        upgrade(engine)
        migrate_seconds = time.perf_counter() - started
        parts = setup(engine, merchant_count, payments)
        emit(
            "settlement_setup",
            migrate_seconds + sum(parts.values()),
            "s",
            kind,
            merchants=merchant_count,
            migrate_seconds=round(migrate_seconds, 3),
            **{name: round(value, 3) for name, value in parts.items()},
        )
        registry = PayoutOnlyRegistry()
        now = dt.datetime(2025, 9, 30, 1, tzinfo=dt.UTC)
        started = time.perf_counter()
        result = run_in_transaction(
            engine,
            lambda conn: settlement.run_settlement(
                conn,
                settlement_date=SETTLEMENT_DATE,
                registry=registry,
                now=now,  # type: ignore[arg-type]
            ),
        )
        seconds = time.perf_counter() - started
        emit(
            "settlement_run",
            result.created / seconds,
            "merchants/s",
            kind,
            merchants=merchant_count,
            payments=merchant_count * payments,
            seconds=round(seconds, 3),
        )
        again = run_in_transaction(
            engine,
            lambda conn: settlement.run_settlement(
                conn,
                settlement_date=SETTLEMENT_DATE,
                registry=registry,
                now=now,  # type: ignore[arg-type]
            ),
        )
        ok = (
            result.created == merchant_count
            and not result.skipped
            and sum(batch.amount for batch in result.batches) == expected_nets(merchant_count, payments)
            and all(batch.amount == batch.net == batch.payable for batch in result.batches)
            and again.created == 0
            and again.replayed == merchant_count
        )
        emit("settlement_check", 1 if ok else 0, "bool", kind, merchants=merchant_count)
        return ok
    finally:
        engine.dispose()
        drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--merchants", type=int, default=100_000)
    parser.add_argument("--payments", type=int, default=2, help="paid orders per merchant on the business date")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as directory:
        for kind in args.databases.split(","):
            ok = bench(kind.strip(), args.merchants, args.payments, Path(directory)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
