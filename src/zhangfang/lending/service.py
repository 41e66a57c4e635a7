"""Loans (贷款) to merchants: drawdown, interest and penalty accrual, repayment by allocation, aging, POS credit lines.

Every function that takes a ``Connection`` expects it inside a transaction and
never commits: the caller owns the unit of work. Merchants are read through
``parties.service``, balances and entries through ``ledger.service``, settled
volume through ``settlement.service``.

Money, in the ledger (accounts opened on first use; keys per merchant and currency):

=====================================  ======  ===========================================================
key                                    normal  holds
=====================================  ======  ===========================================================
``merchant:<mch>:pos_loan_principal``  debit   principal the merchant owes on POS loans (``term`` loans:
                                               ``…:loan_principal``)
``merchant:<mch>:interest_receivable`` debit   interest and penalty (罚息) recognised and not yet paid
``platform:interest_income``           credit  interest and penalty earned
``merchant:<mch>:pending_settlement``  credit  the merchant's balance (payments' account): the drawdown is
                                               credited here, every repayment is taken from here
=====================================  ======  ===========================================================

- drawdown (``loan_disbursement``): Dr principal / Cr merchant balance, key ``loan:<ref>:disburse``;
- accrual (``interest_accrual``): Dr interest receivable / Cr interest income — a period's interest
  when it falls due (or earlier, when a repayment pays it), penalty day by day on overdue principal;
- repayment (``repayment``, or ``settlement`` when a settlement run deducts it): Dr merchant balance /
  Cr principal, Cr interest receivable; key ``loan:<ref>:repay:<key>``.

Every route of repayment — a share of each settlement, a withholding debit on the due date,
the merchant paying at the cashier — brings the money to the merchant's balance first (a
settlement already has it there) and then calls ``repay``, so all three reduce the same schedule
through the same allocation (``allocation.allocate_repayment``, the loan's order).

Guarantees
- A drawdown is idempotent per (merchant, key); the same key with other terms is
  ``loan_key_conflict``. A POS drawdown never exceeds the credit line's available amount.
- A drawdown naming a loan product (``lending.products``) lends on the product's terms and within
  its bounds, and never on a retired product; one without a product lends exactly as before
  (its request hash leaves the product out).
- A repayment is idempotent per (loan, key). It takes at most what is owed: the part of a
  repayment beyond everything owed (``overpayment``) is neither applied nor taken. A
  prepayment that clears a later period's principal waives that period's interest (the money
  was not lent over it); a later period prepaid in part keeps its scheduled interest.
- Interest income is recognised once per fen: ``interest_accrued <= interest + penalty`` per
  installment, and a repayment never credits interest receivable beyond what was accrued.
- Σ installment principal = the loan's principal (the schedule's last period absorbs rounding);
  a loan is ``settled`` when nothing is owed on any installment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from zhangfang import ids
from zhangfang.db.sql import request_digest
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.lending import errors, products
from zhangfang.lending.allocation import Component, InstallmentDue, allocate_repayment, penalty_interest
from zhangfang.lending.delinquency import AgingReport, LoanExposure, aging_report
from zhangfang.lending.models import CreditLine, CreditPolicy, Installment, Loan, LoanRequest, Repayment
from zhangfang.lending.schedule import START_YEAR_MAX, START_YEAR_MIN, build_schedule
from zhangfang.lending.tables import loan_installments, loan_repayments, loans
from zhangfang.mandates import service as mandates
from zhangfang.parties import service as parties
from zhangfang.payments import postings as payment_postings
from zhangfang.settlement import service as settlement

CODE_DISBURSEMENT = "loan_disbursement"
CODE_ACCRUAL = "interest_accrual"
CODE_REPAYMENT = "repayment"
SOURCES = ("settlement", "withholding", "manual")
SETTLEMENT_SHARE_MAX = Decimal(1)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- accounts


def _principal_account(merchant_ref: str, kind: str, currency: str) -> AccountRequest:
    code = "pos_loan_principal" if kind == "pos" else "loan_principal"
    return AccountRequest(
        key=f"merchant:{merchant_ref}:{code}{currency_suffix(currency)}",
        ledger_code=code,
        currency=currency,
        normal_side="debit",
        owner_ref=merchant_ref,
    )


def _interest_receivable(merchant_ref: str, currency: str) -> AccountRequest:
    return AccountRequest(
        key=f"merchant:{merchant_ref}:interest_receivable{currency_suffix(currency)}",
        ledger_code="interest_receivable",
        currency=currency,
        normal_side="debit",
        owner_ref=merchant_ref,
    )


def interest_income_account(currency: str) -> AccountRequest:
    """``platform:interest_income``: interest and penalty earned (loans and advance installment plans)."""
    return AccountRequest(
        key=f"platform:interest_income{currency_suffix(currency)}",
        ledger_code="interest_income",
        currency=currency,
        normal_side="credit",
        owner_ref="platform",
    )


def currency_suffix(currency: str) -> str:
    """What a non-CNY account's key ends with, as payments' accounts do."""
    return "" if currency == "CNY" else f":{currency}"


def account_ref(conn: Connection, request: AccountRequest, now: dt.datetime) -> str:
    """The ref of the account ``request`` describes, opened on first use."""
    return ledger.open_account(conn, request=request, now=now)[0].ref


# --------------------------------------------------------------------------- reading


def _decimal(text: str | None) -> Decimal | None:
    return Decimal(text) if text is not None else None


def _installment_of(row: Any) -> Installment:
    return Installment(
        period=row.period,
        due_date=row.due_date,
        principal=row.principal,
        interest=row.interest,
        penalty=row.penalty,
        principal_paid=row.principal_paid,
        interest_paid=row.interest_paid,
        penalty_paid=row.penalty_paid,
        paid_at=row.paid_at,
    )


def _loan_of(row: Row[Any], installments: Sequence[Any]) -> Loan:
    return Loan(
        id=row.id,
        ref=row.ref,
        merchant_id=row.merchant_id,
        merchant_ref=row.merchant_ref,
        kind=row.kind,
        currency=row.currency,
        principal=row.principal,
        annual_rate=Decimal(row.annual_rate),
        method=row.method,
        day_count=row.day_count,
        periods=row.periods,
        start_date=row.start_date,
        penalty_daily_rate=Decimal(row.penalty_daily_rate),
        allocation_order=tuple(Component(c) for c in row.allocation_order.split(",")),
        settlement_share=_decimal(row.settlement_share),
        mandate_ref=row.mandate_ref,
        state=row.state,
        disbursement_entry_ref=row.disbursement_entry_ref,
        created_at=row.created_at,
        settled_at=row.settled_at,
        product_code=row.product_code,
        installments=tuple(_installment_of(item) for item in installments),
    )


def _installment_rows(conn: Connection, loan_id: int) -> list[SimpleNamespace]:
    """The loan's installments, oldest first, as plain records the accrual can update in place."""
    query = (
        sa.select(loan_installments).where(loan_installments.c.loan_id == loan_id).order_by(loan_installments.c.period)
    )
    return [SimpleNamespace(**row._asdict()) for row in conn.execute(query)]


