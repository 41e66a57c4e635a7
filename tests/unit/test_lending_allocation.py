"""Repayment allocation and penalty interest, without a database: ``lending.allocation``.

Amounts are fen: 5_00 is 5.00 yuan. Worked figures are beside each test; the
properties check that a repayment is always accounted for to the fen.
"""

from __future__ import annotations

import datetime as dt
import decimal
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.lending import errors
from zhangfang.lending.allocation import (
    DEFAULT_ORDER,
    AllocationMode,
    AppliedToInstallment,
    Component,
    InstallmentDue,
    allocate_repayment,
    days_late,
    penalty_interest,
)

FEB = dt.date(2026, 2, 15)
MAR = dt.date(2026, 3, 15)
APR = dt.date(2026, 4, 15)

# Two overdue installments and one not yet due of a 10000.00 equal-installment loan (see
# test_lending_schedule): February owes a 5.00 penalty, a 2.00 fee, 100.00 interest, 788.49 principal;
# March a 1.00 penalty, 92.12 interest and 796.37 principal; April 84.15 interest and 804.34 principal.
FEB_DUE = InstallmentDue(period=1, due_date=FEB, penalty=5_00, fee=2_00, interest=100_00, principal=788_49)
MAR_DUE = InstallmentDue(period=2, due_date=MAR, penalty=1_00, interest=92_12, principal=796_37)
APR_DUE = InstallmentDue(period=3, due_date=APR, interest=84_15, principal=804_34)
DUES = [FEB_DUE, MAR_DUE, APR_DUE]
TOTAL_DUE = 895_49 + 889_49 + 888_49  # 2673.47


def applied(allocation) -> list[tuple[int, int, int, int]]:
    """(penalty, fee, interest, principal) applied per installment."""
    return [(a.penalty, a.fee, a.interest, a.principal) for a in allocation.applied]


def test_the_default_order_pays_penalty_fee_interest_then_principal_of_the_oldest_installment_first():
    # 1000.00: February in full (5.00 + 2.00 + 100.00 + 788.49 = 895.49), leaving 104.51 for March:
    # its penalty 1.00, its interest 92.12, and 104.51 − 1.00 − 92.12 = 11.39 of its principal.
    allocation = allocate_repayment(1000_00, DUES)
    assert DEFAULT_ORDER == (Component.PENALTY, Component.FEE, Component.INTEREST, Component.PRINCIPAL)
    assert applied(allocation) == [(5_00, 2_00, 100_00, 788_49), (1_00, 0, 92_12, 11_39), (0, 0, 0, 0)]
    assert allocation.overpayment == 0 and allocation.total_applied == 1000_00
    assert allocation.applied[1] == AppliedToInstallment(2, MAR, penalty=1_00, interest=92_12, principal=11_39)


def test_a_partial_repayment_stops_inside_the_component_it_runs_out_in():
    # 50.00: February's penalty 5.00 and fee 2.00, then 43.00 of its 100.00 interest; no principal.
    allocation = allocate_repayment(50_00, DUES)
    assert applied(allocation) == [(5_00, 2_00, 43_00, 0), (0, 0, 0, 0), (0, 0, 0, 0)]
    assert allocation.overpayment == 0


def test_an_overpayment_pays_everything_due_and_reports_the_rest_unapplied():
    # 3000.00 against 2673.47 due: everything is paid and 326.53 is left for the caller to decide on.
    allocation = allocate_repayment(3000_00, DUES)
    assert applied(allocation) == [(5_00, 2_00, 100_00, 788_49), (1_00, 0, 92_12, 796_37), (0, 0, 84_15, 804_34)]
    assert allocation.total_applied == TOTAL_DUE == 2673_47 and allocation.overpayment == 326_53
    # Paying exactly what is due leaves no overpayment.
    assert allocate_repayment(TOTAL_DUE, DUES).overpayment == 0


