"""The settlement calendar, without a database: ``settlement.calendar``.

The worked examples are computed by hand from the State Council's holiday
notices (国务院办公厅关于2025年/2026年部分节假日安排的通知), not from the code:

National Day 2025 (国庆节、中秋节): October 1 to 8 off; Sunday September 28 and
Saturday October 11 are working days. Around it::

    Fri 09-26 W   Sat 09-27 -   Sun 09-28 W   Mon 09-29 W   Tue 09-30 W
    Wed 10-01 -   ... holiday ...              Wed 10-08 -
    Thu 10-09 W   Fri 10-10 W   Sat 10-11 W   Sun 10-12 -   Mon 10-13 W

Spring Festival 2026 (春节): February 15 to 23 off; Saturday February 14 and
Saturday February 28 are working days::

    Fri 02-13 W   Sat 02-14 W   Sun 02-15 -   ... holiday ...   Mon 02-23 -
    Tue 02-24 W   ...           Sat 02-28 W   Sun 03-01 -       Mon 03-02 W

The property tests check the inverse against a brute-force search.
"""

from __future__ import annotations

import datetime as dt

import chinese_calendar
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.settlement import errors
from zhangfang.settlement.calendar import (
    CHINESE_WORKING_DAYS,
    DEFAULT_CYCLE,
    Cycle,
    CycleKind,
    WorkingDayCalendar,
    business_dates_settling_on,
    install_published_years,
    read_published_years,
    settlement_date,
)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def days(first: str, last: str) -> list[dt.date]:
    start, end = d(first), d(last)
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


T0, T1, D1, WEEKLY = Cycle.T0, Cycle.T1, Cycle.D1, Cycle.WEEKLY
FRIDAY_WEEKLY = Cycle.weekly(4)

# --------------------------------------------------------------------------- the working days themselves


def test_the_calendar_knows_the_adjusted_working_days_and_holidays_of_national_day_2025() -> None:
    working = [day for day in days("2025-09-26", "2025-10-13") if CHINESE_WORKING_DAYS.is_working_day(day)]
    assert working == [
        d("2025-09-26"),
        d("2025-09-28"),  # a Sunday, worked in lieu
        d("2025-09-29"),
        d("2025-09-30"),
        d("2025-10-09"),
        d("2025-10-10"),
        d("2025-10-11"),  # a Saturday, worked in lieu
        d("2025-10-13"),
    ]


def test_the_calendar_knows_the_adjusted_working_days_and_holidays_of_spring_festival_2026() -> None:
    working = [day for day in days("2026-02-13", "2026-03-02") if CHINESE_WORKING_DAYS.is_working_day(day)]
    assert working == [d("2026-02-13"), d("2026-02-14"), *days("2026-02-24", "2026-02-28"), d("2026-03-02")]


def test_the_calendar_covers_the_years_the_installed_package_has_holidays_for() -> None:
    assert CHINESE_WORKING_DAYS.first_year == 2004
    assert CHINESE_WORKING_DAYS.last_year >= 2026
    assert CHINESE_WORKING_DAYS.last_year == max(day.year for day in chinese_calendar.holidays)


# --------------------------------------------------------------------------- National Day 2025, hand-computed


