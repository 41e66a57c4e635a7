"""Lending's requests and results: what callers pass to ``lending.service`` and what it returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from zhangfang.lending.allocation import DEFAULT_ORDER, Component
from zhangfang.lending.schedule import DEFAULT_DAY_COUNT, DayCount, Method

# The terms of a drawdown that neither the request nor a product gives.
DEFAULT_METHOD = Method.EQUAL_INSTALLMENT
DEFAULT_KIND = "pos"
DEFAULT_CURRENCY = "CNY"
DEFAULT_PENALTY_DAILY_RATE = Decimal("0.0005")  # 万分之五 a day, a common contractual 罚息 rate
DEFAULT_SETTLEMENT_SHARE = Decimal("0.2")


class Unset(Enum):
    """The type of ``UNSET``: a drawdown term the request leaves out."""

    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, kw_only=True)
class LoanRequest:
    """A drawdown: the merchant borrows ``principal`` (minor units) on these terms, once per ``key``.

    ``kind`` ``pos`` (POS贷) is limited by the merchant's credit line and repaid
    first from its settlements (``settlement_share`` of each); ``term`` is a plain
    amortized loan. ``mandate_ref``: the withholding mandate (协议代扣) used on due
    dates for what settlements did not cover.

    ``product``: a loan product's code (``lending.products``). A term left ``UNSET`` is
    the product's (``annual_rate`` and ``periods`` only when the product allows a single
    value); without a product it is the ``DEFAULT_…`` above (``DEFAULT_ORDER``,
    ``DEFAULT_DAY_COUNT``), and ``annual_rate`` and ``periods`` must be given.
    ``settlement_share=None`` (not ``UNSET``) means a POS loan takes no share of settlements.
    """

    key: str
    merchant_ref: str
    principal: int
    start: dt.date
    annual_rate: Decimal | str | Unset = UNSET
    periods: int | Unset = UNSET
    method: Method | str | Unset = UNSET
    day_count: DayCount | str | Unset = UNSET
    kind: str | Unset = UNSET
    currency: str | Unset = UNSET
    penalty_daily_rate: Decimal | str | Unset = UNSET
    allocation_order: tuple[Component | str, ...] | Unset = UNSET
    settlement_share: Decimal | str | Unset | None = UNSET
    mandate_ref: str | None = None
    product: str | None = None


@dataclass(frozen=True)
class CreditPolicy:
    """POS credit line (授信额度): ``ratio`` × the merchant's settled volume over the last ``lookback_days``,
    rounded down to ``step`` and capped at ``maximum``, less what its active loans still owe in principal."""

    ratio: Decimal = Decimal("0.5")
    lookback_days: int = 90
    step: int = 100_00
    maximum: int = 1_000_000_00


@dataclass(frozen=True, kw_only=True)
class LoanProductRequest:
    """A loan product (贷款产品) to add to the catalogue: the terms and bounds drawdowns naming it lend on.

    ``code``: its URL-safe name (``pos-90d``), unique. Rates are decimal text, amounts ``int``
    minor units. ``settlement_share`` and the ``credit_…`` fields are a POS product's (a ``term``
    product has none: they are ignored); a ``credit_…`` field left ``None`` is ``CreditPolicy``'s default.
    """

    code: str
    name: str
    kind: str
    annual_rate_min: Decimal | str
    annual_rate_max: Decimal | str
    periods_min: int
    periods_max: int
    principal_min: int
    principal_max: int
    currency: str = DEFAULT_CURRENCY
    method: Method | str = DEFAULT_METHOD
    day_count: DayCount | str = DEFAULT_DAY_COUNT
    penalty_daily_rate: Decimal | str = DEFAULT_PENALTY_DAILY_RATE
    allocation_order: tuple[Component | str, ...] = DEFAULT_ORDER
    settlement_share: Decimal | str | None = DEFAULT_SETTLEMENT_SHARE
    credit_ratio: Decimal | str | None = None
    credit_lookback_days: int | None = None
    credit_step: int | None = None
    credit_maximum: int | None = None


@dataclass(frozen=True, kw_only=True)
class LoanProduct:
    """A product of the catalogue, as stored; ``state`` ``active`` or ``retired`` (takes no new loans)."""

    code: str
    name: str
    kind: str
    currency: str
    method: Method
    day_count: DayCount
    annual_rate_min: Decimal
    annual_rate_max: Decimal
    periods_min: int
    periods_max: int
    principal_min: int
    principal_max: int
    penalty_daily_rate: Decimal
    allocation_order: tuple[Component, ...]
    settlement_share: Decimal | None
    credit_policy: CreditPolicy | None
    state: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types (amounts in minor units, rates as decimal strings)."""
        policy = self.credit_policy
        return {
            "code": self.code,
            "name": self.name,
            "kind": self.kind,
            "currency": self.currency,
            "method": str(self.method),
            "day_count": str(self.day_count),
            "annual_rate_min": str(self.annual_rate_min),
            "annual_rate_max": str(self.annual_rate_max),
            "periods_min": self.periods_min,
            "periods_max": self.periods_max,
            "principal_min": self.principal_min,
            "principal_max": self.principal_max,
            "penalty_daily_rate": str(self.penalty_daily_rate),
            "allocation_order": [str(c) for c in self.allocation_order],
            "settlement_share": str(self.settlement_share) if self.settlement_share is not None else None,
            "credit_ratio": str(policy.ratio) if policy else None,
            "credit_lookback_days": policy.lookback_days if policy else None,
            "credit_step": policy.step if policy else None,
            "credit_maximum": policy.maximum if policy else None,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


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
    product_code: str | None = None
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
            "product": self.product_code,
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
