"""Installment plans (分期): a merchant's payer repays in periods, each debited under a withholding mandate.

A merchant posts a plan for one of its active mandates: either the periods
(due date and amount each), or the terms for the platform to compute them
(principal, annual rate, term, method — ``schedule.build_schedule``). Then:

- the scheduler (``collect_due``, every worker round) debits each period on its
  due date (Asia/Shanghai business date) through ``mandates.create_debit``
  (purpose ``installment``); the mandate's retry policy retries soft failures;
- a debit that fails for good makes its period ``overdue``: penalty interest
  (罚息) accrues on its unpaid principal at the plan's daily rate, and the period
  is debited again — amount plus penalty so far — every ``OVERDUE_RETRY_DAYS``;
- ``repay_early`` debits every unpaid period's principal (and penalty) at once:
  later periods' interest is waived (those not due on the day it is asked); if it
  fails, the periods return to ``scheduled`` or ``overdue`` and it may be asked
  again; ``cancel`` ends the plan: periods not yet at the bank are cancelled (a
  debit already there finishes: it counts if it succeeds, its period is
  cancelled too if it fails).

Merchant-side modes (who gets the money):

============== =================================================================================
``per_period`` 分期回款: each collected installment is the merchant's, paid to it by settlement like
               any payment (a succeeded debit is a paid order).
``advance``    不分期回款: the platform advances the principal to the merchant when the plan starts
               (``installment_advance``: Dr installment receivable / Cr merchant balance) and
               keeps what is collected: each settlement deducts the collected installments
               (``InstallmentCollections``: Dr merchant balance / Cr installment receivable for
               principal, Cr interest income for interest and penalty); the merchant bears the
               debits' fees, as for any payment. A cancelled plan's
               unpaid principal is returned by the merchant (``installment_return``).
============== =================================================================================

Every state change tells the merchant by webhook (``installment_plan.created``,
``installment.paid``, ``installment.overdue``, ``installment_plan.completed``,
``installment_plan.cancelled``) when the plan has a ``notify_url``.

Guarantees
- A plan is created once per (merchant, key); the same key with another plan is
  ``installment_plan_key_conflict``. The same request replays the first plan, judged
  before any rule that depends on the day or the mandate's state. Its mandate
  belongs to the merchant and is active when the plan is created.
- A refused request writes nothing; a debit the mandate refuses (revoked,
  suspended, over a limit) makes its period overdue and never stops the others.
- A period has at most one debit in flight; a period is ``paid`` once, by the debit
  that succeeded (``collected`` = its amount + penalty at that time).
- A plan is ``completed`` when every period is paid or cancelled by early repayment.
- In ``advance`` mode the receivable is reduced exactly by what settlements deduct
  and by the principal returned for cancelled periods: ``deducted`` <= ``collected``
  per period, deducted once per settlement batch; once every period is paid and
  deducted, or cancelled, the plan's receivable is zero.
- An early repayment's debit amount equals the sum of what its periods collect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from zhangfang import ids
from zhangfang.db.sql import request_digest
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.lending import errors, products
from zhangfang.lending import service as loans
from zhangfang.lending.allocation import penalty_interest
from zhangfang.lending.schedule import build_schedule
from zhangfang.lending.tables import installment_plan_periods, installment_plans
from zhangfang.mandates import service as mandates
from zhangfang.mandates.models import Debit
from zhangfang.notify import service as notify
from zhangfang.parties import service as parties
from zhangfang.payments import postings as payment_postings
from zhangfang.payments.service import AMOUNT_MAX_MINOR
from zhangfang.settlement.models import Deduction

PURPOSE = "installment"
OVERDUE_RETRY_DAYS = 3
PERIODS_MAX = 120
MODES = ("per_period", "advance")
CODE_ADVANCE = "installment_advance"
CODE_RETURN = "installment_return"
IN_FLIGHT = ("collecting",)
UNPAID = ("scheduled", "collecting", "overdue")
PLAN_STATES = ("active", "completed", "cancelled")
LIST_LIMIT_MAX = 500


@dataclass(frozen=True)
class PeriodIn:
    """A period the merchant sets: its due date and amount (minor units, all principal)."""

    due_date: dt.date
    amount: int


@dataclass(frozen=True)
class PlanRequest:
    """A plan for one mandate: ``periods`` given, or computed from ``principal``, ``annual_rate``,
    ``term`` (months), ``method`` and ``start``. ``key`` makes it idempotent per merchant."""

    key: str
    mandate_ref: str
    mode: str = "per_period"
    periods: Sequence[PeriodIn] | None = None
    principal: int | None = None
    annual_rate: Decimal | str | None = None
    term: int | None = None
    method: str = "equal-installment"
    start: dt.date | None = None
    currency: str = "CNY"
    penalty_daily_rate: Decimal | str = Decimal("0.0005")
    notify_url: str | None = None


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


# Due dates are business dates: the Asia/Shanghai date of an instant, as the mandates compare them.
business_date = mandates.business_date


# --------------------------------------------------------------------------- views


def _iso(moment: dt.datetime | None) -> str | None:
    """A moment as the API and webhooks write it: UTC, ``Z`` (as ``mandates`` views do)."""
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _period_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "period": row.period,
        "due_date": row.due_date.isoformat(),
        "principal": row.principal,
        "interest": row.interest,
        "penalty": row.penalty,
        "amount": row.principal + row.interest + row.penalty,
        "state": row.state,
        "tries": row.tries,
        "debit": row.debit_ref,
        "collected": row.collected,
        "paid_at": _iso(row.paid_at),
    }


def plan_view(conn: Connection, plan: Row[Any]) -> dict[str, Any]:
    """The plan as merchants and operators see it, periods included."""
    periods = _periods(conn, plan.id)
    return {
        "id": plan.ref,
        "merchant": plan.merchant_ref,
        "mandate": plan.mandate_ref,
        "mode": plan.mode,
        "currency": plan.currency,
        "principal": plan.principal,
        "annual_rate": plan.annual_rate,
        "method": plan.method,
        "penalty_daily_rate": plan.penalty_daily_rate,
        "state": plan.state,
        "advance_entry": plan.advance_entry_ref,
        "collected": sum(row.collected for row in periods),
        "periods": [_period_view(row) for row in periods],
        "created_at": _iso(plan.created_at),
        "finished_at": _iso(plan.finished_at),
    }


def _periods(conn: Connection, plan_id: int, *, lock: bool = False) -> list[Row[Any]]:
    query = (
        sa.select(installment_plan_periods)
        .where(installment_plan_periods.c.plan_id == plan_id)
        .order_by(installment_plan_periods.c.period)
    )
    if lock:
        query = query.with_for_update()
    return list(conn.execute(query))


def _plan_row(conn: Connection, ref: Any, *, merchant_id: int | None = None, lock: bool = False) -> Row[Any]:
    if not isinstance(ref, str) or not ids.is_valid_id(ref, "ipl"):
        raise errors.InstallmentPlanNotFound(f"installment plan {ref!r} does not exist", field="plan")
    query = sa.select(installment_plans).where(installment_plans.c.ref == ref)
    if merchant_id is not None:
        query = query.where(installment_plans.c.merchant_id == merchant_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise errors.InstallmentPlanNotFound(f"installment plan {ref} does not exist", field="plan")
    return row


def get_plan(conn: Connection, *, ref: str, merchant_id: int | None = None) -> dict[str, Any]:
    """A plan (``plan_view``); with ``merchant_id``, only that merchant's."""
    return plan_view(conn, _plan_row(conn, ref, merchant_id=merchant_id))


