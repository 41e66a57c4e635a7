"""Lending's requests and results: what callers pass to ``lending.service`` and what it returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from zhangfang.lending.allocation import DEFAULT_ORDER, Component
from zhangfang.lending.schedule import DEFAULT_DAY_COUNT, DayCount, Method


@dataclass(frozen=True)
class LoanRequest:
    """A drawdown: the merchant borrows ``principal`` (minor units) on these terms, once per ``key``.

    ``kind`` ``pos`` (POS贷) is limited by the merchant's credit line and repaid
    first from its settlements (``settlement_share`` of each); ``term`` is a plain
    amortized loan. ``mandate_ref``: the withholding mandate (协议代扣) used on due
    dates for what settlements did not cover.
    """

    key: str
    merchant_ref: str
    principal: int
    annual_rate: Decimal | str
    periods: int
    start: dt.date
    method: Method | str = Method.EQUAL_INSTALLMENT
    day_count: DayCount | str = DEFAULT_DAY_COUNT
    kind: str = "pos"
    currency: str = "CNY"
    penalty_daily_rate: Decimal | str = Decimal("0.0005")  # 万分之五 a day, a common contractual 罚息 rate
    allocation_order: tuple[Component | str, ...] = DEFAULT_ORDER
    settlement_share: Decimal | str | None = Decimal("0.2")
    mandate_ref: str | None = None


@dataclass(frozen=True)
class CreditPolicy:
    """POS credit line (授信额度): ``ratio`` × the merchant's settled volume over the last ``lookback_days``,
    rounded down to ``step`` and capped at ``maximum``, less what its active loans still owe in principal."""

    ratio: Decimal = Decimal("0.5")
    lookback_days: int = 90
    step: int = 100_00
    maximum: int = 1_000_000_00


@dataclass(frozen=True)
class CreditLine:
    merchant_ref: str
    as_of: dt.date
    settled_volume: int
    limit: int
    outstanding_principal: int

    @property
    def available(self) -> int:
        return max(0, self.limit - self.outstanding_principal)

    def as_json(self) -> dict[str, Any]:
        return {**vars(self), "as_of": self.as_of.isoformat(), "available": self.available}


@dataclass(frozen=True)
class Installment:
    """One period of a loan's schedule with what has been accrued and paid on it."""

    period: int
    due_date: dt.date
    principal: int
    interest: int
    penalty: int
    principal_paid: int
    interest_paid: int
    penalty_paid: int
    paid_at: dt.datetime | None

    @property
    def owed(self) -> int:
        """What is still unpaid on the period: principal, interest and penalty accrued so far."""
        return (
            self.principal - self.principal_paid + self.interest - self.interest_paid + self.penalty - self.penalty_paid
        )

    def state(self, as_of: dt.date) -> str:
        """``paid``, ``overdue`` (due before ``as_of`` and unpaid) or ``pending``."""
        if self.paid_at is not None:
            return "paid"
        return "overdue" if self.due_date < as_of else "pending"

    def as_json(self, as_of: dt.date) -> dict[str, Any]:
        return {
            **{k: v for k, v in vars(self).items() if k != "paid_at"},
            "due_date": self.due_date.isoformat(),
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
            "owed": self.owed,
            "state": self.state(as_of),
        }


@dataclass(frozen=True)
class Loan:
    id: int
    ref: str
    merchant_id: int
    merchant_ref: str
    kind: str
    currency: str
    principal: int
    annual_rate: Decimal
    method: str
    day_count: str
    periods: int
    start_date: dt.date
    penalty_daily_rate: Decimal
    allocation_order: tuple[Component, ...]
    settlement_share: Decimal | None
    mandate_ref: str | None
    state: str
    disbursement_entry_ref: str
    created_at: dt.datetime
    settled_at: dt.datetime | None
    installments: tuple[Installment, ...] = field(default=())

    @property
    def outstanding_principal(self) -> int:
        return sum(item.principal - item.principal_paid for item in self.installments)

    def as_json(self, as_of: dt.date) -> dict[str, Any]:
        """Plain JSON types (amounts in minor units, rates as decimal strings)."""
        return {
            "id": self.ref,
            "merchant": self.merchant_ref,
            "kind": self.kind,
            "currency": self.currency,
            "principal": self.principal,
            "annual_rate": str(self.annual_rate),
            "method": self.method,
            "day_count": self.day_count,
            "periods": self.periods,
            "start_date": self.start_date.isoformat(),
            "penalty_daily_rate": str(self.penalty_daily_rate),
            "allocation_order": [str(c) for c in self.allocation_order],
            "settlement_share": str(self.settlement_share) if self.settlement_share is not None else None,
            "mandate": self.mandate_ref,
            "state": self.state,
            "disbursement_entry": self.disbursement_entry_ref,
            "outstanding_principal": self.outstanding_principal,
            "installments": [item.as_json(as_of) for item in self.installments],
        }


@dataclass(frozen=True)
class Repayment:
    ref: str
    loan_ref: str
    source: str
    amount: int
    applied: int
    overpayment: int
    split: tuple[dict[str, int], ...]
    entry_ref: str | None
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {**vars(self), "split": list(self.split)}
