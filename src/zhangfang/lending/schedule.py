"""Amortization schedules: what a loan's borrower owes on each due date, to the fen.

``build_schedule`` turns a principal (``int`` of the minor unit), a nominal
annual rate (``Decimal``), a number of monthly periods, a method and a start
(disbursement) date into a ``Schedule``: one ``Period`` per due date, each with
its principal, interest, total and the principal remaining after it. A
schedule is data: it is computed, compared and stored, never mutated.

Methods (``Method``):

=====================  ===========  ===================================================================
method                 中文          each period
=====================  ===========  ===================================================================
``equal-installment``  等额本息      a fixed installment (EMI) = pmt(r, n, P), computed once and rounded to
                                    the fen; interest = outstanding × periodic rate, rounded; principal =
                                    EMI − interest. The last period takes the principal still outstanding,
                                    so its total differs from the EMI by the rounding drift.
``equal-principal``    等额本金      principal = P / n, computed once and rounded; interest = outstanding ×
                                    periodic rate, rounded. The last period takes the principal remainder.
``interest-first``     先息后本      interest on the whole principal each period; all the principal in the
                                    last period.
``bullet``             到期还本付息  one period: principal and the interest of the whole term, due *n*
                                    months after the start.
=====================  ===========  ===================================================================

Due dates: period *k* is due *k* months after the start, on the start's day of
the month, or the month's last day when it has no such day (a loan started on
Jan 31 is due Feb 28 (29 in a leap year), Mar 31, Apr 30, ...). Each due date is
counted from the start, not from the previous due date, so one short month does
not pull every later date forward.

Day counts (``DayCount``): the interest of a period on an outstanding
principal *O* at annual rate *a*:

==============  ============================================================================
``30/360``      *O* × *a* / 12: every monthly period is 30 of 360 days, whatever its calendar
                length (月利率 = 年利率 / 12). The default; what Chinese lenders quote.
``actual/365``  *O* × *a* × *d* / 365, *d* the calendar days from the previous due date (the
                start, for period 1) to this one
``actual/360``  *O* × *a* × *d* / 360
==============  ============================================================================

For a bullet the whole term is one period: 30/360 charges *P* × *a* × *n* / 12,
the actual conventions count the days from the start to the single due date.

Equal installment under an actual day count keeps the EMI of the 30/360 pmt
formula (the installment the borrower was quoted) and lets each period's
interest follow its actual days; principal is what the EMI leaves after that
interest, never less than zero (a long month's interest may exceed the EMI at
high rates: the period's total is then its interest), and the last period takes
whatever principal is still outstanding.

Rounding: every amount is rounded once, to the minor unit, from its exact
value (computed with ``Fraction``: no float and no ambient decimal context),
with ``rounding``, by default ``ROUND_HALF_EVEN`` (banker's rounding, the
default rounding mode of Apache Fineract). Interest is rounded per period and
never re-spread; principal is fixed per period and the last period absorbs the
remainder, so the principal adds up exactly.

The rounding of a fixed amount repeats every period. For equal principal it
adds up to at most n/2 minor units, taken back by the last period. For equal
installment it also compounds at the periodic rate *r*, so the last period's
total differs from the EMI by up to about ½ × ((1 + r)^n − 1) / r minor units:
4.09 yuan at most on a 30-year mortgage at 4.9 % (5305.19 against 5307.27 on
1,000,000.00), but thousands of yuan over 50 years at 24 %. When the
rounded-up amounts would repay the loan before its last period (tiny
principals over many periods, such as 10.00 over 600 months, or long terms at
high rates), a period repays at most what is still outstanding and the periods
after payoff owe nothing. The schedule still has one period per month of the
term, and the principal still adds up exactly.

Guarantees
- ``len(schedule.periods)`` is *n* (1 for a bullet); periods are numbered 1 to
  *n*; due dates strictly increase.
- Σ principal == the principal, exactly; every period's
  ``total == principal + interest``; no amount is negative.
- ``remaining_principal`` is the principal minus the principal of this and
  every earlier period: it never increases and is 0 after the last period.
- A zero rate charges no interest, for every method and day count.
- Every amount fits a signed 64-bit column (``PRINCIPAL_MINOR_MAX`` is chosen so).

Errors: see ``lending.errors`` (the catalogue, in order of precedence).
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, TypeVar

from zhangfang import money
from zhangfang.lending import errors

__all__ = [
    "ANNUAL_RATE_MAX",
    "DEFAULT_DAY_COUNT",
    "DEFAULT_ROUNDING",
    "PERIOD_COUNT_MAX",
    "PRINCIPAL_MINOR_MAX",
    "ROUNDING_MODES",
    "DayCount",
    "Method",
    "Period",
    "Schedule",
    "build_schedule",
    "check_rounding",
    "due_date",
    "installment_amount",
    "round_fraction",
]

PERIOD_COUNT_MAX = 600
# Exclusive: 10 is 1000 % a year, far beyond any lawful loan; a bound keeps amounts in range.
ANNUAL_RATE_MAX = Decimal(10)
# 10^15 fen is 10 trillion yuan. At the highest rate over the longest term the interest is at most
# about 500 times the principal (10 × 600 / 12), so every amount stays below 2^63 (about 9.2 × 10^18).
PRINCIPAL_MINOR_MAX = 10**15
DEFAULT_ROUNDING = decimal.ROUND_HALF_EVEN
ROUNDING_MODES: tuple[str, ...] = (
    decimal.ROUND_HALF_EVEN,
    decimal.ROUND_HALF_UP,
    decimal.ROUND_HALF_DOWN,
    decimal.ROUND_UP,
    decimal.ROUND_DOWN,
    decimal.ROUND_CEILING,
    decimal.ROUND_FLOOR,
)
START_YEAR_MIN = 1900
START_YEAR_MAX = 2999
MONTHS_PER_YEAR = 12
_E = TypeVar("_E", bound=StrEnum)


class Method(StrEnum):
    """How the principal is repaid over the term."""

    EQUAL_INSTALLMENT = "equal-installment"  # 等额本息
    EQUAL_PRINCIPAL = "equal-principal"  # 等额本金
    INTEREST_FIRST = "interest-first"  # 先息后本
    BULLET = "bullet"  # 到期还本付息


class DayCount(StrEnum):
    """How a period's interest is measured: 30/360 (monthly rate = annual / 12) or actual days."""

    THIRTY_360 = "30/360"
    ACTUAL_365 = "actual/365"
    ACTUAL_360 = "actual/360"


