"""Loans to merchants on SQLite and PostgreSQL: drawdown, repayment by allocation, penalty, accrual, aging, POS.

Figures are hand-computed from the schedule of 10,000.00 at 12 % a year over 12
months, equal installments, from 2026-01-15 (see tests/unit/test_lending_schedule.py):
EMI 888.49; period 1 = 100.00 interest + 788.49 principal; period 2 = 92.12 + 796.37.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.lending import service
from zhangfang.lending.models import LoanRequest
from zhangfang.parties import service as parties
from zhangfang.parties.models import MerchantRequest, SettlementAccount
from zhangfang.payments import postings

START = dt.date(2026, 1, 15)
FEB_15, MAR_15 = dt.date(2026, 2, 15), dt.date(2026, 3, 15)


def merchant(engine, key: str = "borrower") -> str:
    request = MerchantRequest(
        key=key,
        name=f"商户 {key}",
        mcc="5812",
        fee_rate="0.006",
        settlement_account=SettlementAccount("招商银行", "6225880000000001", "张三"),
        sign_type="HMAC-SHA256",
    )
    return run_in_transaction(engine, lambda conn: parties.create_merchant(conn, request=request).merchant.ref)


def give(engine, merchant_ref: str, amount: int) -> None:
    """Money in the merchant's balance, as a paid order leaves it (no fee)."""
    run_in_transaction(
        engine,
        lambda conn: postings.post_payment(
            conn,
            attempt_ref=f"pat_{merchant_ref[-10:]}{amount}",
            order_ref="pay_x",
            merchant_ref=merchant_ref,
            channel="alipay",
            amount=amount,
            fee=0,
            currency="CNY",
            now=dt.datetime.now(dt.UTC),
        ),
    )


def balance(engine, key: str) -> int:
    def read(conn):
        found = [a for a in ledger.list_accounts(conn, limit=500).items if a.key == key]
        return found[0].balance.posted if found else 0

    return run_in_transaction(engine, read, readonly=True)


def term_loan(engine, shop: str, key: str = "L-1", **terms) -> str:
    request = LoanRequest(
        key=key,
        merchant_ref=shop,
        principal=1_000_000,
        annual_rate=Decimal("0.12"),
        periods=12,
        start=START,
        kind="term",
        settlement_share=None,
        **terms,
    )
    loan, created = run_in_transaction(engine, lambda conn: service.disburse(conn, request=request))
    assert created
    return loan.ref


def repay(engine, loan: str, amount: int, key: str, as_of: dt.date, source: str = "manual"):
    return run_in_transaction(
        engine,
        lambda conn: service.repay(conn, loan_ref=loan, amount=amount, source=source, key=key, as_of=as_of),
    )


def loan_of(engine, ref: str):
    return run_in_transaction(engine, lambda conn: service.get_loan(conn, ref=ref), readonly=True)


def code_of(call) -> str:
    with pytest.raises(ZhangfangError) as raised:
        call()
    return raised.value.code


def test_a_term_loan_is_drawn_repaid_period_by_period_and_settles(engine):
    shop = merchant(engine)
    loan = term_loan(engine, shop)
    pending = postings.merchant_pending_request(shop, "CNY").key
    assert balance(engine, pending) == 1_000_000  # the drawdown is in the merchant's balance
    assert balance(engine, f"merchant:{shop}:loan_principal") == 1_000_000
    give(engine, shop, 70_000)  # the interest has to come from somewhere

    schedule = loan_of(engine, loan).installments
    assert (schedule[0].principal, schedule[0].interest) == (78_849, 10_000)
    for item in schedule:
        paid = repay(engine, loan, item.principal + item.interest, f"P{item.period}", item.due_date)
        assert (paid.applied, paid.overpayment) == (item.principal + item.interest, 0)
        assert paid.split == (
            {"period": item.period, "penalty": 0, "interest": item.interest, "principal": item.principal},
        )

    done = loan_of(engine, loan)
    assert done.state == "settled" and done.outstanding_principal == 0
    assert balance(engine, f"merchant:{shop}:loan_principal") == 0
    assert balance(engine, f"merchant:{shop}:interest_receivable") == 0
    assert balance(engine, "platform:interest_income") == 66_186  # Σ interest of the schedule
    assert balance(engine, pending) == 1_000_000 + 70_000 - 1_066_186
    assert code_of(lambda: repay(engine, loan, 100, "after", MAR_15)) == "loan_settled"


def test_a_late_period_pays_penalty_on_its_overdue_principal_first(engine):
    shop = merchant(engine)
    loan = term_loan(engine, shop)
    late = FEB_15 + dt.timedelta(days=10)
    # 10 days late on 788.49 at 0.05 % a day: 3.94245 → 3.94
    owed = run_in_transaction(engine, lambda conn: service.owed(conn, loan_ref=loan, as_of=late), readonly=True)
    assert owed == 88_849 + 394
    aging = run_in_transaction(engine, lambda conn: service.aging(conn, as_of=late), readonly=True)
    assert [(line.loan_ref, line.days_past_due, str(line.bucket)) for line in aging.lines] == [(loan, 10, "M1")]

    paid = repay(engine, loan, owed, "late-1", late)
    assert paid.split[0] == {"period": 1, "penalty": 394, "interest": 10_000, "principal": 78_849}
    # the interest of period 1 was recognised when it fell due would have been, plus the penalty
    assert balance(engine, "platform:interest_income") == 10_000 + 394
    assert loan_of(engine, loan).installments[0].paid_at is not None
    aging = run_in_transaction(engine, lambda conn: service.aging(conn, as_of=late), readonly=True)
    assert str(aging.lines[0].bucket) == "current"


