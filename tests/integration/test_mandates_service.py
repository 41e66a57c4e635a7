"""Withholding mandates on SQLite and PostgreSQL, without HTTP: signing, limits, debits, retries, revocation.

The bank is the ``bank_direct`` ICBC-like simulator of the sandbox (real
signed HTTP on loopback); the payer's phone is the sandbox SMS gateway. Time is
passed explicitly (``now``), so retries a day apart run in milliseconds.
Every refusal is checked twice: its stable code, and that the database holds
exactly the rows it held before.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from tests.mandates_env import (
    ACCOUNT,
    CHANNEL,
    DAY,
    LIMITS,
    NOTIFY_URL,
    NOW,
    PHONE,
    SETTINGS,
    tx,
)
from tests.mandates_env import MandatesEnv as Env
from tests.snapshots import snapshot

from zhangfang.config import Settings
from zhangfang.errors import ZhangfangError
from zhangfang.jobs.tables import jobs
from zhangfang.mandates import batch, flows, service
from zhangfang.mandates.models import (
    DEBIT_STATES,
    DEBIT_TRANSITIONS,
    MANDATE_STATES,
    MANDATE_TRANSITIONS,
    Debit,
    Limits,
    Mandate,
    MandateRequest,
)
from zhangfang.mandates.tables import mandate_debits
from zhangfang.parties.models import Merchant
from zhangfang.payments import postings
from zhangfang.payments import service as payments

_numbers = itertools.count(1_000)


def refusal_code(engine: Engine, work: Callable[[Connection], Any]) -> str:
    """The code ``work`` is refused with (``"accepted"`` if it is not), after checking it changed nothing."""
    before = snapshot(engine)
    try:
        tx(engine, work)
    except ZhangfangError as error:
        assert snapshot(engine) == before, f"{error.code} changed the database"
        return error.code
    return "accepted"


@pytest.fixture
def env(mandates_env: Env) -> Env:
    return mandates_env


# --------------------------------------------------------------------------- state machines


def test_the_state_machines_have_exactly_the_documented_arrows() -> None:
    assert set(MANDATE_TRANSITIONS) == set(MANDATE_STATES)
    assert set(DEBIT_TRANSITIONS) == set(DEBIT_STATES)
    finals = {state for state, targets in MANDATE_TRANSITIONS.items() if not targets}
    assert finals == {"revoked", "expired", "failed"}
    assert MANDATE_TRANSITIONS["active"] == {"suspended", "revoked", "expired"}
    assert MANDATE_TRANSITIONS["suspended"] == {"active", "revoked", "expired"}
    assert MANDATE_TRANSITIONS["pending_authorization"] == {"active", "failed", "expired", "revoked"}
    assert {state for state, targets in DEBIT_TRANSITIONS.items() if not targets} == {"succeeded", "failed"}
    assert DEBIT_TRANSITIONS["processing"] == {"succeeded", "failed", "retrying"}


def change(env: Env, mandate: Mandate, action: str) -> str:
    def work(conn: Connection) -> Any:
        if action == "suspend":
            return service.suspend_mandate(conn, ref=mandate.ref, settings=SETTINGS, now=NOW)
        if action == "resume":
            return service.resume_mandate(conn, ref=mandate.ref, now=NOW)
        return service.revoke_mandate(conn, ref=mandate.ref, by="merchant", settings=SETTINGS, now=NOW)

    return refusal_code(env.engine, work)


def test_every_change_of_a_mandate_follows_the_state_machine(env: Env) -> None:
    shop = env.merchant()
    pending = env.request(shop)
    assert change(env, pending, "suspend") == "mandate_transition_not_allowed"
    assert change(env, pending, "resume") == "mandate_transition_not_allowed"
    assert change(env, pending, "revoke") == "accepted"
    assert env.mandate(pending).state == "revoked"
    for action in ("suspend", "resume"):
        assert change(env, pending, action) == "mandate_transition_not_allowed"
    assert change(env, pending, "revoke") == "accepted"  # revoking a revoked mandate returns it unchanged

    active = env.active(shop)
    assert change(env, active, "resume") == "accepted" and env.mandate(active).state == "active"
    assert change(env, active, "suspend") == "accepted" and env.mandate(active).state == "suspended"
    assert change(env, active, "suspend") == "accepted" and env.mandate(active).state == "suspended"
    assert change(env, active, "resume") == "accepted" and env.mandate(active).state == "active"
    assert change(env, active, "revoke") == "accepted" and env.mandate(active).state == "revoked"
    assert env.events("mandate.") == [
        "mandate.revoked",
        "mandate.activated",
        "mandate.suspended",
        "mandate.reinstated",
        "mandate.revoked",
    ]


# --------------------------------------------------------------------------- signing


def test_the_code_texted_to_the_payer_activates_the_mandate_with_the_banks_agreement(env: Env) -> None:
    shop = env.merchant()
    mandate = env.request(shop)
    assert mandate.state == "pending_authorization" and mandate.agreement_no is None
    [message] = env.gateway.messages(PHONE)
    assert message.code is not None and "商户 shop" in message.text and "2233" in message.text
    with env.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT salt, code_hash FROM mandate_codes")).all()
    assert len(stored) == 1 and message.code not in stored[0].code_hash  # only a salted hash is kept

    active = env.confirm(mandate)
    assert active.state == "active" and active.agreement_no is not None
    agreement = next(a for a in env.bank.agreements() if a["out_sign_no"] == mandate.ref)
    assert agreement == {
        "out_sign_no": mandate.ref,
        "agreement_no": active.agreement_no,
        "state": "active",
        "account": "****2233",
    }
    # Confirming again (a lost answer) returns the mandate as it is.
    assert env.confirm(mandate, code="000000").agreement_no == active.agreement_no


def test_a_wrong_code_is_counted_and_too_many_spend_it(env: Env) -> None:
    mandate = env.request(env.merchant())
    right = env.gateway.last_code(PHONE)
    wrong = "111111" if right != "111111" else "222222"
    with pytest.raises(ZhangfangError) as first:
        env.confirm(mandate, wrong)
    assert first.value.code == "authorization_code_wrong" and first.value.details["attempts_left"] == 2
    with pytest.raises(ZhangfangError) as malformed:
        env.confirm(mandate, "12ab")
    assert malformed.value.code == "authorization_code_format_invalid"
    with pytest.raises(ZhangfangError):
        env.confirm(mandate, wrong)
    with pytest.raises(ZhangfangError) as third:
        env.confirm(mandate, wrong)
    assert third.value.code == "authorization_code_attempts_exceeded"
    with pytest.raises(ZhangfangError) as spent:
        env.confirm(mandate, right)
    assert spent.value.code == "authorization_code_missing"
    assert env.mandate(mandate).state == "pending_authorization"

    # A new code works; the old one does not any more.
    flows.resend_code(env.engine, ref=mandate.ref, merchant_id=mandate.merchant_id, settings=SETTINGS, now=NOW)
    fresh = env.gateway.last_code(PHONE)
    assert fresh is not None
    assert env.confirm(mandate, fresh).state == "active"


def test_an_expired_code_is_refused_and_a_new_one_supersedes_the_old(env: Env) -> None:
    mandate = env.request(env.merchant())
    first = env.gateway.last_code(PHONE)
    late = NOW + dt.timedelta(seconds=SETTINGS.mandate_code_seconds)
    with pytest.raises(ZhangfangError) as expired:
        env.confirm(mandate, first, now=late)
    assert expired.value.code == "authorization_code_expired"
    flows.resend_code(env.engine, ref=mandate.ref, merchant_id=mandate.merchant_id, settings=SETTINGS, now=late)
    second = env.gateway.last_code(PHONE)
    if second != first:
        with pytest.raises(ZhangfangError) as superseded:
            env.confirm(mandate, first, now=late)
        assert superseded.value.code == "authorization_code_wrong"
    assert env.confirm(mandate, second, now=late).state == "active"


def test_a_mandate_not_authorized_in_time_expires(env: Env) -> None:
    mandate = env.request(env.merchant())
    later = NOW + dt.timedelta(seconds=service.AUTHORIZATION_SECONDS)
    with pytest.raises(ZhangfangError) as refused:
        env.confirm(mandate, now=later)
    assert refused.value.code == "mandate_not_pending"
    assert tx(env.engine, lambda conn: service.expire_due_mandates(conn, settings=SETTINGS, now=later)) == 1
    assert env.mandate(mandate).state == "expired"


def test_the_bank_refusing_to_sign_fails_the_mandate(env: Env) -> None:
    mandate = env.confirm(env.request(env.merchant(), account_number="6222020200110000"))
    assert mandate.state == "failed" and mandate.failure_code == "account_closed"
    assert env.events("mandate.") == ["mandate.failed"]


def test_requests_breaking_a_rule_are_refused_and_change_nothing(env: Env) -> None:
    shop = env.merchant()
    user = env.user(shop)
    gambling = env.merchant("casino", mcc="7995")
    good = {
        "out_mandate_no": "R1",
        "user": user,
        "account_number": ACCOUNT,
        "account_name": "张三",
        "phone": PHONE,
        "limits": LIMITS,
    }

    def code(merchant: Merchant = shop, **changes: Any) -> str:
        request = MandateRequest(**{**good, **changes})
        return refusal_code(
            env.engine,
            lambda conn: service.create_mandate(
                conn, merchant=merchant, request=request, registry=env.registry, settings=SETTINGS, now=NOW
            ),
        )

    assert code(out_mandate_no="bad no") == "out_mandate_no_invalid"
    assert code(account_number="12ab") == "mandate_account_invalid"
    assert code(phone="12345") == "mandate_phone_invalid"
    assert code(limits=Limits(per_debit=0, per_day=1)) == "mandate_limits_invalid"
    assert code(limits=Limits(per_debit=100, per_day=50)) == "mandate_limits_invalid"
    assert code(limits=Limits(per_debit=SETTINGS.mandate_debit_amount_max + 1, per_day=10**9)) == (
        "mandate_limits_invalid"
    )
    assert code(expires_at=NOW - DAY) == "mandate_expires_at_invalid"
    assert code(notify_url="ftp://x") == "mandate_url_invalid"
    assert code(channel="alipay") == "mandate_channel_unavailable"
    assert code(gambling, user=env.user(gambling)) == "mandate_industry_restricted"
    assert code(user="usr_01JAAAAAAAAAAAAAAAAAAAAAAA") == "user_not_found"
    assert code() == "accepted"
    assert code(description="other") == "out_mandate_no_conflict"


# --------------------------------------------------------------------------- debits: who and how much


def test_no_debit_without_an_active_mandate_of_that_merchant(env: Env) -> None:
    shop, other = env.merchant("shop"), env.merchant("other")
    mandate = env.active(shop)
    # The same person is a user of the other merchant too, with the same card; it has no mandate.
    env.user(other, "payer-1")

    def debit(merchant: Merchant, ref: str) -> str:
        return refusal_code(
            env.engine,
            lambda conn: service.create_debit(
                conn, merchant_id=merchant.id, mandate_ref=ref, amount=100, currency="CNY", key="K1", now=NOW
            ),
        )

    assert debit(other, mandate.ref) == "mandate_not_found"
    pending = env.request(shop)
    assert debit(shop, pending.ref) == "mandate_not_active"
    assert debit(shop, mandate.ref) == "accepted"


def debit_code(env: Env, mandate: Mandate, amount: int, **changes: Any) -> str:
    fields: dict[str, Any] = {"key": f"D{next(_numbers)}", "currency": "CNY", "now": NOW, **changes}
    return refusal_code(
        env.engine,
        lambda conn: service.create_debit(
            conn, merchant_id=mandate.merchant_id, mandate_ref=mandate.ref, amount=amount, **fields
        ),
    )


def test_limits_per_debit_day_month_and_total_hold_and_failed_debits_do_not_count(env: Env) -> None:
    mandate = env.active(env.merchant())
    today = service.business_date(NOW)
    assert debit_code(env, mandate, 50_001) == "amount_exceeds_debit_limit"
    assert debit_code(env, mandate, 50_000) == "accepted"
    assert debit_code(env, mandate, 30_001) == "daily_limit_exceeded"
    assert debit_code(env, mandate, 30_000) == "accepted"  # 80,000 today: the daily limit exactly
    # Next month: 4 x 50,000 reach its monthly 200,000; the month after, 20,000 reaches the total 300,000.
    next_month = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    month_after = (next_month + dt.timedelta(days=32)).replace(day=1)
    for day in range(1, 5):
        assert debit_code(env, mandate, 50_000, due_date=next_month.replace(day=day)) == "accepted"
    assert debit_code(env, mandate, 1, due_date=next_month.replace(day=5)) == "monthly_limit_exceeded"
    assert debit_code(env, mandate, 20_001, due_date=month_after) == "total_limit_exceeded"
    assert debit_code(env, mandate, 20_000, due_date=month_after) == "accepted"
    assert debit_code(env, mandate, 1, due_date=month_after.replace(day=2)) == "total_limit_exceeded"
    # A failed debit gives its room back.
    with env.engine.begin() as conn:
        first = conn.execute(sa.select(mandate_debits.c.ref).order_by(mandate_debits.c.id)).first()
    env.bank.withhold_next("account_closed")
    assert env.run(tx(env.engine, lambda conn: service.get_debit(conn, ref=first.ref))) == "failed"
    assert debit_code(env, mandate, 1, due_date=month_after.replace(day=2)) == "accepted"


def test_platform_caps_and_restricted_industries_apply_to_every_debit(env: Env) -> None:
    mandate = env.active(env.merchant())
    strict = Settings(mandate_debit_amount_max=1_000, mandate_daily_amount_max=1_500, mandate_restricted_mccs="5812")

    def code(amount: int, settings: Settings) -> str:
        return refusal_code(
            env.engine,
            lambda conn: service.request_debit(
                conn,
                merchant_id=mandate.merchant_id,
                mandate_ref=mandate.ref,
                amount=amount,
                currency="CNY",
                key=f"P{next(_numbers)}",
                settings=settings,
                now=NOW,
            ),
        )

    assert code(1_001, strict.model_copy(update={"mandate_restricted_mccs": ""})) == "amount_exceeds_debit_limit"
    assert code(1_000, strict.model_copy(update={"mandate_restricted_mccs": ""})) == "accepted"
    assert code(600, strict.model_copy(update={"mandate_restricted_mccs": ""})) == "daily_limit_exceeded"
    assert code(100, strict) == "mandate_industry_restricted"


def test_bad_debit_requests_are_refused_and_change_nothing(env: Env) -> None:
    mandate = env.active(env.merchant())
    today = service.business_date(NOW)
    assert debit_code(env, mandate, 100, key="") == "debit_key_invalid"
    assert debit_code(env, mandate, 0) == "amount_must_be_positive"
    assert debit_code(env, mandate, 1.5) == "amount_must_be_integer"
    assert debit_code(env, mandate, 100, currency="XYZ") == "currency_unknown"
    assert debit_code(env, mandate, 100, currency="USD") == "currency_mismatch"
    assert debit_code(env, mandate, 100, due_date=today - DAY) == "due_date_invalid"
    assert debit_code(env, mandate, 100, purpose="Loan!") == "debit_purpose_invalid"
    assert debit_code(env, mandate, 100, key="same") == "accepted"
    assert debit_code(env, mandate, 100, key="same") == "accepted"  # a replay
    assert debit_code(env, mandate, 200, key="same") == "debit_key_conflict"


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_concurrent_debits_never_exceed_the_daily_limit(env: Env) -> None:
    mandate = env.active(env.merchant())
    results: list[str] = []
    barrier = threading.Barrier(8)

    def one(n: int) -> None:
        barrier.wait()
        try:
            env.debit(mandate, 20_000, key=f"C{n}")
            results.append("accepted")
        except ZhangfangError as error:
            results.append(error.code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["accepted"] * 4 + ["daily_limit_exceeded"] * 4
    with env.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.sum(mandate_debits.c.amount))).scalar_one()
    assert int(total) == LIMITS.per_day


# --------------------------------------------------------------------------- debits at the bank


def test_a_debit_is_a_paid_order_booked_like_any_payment(env: Env) -> None:
    shop = env.merchant()
    mandate = env.active(shop)
    debit = env.debit(mandate, 12_345, purpose="installment", purpose_ref="plan-1")
    assert env.run(debit) == "succeeded"
    done = env.get(debit)
    assert done.tries == 1 and done.failure_class is None and done.finished_at is not None
    order = env.order(debit)
    assert order.state == "succeeded" and order.amount == 12_345 and order.channel == CHANNEL
    assert order.method == "withhold" and order.fee == 74  # 0.6 %, half up
    fee = order.fee
    assert env.balance(postings.merchant_pending_request(shop.ref, "CNY").key) == 12_345 - fee
    assert env.balance(postings.channel_clearing_request(CHANNEL, "CNY").key) == 12_345
    env.books_balance()
    # The bank's bill lists it, under our attempt's ref, as reconciliation expects.
    rows = env.bank.bill_rows(service.business_date(done.finished_at))
    assert [row.amount_minor for row in rows if row.out_trade_no == order.attempt_ref] == [12_345]
    assert env.events("debit.") == ["debit.succeeded"]
    # A second run changes nothing.
    assert env.run(debit) == "succeeded"


def test_a_soft_failure_is_retried_on_the_schedule_then_succeeds(env: Env) -> None:
    shop = env.merchant()
    debit = env.debit(env.active(shop), 5_000)
    env.bank.withhold_next("insufficient_funds")
    assert env.run(debit) == "retrying"
    waiting = env.get(debit)
    assert waiting.failure_class == "soft" and waiting.failure_code == "insufficient_funds"
    assert waiting.next_try_at == NOW + DAY
    with env.engine.connect() as conn:
        scheduled = conn.execute(sa.select(jobs.c.run_at).where(jobs.c.dedupe_key == f"{debit.ref}:try:2")).one()
    assert scheduled.run_at == NOW + DAY
    assert env.run(debit, NOW + DAY / 2) == "not_due"
    assert env.run(debit, NOW + DAY) == "succeeded"
    done = env.get(debit)
    assert done.tries == 2 and done.failure_code is None
    order = env.order(debit)
    attempts = tx(env.engine, lambda conn: payments.list_attempts(conn, order=order))
    assert [attempt.state for attempt in attempts] == ["failed", "succeeded"]
    assert env.events("debit.") == ["debit.retrying", "debit.succeeded"]
    env.books_balance()


def test_soft_failures_end_when_the_schedule_is_spent(env: Env) -> None:
    debit = env.debit(env.active(env.merchant()), 5_000)
    env.bank.withhold_next("insufficient_funds", "insufficient_funds", "insufficient_funds")
    assert env.run(debit) == "retrying"
    assert env.run(debit, NOW + DAY) == "retrying"
    assert env.run(debit, NOW + 3 * DAY) == "failed"
    failed = env.get(debit)
    assert (failed.failure_class, failed.failure_code, failed.tries) == ("soft", "insufficient_funds", 3)
    assert env.order(debit).state == "closed"
    assert env.events("debit.") == ["debit.retrying", "debit.retrying", "debit.failed"]


@pytest.mark.parametrize("outcome", ["account_closed", "agreement_invalid"])
def test_a_hard_failure_is_not_retried(env: Env, outcome: str) -> None:
    debit = env.debit(env.active(env.merchant()), 5_000)
    env.bank.withhold_next(outcome)
    assert env.run(debit) == "failed"
    failed = env.get(debit)
    assert (failed.failure_class, failed.failure_code, failed.next_try_at) == ("hard", outcome, None)
    with env.engine.connect() as conn:
        tries = conn.execute(sa.select(jobs.c.dedupe_key).where(jobs.c.dedupe_key.like(f"{debit.ref}:try:%"))).all()
    assert [row.dedupe_key for row in tries] == [f"{debit.ref}:try:1"]
    assert env.order(debit).state == "closed"


def test_an_unanswered_debit_is_asked_again_with_the_same_number_and_booked_once(env: Env) -> None:
    shop = env.merchant()
    debit = env.debit(env.active(shop), 7_000)
    env.bank.withhold_next("timeout_after_debit")
    assert env.run(debit) == "retrying"
    lost = env.get(debit)
    assert lost.failure_code == "channel_timeout" and lost.attempt_unknown
    assert env.run(debit, NOW + DAY) == "succeeded"
    done = env.get(debit)
    assert done.attempt_ref == lost.attempt_ref  # the same out_trade_no: the bank answered the debit it made
    assert (
        len([row for row in env.bank.bill_rows(service.business_date(NOW)) if row.out_trade_no == done.attempt_ref])
        == 1
    )
    order = env.order(debit)
    assert env.balance(postings.merchant_pending_request(shop.ref, "CNY").key) == 7_000 - order.fee


def test_revoking_fails_pending_and_retrying_debits_and_refuses_new_ones(env: Env) -> None:
    mandate = env.active(env.merchant())
    due_later = env.debit(mandate, 1_000, due_date=service.business_date(NOW) + DAY)
    retrying = env.debit(mandate, 2_000)
    env.bank.withhold_next("insufficient_funds")
    assert env.run(retrying) == "retrying"
    done = env.debit(mandate, 3_000)
    assert env.run(done) == "succeeded"
    tx(env.engine, lambda conn: service.revoke_mandate(conn, ref=mandate.ref, by="user", reason="不再使用", now=NOW))
    for debit in (due_later, retrying):
        failed = env.get(debit)
        assert (failed.state, failed.failure_class, failed.failure_code) == ("failed", "hard", "mandate_revoked")
    assert env.get(done).state == "succeeded"
    assert env.order(retrying).state == "closed"
    assert debit_code(env, mandate, 100) == "mandate_not_active"
    assert env.run(due_later, NOW + DAY) == "failed"  # its job finds it failed: no bank call
    revoked = env.mandate(mandate)
    assert (revoked.state, revoked.revoked_by, revoked.end_reason) == ("revoked", "user", "不再使用")
    # The bank cancels the agreement (the unsign job).
    from zhangfang.jobs import queue

    queue.run_once(env.engine, worker_id="test", kinds=[service.JOB_UNSIGN, service.JOB_DEBIT], limit=50)
    assert next(a for a in env.bank.agreements() if a["out_sign_no"] == mandate.ref)["state"] == "cancelled"


def test_listeners_of_a_purpose_learn_each_final_outcome_once(env: Env) -> None:
    mandate = env.active(env.merchant())
    heard: list[tuple[str, str, str | None]] = []

    def listener(conn: Connection, debit: Debit) -> None:
        heard.append((debit.ref, debit.state, debit.failure_code))

    service.register_debit_listener("listener_test", listener)
    try:
        good = env.debit(mandate, 1_000, purpose="listener_test", purpose_ref="L1")
        bad = env.debit(mandate, 1_000, purpose="listener_test", purpose_ref="L2")
        other = env.debit(mandate, 1_000, purpose="installment")
        env.run(good)
        env.bank.withhold_next("insufficient_funds")
        env.run(bad)
        env.run(other)
        env.bank.withhold_next("account_closed")
        env.run(bad, NOW + DAY)
        env.run(good)
    finally:
        service.unregister_debit_listener("listener_test", listener)
    assert heard == [(good.ref, "succeeded", None), (bad.ref, "failed", "account_closed")]


# --------------------------------------------------------------------------- batch files


def batch_file(number: str, *rows: tuple[Any, ...]) -> str:
    lines = ["merchant_batch_no,row_no,mandate,amount,due_date,reference"]
    lines += [",".join(str(cell) for cell in (number, *row)) for row in rows]
    return "\n".join(lines) + "\n"


def test_a_batch_file_with_any_bad_row_is_refused_as_a_whole(env: Env) -> None:
    shop, other = env.merchant("shop"), env.merchant("other")
    mine, theirs = env.active(shop), env.active(other)
    today = service.business_date(NOW).isoformat()
    content = batch_file(
        "B1",
        (1, mine.ref, "12.34", today, "ok"),
        (2, mine.ref, "12.345", today, "too precise"),
        (2, theirs.ref, "1.00", today, "duplicate row and another merchant's mandate"),
        (4, mine.ref, "1.00", "2020-01-01", "past"),
        (5, "nope", "-1", today, ""),
    )
    before = snapshot(env.engine)
    with pytest.raises(ZhangfangError) as refused:
        tx(env.engine, lambda conn: batch.upload(conn, merchant=shop, content=content, settings=SETTINGS, now=NOW))
    assert snapshot(env.engine) == before
    assert refused.value.code == "batch_file_invalid"
    found = {(problem["line"], problem["code"]) for problem in refused.value.details["errors"]}
    assert found == {
        (3, "amount_invalid"),
        (4, "row_no_duplicate"),
        (4, "mandate_not_found"),
        (5, "due_date_invalid"),
        (6, "mandate_invalid"),
        (6, "amount_invalid"),
    }
    with pytest.raises(ZhangfangError) as no_header:
        tx(env.engine, lambda conn: batch.upload(conn, merchant=shop, content="a,b\n", now=NOW))
    assert no_header.value.details["errors"][0]["code"] == "header_invalid"


def test_a_batch_runs_row_by_row_and_reports_each_row(env: Env) -> None:
    shop = env.merchant()
    mandate = env.active(shop)
    revoked = env.active(shop)
    tx(env.engine, lambda conn: service.revoke_mandate(conn, ref=revoked.ref, by="merchant", now=NOW))
    today = service.business_date(NOW).isoformat()
    content = batch_file(
        "B2",
        (1, mandate.ref, "100.00", today, "INV-1"),
        (2, mandate.ref, "600.00", today, "over the per-debit limit"),
        (3, revoked.ref, "1.00", today, "revoked"),
        (4, mandate.ref, "50.00", today, "INV-4"),
    )
    result = tx(
        env.engine,
        lambda conn: batch.upload(
            conn, merchant=shop, content=content, notify_url=NOTIFY_URL, settings=SETTINGS, now=NOW
        ),
    )
    assert result.created and result.batch.row_count == 4 and result.batch.amount_total == 75_100
    again = tx(
        env.engine, lambda conn: batch.upload(conn, merchant=shop, content=content, notify_url=NOTIFY_URL, now=NOW)
    )
    assert not again.created and again.batch.ref == result.batch.ref
    changed = content.replace("INV-4", "INV-5")
    with pytest.raises(ZhangfangError) as conflict:
        tx(env.engine, lambda conn: batch.upload(conn, merchant=shop, content=changed, notify_url=NOTIFY_URL, now=NOW))
    assert conflict.value.code == "merchant_batch_no_conflict"

    batch.submit_rows(env.engine, batch_ref=result.batch.ref, settings=SETTINGS, now=NOW)
    env.bank.withhold_next("success", "insufficient_funds")
    with env.engine.connect() as conn:
        refs = [row.ref for row in conn.execute(sa.select(mandate_debits.c.ref).order_by(mandate_debits.c.id))]
    for ref in refs:
        flows.execute_debit(env.engine, ref=ref, registry=env.registry, settings=SETTINGS, now=NOW)
    text = tx(env.engine, lambda conn: batch.results_csv(conn, ref=result.batch.ref, merchant_id=shop.id))
    lines = [line.split(",") for line in text.strip().split("\n")]
    assert lines[0] == list(batch.RESULT_HEADER)
    states = [(line[1], line[6], line[7], line[8]) for line in lines[1:]]
    assert states == [
        ("1", "succeeded", "", ""),
        ("2", "failed", "hard", "amount_exceeds_debit_limit"),
        ("3", "failed", "hard", "mandate_not_active"),
        ("4", "retrying", "soft", "insufficient_funds"),
    ]
    assert lines[1][9].startswith("dbt_") and lines[2][9] == ""
    assert "debit_batch.finished" not in env.events()
    flows.execute_debit(env.engine, ref=refs[-1], registry=env.registry, settings=SETTINGS, now=NOW + DAY)
    finished = tx(env.engine, lambda conn: batch.get_batch(conn, ref=result.batch.ref))
    assert finished.state == "finished" and finished.counts["succeeded"] == 2 and finished.counts["failed"] == 2
    assert env.events().count("debit_batch.finished") == 1