DEFAULT_DAY_COUNT = DayCount.THIRTY_360
_DAYS_PER_YEAR = {DayCount.ACTUAL_365: 365, DayCount.ACTUAL_360: 360}


@dataclass(frozen=True, slots=True)
class Period:
    """One due date of a schedule; amounts are ``int`` of the minor unit (fen)."""

    period: int
    due_date: dt.date
    principal: int
    interest: int
    total: int
    remaining_principal: int


@dataclass(frozen=True, slots=True)
class Schedule:
    """A loan's schedule and the terms it was built from; ``periods`` in due-date order."""

    principal_minor: int
    annual_rate: Decimal
    method: Method
    day_count: DayCount
    start: dt.date
    rounding: str
    currency: str
    periods: tuple[Period, ...]

    @property
    def total_principal(self) -> int:
        return sum(p.principal for p in self.periods)

    @property
    def total_interest(self) -> int:
        return sum(p.interest for p in self.periods)

    @property
    def total(self) -> int:
        return sum(p.total for p in self.periods)


# --------------------------------------------------------------------------- arithmetic


def round_fraction(value: Fraction, rounding: str = DEFAULT_ROUNDING) -> int:
    """Returns ``value`` rounded to an integer with a ``decimal`` rounding mode, exactly (no context)."""
    check_rounding(rounding)
    floor = value.numerator // value.denominator
    rest = value - floor  # 0 <= rest < 1
    if rest == 0:
        return floor
    positive = value > 0
    if rounding == decimal.ROUND_FLOOR:
        return floor
    if rounding == decimal.ROUND_CEILING:
        return floor + 1
    if rounding == decimal.ROUND_DOWN:  # toward zero
        return floor if positive else floor + 1
    if rounding == decimal.ROUND_UP:  # away from zero
        return floor + 1 if positive else floor
    half = Fraction(1, 2)
    if rest != half:
        return floor if rest < half else floor + 1
    if rounding == decimal.ROUND_HALF_UP:
        return floor + 1 if positive else floor
    if rounding == decimal.ROUND_HALF_DOWN:
        return floor if positive else floor + 1
    assert rounding == decimal.ROUND_HALF_EVEN, rounding
    return floor if floor % 2 == 0 else floor + 1


