"""Repayment allocation (还款冲销顺序): which of the amounts due a repayment pays, and penalty interest (罚息).

A loan owes, per installment, four components: ``penalty``, ``fee``,
``interest`` and ``principal`` (``InstallmentDue``, each an ``int`` of the
minor unit still unpaid). ``allocate_repayment`` pays them from one repayment
amount in an order the product chooses, and returns what went to each
installment and component (``Allocation.applied``) and what was left over
(``Allocation.overpayment``).

Order: ``DEFAULT_ORDER`` is penalty, fee, interest, principal (Fineract's
``mifos-standard-strategy``); any order of the four may be given, each once
(``("interest", "principal", "penalty", "fee")``). Installments are paid
oldest first: by due date, then period number. Two modes:

======================  ==============================================================================
``installment-first``   the default: the oldest installment is paid in full, component by component in
                        the order, before the next one gets anything (Fineract's standard strategy)
``component-first``     the first component of the order is paid on every installment, oldest first,
                        then the second, and so on; with the default order this pays all penalties,
                        fees and interest before any principal (Fineract's ``rbi-india-strategy``)
======================  ==============================================================================

Partial repayments: whatever is less than the total due stops where it runs
out; the component it stops in is paid in part. Overpayment: the amount beyond
everything due is not applied here; the caller decides what it becomes (a
prepayment of future principal, a credit balance, a refund) — this module only
reports it, so no money is made up or lost.

Penalty interest (``penalty_interest``): simple interest at a daily rate on the
*overdue principal* over the days late, rounded once to the fen. Principal,
not the overdue total: 罚息 in Chinese lending accrues on overdue principal;
interest on overdue interest (复利) is a separate charge a product may add by
calling the function again on the overdue interest. Interest is never charged
on penalties or fees.

Guarantees
- Σ applied (every installment, every component) + overpayment == the repayment.
- No component is paid more than is due on it, and no amount is negative.
- A component is paid only once every component before it in the allocation
  sequence is paid in full; overpayment is positive only when everything due
  is paid.

Errors: see ``lending.errors`` (the catalogue, in order of precedence).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any

from zhangfang.lending import errors
from zhangfang.lending.schedule import DEFAULT_ROUNDING, check_rounding, round_fraction

__all__ = [
    "DEFAULT_ORDER",
    "PENALTY_DAILY_RATE_MAX",
    "Allocation",
    "AllocationMode",
    "AppliedToInstallment",
    "Component",
    "InstallmentDue",
    "allocate_repayment",
    "days_late",
    "penalty_interest",
]

# 1 % a day is 365 % a year; beyond any lawful penalty rate, so larger is a typo.
PENALTY_DAILY_RATE_MAX = Decimal("0.01")


class Component(StrEnum):
    """A kind of amount an installment owes."""

    PENALTY = "penalty"  # 罚息
    FEE = "fee"  # 费用
    INTEREST = "interest"  # 利息
    PRINCIPAL = "principal"  # 本金


class AllocationMode(StrEnum):
    """Whether the order runs within each installment, or across all installments component by component."""

    INSTALLMENT_FIRST = "installment-first"
    COMPONENT_FIRST = "component-first"


DEFAULT_ORDER: tuple[Component, ...] = (Component.PENALTY, Component.FEE, Component.INTEREST, Component.PRINCIPAL)


@dataclass(frozen=True, slots=True)
class InstallmentDue:
    """What one installment still owes, per component (``int`` >= 0 of the minor unit)."""

    period: int
    due_date: dt.date
    penalty: int = 0
    fee: int = 0
    interest: int = 0
    principal: int = 0

    @property
    def total(self) -> int:
        return self.penalty + self.fee + self.interest + self.principal


@dataclass(frozen=True, slots=True)
class AppliedToInstallment:
    """What a repayment paid on one installment, per component."""

    period: int
    due_date: dt.date
    penalty: int = 0
    fee: int = 0
    interest: int = 0
    principal: int = 0

    @property
    def total(self) -> int:
        return self.penalty + self.fee + self.interest + self.principal


@dataclass(frozen=True, slots=True)
class Allocation:
    """The split of a repayment: one entry per installment given (oldest first, zeros included), and the rest."""

    amount: int
    applied: tuple[AppliedToInstallment, ...]
    overpayment: int

    @property
    def total_applied(self) -> int:
        return sum(item.total for item in self.applied)


# --------------------------------------------------------------------------- checks


def _check_amount(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.AmountMustBeInteger(
            f"{field} is an int of the minor unit (fen), got {type(value).__name__}", field=field
        )
    return value


def _check_dues(dues: Any) -> list[InstallmentDue]:
    if isinstance(dues, str | bytes) or not isinstance(dues, Iterable):
        raise errors.InstallmentDueInvalid("dues is a sequence of InstallmentDue", field="dues")
    checked: list[InstallmentDue] = []
    seen: set[int] = set()
    for index, due in enumerate(dues):
        field = f"dues[{index}]"
        if not isinstance(due, InstallmentDue):
            raise errors.InstallmentDueInvalid(f"{field} is an InstallmentDue, got {type(due).__name__}", field=field)
        if isinstance(due.due_date, dt.datetime) or not isinstance(due.due_date, dt.date):
            raise errors.InstallmentDueInvalid(f"{field}.due_date is a datetime.date", field=f"{field}.due_date")
        if isinstance(due.period, bool) or not isinstance(due.period, int):
            raise errors.InstallmentDueInvalid(f"{field}.period is an int", field=f"{field}.period")
        for component in Component:
            amount = getattr(due, component.value)
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                raise errors.InstallmentDueInvalid(
                    f"{field}.{component.value} is an int >= 0 of the minor unit, got {amount!r}",
                    field=f"{field}.{component.value}",
                )
        if due.period in seen:
            raise errors.InstallmentDueInvalid(
                f"{field}: period {due.period} is given twice", field=f"{field}.period", period=due.period
            )
        seen.add(due.period)
        checked.append(due)
    return checked


def _check_order(order: Any) -> tuple[Component, ...]:
    message = "order names each of penalty, fee, interest, principal exactly once"
    if isinstance(order, str | bytes) or not isinstance(order, Sequence):
        raise errors.AllocationOrderInvalid(message, field="order")
    try:
        parsed = tuple(Component(item) for item in order)
    except ValueError:
        raise errors.AllocationOrderInvalid(f"{message}, got {list(order)!r}", field="order") from None
    if sorted(parsed) != sorted(Component):
        raise errors.AllocationOrderInvalid(f"{message}, got {[str(c) for c in parsed]!r}", field="order")
    return parsed


def _check_mode(mode: Any) -> AllocationMode:
    try:
        return AllocationMode(mode)
    except ValueError:
        known = ", ".join(m.value for m in AllocationMode)
        raise errors.AllocationModeUnknown(f"mode must be one of {known}, got {mode!r}", field="mode") from None


# --------------------------------------------------------------------------- allocation


def allocate_repayment(
    amount_minor: int,
    dues: Sequence[InstallmentDue],
    *,
    order: Sequence[Component | str] = DEFAULT_ORDER,
    mode: AllocationMode | str = AllocationMode.INSTALLMENT_FIRST,
) -> Allocation:
    """Returns how ``amount_minor`` pays ``dues`` in ``order`` (oldest installment first), and the overpayment."""
    amount_minor = _check_amount(amount_minor, "amount")
    if amount_minor < 1:
        raise errors.AmountMustBePositive(f"amount must be positive, got {amount_minor}", field="amount")
    checked = sorted(_check_dues(dues), key=lambda due: (due.due_date, due.period))
    components = _check_order(order)
    mode = _check_mode(mode)

    if mode is AllocationMode.INSTALLMENT_FIRST:
        sequence = [(index, component) for index in range(len(checked)) for component in components]
    else:
        sequence = [(index, component) for component in components for index in range(len(checked))]
    paid: list[dict[Component, int]] = [dict.fromkeys(Component, 0) for _ in checked]
    left = amount_minor
    for index, component in sequence:
        if left == 0:
            break
        part = min(left, getattr(checked[index], component.value))
        paid[index][component] = part
        left -= part

    applied = tuple(
        AppliedToInstallment(period=due.period, due_date=due.due_date, **{c.value: paid[i][c] for c in Component})
        for i, due in enumerate(checked)
    )
    allocation = Allocation(amount=amount_minor, applied=applied, overpayment=left)
    assert allocation.total_applied + allocation.overpayment == amount_minor
    assert left == 0 or allocation.total_applied == sum(due.total for due in checked)
    return allocation


# --------------------------------------------------------------------------- penalty interest


def days_late(due_date: dt.date, as_of: dt.date) -> int:
    """Returns the days from ``due_date`` to ``as_of``: 0 on the due date and before it."""
    for value, field in ((due_date, "due_date"), (as_of, "as_of")):
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise errors.AsOfDateInvalid(f"{field} is a datetime.date, not {type(value).__name__}", field=field)
    return max((as_of - due_date).days, 0)


def penalty_interest(
    overdue_principal_minor: int,
    daily_rate: Decimal,
    days: int,
    *,
    rounding: str = DEFAULT_ROUNDING,
) -> int:
    """Returns the penalty interest on overdue principal: principal × daily rate × days, rounded once.

    Simple interest over the whole span, not a sum of daily roundings: 1.00 at 0.05 % a day is
    0.05 fen a day, and 30 days of it is 1.5 fen, which rounds to 2 (half even) rather than 0.
    """
    overdue_principal_minor = _check_amount(overdue_principal_minor, "overdue_principal")
    if overdue_principal_minor < 0:
        raise errors.OverdueAmountInvalid(
            f"overdue principal must not be negative, got {overdue_principal_minor}", field="overdue_principal"
        )
    if not isinstance(daily_rate, Decimal) or not daily_rate.is_finite():
        raise errors.PenaltyRateInvalid(
            f"daily rate is a finite Decimal such as 0.0005, never a float; got {daily_rate!r}", field="daily_rate"
        )
    if not Decimal(0) <= daily_rate <= PENALTY_DAILY_RATE_MAX:
        raise errors.PenaltyRateInvalid(
            f"daily rate must be from 0 to {PENALTY_DAILY_RATE_MAX}, got {daily_rate}", field="daily_rate"
        )
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise errors.DaysLateInvalid(f"days late is an int >= 0, got {days!r}", field="days")
    rounding = check_rounding(rounding)
    return round_fraction(overdue_principal_minor * Fraction(daily_rate) * days, rounding)