def test_a_custom_order_pays_interest_and_principal_before_penalty_and_fee():
    # Order interest, principal, penalty, fee; 900.00: February's interest 100.00 and principal 788.49
    # (888.49), then its penalty 5.00 and fee 2.00 (895.49 in all); the last 4.51 goes to March's interest.
    order = ("interest", "principal", "penalty", "fee")
    allocation = allocate_repayment(900_00, DUES, order=order)
    assert applied(allocation) == [(5_00, 2_00, 100_00, 788_49), (0, 0, 4_51, 0), (0, 0, 0, 0)]
    # 890.00 stops before February's penalty is paid in full: 888.49 then 1.51 of the 5.00 penalty.
    assert applied(allocate_repayment(890_00, DUES, order=order))[0] == (1_51, 0, 100_00, 788_49)


def test_component_first_pays_every_penalty_fee_and_interest_before_any_principal():
    # rbi-india style: penalties 5.00 + 1.00, fee 2.00, interest 100.00 + 92.12 + 84.15 = 284.27 first;
    # 500.00 − 284.27 = 215.73 goes to February's principal.
    allocation = allocate_repayment(500_00, DUES, mode="component-first")
    assert applied(allocation) == [(5_00, 2_00, 100_00, 215_73), (1_00, 0, 92_12, 0), (0, 0, 84_15, 0)]
    assert allocate_repayment(500_00, DUES, mode=AllocationMode.COMPONENT_FIRST) == allocation


def test_installments_are_paid_oldest_first_whatever_order_they_are_given_in():
    allocation = allocate_repayment(1000_00, [APR_DUE, MAR_DUE, FEB_DUE])
    assert [a.period for a in allocation.applied] == [1, 2, 3]
    assert allocation == allocate_repayment(1000_00, DUES)


def test_nothing_due_makes_the_whole_repayment_an_overpayment():
    allocation = allocate_repayment(100_00, [])
    assert allocation.applied == () and allocation.overpayment == 100_00
    zero = InstallmentDue(period=1, due_date=FEB)
    assert allocate_repayment(1, [zero]).overpayment == 1


@pytest.mark.parametrize(
    "call, error, field",
    [
        (lambda: allocate_repayment(10.0, DUES), errors.AmountMustBeInteger, "amount"),
        (lambda: allocate_repayment(0, DUES), errors.AmountMustBePositive, "amount"),
        (lambda: allocate_repayment(-1, DUES), errors.AmountMustBePositive, "amount"),
        (lambda: allocate_repayment(1, "dues"), errors.InstallmentDueInvalid, "dues"),
        (lambda: allocate_repayment(1, [{"period": 1}]), errors.InstallmentDueInvalid, "dues[0]"),
        (
            lambda: allocate_repayment(1, [InstallmentDue(1, FEB, interest=-1)]),
            errors.InstallmentDueInvalid,
            "dues[0].interest",
        ),
        (
            lambda: allocate_repayment(1, [InstallmentDue(1, FEB, fee=1.5)]),
            errors.InstallmentDueInvalid,
            "dues[0].fee",
        ),
        (lambda: allocate_repayment(1, [FEB_DUE, FEB_DUE]), errors.InstallmentDueInvalid, "dues[1].period"),
        (
            lambda: allocate_repayment(1, DUES, order=("penalty", "fee", "interest")),
            errors.AllocationOrderInvalid,
            "order",
        ),
        (
            lambda: allocate_repayment(1, DUES, order=("fee", "fee", "interest", "principal")),
            errors.AllocationOrderInvalid,
            "order",
        ),
        (
            lambda: allocate_repayment(1, DUES, order=("tax", "fee", "interest", "principal")),
            errors.AllocationOrderInvalid,
            "order",
        ),
        (lambda: allocate_repayment(1, DUES, order="penalty"), errors.AllocationOrderInvalid, "order"),
        (lambda: allocate_repayment(1, DUES, mode="oldest"), errors.AllocationModeUnknown, "mode"),
    ],
)
def test_bad_allocations_are_refused_with_a_stable_code(call, error, field):
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error and caught.value.field == field


# --------------------------------------------------------------------------- properties

amounts = st.integers(0, 10**9)
dues_strategy = st.lists(
    st.builds(
        InstallmentDue,
        period=st.integers(1, 10**6),
        due_date=st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)),
        penalty=amounts,
        fee=amounts,
        interest=amounts,
        principal=amounts,
    ),
    max_size=8,
    unique_by=lambda due: due.period,
)
orders = st.permutations(list(Component))