def due_date(start: dt.date, period: int) -> dt.date:
    """Returns the due date of ``period``: ``period`` months after ``start``, clamped to the month's end."""
    months = start.month - 1 + period
    year = start.year + months // MONTHS_PER_YEAR
    month = months % MONTHS_PER_YEAR + 1
    return dt.date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def installment_amount(principal_minor: int, monthly_rate: Fraction, periods: int, rounding: str) -> int:
    """Returns the fixed installment (EMI) of an equal-installment loan: pmt(r, n, −P), rounded once.

    EMI = P × r × (1 + r)^n / ((1 + r)^n − 1), or P / n when r is 0 (its limit).
    """
    if monthly_rate == 0:
        return round_fraction(Fraction(principal_minor, periods), rounding)
    growth = (1 + monthly_rate) ** periods
    return round_fraction(principal_minor * monthly_rate * growth / (growth - 1), rounding)


def _interest(outstanding: int, annual_rate: Fraction, day_count: DayCount, months: int, days: int) -> Fraction:
    """The exact interest on ``outstanding`` over ``months`` monthly periods spanning ``days`` calendar days."""
    if day_count is DayCount.THIRTY_360:
        return outstanding * annual_rate * months / MONTHS_PER_YEAR
    return outstanding * annual_rate * days / _DAYS_PER_YEAR[day_count]


# --------------------------------------------------------------------------- checks


def _rounding_message(rounding: Any) -> str:
    names = ", ".join(ROUNDING_MODES)
    return f"rounding must be one of {names}, got {rounding!r}"


