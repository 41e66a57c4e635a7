"""Delinquency buckets and the aging report, without a database: ``lending.delinquency``."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.lending import errors
from zhangfang.lending.delinquency import (
    AgingRow,
    Bucket,
    BucketThresholds,
    LoanExposure,
    aging_report,
    bucket_for,
    days_past_due,
)

AS_OF = dt.date(2026, 6, 30)


@pytest.mark.parametrize(
    "days, bucket",
    [(0, Bucket.CURRENT), (1, Bucket.M1), (30, Bucket.M1), (31, Bucket.M2), (60, Bucket.M2), (61, Bucket.M3_PLUS)],
)
def test_buckets_by_default_are_current_m1_to_30_days_m2_to_60_and_m3_plus_beyond(days, bucket):
    assert bucket_for(days) is bucket


def test_thresholds_are_configurable():
    monthly = BucketThresholds(m1_days_max=29, m2_days_max=59)
    assert bucket_for(30, thresholds=monthly) is Bucket.M2
    assert bucket_for(60, thresholds=monthly) is Bucket.M3_PLUS
    assert bucket_for(29, thresholds=monthly) is Bucket.M1


def test_days_past_due_count_from_the_oldest_unpaid_due_date():
    assert days_past_due(dt.date(2026, 6, 30), AS_OF) == 0  # due today: not late yet
    assert days_past_due(dt.date(2026, 7, 15), AS_OF) == 0  # not due yet
    assert days_past_due(dt.date(2026, 6, 29), AS_OF) == 1
    assert days_past_due(dt.date(2026, 3, 31), AS_OF) == 91  # 30 + 31 + 30 days of April, May, June
    assert days_past_due(None, AS_OF) == 0  # nothing unpaid


def test_the_aging_report_puts_each_loan_in_one_bucket_and_adds_up_per_bucket():
    # As of 2026-06-30: L1 nothing due unpaid, L2 due today (0), L3 due 06-15 (15: M1), L4 05-31 (30: M1),
    # L5 05-30 (31: M2), L6 05-01 (60: M2), L7 04-30 (61: M3+), L8 2025-12-31 (181: M3+).
    loans = [
        LoanExposure("L1", None, 1000_00),
        LoanExposure("L2", dt.date(2026, 6, 30), 2000_00),
        LoanExposure("L3", dt.date(2026, 6, 15), 300_00),
        LoanExposure("L4", dt.date(2026, 5, 31), 400_00),
        LoanExposure("L5", dt.date(2026, 5, 30), 500_00),
        LoanExposure("L6", dt.date(2026, 5, 1), 600_00),
        LoanExposure("L7", dt.date(2026, 4, 30), 700_00),
        LoanExposure("L8", dt.date(2025, 12, 31), 800_00),
    ]
    report = aging_report(loans, as_of=AS_OF)
    assert [(line.loan_ref, line.days_past_due, line.bucket) for line in report.lines] == [
        ("L1", 0, Bucket.CURRENT),
        ("L2", 0, Bucket.CURRENT),
        ("L3", 15, Bucket.M1),
        ("L4", 30, Bucket.M1),
        ("L5", 31, Bucket.M2),
        ("L6", 60, Bucket.M2),
        ("L7", 61, Bucket.M3_PLUS),
        ("L8", 181, Bucket.M3_PLUS),
    ]
    assert report.rows == (
        AgingRow(Bucket.CURRENT, 2, 3000_00),
        AgingRow(Bucket.M1, 2, 700_00),
        AgingRow(Bucket.M2, 2, 1100_00),
        AgingRow(Bucket.M3_PLUS, 2, 1500_00),
    )
    assert report.loan_count == 8 and report.outstanding_minor == 6300_00
    assert report.row("M3+").outstanding_minor == 1500_00


def test_an_empty_portfolio_has_every_bucket_with_zeros():
    report = aging_report([], as_of=AS_OF)
    assert [(row.bucket, row.loan_count, row.outstanding_minor) for row in report.rows] == [
        (bucket, 0, 0) for bucket in Bucket
    ]


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: bucket_for(-1), errors.DaysPastDueInvalid),
        (lambda: bucket_for(1.0), errors.DaysPastDueInvalid),
        (lambda: bucket_for(1, thresholds=BucketThresholds(30, 30)), errors.DelinquencyThresholdsInvalid),
        (lambda: bucket_for(1, thresholds=BucketThresholds(0, 60)), errors.DelinquencyThresholdsInvalid),
        (lambda: bucket_for(1, thresholds=(30, 60)), errors.DelinquencyThresholdsInvalid),
        (lambda: days_past_due(dt.date(2026, 1, 1), "2026-06-30"), errors.AsOfDateInvalid),
        (lambda: days_past_due(dt.datetime(2026, 1, 1), AS_OF), errors.AsOfDateInvalid),
        (lambda: aging_report([], as_of=dt.datetime(2026, 6, 30)), errors.AsOfDateInvalid),
        (lambda: aging_report([("L1", None, 1)], as_of=AS_OF), errors.LoanExposureInvalid),
        (lambda: aging_report([LoanExposure("", None, 1)], as_of=AS_OF), errors.LoanExposureInvalid),
        (lambda: aging_report([LoanExposure("L1", None, -1)], as_of=AS_OF), errors.LoanExposureInvalid),
        (lambda: aging_report([LoanExposure("L1", "2026-01-01", 1)], as_of=AS_OF), errors.LoanExposureInvalid),
        (
            lambda: aging_report([LoanExposure("L1", None, 1), LoanExposure("L1", None, 2)], as_of=AS_OF),
            errors.LoanRefDuplicate,
        ),
    ],
)
def test_bad_input_is_refused_with_a_stable_code(call, error):
    with pytest.raises(error):
        call()


exposures = st.lists(
    st.builds(
        LoanExposure,
        loan_ref=st.text(min_size=1, max_size=8),
        oldest_unpaid_due_date=st.none() | st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)),
        outstanding_minor=st.integers(0, 10**12),
    ),
    max_size=30,
    unique_by=lambda loan: loan.loan_ref,
)


@given(loans=exposures, as_of=st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)), m1=st.integers(1, 90))
def test_every_loan_is_counted_once_and_the_buckets_add_up(loans, as_of, m1):
    thresholds = BucketThresholds(m1, m1 + 30)
    report = aging_report(loans, as_of=as_of, thresholds=thresholds)
    assert report.loan_count == len(loans)
    assert report.outstanding_minor == sum(loan.outstanding_minor for loan in loans)
    assert [row.bucket for row in report.rows] == list(Bucket)
    for line in report.lines:
        assert line.bucket is bucket_for(line.days_past_due, thresholds=thresholds)


@given(
    due=st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)), day=st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31))
)
def test_a_loan_only_moves_to_later_buckets_as_time_passes(due, day):
    order = list(Bucket)
    today = bucket_for(days_past_due(due, day))
    tomorrow = bucket_for(days_past_due(due, day + dt.timedelta(days=1)))
    assert order.index(tomorrow) >= order.index(today)
