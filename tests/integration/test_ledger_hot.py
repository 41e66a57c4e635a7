"""Hot accounts: appended deltas, folded later, always read exactly."""

from __future__ import annotations

import pytest
from tests.ledger_helpers import account, bank, open_account, transfer

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import EntryRequest, Leg


def test_a_hot_account_is_read_exactly_before_and_after_folding(engine):
    source, fee = bank(engine), open_account(engine, "fee", hot=True)
    for i in range(5):
        transfer(engine, f"fee-{i}", source.ref, fee.ref, 10 + i)
    assert account(engine, fee.ref).balance.posted == 60
    folded = run_in_transaction(engine, lambda conn: ledger.fold_hot_accounts(conn))
    assert folded == 5
    assert account(engine, fee.ref).balance.posted == 60
    assert run_in_transaction(engine, lambda conn: ledger.fold_hot_accounts(conn)) == 0
    transfer(engine, "fee-late", source.ref, fee.ref, 1)
    assert account(engine, fee.ref).balance.posted == 61


def test_a_batch_appends_one_delta_per_hot_account(engine):
    source, fee = bank(engine), open_account(engine, "fee", hot=True)
    requests = [
        EntryRequest(f"k{i}", "fee", (Leg(source.ref, "debit", 1, "CNY"), Leg(fee.ref, "credit", 1, "CNY")))
        for i in range(50)
    ]
    run_in_transaction(engine, lambda conn: ledger.post_entries(conn, requests=requests))
    assert run_in_transaction(engine, lambda conn: ledger.fold_hot_accounts(conn)) == 1
    assert account(engine, fee.ref).balance.posted == 50


def test_a_hot_account_may_not_carry_a_balance_constraint(engine):
    with pytest.raises(ZhangfangError) as refused:
        open_account(engine, "hot-wallet", hot=True, debits_must_not_exceed_credits=True)
    assert refused.value.code == "account_flags_invalid"


def test_a_hot_account_can_be_debited_below_zero_because_nothing_guards_it(engine):
    source, fee = bank(engine), open_account(engine, "fee", hot=True)
    transfer(engine, "out", fee.ref, source.ref, 5)
    assert account(engine, fee.ref).balance.posted == -5


def test_folders_running_at_once_fold_every_delta_exactly_once(engine):
    import threading

    source, fee = bank(engine), open_account(engine, "fee", hot=True)
    for i in range(40):
        transfer(engine, f"fee-{i}", source.ref, fee.ref, 1)
    folded: list[int] = []

    def fold() -> None:
        folded.append(run_in_transaction(engine, lambda conn: ledger.fold_hot_accounts(conn)))

    threads = [threading.Thread(target=fold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(folded) == 40
    assert account(engine, fee.ref).balance.posted == 40
