"""The settlement calendar: on which date a merchant is paid for a business date's transactions.

A transaction belongs to its *business date* (a ``datetime.date`` in
Asia/Shanghai). The merchant's *settlement cycle* (``Cycle``) maps each business
date to one *settlement date*, the date of the settlement run that pays it.
Working days come from the Chinese working-day calendar of the
``chinese-calendar`` package, which knows the public holidays and the official
adjusted working days (调休: a Saturday or Sunday that is a working day).

Cycles (``str(cycle)`` is the text stored in a merchant's contract):

==============  =================================================================================
cycle           the settlement date of business date *d*
==============  =================================================================================
``T0``          *d* if it is a working day, else the next working day after it (a holiday's
                transactions are paid on the first working day after the holiday)
``T1``          the first working day after *d* (the default): Friday's, Saturday's and
                Sunday's transactions are all paid on Monday, a holiday's and the last working
                day's before it on the first working day after it (节假日顺延)
``T<n>``        the *n*-th working day after *d* (n = 1 to 30); ``T+n`` is accepted as text
``D<n>``        *d* plus *n* natural days (n = 0 to 30), weekends and holidays included;
                ``D1`` is the next natural day
``WEEKLY:MON``  the week's transactions (Monday to Sunday) are paid on the given weekday of the
                following week (``MON`` .. ``SUN``; ``WEEKLY`` alone is Monday) or, if that day
                is not a working day, on the first working day after it. When a holiday pushes
                one week's date onto the next week's (Spring Festival), one run pays both weeks.
==============  =================================================================================

Guarantees
- Every business date settles on exactly one settlement date, never before it,
  and ``settlement_date`` never decreases as the business date increases.
- ``business_dates_settling_on(s, cycle)`` is exactly the list of business dates
  *d* with ``settlement_date(d, cycle) == s``, ascending and without gaps (empty
  when *s* is not a working day, for the working-day cycles). So runs on every
  date (every working day suffices for ``T``/``WEEKLY``) pay each business date
  once: none twice, none never.
- For ``T`` and ``WEEKLY`` cycles the settlement date is a working day.
- A date the installed calendar does not cover is refused with
  ``settlement_calendar_unknown_year``, never guessed. chinese-calendar 1.11
  covers 2004 to 2026 (``CHINESE_WORKING_DAYS.first_year``/``last_year``); the
  next year arrives with a package release after the State Council publishes
  its holiday schedule (usually in November). Near the end of the covered range
  an answer that needs the next year (T1 of December 31) is refused too.
  ``D`` cycles do not consult the calendar and work for any date.
- Until the package has it, operations can give the published schedule of the
  following years in a file (``ZHANGFANG_SETTLEMENT_CALENDAR_FILE``, read by
  ``read_published_years``; ``install_published_years`` extends
  ``CHINESE_WORKING_DAYS`` with it at start-up). Its years must follow the
  package's last year without a gap; a year the package knows is refused (the
  package's data wins, never two answers for one date). A bad file is refused
  whole with ``settlement_calendar_file_invalid``.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import chinese_calendar

from zhangfang.settlement import errors

__all__ = [
    "CHINESE_WORKING_DAYS",
    "CYCLE_DAYS_MAX",
    "DEFAULT_CYCLE",
    "Cycle",
    "CycleKind",
    "PublishedYear",
    "WorkingDayCalendar",
    "business_dates_settling_on",
    "install_published_years",
    "read_published_years",
    "settlement_date",
]

CYCLE_DAYS_MAX = 30
WEEKDAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_ONE_DAY = dt.timedelta(days=1)


def _check_date(value: Any, field: str) -> dt.date:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise errors.BusinessDateInvalid(
            f"{field} is a datetime.date (Asia/Shanghai), not {type(value).__name__}", field=field
        )
    return value


@dataclass(frozen=True)
class PublishedYear:
    """One year of the State Council's holiday schedule (节假日安排): the days off, and the weekend days
    worked instead (调休). Every other Monday to Friday is a working day."""

    year: int
    holidays: frozenset[dt.date]
    working_days: frozenset[dt.date]

    def is_working_day(self, day: dt.date) -> bool:
        return day in self.working_days or (day.weekday() < 5 and day not in self.holidays)


def read_published_years(path: Path) -> dict[int, PublishedYear]:
    """The published schedules in a TOML file: a table per year, ``holidays`` and ``working_days`` lists of dates.

    ``settlement_calendar_file_invalid`` (``field`` names the year and list at fault) for a file that
    cannot be read, a key that is not a year, a list that is not of dates of that year, a day in both
    lists, or a working day that is not a Saturday or Sunday.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise errors.SettlementCalendarFileInvalid(f"{path}: cannot be read as TOML: {exc}", field="file") from None
    published: dict[int, PublishedYear] = {}
    for key, table in document.items():
        if not re.fullmatch(r"[12][0-9]{3}", key) or not isinstance(table, dict):
            raise errors.SettlementCalendarFileInvalid(f"{path}: [{key}] is not a year's table like [2027]", field=key)
        if set(table) - {"holidays", "working_days"}:
            raise errors.SettlementCalendarFileInvalid(
                f"{path}: [{key}] holds only holidays and working_days", field=key
            )
        year = int(key)
        days = {name: _published_days(path, year, name, table.get(name, [])) for name in ("holidays", "working_days")}
        if both := days["holidays"] & days["working_days"]:
            raise errors.SettlementCalendarFileInvalid(
                f"{path}: {min(both)} is both a holiday and a working day", field=f"{key}.working_days"
            )
        if weekdays := [day for day in days["working_days"] if day.weekday() < 5]:
            raise errors.SettlementCalendarFileInvalid(
                f"{path}: {min(weekdays)} is a weekday; working_days lists the weekend days worked (调休)",
                field=f"{key}.working_days",
            )
        published[year] = PublishedYear(year, days["holidays"], days["working_days"])
    return published