def _loan_row(conn: Connection, ref: Any, *, lock: bool = False) -> Row[Any]:
    if not isinstance(ref, str) or not ids.is_valid_id(ref, "loan"):
        raise errors.LoanNotFound(f"loan {ref!r} does not exist", field="loan")
    query = sa.select(loans).where(loans.c.ref == ref)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise errors.LoanNotFound(f"loan {ref} does not exist", field="loan")
    return row


def get_loan(conn: Connection, *, ref: str) -> Loan:
    """A loan with its installments."""
    row = _loan_row(conn, ref)
    return _loan_of(row, _installment_rows(conn, row.id))


def list_loans(conn: Connection, *, merchant_ref: str | None = None, state: str | None = None) -> list[Loan]:
    """Loans, oldest first; of one merchant and/or in one state."""
    query = sa.select(loans).order_by(loans.c.id)
    if merchant_ref is not None:
        query = query.where(loans.c.merchant_ref == merchant_ref)
    if state is not None:
        query = query.where(loans.c.state == state)
    return [_loan_of(row, _installment_rows(conn, row.id)) for row in conn.execute(query)]


# --------------------------------------------------------------------------- credit line


def credit_line(
    conn: Connection, *, merchant_ref: str, as_of: dt.date, policy: CreditPolicy = CreditPolicy()
) -> CreditLine:
    """The merchant's POS credit line on ``as_of`` (see ``CreditPolicy``)."""
    as_of = _check_as_of(as_of)
    merchant = parties.get_merchant(conn, ref=merchant_ref)
    since = as_of - dt.timedelta(days=policy.lookback_days)
    volume = settlement.settled_volume(conn, merchant_id=merchant.id, since=since, until=as_of)
    limit = min(int(Decimal(volume) * policy.ratio) // policy.step * policy.step, policy.maximum)
    outstanding = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(loan_installments.c.principal - loan_installments.c.principal_paid), 0))
        .select_from(loan_installments.join(loans, loans.c.id == loan_installments.c.loan_id))
        .where(loans.c.merchant_id == merchant.id, loans.c.kind == "pos", loans.c.state == "active")
    ).scalar_one()
    return CreditLine(
        merchant_ref=merchant_ref,
        as_of=as_of,
        settled_volume=volume,
        limit=limit,
        outstanding_principal=int(outstanding),
    )


