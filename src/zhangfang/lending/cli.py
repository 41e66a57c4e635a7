"""``zhangfang lending …``: loan schedules (computed without a database) and loans.

::

    zhangfang lending schedule --principal 10000.00 --annual-rate 0.12 --periods 12
        --method equal-installment|equal-principal|interest-first|bullet --start 2026-01-15
        [--day-count 30/360|actual/365|actual/360] [--rounding ROUND_HALF_EVEN] [--currency CNY] [--json]

Loans, on the database (``--database-url``; see ``lending.service``)::

    zhangfang lending loans [--merchant MCH] [--state active|settled] [--json]
    zhangfang lending show LOAN [--as-of D] [--json]
    zhangfang lending drawdown --merchant MCH --key K --principal 10000.00 --annual-rate 0.12 --periods 12
        --start 2026-01-15 [--method M] [--day-count C] [--kind pos|term] [--currency CNY]
        [--penalty-daily-rate 0.0005] [--allocation-order penalty,fee,interest,principal]
        [--settlement-share 0.2|none] [--mandate MDT] [--product CODE] [--json]
        (with --product, a term left out is the product's: --annual-rate and --periods too when the
        product allows a single value)
    zhangfang lending repay LOAN --amount 12.34 --source manual|withholding|settlement --key K [--as-of D] [--json]
    zhangfang lending repayments LOAN [--json]
    zhangfang lending credit-line MCH [--as-of D] [--json]
    zhangfang lending aging [--as-of D] [--json]
    zhangfang lending accrue [--as-of D] [--json]         what the daily job runs; safe to repeat

Loan products (贷款产品, ``lending.products``)::

    zhangfang lending products [--state active|retired] [--json]
    zhangfang lending product CODE [--json]
    zhangfang lending product-create --code pos-90d --name NAME --kind pos|term
        --annual-rate-min 0.1 --annual-rate-max 0.18 --periods-min 3 --periods-max 3
        --principal-min 1000.00 --principal-max 50000.00 [--currency CNY] [--method M] [--day-count C]
        [--penalty-daily-rate 0.0005] [--allocation-order …] [--settlement-share 0.2|none]
        [--credit-ratio 0.5] [--credit-lookback-days 90] [--credit-step 100.00] [--credit-maximum 1000000.00]
        [--json]                                       idempotent on --code
    zhangfang lending product-retire CODE [--json]     takes no new loans; its loans run on

Installment plans (分期, ``lending.installments``; merchants create them through the API)::

    zhangfang lending plans [--merchant MCH] [--state active|completed|cancelled] [--limit N] [--json]
    zhangfang lending plan PLAN [--json]
    zhangfang lending plan-cancel PLAN [--json]        as the operator; advance mode: the principal is returned

Amounts are given in major units (``12.34``); their ``--json`` prints integer
minor units like the other domains' commands (and the HTTP API, ``lending.api``);
``--as-of`` defaults to today in the business time zone.

``schedule --json`` prints a list of periods, each with ``period`` (an int), ``due_date``
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

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from zhangfang import money
from zhangfang.cli import console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import InvalidInput
from zhangfang.jobs.periodic import business_today
from zhangfang.ledger.cli import parse_date
from zhangfang.lending import errors, installments, products, service
from zhangfang.lending.allocation import DEFAULT_ORDER
from zhangfang.lending.api import aging_as_json, loan_view
from zhangfang.lending.models import (
    DEFAULT_CURRENCY,
    DEFAULT_KIND,
    DEFAULT_PENALTY_DAILY_RATE,
    DEFAULT_SETTLEMENT_SHARE,
    UNSET,
    Loan,
    LoanProduct,
    LoanProductRequest,
    LoanRequest,
)
from zhangfang.lending.schedule import DEFAULT_DAY_COUNT, DEFAULT_ROUNDING, Method, Schedule, build_schedule

app = typer.Typer(
    name="lending",
    help="借贷 lending: loan schedules, loan products, loans, repayments, aging, installment plans.",
    no_args_is_help=True,
)

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


def _parse_rate(text: str, option: str = "--annual-rate") -> Decimal:
    if not _DECIMAL_TEXT.fullmatch(text.strip()):
        raise errors.AnnualRateInvalid(
            f"{option} must be a decimal such as 0.12 (12 % a year), got {text!r}",
            field=option.removeprefix("--").replace("-", "_"),
        )
    return Decimal(text.strip())


def _parse_periods(text: str, option: str = "--periods") -> int:
    if not _INT_TEXT.fullmatch(text.strip()):
        raise errors.PeriodCountInvalid(
            f"{option} must be a whole number of months, got {text!r}",
            field=option.removeprefix("--").replace("-", "_"),
        )
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


# --------------------------------------------------------------------------- loans (on the database)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (amounts in minor units) instead of a table.")]
AsOfOption = Annotated[str | None, typer.Option("--as-of", help="A business date, 2026-03-15 (default: today).")]


def _as_of(ctx: typer.Context, text: str | None) -> dt.date:
    return parse_date(text, "as_of") if text is not None else business_today(get_state(ctx).settings)


def _amount(text: str, option: str, currency: str) -> int:
    try:
        return money.parse_amount(text, currency)
    except InvalidInput as error:  # money's message says "amount"; say which option it was
        raise type(error)(f"{option}: {error.message}", field=option.removeprefix("--"), **error.details) from None


def _order(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def _share(text: str) -> str | None:
    return None if text.strip().lower() == "none" else text


def _show_loan(data: dict[str, Any]) -> None:
    out = console()
    currency = data["currency"]

    def fmt(amount: int) -> str:
        return money.format_minor(amount, currency)

    out.print(f"loan            {data['id']} ({data['kind']}, {data['state']})")
    out.print(f"merchant        {data['merchant']}")
    if data["product"] is not None:
        out.print(f"product         {data['product']}")
    out.print(
        f"terms           {fmt(data['principal'])} {currency} at {data['annual_rate']} a year, {data['periods']} "
        f"periods {data['method']} {data['day_count']} from {data['start_date']}"
    )
    out.print(f"penalty         {data['penalty_daily_rate']} a day; order {','.join(data['allocation_order'])}")
    if data["settlement_share"] is not None or data["mandate"] is not None:
        out.print(f"repaid from     settlement share {data['settlement_share']}, mandate {data['mandate'] or 'none'}")
    out.print(f"outstanding     {fmt(data['outstanding_principal'])} principal")
    if "owed" in data:
        out.print(f"owed            {fmt(data['owed'])} due by {data['as_of']} (penalty through it)")
    table = Table()
    for column in ("period", "due date", "principal", "interest", "penalty", "paid", "owed", "state"):
        table.add_column(column, justify="left" if column in ("due date", "state") else "right")
    for item in data["installments"]:
        paid = item["principal_paid"] + item["interest_paid"] + item["penalty_paid"]
        table.add_row(
            str(item["period"]),
            item["due_date"],
            fmt(item["principal"]),
            fmt(item["interest"]),
            fmt(item["penalty"]),
            fmt(paid),
            fmt(item["owed"]),
            item["state"],
        )
    out.print(table)


@app.command("loans")
def loans_command(
    ctx: typer.Context,
    merchant: Annotated[str | None, typer.Option(help="Only this merchant's loans (mch_…).")] = None,
    state: Annotated[str | None, typer.Option(help="active or settled.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Loans, oldest first."""
    today = business_today(get_state(ctx).settings)
    found: list[Loan] = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.list_loans(conn, merchant_ref=merchant, state=state),
        readonly=True,
    )
    if as_json:
        print_json([loan.as_json(today) for loan in found])
        return
    table = Table(title=f"{len(found)} loans")
    for column in ("loan", "merchant", "kind", "principal", "outstanding", "rate", "periods", "start", "state"):
        table.add_column(column)
    for loan in found:
        table.add_row(
            loan.ref,
            loan.merchant_ref,
            loan.kind,
            money.format_minor(loan.principal, loan.currency),
            money.format_minor(loan.outstanding_principal, loan.currency),
            str(loan.annual_rate),
            str(loan.periods),
            loan.start_date.isoformat(),
            loan.state,
        )
    console().print(table)


