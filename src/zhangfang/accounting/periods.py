"""Accounting periods (会计期间): calendar months, opened on first use, numbered, closed in order."""

from __future__ import annotations

import calendar
import datetime as dt
import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.accounting import errors
from zhangfang.accounting.tables import periods

PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def period_of(day: dt.date) -> str:
    """The accounting period (YYYY-MM) a date belongs to."""
    return f"{day.year:04d}-{day.month:02d}"


def parse_period(text: object) -> tuple[dt.date, dt.date]:
    """The first and last day of a period written YYYY-MM."""
    match = PERIOD.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise errors.PeriodInvalid(f"a period is written YYYY-MM, got {text!r}", field="period")
    year, month = int(match[1]), int(match[2])
    return dt.date(year, month, 1), dt.date(year, month, calendar.monthrange(year, month)[1])


# ---- manual vouchers and maker-checker ------------------------------------------------------------


def ensure_open_period(conn: Connection, day: dt.date) -> str:
    """The period of ``day``, opened if new, locked for numbering; ``period_closed`` if it is closed."""
    period = period_of(day)
    row = conn.execute(sa.select(periods).where(periods.c.period == period).with_for_update()).first()
    if row is None:
        conn.execute(periods.insert().values(period=period, state="open", next_number=1))
        row = conn.execute(sa.select(periods).where(periods.c.period == period).with_for_update()).one()
    if row.state != "open":
        raise errors.PeriodClosed(
            f"period {period} is closed; vouchers for it go to the open period instead", period=period
        )
    return period


def take_numbers(conn: Connection, period: str, count: int) -> int:
    """Reserve ``count`` consecutive voucher numbers in ``period`` (locked by ``ensure_open_period``); the first."""
    first = conn.execute(sa.select(periods.c.next_number).where(periods.c.period == period)).scalar_one()
    conn.execute(periods.update().where(periods.c.period == period).values(next_number=first + count))
    return first