# --------------------------------------------------------------------------- drawdown


def _parse_annual_rate(value: Any) -> Any:
    """Decimal text becomes a ``Decimal``; anything else goes to ``build_schedule`` to be checked."""
    if not isinstance(value, str):
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        raise errors.AnnualRateInvalid(
            f"annual_rate is decimal text such as 0.12, got {value!r}", field="annual_rate"
        ) from None


def _check_as_of(value: Any, field: str = "as_of") -> dt.date:
    """A business date of the years a schedule may start in (its arithmetic stays within ``datetime.date``)."""
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise errors.AsOfDateInvalid(
            f"{field} is a datetime.date (Asia/Shanghai), not {type(value).__name__}", field=field
        )
    if not START_YEAR_MIN <= value.year <= START_YEAR_MAX:
        raise errors.AsOfDateInvalid(
            f"{field} must be in the years {START_YEAR_MIN} to {START_YEAR_MAX}, got {value.isoformat()}", field=field
        )
    return value


def _check_kind(kind: Any) -> str:
    if kind not in ("pos", "term"):
        raise errors.LoanKindUnknown(f"kind is pos or term, not {kind!r}", field="kind")
    return kind


def disburse(
    conn: Connection,
    *,
    request: LoanRequest,
    policy: CreditPolicy | None = None,
    now: dt.datetime | None = None,
) -> tuple[Loan, bool]:
    """Lend to a merchant: the schedule is built, the principal credited to its balance; returns (loan, created).

    Idempotent per (merchant, key). A POS loan is refused (``credit_line_exceeded``) beyond the
    credit line's available amount on ``request.start``, under ``policy``: by default its product's
    credit policy, or ``CreditPolicy()`` without a product. ``request.product`` names a loan product
    whose terms fill in what the request leaves out and bound what it gives (``lending.products``).
    """
    now = _now(now)
    key = parties.check_idempotency_key(request.key)
    product = None
    if request.product is not None:
        product = products.product_for_drawdown(conn, code=request.product)
    request = products.fill_terms(request, product)
    kind = _check_kind(request.kind)
    share = None
    if kind == "pos" and request.settlement_share is not None:  # a term loan is not repaid from settlement
        share = products.check_rate(
            request.settlement_share, "settlement_share", SETTLEMENT_SHARE_MAX, errors.SettlementShareInvalid
        )
    penalty_rate = products.check_rate(
        request.penalty_daily_rate, "penalty_daily_rate", Decimal("0.01"), errors.PenaltyRateInvalid
    )
    schedule = build_schedule(
        request.principal,
        _parse_annual_rate(request.annual_rate),
        request.periods,
        request.method,
        request.start,
        day_count=request.day_count,
        currency=request.currency,
    )
    allocate_repayment(1, (), order=request.allocation_order)  # refuses an order not the four components once each
    order = tuple(Component(c) for c in request.allocation_order)
    if product is not None:
        assert isinstance(request.periods, int)  # checked by build_schedule
        products.check_terms(
            product,
            kind=kind,
            currency=schedule.currency,
            principal=schedule.principal_minor,
            annual_rate=schedule.annual_rate,
            periods=request.periods,
            method=schedule.method,
            day_count=schedule.day_count,
            penalty_daily_rate=penalty_rate,
            allocation_order=order,
            settlement_share=share,
        )
    merchant = parties.get_merchant(conn, ref=request.merchant_ref)
    if request.mandate_ref is not None:
        # the mandate must be one of the borrower's own: its debits are what withholding repays with
        mandates.get_mandate(conn, ref=request.mandate_ref, merchant_id=merchant.id)
    terms: dict[str, Any] = {
        "principal": schedule.principal_minor,
        "annual_rate": str(schedule.annual_rate),
        "periods": len(schedule.periods),
        "method": str(schedule.method),
        "day_count": str(schedule.day_count),
        "start": schedule.start.isoformat(),
        "currency": schedule.currency,
        "penalty_daily_rate": str(penalty_rate),
        "order": [str(c) for c in order],
        "settlement_share": str(share) if share is not None else None,
        "mandate": request.mandate_ref,
    }
    if product is not None:  # a drawdown without a product hashes as it always did
        terms["product"] = product.code
    digest = request_digest(terms)
    existing = conn.execute(sa.select(loans).where(loans.c.merchant_id == merchant.id, loans.c.key == key)).first()
    if existing is not None:
        if existing.request_hash != digest:
            raise errors.LoanKeyConflict(f"key {key!r} was used for another loan ({existing.ref})", field="key")
        return _loan_of(existing, _installment_rows(conn, existing.id)), False
    if product is not None and product.state != "active":
        raise errors.LoanProductRetired(f"loan product {product.code} is retired", field="product")
    if policy is None:
        policy = product.credit_policy if product is not None and product.credit_policy else CreditPolicy()
    if kind == "pos":
        line = credit_line(conn, merchant_ref=merchant.ref, as_of=schedule.start, policy=policy)
        if schedule.principal_minor > line.available:
            raise errors.CreditLineExceeded(
                f"the credit line has {line.available} available, {schedule.principal_minor} was asked for",
                field="principal",
                available=line.available,
            )
    ref = ids.new_id("loan")
    principal_account = account_ref(conn, _principal_account(merchant.ref, kind, schedule.currency), now)
    balance_account = account_ref(conn, payment_postings.merchant_pending_request(merchant.ref, schedule.currency), now)
    entry = ledger.post_entry(
        conn,
        request=EntryRequest(
            idempotency_key=f"loan:{ref}:disburse",
            business_code=CODE_DISBURSEMENT,
            legs=(
                Leg(principal_account, "debit", schedule.principal_minor, schedule.currency),
                Leg(balance_account, "credit", schedule.principal_minor, schedule.currency),
            ),
            metadata={"loan": ref, "merchant": merchant.ref, "kind": kind},
        ),
        now=now,
    ).entry
    loan_id = conn.execute(
        loans.insert()
        .values(
            ref=ref,
            merchant_id=merchant.id,
            merchant_ref=merchant.ref,
            key=key,
            request_hash=digest,
            kind=kind,
            currency=schedule.currency,
            principal=schedule.principal_minor,
            annual_rate=str(schedule.annual_rate),
            method=str(schedule.method),
            day_count=str(schedule.day_count),
            periods=len(schedule.periods),
            start_date=schedule.start,
            penalty_daily_rate=str(penalty_rate),
            allocation_order=",".join(str(c) for c in order),
            settlement_share=str(share) if share is not None else None,
            mandate_ref=request.mandate_ref,
            product_code=product.code if product is not None else None,
            state="active",
            disbursement_entry_ref=entry.ref,
            created_at=now,
        )
        .returning(loans.c.id)
    ).scalar_one()
    conn.execute(
        loan_installments.insert(),
        [
            {
                "loan_id": loan_id,
                "period": period.period,
                "due_date": period.due_date,
                "principal": period.principal,
                "interest": period.interest,
            }
            for period in schedule.periods
        ],
    )
    return get_loan(conn, ref=ref), True


