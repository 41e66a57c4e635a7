"""POS loans (POS贷) against real settlement runs, on SQLite and PostgreSQL.

The credit line comes from what the merchant has settled; a drawdown beyond it is
refused; each settlement run then takes the loan's share of the day's net before
paying the merchant, and the loan's schedule shows it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from tests.payments_env import PaymentsEnv
from tests.settlement_helpers import pay

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.lending import pos
from zhangfang.lending import service as lending
from zhangfang.lending.models import LoanRequest
from zhangfang.settlement import service as settlement

SHANGHAI = ZoneInfo("Asia/Shanghai")
MON, TUE, WED, THU = (dt.date(2026, 3, day) for day in (2, 3, 4, 5))


def noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), SHANGHAI)


def settle(env: PaymentsEnv, day: dt.date):
    return run_in_transaction(
        env.engine,
        lambda conn: settlement.run_settlement(
            conn,
            settlement_date=day,
            registry=env.registry,
            now=noon(day),
            deduction_providers=pos.settlement_deductions(),
        ),
    )


def test_a_pos_loan_is_limited_by_settled_flow_and_repaid_from_each_settlement(payments: PaymentsEnv):
    env = payments
    shop = env.merchant("pos-shop")
    pay(env, shop, 10_000_000, noon(MON), "0.006")  # 100,000.00 on Monday, settled on Tuesday (T+1)
    [batch] = settle(env, TUE).batches
    assert batch.captured == 10_000_000

    line = run_in_transaction(
        env.engine, lambda conn: lending.credit_line(conn, merchant_ref=shop.ref, as_of=WED), readonly=True
    )
    assert (line.settled_volume, line.limit, line.available) == (10_000_000, 5_000_000, 5_000_000)

    def draw(key: str, principal: int):
        request = LoanRequest(
            key=key,
            merchant_ref=shop.ref,
            principal=principal,
            annual_rate=Decimal("0.12"),
            periods=3,
            start=WED,
            settlement_share=Decimal("0.5"),
        )
        return run_in_transaction(env.engine, lambda conn: lending.disburse(conn, request=request))

    try:
        draw("too-much", 6_000_000)
        raise AssertionError("a drawdown beyond the credit line was accepted")
    except ZhangfangError as error:
        assert (error.code, error.details["available"]) == ("credit_line_exceeded", 5_000_000)
    loan, _ = draw("pos-1", 3_000_000)
    # 30,000.00 at 1 % a month over 3 months: EMI = 300.00 / (1 - 1.01^-3) = 10,200.66; period 1 = 300.00 + 9,900.66
    first = loan.installments[0]
    assert (first.due_date, first.interest, first.principal) == (dt.date(2026, 4, 4), 30_000, 990_066)

    pay(env, shop, 100_000, noon(WED), "0.006")  # 1,000.00 on Wednesday: net 994.00 on Thursday
    [batch] = settle(env, THU).batches
    assert batch.deductions == 49_700  # half of the net 994.00, below what period 1 owes
    assert batch.deduction_lines == [
        {"kind": "pos_loan", "ref": loan.ref, "amount": 49_700, "description": f"POS贷还款 {loan.ref}"}
    ]
    assert (batch.net, batch.amount) == (99_400 - 49_700, 99_400 - 49_700)
    after = run_in_transaction(env.engine, lambda conn: lending.get_loan(conn, ref=loan.ref), readonly=True)
    assert (after.installments[0].interest_paid, after.installments[0].principal_paid) == (30_000, 19_700)
    [repayment] = run_in_transaction(
        env.engine, lambda conn: lending.list_repayments(conn, loan_ref=loan.ref), readonly=True
    )
    assert (repayment.source, repayment.amount, repayment.overpayment) == ("settlement", 49_700, 0)
    # the run replayed takes nothing more
    again = settle(env, THU)
    assert again.replayed == 1
    assert len(run_in_transaction(env.engine, lambda conn: lending.list_repayments(conn, loan_ref=loan.ref))) == 1