@pytest.mark.parametrize(
    "business_date, cycle, expected",
    [
        # T0: a working day settles itself; a rest day the next working day.
        ("2025-09-26", T0, "2025-09-26"),
        ("2025-09-27", T0, "2025-09-28"),  # Saturday → the Sunday worked in lieu
        ("2025-09-28", T0, "2025-09-28"),
        ("2025-09-30", T0, "2025-09-30"),
        ("2025-10-01", T0, "2025-10-09"),
        ("2025-10-08", T0, "2025-10-09"),
        ("2025-10-11", T0, "2025-10-11"),
        ("2025-10-12", T0, "2025-10-13"),
        # T1: the first working day after.
        ("2025-09-26", T1, "2025-09-28"),  # Friday → Sunday, a working day
        ("2025-09-27", T1, "2025-09-28"),
        ("2025-09-28", T1, "2025-09-29"),
        ("2025-09-29", T1, "2025-09-30"),
        ("2025-09-30", T1, "2025-10-09"),  # the last working day before the holiday
        ("2025-10-01", T1, "2025-10-09"),
        ("2025-10-05", T1, "2025-10-09"),
        ("2025-10-08", T1, "2025-10-09"),
        ("2025-10-09", T1, "2025-10-10"),
        ("2025-10-10", T1, "2025-10-11"),  # Friday → Saturday, a working day
        ("2025-10-11", T1, "2025-10-13"),
        ("2025-10-12", T1, "2025-10-13"),
        # T2: the second working day after.
        ("2025-09-29", Cycle.t(2), "2025-10-09"),
        ("2025-09-30", Cycle.t(2), "2025-10-10"),
        ("2025-10-03", Cycle.t(2), "2025-10-10"),
        # D1: the next natural day, holiday or not.
        ("2025-09-30", D1, "2025-10-01"),
        ("2025-10-01", D1, "2025-10-02"),
        ("2025-10-04", D1, "2025-10-05"),
        ("2025-10-08", D1, "2025-10-09"),
        ("2025-10-12", D1, "2025-10-13"),
        # WEEKLY (Monday): the week's Monday to Sunday on the next Monday, or the first working day after it.
        ("2025-09-22", WEEKLY, "2025-09-29"),
        ("2025-09-28", WEEKLY, "2025-09-29"),
        ("2025-09-29", WEEKLY, "2025-10-09"),  # Monday October 6 is a holiday
        ("2025-10-05", WEEKLY, "2025-10-09"),
        ("2025-10-06", WEEKLY, "2025-10-13"),
        ("2025-10-12", WEEKLY, "2025-10-13"),
        # WEEKLY on Friday.
        ("2025-09-22", FRIDAY_WEEKLY, "2025-10-09"),  # Friday October 3 is a holiday
        ("2025-09-29", FRIDAY_WEEKLY, "2025-10-10"),
        ("2025-10-05", FRIDAY_WEEKLY, "2025-10-10"),
    ],
)
def test_national_day_2025_settlement_dates(business_date: str, cycle: Cycle, expected: str) -> None:
    assert settlement_date(d(business_date), cycle) == d(expected)


@pytest.mark.parametrize(
    "run_date, cycle, expected",
    [
        ("2025-09-28", T0, days("2025-09-27", "2025-09-28")),
        ("2025-09-30", T0, [d("2025-09-30")]),
        ("2025-10-09", T0, days("2025-10-01", "2025-10-09")),
        ("2025-10-13", T0, days("2025-10-12", "2025-10-13")),
        ("2025-10-05", T0, []),  # not a working day: no run pays anything
        ("2025-09-28", T1, days("2025-09-26", "2025-09-27")),
        ("2025-09-29", T1, [d("2025-09-28")]),
        ("2025-10-09", T1, days("2025-09-30", "2025-10-08")),  # the last working day through the holiday
        ("2025-10-10", T1, [d("2025-10-09")]),
        ("2025-10-11", T1, [d("2025-10-10")]),
        ("2025-10-13", T1, days("2025-10-11", "2025-10-12")),
        ("2025-10-03", T1, []),
        ("2025-10-09", Cycle.t(2), days("2025-09-29", "2025-09-29")),
        ("2025-10-10", Cycle.t(2), days("2025-09-30", "2025-10-08")),
        ("2025-10-01", D1, [d("2025-09-30")]),
        ("2025-10-05", D1, [d("2025-10-04")]),
        ("2025-10-09", D1, [d("2025-10-08")]),
        ("2025-09-29", WEEKLY, days("2025-09-22", "2025-09-28")),
        ("2025-10-06", WEEKLY, []),  # the nominal Monday is a holiday
        ("2025-10-09", WEEKLY, days("2025-09-29", "2025-10-05")),
        ("2025-10-10", WEEKLY, []),
        ("2025-10-13", WEEKLY, days("2025-10-06", "2025-10-12")),
        ("2025-10-09", FRIDAY_WEEKLY, days("2025-09-22", "2025-09-28")),
        ("2025-10-10", FRIDAY_WEEKLY, days("2025-09-29", "2025-10-05")),
    ],
)
def test_national_day_2025_runs_pay_these_business_dates(run_date: str, cycle: Cycle, expected: list[dt.date]) -> None:
    assert business_dates_settling_on(d(run_date), cycle) == expected