# --------------------------------------------------------------------------- accrual


def _accrue_rows(
    conn: Connection, loan: Row[Any], rows: Sequence[SimpleNamespace], as_of: dt.date, now: dt.datetime
) -> dict[int, SimpleNamespace]:
    """Penalty on overdue principal through ``as_of``, and the interest of periods due by then, into the ledger.

    Returns the installments as they are after it, by period.
    """
    rate = Decimal(loan.penalty_daily_rate)
    recognised = 0
    fresh: dict[int, SimpleNamespace] = {}
    for row in rows:
        values: dict[str, Any] = {}
        if row.paid_at is None and row.due_date < as_of:
            start = max(row.penalty_through or row.due_date, row.due_date)
            overdue_principal = row.principal - row.principal_paid
            days = (as_of - start).days
            if days > 0:
                values["penalty"] = row.penalty + penalty_interest(overdue_principal, rate, days)
                values["penalty_through"] = as_of
        penalty = values.get("penalty", row.penalty)
        due_interest = row.interest if row.due_date <= as_of else 0
        target = max(row.interest_accrued, due_interest + penalty) if row.paid_at is None else row.interest_accrued
        if target > row.interest_accrued:
            values["interest_accrued"] = target
            recognised += target - row.interest_accrued
        if values:
            conn.execute(loan_installments.update().where(loan_installments.c.id == row.id).values(**values))
        vars(row).update(values)
        fresh[row.period] = row
    if recognised:
        _post_accrual(
            conn, loan, recognised, f"loan:{loan.ref}:accrue:{as_of.isoformat()}:{_accrued_total(fresh)}", now
        )
    return fresh


