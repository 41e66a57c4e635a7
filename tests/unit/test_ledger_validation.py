"""Entry requests are checked without the database, and the first broken rule in the catalogue wins."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.errors import ZhangfangError
from zhangfang.ledger.models import Balance, EntryRequest, Leg
from zhangfang.ledger.service import plan_entry

A, B = "acc_A", "acc_B"


def refusal(request: EntryRequest) -> str:
    with pytest.raises(ZhangfangError) as refused:
        plan_entry(request)
    return refused.value.code


def test_a_balanced_request_becomes_a_plan_with_a_stable_hash():
    legs = (Leg(A, "debit", 100, "CNY"), Leg(B, "credit", 100, "CNY"))
    first = plan_entry(EntryRequest("k", "transfer", legs))
    again = plan_entry(EntryRequest("k", "transfer", legs))
    assert first.request_hash == again.request_hash
    assert first.ref != again.ref
    different = plan_entry(EntryRequest("k", "transfer", (Leg(A, "debit", 101, "CNY"), Leg(B, "credit", 101, "CNY"))))
    assert different.request_hash != first.request_hash


def test_metadata_key_order_does_not_change_the_hash():
    legs = (Leg(A, "debit", 1, "CNY"), Leg(B, "credit", 1, "CNY"))
    one = plan_entry(EntryRequest("k", "t", legs, {"a": 1, "b": 2}))
    two = plan_entry(EntryRequest("k", "t", legs, {"b": 2, "a": 1}))
    assert one.request_hash == two.request_hash


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (EntryRequest("", "t", ()), "idempotency_key_invalid"),
        (EntryRequest("k" * 201, "t", ()), "idempotency_key_invalid"),
        (EntryRequest("键", "t", ()), "idempotency_key_invalid"),
        (EntryRequest("k", "", ()), "business_code_invalid"),
        (EntryRequest("k", "t", (Leg(A, "debit", 1, "CNY"),)), "postings_too_few"),
        # several rules broken at once: the first in the catalogue wins
        (EntryRequest("k", "t", (Leg(A, "debit", 1.5, "ZZZ"), Leg(B, "up", -1, "CNY"))), "amount_must_be_integer"),
        (EntryRequest("k", "t", (Leg(A, "debit", 0, "ZZZ"), Leg(B, "credit", 0, "CNY"))), "amount_must_be_positive"),
        (EntryRequest("k", "t", (Leg(A, "debit", 1, "ZZZ"), Leg(B, "credit", 1, "ZZZ"))), "currency_unknown"),
        (EntryRequest("k", "t", (Leg(A, "sideways", 1, "CNY"), Leg(B, "credit", 1, "CNY"))), "side_invalid"),
        (EntryRequest("k", "t", (Leg(A, "debit", 1, "CNY"), Leg(B, "credit", 1, "USD"))), "entry_must_balance"),
        (EntryRequest("k", "t", (Leg("", "debit", 1, "CNY"), Leg(B, "credit", 1, "CNY"))), "account_ref_invalid"),
        (EntryRequest("k", "t", (Leg(A, "debit", 1, "CNY"), Leg(B, "credit", 1, "CNY")), [1]), "metadata_invalid"),
        (
            EntryRequest("k", "t", (Leg(A, "debit", 1, "CNY"), Leg(B, "credit", 1, "CNY")), {"x": "y" * 5000}),
            "metadata_invalid",
        ),
    ],
)
def test_bad_requests_are_refused_by_the_first_rule_they_break(request_, code):
    assert refusal(request_) == code


@given(st.lists(st.integers(1, 10**12), min_size=1, max_size=6), st.integers(-(10**6), 10**6))
def test_an_entry_is_accepted_exactly_when_it_balances(credits, skew):
    debit_total = sum(credits) + skew
    legs = [Leg(f"acc_{i}", "credit", amount, "CNY") for i, amount in enumerate(credits)]
    if debit_total > 0:
        legs.append(Leg("acc_d", "debit", debit_total, "CNY"))
        request = EntryRequest("k", "t", tuple(legs))
        if skew == 0:
            plan = plan_entry(request)
            assert sum(leg.amount for leg in plan.legs if leg.side == "debit") == sum(credits)
        else:
            assert refusal(request) == "entry_must_balance"


def test_available_is_posted_less_what_holds_reserve_on_the_normal_side():
    wallet = Balance("CNY", "credit", debits_posted=300, credits_posted=1_000, debits_pending=200, credits_pending=50)
    assert (wallet.posted, wallet.pending_out, wallet.pending_in, wallet.available) == (700, 200, 50, 500)
    bank = Balance("CNY", "debit", debits_posted=1_000, credits_posted=300, debits_pending=50, credits_pending=200)
    assert (bank.posted, bank.pending_out, bank.available) == (700, 200, 500)