def test_the_runs_of_the_national_day_fortnight_pay_each_business_date_once() -> None:
    for cycle in (T0, T1, WEEKLY):
        paid = [day for run in days("2025-09-29", "2025-10-13") for day in business_dates_settling_on(run, cycle)]
        assert paid == sorted(set(paid)), cycle
    t1_paid = {run: business_dates_settling_on(run, T1) for run in days("2025-09-29", "2025-10-13")}
    assert [day for paid in t1_paid.values() for day in paid] == days("2025-09-28", "2025-10-12")
    assert {run for run, paid in t1_paid.items() if paid} == {
        d("2025-09-29"),
        d("2025-09-30"),
        d("2025-10-09"),
        d("2025-10-10"),
        d("2025-10-11"),
        d("2025-10-13"),
    }


# --------------------------------------------------------------------------- Spring Festival 2026, hand-computed


@pytest.mark.parametrize(
    "business_date, cycle, expected",
    [
        ("2026-02-13", T0, "2026-02-13"),
        ("2026-02-14", T0, "2026-02-14"),  # Saturday worked in lieu
        ("2026-02-15", T0, "2026-02-24"),
        ("2026-02-23", T0, "2026-02-24"),
        ("2026-02-13", T1, "2026-02-14"),  # Friday → the Saturday worked in lieu
        ("2026-02-14", T1, "2026-02-24"),
        ("2026-02-20", T1, "2026-02-24"),
        ("2026-02-24", T1, "2026-02-25"),
        ("2026-02-27", T1, "2026-02-28"),
        ("2026-02-28", T1, "2026-03-02"),
        ("2026-02-15", D1, "2026-02-16"),
        ("2026-02-23", D1, "2026-02-24"),
        ("2026-02-08", WEEKLY, "2026-02-09"),
        ("2026-02-09", WEEKLY, "2026-02-24"),  # Monday February 16 is a holiday
        ("2026-02-15", WEEKLY, "2026-02-24"),
        ("2026-02-16", WEEKLY, "2026-02-24"),  # Monday February 23 too: two weeks on one date
        ("2026-02-22", WEEKLY, "2026-02-24"),
        ("2026-02-23", WEEKLY, "2026-03-02"),
    ],
)
def test_spring_festival_2026_settlement_dates(business_date: str, cycle: Cycle, expected: str) -> None:
    assert settlement_date(d(business_date), cycle) == d(expected)


@pytest.mark.parametrize(
    "run_date, cycle, expected",
    [
        ("2026-02-14", T0, [d("2026-02-14")]),
        ("2026-02-24", T0, days("2026-02-15", "2026-02-24")),
        ("2026-02-14", T1, [d("2026-02-13")]),
        ("2026-02-24", T1, days("2026-02-14", "2026-02-23")),
        ("2026-03-02", T1, days("2026-02-28", "2026-03-01")),
        ("2026-02-24", D1, [d("2026-02-23")]),
        ("2026-02-24", WEEKLY, days("2026-02-09", "2026-02-22")),
        ("2026-02-23", WEEKLY, []),
        ("2026-03-02", WEEKLY, days("2026-02-23", "2026-03-01")),
    ],
)
def test_spring_festival_2026_runs_pay_these_business_dates(
    run_date: str, cycle: Cycle, expected: list[dt.date]
) -> None:
    assert business_dates_settling_on(d(run_date), cycle) == expected


# --------------------------------------------------------------------------- the limits of the calendar