@given(
    amount=st.integers(1, 10**10),
    dues=dues_strategy,
    order=orders,
    mode=st.sampled_from(list(AllocationMode)),
)
def test_a_repayment_is_applied_or_returned_to_the_fen_and_never_overpays_a_component(amount, dues, order, mode):
    allocation = allocate_repayment(amount, dues, order=order, mode=mode)
    assert allocation.total_applied + allocation.overpayment == amount
    by_period = {due.period: due for due in dues}
    sequence = []
    for item in allocation.applied:
        due = by_period[item.period]
        for component in Component:
            paid, owed = getattr(item, component.value), getattr(due, component.value)
            assert 0 <= paid <= owed
    # Walk the allocation sequence: once a component is paid short, nothing after it is paid.
    installments = list(allocation.applied)
    if mode is AllocationMode.INSTALLMENT_FIRST:
        sequence = [(i, c) for i in range(len(installments)) for c in order]
    else:
        sequence = [(i, c) for c in order for i in range(len(installments))]
    short = False
    for index, component in sequence:
        item = installments[index]
        paid, owed = getattr(item, component.value), getattr(by_period[item.period], component.value)
        if short:
            assert paid == 0
        short = short or paid < owed
    assert allocation.overpayment == 0 or not short
    assert [(a.due_date, a.period) for a in installments] == sorted((a.due_date, a.period) for a in installments)


# --------------------------------------------------------------------------- penalty interest (罚息)


def test_penalty_interest_on_overdue_principal_is_simple_interest_rounded_once():
    # 788.49 overdue at 0.05 % a day for 30 days: 78849 × 0.0005 × 30 = 1182.735 fen -> 11.83.
    assert penalty_interest(788_49, Decimal("0.0005"), 30) == 11_83
    # 10000.00 at 0.05 % a day for 30 days: 1000000 × 0.015 = 15000 fen = 150.00 exactly.
    assert penalty_interest(1_000_000, Decimal("0.0005"), 30) == 150_00
    # 1.00 at 0.05 % a day is 0.05 fen a day: rounding each day would give 0; 30 days are 1.5 fen,
    # which rounds (half even) to 2 once, or to 1 rounding down.
    assert penalty_interest(100, Decimal("0.0005"), 30) == 2
    assert penalty_interest(100, Decimal("0.0005"), 30, rounding=decimal.ROUND_DOWN) == 1
    assert penalty_interest(1_000_000, Decimal("0.0005"), 0) == 0
    assert penalty_interest(0, Decimal("0.0005"), 30) == 0


def test_days_late_count_from_the_day_after_the_due_date():
    assert days_late(FEB, FEB) == 0
    assert days_late(FEB, dt.date(2026, 2, 14)) == 0
    assert days_late(FEB, dt.date(2026, 2, 16)) == 1
    assert days_late(FEB, MAR) == 28


@pytest.mark.parametrize(
    "args, kwargs, error",
    [
        ((100.0, Decimal("0.0005"), 30), {}, errors.AmountMustBeInteger),
        ((-1, Decimal("0.0005"), 30), {}, errors.OverdueAmountInvalid),
        ((100, 0.0005, 30), {}, errors.PenaltyRateInvalid),
        ((100, Decimal("-0.0001"), 30), {}, errors.PenaltyRateInvalid),
        ((100, Decimal("0.02"), 30), {}, errors.PenaltyRateInvalid),
        ((100, Decimal("0.0005"), -1), {}, errors.DaysLateInvalid),
        ((100, Decimal("0.0005"), True), {}, errors.DaysLateInvalid),
        ((100, Decimal("0.0005"), 30), {"rounding": "nearest"}, errors.RoundingModeUnknown),
    ],
)
def test_bad_penalty_terms_are_refused(args, kwargs, error):
    with pytest.raises(error):
        penalty_interest(*args, **kwargs)


def test_days_late_refuses_a_datetime():
    with pytest.raises(errors.AsOfDateInvalid):
        days_late(FEB, dt.datetime(2026, 3, 1))