def _check_principal(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.AmountMustBeInteger(
            f"principal is an int of the minor unit (fen), got {type(value).__name__}", field="principal"
        )
    if value < 1:
        raise errors.AmountMustBePositive(
            f"principal must be at least 1 minor unit (0.01 CNY), got {value} minor units", field="principal"
        )
    if value > PRINCIPAL_MINOR_MAX:
        raise errors.LoanPrincipalTooLarge(
            f"principal must be at most {PRINCIPAL_MINOR_MAX} minor units, got {value}", field="principal"
        )
    return value


def _check_annual_rate(value: Any) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise errors.AnnualRateInvalid(
            f"annual rate is a finite Decimal such as 0.12, never a float; got {value!r}", field="annual_rate"
        )
    if not Decimal(0) <= value < ANNUAL_RATE_MAX:
        raise errors.AnnualRateInvalid(
            f"annual rate must be at least 0 and less than {ANNUAL_RATE_MAX} (0.12 is 12 %), got {value}",
            field="annual_rate",
        )
    return value


def _check_periods(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PERIOD_COUNT_MAX:
        raise errors.PeriodCountInvalid(
            f"periods is an int from 1 to {PERIOD_COUNT_MAX} (months), got {value!r}", field="periods"
        )
    return value


def _check_enum(value: Any, kind: type[_E], error: type[errors.InvalidInput], field: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise error(f"{field.replace('_', ' ')} must be one of {known}, got {value!r}", field=field) from None


def _check_start(value: Any) -> dt.date:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise errors.StartDateInvalid(
            f"start is a datetime.date (Asia/Shanghai), not {type(value).__name__}", field="start"
        )
    if not START_YEAR_MIN <= value.year <= START_YEAR_MAX:
        raise errors.StartDateInvalid(
            f"start must be in the years {START_YEAR_MIN} to {START_YEAR_MAX}, got {value.isoformat()}", field="start"
        )
    return value


def check_rounding(value: Any) -> str:
    """Returns ``value`` if it is one of ``ROUNDING_MODES``; else refuses it with ``rounding_mode_unknown``."""
    if not isinstance(value, str) or value not in ROUNDING_MODES:
        raise errors.RoundingModeUnknown(_rounding_message(value), field="rounding")
    return value


# --------------------------------------------------------------------------- the schedule


def build_schedule(
    principal_minor: int,
    annual_rate: Decimal,
    periods: int,
    method: Method | str,
    start: dt.date,
    *,
    day_count: DayCount | str = DEFAULT_DAY_COUNT,
    rounding: str = DEFAULT_ROUNDING,
    currency: str = "CNY",
) -> Schedule:
    """Returns the amortization schedule of a loan; see the module docstring for the methods and rules."""
    principal_minor = _check_principal(principal_minor)
    annual_rate = _check_annual_rate(annual_rate)
    periods = _check_periods(periods)
    method = _check_enum(method, Method, errors.AmortizationMethodUnknown, "method")
    start = _check_start(start)
    day_count = _check_enum(day_count, DayCount, errors.DayCountUnknown, "day_count")
    rounding = check_rounding(rounding)
    money.currency(currency)

    rate = Fraction(annual_rate)
    if method is Method.BULLET:
        rows = _bullet(principal_minor, rate, periods, start, day_count, rounding)
    else:
        rows = _amortize(principal_minor, rate, periods, method, start, day_count, rounding)
    _assert_schedule(principal_minor, rows)
    return Schedule(
        principal_minor=principal_minor,
        annual_rate=annual_rate,
        method=method,
        day_count=day_count,
        start=start,
        rounding=rounding,
        currency=currency,
        periods=tuple(rows),
    )


def _bullet(
    principal: int, rate: Fraction, months: int, start: dt.date, day_count: DayCount, rounding: str
) -> list[Period]:
    due = due_date(start, months)
    interest = round_fraction(_interest(principal, rate, day_count, months, (due - start).days), rounding)
    return [Period(1, due, principal, interest, principal + interest, 0)]


def _amortize(
    principal: int,
    rate: Fraction,
    periods: int,
    method: Method,
    start: dt.date,
    day_count: DayCount,
    rounding: str,
) -> list[Period]:
    # Fixed once, before the first period (Fineract's rule): the EMI from the 30/360 monthly rate,
    # the equal principal from P / n. Only the last period departs from them.
    installment = installment_amount(principal, rate / MONTHS_PER_YEAR, periods, rounding)
    principal_each = round_fraction(Fraction(principal, periods), rounding)
    rows: list[Period] = []
    outstanding = principal
    previous = start
    for number in range(1, periods + 1):
        due = due_date(start, number)
        interest = round_fraction(_interest(outstanding, rate, day_count, 1, (due - previous).days), rounding)
        if number == periods:
            repaid = outstanding  # the last period absorbs every rounding remainder
        elif method is Method.EQUAL_INSTALLMENT:
            repaid = min(max(installment - interest, 0), outstanding)
        elif method is Method.EQUAL_PRINCIPAL:
            repaid = min(principal_each, outstanding)
        else:
            assert method is Method.INTEREST_FIRST, method
            repaid = 0
        outstanding -= repaid
        rows.append(Period(number, due, repaid, interest, repaid + interest, outstanding))
        previous = due
    return rows


def _assert_schedule(principal: int, rows: Sequence[Period]) -> None:
    """Our own invariants (the module's Guarantees); a failure here is a bug, not bad input."""
    assert sum(row.principal for row in rows) == principal
    remaining = principal
    for index, row in enumerate(rows, start=1):
        assert row.period == index
        assert row.principal >= 0 and row.interest >= 0 and row.total == row.principal + row.interest
        remaining -= row.principal
        assert row.remaining_principal == remaining >= 0
    assert rows[-1].remaining_principal == 0
    assert all(a.due_date < b.due_date for a, b in itertools.pairwise(rows))
