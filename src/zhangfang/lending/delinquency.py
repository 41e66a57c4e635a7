"""Delinquency (逾期): days past due, buckets (M1, M2, M3+) and the aging report (账龄).

A loan's *days past due* (DPD) as of a date are counted from its oldest unpaid
due date: 0 on that date and before it (a repayment due today is not late yet),
1 the day after. A loan with nothing unpaid that has fallen due is current.

Buckets (``Bucket``), with the default ``BucketThresholds(m1_days_max=30, m2_days_max=60)``:

===========  ===========  =====================================
bucket       DPD          中文
===========  ===========  =====================================
``current``  0            正常
``M1``       1 to 30      逾期 1 期 (1–30 天)
``M2``       31 to 60     逾期 2 期 (31–60 天)
``M3+``      61 and more  逾期 3 期及以上 (60 天以上)
===========  ===========  =====================================

The last day of M1 and of M2 are configurable (a lender that counts months as
calendar months may use other limits); M3+ has no upper end.

``aging_report`` takes the loans as ``LoanExposure`` (ref, oldest unpaid due
date, outstanding amount) and an as-of date, and returns one line per loan and
one row per bucket (every bucket, in the order above, empty ones with zeros).
What "outstanding" counts (principal only, or principal plus interest and
penalties) is the caller's choice; the report adds up what it is given, in one
currency.

Guarantees
- Every loan falls in exactly one bucket; the buckets' loan counts sum to the
  number of loans and their outstanding amounts to the total outstanding.
- DPD never decreases as the as-of date moves forward (for the same oldest
  unpaid due date), so a loan only moves to later buckets until it is paid.

Errors: see ``lending.errors`` (the catalogue, in order of precedence).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from zhangfang.lending import errors

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AgingLine",
    "AgingReport",
    "AgingRow",
    "Bucket",
    "BucketThresholds",
    "LoanExposure",
    "aging_report",
    "bucket_for",
    "days_past_due",
]


class Bucket(StrEnum):
    """A delinquency bucket, from current to the most overdue."""

    CURRENT = "current"
    M1 = "M1"
    M2 = "M2"
    M3_PLUS = "M3+"


@dataclass(frozen=True, slots=True)
class BucketThresholds:
    """The last day past due of M1 and of M2; more than ``m2_days_max`` is M3+."""

    m1_days_max: int = 30
    m2_days_max: int = 60


DEFAULT_THRESHOLDS = BucketThresholds()


@dataclass(frozen=True, slots=True)
class LoanExposure:
    """One loan as the aging report sees it; ``oldest_unpaid_due_date`` is None when nothing due is unpaid."""

    loan_ref: str
    oldest_unpaid_due_date: dt.date | None
    outstanding_minor: int


@dataclass(frozen=True, slots=True)
class AgingLine:
    """One loan in the report: its days past due and bucket."""

    loan_ref: str
    days_past_due: int
    bucket: Bucket
    outstanding_minor: int


@dataclass(frozen=True, slots=True)
class AgingRow:
    """One bucket of the report: how many loans and how much outstanding."""

    bucket: Bucket
    loan_count: int
    outstanding_minor: int


@dataclass(frozen=True, slots=True)
class AgingReport:
    """Loans by bucket as of a date; ``rows`` has every bucket in ``Bucket`` order, ``lines`` every loan."""

    as_of: dt.date
    thresholds: BucketThresholds
    rows: tuple[AgingRow, ...]
    lines: tuple[AgingLine, ...]

    @property
    def loan_count(self) -> int:
        return sum(row.loan_count for row in self.rows)

    @property
    def outstanding_minor(self) -> int:
        return sum(row.outstanding_minor for row in self.rows)

    def row(self, bucket: Bucket | str) -> AgingRow:
        """The row of one bucket."""
        wanted = Bucket(bucket)
        return next(row for row in self.rows if row.bucket is wanted)


# --------------------------------------------------------------------------- checks


def _check_date(value: Any, field: str) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise errors.AsOfDateInvalid(
            f"{field} is a datetime.date (Asia/Shanghai), not {type(value).__name__}", field=field
        )
    return value


def _check_thresholds(value: Any) -> BucketThresholds:
    if not isinstance(value, BucketThresholds):
        raise errors.DelinquencyThresholdsInvalid(
            f"thresholds is a BucketThresholds, got {type(value).__name__}", field="thresholds"
        )
    m1, m2 = value.m1_days_max, value.m2_days_max
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (m1, m2)) or not 1 <= m1 < m2:
        raise errors.DelinquencyThresholdsInvalid(
            f"thresholds need ints with 1 <= m1_days_max < m2_days_max, got {m1!r} and {m2!r}", field="thresholds"
        )
    return value


# --------------------------------------------------------------------------- buckets


def days_past_due(oldest_unpaid_due_date: dt.date | None, as_of: dt.date) -> int:
    """Returns the days past due as of ``as_of``: 0 when nothing is unpaid or the date has not passed."""
    as_of = _check_date(as_of, "as_of")
    if oldest_unpaid_due_date is None:
        return 0
    due = _check_date(oldest_unpaid_due_date, "oldest_unpaid_due_date")
    return max((as_of - due).days, 0)


def bucket_for(days: int, *, thresholds: BucketThresholds = DEFAULT_THRESHOLDS) -> Bucket:
    """Returns the bucket of ``days`` past due."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise errors.DaysPastDueInvalid(f"days past due is an int >= 0, got {days!r}", field="days_past_due")
    thresholds = _check_thresholds(thresholds)
    if days == 0:
        return Bucket.CURRENT
    if days <= thresholds.m1_days_max:
        return Bucket.M1
    if days <= thresholds.m2_days_max:
        return Bucket.M2
    return Bucket.M3_PLUS


