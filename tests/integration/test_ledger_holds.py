"""Holds (冻结): reserve now, then post all or part, void, or expire — exactly one of these."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.ledger_helpers import account, available, bank, snapshot, transfer, wallet

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def funded(engine):
    source, alice, shop = bank(engine), wallet(engine, "alice"), wallet(engine, "shop")
    transfer(engine, "topup", source.ref, alice.ref, 1_000)
    return alice, shop


def hold(engine, alice, shop, amount=400, key="h1", expires_at=None, now=None):
    return run_in_transaction(
        engine,
        lambda conn: ledger.create_hold(
            conn,
            idempotency_key=key,
            debit_account=alice.ref,
            credit_account=shop.ref,
            amount=amount,
            currency="CNY",
            business_code="payment",
            expires_at=expires_at,
            now=now,
        ),
    )


def test_a_hold_reserves_funds_without_moving_them(engine, funded):
    alice, shop = funded
    created = hold(engine, alice, shop)
    assert created.hold.state == "pending"
    balance = account(engine, alice.ref).balance
    assert (balance.posted, balance.pending_out, balance.available) == (1_000, 400, 600)
    assert account(engine, shop.ref).balance.pending_in == 400
    assert account(engine, shop.ref).balance.available == 0


def test_a_hold_beyond_the_available_balance_is_refused(engine, funded):
    alice, shop = funded
    hold(engine, alice, shop, amount=700)
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        hold(engine, alice, shop, amount=301, key="h2")
    assert refused.value.code == "debits_exceed_credits"
    assert snapshot(engine) == before


def test_posting_part_of_a_hold_moves_that_part_and_releases_the_rest(engine, funded):
    alice, shop = funded
    created = hold(engine, alice, shop)
    posted = run_in_transaction(
        engine, lambda conn: ledger.post_hold(conn, ref=created.hold.ref, idempotency_key="p1", amount=250)
    )
    assert (posted.hold.state, posted.hold.posted_amount) == ("posted", 250)
    assert posted.entry.kind == "hold_post" and posted.entry.hold == created.hold.ref
    assert available(engine, alice.ref) == 750
    assert available(engine, shop.ref) == 250
    assert account(engine, alice.ref).balance.pending_out == 0
    replay = run_in_transaction(
        engine, lambda conn: ledger.post_hold(conn, ref=created.hold.ref, idempotency_key="p1", amount=250)
    )
    assert replay.replayed and replay.entry.ref == posted.entry.ref


def test_voiding_a_hold_releases_everything(engine, funded):
    alice, shop = funded
    created = hold(engine, alice, shop)
    voided = run_in_transaction(engine, lambda conn: ledger.void_hold(conn, ref=created.hold.ref, idempotency_key="v"))
    assert voided.hold.state == "voided"
    assert available(engine, alice.ref) == 1_000
    assert account(engine, shop.ref).balance.pending_in == 0


def test_a_resolved_hold_cannot_be_resolved_again(engine, funded):
    alice, shop = funded
    created = hold(engine, alice, shop)
    run_in_transaction(engine, lambda conn: ledger.void_hold(conn, ref=created.hold.ref, idempotency_key="v"))
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        run_in_transaction(engine, lambda conn: ledger.post_hold(conn, ref=created.hold.ref, idempotency_key="p"))
    assert refused.value.code == "hold_already_resolved"
    assert snapshot(engine) == before


def test_posting_more_than_the_hold_is_refused(engine, funded):
    alice, shop = funded
    created = hold(engine, alice, shop)
    with pytest.raises(ZhangfangError) as refused:
        run_in_transaction(
            engine, lambda conn: ledger.post_hold(conn, ref=created.hold.ref, idempotency_key="p", amount=401)
        )
    assert refused.value.code == "hold_post_amount_exceeds_hold"


def test_an_expired_hold_cannot_be_posted_and_the_expiry_job_releases_it(engine, funded):
    alice, shop = funded
    created = hold(engine, alice, shop, expires_at=NOW + dt.timedelta(minutes=5), now=NOW)
    later = NOW + dt.timedelta(minutes=6)
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        run_in_transaction(
            engine, lambda conn: ledger.post_hold(conn, ref=created.hold.ref, idempotency_key="p", now=later)
        )
    assert refused.value.code == "hold_expired"
    assert snapshot(engine) == before
    assert run_in_transaction(engine, lambda conn: ledger.expire_holds(conn, now=NOW)) == 0
    assert run_in_transaction(engine, lambda conn: ledger.expire_holds(conn, now=later)) == 1
    assert run_in_transaction(engine, lambda conn: ledger.expire_holds(conn, now=later)) == 0
    assert run_in_transaction(engine, lambda conn: ledger.get_hold(conn, ref=created.hold.ref)).state == "expired"
    assert available(engine, alice.ref) == 1_000
    with pytest.raises(ZhangfangError) as after:
        run_in_transaction(engine, lambda conn: ledger.void_hold(conn, ref=created.hold.ref, idempotency_key="v"))
    assert after.value.code == "hold_expired"


def test_a_hold_needs_a_future_expiry_and_two_different_accounts(engine, funded):
    alice, shop = funded
    with pytest.raises(ZhangfangError) as past:
        hold(engine, alice, shop, expires_at=NOW - dt.timedelta(seconds=1), now=NOW)
    assert past.value.code == "hold_expiry_in_past"
    with pytest.raises(ZhangfangError) as same:
        hold(engine, alice, alice)
    assert same.value.code == "hold_accounts_must_differ"


def test_creating_a_hold_twice_with_the_same_key_returns_the_same_hold(engine, funded):
    alice, shop = funded
    first = hold(engine, alice, shop)
    again = hold(engine, alice, shop)
    assert again.replayed and again.hold.ref == first.hold.ref
    assert available(engine, alice.ref) == 600
    with pytest.raises(ZhangfangError) as refused:
        hold(engine, alice, shop, amount=1)
    assert refused.value.code == "idempotency_key_conflict"