def test_a_partial_repayment_follows_the_order_and_an_overpayment_is_not_taken(engine):
    shop = merchant(engine)
    loan = term_loan(engine, shop, allocation_order=("principal", "interest", "penalty", "fee"))
    pending = postings.merchant_pending_request(shop, "CNY").key
    give(engine, shop, 10_000)
    first = repay(engine, loan, 50_000, "part", FEB_15)
    assert first.split == ({"period": 1, "penalty": 0, "interest": 0, "principal": 50_000},)
    # the rest of period 1 (288.49 principal + 100.00 interest) and everything later: 10,000.00 of
    # principal in all, plus period 1's interest; the remaining 2,000.00 is not taken
    everything = 1_000_000 - 50_000 + 10_000
    last = repay(engine, loan, everything + 200_000, "all", FEB_15)
    assert (last.applied, last.overpayment) == (everything, 200_000)
    assert loan_of(engine, loan).state == "settled"
    assert balance(engine, pending) == 1_000_000 + 10_000 - 50_000 - everything
    assert balance(engine, "platform:interest_income") == 10_000  # prepaid periods owe no interest


def test_a_repayment_is_applied_once_and_bad_input_changes_nothing(engine):
    shop = merchant(engine)
    loan = term_loan(engine, shop)
    first = repay(engine, loan, 10_000, "once", FEB_15)
    again = repay(engine, loan, 10_000, "once", FEB_15)
    assert (again.replayed, again.ref, again.entry_ref) == (True, first.ref, first.entry_ref)
    before = loan_of(engine, loan)
    assert code_of(lambda: repay(engine, loan, 20_000, "once", FEB_15)) == "repayment_key_conflict"
    assert code_of(lambda: repay(engine, loan, 0, "zero", FEB_15)) == "repayment_amount_invalid"
    assert code_of(lambda: repay(engine, loan, 100, "bogus", FEB_15, source="cash")) == "repayment_source_invalid"
    assert code_of(lambda: repay(engine, "loan_01J0000000000000000000000", 100, "x", FEB_15)) == "loan_not_found"
    # more than the balance holds: the ledger refuses, nothing is applied
    assert code_of(lambda: repay(engine, loan, 990_000 + 10_000, "too-much", FEB_15)) != ""
    assert loan_of(engine, loan) == before
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM loan_repayments")).scalar_one() == 1


def test_a_drawdown_is_idempotent_per_key_and_checks_its_terms(engine):
    shop = merchant(engine)
    loan = term_loan(engine, shop, key="same")
    request = LoanRequest(
        key="same", merchant_ref=shop, principal=1_000_000, annual_rate=Decimal("0.12"), periods=12, start=START,
        kind="term", settlement_share=None,
    )  # fmt: skip
    replayed, created = run_in_transaction(engine, lambda conn: service.disburse(conn, request=request))
    assert (replayed.ref, created) == (loan, False)
    other = LoanRequest(**{**vars(request), "principal": 2_000_000})
    assert code_of(lambda: run_in_transaction(engine, lambda c: service.disburse(c, request=other))) == (
        "loan_key_conflict"
    )
    for field, value, code in (
        ("kind", "payday", "loan_kind_unknown"),
        ("penalty_daily_rate", 0.0005, "penalty_rate_invalid"),
        ("periods", 0, "period_count_invalid"),
        ("allocation_order", ("principal",), "allocation_order_invalid"),
        ("merchant_ref", "mch_01J0000000000000000000000", "merchant_not_found"),
    ):
        bad = LoanRequest(**{**vars(request), "key": f"bad-{field}", field: value})
        assert code_of(lambda bad=bad: run_in_transaction(engine, lambda c: service.disburse(c, request=bad))) == code
    pos_share = LoanRequest(**{**vars(request), "key": "bad-share", "kind": "pos", "settlement_share": "1.5"})
    assert code_of(lambda: run_in_transaction(engine, lambda c: service.disburse(c, request=pos_share))) == (
        "settlement_share_invalid"
    )
    assert balance(engine, f"merchant:{shop}:loan_principal") == 1_000_000


def test_accrual_recognises_interest_when_it_falls_due_and_penalty_day_by_day_once(engine):
    shop = merchant(engine)
    term_loan(engine, shop)
    accrue = lambda day: run_in_transaction(engine, lambda conn: service.accrue(conn, as_of=day))  # noqa: E731
    assert accrue(FEB_15 - dt.timedelta(days=1)) == 0
    assert accrue(FEB_15) == 1
    assert balance(engine, "platform:interest_income") == 10_000
    assert accrue(FEB_15) == 0  # nothing new
    assert accrue(FEB_15 + dt.timedelta(days=10)) == 1
    assert balance(engine, "platform:interest_income") == 10_000 + 394
    assert balance(engine, f"merchant:{shop}:interest_receivable") == 10_394