def _accrued_total(rows: dict[int, SimpleNamespace]) -> int:
    return sum(row.interest_accrued for row in rows.values())


def _post_accrual(conn: Connection, loan: Row[Any], amount: int, key: str, now: dt.datetime) -> None:
    receivable = account_ref(conn, _interest_receivable(loan.merchant_ref, loan.currency), now)
    income = account_ref(conn, interest_income_account(loan.currency), now)
    ledger.post_entry(
        conn,
        request=EntryRequest(
            idempotency_key=key,
            business_code=CODE_ACCRUAL,
            legs=(Leg(receivable, "debit", amount, loan.currency), Leg(income, "credit", amount, loan.currency)),
            metadata={"loan": loan.ref},
        ),
        now=now,
    )


def accrue(conn: Connection, *, as_of: dt.date, now: dt.datetime | None = None) -> int:
    """Recognise, for every active loan, the interest of periods due by ``as_of`` and penalty through it.

    What the worker runs once a day; safe to run again (it recognises only what is new). Returns how
    many loans had something recognised.
    """
    as_of = _check_as_of(as_of)
    now = _now(now)
    touched = 0
    for loan in conn.execute(sa.select(loans).where(loans.c.state == "active").order_by(loans.c.id)).all():
        locked = _loan_row(conn, loan.ref, lock=True)
        rows = _installment_rows(conn, locked.id)
        before = sum(row.interest_accrued for row in rows)
        after = _accrued_total(_accrue_rows(conn, locked, rows, as_of, now))
        touched += after > before
    return touched


# --------------------------------------------------------------------------- repayment


def owed(conn: Connection, *, loan_ref: str, as_of: dt.date, through: dt.date | None = None) -> int:
    """What the loan owes on installments due by ``through`` (default ``as_of``), penalty through ``as_of``.

    Reads only: penalty not yet accrued is counted as it would be accrued.
    """
    as_of = _check_as_of(as_of)
    loan = _loan_row(conn, loan_ref)
    rate = Decimal(loan.penalty_daily_rate)
    through = through or as_of
    total = 0
    for row in _installment_rows(conn, loan.id):
        if row.paid_at is not None or row.due_date > through:
            continue
        penalty = row.penalty
        if row.due_date < as_of:
            days = (as_of - max(row.penalty_through or row.due_date, row.due_date)).days
            if days > 0:
                penalty += penalty_interest(row.principal - row.principal_paid, rate, days)
        total += row.principal - row.principal_paid + row.interest - row.interest_paid + penalty - row.penalty_paid
    return total


