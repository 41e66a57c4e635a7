"""Installment plans (分期) on SQLite and PostgreSQL, without HTTP: creating, collecting, advancing, ending.

The bank is the sandbox's ICBC-like simulator behind a real mandate (signed with
the code the sandbox SMS gateway texted); time is passed explicitly, so a plan
of several months runs in seconds. Every refusal is checked twice: its stable
code, and that the database holds exactly the rows it held before. Every test
that moves money ends with the ledger balanced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Connection, Engine
from tests.mandates_env import SETTINGS, MandatesEnv, tx
from tests.snapshots import snapshot

from zhangfang.accounting import sync as accounting_sync
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.jobs import periodic
from zhangfang.ledger import service as ledger
from zhangfang.lending import installments, pos
from zhangfang.lending.schedule import build_schedule
from zhangfang.mandates import service as mandates
from zhangfang.mandates.models import Limits, Mandate
from zhangfang.parties.models import Merchant
from zhangfang.payments import postings
from zhangfang.settlement import service as settlement
from zhangfang.settlement.calendar import CHINESE_WORKING_DAYS, DEFAULT_CYCLE, PublishedYear, business_dates_settling_on

SHANGHAI = ZoneInfo("Asia/Shanghai")
LIMITS = Limits(per_debit=500_000, per_day=1_000_000, per_month=1_000_000, total=5_000_000)
PRINCIPAL = 300_000  # 3,000.00
DAY = dt.timedelta(days=1)


def morning(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(10), SHANGHAI).astimezone(dt.UTC)


def worker_round(env: MandatesEnv, day: dt.date, hours: int = 0) -> None:
    """What the worker does on ``day``: request the due debits, then run the jobs due (the bank is asked)."""
    now = morning(day) + dt.timedelta(hours=hours)
    periodic.request_due_debits(env.engine, today=day, now=now)
    env.run_jobs(now)


def refusal_code(engine: Engine, work: Callable[[Connection], Any]) -> str:
    """The code ``work`` is refused with (``"accepted"`` if it is not), after checking it changed nothing."""
    before = snapshot(engine)
    try:
        tx(engine, work)
    except ZhangfangError as error:
        assert snapshot(engine) == before, f"{error.code} changed the database"
        return error.code
    return "accepted"


def plan_of(env: MandatesEnv, ref: str) -> dict[str, Any]:
    return run_in_transaction(env.engine, lambda conn: installments.get_plan(conn, ref=ref), readonly=True)


def create(
    env: MandatesEnv, shop: Merchant, now: dt.datetime | None = None, **fields: Any
) -> tuple[dict[str, Any], bool]:
    request = installments.PlanRequest(**fields)
    return tx(
        env.engine,
        lambda conn: installments.create_plan(conn, merchant_id=shop.id, request=request, now=now or env.now),
    )


def computed(env: MandatesEnv, mandate: Mandate, key: str = "plan-1", **changes: Any) -> dict[str, Any]:
    return {
        "key": key,
        "mandate_ref": mandate.ref,
        "principal": PRINCIPAL,
        "annual_rate": Decimal("0.12"),
        "term": 3,
        "start": env.today,
        **changes,
    }


def settlement_date_for(day: dt.date) -> dt.date:
    """The settlement run (T+1, Chinese working days) that pays the business date ``day``."""
    run = day + DAY
    while day not in business_dates_settling_on(run, DEFAULT_CYCLE):
        run += DAY
    return run


def settle(env: MandatesEnv, day: dt.date):
    return run_in_transaction(
        env.engine,
        lambda conn: settlement.run_settlement(
            conn,
            settlement_date=day,
            registry=env.registry,
            now=morning(day) + dt.timedelta(hours=4),
            deduction_providers=pos.settlement_deductions(),
        ),
    )


def receivable_key(shop: Merchant) -> str:
    return f"merchant:{shop.ref}:installment_receivable"


def pending_key(shop: Merchant) -> str:
    return postings.merchant_pending_request(shop.ref, "CNY").key


def books_close(env: MandatesEnv) -> None:
    """The ledger balances; the day closes and accounting books every entry without an exception."""
    env.books_balance()
    ledger.close_day(env.engine, accounting_date=run_in_transaction(env.engine, ledger.open_date), wait_seconds_max=10)
    assert accounting_sync.sync(env.engine).exception_count == 0


@pytest.fixture
def env(mandates_env: MandatesEnv) -> MandatesEnv:
    return mandates_env


@pytest.fixture
def shop(env: MandatesEnv) -> Merchant:
    return env.merchant("installment-shop")


@pytest.fixture
def mandate(env: MandatesEnv, shop: Merchant) -> Mandate:
    return env.active(shop, limits=LIMITS, expires_at=morning(env.today + dt.timedelta(days=800)))


# --------------------------------------------------------------------------- creating


def test_a_plan_from_given_periods_is_scheduled_as_given(env, shop, mandate):
    days = [env.today + dt.timedelta(days=n) for n in (0, 30, 61)]
    plan, created = create(
        env,
        shop,
        key="given-1",
        mandate_ref=mandate.ref,
        periods=[
            installments.PeriodIn(day, amount) for day, amount in zip(days, (10_000, 20_000, 30_001), strict=True)
        ],
    )
    assert created and plan["state"] == "active" and plan["mode"] == "per_period"
    assert (plan["principal"], plan["annual_rate"], plan["method"], plan["advance_entry"]) == (60_001, None, None, None)
    assert [(p["period"], p["due_date"], p["principal"], p["interest"], p["state"]) for p in plan["periods"]] == [
        (1, days[0].isoformat(), 10_000, 0, "scheduled"),
        (2, days[1].isoformat(), 20_000, 0, "scheduled"),
        (3, days[2].isoformat(), 30_001, 0, "scheduled"),
    ]
    assert plan_of(env, plan["id"]) == plan

    worker_round(env, days[0])  # due today: debited at once
    first = plan_of(env, plan["id"])["periods"][0]
    assert (first["state"], first["collected"], first["tries"]) == ("paid", 10_000, 1)
    assert plan_of(env, plan["id"])["periods"][1]["state"] == "scheduled"
    env.books_balance()


def test_a_computed_plan_equals_build_schedule(env, shop, mandate):
    start = env.today + dt.timedelta(days=3)
    plan, _ = create(env, shop, **computed(env, mandate, method="equal-principal", term=6, start=start))
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 6, "equal-principal", start)
    assert [(p["due_date"], p["principal"], p["interest"]) for p in plan["periods"]] == [
        (p.due_date.isoformat(), p.principal, p.interest) for p in schedule.periods
    ]
    assert (plan["principal"], plan["annual_rate"], plan["method"]) == (PRINCIPAL, "0.12", "equal-principal")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("no key", {"key": ""}, "idempotency_key_invalid"),
    ("unknown mode", {"mode": "monthly"}, "installment_mode_unknown"),
    ("penalty above 1 % a day", {"penalty_daily_rate": "0.02"}, "penalty_rate_invalid"),
    ("penalty not a decimal", {"penalty_daily_rate": "abc"}, "penalty_rate_invalid"),
    ("penalty as a float", {"penalty_daily_rate": 0.0005}, "penalty_rate_invalid"),
    ("notify_url not a URL", {"notify_url": "ftp://shop"}, "webhook_url_invalid"),
    ("neither periods nor terms", {"principal": None, "annual_rate": None, "term": None, "start": None}, "plan"),
    ("periods and terms", {"periods": []}, "plan"),
    ("rate not a decimal", {"annual_rate": "twelve"}, "annual_rate_invalid"),
    ("rate negative", {"annual_rate": "-0.1"}, "annual_rate_invalid"),
    ("term over 120", {"term": 121}, "plan"),
    ("term zero", {"term": 0}, "period_count_invalid"),
    ("unknown method", {"method": "balloon"}, "amortization_method_unknown"),
    ("principal zero", {"principal": 0}, "amount_must_be_positive"),
    ("principal a float", {"principal": 3000.0}, "amount_must_be_integer"),
    ("first period in the past", {"start": "2 months ago"}, "plan"),
    ("no such mandate", {"mandate_ref": "mdt_nope"}, "mandate_not_found"),
]
PERIODS_BAD: list[tuple[str, list[tuple[int, int]]]] = [
    ("no period", []),
    ("121 periods", [(n, 100) for n in range(121)]),
    ("an amount of zero", [(0, 100), (30, 0)]),
    ("an amount too large", [(0, 10**11)]),
    ("a due date in the past", [(-1, 100)]),
    ("due dates not increasing", [(30, 100), (30, 100)]),
]


def test_bad_input_is_refused_with_its_code_and_writes_nothing(env, shop, mandate):
    for name, changes, expected in BAD:
        fields = {**computed(env, mandate, key=f"bad-{name}"), **changes}
        if fields.get("start") == "2 months ago":
            fields["start"] = env.today - dt.timedelta(days=62)
        code = refusal_code(
            env.engine,
            lambda conn, fields=fields: installments.create_plan(
                conn, merchant_id=shop.id, request=installments.PlanRequest(**fields), now=env.now
            ),
        )
        assert code == (expected if expected != "plan" else "installment_plan_invalid"), name
    for name, offsets in PERIODS_BAD:
        request = installments.PlanRequest(
            key=f"bad-{name}",
            mandate_ref=mandate.ref,
            periods=[installments.PeriodIn(env.today + dt.timedelta(days=d), a) for d, a in offsets],
        )
        code = refusal_code(
            env.engine,
            lambda conn, request=request: installments.create_plan(
                conn, merchant_id=shop.id, request=request, now=env.now
            ),
        )
        assert code == "installment_plan_invalid", name
    other_currency = installments.PlanRequest(
        key="usd", mandate_ref=mandate.ref, currency="USD", periods=[installments.PeriodIn(env.today, 100)]
    )
    code = refusal_code(
        env.engine,
        lambda conn: installments.create_plan(conn, merchant_id=shop.id, request=other_currency, now=env.now),
    )
    assert code == "installment_plan_invalid"


def test_the_same_key_replays_the_plan_and_another_plan_with_it_conflicts(env, shop, mandate):
    first, created = create(env, shop, **computed(env, mandate, key="order-1"))
    assert created
    again, created = create(env, shop, **computed(env, mandate, key="order-1"))
    assert not created and again == first
    # the replay is judged on the request as given: a day later, and after the mandate ended, it still replays
    tx(env.engine, lambda conn: mandates.revoke_mandate(conn, ref=mandate.ref, by="user", settings=SETTINGS))
    later, created = create(env, shop, now=env.now + 3 * DAY, **computed(env, mandate, key="order-1"))
    assert not created and later["id"] == first["id"]
    conflict = installments.PlanRequest(**computed(env, mandate, key="order-1", term=6))
    code = refusal_code(
        env.engine,
        lambda conn: installments.create_plan(conn, merchant_id=shop.id, request=conflict, now=env.now),
    )
    assert code == "installment_plan_key_conflict"
    # keys are per merchant
    other = env.merchant("other-shop")
    theirs = env.active(other, limits=LIMITS)
    _, created = create(env, other, **computed(env, theirs, key="order-1"))
    assert created


def test_a_plan_on_another_merchants_mandate_is_mandate_not_found(env, shop, mandate):
    other = env.merchant("other-shop")
    request = installments.PlanRequest(**computed(env, mandate, key="theirs"))
    code = refusal_code(
        env.engine, lambda conn: installments.create_plan(conn, merchant_id=other.id, request=request, now=env.now)
    )
    assert code == "mandate_not_found"
    plan, _ = create(env, shop, **computed(env, mandate))
    assert refusal_code(env.engine, lambda conn: installments.get_plan(conn, ref=plan["id"], merchant_id=other.id)) == (
        "installment_plan_not_found"
    )
    for action in (installments.cancel, installments.repay_early):
        assert (
            refusal_code(env.engine, lambda conn, action=action: action(conn, ref=plan["id"], merchant_id=other.id))
            == "installment_plan_not_found"
        )


def test_a_plan_on_a_revoked_mandate_is_refused(env, shop, mandate):
    tx(env.engine, lambda conn: mandates.revoke_mandate(conn, ref=mandate.ref, by="merchant", settings=SETTINGS))
    request = installments.PlanRequest(**computed(env, mandate))
    code = refusal_code(
        env.engine, lambda conn: installments.create_plan(conn, merchant_id=shop.id, request=request, now=env.now)
    )
    assert code == "installment_mandate_not_active"


def test_plans_are_listed_newest_first_by_merchant_and_state(env, shop, mandate):
    one, _ = create(env, shop, **computed(env, mandate, key="one"))
    two, _ = create(env, shop, **computed(env, mandate, key="two"))
    tx(env.engine, lambda conn: installments.cancel(conn, ref=one["id"], now=env.now))

    def listed(**filters: Any) -> list[str]:
        found = run_in_transaction(env.engine, lambda conn: installments.list_plans(conn, **filters), readonly=True)
        return [plan["id"] for plan in found]

    assert listed() == [two["id"], one["id"]]
    assert listed(state="cancelled") == [one["id"]]
    assert listed(merchant_ref=shop.ref, state="active") == [two["id"]]
    assert listed(merchant_ref="mch_other") == []
    assert listed(limit=1) == [two["id"]]
    assert refusal_code(env.engine, lambda conn: installments.list_plans(conn, state="done")) == (
        "installment_plan_state_invalid"
    )
    assert refusal_code(env.engine, lambda conn: installments.list_plans(conn, limit=0)) == (
        "installment_plan_limit_invalid"
    )


# --------------------------------------------------------------------------- advance mode and settlement


@pytest.fixture
def calendar_beyond_the_package():
    """The settlement calendar with one more year than chinese-calendar has, made up (weekends off only).

    The test below settles on the real next working day; in the package's last days of December that
    day lies in a year only a published schedule (``settlement_calendar_file``) can give.
    """
    year = CHINESE_WORKING_DAYS.last_year + 1
    CHINESE_WORKING_DAYS.publish({year: PublishedYear(year, frozenset(), frozenset())}, source="made-up weekends")
    yield
    CHINESE_WORKING_DAYS.publish({}, source="")


@pytest.mark.usefixtures("calendar_beyond_the_package")
def test_an_advance_plan_credits_the_principal_and_settlement_deducts_what_was_collected(env, shop, mandate):
    plan, _ = create(env, shop, **computed(env, mandate, mode="advance"))
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 3, "equal-installment", env.today)
    assert plan["advance_entry"] is not None
    assert env.balance(pending_key(shop)) == PRINCIPAL  # 不分期回款: the whole principal at once
    assert env.balance(receivable_key(shop)) == PRINCIPAL

    first, second = schedule.periods[0], schedule.periods[1]
    worker_round(env, first.due_date)
    worker_round(env, second.due_date)
    collected = plan_of(env, plan["id"])
    assert [p["state"] for p in collected["periods"]] == ["paid", "paid", "scheduled"]
    assert collected["collected"] == first.total + second.total
    fees = postings.fee_for(first.total, shop.fee_rate) + postings.fee_for(second.total, shop.fee_rate)
    assert env.balance(pending_key(shop)) == PRINCIPAL + first.total + second.total - fees

    # the debits' orders are paid on the bank's clock (today): the next run settles them
    run = settlement_date_for(installments.business_date(dt.datetime.now(dt.UTC)))
    [batch] = settle(env, run).batches
    assert batch.deductions == first.total + second.total  # what was collected for the platform
    assert sorted(line["kind"] for line in batch.deduction_lines) == ["installment_advance"] * 2
    # the receivable is what is still owed; the interest collected is the platform's income
    assert env.balance(receivable_key(shop)) == PRINCIPAL - first.principal - second.principal
    assert env.balance("platform:interest_income") == first.interest + second.interest
    # the merchant keeps the advance and bears the debits' fees, as for any payment
    assert env.balance(pending_key(shop)) == PRINCIPAL - fees
    # a run replayed deducts nothing more
    assert settle(env, run).replayed == 1
    assert env.balance(receivable_key(shop)) == PRINCIPAL - first.principal - second.principal

    third = schedule.periods[2]
    worker_round(env, third.due_date)
    assert plan_of(env, plan["id"])["state"] == "completed"
    # settled again on the next run: the merchant carries in what the fees left short
    [batch] = settle(env, settlement_date_for(run)).batches
    assert batch.deductions == third.total
    assert env.balance(receivable_key(shop)) == 0
    assert env.balance("platform:interest_income") == schedule.total_interest
    books_close(env)


# --------------------------------------------------------------------------- early repayment


def test_early_repayment_waives_later_interest_and_completes_the_plan(env, shop, mandate):
    plan, _ = create(env, shop, **computed(env, mandate))
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 3, "equal-installment", env.today)
    first = schedule.periods[0]
    worker_round(env, first.due_date)
    day = first.due_date + 5 * DAY
    debit = tx(env.engine, lambda conn: installments.repay_early(conn, ref=plan["id"], now=morning(day)))
    asked = run_in_transaction(env.engine, lambda conn: mandates.get_debit(conn, ref=debit), readonly=True)
    owed = schedule.periods[1].principal + schedule.periods[2].principal
    assert (asked.amount, asked.purpose, asked.purpose_ref) == (owed, "installment", f"{plan['id']}:early")
    # while it is at the bank, nothing else is asked
    assert (
        refusal_code(env.engine, lambda conn: installments.repay_early(conn, ref=plan["id"], now=morning(day)))
        == "installment_debit_in_flight"
    )
    env.run_jobs(morning(day))
    done = plan_of(env, plan["id"])
    assert done["state"] == "completed" and done["finished_at"] is not None
    assert [(p["state"], p["interest"]) for p in done["periods"]] == [
        ("paid", first.interest),
        ("paid", 0),
        ("paid", 0),
    ]
    assert done["collected"] == first.total + owed
    assert sum(p["collected"] for p in done["periods"][1:]) == asked.amount
    assert (
        refusal_code(env.engine, lambda conn: installments.repay_early(conn, ref=plan["id"], now=morning(day)))
        == "installment_plan_not_active"
    )
    books_close(env)


def test_a_failed_early_repayment_leaves_the_plan_collecting_and_can_be_asked_again(env, shop, mandate):
    plan, _ = create(env, shop, **computed(env, mandate))
    env.bank.withhold_next("account_closed")  # a hard refusal: the debit fails at once
    day = env.today + 2 * DAY
    failed = tx(env.engine, lambda conn: installments.repay_early(conn, ref=plan["id"], now=morning(day)))
    env.run_jobs(morning(day))
    assert run_in_transaction(env.engine, lambda conn: mandates.get_debit(conn, ref=failed)).state == "failed"
    back = plan_of(env, plan["id"])
    assert back["state"] == "active" and [p["state"] for p in back["periods"]] == ["scheduled"] * 3
    again = tx(env.engine, lambda conn: installments.repay_early(conn, ref=plan["id"], now=morning(day)))
    assert again != failed  # a new debit, not the failed one answered again
    env.run_jobs(morning(day))
    done = plan_of(env, plan["id"])
    assert done["state"] == "completed" and done["collected"] == PRINCIPAL
    env.books_balance()


# --------------------------------------------------------------------------- cancelling


def test_cancelling_an_advance_plan_returns_the_unpaid_principal_from_the_merchants_balance(env, shop, mandate):
    plan, _ = create(env, shop, **computed(env, mandate, mode="advance"))
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 3, "equal-installment", env.today)
    first = schedule.periods[0]
    worker_round(env, first.due_date)
    cancelled = tx(
        env.engine,
        lambda conn: installments.cancel(conn, ref=plan["id"], merchant_id=shop.id, now=morning(first.due_date)),
    )
    assert cancelled["state"] == "cancelled"
    assert [p["state"] for p in cancelled["periods"]] == ["paid", "cancelled", "cancelled"]
    unpaid = PRINCIPAL - first.principal
    fee = postings.fee_for(first.total, shop.fee_rate)
    assert env.balance(pending_key(shop)) == PRINCIPAL + first.total - fee - unpaid
    assert env.balance(receivable_key(shop)) == first.principal  # settlement deducts it from what was collected
    worker_round(env, schedule.periods[1].due_date)  # nothing more is debited
    assert [p["tries"] for p in plan_of(env, plan["id"])["periods"]] == [1, 0, 0]
    assert (
        refusal_code(env.engine, lambda conn: installments.cancel(conn, ref=plan["id"], now=env.now))
        == "installment_plan_not_active"
    )
    books_close(env)


def test_a_debit_at_the_bank_when_the_plan_is_cancelled_finishes_and_a_failure_returns_its_advance(env, shop, mandate):
    plan, _ = create(env, shop, **computed(env, mandate, mode="advance"))
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 3, "equal-installment", env.today)
    first = schedule.periods[0]
    env.bank.withhold_next("insufficient_funds", "insufficient_funds", "insufficient_funds")
    worker_round(env, first.due_date)  # refused softly: retried in a day
    assert plan_of(env, plan["id"])["periods"][0]["state"] == "collecting"
    cancelled = tx(env.engine, lambda conn: installments.cancel(conn, ref=plan["id"], now=morning(first.due_date)))
    assert [p["state"] for p in cancelled["periods"]] == ["collecting", "cancelled", "cancelled"]
    assert env.balance(receivable_key(shop)) == first.principal
    for offset in (1, 3):  # the retries fail too: the debit fails for good
        worker_round(env, first.due_date + offset * DAY)
    ended = plan_of(env, plan["id"])
    assert [p["state"] for p in ended["periods"]] == ["cancelled"] * 3
    assert env.balance(receivable_key(shop)) == 0  # its principal returned as well: nothing advanced is left
    assert env.balance(pending_key(shop)) == 0
    books_close(env)


# --------------------------------------------------------------------------- overdue


def test_a_mandate_revoked_after_a_period_failed_keeps_it_overdue_and_the_plan_can_still_end(env, shop, mandate):
    plan, _ = create(env, shop, **computed(env, mandate))
    schedule = build_schedule(PRINCIPAL, Decimal("0.12"), 3, "equal-installment", env.today)
    first = schedule.periods[0]
    env.bank.withhold_next("insufficient_funds", "insufficient_funds", "insufficient_funds")
    for offset in (0, 1, 3):
        worker_round(env, first.due_date + offset * DAY)
    overdue = plan_of(env, plan["id"])["periods"][0]
    assert (overdue["state"], overdue["tries"]) == ("overdue", 1)
    tx(env.engine, lambda conn: mandates.revoke_mandate(conn, ref=mandate.ref, by="user", settings=SETTINGS))

    worker_round(env, first.due_date + 6 * DAY)  # the overdue retry: the mandate refuses it, nothing is debited
    after = plan_of(env, plan["id"])
    period = after["periods"][0]
    assert (period["state"], period["tries"], after["state"]) == ("overdue", 1, "active")
    assert period["penalty"] > 0  # 罚息 keeps accruing on the unpaid principal
    worker_round(env, first.due_date + 7 * DAY)  # not stuck retrying every round: once every 3 days
    assert plan_of(env, plan["id"])["periods"][0] == period
    worker_round(env, schedule.periods[1].due_date)  # the next period is refused as well, and goes overdue
    assert [p["state"] for p in plan_of(env, plan["id"])["periods"]] == ["overdue", "overdue", "scheduled"]
    assert env.events("installment.overdue") == []  # no notify_url on this plan
    ended = tx(env.engine, lambda conn: installments.cancel(conn, ref=plan["id"], now=env.now))
    assert [p["state"] for p in ended["periods"]] == ["cancelled"] * 3
    env.books_balance()
