"""Periodic jobs: a round seals, folds, expires holds, closes past days, hands expired payments over and forgets
old nonces, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from zhangfang.accounting import service as accounting
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import periodic
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.ledger.tables import hot_account_deltas
from zhangfang.parties import service as parties
from zhangfang.parties.tables import request_nonces

SETTINGS = Settings(database_url="sqlite://", job_interval_seconds=0.01, transaction_age_max_seconds=5)


def open_account(engine, key: str, **flags) -> str:
    request = AccountRequest(key=key, ledger_code="test", currency="CNY", **flags)
    account, _ = run_in_transaction(engine, lambda conn: ledger.open_account(conn, request=request))
    return account.ref


def transfer(engine, key: str, debit: str, credit: str, amount: int) -> str:
    request = EntryRequest(
        idempotency_key=key,
        business_code="transfer",
        legs=(Leg(debit, "debit", amount, "CNY"), Leg(credit, "credit", amount, "CNY")),
    )
    return run_in_transaction(engine, lambda conn: ledger.post_entry(conn, request=request)).entry.ref


def open_date(engine) -> dt.date:
    return run_in_transaction(engine, lambda conn: ledger.open_date(conn), readonly=True)


def run_round(engine, **kwargs):
    """A round on the ledger's own open date, so no day closes unless a test asks for it."""
    kwargs.setdefault("today", open_date(engine))
    return periodic.run_round(engine, settings=SETTINGS, **kwargs)


def unsealed(engine) -> int:
    return run_in_transaction(engine, lambda conn: ledger.chain_status(conn), readonly=True).unsealed_count


@pytest.fixture
def bank_and_wallet(engine) -> tuple[str, str]:
    return open_account(engine, "bank", normal_side="debit"), open_account(
        engine, "wallet", debits_must_not_exceed_credits=True
    )


def test_a_round_with_nothing_to_do_does_nothing(engine):
    assert run_round(engine) == {
        "sealed": 0,
        "folded": 0,
        "expired": 0,
        "days_closed": 0,
        "days_booked": 0,
        "payments_expiring": 0,
        "nonces_pruned": 0,
        "settlements_synced": 0,
        "debits_requested": 0,
        "loans_accrued": 0,
        "mandates_expired": 0,
    }


def test_a_round_forgets_request_nonces_too_old_to_be_replayed(engine):
    now = dt.datetime.now(dt.UTC)
    retention = dt.timedelta(seconds=parties.NONCE_RETENTION_SECONDS)
    for nonce, seen in (
        ("old-nonce-0000000001", now - retention - dt.timedelta(seconds=1)),
        ("new-nonce-0000000001", now),
    ):
        run_in_transaction(
            engine,
            lambda conn, n=nonce, at=seen: parties.record_nonce(conn, app_id="app_0123456789abcdef", nonce=n, now=at),
        )
    assert run_round(engine, now=now)["nonces_pruned"] == 1
    kept = run_in_transaction(engine, lambda conn: conn.execute(sa.select(request_nonces.c.nonce)).scalars().all())
    assert kept == ["new-nonce-0000000001"]


def test_a_round_seals_every_entry_committed_so_far(engine, bank_and_wallet, monkeypatch):
    monkeypatch.setattr(periodic, "SEAL_BATCH_SIZE", 2)  # several batches: 2, 2, 1
    bank, wallet = bank_and_wallet
    for n in range(5):
        transfer(engine, f"t{n}", bank, wallet, 100)
    assert run_round(engine)["sealed"] == 5
    assert unsealed(engine) == 0
    report = run_in_transaction(engine, lambda conn: ledger.verify_chain(conn), readonly=True)
    assert report.ok and report.checked == 5
    assert run_round(engine)["sealed"] == 0


def test_a_round_folds_hot_accounts_without_changing_their_balance(engine, bank_and_wallet):
    bank, _wallet = bank_and_wallet
    fees = open_account(engine, "fees", hot=True)
    for n in range(3):
        transfer(engine, f"fee{n}", bank, fees, 6)
    assert run_round(engine)["folded"] == 3
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(hot_account_deltas)).scalar_one() == 0
    account = run_in_transaction(engine, lambda conn: ledger.get_account(conn, ref=fees), readonly=True)
    assert account.balance.posted == 18