def _published_days(path: Path, year: int, name: str, values: object) -> frozenset[dt.date]:
    where = f"{year}.{name}"
    if not isinstance(values, list):
        raise errors.SettlementCalendarFileInvalid(f"{path}: {where} is a list of dates", field=where)
    days = set()
    for value in values:  # TOML dates (2027-01-01, unquoted); a quoted "2027-01-01" is text, refused
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime) or value.year != year:
            raise errors.SettlementCalendarFileInvalid(
                f"{path}: {where} holds {value!r}, not a date of {year}", field=where
            )
        days.add(value)
    return frozenset(days)


class WorkingDayCalendar:
    """Which dates are working days, for the years ``first_year`` to ``last_year``; any other year is refused."""

    def __init__(self, *, is_workday: Callable[[dt.date], bool], first_year: int, last_year: int, source: str) -> None:
        assert first_year <= last_year, (first_year, last_year)
        self._is_workday = is_workday
        self.first_year = first_year
        self.last_year = last_year
        self.source = source
        self._own_source, self._own_last_year = source, last_year
        self._published: Mapping[int, PublishedYear] = {}

    def publish(self, years: Mapping[int, PublishedYear], *, source: str) -> None:
        """Cover the years after the calendar's own with these published schedules (replacing any given before).

        The years must follow ``last_year`` of the calendar's own data without a gap
        (``settlement_calendar_file_invalid`` otherwise); none: back to the calendar's own years.
        """
        expected = list(range(self._own_last_year + 1, self._own_last_year + 1 + len(years)))
        if sorted(years) != expected:
            raise errors.SettlementCalendarFileInvalid(
                f"{source}: the years must follow {self._own_last_year} ({self._own_source}) without "
                f"a gap and without a year it has: {expected or 'none'} expected, {sorted(years)} given",
                field="file",
            )
        # In the order that keeps every answer given meanwhile right: a date is never in range without its data.
        last_year = max(years, default=self._own_last_year)
        if last_year < self.last_year:
            self.last_year, self._published = last_year, dict(years)
        else:
            self._published, self.last_year = dict(years), last_year
        self.source = f"{self._own_source} + {source}" if years else self._own_source

    @classmethod
    def from_chinese_calendar(cls) -> WorkingDayCalendar:
        """The Chinese working days of the installed ``chinese-calendar``, for the years it has holiday data for."""
        years = {day.year for day in chinese_calendar.holidays}  # the range the package itself accepts
        version = getattr(chinese_calendar, "__version__", "?")
        return cls(
            is_workday=chinese_calendar.is_workday,
            first_year=min(years),
            last_year=max(years),
            source=f"chinese-calendar {version}",
        )

    def is_working_day(self, day: dt.date) -> bool:
        """Whether ``day`` is a working day (a weekday that is not a holiday, or an adjusted working day)."""
        day = _check_date(day, "day")
        if not self.first_year <= day.year <= self.last_year:
            raise errors.SettlementCalendarUnknownYear(
                f"the settlement calendar ({self.source}) covers {self.first_year} to {self.last_year}, "
                f"not {day.isoformat()}: upgrade chinese-calendar, or give the State Council's published "
                f"schedule for {day.year} in ZHANGFANG_SETTLEMENT_CALENDAR_FILE",
                year=day.year,
                first_year=self.first_year,
                last_year=self.last_year,
            )
        published = self._published.get(day.year)
        if published is not None:
            return published.is_working_day(day)
        return bool(self._is_workday(day))

    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day after ``day``."""
        day += _ONE_DAY
        while not self.is_working_day(day):
            day += _ONE_DAY
        return day

    def previous_working_day(self, day: dt.date) -> dt.date:
        """The last working day before ``day``."""
        day -= _ONE_DAY
        while not self.is_working_day(day):
            day -= _ONE_DAY
        return day

    def working_day_on_or_after(self, day: dt.date) -> dt.date:
        """``day`` if it is a working day, else the first working day after it."""
        return day if self.is_working_day(day) else self.next_working_day(day)


CHINESE_WORKING_DAYS = WorkingDayCalendar.from_chinese_calendar()


def install_published_years(path: Path | None) -> None:
    """Extend ``CHINESE_WORKING_DAYS`` with the schedules in ``path`` (``settlement_calendar_file``, if set).

    Called where a process starts from its settings (the API, the CLI and so the worker), so a bad
    file stops the start instead of a settlement run later.
    """
    if path is not None:
        CHINESE_WORKING_DAYS.publish(read_published_years(path), source=str(path))


class CycleKind(StrEnum):
    T = "T"  # working days (交易日)
    D = "D"  # natural days (自然日)
    WEEKLY = "WEEKLY"


_CYCLE_TEXT = re.compile(r"(?P<kind>[TD])\+?(?P<days>[0-9]{1,2})|WEEKLY(?::(?P<weekday>[A-Z]{3}))?")


@dataclass(frozen=True)
class Cycle:
    """A settlement cycle: ``kind`` with ``days`` (T and D) or ``weekday`` (WEEKLY, 0 = Monday).

    Fields that do not apply to the kind are 0, so equal cycles compare equal.
    Build with ``Cycle.t(n)``, ``Cycle.d(n)``, ``Cycle.weekly(weekday)``, the
    constants ``Cycle.T0``/``T1``/``D1``/``WEEKLY``, or ``Cycle.parse(text)``.
    """

    kind: CycleKind
    days: int = 0
    weekday: int = 0

    T0: ClassVar[Cycle]
    T1: ClassVar[Cycle]
    D1: ClassVar[Cycle]
    WEEKLY: ClassVar[Cycle]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, CycleKind):
            raise errors.SettlementCycleInvalid("a cycle's kind is T, D or WEEKLY", field="cycle")
        for name, value in (("days", self.days), ("weekday", self.weekday)):
            if type(value) is not int:
                raise errors.SettlementCycleInvalid(f"a cycle's {name} is an int", field="cycle")
        if self.kind is CycleKind.WEEKLY:
            if self.days != 0 or not 0 <= self.weekday <= 6:
                raise errors.SettlementCycleInvalid(
                    "a weekly cycle has a weekday from 0 (Monday) to 6 (Sunday) and no days", field="cycle"
                )
        elif self.weekday != 0 or not 0 <= self.days <= CYCLE_DAYS_MAX:
            raise errors.SettlementCycleInvalid(
                f"a {self.kind} cycle has from 0 to {CYCLE_DAYS_MAX} days and no weekday", field="cycle"
            )

    @classmethod
    def t(cls, days: int) -> Cycle:
        """T+``days``: the ``days``-th working day after the business date (T0: the business date, shifted)."""
        return cls(CycleKind.T, days=days)

    @classmethod
    def d(cls, days: int) -> Cycle:
        """D+``days``: the business date plus ``days`` natural days."""
        return cls(CycleKind.D, days=days)

    @classmethod
    def weekly(cls, weekday: int = 0) -> Cycle:
        """Weekly on ``weekday`` (0 = Monday, as ``date.weekday()``) for the previous Monday to Sunday."""
        return cls(CycleKind.WEEKLY, weekday=weekday)

    @classmethod
    def parse(cls, text: Any) -> Cycle:
        """A cycle from its text: ``T0``, ``T1``, ``T+2``, ``D1``, ``WEEKLY``, ``WEEKLY:FRI`` (any case)."""
        if isinstance(text, Cycle):
            return text
        match = _CYCLE_TEXT.fullmatch(text.strip().upper()) if isinstance(text, str) and len(text) <= 20 else None
        if match is None:
            raise errors.SettlementCycleInvalid(
                'a settlement cycle is "T0", "T1", "T<n>", "D<n>" or "WEEKLY[:MON..SUN]"', field="cycle"
            )
        if match["kind"] is not None:
            return cls(CycleKind(match["kind"]), days=int(match["days"]))
        weekday = match["weekday"] or "MON"
        if weekday not in WEEKDAY_NAMES:
            raise errors.SettlementCycleInvalid(
                f"a weekly cycle's day is one of {', '.join(WEEKDAY_NAMES)}", field="cycle"
            )
        return cls.weekly(WEEKDAY_NAMES.index(weekday))

    def __str__(self) -> str:
        if self.kind is CycleKind.WEEKLY:
            return f"WEEKLY:{WEEKDAY_NAMES[self.weekday]}"
        return f"{self.kind}{self.days}"

    @property
    def pays_on_working_days_only(self) -> bool:
        """Whether every settlement date of this cycle is a working day (T and WEEKLY; not D)."""
        return self.kind is not CycleKind.D


Cycle.T0 = Cycle.t(0)
Cycle.T1 = Cycle.t(1)
Cycle.D1 = Cycle.d(1)
Cycle.WEEKLY = Cycle.weekly(0)
DEFAULT_CYCLE = Cycle.T1


def _check_cycle(value: Any) -> Cycle:
    if not isinstance(value, Cycle):
        raise errors.SettlementCycleInvalid("cycle is a Cycle (Cycle.parse reads its text)", field="cycle")
    return value


def _weekly_run_nominal(business_date: dt.date, weekday: int) -> dt.date:
    """The configured weekday of the week after ``business_date``'s week (Monday to Sunday)."""
    return business_date - dt.timedelta(days=business_date.weekday()) + dt.timedelta(days=7 + weekday)


