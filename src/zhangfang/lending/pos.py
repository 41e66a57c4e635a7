"""POS loans (POS贷) repaid from the merchant's own acquiring flow: settlement first, then withholding, then by hand.

1. **Settlement** (``PosLoanDeductions``, a ``settlement.DeductionProvider``): each
   settlement run takes, per active POS loan of the merchant (oldest first), the
   loan's ``settlement_share`` of the statement's net, never more than what the
   loan owes up to its current period nor more than the merchant's available
   balance. The deduction is booked as a repayment (business code ``settlement``)
   keyed by the batch, so a run replayed takes nothing twice.
2. **Withholding** (``collect_due``): on a due date, what the settlements did not
   cover is debited from the merchant's linked account under the loan's mandate
   (协议代扣); the debit's proceeds reach the merchant's balance like any payment and
   are applied when the debit succeeds (the mandates listener ``on_debit``).
3. **By hand** (``cashier_order``): an order for what is owed, which the merchant pays
   at the cashier like any payer; when it is paid (``payments.register_paid_listener``)
   its proceeds repay the loan (source ``manual``).

All three go through ``lending.service.repay``: one schedule, one allocation order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.channels.registry import ChannelRegistry
from zhangfang.errors import ZhangfangError
from zhangfang.lending import errors, installments, service
from zhangfang.lending.tables import loan_installments, loans
from zhangfang.mandates import service as mandates
from zhangfang.mandates.models import Debit
from zhangfang.parties import service as parties
from zhangfang.payments import postings as payment_postings
from zhangfang.payments import service as payments
from zhangfang.payments.models import OrderRequest, PaymentOrder
from zhangfang.settlement.models import Deduction

DEDUCTION_KIND = "pos_loan"
PURPOSE = "loan"


def current_due_date(conn: Connection, *, loan_id: int, as_of: dt.date) -> dt.date | None:
    """The due date of the loan's current period: the first unpaid one on or after ``as_of``."""
    return conn.execute(
        sa.select(sa.func.min(loan_installments.c.due_date)).where(
            loan_installments.c.loan_id == loan_id,
            loan_installments.c.paid_at.is_(None),
            loan_installments.c.due_date >= as_of,
        )
    ).scalar_one()


class PosLoanDeductions:
    """Settlement deductions for POS loans: a share of each settlement repays the merchant's loans.

    One instance serves one settlement run: ``deductions_for`` remembers the
    settlement date so ``book`` applies each deduction as of that date, which
    makes the amount applied exactly the amount deducted.
    """

    kind = DEDUCTION_KIND

    def __init__(self) -> None:
        self._settlement_date: dt.date | None = None

    def deductions_for(
        self,
        conn: Connection,
        *,
        merchant_id: int,
        merchant_ref: str,
        settlement_date: dt.date,
        currency: str,
        net: int,
        available: int,
    ) -> Sequence[Deduction]:
        """Per active POS loan: min(share × net, owed through the current period, what is left available)."""
        self._settlement_date = settlement_date
        taken: list[Deduction] = []
        left = available
        rows = conn.execute(
            sa.select(loans.c.id, loans.c.ref, loans.c.settlement_share)
            .where(
                loans.c.merchant_id == merchant_id,
                loans.c.kind == "pos",
                loans.c.state == "active",
                loans.c.currency == currency,
                loans.c.settlement_share.is_not(None),
            )
            .order_by(loans.c.id)
        ).all()
        for row in rows:
            share = int((Decimal(max(net, 0)) * Decimal(row.settlement_share)).quantize(Decimal(1), ROUND_DOWN))
            through = current_due_date(conn, loan_id=row.id, as_of=settlement_date) or settlement_date
            owed = service.owed(conn, loan_ref=row.ref, as_of=settlement_date, through=through)
            amount = min(share, owed, left)
            if amount > 0:
                taken.append(Deduction(self.kind, row.ref, amount, f"POS贷还款 {row.ref}"))
                left -= amount
        return taken

    def book(
        self, conn: Connection, *, deduction: Deduction, merchant_ref: str, batch_ref: str, now: dt.datetime
    ) -> None:
        """Apply the deduction to the loan as a repayment from the merchant's balance (business code settlement)."""
        assert self._settlement_date is not None, "deductions_for runs before book"
        repayment = service.repay(
            conn,
            loan_ref=deduction.ref,
            amount=deduction.amount,
            source="settlement",
            key=f"settlement:{batch_ref}",
            as_of=self._settlement_date,
            business_code="settlement",
            now=now,
        )
        # What settlement subtracted must be exactly what the loan took, or the statement would lie.
        assert repayment.overpayment == 0, (deduction, repayment)


def settlement_deductions() -> tuple[PosLoanDeductions | installments.InstallmentCollections, ...]:
    """The deduction providers a settlement run uses (a fresh set per run): POS-loan repayments, then
    what ``advance`` installment plans collected for the platform."""
    return (PosLoanDeductions(), installments.InstallmentCollections())


# --------------------------------------------------------------------------- withholding on the due date


def gross_up(amount: int, fee_rate: Decimal) -> int:
    """The smallest debit whose proceeds, after the merchant's fee on it, are at least ``amount``."""
    debit = int((Decimal(amount) / (1 - fee_rate)).to_integral_value(ROUND_DOWN)) if fee_rate < 1 else amount
    while debit - payment_postings.fee_for(debit, fee_rate) < amount:
        debit += 1
    return debit