def test_a_round_releases_holds_past_their_expiry(engine, bank_and_wallet):
    bank, wallet = bank_and_wallet
    transfer(engine, "topup", bank, wallet, 1000)
    now = dt.datetime.now(dt.UTC)
    hold = run_in_transaction(
        engine,
        lambda conn: ledger.create_hold(
            conn,
            idempotency_key="hold",
            debit_account=wallet,
            credit_account=bank,
            amount=400,
            currency="CNY",
            business_code="preauth",
            expires_at=now + dt.timedelta(minutes=10),
        ),
    ).hold
    assert run_round(engine, now=now)["expired"] == 0
    assert run_round(engine, now=now + dt.timedelta(minutes=11))["expired"] == 1
    state = run_in_transaction(engine, lambda conn: ledger.get_hold(conn, ref=hold.ref), readonly=True).state
    assert state == "expired"
    account = run_in_transaction(engine, lambda conn: ledger.get_account(conn, ref=wallet), readonly=True)
    assert account.balance.available == 1000


def test_a_round_closes_every_past_day_in_order(engine, bank_and_wallet):
    bank, wallet = bank_and_wallet
    first = open_date(engine)
    transfer(engine, "day1", bank, wallet, 100)
    counts = run_round(engine, today=first + dt.timedelta(days=2))
    assert counts["days_closed"] == 2
    assert counts["days_booked"] == 2  # accounting books each closed day in the same round
    booked = run_in_transaction(engine, lambda conn: accounting.list_synced_days(conn), readonly=True)
    # the test's "transfer" business code has no posting rule: reported, not dropped
    assert [(d.accounting_date, d.exception_count) for d in booked] == [(first + dt.timedelta(days=1), 0), (first, 1)]
    closes = run_in_transaction(engine, lambda conn: ledger.list_day_closes(conn), readonly=True)
    assert [(c.accounting_date, c.state, c.entry_count) for c in closes] == [
        (first + dt.timedelta(days=1), "closed", 0),
        (first, "closed", 1),
    ]
    assert closes[0].closed_at >= closes[1].closed_at
    assert open_date(engine) == first + dt.timedelta(days=2)
    assert run_round(engine, today=first + dt.timedelta(days=2))["days_closed"] == 0


def test_today_is_the_date_in_shanghai():
    just_after_midnight = dt.datetime(2025, 1, 31, 16, 30, tzinfo=dt.UTC)  # 00:30 on 1 February in Shanghai
    assert periodic.business_today(SETTINGS, just_after_midnight) == dt.date(2025, 2, 1)


def test_a_failing_job_does_not_stop_the_others_of_its_round(engine, bank_and_wallet, monkeypatch):
    bank, wallet = bank_and_wallet
    transfer(engine, "t1", bank, wallet, 100)

    def broken(_engine):
        raise RuntimeError("fold is broken")

    monkeypatch.setattr(periodic, "fold", broken)
    first = open_date(engine)
    with pytest.raises(ExceptionGroup) as raised:
        run_round(engine, today=first + dt.timedelta(days=1))
    assert [str(e) for e in raised.value.exceptions] == ["fold is broken"]
    assert unsealed(engine) == 0
    assert open_date(engine) == first + dt.timedelta(days=1)


def test_the_loop_keeps_going_after_a_failing_round_and_stops_when_asked(engine, monkeypatch):
    calls = []

    def flaky_round(_engine, **_kwargs):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("transient")
        return dict.fromkeys(periodic.JOB_NAMES, 0)

    monkeypatch.setattr(periodic, "run_round", flaky_round)
    thread, stop_event = periodic.start_in_thread(engine, SETTINGS)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop_event.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(calls) >= 3


def test_the_server_thread_seals_what_is_written(engine, bank_and_wallet):
    bank, wallet = bank_and_wallet
    thread, stop_event = periodic.start_in_thread(engine, SETTINGS)
    try:
        transfer(engine, "t1", bank, wallet, 100)
        deadline = time.monotonic() + 10
        while unsealed(engine) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert unsealed(engine) == 0
    finally:
        stop_event.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
