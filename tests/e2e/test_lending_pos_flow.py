"""A POS loan (POS贷) repaid by all three routes, end to end, on SQLite and PostgreSQL.

A merchant with card-acquiring flow draws down against its credit line; its
settlements repay the first period and part of the second; then a quiet month
with no flow, so on the second due date the rest is withheld from its linked
account under its mandate (协议代扣); on the third the bank refuses the debit
(account closed), and the merchant clears the last period by paying at the
cashier. The loan is settled, and the ledger and the accounting books balance.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from tests.mandates_env import MandatesEnv
from tests.payments_env import PaymentsEnv
from tests.settlement_helpers import pay

from zhangfang.accounting import reports
from zhangfang.accounting import sync as accounting_sync
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.lending import pos
from zhangfang.lending import service as lending
from zhangfang.lending.models import LoanRequest
from zhangfang.mandates.models import Limits
from zhangfang.payments import service as payments_service
from zhangfang.sandbox import sms
from zhangfang.settlement import service as settlement

SHANGHAI = ZoneInfo("Asia/Shanghai")
FEE_RATE = "0.006"


def at(month: int, day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=SHANGHAI)


def settle(env: PaymentsEnv, day: dt.date):
    return run_in_transaction(
        env.engine,
        lambda conn: settlement.run_settlement(
            conn,
            settlement_date=day,
            registry=env.registry,
            now=dt.datetime.combine(day, dt.time(9), SHANGHAI),
            deduction_providers=pos.settlement_deductions(),
        ),
    )


def test_a_pos_loan_is_repaid_from_settlement_then_by_withholding_then_at_the_cashier(payments, sandbox):
    env = payments
    gateway = sms.SandboxSmsGateway()
    sms.install(gateway)
    try:
        run_scenario(env, MandatesEnv(env.engine, env.registry, sandbox.banks["icbc"], gateway))
    finally:
        sms.install(None)


def run_scenario(env: PaymentsEnv, mandates: MandatesEnv) -> None:
    shop = mandates.merchant("pos-borrower")
    # the merchant's owner authorizes withholding from the merchant's own bank account
    mandate = mandates.active(
        shop,
        limits=Limits(per_debit=2_000_000, per_day=2_000_000, per_month=4_000_000, total=10_000_000),
        expires_at=dt.datetime(2027, 12, 31, tzinfo=SHANGHAI),
    )

    # ---- flow, a credit line, a drawdown
    pay(env, shop, 10_000_000, at(3, 2), FEE_RATE)  # 100,000.00 on Monday 2 March
    settle(env, dt.date(2026, 3, 3))
    request = LoanRequest(
        key="pos-2026-03",
        merchant_ref=shop.ref,
        principal=3_000_000,
        annual_rate=Decimal("0.12"),
        periods=3,
        start=dt.date(2026, 3, 4),
        settlement_share=Decimal("0.5"),
        mandate_ref=mandate.ref,
    )
    loan, _ = run_in_transaction(env.engine, lambda conn: lending.disburse(conn, request=request))
    dues = [item.due_date for item in loan.installments]
    assert dues == [dt.date(2026, 4, 4), dt.date(2026, 5, 4), dt.date(2026, 6, 4)]
    emi = loan.installments[0].principal + loan.installments[0].interest
    assert emi == 1_020_066  # 30,000.00 at 1 % a month over 3 months

    def state():
        return run_in_transaction(env.engine, lambda conn: lending.get_loan(conn, ref=loan.ref), readonly=True)

    # ---- 1. settlement: 8,000.00 a day; each T+1 settlement takes half its net (3,976.00), at most what is
    # owed through the current period: period 1 until it is paid, then period 2
    taken = []
    for paid_on, settled_on in ((4, 5), (5, 6), (6, 9), (9, 10)):
        pay(env, shop, 800_000, at(3, paid_on), FEE_RATE)
        [batch] = settle(env, dt.date(2026, 3, settled_on)).batches
        taken.append(batch.deductions)
    assert taken == [397_600, 397_600, emi - 2 * 397_600, 397_600]
    first, second, third = state().installments
    assert first.paid_at is not None
    assert (second.interest_paid, second.principal_paid) == (second.interest, 397_600 - second.interest)
    assert second.paid_at is None and third.principal_paid == 0

    # ---- a quiet month: no flow, so settlements take nothing; 2. withholding on the second due date
    assert settle(env, dt.date(2026, 4, 8)).batches == []
    on_due = dt.datetime.combine(dues[1], dt.time(10), SHANGHAI)
    assert run_in_transaction(env.engine, lambda conn: pos.collect_due(conn, today=dues[1], now=on_due)) == 1
    mandates.run_jobs(on_due.astimezone(dt.UTC))
    assert state().installments[1].paid_at is not None

    # ---- 3. the third due date: the bank refuses (account closed), the merchant pays at the cashier
    third_due = dt.datetime.combine(dues[2], dt.time(10), SHANGHAI)
    mandates.bank.withhold_next("account_closed")
    assert run_in_transaction(env.engine, lambda conn: pos.collect_due(conn, today=dues[2], now=third_due)) == 1
    mandates.run_jobs(third_due.astimezone(dt.UTC))
    assert state().installments[2].paid_at is None
    next_day = dues[2] + dt.timedelta(days=1)
    answer = env.admin.post(f"/v1/lending/loans/{loan.ref}/cashier-order", params={"as_of": next_day.isoformat()})
    assert answer.status_code == 200, answer.text
    order = answer.json()
    # one day late: penalty on the third period's principal, and the order grossed up for the merchant's fee
    owed = run_in_transaction(env.engine, lambda conn: lending.owed(conn, loan_ref=loan.ref, as_of=next_day))
    assert order["amount"] == pos.gross_up(owed, Decimal(FEE_RATE)) > owed > third.principal + third.interest
    env.pay(order, "alipay")
    env.wait_for(lambda: env.order(order["id"])["state"] == "succeeded")

    done = state()
    assert done.state == "settled" and done.outstanding_principal == 0
    repayments = run_in_transaction(env.engine, lambda conn: lending.list_repayments(conn, loan_ref=loan.ref))
    assert [r.source for r in repayments] == ["settlement"] * 4 + ["withholding", "manual"]
    assert sum(r.applied for r in repayments) == sum(i.principal + i.interest + i.penalty for i in done.installments)
    assert done.installments[2].penalty > 0
    assert mandates.balance(f"merchant:{shop.ref}:pos_loan_principal") == 0
    assert mandates.balance(f"merchant:{shop.ref}:interest_receivable") == 0

    # the books: everything is booked, and balances
    mandates.books_balance()
    ledger.close_day(env.engine, accounting_date=run_in_transaction(env.engine, ledger.open_date), wait_seconds_max=10)
    assert accounting_sync.sync(env.engine).exception_count == 0
    today = run_in_transaction(env.engine, ledger.open_date) - dt.timedelta(days=1)
    trial = run_in_transaction(env.engine, lambda conn: reports.trial_balance(conn, date=today), readonly=True)
    assert trial.balanced
    assert payments_service.register_paid_listener(pos.on_paid) is pos.on_paid  # registered once, idempotently