def collect_due(conn: Connection, *, today: dt.date, now: dt.datetime | None = None) -> int:
    """On a due date, debit under the loan's mandate what settlements left unpaid of the periods due.

    One debit per (loan, period, due date); the debit asks for what is owed grossed up by the
    merchant's fee, so that its proceeds cover it (``gross_up``). Returns how many debits were made.
    A mandate that refuses (revoked, over a limit) leaves the period to be paid by hand.
    """
    made = 0
    due = conn.execute(
        sa.select(loans.c.ref, loans.c.merchant_id, loans.c.mandate_ref, loans.c.currency, loan_installments.c.period)
        .join(loan_installments, loan_installments.c.loan_id == loans.c.id)
        .where(
            loans.c.state == "active",
            loans.c.mandate_ref.is_not(None),
            loan_installments.c.due_date == today,
            loan_installments.c.paid_at.is_(None),
        )
        .order_by(loans.c.id)
    ).all()
    for row in due:
        owed = service.owed(conn, loan_ref=row.ref, as_of=today)
        if owed <= 0:
            continue
        merchant = parties.find_merchant_by_id(conn, merchant_id=row.merchant_id)
        assert merchant is not None
        try:
            with conn.begin_nested():
                mandates.create_debit(
                    conn,
                    merchant_id=row.merchant_id,
                    mandate_ref=row.mandate_ref,
                    amount=gross_up(owed, merchant.fee_rate),
                    currency=row.currency,
                    key=f"loan:{row.ref}:{row.period}:{today.isoformat()}",
                    due_date=today,
                    purpose=PURPOSE,
                    purpose_ref=row.ref,
                    now=now,
                )
            made += 1
        except ZhangfangError:
            continue  # left to the merchant to pay by hand; the period is overdue from tomorrow
    return made


def on_debit(conn: Connection, debit: Debit) -> None:
    """The mandates listener of ``loan`` debits: a succeeded debit's proceeds repay the loan."""
    if debit.state != "succeeded" or debit.purpose_ref is None:
        return
    loan = service.get_loan(conn, ref=debit.purpose_ref)
    if loan.state != "active":
        return
    merchant = parties.get_merchant(conn, ref=loan.merchant_ref)
    proceeds = debit.amount - payment_postings.fee_for(debit.amount, merchant.fee_rate)
    as_of = installments.business_date(debit.finished_at or debit.updated_at)
    amount = min(proceeds, service.owed(conn, loan_ref=loan.ref, as_of=as_of))
    if amount > 0:
        service.repay(
            conn,
            loan_ref=loan.ref,
            amount=amount,
            source="withholding",
            key=f"debit:{debit.ref}",
            as_of=as_of,
            now=debit.finished_at,
        )


mandates.register_debit_listener(PURPOSE, on_debit)


# --------------------------------------------------------------------------- by hand, at the cashier

ORDER_METADATA_KEY = "loan_repayment"


def cashier_order(
    conn: Connection,
    *,
    loan_ref: str,
    as_of: dt.date,
    registry: ChannelRegistry,
    now: dt.datetime | None = None,
) -> PaymentOrder:
    """An order of the borrower for what the loan owes by ``as_of`` (grossed up for the fee), to pay at the
    cashier; one per loan and date. Its payment repays the loan (``on_paid``)."""
    loan = service.get_loan(conn, ref=loan_ref)
    if loan.state != "active":
        raise errors.LoanSettled(f"loan {loan.ref} is settled; nothing is owed", field="loan")
    owed = service.owed(conn, loan_ref=loan.ref, as_of=as_of)
    if owed <= 0:
        raise errors.RepaymentAmountInvalid(f"loan {loan.ref} owes nothing due by {as_of}", field="as_of")
    merchant = parties.get_merchant(conn, ref=loan.merchant_ref)
    return payments.create_order(
        conn,
        merchant=merchant,
        request=OrderRequest(
            out_trade_no=f"loan-{loan.ref}-{as_of.isoformat()}",
            amount=gross_up(owed, merchant.fee_rate),
            currency=loan.currency,
            subject=f"贷款还款 {loan.ref}",
            metadata={ORDER_METADATA_KEY: loan.ref, "as_of": as_of.isoformat()},
        ),
        registry=registry,
        now=now,
    ).order


def on_paid(conn: Connection, order: PaymentOrder) -> None:
    """The payments listener: a paid repayment order's proceeds repay its loan."""
    loan_ref = (order.metadata or {}).get(ORDER_METADATA_KEY)
    if not loan_ref:
        return
    loan = service.get_loan(conn, ref=loan_ref)
    # The order was priced for what was owed on its date; it settles that date's debt even if paid later.
    as_of = dt.date.fromisoformat(order.metadata["as_of"]) if "as_of" in (order.metadata or {}) else None
    as_of = as_of or installments.business_date(order.paid_at or dt.datetime.now(dt.UTC))
    owed = service.owed(conn, loan_ref=loan.ref, as_of=as_of) if loan.state == "active" else 0
    amount = min(order.amount - (order.fee or 0), owed)
    if amount > 0:
        service.repay(
            conn,
            loan_ref=loan.ref,
            amount=amount,
            source="manual",
            key=f"order:{order.ref}",
            as_of=as_of,
            now=order.paid_at,
        )


payments.register_paid_listener(on_paid)
