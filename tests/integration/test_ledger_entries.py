"""Journal entries: balanced, idempotent, immutable; refusals change nothing."""

from __future__ import annotations

import pytest
from tests.ledger_helpers import available, bank, open_account, snapshot, transfer, transfer_request, wallet

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import EntryRequest, Leg


def post(engine, request):
    return run_in_transaction(engine, lambda conn: ledger.post_entry(conn, request=request))


def test_a_transfer_moves_money_between_two_accounts(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    result = transfer(engine, "topup-1", source.ref, alice.ref, 10_000)
    assert not result.replayed
    assert [(p.account, p.side, p.amount) for p in result.entry.postings] == [
        (source.ref, "debit", 10_000),
        (alice.ref, "credit", 10_000),
    ]
    assert available(engine, alice.ref) == 10_000
    assert open_account(engine, "bank", normal_side="debit").balance.posted == 10_000


def test_an_entry_may_have_many_legs_balanced_per_currency(engine):
    source, merchant, fee = bank(engine), wallet(engine, "merchant"), open_account(engine, "fee", hot=True)
    request = EntryRequest(
        idempotency_key="pay-1",
        business_code="payment",
        legs=(
            Leg(source.ref, "debit", 10_000, "CNY"),
            Leg(merchant.ref, "credit", 9_940, "CNY"),
            Leg(fee.ref, "credit", 60, "CNY"),
        ),
        metadata={"order": "pay_1"},
    )
    entry = post(engine, request).entry
    assert entry.metadata == {"order": "pay_1"}
    assert available(engine, merchant.ref) == 9_940
    assert available(engine, fee.ref) == 60


def test_replaying_the_same_request_returns_the_first_entry_and_changes_nothing(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    first = transfer(engine, "topup-1", source.ref, alice.ref, 500)
    before = snapshot(engine)
    again = transfer(engine, "topup-1", source.ref, alice.ref, 500)
    assert again.replayed
    assert again.entry.ref == first.entry.ref
    assert snapshot(engine) == before


def test_the_same_key_with_a_different_request_is_a_conflict(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    transfer(engine, "topup-1", source.ref, alice.ref, 500)
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        transfer(engine, "topup-1", source.ref, alice.ref, 501)
    assert refused.value.code == "idempotency_key_conflict"
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("legs", "code"),
    [
        ((("alice", "debit", 100), ("bank", "credit", 99)), "entry_must_balance"),
        ((("alice", "debit", 0), ("bank", "credit", 0)), "amount_must_be_positive"),
        ((("alice", "debit", -5), ("bank", "credit", -5)), "amount_must_be_positive"),
        ((("alice", "debit", 1.5), ("bank", "credit", 1.5)), "amount_must_be_integer"),
        ((("alice", "debit", True), ("bank", "credit", True)), "amount_must_be_integer"),
        ((("alice", "sideways", 100), ("bank", "credit", 100)), "side_invalid"),
        ((("alice", "debit", 100),), "postings_too_few"),
        ((("nobody", "debit", 100), ("bank", "credit", 100)), "account_not_found"),
        ((("alice", "debit", 100_000), ("bank", "credit", 100_000)), "debits_exceed_credits"),
    ],
)
def test_bad_entries_get_a_stable_code_and_change_nothing(engine, legs, code):
    accounts = {"alice": wallet(engine, "alice").ref, "bank": bank(engine).ref, "nobody": "acc_nobody"}
    transfer(engine, "seed", accounts["bank"], accounts["alice"], 1_000)
    before = snapshot(engine)
    request = EntryRequest(
        idempotency_key="bad",
        business_code="transfer",
        legs=tuple(Leg(accounts[name], side, amount, "CNY") for name, side, amount in legs),
    )
    with pytest.raises(ZhangfangError) as refused:
        post(engine, request)
    assert refused.value.code == code
    assert snapshot(engine) == before


def test_a_currency_that_differs_from_the_account_is_refused(engine):
    usd, cny = open_account(engine, "usd", currency="USD"), open_account(engine, "cny")
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        transfer(engine, "fx", usd.ref, cny.ref, 100, currency="USD")
    assert refused.value.code == "account_currency_mismatch"
    with pytest.raises(ZhangfangError) as unknown:
        transfer(engine, "fx", usd.ref, cny.ref, 100, currency="XYZ")
    assert unknown.value.code == "currency_unknown"
    assert snapshot(engine) == before


def test_a_closed_account_takes_no_more_postings(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    run_in_transaction(engine, lambda conn: ledger.close_account(conn, ref=alice.ref))
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        transfer(engine, "late", source.ref, alice.ref, 100)
    assert refused.value.code == "account_closed"
    assert snapshot(engine) == before


def test_an_account_with_money_on_it_cannot_be_closed(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    transfer(engine, "topup", source.ref, alice.ref, 100)
    with pytest.raises(ZhangfangError) as refused:
        run_in_transaction(engine, lambda conn: ledger.close_account(conn, ref=alice.ref))
    assert refused.value.code == "account_balance_not_zero"


def test_reversing_an_entry_posts_its_mirror_once(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    original = transfer(engine, "topup", source.ref, alice.ref, 700).entry
    reversal = run_in_transaction(engine, lambda conn: ledger.reverse_entry(conn, ref=original.ref)).entry
    assert reversal.kind == "reversal" and reversal.reverses == original.ref
    assert [(p.account, p.side) for p in reversal.postings] == [(source.ref, "credit"), (alice.ref, "debit")]
    assert available(engine, alice.ref) == 0
    replay = run_in_transaction(engine, lambda conn: ledger.reverse_entry(conn, ref=original.ref))
    assert replay.replayed and replay.entry.ref == reversal.ref
    with pytest.raises(ZhangfangError) as twice:
        run_in_transaction(engine, lambda conn: ledger.reverse_entry(conn, ref=original.ref, idempotency_key="other"))
    assert twice.value.code == "entry_already_reversed"
    with pytest.raises(ZhangfangError) as of_reversal:
        run_in_transaction(engine, lambda conn: ledger.reverse_entry(conn, ref=reversal.ref))
    assert of_reversal.value.code == "entry_not_reversible"


def test_a_reversal_that_would_overdraw_is_refused(engine):
    source, alice, bob = bank(engine), wallet(engine, "alice"), wallet(engine, "bob")
    topup = transfer(engine, "topup", source.ref, alice.ref, 700).entry
    transfer(engine, "spend", alice.ref, bob.ref, 700)
    with pytest.raises(ZhangfangError) as refused:
        run_in_transaction(engine, lambda conn: ledger.reverse_entry(conn, ref=topup.ref))
    assert refused.value.code == "debits_exceed_credits"


def test_an_atomic_batch_is_all_or_nothing(engine):
    source, alice, bob = bank(engine), wallet(engine, "alice"), wallet(engine, "bob")
    requests = [
        transfer_request("b1", source.ref, alice.ref, 100),
        transfer_request("b2", alice.ref, bob.ref, 60),
        transfer_request("b3", alice.ref, bob.ref, 60),  # only 40 left: refused
    ]
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        run_in_transaction(engine, lambda conn: ledger.post_entries(conn, requests=requests, atomic=True))
    assert refused.value.code == "debits_exceed_credits"
    assert refused.value.details["index"] == 2
    assert snapshot(engine) == before


def test_a_non_atomic_batch_posts_what_fits_in_order_and_reports_the_rest(engine):
    source, alice, bob = bank(engine), wallet(engine, "alice"), wallet(engine, "bob")
    requests = [
        transfer_request("b1", source.ref, alice.ref, 100),
        transfer_request("b2", alice.ref, bob.ref, 60),
        transfer_request("b3", alice.ref, bob.ref, 60),
        transfer_request("b1", source.ref, alice.ref, 100),  # same key, same request: a replay of the first
        transfer_request("b4", bob.ref, alice.ref, 10),
        EntryRequest("b5", "transfer", (Leg(alice.ref, "debit", 5, "CNY"),)),
    ]
    results = run_in_transaction(engine, lambda conn: ledger.post_entries(conn, requests=requests, atomic=False))
    kinds = [getattr(r, "code", None) or ("replayed" if r.replayed else "posted") for r in results]
    assert kinds == ["posted", "posted", "debits_exceed_credits", "replayed", "posted", "postings_too_few"]
    assert available(engine, alice.ref) == 50
    assert available(engine, bob.ref) == 50


def test_entries_carry_the_open_accounting_date_and_read_back_identically(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    posted = transfer(engine, "t", source.ref, alice.ref, 1).entry
    stored = run_in_transaction(engine, lambda conn: ledger.get_entry(conn, ref=posted.ref), readonly=True)
    assert stored.accounting_date == run_in_transaction(engine, ledger.open_date)
    assert stored.postings == posted.postings
    assert (stored.ref, stored.kind, stored.business_code) == (posted.ref, posted.kind, posted.business_code)


def test_balances_as_of_an_earlier_entry_and_the_statement_with_running_balance(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    first = transfer(engine, "t1", source.ref, alice.ref, 100).entry
    transfer(engine, "t2", source.ref, alice.ref, 50)
    transfer(engine, "t3", alice.ref, source.ref, 30)
    as_of_first = run_in_transaction(engine, lambda conn: ledger.balance(conn, ref=alice.ref, as_of_entry=first.ref))
    assert as_of_first.posted == 100
    page = run_in_transaction(engine, lambda conn: ledger.account_statement(conn, ref=alice.ref, limit=2))
    assert [line["posted_balance_after"] for line in page.items] == [100, 150]
    rest = run_in_transaction(
        engine, lambda conn: ledger.account_statement(conn, ref=alice.ref, cursor=page.next_cursor, limit=2)
    )
    assert [line["posted_balance_after"] for line in rest.items] == [120]
    assert rest.next_cursor is None


def test_opening_an_account_is_idempotent_on_its_key(engine):
    first = wallet(engine, "alice")
    assert wallet(engine, "alice").ref == first.ref
    with pytest.raises(ZhangfangError) as refused:
        open_account(engine, "alice", currency="USD")
    assert refused.value.code == "idempotency_key_conflict"


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (
            {"debits_must_not_exceed_credits": True, "credits_must_not_exceed_debits": True},
            "account_flags_invalid",
        ),
        ({"hot": True, "debits_must_not_exceed_credits": True}, "account_flags_invalid"),
        ({"normal_side": "up"}, "normal_side_invalid"),
        ({"currency": "yuan"}, "currency_unknown"),
        ({"ledger_code": ""}, "ledger_code_invalid"),
    ],
)
def test_bad_accounts_are_refused_with_a_stable_code(engine, flags, code):
    before = snapshot(engine)
    with pytest.raises(ZhangfangError) as refused:
        open_account(engine, "bad", **flags)
    assert refused.value.code == code
    assert snapshot(engine) == before
