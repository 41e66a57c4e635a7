"""``zhangfang lending …``: loan schedules, computed without a database.

::

    zhangfang lending schedule --principal 10000.00 --annual-rate 0.12 --periods 12
        --method equal-installment|equal-principal|interest-first|bullet --start 2026-01-15
        [--day-count 30/360|actual/365|actual/360] [--rounding ROUND_HALF_EVEN] [--currency CNY] [--json]

``--json`` prints a list of periods, each with ``period`` (an int), ``due_date``
(ISO 8601) and ``principal``, ``interest``, ``total``, ``remaining_principal`` as
decimal strings in major units (``"888.49"``). That is what the lending issue's
acceptance asks of this command, and unlike the integer minor units other
commands print: a schedule is read by people and spreadsheets, and the strings
are exact (``money.format_minor``), never floats.

Translation only (see ``zhangfang.cli``). Every value is read as text and
checked by the domain, so a bad or missing value is refused like any other
request: exit 2 with one line ``error: <code>: <message>`` on stderr.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from zhangfang import money
from zhangfang.cli import console, print_json
from zhangfang.errors import InvalidInput
from zhangfang.ledger.cli import parse_date
from zhangfang.lending import errors
from zhangfang.lending.schedule import DEFAULT_DAY_COUNT, DEFAULT_ROUNDING, Schedule, build_schedule

app = typer.Typer(name="lending", help="借贷 lending: loan schedules.", no_args_is_help=True)

_DECIMAL_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_INT_TEXT = re.compile(r"[0-9]{1,6}")


class OptionRequired(InvalidInput):
    """A required command-line option was not given."""

    code = "option_required"


def _required(value: str | None, option: str) -> str:
    # Options are optional to Typer so that a missing one is refused in the one-line form too.
    if value is None:
        raise OptionRequired(f"{option} is required", field=option.removeprefix("--").replace("-", "_"))
    return value


def _parse_rate(text: str) -> Decimal:
    if not _DECIMAL_TEXT.fullmatch(text.strip()):
        raise errors.AnnualRateInvalid(
            f"--annual-rate must be a decimal such as 0.12 (12 % a year), got {text!r}", field="annual_rate"
        )
    return Decimal(text.strip())


def _parse_periods(text: str) -> int:
    if not _INT_TEXT.fullmatch(text.strip()):
        raise errors.PeriodCountInvalid(f"--periods must be a whole number of months, got {text!r}", field="periods")
    return int(text.strip())


def schedule_as_json(schedule: Schedule) -> list[dict[str, Any]]:
    """The schedule's periods with amounts as major-unit decimal strings (``"888.49"``)."""

    def fmt(amount: int) -> str:
        return money.format_minor(amount, schedule.currency)

    return [
        {
            "period": p.period,
            "due_date": p.due_date.isoformat(),
            "principal": fmt(p.principal),
            "interest": fmt(p.interest),
            "total": fmt(p.total),
            "remaining_principal": fmt(p.remaining_principal),
        }
        for p in schedule.periods
    ]


@app.command("schedule")
def schedule_command(
    principal: Annotated[str | None, typer.Option(help="Principal in major units, e.g. 10000.00 (required).")] = None,
    annual_rate: Annotated[str | None, typer.Option(help="Nominal annual rate, e.g. 0.12 (required).")] = None,
    periods: Annotated[str | None, typer.Option(help="Term in months, 1 to 600 (required).")] = None,
    method: Annotated[
        str | None, typer.Option(help="equal-installment, equal-principal, interest-first or bullet (required).")
    ] = None,
    start: Annotated[str | None, typer.Option(help="Start (disbursement) date, e.g. 2026-01-15 (required).")] = None,
    day_count: Annotated[str, typer.Option(help="30/360, actual/365 or actual/360.")] = DEFAULT_DAY_COUNT.value,
    rounding: Annotated[str, typer.Option(help="A decimal rounding mode, e.g. ROUND_HALF_UP.")] = DEFAULT_ROUNDING,
    currency: Annotated[str, typer.Option(help="ISO 4217 currency of the amounts.")] = "CNY",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """An amortization schedule: principal, interest and total per due date."""
    principal_text = _required(principal, "--principal")
    rate_text = _required(annual_rate, "--annual-rate")
    periods_text = _required(periods, "--periods")
    method_text = _required(method, "--method")
    start_text = _required(start, "--start")
    money.currency(currency)
    try:
        principal_minor = money.parse_amount(principal_text, currency)
    except InvalidInput as error:  # money's message says "amount"; say which option it was
        raise type(error)(f"--principal: {error.message}", field="principal", **error.details) from None
    result = build_schedule(
        principal_minor,
        _parse_rate(rate_text),
        _parse_periods(periods_text),
        method_text,
        parse_date(start_text, "start"),
        day_count=day_count,
        rounding=rounding,
        currency=currency,
    )
    rows = schedule_as_json(result)
    if as_json:
        print_json(rows)
        return
    table = Table(
        title=(
            f"{result.method.value}  {money.format_minor(result.principal_minor, currency)} {currency}"
            f"  {result.annual_rate} a year  {result.day_count.value}"
        )
    )
    table.add_column("period", justify="right")
    table.add_column("due date", no_wrap=True)
    for column in ("principal", "interest", "total", "remaining"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["period"]),
            row["due_date"],
            row["principal"],
            row["interest"],
            row["total"],
            row["remaining_principal"],
        )
    table.add_section()
    fmt = money.format_minor
    table.add_row(
        "",
        "total",
        fmt(result.total_principal, currency),
        fmt(result.total_interest, currency),
        fmt(result.total, currency),
        "",
    )
    console().print(table)