def aging_report(
    loans: Iterable[LoanExposure],
    *,
    as_of: dt.date,
    thresholds: BucketThresholds = DEFAULT_THRESHOLDS,
) -> AgingReport:
    """Returns the aging report of ``loans`` as of ``as_of``: each loan's bucket and the totals per bucket."""
    as_of = _check_date(as_of, "as_of")
    thresholds = _check_thresholds(thresholds)
    lines: list[AgingLine] = []
    seen: set[str] = set()
    for index, loan in enumerate(loans):
        field = f"loans[{index}]"
        if not isinstance(loan, LoanExposure):
            raise errors.LoanExposureInvalid(f"{field} is a LoanExposure, got {type(loan).__name__}", field=field)
        if not isinstance(loan.loan_ref, str) or not loan.loan_ref:
            raise errors.LoanExposureInvalid(f"{field}.loan_ref is a non-empty str", field=f"{field}.loan_ref")
        due = loan.oldest_unpaid_due_date
        if due is not None and (isinstance(due, dt.datetime) or not isinstance(due, dt.date)):
            raise errors.LoanExposureInvalid(
                f"{field}.oldest_unpaid_due_date is a datetime.date or None", field=f"{field}.oldest_unpaid_due_date"
            )
        outstanding = loan.outstanding_minor
        if isinstance(outstanding, bool) or not isinstance(outstanding, int) or outstanding < 0:
            raise errors.LoanExposureInvalid(
                f"{field}.outstanding_minor is an int >= 0 of the minor unit, got {outstanding!r}",
                field=f"{field}.outstanding_minor",
            )
        if loan.loan_ref in seen:
            raise errors.LoanRefDuplicate(
                f"loan {loan.loan_ref} is given twice", field=f"{field}.loan_ref", loan_ref=loan.loan_ref
            )
        seen.add(loan.loan_ref)
        dpd = days_past_due(loan.oldest_unpaid_due_date, as_of)
        lines.append(AgingLine(loan.loan_ref, dpd, bucket_for(dpd, thresholds=thresholds), outstanding))
    rows = tuple(
        AgingRow(
            bucket=bucket,
            loan_count=sum(1 for line in lines if line.bucket is bucket),
            outstanding_minor=sum(line.outstanding_minor for line in lines if line.bucket is bucket),
        )
        for bucket in Bucket
    )
    report = AgingReport(as_of=as_of, thresholds=thresholds, rows=rows, lines=tuple(lines))
    assert report.loan_count == len(lines)
    assert report.outstanding_minor == sum(line.outstanding_minor for line in lines)
    return report
