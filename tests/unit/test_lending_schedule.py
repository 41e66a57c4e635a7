"""Amortization schedules, without a database: ``lending.schedule``.

Worked figures are computed by hand (the working is beside each); the split of
equal installments is checked against numpy-financial's ``pmt``/``ipmt``/``ppmt``
(a reference implementation, used only here as an oracle), and hypothesis
checks the schedule's guarantees for every method, day count and rounding mode.

Amounts are fen: 888_49 is 888.49 yuan.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
from decimal import Decimal
from fractions import Fraction

import numpy_financial as npf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zhangfang.lending import errors
from zhangfang.lending.schedule import (
    PERIOD_COUNT_MAX,
    PRINCIPAL_MINOR_MAX,
    ROUNDING_MODES,
    DayCount,
    Method,
    Period,
    build_schedule,
    due_date,
    round_fraction,
)
from zhangfang.money import CurrencyUnknown

R = Decimal
JAN_15 = dt.date(2026, 1, 15)


def rows(schedule) -> list[tuple[int, int, int, int]]:
    """(principal, interest, total, remaining_principal) per period."""
    return [(p.principal, p.interest, p.total, p.remaining_principal) for p in schedule.periods]


# --------------------------------------------------------------------------- equal installment (等额本息)


def test_equal_installment_of_10000_at_12_percent_over_12_months_matches_the_hand_computed_schedule():
    # Monthly rate r = 0.12 / 12 = 0.01; (1.01)^12 = 1.126825030...
    # EMI = 10000 × 0.01 × 1.126825 / 0.126825 = 888.48788... -> 888.49, fixed once.
    # Period 1: interest 10000.00 × 0.01 = 100.00; principal 888.49 − 100.00 = 788.49; remaining 9211.51.
    # Period 2: interest 9211.51 × 0.01 = 92.1151 -> 92.12; principal 796.37; remaining 8415.14.
    # Period 3: interest 8415.14 × 0.01 = 84.1514 -> 84.15; principal 804.34; remaining 7610.80.
    # Period 4: interest 76.108 -> 76.11; principal 812.38; remaining 6798.42.
    # ... (periods 5 to 11 the same way) remaining after period 11: 879.67.
    # Period 12: interest 879.67 × 0.01 = 8.7967 -> 8.80; principal = all that remains, 879.67;
    #            total 888.47 (two fen less than the EMI: the rounding drift, absorbed here).
    # Total interest: 12 × 888.49 − 0.02 − 10000.00 = 661.86.
    schedule = build_schedule(1_000_000, R("0.12"), 12, "equal-installment", JAN_15)
    got = rows(schedule)
    assert got[0] == (788_49, 100_00, 888_49, 9211_51)
    assert got[1] == (796_37, 92_12, 888_49, 8415_14)
    assert got[2] == (804_34, 84_15, 888_49, 7610_80)
    assert got[3] == (812_38, 76_11, 888_49, 6798_42)
    assert got[10] == (870_98, 17_51, 888_49, 879_67)  # remaining 1750.65 × 0.01 = 17.5065 -> 17.51
    assert got[11] == (879_67, 8_80, 888_47, 0)
    assert all(total == 888_49 for _, _, total, _ in got[:-1])
    assert schedule.total_interest == 661_86 and schedule.total == 10661_86 and schedule.total_principal == 1_000_000
    assert [p.due_date for p in schedule.periods][:3] == [
        dt.date(2026, 2, 15),
        dt.date(2026, 3, 15),
        dt.date(2026, 4, 15),
    ]
    assert schedule.periods[-1].due_date == dt.date(2027, 1, 15)


def test_equal_installment_of_a_one_million_30_year_mortgage_at_4_9_percent_pays_5307_27_a_month():
    # The figure every Chinese mortgage calculator prints for 100万, 30 年, 4.9 %, 等额本息: 月供 5307.27.
    # r = 0.049 / 12 = 0.00408333...; period 1 interest 1,000,000 × r = 4083.333... -> 4083.33;
    # principal 5307.27 − 4083.33 = 1223.94; remaining 998,776.06.
    # Period 2: interest 998,776.06 × r = 4078.3355 -> 4078.34; principal 1228.93.
    schedule = build_schedule(100_000_000, R("0.049"), 360, "equal-installment", JAN_15)
    got = rows(schedule)
    assert got[0] == (1223_94, 4083_33, 5307_27, 998776_06)
    assert got[1] == (1228_93, 4078_34, 5307_27, 997547_13)
    # The last: remaining 5283.62 × r = 21.5748 -> 21.57; total 5305.19.
    assert got[-1] == (5283_62, 21_57, 5305_19, 0)
    assert len(got) == 360 and schedule.periods[-1].due_date == dt.date(2056, 1, 15)


def test_equal_installment_under_actual_365_keeps_the_30_360_installment_and_charges_actual_days():
    # 3000.00 at 12 % over 3 months from 2026-01-15. EMI from the 30/360 pmt: r = 0.01,
    # 3000 × 0.01 × 1.030301 / 0.030301 = 1020.0663... -> 1020.07.
    # Period 1, Jan 15 -> Feb 15, 31 days: 3000.00 × 0.12 × 31 / 365 = 30.5753 -> 30.58;
    #           principal 1020.07 − 30.58 = 989.49; remaining 2010.51.
    # Period 2, Feb 15 -> Mar 15, 28 days: 2010.51 × 0.12 × 28 / 365 = 18.5077 -> 18.51;
    #           principal 1001.56; remaining 1008.95.
    # Period 3, Mar 15 -> Apr 15, 31 days: 1008.95 × 0.12 × 31 / 365 = 10.2830 -> 10.28;
    #           principal 1008.95 (all that remains); total 1019.23.
    schedule = build_schedule(300_000, R("0.12"), 3, "equal-installment", JAN_15, day_count="actual/365")
    assert rows(schedule) == [
        (989_49, 30_58, 1020_07, 2010_51),
        (1001_56, 18_51, 1020_07, 1008_95),
        (1008_95, 10_28, 1019_23, 0),
    ]


def test_equal_installment_at_a_zero_rate_repays_equal_parts_and_the_last_takes_the_remainder():
    # 1000.00 / 3 = 333.333... -> 333.33, 333.33, and the last 1000.00 − 666.66 = 333.34. No interest.
    schedule = build_schedule(100_000, R("0"), 3, "equal-installment", JAN_15)
    assert rows(schedule) == [(333_33, 0, 333_33, 666_67), (333_33, 0, 333_33, 333_34), (333_34, 0, 333_34, 0)]


def test_equal_installment_never_charges_negative_principal_when_a_long_month_costs_more_than_the_installment():
    # 1000.00 at 900 % a year over 12 months, actual/365. The 30/360 monthly rate is 0.75 and the EMI is
    # 1000 × 0.75 × 1.75^12 / (1.75^12 − 1) = 750.91...; January's 31 days cost 1000 × 9 × 31 / 365 = 764.38
    # more than the EMI, so period 1 repays no principal and its total is its interest.
    schedule = build_schedule(100_000, R("9"), 12, "equal-installment", JAN_15, day_count="actual/365")
    first = schedule.periods[0]
    assert (first.principal, first.interest, first.total) == (0, 764_38, 764_38)
    assert schedule.total_principal == 100_000


def test_a_tiny_principal_over_many_periods_is_repaid_early_and_the_later_periods_are_zero():
    # 10.00 over 600 months at 0 %: the installment 1000 / 600 = 1.67 fen rounds to 2 fen, which repays the
    # whole 10.00 in period 500; periods 501 to 600 owe nothing, and no period repays more than is left.
    schedule = build_schedule(1_000, R("0"), 600, "equal-installment", JAN_15)
    assert schedule.periods[498].remaining_principal == 2 and schedule.periods[499].remaining_principal == 0
    assert all(p.total == 0 for p in schedule.periods[500:]) and len(schedule.periods) == 600


# --------------------------------------------------------------------------- equal principal (等额本金)


def test_equal_principal_of_10000_at_12_percent_over_12_months_matches_the_hand_computed_schedule():
    # Principal 10000.00 / 12 = 833.333... -> 833.33 each; the last 10000.00 − 11 × 833.33 = 833.37.
    # Interest on the declining balance at 1 % a month:
    # Period 1: 10000.00 × 0.01 = 100.00; total 933.33; remaining 9166.67.
    # Period 2: 9166.67 × 0.01 = 91.6667 -> 91.67; total 925.00; remaining 8333.34.
    # Period 3: 8333.34 × 0.01 = 83.3334 -> 83.33; total 916.66; remaining 7500.01.
    # Period 12: 833.37 × 0.01 = 8.3337 -> 8.33; total 841.70.
    schedule = build_schedule(1_000_000, R("0.12"), 12, "equal-principal", JAN_15)
    got = rows(schedule)
    assert got[:3] == [
        (833_33, 100_00, 933_33, 9166_67),
        (833_33, 91_67, 925_00, 8333_34),
        (833_33, 83_33, 916_66, 7500_01),
    ]
    assert got[-1] == (833_37, 8_33, 841_70, 0)
    # Σ interest = 1 % × Σ outstanding = 1 % × (12 × 10000.00 − 833.33 × 66) = 1 % × 65000.22 = 650.00,
    # rounded per period: 100.00 + 91.67 + 83.33 + 75.00 + 66.67 + 58.33 + 50.00 + 41.67 + 33.33 + 25.00
    # + 16.67 + 8.33 = 650.00.
    assert schedule.total_interest == 650_00


def test_equal_principal_of_a_one_million_mortgage_starts_at_6861_11_and_falls_by_11_34_a_month():
    # 100万, 30 年, 4.9 %, 等额本金: principal 1,000,000 / 360 = 2777.78; first interest 4083.33;
    # 首月 6861.11. Period 2: 997,222.22 × 0.049 / 12 = 4071.9907 -> 4071.99; total 6849.77 (11.34 less).
    schedule = build_schedule(100_000_000, R("0.049"), 360, "equal-principal", JAN_15)
    assert rows(schedule)[:2] == [(2777_78, 4083_33, 6861_11, 997222_22), (2777_78, 4071_99, 6849_77, 994444_44)]
    # The last: 1,000,000.00 − 359 × 2777.78 = 2776.98; interest 2776.98 × r = 11.3393 -> 11.34.
    assert rows(schedule)[-1] == (2776_98, 11_34, 2788_32, 0)


def test_equal_principal_under_actual_365_from_a_month_end_counts_the_short_february():
    # 10000.00 at 12 % over 3 months from Jan 31: due Feb 28 (28 days), Mar 31 (31), Apr 30 (30).
    # Period 1: 10000.00 × 0.12 × 28 / 365 = 92.0548 -> 92.05; principal 3333.33.
    # Period 2: 6666.67 × 0.12 × 31 / 365 = 67.9455 -> 67.95.
    # Period 3: 3333.34 × 0.12 × 30 / 365 = 32.8768 -> 32.88; principal 3333.34.
    schedule = build_schedule(1_000_000, R("0.12"), 3, "equal-principal", dt.date(2026, 1, 31), day_count="actual/365")
    assert rows(schedule) == [
        (3333_33, 92_05, 3425_38, 6666_67),
        (3333_33, 67_95, 3401_28, 3333_34),
        (3333_34, 32_88, 3366_22, 0),
    ]
    assert [p.due_date for p in schedule.periods] == [dt.date(2026, 2, 28), dt.date(2026, 3, 31), dt.date(2026, 4, 30)]


# --------------------------------------------------------------------------- interest first (先息后本)


def test_interest_first_pays_interest_each_month_and_all_the_principal_in_the_last():
    # 10000.00 × 0.01 = 100.00 a month; the last 10000.00 + 100.00 = 10100.00. Σ interest 1200.00.
    schedule = build_schedule(1_000_000, R("0.12"), 12, "interest-first", JAN_15)
    assert rows(schedule)[:11] == [(0, 100_00, 100_00, 1_000_000)] * 11
    assert rows(schedule)[11] == (1_000_000, 100_00, 10100_00, 0)
    assert schedule.total_interest == 1200_00


def test_interest_first_under_actual_360_follows_the_days_of_each_month():
    # 10000.00 at 12 %, actual/360: 31 days -> 10000 × 0.12 × 31 / 360 = 103.333 -> 103.33;
    # 28 days -> 93.333 -> 93.33; 31 days -> 103.33 and the principal.
    schedule = build_schedule(1_000_000, R("0.12"), 3, "interest-first", JAN_15, day_count="actual/360")
    assert rows(schedule) == [
        (0, 103_33, 103_33, 1_000_000),
        (0, 93_33, 93_33, 1_000_000),
        (1_000_000, 103_33, 1_010_333, 0),
    ]


# --------------------------------------------------------------------------- bullet (到期还本付息)


def test_a_bullet_is_one_period_due_at_the_end_of_the_term_with_the_whole_terms_interest():
    # 10000.00 at 12 % for 12 months, 30/360: 10000 × 0.12 × 12 / 12 = 1200.00, due 2027-01-15.
    schedule = build_schedule(1_000_000, R("0.12"), 12, "bullet", JAN_15)
    assert schedule.periods == (Period(1, dt.date(2027, 1, 15), 1_000_000, 1200_00, 11200_00, 0),)


def test_a_bullet_under_actual_365_counts_the_days_of_the_term():
    # 2026-01-15 to 2026-04-15 is 31 + 28 + 31 = 90 days: 10000 × 0.12 × 90 / 365 = 295.8904 -> 295.89.
    schedule = build_schedule(1_000_000, R("0.12"), 3, "bullet", JAN_15, day_count="actual/365")
    assert rows(schedule) == [(1_000_000, 295_89, 10295_89, 0)]
    # A whole year of 365 days is exactly the annual rate: 1200.00.
    year = build_schedule(1_000_000, R("0.12"), 12, "bullet", JAN_15, day_count="actual/365")
    assert year.periods[0].interest == 1200_00


@pytest.mark.parametrize("method", list(Method))
def test_a_zero_rate_charges_no_interest(method):
    for day_count in DayCount:
        schedule = build_schedule(123_457, R("0"), 7, method, JAN_15, day_count=day_count)
        assert schedule.total_interest == 0 and schedule.total == 123_457


# --------------------------------------------------------------------------- rounding and due dates


def test_a_half_fen_of_interest_rounds_to_even_by_default_and_up_when_asked():
    # 12.50 × 1 % = 12.5 fen: half even gives 12, half up 13. 13.50 × 1 % = 13.5 fen: both give 14.
    def interest(principal, rounding=decimal.ROUND_HALF_EVEN):
        return build_schedule(principal, R("0.12"), 1, "interest-first", JAN_15, rounding=rounding).periods[0].interest

    assert interest(1250) == 12 and interest(1250, decimal.ROUND_HALF_UP) == 13
    assert interest(1350) == 14 and interest(1350, decimal.ROUND_HALF_UP) == 14
    assert interest(1250, decimal.ROUND_DOWN) == 12 and interest(1251, decimal.ROUND_CEILING) == 13


@pytest.mark.parametrize(
    "value, rounding, expected",
    [
        (Fraction(5, 2), decimal.ROUND_HALF_EVEN, 2),
        (Fraction(7, 2), decimal.ROUND_HALF_EVEN, 4),
        (Fraction(5, 2), decimal.ROUND_HALF_UP, 3),
        (Fraction(5, 2), decimal.ROUND_HALF_DOWN, 2),
        (Fraction(-5, 2), decimal.ROUND_HALF_UP, -3),
        (Fraction(-5, 2), decimal.ROUND_HALF_DOWN, -2),
        (Fraction(-5, 2), decimal.ROUND_HALF_EVEN, -2),
        (Fraction(21, 10), decimal.ROUND_UP, 3),
        (Fraction(-21, 10), decimal.ROUND_UP, -3),
        (Fraction(29, 10), decimal.ROUND_DOWN, 2),
        (Fraction(-29, 10), decimal.ROUND_DOWN, -2),
        (Fraction(-21, 10), decimal.ROUND_FLOOR, -3),
        (Fraction(-29, 10), decimal.ROUND_CEILING, -2),
        (Fraction(4), decimal.ROUND_UP, 4),
    ],
)
def test_round_fraction_rounds_as_decimal_does(value, rounding, expected):
    assert round_fraction(value, rounding) == expected
    exact = Decimal(value.numerator) / Decimal(value.denominator)  # exact for these halves and tenths
    assert int(exact.to_integral_value(rounding=rounding)) == expected


@given(st.fractions(min_value=-(10**6), max_value=10**6, max_denominator=1000), st.sampled_from(ROUNDING_MODES))
def test_round_fraction_agrees_with_decimal_quantize(value, rounding):
    with decimal.localcontext() as context:
        context.prec = 60  # enough for the quotient to decide every rounding of these values
        # A tie is exact in Decimal; any other value is at least 1/2000 from an integer or a half, so the
        # 60-digit quotient rounds the same way as the exact fraction.
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        assert round_fraction(value, rounding) == int(exact.to_integral_value(rounding=rounding))


def test_due_dates_keep_the_start_day_and_clamp_to_the_month_end():
    jan_31 = dt.date(2026, 1, 31)
    assert [due_date(jan_31, k) for k in range(1, 5)] == [
        dt.date(2026, 2, 28),
        dt.date(2026, 3, 31),  # counted from the start, so February's clamp does not stick
        dt.date(2026, 4, 30),
        dt.date(2026, 5, 31),
    ]
    assert due_date(dt.date(2028, 1, 31), 1) == dt.date(2028, 2, 29)  # a leap year
    assert due_date(dt.date(2026, 12, 15), 1) == dt.date(2027, 1, 15)
    assert due_date(dt.date(2026, 11, 30), 600) == dt.date(2076, 11, 30)


# --------------------------------------------------------------------------- the numpy-financial oracle


@pytest.mark.parametrize(
    "principal, rate, periods",
    [(1_000_000, "0.12", 12), (100_000_000, "0.049", 360), (5_000_000, "0.0435", 36), (123_456, "0.2399", 24)],
)
def test_equal_installments_match_numpy_financial_pmt_ipmt_and_ppmt(principal, rate, periods):
    schedule = build_schedule(principal, R(rate), periods, "equal-installment", JAN_15)
    monthly = float(R(rate) / 12)  # float only inside the oracle; never in the code under test
    emi = float(npf.pmt(monthly, periods, -principal))
    assert abs(schedule.periods[0].total - emi) <= 0.5 + 1e-6
    # Per period the rounded split drifts from the exact one by at most one fen of principal a period
    # (the EMI's half fen and the interest's half fen), compounding at the monthly rate: bound it so.
    for p in schedule.periods[:-1]:
        drift = p.period * (1 + monthly) ** p.period
        assert abs(p.interest - float(npf.ipmt(monthly, p.period, periods, -principal))) <= 0.5 + monthly * drift + 1e-6
        assert abs(p.principal - float(npf.ppmt(monthly, p.period, periods, -principal))) <= 1 + monthly * drift + 1e-6
    exact_interest = emi * periods - principal
    assert abs(schedule.total_interest - exact_interest) <= periods * (1 + monthly) ** periods


# --------------------------------------------------------------------------- properties

rates = st.one_of(
    st.decimals(min_value=0, max_value=R("0.36"), places=4),
    st.decimals(min_value=0, max_value=R("9.9999"), places=4),
)


@settings(max_examples=150, deadline=None)
@given(
    principal=st.one_of(st.integers(1, 10**9), st.integers(1, PRINCIPAL_MINOR_MAX)),
    rate=rates,
    periods=st.one_of(st.integers(1, 36), st.integers(1, PERIOD_COUNT_MAX)),
    method=st.sampled_from(list(Method)),
    day_count=st.sampled_from(list(DayCount)),
    rounding=st.sampled_from(ROUNDING_MODES),
    start=st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31)),
)
def test_every_schedule_repays_exactly_the_principal_with_no_negative_amount(
    principal, rate, periods, method, day_count, rounding, start
):
    schedule = build_schedule(principal, rate, periods, method, start, day_count=day_count, rounding=rounding)
    got = schedule.periods
    assert len(got) == (1 if method is Method.BULLET else periods)
    assert [p.period for p in got] == list(range(1, len(got) + 1))
    assert sum(p.principal for p in got) == principal
    assert all(p.principal >= 0 and p.interest >= 0 and p.total == p.principal + p.interest for p in got)
    remaining = [principal] + [p.remaining_principal for p in got]
    assert all(a - p.principal == b for a, b, p in zip(remaining, remaining[1:], got, strict=False))
    assert all(a >= b for a, b in itertools.pairwise(remaining)) and remaining[-1] == 0
    assert all(a.due_date < b.due_date for a, b in itertools.pairwise(got))
    assert all(p.total < 2**63 for p in got)
    if rate == 0:
        assert schedule.total_interest == 0


@settings(max_examples=60, deadline=None)
@given(
    principal=st.integers(10_000, 10**10),
    rate=st.decimals(R("0.01"), R("0.36"), places=4),
    periods=st.integers(2, 360),
)
def test_equal_installments_are_equal_but_the_last_and_interest_falls_with_the_balance(principal, rate, periods):
    schedule = build_schedule(principal, rate, periods, "equal-installment", JAN_15)
    emi = schedule.periods[0].total
    # Every period but the last pays the EMI, unless rounding drift repaid the loan early (module docstring):
    # then the period that repays it and those after it pay less.
    assert all(p.total == emi or p.remaining_principal == 0 for p in schedule.periods[:-1])
    interests = [p.interest for p in schedule.periods]
    assert all(a >= b for a, b in itertools.pairwise(interests))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "changes, error, field",
    [
        ({"principal_minor": 100.0}, errors.AmountMustBeInteger, "principal"),
        ({"principal_minor": "100"}, errors.AmountMustBeInteger, "principal"),
        ({"principal_minor": True}, errors.AmountMustBeInteger, "principal"),
        ({"principal_minor": 0}, errors.AmountMustBePositive, "principal"),
        ({"principal_minor": -1}, errors.AmountMustBePositive, "principal"),
        ({"principal_minor": PRINCIPAL_MINOR_MAX + 1}, errors.LoanPrincipalTooLarge, "principal"),
        ({"annual_rate": 0.12}, errors.AnnualRateInvalid, "annual_rate"),
        ({"annual_rate": "0.12"}, errors.AnnualRateInvalid, "annual_rate"),
        ({"annual_rate": R("NaN")}, errors.AnnualRateInvalid, "annual_rate"),
        ({"annual_rate": R("-0.01")}, errors.AnnualRateInvalid, "annual_rate"),
        ({"annual_rate": R("10")}, errors.AnnualRateInvalid, "annual_rate"),
        ({"periods": 0}, errors.PeriodCountInvalid, "periods"),
        ({"periods": 601}, errors.PeriodCountInvalid, "periods"),
        ({"periods": 12.0}, errors.PeriodCountInvalid, "periods"),
        ({"method": "flat"}, errors.AmortizationMethodUnknown, "method"),
        ({"start": dt.datetime(2026, 1, 15)}, errors.StartDateInvalid, "start"),
        ({"start": "2026-01-15"}, errors.StartDateInvalid, "start"),
        ({"start": dt.date(1899, 12, 31)}, errors.StartDateInvalid, "start"),
        ({"day_count": "actual/actual"}, errors.DayCountUnknown, "day_count"),
        ({"rounding": "ROUND_05UP"}, errors.RoundingModeUnknown, "rounding"),
        ({"rounding": "half-even"}, errors.RoundingModeUnknown, "rounding"),
        ({"currency": "XYZ"}, CurrencyUnknown, "currency"),
    ],
)
def test_bad_terms_are_refused_with_a_stable_code_naming_the_field(changes, error, field):
    terms = {"principal_minor": 1_000_000, "annual_rate": R("0.12"), "periods": 12, "method": "bullet", "start": JAN_15}
    terms.update(changes)
    with pytest.raises(error) as caught:
        build_schedule(**terms)
    assert type(caught.value) is error and caught.value.field == field


def test_the_first_rule_broken_is_the_one_reported():
    with pytest.raises(errors.AmountMustBePositive):
        build_schedule(0, R("-1"), 0, "flat", "today")
    with pytest.raises(errors.PeriodCountInvalid):
        build_schedule(1, R("0.1"), 0, "flat", "today")