def repay(
    conn: Connection,
    *,
    loan_ref: str,
    amount: int,
    source: str,
    key: str,
    as_of: dt.date,
    business_code: str = CODE_REPAYMENT,
    now: dt.datetime | None = None,
) -> Repayment:
    """Apply a repayment, taken from the merchant's balance, to the loan; idempotent per (loan, key).

    First what is due by ``as_of`` (and the current period), in the loan's allocation order, oldest
    installment first; anything beyond prepays later principal, oldest period first; what is left
    after everything owed is the overpayment, not taken. Refused (``ledger`` errors) when the
    merchant's available balance is short of the part applied.
    """
    now = _now(now)
    if source not in SOURCES:
        raise errors.RepaymentSourceInvalid(f"source is one of {', '.join(SOURCES)}, not {source!r}", field="source")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise errors.RepaymentAmountInvalid(
            f"amount is a positive int of the minor unit, got {amount!r}", field="amount"
        )
    key = parties.check_idempotency_key(key)
    as_of = _check_as_of(as_of)
    loan = _loan_row(conn, loan_ref, lock=True)
    existing = conn.execute(
        sa.select(loan_repayments).where(loan_repayments.c.loan_id == loan.id, loan_repayments.c.key == key)
    ).first()
    if existing is not None:
        if (existing.amount, existing.source) != (amount, source):
            raise errors.RepaymentKeyConflict(f"key {key!r} was used for another repayment", field="key")
        return _repayment_of(existing, loan.ref, replayed=True)
    if loan.state != "active":
        raise errors.LoanSettled(f"loan {loan.ref} is settled; nothing is owed", field="loan")
    rows = _accrue_rows(conn, loan, _installment_rows(conn, loan.id), as_of, now)
    unpaid = [row for row in rows.values() if row.paid_at is None]
    current = next((row.due_date for row in unpaid if row.due_date >= as_of), as_of)
    eligible = [row for row in unpaid if row.due_date <= current]
    order = tuple(Component(c) for c in loan.allocation_order.split(","))
    dues = [
        InstallmentDue(
            period=row.period,
            due_date=row.due_date,
            penalty=row.penalty - row.penalty_paid,
            interest=row.interest - row.interest_paid,
            principal=row.principal - row.principal_paid,
        )
        for row in eligible
    ]
    paid: dict[int, dict[str, int]] = {row.period: {"penalty": 0, "interest": 0, "principal": 0} for row in unpaid}
    left = amount
    if dues:
        allocation = allocate_repayment(amount, dues, order=order)
        for item in allocation.applied:
            paid[item.period].update(penalty=item.penalty, interest=item.interest, principal=item.principal)
        left = allocation.overpayment
    for row in unpaid:  # prepayment: later principal, oldest period first
        if left == 0:
            break
        if row.due_date <= current:
            continue
        part = min(left, row.principal - row.principal_paid)
        paid[row.period]["principal"] += part
        left -= part
    applied = amount - left
    split = tuple({"period": period, **parts} for period, parts in sorted(paid.items()) if any(parts.values()))
    entry_ref = None
    if applied:
        entry_ref = _post_repayment(conn, loan, rows, paid, key, business_code, now)
    for row in unpaid:
        parts = paid[row.period]
        if not any(parts.values()):
            continue
        principal_paid = row.principal_paid + parts["principal"]
        interest_paid = row.interest_paid + parts["interest"]
        penalty_paid = row.penalty_paid + parts["penalty"]
        interest = row.interest
        if row.due_date > current and principal_paid == row.principal:
            interest = interest_paid  # prepaid: its principal was not lent over the period, so no interest is owed
        done = (principal_paid, interest_paid, penalty_paid) == (row.principal, interest, row.penalty)
        conn.execute(
            loan_installments.update()
            .where(loan_installments.c.id == row.id)
            .values(
                principal_paid=principal_paid,
                interest=interest,
                interest_paid=interest_paid,
                penalty_paid=penalty_paid,
                paid_at=now if done else None,
            )
        )
    ref = ids.new_id("lrp")
    conn.execute(
        loan_repayments.insert().values(
            ref=ref,
            loan_id=loan.id,
            key=key,
            source=source,
            amount=amount,
            applied=applied,
            overpayment=left,
            split=list(split),
            entry_ref=entry_ref,
            created_at=now,
        )
    )
    remaining = conn.execute(
        sa.select(sa.func.count()).where(loan_installments.c.loan_id == loan.id, loan_installments.c.paid_at.is_(None))
    ).scalar_one()
    if remaining == 0:
        conn.execute(loans.update().where(loans.c.id == loan.id).values(state="settled", settled_at=now))
    return Repayment(
        ref=ref,
        loan_ref=loan.ref,
        source=source,
        amount=amount,
        applied=applied,
        overpayment=left,
        split=split,
        entry_ref=entry_ref,
    )


