"""A 12-period installment plan collected under a withholding mandate, end to end, on SQLite and PostgreSQL.

The payer signs the mandate with the code the sandbox SMS gateway texts them;
the merchant posts a 12-period equal-installment plan; the worker's round
(``periodic.request_due_debits`` and the job queue) debits each period on its
due date through the bank simulator — one debit refused once for insufficient
funds and retried the next day, one period refused until the retries are spent,
so it goes overdue and is paid three days later with its penalty. The plan
completes; every event reached the merchant as a webhook; the ledger and the
accounting books balance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from tests.mandates_env import MandatesEnv

from zhangfang.accounting import reports
from zhangfang.accounting import sync as accounting_sync
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import periodic
from zhangfang.ledger import service as ledger
from zhangfang.lending import installments
from zhangfang.lending.allocation import penalty_interest
from zhangfang.lending.schedule import build_schedule
from zhangfang.mandates.models import Limits
from zhangfang.notify import service as notify
from zhangfang.notify.tables import webhook_events
from zhangfang.payments import postings

SHANGHAI = ZoneInfo("Asia/Shanghai")
PRINCIPAL = 1_200_000  # 12,000.00


def morning(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(10), SHANGHAI).astimezone(dt.UTC)


def worker_round(env: MandatesEnv, day: dt.date, hours: int = 0) -> None:
    """What the worker does on ``day``: request the due debits, then run the jobs due (the bank is asked)."""
    now = morning(day) + dt.timedelta(hours=hours)
    periodic.request_due_debits(env.engine, today=day, now=now)
    env.run_jobs(now)


def plan_of(env: MandatesEnv, ref: str) -> dict:
    return run_in_transaction(env.engine, lambda conn: installments.get_plan(conn, ref=ref), readonly=True)


@pytest.fixture
def limits() -> Iterator[Limits]:
    yield Limits(per_debit=200_000, per_day=400_000, per_month=400_000, total=2_000_000)


def test_a_twelve_period_plan_is_collected_with_a_retry_and_a_late_period_then_completes(
    mandates_env, limits, receiver
):
    env = mandates_env
    shop = env.merchant("installment-shop")
    receiver.secrets = [
        run_in_transaction(
            env.engine, lambda conn: notify.rotate_secret(conn, merchant_id=shop.id, grace_seconds=0)
        ).secret
    ]
    env.notify_url = f"{receiver.base_url}/installments"
    mandate = env.active(
        shop, limits=limits, expires_at=morning(dt.date(2028, 1, 1)), notify_url=env.notify_url
    )  # signed with the code the payer was texted
    assert env.gateway.last_code(mandate.phone) is not None
    start = env.today
    plan, created = run_in_transaction(
        env.engine,
        lambda conn: installments.create_plan(
            conn,
            merchant_id=shop.id,
            request=installments.PlanRequest(
                key="order-2026-001",
                mandate_ref=mandate.ref,
                principal=PRINCIPAL,
                annual_rate=Decimal("0.12"),
                term=12,
                start=start,
                notify_url=env.notify_url,
            ),
            now=env.now,
        ),
    )
    assert created and [p["state"] for p in plan["periods"]] == ["scheduled"] * 12
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 12, "equal-installment", start)
    assert [(p["principal"], p["interest"]) for p in plan["periods"]] == [
        (p.principal, p.interest) for p in schedule.periods
    ]

    late = schedule.periods[5]  # period 6: refused until the retries (1d, 2d) are spent
    for period in schedule.periods:
        day = period.due_date
        if period.period == 3:
            env.bank.withhold_next("insufficient_funds")
            worker_round(env, day)
            assert plan_of(env, plan["id"])["periods"][2]["state"] == "collecting"
            worker_round(env, day + dt.timedelta(days=1))  # the mandate's first retry, a day later
        elif period is late:
            env.bank.withhold_next("insufficient_funds", "insufficient_funds", "insufficient_funds")
            for offset in (0, 1, 3):
                worker_round(env, day + dt.timedelta(days=offset))
            assert plan_of(env, plan["id"])["periods"][5]["state"] == "overdue"
            worker_round(env, day + dt.timedelta(days=5))  # not yet: overdue periods are tried every 3 days
            assert plan_of(env, plan["id"])["periods"][5]["state"] == "overdue"
            worker_round(env, day + dt.timedelta(days=6))
        else:
            worker_round(env, day)
        assert plan_of(env, plan["id"])["periods"][period.period - 1]["state"] == "paid", period

    done = plan_of(env, plan["id"])
    assert done["state"] == "completed"
    penalty = penalty_interest(late.principal, Decimal("0.0005"), 6)  # overdue from its due date to day 6
    assert done["periods"][5]["penalty"] == penalty > 0
    assert done["periods"][5]["collected"] == late.total + penalty
    assert done["collected"] == schedule.total + penalty
    assert [p["tries"] for p in done["periods"]] == [1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1]

    # 分期回款: every installment reached the merchant's balance as a paid order (less its fee)
    fees = sum(postings.fee_for(p["collected"], shop.fee_rate) for p in done["periods"])
    assert env.balance(postings.merchant_pending_request(shop.ref, "CNY").key) == done["collected"] - fees

    with env.engine.connect() as conn:
        events = conn.execute(sa.select(webhook_events.c.event_type).order_by(webhook_events.c.id)).scalars().all()
    assert events.count("installment.paid") == 12
    assert events.count("installment.overdue") == 1
    assert events.count("debit.succeeded") == 12
    assert events.count("debit.retrying") == 1 + 2
    assert events.count("debit.failed") == 1
    assert events[0] == "mandate.activated"
    assert events.count("installment_plan.created") == events.count("installment_plan.completed") == 1
    # each was delivered to the merchant, signed with its secret
    delivered = receiver.requests("/installments")
    assert sorted(item.json()["type"] for item in delivered) == sorted(events)
    assert all(item.verified_by == [0] for item in delivered)

    # the books: the day closes, accounting books it, everything balances and nothing is left unbooked
    env.books_balance()
    ledger.close_day(env.engine, accounting_date=run_in_transaction(env.engine, ledger.open_date), wait_seconds_max=10)
    assert accounting_sync.sync(env.engine).exception_count == 0
    trial = run_in_transaction(env.engine, lambda conn: reports.trial_balance(conn, date=env.today), readonly=True)
    assert trial.balanced