def list_plans(
    conn: Connection,
    *,
    merchant_ref: str | None = None,
    merchant_id: int | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Plans newest first (``plan_view`` each), of one merchant and/or in one state, at most ``limit``."""
    if state is not None and state not in PLAN_STATES:
        raise errors.InstallmentPlanStateInvalid(f"state is one of {', '.join(PLAN_STATES)}", field="state")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
        raise errors.InstallmentPlanLimitInvalid(f"limit is from 1 to {LIST_LIMIT_MAX}", field="limit")
    query = sa.select(installment_plans).order_by(installment_plans.c.id.desc()).limit(limit)
    if merchant_ref is not None:
        query = query.where(installment_plans.c.merchant_ref == merchant_ref)
    if merchant_id is not None:
        query = query.where(installment_plans.c.merchant_id == merchant_id)
    if state is not None:
        query = query.where(installment_plans.c.state == state)
    return [plan_view(conn, row) for row in conn.execute(query).all()]


def _emit(conn: Connection, plan: Row[Any], event: str, key: str, now: dt.datetime) -> None:
    if plan.notify_url is None:
        return
    notify.emit(
        conn,
        merchant_id=plan.merchant_id,
        event_type=event,
        data=plan_view(conn, plan),
        url=plan.notify_url,
        idempotency_key=f"{plan.ref}:{key}",
        now=now,
    )


# --------------------------------------------------------------------------- accounts


def _receivable(merchant_ref: str, currency: str) -> AccountRequest:
    return AccountRequest(
        key=f"merchant:{merchant_ref}:installment_receivable{loans.currency_suffix(currency)}",
        ledger_code="installment_receivable",
        currency=currency,
        normal_side="debit",
        owner_ref=merchant_ref,
    )


def _move(conn: Connection, plan: Row[Any], code: str, key: str, legs: list[tuple[AccountRequest, str, int]], now):
    return ledger.post_entry(
        conn,
        request=EntryRequest(
            idempotency_key=key,
            business_code=code,
            legs=tuple(
                Leg(loans.account_ref(conn, account, now), side, amount, plan.currency)
                for account, side, amount in legs
            ),
            metadata={"installment_plan": plan.ref},
        ),
        now=now,
    ).entry.ref


# --------------------------------------------------------------------------- creating


def _schedule_of(request: PlanRequest, today: dt.date) -> tuple[list[tuple[dt.date, int, int]], Decimal | None]:
    """The periods (due date, principal, interest) the request asks for, checked."""
    if request.periods is not None:
        if (
            request.principal is not None
            or request.annual_rate is not None
            or request.term is not None
            or request.start is not None
        ):
            raise errors.InstallmentPlanInvalid("give the periods, or the terms to compute them, not both")
        periods = list(request.periods)
        if not 1 <= len(periods) <= PERIODS_MAX:
            raise errors.InstallmentPlanInvalid(f"a plan has 1 to {PERIODS_MAX} periods", field="periods")
        previous = today - dt.timedelta(days=1)
        for index, item in enumerate(periods):
            field = f"periods[{index}]"
            if (
                not isinstance(item, PeriodIn)
                or not isinstance(item.due_date, dt.date)
                or isinstance(item.due_date, dt.datetime)
            ):
                raise errors.InstallmentPlanInvalid(f"{field} is a due date and an amount", field=field)
            if (
                isinstance(item.amount, bool)
                or not isinstance(item.amount, int)
                or not 1 <= item.amount <= AMOUNT_MAX_MINOR
            ):
                raise errors.InstallmentPlanInvalid(
                    f"{field}.amount is an int from 1 to {AMOUNT_MAX_MINOR}", field=f"{field}.amount"
                )
            if item.due_date <= previous:
                raise errors.InstallmentPlanInvalid(
                    f"{field}.due_date must be after the previous period's and not in the past",
                    field=f"{field}.due_date",
                )
            previous = item.due_date
        return [(item.due_date, item.amount, 0) for item in periods], None
    if request.principal is None or request.annual_rate is None or request.term is None:
        raise errors.InstallmentPlanInvalid("give the periods, or principal, annual_rate and term")
    rate: Any = request.annual_rate
    if isinstance(rate, str):
        try:
            rate = Decimal(rate.strip())
        except InvalidOperation:
            raise errors.AnnualRateInvalid(
                f"annual_rate is decimal text such as 0.12, not {rate!r}", field="annual_rate"
            ) from None
    if isinstance(request.term, int) and not isinstance(request.term, bool) and request.term > PERIODS_MAX:
        raise errors.InstallmentPlanInvalid(f"a plan has 1 to {PERIODS_MAX} periods", field="term")
    schedule = build_schedule(
        request.principal, rate, request.term, request.method, request.start or today, currency=request.currency
    )
    if schedule.periods[0].due_date < today:
        raise errors.InstallmentPlanInvalid(
            "start is so early that the first period would be due in the past", field="start"
        )
    return [(p.due_date, p.principal, p.interest) for p in schedule.periods], schedule.annual_rate


def _request_digest(request: PlanRequest, key: str) -> str:
    """The hash of the request as given: what one key stands for (its replay is judged before any rule
    that depends on the day or on the mandate's state, so a replay returns the first answer)."""

    def text(value: Any) -> Any:
        return None if value is None else str(value)

    periods = None
    if request.periods is not None:
        periods = [
            [text(getattr(item, "due_date", item)), text(getattr(item, "amount", None))] for item in request.periods
        ]
    return request_digest(
        {
            "key": key,
            "mandate": text(request.mandate_ref),
            "mode": text(request.mode),
            "currency": text(request.currency),
            "periods": periods,
            "principal": text(request.principal),
            "annual_rate": text(request.annual_rate),
            "term": text(request.term),
            "method": text(request.method) if request.periods is None else None,
            "start": text(request.start),
            "penalty_daily_rate": text(request.penalty_daily_rate),
            "notify_url": text(request.notify_url),
        }
    )


def create_plan(
    conn: Connection, *, merchant_id: int, request: PlanRequest, now: dt.datetime | None = None
) -> tuple[dict[str, Any], bool]:
    """Create an installment plan for one of the merchant's active mandates; returns (plan, created).

    The same ``key`` with the same request returns the first plan (``created`` False), even on another
    day or after the mandate ended; with another request it is ``installment_plan_key_conflict``.
    In ``advance`` mode the principal is credited to the merchant's balance at once.
    """
    now = _now(now)
    key = parties.check_idempotency_key(request.key)
    digest = _request_digest(request, key)
    existing = conn.execute(
        sa.select(installment_plans).where(
            installment_plans.c.merchant_id == merchant_id, installment_plans.c.key == key
        )
    ).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.InstallmentPlanKeyConflict(f"key {key!r} was used for another plan", field="key")
        return plan_view(conn, existing), False
    if request.mode not in MODES:
        raise errors.InstallmentModeUnknown(f"mode is per_period or advance, not {request.mode!r}", field="mode")
    penalty_rate = products.check_rate(
        request.penalty_daily_rate, "penalty_daily_rate", Decimal("0.01"), errors.PenaltyRateInvalid
    )
    notify_url = notify.check_url(request.notify_url) if request.notify_url is not None else None
    periods, annual_rate = _schedule_of(request, business_date(now))
    mandate = mandates.get_mandate(conn, ref=request.mandate_ref, merchant_id=merchant_id)
    if mandate.state != "active":
        raise errors.InstallmentMandateNotActive(
            f"mandate {mandate.ref} is {mandate.state}; a plan needs an active mandate", field="mandate"
        )
    if mandate.currency != request.currency:
        raise errors.InstallmentPlanInvalid(f"the mandate debits {mandate.currency}", field="currency")
    principal = sum(p for _, p, _ in periods)
    ref = ids.new_id("ipl")
    plan_id = conn.execute(
        installment_plans.insert()
        .values(
            ref=ref,
            merchant_id=merchant_id,
            merchant_ref=mandate.merchant_ref,
            mandate_ref=mandate.ref,
            key=key,
            request_hash=digest,
            mode=request.mode,
            currency=request.currency,
            principal=principal,
            annual_rate=str(annual_rate) if annual_rate is not None else None,
            method=request.method if annual_rate is not None else None,
            penalty_daily_rate=str(penalty_rate),
            notify_url=notify_url,
            state="active",
            created_at=now,
        )
        .returning(installment_plans.c.id)
    ).scalar_one()
    conn.execute(
        installment_plan_periods.insert(),
        [
            {"plan_id": plan_id, "period": n, "due_date": due, "principal": p, "interest": i, "state": "scheduled"}
            for n, (due, p, i) in enumerate(periods, start=1)
        ],
    )
    plan = _plan_row(conn, ref)
    if request.mode == "advance":
        pending = payment_postings.merchant_pending_request(plan.merchant_ref, plan.currency)
        entry = _move(
            conn,
            plan,
            CODE_ADVANCE,
            f"installment:{ref}:advance",
            [(_receivable(plan.merchant_ref, plan.currency), "debit", principal), (pending, "credit", principal)],
            now,
        )
        conn.execute(
            installment_plans.update().where(installment_plans.c.id == plan_id).values(advance_entry_ref=entry)
        )
        plan = _plan_row(conn, ref)
    _emit(conn, plan, "installment_plan.created", "created", now)
    return plan_view(conn, plan), True


# --------------------------------------------------------------------------- collecting


def _accrue_penalty(conn: Connection, plan: Row[Any], row: Row[Any], today: dt.date) -> Row[Any]:
    """Penalty on the period's principal for the days it has been overdue up to ``today``."""
    start = row.penalty_through or row.due_date
    days = (today - start).days
    if row.state != "overdue" or days <= 0:
        return row
    added = penalty_interest(row.principal, Decimal(plan.penalty_daily_rate), days)
    conn.execute(
        installment_plan_periods.update()
        .where(installment_plan_periods.c.id == row.id)
        .values(penalty=row.penalty + added, penalty_through=today)
    )
    return conn.execute(sa.select(installment_plan_periods).where(installment_plan_periods.c.id == row.id)).one()


def _debit(conn: Connection, plan: Row[Any], row: Row[Any], amount: int, today: dt.date, now: dt.datetime) -> str:
    tries = row.tries + 1
    debit = mandates.create_debit(
        conn,
        merchant_id=plan.merchant_id,
        mandate_ref=plan.mandate_ref,
        amount=amount,
        currency=plan.currency,
        key=f"installment:{plan.ref}:{row.period}:{tries}",
        due_date=today,
        purpose=PURPOSE,
        purpose_ref=f"{plan.ref}:{row.period}",
        now=now,
    )
    conn.execute(
        installment_plan_periods.update()
        .where(installment_plan_periods.c.id == row.id)
        .values(state="collecting", tries=tries, debit_ref=debit.ref, next_try_on=None)
    )
    return debit.ref


def collect_due(conn: Connection, *, today: dt.date, now: dt.datetime | None = None) -> int:
    """Debit every period due by ``today`` that has no debit in flight: scheduled ones on their due date,
    overdue ones (with their penalty) every ``OVERDUE_RETRY_DAYS``. Returns how many debits were made.

    What the worker runs every round; a debit the mandate refuses (revoked, over a limit) makes the
    period overdue rather than stopping the others.
    """
    now = _now(now)
    p = installment_plan_periods.c
    due = conn.execute(
        sa.select(p.id, p.plan_id)
        .join(installment_plans, installment_plans.c.id == p.plan_id)
        .where(
            installment_plans.c.state == "active",
            p.due_date <= today,
            sa.or_(p.state == "scheduled", sa.and_(p.state == "overdue", p.next_try_on <= today)),
        )
        .order_by(p.due_date, p.id)
    ).all()
    made = 0
    for found in due:
        plan_ref = _plan_ref(conn, found.plan_id)
        mandates.lock_mandate(conn, ref=_plan_row(conn, plan_ref).mandate_ref)  # the mandate first: lock order
        plan = _plan_row(conn, plan_ref, lock=True)
        row = conn.execute(
            sa.select(installment_plan_periods).where(installment_plan_periods.c.id == found.id).with_for_update()
        ).one()
        if row.state not in ("scheduled", "overdue"):
            continue
        row = _accrue_penalty(conn, plan, row, today)
        amount = row.principal + row.interest + row.penalty
        try:
            with conn.begin_nested():
                _debit(conn, plan, row, amount, today, now)
            made += 1
        except ZhangfangError as error:  # the mandate refuses (revoked, suspended, over a limit): nothing written
            _mark_overdue(conn, plan, row, today, now, reason=error.code)
    return made


def _plan_ref(conn: Connection, plan_id: int) -> str:
    return conn.execute(sa.select(installment_plans.c.ref).where(installment_plans.c.id == plan_id)).scalar_one()


def _mark_overdue(
    conn: Connection, plan: Row[Any], row: Row[Any], today: dt.date, now: dt.datetime, *, reason: str
) -> None:
    conn.execute(
        installment_plan_periods.update()
        .where(installment_plan_periods.c.id == row.id)
        .values(
            state="overdue",
            penalty_through=row.penalty_through or row.due_date,
            next_try_on=today + dt.timedelta(days=OVERDUE_RETRY_DAYS),
        )
    )
    _emit(conn, plan, "installment.overdue", f"{row.period}:overdue:{row.tries}:{reason}", now)


def on_debit(conn: Connection, debit: Debit) -> None:
    """The mandates listener of ``installment`` debits: a period paid, or overdue when its debit failed."""
    if debit.purpose_ref is None or ":" not in debit.purpose_ref:
        return
    plan_ref, period_text = debit.purpose_ref.rsplit(":", 1)
    plan = _plan_row(conn, plan_ref, lock=True)
    now = debit.finished_at or _now(None)
    rows = {row.period: row for row in _periods(conn, plan.id, lock=True)}
    if period_text == "early":
        _finish_early(conn, plan, rows, debit, now)
        return
    row = rows.get(int(period_text))
    if row is None or row.debit_ref != debit.ref or row.state != "collecting":
        return  # an earlier try's late answer, or a period cancelled meanwhile
    if debit.state != "succeeded" and plan.state == "cancelled":
        _cancel_periods(conn, plan, [row], f"return:{debit.ref}", now)  # the plan ended while it was at the bank
        return
    if debit.state == "succeeded":
        conn.execute(
            installment_plan_periods.update()
            .where(installment_plan_periods.c.id == row.id)
            .values(state="paid", collected=debit.amount, paid_at=now)
        )
        _emit(conn, plan, "installment.paid", f"{row.period}:paid", now)
        _complete_if_done(conn, plan, now)
    else:
        _mark_overdue(conn, plan, row, business_date(now), now, reason=debit.failure_code or "failed")


def _complete_if_done(conn: Connection, plan: Row[Any], now: dt.datetime) -> None:
    left = conn.execute(
        sa.select(sa.func.count()).where(
            installment_plan_periods.c.plan_id == plan.id, installment_plan_periods.c.state.in_(UNPAID)
        )
    ).scalar_one()
    if left == 0 and plan.state == "active":
        conn.execute(
            installment_plans.update()
            .where(installment_plans.c.id == plan.id)
            .values(state="completed", finished_at=now)
        )
        _emit(conn, _plan_row(conn, plan.ref), "installment_plan.completed", "completed", now)


mandates.register_debit_listener(PURPOSE, on_debit)


# --------------------------------------------------------------------------- early repayment and cancelling


def repay_early(conn: Connection, *, ref: str, merchant_id: int | None = None, now: dt.datetime | None = None) -> str:
    """Debit at once everything still owed: each unpaid period's principal and penalty, and the interest
    of periods already due; later periods' interest is waived. Returns the debit's ref."""
    now = _now(now)
    today = business_date(now)
    mandates.lock_mandate(conn, ref=_plan_row(conn, ref, merchant_id=merchant_id).mandate_ref)  # lock order
    plan = _plan_row(conn, ref, merchant_id=merchant_id, lock=True)
    if plan.state != "active":
        raise errors.InstallmentPlanNotActive(f"plan {plan.ref} is {plan.state}", field="plan")
    rows = _periods(conn, plan.id, lock=True)
    if any(row.state in IN_FLIGHT for row in rows):
        raise errors.InstallmentDebitInFlight(
            f"plan {plan.ref} has a debit at the bank; repay early once it is answered", field="plan"
        )
    owed = 0
    for row in rows:
        if row.state in ("scheduled", "overdue"):
            row = _accrue_penalty(conn, plan, row, today)
            owed += row.principal + row.penalty + (row.interest if row.due_date <= today else 0)
    # Every debit made for the plan adds to some period's tries, so their sum names this try uniquely: an
    # early repayment that failed can be asked again (the same key would answer the failed debit).
    tries = sum(row.tries for row in rows)
    debit = mandates.create_debit(
        conn,
        merchant_id=plan.merchant_id,
        mandate_ref=plan.mandate_ref,
        amount=owed,
        currency=plan.currency,
        key=f"installment:{plan.ref}:early:{tries}",
        due_date=today,
        purpose=PURPOSE,
        purpose_ref=f"{plan.ref}:early",
        now=now,
    )
    conn.execute(
        installment_plan_periods.update()
        .where(
            installment_plan_periods.c.plan_id == plan.id,
            installment_plan_periods.c.state.in_(("scheduled", "overdue")),
        )
        .values(state="collecting", debit_ref=debit.ref, tries=installment_plan_periods.c.tries + 1)
    )
    return debit.ref


def _finish_early(conn: Connection, plan: Row[Any], rows: dict[int, Row[Any]], debit: Debit, now: dt.datetime) -> None:
    # Interest is waived for the periods not yet due when the repayment was asked (the debit's due date):
    # what each period collects then sums to exactly the debit's amount.
    asked_on = debit.due_date
    today = business_date(now)
    mine = [row for row in rows.values() if row.debit_ref == debit.ref and row.state == "collecting"]
    if debit.state != "succeeded" and plan.state == "cancelled":
        _cancel_periods(conn, plan, mine, f"return:{debit.ref}", now)
        return
    for row in mine:
        if debit.state == "succeeded":
            interest = row.interest if row.due_date <= asked_on else 0
            conn.execute(
                installment_plan_periods.update()
                .where(installment_plan_periods.c.id == row.id)
                .values(state="paid", interest=interest, collected=row.principal + interest + row.penalty, paid_at=now)
            )
        elif row.due_date < today:
            # overdue (again, or now: it fell due while the repayment was at the bank): penalty from its
            # due date, debited again by the scheduler
            conn.execute(
                installment_plan_periods.update()
                .where(installment_plan_periods.c.id == row.id)
                .values(
                    state="overdue",
                    penalty_through=row.penalty_through or row.due_date,
                    next_try_on=row.next_try_on or today,
                )
            )
        else:
            conn.execute(
                installment_plan_periods.update()
                .where(installment_plan_periods.c.id == row.id)
                .values(state="scheduled", next_try_on=None)
            )
    if debit.state == "succeeded":
        _emit(conn, plan, "installment.paid", "early", now)
        _complete_if_done(conn, plan, now)


def cancel(conn: Connection, *, ref: str, merchant_id: int | None = None, now: dt.datetime | None = None) -> dict:
    """End a plan: periods not at the bank are cancelled (a debit in flight finishes and counts).

    In ``advance`` mode the merchant returns the principal of the cancelled periods from its balance.
    """
    now = _now(now)
    mandates.lock_mandate(conn, ref=_plan_row(conn, ref, merchant_id=merchant_id).mandate_ref)  # lock order
    plan = _plan_row(conn, ref, merchant_id=merchant_id, lock=True)
    if plan.state != "active":
        raise errors.InstallmentPlanNotActive(f"plan {plan.ref} is {plan.state}", field="plan")
    rows = _periods(conn, plan.id, lock=True)
    _cancel_periods(conn, plan, [row for row in rows if row.state in ("scheduled", "overdue")], "return", now)
    conn.execute(
        installment_plans.update().where(installment_plans.c.id == plan.id).values(state="cancelled", finished_at=now)
    )
    plan = _plan_row(conn, plan.ref)
    _emit(conn, plan, "installment_plan.cancelled", "cancelled", now)
    return plan_view(conn, plan)


def _cancel_periods(conn: Connection, plan: Row[Any], rows: Sequence[Row[Any]], key: str, now: dt.datetime) -> None:
    """Periods that will never be collected: cancelled; in ``advance`` mode the merchant returns their
    principal (``installment_return``: Dr merchant balance / Cr installment receivable)."""
    if not rows:
        return
    conn.execute(
        installment_plan_periods.update()
        .where(installment_plan_periods.c.id.in_([row.id for row in rows]))
        .values(state="cancelled", next_try_on=None)
    )
    returned = sum(row.principal for row in rows)
    if plan.mode == "advance" and returned:
        pending = payment_postings.merchant_pending_request(plan.merchant_ref, plan.currency)
        _move(
            conn,
            plan,
            CODE_RETURN,
            f"installment:{plan.ref}:{key}",
            [(pending, "debit", returned), (_receivable(plan.merchant_ref, plan.currency), "credit", returned)],
            now,
        )


# --------------------------------------------------------------------------- advance mode: settlement deductions


class InstallmentCollections:
    """Settlement deductions for ``advance`` plans: what was collected for the platform leaves the merchant.

    Per merchant, oldest period first: ``collected - deducted`` of each paid period, at most what is
    available; booked as Dr merchant balance / Cr installment receivable (principal first), Cr interest
    income (the rest), business code ``settlement``.
    """

    kind = "installment_advance"

    def __init__(self) -> None:
        self._taken: dict[str, list[tuple[int, int]]] = {}

    def deductions_for(
        self,
        conn: Connection,
        *,
        merchant_id: int,
        merchant_ref: str,
        settlement_date: dt.date,
        currency: str,
        net: int,
        available: int,
    ) -> Sequence[Deduction]:
        p = installment_plan_periods.c
        rows = conn.execute(
            sa.select(p.id, p.collected, p.deducted, installment_plans.c.ref)
            .join(installment_plans, installment_plans.c.id == p.plan_id)
            .where(
                installment_plans.c.merchant_id == merchant_id,
                installment_plans.c.mode == "advance",
                installment_plans.c.currency == currency,
                p.collected > p.deducted,
            )
            .order_by(p.paid_at, p.id)
        ).all()
        taken: list[Deduction] = []
        left = available
        for row in rows:
            amount = min(row.collected - row.deducted, left)
            if amount <= 0:
                break
            taken.append(Deduction(self.kind, f"{row.ref}:{row.id}", amount, f"分期代收 {row.ref}"))
            left -= amount
        return taken

    def book(
        self, conn: Connection, *, deduction: Deduction, merchant_ref: str, batch_ref: str, now: dt.datetime
    ) -> None:
        plan_ref, period_id = deduction.ref.rsplit(":", 1)
        plan = _plan_row(conn, plan_ref)
        row = conn.execute(
            sa.select(installment_plan_periods).where(installment_plan_periods.c.id == int(period_id)).with_for_update()
        ).one()
        principal_left = max(row.principal - row.deducted, 0)
        to_principal = min(deduction.amount, principal_left)
        to_income = deduction.amount - to_principal
        legs = [(payment_postings.merchant_pending_request(merchant_ref, plan.currency), "debit", deduction.amount)]
        if to_principal:
            legs.append((_receivable(merchant_ref, plan.currency), "credit", to_principal))
        if to_income:
            legs.append((loans.interest_income_account(plan.currency), "credit", to_income))
        _move(conn, plan, "settlement", f"settlement:{batch_ref}:{deduction.ref}", legs, now)
        conn.execute(
            installment_plan_periods.update()
            .where(installment_plan_periods.c.id == row.id)
            .values(deducted=row.deducted + deduction.amount)
        )