def _post_repayment(
    conn: Connection,
    loan: Row[Any],
    rows: dict[int, SimpleNamespace],
    paid: dict[int, dict[str, int]],
    key: str,
    business_code: str,
    now: dt.datetime,
) -> str:
    """Recognise interest paid ahead of its due date, then post the repayment entry; returns its ref."""
    early = 0
    for period, parts in paid.items():
        row = rows[period]
        income_paid = row.interest_paid + row.penalty_paid + parts["interest"] + parts["penalty"]
        if income_paid > row.interest_accrued:
            early += income_paid - row.interest_accrued
            conn.execute(
                loan_installments.update().where(loan_installments.c.id == row.id).values(interest_accrued=income_paid)
            )
    if early:
        _post_accrual(conn, loan, early, f"loan:{loan.ref}:repay:{key}:accrue", now)
    principal = sum(parts["principal"] for parts in paid.values())
    income = sum(parts["interest"] + parts["penalty"] for parts in paid.values())
    currency = loan.currency
    legs = [
        Leg(
            account_ref(conn, payment_postings.merchant_pending_request(loan.merchant_ref, currency), now),
            "debit",
            principal + income,
            currency,
        )
    ]
    if principal:
        legs.append(
            Leg(
                account_ref(conn, _principal_account(loan.merchant_ref, loan.kind, currency), now),
                "credit",
                principal,
                currency,
            )
        )
    if income:
        legs.append(
            Leg(account_ref(conn, _interest_receivable(loan.merchant_ref, currency), now), "credit", income, currency)
        )
    return ledger.post_entry(
        conn,
        request=EntryRequest(
            idempotency_key=f"loan:{loan.ref}:repay:{key}",
            business_code=business_code,
            legs=tuple(legs),
            metadata={"loan": loan.ref, "key": key},
        ),
        now=now,
    ).entry.ref


def _repayment_of(row: Row[Any], loan_ref: str, *, replayed: bool = False) -> Repayment:
    return Repayment(
        ref=row.ref,
        loan_ref=loan_ref,
        source=row.source,
        amount=row.amount,
        applied=row.applied,
        overpayment=row.overpayment,
        split=tuple(row.split),
        entry_ref=row.entry_ref,
        replayed=replayed,
    )


def list_repayments(conn: Connection, *, loan_ref: str) -> list[Repayment]:
    """A loan's repayments, oldest first."""
    loan = _loan_row(conn, loan_ref)
    rows = conn.execute(
        sa.select(loan_repayments).where(loan_repayments.c.loan_id == loan.id).order_by(loan_repayments.c.id)
    )
    return [_repayment_of(row, loan.ref) for row in rows]


# --------------------------------------------------------------------------- delinquency


def aging(conn: Connection, *, as_of: dt.date) -> AgingReport:
    """Active loans by delinquency bucket (current, M1, M2, M3+) as of a date, with the principal outstanding."""
    as_of = _check_as_of(as_of)
    oldest = (
        sa.select(
            loan_installments.c.loan_id,
            sa.func.min(sa.case((loan_installments.c.due_date < as_of, loan_installments.c.due_date))).label("oldest"),
            sa.func.sum(loan_installments.c.principal - loan_installments.c.principal_paid).label("outstanding"),
        )
        .where(loan_installments.c.paid_at.is_(None))
        .group_by(loan_installments.c.loan_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(loans.c.ref, oldest.c.oldest, oldest.c.outstanding)
        .join(oldest, oldest.c.loan_id == loans.c.id)
        .where(loans.c.state == "active")
        .order_by(loans.c.id)
    )
    return aging_report(
        (LoanExposure(row.ref, row.oldest, int(row.outstanding)) for row in rows),
        as_of=as_of,
    )