@pytest.mark.parametrize(
    "call",
    [
        lambda: settlement_date(d("2026-12-31"), T1),  # needs January 2027
        lambda: settlement_date(d("2027-01-04"), T0),
        lambda: settlement_date(d("2026-12-28"), WEEKLY),
        lambda: settlement_date(d("2003-12-31"), T0),
        lambda: business_dates_settling_on(d("2004-01-02"), T1),  # needs December 2003
        lambda: business_dates_settling_on(d("2027-01-04"), WEEKLY),
    ],
)
def test_a_date_the_calendar_does_not_cover_is_refused_not_guessed(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.SettlementCalendarUnknownYear) as raised:
        call()
    assert raised.value.code == "settlement_calendar_unknown_year"
    assert raised.value.kind == "rejected"
    assert raised.value.details["first_year"] == CHINESE_WORKING_DAYS.first_year
    assert "upgrade chinese-calendar" in raised.value.message


def test_natural_day_cycles_do_not_need_the_calendar() -> None:
    assert settlement_date(d("2040-02-29"), D1) == d("2040-03-01")
    assert business_dates_settling_on(d("1999-01-01"), Cycle.d(2)) == [d("1998-12-30")]


def test_the_last_covered_day_settles_t0_on_itself() -> None:
    assert settlement_date(d("2026-12-31"), T0) == d("2026-12-31")


# --------------------------------------------------------------------------- cycles and bad input


@pytest.mark.parametrize(
    "text, cycle, canonical",
    [
        ("T0", Cycle.T0, "T0"),
        ("T1", Cycle.T1, "T1"),
        ("T+1", Cycle.T1, "T1"),
        (" t+3 ", Cycle.t(3), "T3"),
        ("T30", Cycle.t(30), "T30"),
        ("D1", Cycle.D1, "D1"),
        ("D+0", Cycle.d(0), "D0"),
        ("WEEKLY", Cycle.WEEKLY, "WEEKLY:MON"),
        ("weekly:fri", Cycle.weekly(4), "WEEKLY:FRI"),
        ("WEEKLY:SUN", Cycle.weekly(6), "WEEKLY:SUN"),
    ],
)
def test_cycles_read_and_write_their_text(text: str, cycle: Cycle, canonical: str) -> None:
    assert Cycle.parse(text) == cycle
    assert str(cycle) == canonical
    assert Cycle.parse(str(cycle)) == cycle


def test_the_default_cycle_is_t1_and_t_cycles_pay_on_working_days_only() -> None:
    assert Cycle(CycleKind.T, days=1) == DEFAULT_CYCLE
    assert Cycle.T0.pays_on_working_days_only and Cycle.WEEKLY.pays_on_working_days_only
    assert not Cycle.D1.pays_on_working_days_only


@pytest.mark.parametrize(
    "text", ["", "T", "T31", "T-1", "D99", "X1", "WEEKLY:XYZ", "WEEKLY:", "T1 T1", None, 1, "T" * 30]
)
def test_unknown_cycle_text_is_refused(text: object) -> None:
    with pytest.raises(errors.SettlementCycleInvalid) as raised:
        Cycle.parse(text)
    assert raised.value.field == "cycle"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Cycle(CycleKind.T, days=31),
        lambda: Cycle(CycleKind.D, days=-1),
        lambda: Cycle(CycleKind.T, days=1, weekday=3),
        lambda: Cycle(CycleKind.WEEKLY, weekday=7),
        lambda: Cycle(CycleKind.WEEKLY, days=1),
        lambda: Cycle("T", days=1),  # type: ignore[arg-type]
        lambda: Cycle(CycleKind.T, days=True),
    ],
)
def test_malformed_cycles_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.SettlementCycleInvalid):
        make()


@pytest.mark.parametrize("value", [dt.datetime(2025, 10, 1, 12, 0), "2025-10-01", None, 20251001])
def test_a_business_date_is_a_date_not_a_datetime_nor_text(value: object) -> None:
    with pytest.raises(errors.BusinessDateInvalid) as raised:
        settlement_date(value, T1)  # type: ignore[arg-type]
    assert raised.value.field == "business_date"
    with pytest.raises(errors.BusinessDateInvalid) as raised:
        business_dates_settling_on(value, T1)  # type: ignore[arg-type]
    assert raised.value.field == "settlement_date"