@app.command("show")
def show_command(ctx: typer.Context, loan: str, as_of: AsOfOption = None, as_json: JsonFlag = False) -> None:
    """A loan: its terms, its installments and what it owes as of a date."""
    day = _as_of(ctx, as_of)
    data = run_in_transaction(get_state(ctx).engine, lambda conn: loan_view(conn, ref=loan, as_of=day), readonly=True)
    if as_json:
        print_json(data)
        return
    _show_loan(data)


@app.command("drawdown")
def drawdown_command(
    ctx: typer.Context,
    merchant: Annotated[str | None, typer.Option(help="The borrower, mch_… (required).")] = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key: the same key shows the same loan (required).")
    ] = None,
    principal: Annotated[str | None, typer.Option(help="Principal in major units, e.g. 10000.00 (required).")] = None,
    annual_rate: Annotated[
        str | None, typer.Option(help="Nominal annual rate, e.g. 0.12 (required unless the product fixes it).")
    ] = None,
    periods: Annotated[
        str | None, typer.Option(help="Term in months, 1 to 600 (required unless the product fixes it).")
    ] = None,
    start: Annotated[str | None, typer.Option(help="Disbursement date, e.g. 2026-01-15 (required).")] = None,
    method: Annotated[
        str | None,
        typer.Option(help="equal-installment, equal-principal, interest-first or bullet [default: equal-installment]."),
    ] = None,
    day_count: Annotated[
        str | None, typer.Option(help=f"30/360, actual/365 or actual/360 [default: {DEFAULT_DAY_COUNT.value}].")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help=f"pos (limited by the credit line) or term [default: {DEFAULT_KIND}].")
    ] = None,
    currency: Annotated[str | None, typer.Option(help=f"ISO 4217 currency [default: {DEFAULT_CURRENCY}].")] = None,
    penalty_daily_rate: Annotated[
        str | None,
        typer.Option(help=f"罚息 a day on overdue principal, 0 to 0.01 [default: {DEFAULT_PENALTY_DAILY_RATE}]."),
    ] = None,
    allocation_order: Annotated[
        str | None,
        typer.Option(
            help=f"The order repayments pay components in, comma-separated [default: {','.join(DEFAULT_ORDER)}]."
        ),
    ] = None,
    settlement_share: Annotated[
        str | None,
        typer.Option(
            help=f"POS: share of each settlement taken, 0 to 1, or none [default: {DEFAULT_SETTLEMENT_SHARE}]."
        ),
    ] = None,
    mandate: Annotated[str | None, typer.Option(help="Withholding mandate for due dates, mdt_….")] = None,
    product: Annotated[
        str | None, typer.Option(help="A loan product's code: the terms left out are the product's.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Lend to a merchant: the schedule is built and the principal credited to its balance.

    Without --product, the options left out take the defaults shown; with it, the product's terms.
    """
    merchant_ref = _required(merchant, "--merchant")
    key_text = _required(key, "--key")
    principal_text = _required(principal, "--principal")
    if product is None:
        _required(annual_rate, "--annual-rate")
        _required(periods, "--periods")
    start_text = _required(start, "--start")
    state = get_state(ctx)

    def lend(conn: Any) -> tuple[Loan, bool]:
        money_currency = currency
        if money_currency is None:  # the principal is read in the product's currency
            money_currency = products.get_product(conn, code=product).currency if product else DEFAULT_CURRENCY
        money.currency(money_currency)
        request = LoanRequest(
            key=key_text,
            merchant_ref=merchant_ref,
            principal=_amount(principal_text, "--principal", money_currency),
            start=parse_date(start_text, "start"),
            annual_rate=UNSET if annual_rate is None else _parse_rate(annual_rate),
            periods=UNSET if periods is None else _parse_periods(periods),
            method=UNSET if method is None else method,
            day_count=UNSET if day_count is None else day_count,
            kind=UNSET if kind is None else kind,
            currency=UNSET if currency is None else currency,
            penalty_daily_rate=UNSET if penalty_daily_rate is None else penalty_daily_rate,
            allocation_order=UNSET if allocation_order is None else _order(allocation_order),
            settlement_share=UNSET if settlement_share is None else _share(settlement_share),
            mandate_ref=mandate,
            product=product,
        )
        return service.disburse(conn, request=request)

    today = business_today(state.settings)
    loan, created = run_in_transaction(state.engine, lend)
    if as_json:
        print_json({**loan.as_json(today), "created": created})
        return
    console().print("lent" if created else "the key replays an earlier loan; nothing was written")
    _show_loan(loan.as_json(today))


@app.command("repay")
def repay_command(
    ctx: typer.Context,
    loan: str,
    amount: Annotated[str | None, typer.Option(help="Amount in major units, e.g. 12.34 (required).")] = None,
    source: Annotated[str | None, typer.Option(help="manual, withholding or settlement (required).")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key, per loan (required).")] = None,
    as_of: AsOfOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Repay a loan from the merchant's balance: what is due first, in the loan's allocation order."""
    amount_text = _required(amount, "--amount")
    source_text = _required(source, "--source")
    key_text = _required(key, "--key")
    day = _as_of(ctx, as_of)

    def pay(conn: Any) -> Any:
        currency = service.get_loan(conn, ref=loan).currency
        return service.repay(
            conn,
            loan_ref=loan,
            amount=_amount(amount_text, "--amount", currency),
            source=source_text,
            key=key_text,
            as_of=day,
        ), currency

    repayment, currency = run_in_transaction(get_state(ctx).engine, pay)
    if as_json:
        print_json(repayment.as_json())
        return

    def fmt(value: int) -> str:
        return money.format_minor(value, currency)

    out = console()
    replayed = " (the key replays an earlier repayment; nothing was written)" if repayment.replayed else ""
    out.print(f"repayment {repayment.ref} of {fmt(repayment.amount)} {currency} to {repayment.loan_ref}{replayed}")
    table = Table()
    for column in ("period", "penalty", "interest", "principal"):
        table.add_column(column, justify="right")
    for part in repayment.split:
        table.add_row(str(part["period"]), fmt(part["penalty"]), fmt(part["interest"]), fmt(part["principal"]))
    out.print(table)
    out.print(f"applied {fmt(repayment.applied)}, overpayment (not taken) {fmt(repayment.overpayment)}")


@app.command("repayments")
def repayments_command(ctx: typer.Context, loan: str, as_json: JsonFlag = False) -> None:
    """A loan's repayments, oldest first."""

    def read(conn: Any) -> Any:
        return service.get_loan(conn, ref=loan).currency, service.list_repayments(conn, loan_ref=loan)

    currency, found = run_in_transaction(get_state(ctx).engine, read, readonly=True)
    if as_json:
        print_json([repayment.as_json() for repayment in found])
        return
    table = Table(title=f"{len(found)} repayments of {loan}")
    for column in ("repayment", "source", "amount", "applied", "overpayment", "entry"):
        table.add_column(column)
    for repayment in found:
        table.add_row(
            repayment.ref,
            repayment.source,
            money.format_minor(repayment.amount, currency),
            money.format_minor(repayment.applied, currency),
            money.format_minor(repayment.overpayment, currency),
            repayment.entry_ref or "",
        )
    console().print(table)


@app.command("credit-line")
def credit_line_command(ctx: typer.Context, merchant: str, as_of: AsOfOption = None, as_json: JsonFlag = False) -> None:
    """授信额度: a merchant's POS credit line, from its settled volume."""
    day = _as_of(ctx, as_of)
    line = run_in_transaction(
        get_state(ctx).engine, lambda conn: service.credit_line(conn, merchant_ref=merchant, as_of=day), readonly=True
    )
    if as_json:
        print_json(line.as_json())
        return
    out = console()
    fmt = money.format_minor
    out.print(f"merchant        {line.merchant_ref} as of {line.as_of}")
    out.print(f"settled volume  {fmt(line.settled_volume, 'CNY')}")
    out.print(f"limit           {fmt(line.limit, 'CNY')}")
    out.print(f"outstanding     {fmt(line.outstanding_principal, 'CNY')} (POS principal)")
    out.print(f"available       {fmt(line.available, 'CNY')}")


@app.command("aging")
def aging_command(ctx: typer.Context, as_of: AsOfOption = None, as_json: JsonFlag = False) -> None:
    """账龄: active loans by delinquency bucket (current, M1, M2, M3+) with principal outstanding."""
    day = _as_of(ctx, as_of)
    report = run_in_transaction(get_state(ctx).engine, lambda conn: service.aging(conn, as_of=day), readonly=True)
    data = aging_as_json(report)
    if as_json:
        print_json(data)
        return
    out = console()
    fmt = money.format_minor
    table = Table(title=f"aging as of {day}")
    for column in ("bucket", "loans", "outstanding principal"):
        table.add_column(column, justify="right" if column != "bucket" else "left")
    for row in data["rows"]:
        table.add_row(row["bucket"], str(row["loan_count"]), fmt(row["outstanding_principal"], "CNY"))
    table.add_section()
    table.add_row("total", str(data["loan_count"]), fmt(data["outstanding_principal"], "CNY"))
    out.print(table)
    lines = Table(title="loans")
    for column in ("loan", "days past due", "bucket", "outstanding principal"):
        lines.add_column(column)
    for line in data["lines"]:
        lines.add_row(
            line["loan"], str(line["days_past_due"]), line["bucket"], fmt(line["outstanding_principal"], "CNY")
        )
    out.print(lines)


@app.command("accrue")
def accrue_command(ctx: typer.Context, as_of: AsOfOption = None, as_json: JsonFlag = False) -> None:
    """Recognise interest due and penalty through a date on every active loan (the daily job; safe to repeat)."""
    day = _as_of(ctx, as_of)
    touched = run_in_transaction(get_state(ctx).engine, lambda conn: service.accrue(conn, as_of=day))
    if as_json:
        print_json({"as_of": day.isoformat(), "loans_accrued": touched})
        return
    console().print(f"accrued through {day}: {touched} loans had something recognised")


# --------------------------------------------------------------------------- loan products (贷款产品)


def _show_product(data: dict[str, Any]) -> None:
    out = console()
    currency = data["currency"]

    def fmt(amount: int) -> str:
        return money.format_minor(amount, currency)

    out.print(f"product         {data['code']} ({data['kind']}, {data['state']}): {data['name']}")
    out.print(
        f"bounds          {fmt(data['principal_min'])} to {fmt(data['principal_max'])} {currency}, "
        f"{data['annual_rate_min']} to {data['annual_rate_max']} a year, {data['periods_min']} to "
        f"{data['periods_max']} periods"
    )
    out.print(f"terms           {data['method']} {data['day_count']}; penalty {data['penalty_daily_rate']} a day")
    out.print(f"order           {','.join(data['allocation_order'])}")
    if data["kind"] == "pos":
        out.print(f"settlement      share {data['settlement_share']}")
        out.print(
            f"credit line     {data['credit_ratio']} × settled volume over {data['credit_lookback_days']} days, "
            f"in steps of {fmt(data['credit_step'])}, at most {fmt(data['credit_maximum'])}"
        )


def _optional_amount(text: str | None, option: str, currency: str) -> int | None:
    return None if text is None else _amount(text, option, currency)


@app.command("products")
def products_command(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="active or retired.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """贷款产品 the loan product catalogue, by code."""
    found: list[LoanProduct] = run_in_transaction(
        get_state(ctx).engine, lambda conn: products.list_products(conn, state=state), readonly=True
    )
    if as_json:
        print_json([product.as_json() for product in found])
        return
    table = Table(title=f"{len(found)} loan products")
    for column in ("code", "name", "kind", "principal", "rate", "periods", "method", "state"):
        table.add_column(column)
    for product in found:
        fmt = money.format_minor
        table.add_row(
            product.code,
            product.name,
            product.kind,
            f"{fmt(product.principal_min, product.currency)} to {fmt(product.principal_max, product.currency)}",
            f"{product.annual_rate_min} to {product.annual_rate_max}",
            f"{product.periods_min} to {product.periods_max}",
            str(product.method),
            product.state,
        )
    console().print(table)


@app.command("product")
def product_command(ctx: typer.Context, code: str, as_json: JsonFlag = False) -> None:
    """A loan product: its fixed terms and its bounds."""
    product = run_in_transaction(
        get_state(ctx).engine, lambda conn: products.get_product(conn, code=code), readonly=True
    )
    if as_json:
        print_json(product.as_json())
        return
    _show_product(product.as_json())


@app.command("product-create")
def product_create_command(
    ctx: typer.Context,
    code: Annotated[str | None, typer.Option(help="URL-safe name, e.g. pos-90d (required).")] = None,
    name: Annotated[str | None, typer.Option(help="For people (required).")] = None,
    kind: Annotated[str | None, typer.Option(help="pos or term (required).")] = None,
    annual_rate_min: Annotated[str | None, typer.Option(help="Lowest annual rate, e.g. 0.1 (required).")] = None,
    annual_rate_max: Annotated[str | None, typer.Option(help="Highest annual rate, e.g. 0.18 (required).")] = None,
    periods_min: Annotated[str | None, typer.Option(help="Shortest term in months (required).")] = None,
    periods_max: Annotated[str | None, typer.Option(help="Longest term in months (required).")] = None,
    principal_min: Annotated[str | None, typer.Option(help="Smallest loan in major units (required).")] = None,
    principal_max: Annotated[str | None, typer.Option(help="Largest loan in major units (required).")] = None,
    currency: Annotated[str, typer.Option(help="ISO 4217 currency.")] = DEFAULT_CURRENCY,
    method: Annotated[
        str, typer.Option(help="equal-installment, equal-principal, interest-first or bullet.")
    ] = Method.EQUAL_INSTALLMENT.value,
    day_count: Annotated[str, typer.Option(help="30/360, actual/365 or actual/360.")] = DEFAULT_DAY_COUNT.value,
    penalty_daily_rate: Annotated[str, typer.Option(help="罚息 a day on overdue principal, 0 to 0.01.")] = str(
        DEFAULT_PENALTY_DAILY_RATE
    ),
    allocation_order: Annotated[
        str, typer.Option(help="The order repayments pay components in, comma-separated.")
    ] = ",".join(DEFAULT_ORDER),
    settlement_share: Annotated[str, typer.Option(help="POS: share of each settlement taken, 0 to 1, or none.")] = str(
        DEFAULT_SETTLEMENT_SHARE
    ),
    credit_ratio: Annotated[str | None, typer.Option(help="POS: credit line = ratio × settled volume [0.5].")] = None,
    credit_lookback_days: Annotated[str | None, typer.Option(help="POS: days of settled volume counted [90].")] = None,
    credit_step: Annotated[
        str | None, typer.Option(help="POS: the line's rounding step, major units [100.00].")
    ] = None,
    credit_maximum: Annotated[str | None, typer.Option(help="POS: the line's cap, major units [1000000.00].")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a loan product to the catalogue (idempotent on --code: the same definition shows the product)."""
    money.currency(currency)
    lookback = None
    if credit_lookback_days is not None:
        if not _INT_TEXT.fullmatch(credit_lookback_days.strip()):
            raise errors.CreditPolicyInvalid(
                f"--credit-lookback-days must be a whole number of days, got {credit_lookback_days!r}",
                field="credit_lookback_days",
            )
        lookback = int(credit_lookback_days.strip())
    request = LoanProductRequest(
        code=_required(code, "--code"),
        name=_required(name, "--name"),
        kind=_required(kind, "--kind"),
        annual_rate_min=_parse_rate(_required(annual_rate_min, "--annual-rate-min"), "--annual-rate-min"),
        annual_rate_max=_parse_rate(_required(annual_rate_max, "--annual-rate-max"), "--annual-rate-max"),
        periods_min=_parse_periods(_required(periods_min, "--periods-min"), "--periods-min"),
        periods_max=_parse_periods(_required(periods_max, "--periods-max"), "--periods-max"),
        principal_min=_amount(_required(principal_min, "--principal-min"), "--principal-min", currency),
        principal_max=_amount(_required(principal_max, "--principal-max"), "--principal-max", currency),
        currency=currency,
        method=method,
        day_count=day_count,
        penalty_daily_rate=penalty_daily_rate,
        allocation_order=_order(allocation_order),
        settlement_share=_share(settlement_share),
        credit_ratio=credit_ratio,
        credit_lookback_days=lookback,
        credit_step=_optional_amount(credit_step, "--credit-step", currency),
        credit_maximum=_optional_amount(credit_maximum, "--credit-maximum", currency),
    )
    product, created = run_in_transaction(
        get_state(ctx).engine, lambda conn: products.create_product(conn, request=request)
    )
    if as_json:
        print_json({**product.as_json(), "created": created})
        return
    console().print("created" if created else "the code replays the same product; nothing was written")
    _show_product(product.as_json())


@app.command("product-retire")
def product_retire_command(ctx: typer.Context, code: str, as_json: JsonFlag = False) -> None:
    """Retire a loan product: it takes no new loans; its loans run on (retiring again changes nothing)."""
    product, retired = run_in_transaction(get_state(ctx).engine, lambda conn: products.retire_product(conn, code=code))
    if as_json:
        print_json({**product.as_json(), "retired_now": retired})
        return
    console().print(f"retired {product.code}" if retired else f"{product.code} was already retired")
    _show_product(product.as_json())


# --------------------------------------------------------------------------- installment plans (分期)


def _show_plan(data: dict[str, Any]) -> None:
    out = console()
    currency = data["currency"]

    def fmt(amount: int) -> str:
        return money.format_minor(amount, currency)

    out.print(f"plan            {data['id']} ({data['mode']}, {data['state']})")
    out.print(f"merchant        {data['merchant']} under mandate {data['mandate']}")
    terms = f"{fmt(data['principal'])} {currency}"
    if data["annual_rate"] is not None:
        terms += f" at {data['annual_rate']} a year, {data['method']}"
    out.print(f"terms           {terms}; penalty {data['penalty_daily_rate']} a day")
    if data["advance_entry"] is not None:
        out.print(f"advanced by     {data['advance_entry']}")
    out.print(f"collected       {fmt(data['collected'])}")
    table = Table()
    for column in ("period", "due date", "principal", "interest", "penalty", "collected", "tries", "debit", "state"):
        table.add_column(column, justify="left" if column in ("due date", "debit", "state") else "right")
    for item in data["periods"]:
        table.add_row(
            str(item["period"]),
            item["due_date"],
            fmt(item["principal"]),
            fmt(item["interest"]),
            fmt(item["penalty"]),
            fmt(item["collected"]),
            str(item["tries"]),
            item["debit"] or "",
            item["state"],
        )
    out.print(table)


@app.command("plans")
def plans_command(
    ctx: typer.Context,
    merchant: Annotated[str | None, typer.Option(help="Only this merchant's plans (mch_…).")] = None,
    state: Annotated[str | None, typer.Option(help="active, completed or cancelled.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, 1 to 500.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """分期 installment plans, newest first."""
    found = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: installments.list_plans(conn, merchant_ref=merchant, state=state, limit=limit),
        readonly=True,
    )
    if as_json:
        print_json(found)
        return
    table = Table(title=f"{len(found)} installment plans")
    for column in ("plan", "merchant", "mandate", "mode", "principal", "collected", "periods", "paid", "state"):
        table.add_column(column)
    for plan in found:
        table.add_row(
            plan["id"],
            plan["merchant"],
            plan["mandate"],
            plan["mode"],
            money.format_minor(plan["principal"], plan["currency"]),
            money.format_minor(plan["collected"], plan["currency"]),
            str(len(plan["periods"])),
            str(sum(1 for period in plan["periods"] if period["state"] == "paid")),
            plan["state"],
        )
    console().print(table)


@app.command("plan")
def plan_command(ctx: typer.Context, plan: str, as_json: JsonFlag = False) -> None:
    """An installment plan and its periods."""
    data = run_in_transaction(get_state(ctx).engine, lambda conn: installments.get_plan(conn, ref=plan), readonly=True)
    if as_json:
        print_json(data)
        return
    _show_plan(data)


@app.command("plan-cancel")
def plan_cancel_command(ctx: typer.Context, plan: str, as_json: JsonFlag = False) -> None:
    """Cancel an installment plan as the operator: periods not at the bank are cancelled (advance mode: the
    merchant returns their principal from its balance)."""
    data = run_in_transaction(get_state(ctx).engine, lambda conn: installments.cancel(conn, ref=plan))
    if as_json:
        print_json(data)
        return
    console().print(f"cancelled {data['id']}")
    _show_plan(data)
