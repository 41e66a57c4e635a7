"""Day-end (日切): dates close in order, once; snapshots hold every account's closing balance."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.ledger_helpers import bank, open_account, transfer, wallet

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger


def open_date(engine) -> dt.date:
    return run_in_transaction(engine, ledger.open_date)


def close(engine, day):
    return ledger.close_day(engine, accounting_date=day, wait_seconds_max=10)


def test_closing_the_open_date_snapshots_balances_and_later_entries_carry_the_next_date(engine):
    source, alice, fee = bank(engine), wallet(engine, "alice"), open_account(engine, "fee", hot=True)
    day = open_date(engine)
    transfer(engine, "d1", source.ref, alice.ref, 1_000)
    transfer(engine, "d1-fee", source.ref, fee.ref, 7)
    closed = close(engine, day)
    assert (closed.state, closed.entry_count, closed.account_count) == ("closed", 2, 3)
    assert open_date(engine) == day + dt.timedelta(days=1)

    later = transfer(engine, "d2", source.ref, alice.ref, 500).entry
    assert later.accounting_date == day + dt.timedelta(days=1)
    close(engine, day + dt.timedelta(days=1))

    history = run_in_transaction(
        engine,
        lambda conn: ledger.balance_history(conn, ref=alice.ref, date_from=day, date_to=day + dt.timedelta(days=5)),
    )
    assert [(d, b.posted) for d, b in history] == [(day, 1_000), (day + dt.timedelta(days=1), 1_500)]
    fee_history = run_in_transaction(
        engine, lambda conn: ledger.balance_history(conn, ref=fee.ref, date_from=day, date_to=day)
    )
    assert fee_history[0][1].posted == 7


def test_closing_a_date_twice_returns_the_same_close(engine):
    day = open_date(engine)
    first = close(engine, day)
    again = close(engine, day)
    assert again == first
    assert open_date(engine) == day + dt.timedelta(days=1)


def test_dates_close_in_order_only(engine):
    day = open_date(engine)
    with pytest.raises(ZhangfangError) as ahead:
        close(engine, day + dt.timedelta(days=1))
    assert ahead.value.code == "day_end_out_of_order"
    with pytest.raises(ZhangfangError) as behind:
        close(engine, day - dt.timedelta(days=1))
    assert behind.value.code == "day_end_out_of_order"
    assert open_date(engine) == day


def test_pending_holds_are_part_of_the_snapshot(engine):
    source, alice, shop = bank(engine), wallet(engine, "alice"), wallet(engine, "shop")
    transfer(engine, "t", source.ref, alice.ref, 100)
    run_in_transaction(
        engine,
        lambda conn: ledger.create_hold(
            conn,
            idempotency_key="h",
            debit_account=alice.ref,
            credit_account=shop.ref,
            amount=30,
            currency="CNY",
            business_code="payment",
        ),
    )
    day = open_date(engine)
    close(engine, day)
    ((_, snapshot),) = run_in_transaction(
        engine, lambda conn: ledger.balance_history(conn, ref=alice.ref, date_from=day, date_to=day)
    )
    assert (snapshot.posted, snapshot.pending_out, snapshot.available) == (100, 30, 70)