def test_a_cycle_must_be_a_cycle_not_its_text() -> None:
    with pytest.raises(errors.SettlementCycleInvalid):
        settlement_date(d("2025-10-01"), "T1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties over many dates

# Far enough inside the covered years that every search below stays inside them.
business_dates = st.dates(min_value=dt.date(2004, 6, 1), max_value=dt.date(2026, 8, 31))
cycles = st.one_of(
    st.integers(0, 10).map(Cycle.t),
    st.integers(0, 10).map(Cycle.d),
    st.integers(0, 6).map(Cycle.weekly),
)
SEARCH_DAYS = 120  # more than any cycle above can push a date forward


def brute_force_business_dates(run: dt.date, cycle: Cycle) -> list[dt.date]:
    candidates = [run - dt.timedelta(days=i) for i in range(SEARCH_DAYS, -1, -1)]
    return [day for day in candidates if settlement_date(day, cycle) == run]


@given(day=business_dates, cycle=cycles)
def test_every_business_date_settles_on_one_date_whose_run_pays_it(day: dt.date, cycle: Cycle) -> None:
    run = settlement_date(day, cycle)
    assert run >= day
    assert run - day < dt.timedelta(days=SEARCH_DAYS)
    paid = business_dates_settling_on(run, cycle)
    assert day in paid
    assert all(settlement_date(other, cycle) == run for other in paid)
    # Contiguous, and the neighbours on either side are paid by other runs.
    assert paid == [paid[0] + dt.timedelta(days=i) for i in range(len(paid))]
    assert settlement_date(paid[0] - dt.timedelta(days=1), cycle) < run
    assert settlement_date(paid[-1] + dt.timedelta(days=1), cycle) > run
    if cycle.pays_on_working_days_only:
        assert CHINESE_WORKING_DAYS.is_working_day(run)


@given(day=business_dates, cycle=cycles)
def test_settlement_dates_never_decrease(day: dt.date, cycle: Cycle) -> None:
    assert settlement_date(day, cycle) <= settlement_date(day + dt.timedelta(days=1), cycle)


@given(run=business_dates, cycle=cycles)
def test_a_run_pays_exactly_the_dates_a_brute_force_search_finds(run: dt.date, cycle: Cycle) -> None:
    assert business_dates_settling_on(run, cycle) == brute_force_business_dates(run, cycle)


@given(first=business_dates, cycle=cycles)
def test_consecutive_runs_pay_every_business_date_exactly_once(first: dt.date, cycle: Cycle) -> None:
    runs = [first + dt.timedelta(days=i) for i in range(40)]
    paid = [day for run in runs for day in business_dates_settling_on(run, cycle)]
    assert len(paid) == len(set(paid))
    assert paid == sorted(paid)
    if paid:
        assert paid == [paid[0] + dt.timedelta(days=i) for i in range(len(paid))]


# --------------------------------------------------------------------------- published schedules (a file)

# A made-up schedule in the State Council's shape, for these tests only: not the real one of any year.
NEXT_YEAR = CHINESE_WORKING_DAYS.last_year + 1
SCHEDULE = f"""
[{NEXT_YEAR}]
holidays = [{NEXT_YEAR}-01-01, {NEXT_YEAR}-01-04, {NEXT_YEAR}-01-05]
working_days = [{NEXT_YEAR}-01-09]  # a Saturday or Sunday worked in their place (调休)
"""


def published_calendar(tmp_path, text: str = SCHEDULE) -> WorkingDayCalendar:  # type: ignore[no-untyped-def]
    path = tmp_path / "holidays.toml"
    path.write_text(text, encoding="utf-8")
    calendar = WorkingDayCalendar.from_chinese_calendar()
    calendar.publish(read_published_years(path), source=str(path))
    return calendar


def test_a_published_schedule_covers_the_year_after_the_package(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calendar = published_calendar(tmp_path)
    assert calendar.last_year == NEXT_YEAR
    assert "holidays.toml" in calendar.source
    january = [dt.date(NEXT_YEAR, 1, day) for day in range(1, 15)]
    listed_off = {dt.date(NEXT_YEAR, 1, day) for day in (1, 4, 5)}
    worked_weekend = dt.date(NEXT_YEAR, 1, 9)
    assert worked_weekend.weekday() >= 5
    for day in january:
        expected = day == worked_weekend or (day.weekday() < 5 and day not in listed_off)
        assert calendar.is_working_day(day) == expected, day
    # T1 of the package's last December 31 now has an answer: the first working day of the new year
    last_day = dt.date(NEXT_YEAR - 1, 12, 31)
    first_working = next(day for day in january if calendar.is_working_day(day))
    assert settlement_date(last_day, T1, calendar=calendar) == calendar.next_working_day(last_day) == first_working
    assert last_day in business_dates_settling_on(first_working, T1, calendar=calendar)
    with pytest.raises(errors.SettlementCalendarUnknownYear):
        calendar.is_working_day(dt.date(NEXT_YEAR + 1, 1, 4))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[2027\nholidays = [", "file"),
        (f"[{NEXT_YEAR - 1}]\nholidays = []", "file"),  # the package has that year: its data wins
        (f"[{NEXT_YEAR + 1}]\nholidays = []", "file"),  # a gap: the year in between is unknown
        ("[next]\nholidays = []", "next"),
        (f"[{NEXT_YEAR}]\nholidays = []\nhalf_days = []", str(NEXT_YEAR)),
        (f"[{NEXT_YEAR}]\nholidays = {NEXT_YEAR}-01-01", f"{NEXT_YEAR}.holidays"),
        (f'[{NEXT_YEAR}]\nholidays = ["{NEXT_YEAR}-01-01"]', f"{NEXT_YEAR}.holidays"),  # text, not a date
        (f"[{NEXT_YEAR}]\nholidays = [{NEXT_YEAR + 1}-01-01]", f"{NEXT_YEAR}.holidays"),  # another year
        (f"[{NEXT_YEAR}]\nholidays = [{NEXT_YEAR}-01-01T08:00:00]", f"{NEXT_YEAR}.holidays"),
        (
            f"[{NEXT_YEAR}]\nholidays = [{NEXT_YEAR}-01-09]\nworking_days = [{NEXT_YEAR}-01-09]",
            f"{NEXT_YEAR}.working_days",
        ),
        (f"[{NEXT_YEAR}]\nworking_days = [{NEXT_YEAR}-01-06]", f"{NEXT_YEAR}.working_days"),  # a weekday
    ],
)
def test_a_schedule_file_that_breaks_a_rule_is_refused_whole(tmp_path, text: str, field: str) -> None:  # type: ignore[no-untyped-def]
    calendar = WorkingDayCalendar.from_chinese_calendar()
    with pytest.raises(errors.SettlementCalendarFileInvalid) as raised:
        published_calendar(tmp_path, text)
    assert raised.value.code == "settlement_calendar_file_invalid"
    assert raised.value.field == field
    assert (calendar.last_year, calendar.source) == (CHINESE_WORKING_DAYS.last_year, CHINESE_WORKING_DAYS.source)


def test_the_configured_file_extends_the_process_calendar_at_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "holidays.toml"
    path.write_text(SCHEDULE, encoding="utf-8")
    own_last_year = CHINESE_WORKING_DAYS.last_year
    install_published_years(None)  # nothing configured: nothing changes
    assert CHINESE_WORKING_DAYS.last_year == own_last_year
    try:
        install_published_years(path)
        assert CHINESE_WORKING_DAYS.last_year == NEXT_YEAR
        assert settlement_date(dt.date(NEXT_YEAR, 1, 2), T1) == published_calendar(tmp_path).next_working_day(
            dt.date(NEXT_YEAR, 1, 2)
        )
        assert not CHINESE_WORKING_DAYS.is_working_day(dt.date(NEXT_YEAR, 1, 4))  # the file's holiday
    finally:
        CHINESE_WORKING_DAYS.publish({}, source="")
    assert CHINESE_WORKING_DAYS.last_year == own_last_year