def settlement_date(
    business_date: dt.date, cycle: Cycle, *, calendar: WorkingDayCalendar = CHINESE_WORKING_DAYS
) -> dt.date:
    """Returns the date on which the transactions of ``business_date`` are settled under ``cycle``."""
    business_date = _check_date(business_date, "business_date")
    cycle = _check_cycle(cycle)
    if cycle.kind is CycleKind.D:
        return business_date + dt.timedelta(days=cycle.days)
    if cycle.kind is CycleKind.WEEKLY:
        return calendar.working_day_on_or_after(_weekly_run_nominal(business_date, cycle.weekday))
    if cycle.days == 0:
        return calendar.working_day_on_or_after(business_date)
    day = business_date
    for _ in range(cycle.days):
        day = calendar.next_working_day(day)
    return day


def business_dates_settling_on(
    settlement_date: dt.date, cycle: Cycle, *, calendar: WorkingDayCalendar = CHINESE_WORKING_DAYS
) -> list[dt.date]:
    """Returns the business dates a run on ``settlement_date`` pays under ``cycle``, ascending (maybe none).

    Examples (T1): on a Monday, the previous Friday to Sunday; on the first
    working day after the National Day holiday, every date from the last working
    day before the holiday through its last day.
    """
    day = _check_date(settlement_date, "settlement_date")
    cycle = _check_cycle(cycle)
    if cycle.kind is CycleKind.D:
        return [day - dt.timedelta(days=cycle.days)]
    if not calendar.is_working_day(day):
        return []
    previous = calendar.previous_working_day(day)
    if cycle.kind is CycleKind.WEEKLY:
        # Runs whose nominal day falls after the previous working day and on or before this one move to this one.
        nominals = [n for n in _days(previous + _ONE_DAY, day) if n.weekday() == cycle.weekday]
        if not nominals:
            return []
        first = nominals[0] - dt.timedelta(days=7 + cycle.weekday)
        last = nominals[-1] - dt.timedelta(days=1 + cycle.weekday)
        return _days(first, last)
    if cycle.days == 0:
        return _days(previous + _ONE_DAY, day)
    # T+n pays the dates from the n-th working day before this one up to (not including) the (n-1)-th.
    until = day
    start = previous
    for _ in range(cycle.days - 1):
        until = start
        start = calendar.previous_working_day(start)
    return _days(start, until - _ONE_DAY)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    """The dates from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
