"""``zhangfang accounting …``: book the ledger into vouchers, check the books, report and export them.

::

    zhangfang accounting sync [--mode summary|entry] [--through D]     book closed ledger days (progress bar)
    zhangfang accounting trial-balance --date D | --period YYYY-MM [--json] [--out F --format csv|xlsx]
    zhangfang accounting check --date D [--json]                       账账核对; exit 1 on a difference
    zhangfang accounting export --format beancount --out F [--through D]
    zhangfang accounting report general-ledger|subsidiary|balance-sheet|income-statement …
    zhangfang accounting vouchers list|show|submit|approve|reject
    zhangfang accounting periods list|close
    zhangfang accounting exceptions | days | chart

Translation only, like every group (see ``zhangfang.cli``): amounts on the
command line are major units (``"12.34"``), parsed exactly; ``--json`` prints
what the HTTP API answers. Every command installs the configured chart and
rules first, so what it reads and checks is what the files say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from zhangfang import money
from zhangfang.accounting import beancount, chart, errors, reports, service, statements
from zhangfang.accounting import export as table_export
from zhangfang.accounting import sync as accounting_sync
from zhangfang.accounting.models import ManualVoucherRequest, SyncedDay, Voucher, VoucherLine
from zhangfang.accounting.schemas import (
    CheckOut,
    ExceptionOut,
    PeriodOut,
    SyncedDayOut,
    TrialBalanceOut,
    VoucherOut,
    dump,
)
from zhangfang.cli import console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import InvalidInput
from zhangfang.ledger.cli import parse_date

app = typer.Typer(
    name="accounting",
    help="会计 accounting: vouchers from the ledger, trial balance, 账账核对, periods, reports, exports.",
    no_args_is_help=True,
)
vouchers_app = typer.Typer(
    help="Vouchers (记账凭证): list, show; manual ones with maker-checker.", no_args_is_help=True
)
periods_app = typer.Typer(help="Accounting periods (会计期间): list, close (月结/年结).", no_args_is_help=True)
report_app = typer.Typer(help="Statements: general ledger, subsidiary ledger, balance sheet, income statement.")
app.add_typer(vouchers_app, name="vouchers")
app.add_typer(periods_app, name="periods")
app.add_typer(report_app, name="report")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DateOption = Annotated[str | None, typer.Option("--date", help="A business date, 2026-11-30.")]
PeriodOption = Annotated[str | None, typer.Option("--period", help="A period, 2026-11.")]
CurrencyOption = Annotated[str, typer.Option("--currency", help="ISO 4217 code.")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Write the report to this file.")]
FormatOption = Annotated[str, typer.Option("--format", help="csv or xlsx (with --out).")]


class VoucherLineFormatInvalid(InvalidInput):
    code = "voucher_line_format_invalid"


def _work(ctx: typer.Context, work: Callable[[Any], Any], *, readonly: bool = False) -> Any:
    """Run ``work`` in a unit of work, with the configured chart and rules installed first."""
    state = get_state(ctx)
    run_in_transaction(state.engine, lambda conn: chart.install_configured(conn, state.settings))
    return run_in_transaction(state.engine, work, readonly=readonly)


def _date(text: str | None, field: str = "date") -> dt.date | None:
    return parse_date(text, field) if text is not None else None


def _write(table: table_export.Table, out: Path | None, fmt: str) -> None:
    if out is not None:
        table_export.write_table(table, out, fmt)
        console().print(f"wrote {out}")


def _print_table(table: table_export.Table, *, hide: tuple[str, ...] = ()) -> None:
    """A report as a Rich table; ``hide`` leaves columns out of the screen (files keep them)."""
    keep = [index for index, column in enumerate(table.columns) if column not in hide]
    shown = Table(title=table.title)
    for index in keep:
        justify = "right" if table.columns[index] in table.amount_columns else "left"
        shown.add_column(table.columns[index], justify=justify)
    for row in table.rows:
        shown.add_row(*(row[index] for index in keep))
    console().print(shown)


# --------------------------------------------------------------------------- sync and checks


@app.command("sync")
def sync_command(
    ctx: typer.Context,
    mode: Annotated[str | None, typer.Option(help="summary (汇总凭证) or entry (one voucher per entry).")] = None,
    through: Annotated[str | None, typer.Option(help="Book closed ledger days up to this date only.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Book every ledger day closed since the last sync into vouchers, oldest first."""
    state = get_state(ctx)
    engine = state.engine
    through_date = _date(through, "through")
    pending = run_in_transaction(
        engine, lambda conn: accounting_sync.days_to_sync(conn, through=through_date), readonly=True
    )
    chart_, posting_rules = chart.configured(state.settings)
    with Progress(
        TextColumn("booking ledger days"), BarColumn(), MofNCompleteColumn(), console=console(), disable=as_json
    ) as progress:
        task = progress.add_task("sync", total=len(pending))

        def advance(_day: SyncedDay) -> None:
            progress.advance(task)

        result = accounting_sync.sync(
            engine,
            chart=chart_,
            posting_rules=posting_rules,
            mode=mode or state.settings.accounting_sync_mode,
            through=through_date,
            on_day=advance,
        )
    if as_json:
        print_json({"days": [dump(SyncedDayOut.of(day)) for day in result.days]})
        return
    _print_days(result.days)
    console().print(
        f"booked {result.entry_count} entries into {result.voucher_count} vouchers; "
        f"{result.exception_count} entries reported (zhangfang accounting exceptions)"
    )


def _print_days(days: tuple[SyncedDay, ...] | list[SyncedDay]) -> None:
    table = Table(title="booked ledger days")
    for column in ("date", "mode", "entries", "vouchers", "exceptions", "rules"):
        table.add_column(column)
    for day in days:
        table.add_row(
            day.accounting_date.isoformat(),
            day.mode,
            str(day.entry_count),
            str(day.voucher_count),
            str(day.exception_count),
            day.rules_hash[:12],
        )
    console().print(table)


@app.command("days")
def days_command(ctx: typer.Context, limit: int = 31, as_json: JsonFlag = False) -> None:
    """The most recently booked ledger days, newest first."""
    days = _work(ctx, lambda conn: service.list_synced_days(conn, limit=limit), readonly=True)
    if as_json:
        print_json({"days": [dump(SyncedDayOut.of(day)) for day in days]})
        return
    _print_days(days)


@app.command("trial-balance")
def trial_balance_command(
    ctx: typer.Context,
    date: DateOption = None,
    period: PeriodOption = None,
    currency: Annotated[str | None, typer.Option(help="Only this currency.")] = None,
    as_json: JsonFlag = False,
    out: OutOption = None,
    fmt: FormatOption = "csv",
) -> None:
    """试算平衡表: opening, period and closing debits and credits of every subject; exit 1 if it does not balance."""
    trial = _work(
        ctx,
        lambda conn: reports.trial_balance(conn, date=_date(date), period=period, currency=currency),
        readonly=True,
    )
    table = table_export.trial_balance_table(trial)
    _write(table, out, fmt)
    if as_json:
        print_json(dump(TrialBalanceOut.of(trial)))
    else:
        _print_table(table, hide=("name_en",))
        console().print("balanced" if trial.balanced else f"NOT balanced in {trial.unbalanced_currencies()}")
    if not trial.balanced:
        raise typer.Exit(1)


@app.command("check")
def check_command(
    ctx: typer.Context,
    date: Annotated[str, typer.Option("--date", help="A booked ledger day.")],
    as_json: JsonFlag = False,
) -> None:
    """账账核对: each subject mapped from ledger accounts against their day-end balances; exit 1 on a difference."""
    result = _work(ctx, lambda conn: reports.check_ledger(conn, date=parse_date(date, "date")), readonly=True)
    if as_json:
        print_json(dump(CheckOut.of(result)))
    else:
        _print_check(result)
    if not result.ok:
        raise typer.Exit(1)


def _print_check(result: reports.CheckResult) -> None:
    table = Table(title=f"账账核对 ledger vs accounting at {result.date}")
    for column in ("subject", "currency", "ledger codes"):
        table.add_column(column)
    for column in ("ledger", "accounting", "difference"):
        table.add_column(column, justify="right")
    for item in result.subjects:
        table.add_row(
            f"{item.subject.code} {item.subject.name_zh}",
            item.currency,
            ", ".join(item.ledger_codes),
            money.format_minor(item.ledger_balance, item.currency),
            money.format_minor(item.accounting_balance, item.currency),
            money.format_minor(item.difference, item.currency) if item.difference else "",
        )
    out = console()
    out.print(table)
    for item in result.differences:
        out.print(
            f"{item.subject.code} {item.currency} differs by {money.format_minor(item.difference, item.currency)}:"
        )
        for cause in item.causes:
            out.print(
                f"  {cause.kind} {cause.ref} {cause.accounting_date} {cause.detail} "
                f"{money.format_minor(cause.amount, item.currency)}"
            )
    for unmapped in result.unmapped:
        out.print(
            f"ledger code {unmapped.ledger_code} ({unmapped.account_count} accounts, "
            f"{money.format_minor(unmapped.balance, unmapped.currency)} {unmapped.currency}) is mapped to no subject"
        )
    out.print("no difference" if result.ok else f"{len(result.differences)} difference(s)")


@app.command("exceptions")
def exceptions_command(ctx: typer.Context, limit: int = 100, as_json: JsonFlag = False) -> None:
    """Ledger entries no posting rule covers: reported, not booked."""
    items = _work(ctx, lambda conn: service.list_exceptions(conn, limit=limit), readonly=True)
    if as_json:
        print_json({"exceptions": [dump(ExceptionOut.of(item)) for item in items]})
        return
    table = Table(title="accounting exceptions")
    for column in ("entry", "date", "business code", "reason"):
        table.add_column(column)
    for item in items:
        table.add_row(item.entry_ref, item.accounting_date.isoformat(), item.business_code, item.reason)
    console().print(table)


@app.command("chart")
def chart_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The installed chart of accounts (会计科目表)."""
    subjects = _work(ctx, reports.load_subjects, readonly=True)
    if as_json:
        print_json({"subjects": [vars(subject) for subject in subjects.values()]})
        return
    table = Table(title="会计科目表 chart of accounts")
    for column in ("code", "科目", "subject", "type", "normal side"):
        table.add_column(column)
    for subject in subjects.values():
        indent = "  " * (subject.level - 1)
        table.add_row(f"{indent}{subject.code}", subject.name_zh, subject.name_en, subject.type, subject.normal_side)
    console().print(table)


@app.command("export")
def export_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The file to write.")],
    fmt: Annotated[str, typer.Option("--format", help="beancount")] = "beancount",
    through: Annotated[str | None, typer.Option(help="Vouchers dated up to this date (default: all).")] = None,
) -> None:
    """Export the books for independent checking: a beancount file that `bean-check` verifies."""
    if fmt != "beancount":
        raise errors.ReportFormatInvalid(
            f"the books export as beancount; reports export as csv or xlsx (--out on a report), not {fmt!r}",
            field="format",
        )
    through_date = _date(through, "through")
    with out.open("w", encoding="utf-8") as file:
        summary = _work(ctx, lambda conn: beancount.export_beancount(conn, file, through=through_date), readonly=True)
    console().print(
        f"wrote {out}: {summary.vouchers} vouchers, {summary.postings} postings, {summary.accounts} accounts, "
        f"{summary.assertions} balance assertions (check it with bean-check)"
    )


# --------------------------------------------------------------------------- statements


def _report(ctx: typer.Context, build: Callable[[Any], Any], as_json: bool, out: Path | None, fmt: str) -> None:
    table = _work(ctx, lambda conn: build(conn).to_table(), readonly=True)
    _write(table, out, fmt)
    if as_json:
        print_json(table.as_json())
        return
    _print_table(table)


@report_app.command("general-ledger")
def general_ledger_command(
    ctx: typer.Context,
    subject: Annotated[str, typer.Option(help="Subject code, e.g. 2241.")],
    date_from: Annotated[str, typer.Option("--from", help="First day.")],
    date_to: Annotated[str, typer.Option("--to", help="Last day.")],
    currency: CurrencyOption = "CNY",
    as_json: JsonFlag = False,
    out: OutOption = None,
    fmt: FormatOption = "csv",
) -> None:
    """总账: a subject's opening balance, each day's debits and credits, and its balance after each day."""
    first, last = parse_date(date_from, "from"), parse_date(date_to, "to")
    _report(
        ctx,
        lambda conn: statements.general_ledger(
            conn, subject_code=subject, date_from=first, date_to=last, currency=currency
        ),
        as_json,
        out,
        fmt,
    )


@report_app.command("subsidiary")
def subsidiary_command(
    ctx: typer.Context,
    subject: Annotated[str, typer.Option(help="Subject code, e.g. 224101.")],
    date_from: Annotated[str, typer.Option("--from", help="First day.")],
    date_to: Annotated[str, typer.Option("--to", help="Last day.")],
    aux: Annotated[str | None, typer.Option(help="One auxiliary value, e.g. merchant:mch_….")] = None,
    currency: CurrencyOption = "CNY",
    as_json: JsonFlag = False,
    out: OutOption = None,
    fmt: FormatOption = "csv",
) -> None:
    """明细账: every voucher line of a subject, by auxiliary value, with running balances."""
    first, last = parse_date(date_from, "from"), parse_date(date_to, "to")
    _report(
        ctx,
        lambda conn: statements.subsidiary_ledger(
            conn, subject_code=subject, date_from=first, date_to=last, currency=currency, aux=aux
        ),
        as_json,
        out,
        fmt,
    )


@report_app.command("balance-sheet")
def balance_sheet_command(
    ctx: typer.Context,
    date: Annotated[str, typer.Option("--date", help="Balances at the end of this day.")],
    currency: CurrencyOption = "CNY",
    as_json: JsonFlag = False,
    out: OutOption = None,
    fmt: FormatOption = "csv",
) -> None:
    """资产负债表 at a date."""
    day = parse_date(date, "date")
    _report(ctx, lambda conn: statements.balance_sheet(conn, date=day, currency=currency), as_json, out, fmt)


@report_app.command("income-statement")
def income_statement_command(
    ctx: typer.Context,
    date: DateOption = None,
    period: PeriodOption = None,
    currency: CurrencyOption = "CNY",
    as_json: JsonFlag = False,
    out: OutOption = None,
    fmt: FormatOption = "csv",
) -> None:
    """利润表 of a period, or of a date's month up to that date."""
    first, last = reports.report_range(date=_date(date), period=period)
    _report(
        ctx,
        lambda conn: statements.income_statement(conn, date_from=first, date_to=last, currency=currency),
        as_json,
        out,
        fmt,
    )


# --------------------------------------------------------------------------- vouchers


def _print_vouchers(vouchers: list[Voucher]) -> None:
    table = Table(title="记账凭证 vouchers")
    for column in ("voucher", "date", "kind", "state", "summary", "entries", "total", "maker", "checker"):
        table.add_column(column)
    for voucher in vouchers:
        table.add_row(
            voucher.label,
            voucher.voucher_date.isoformat(),
            voucher.kind,
            voucher.state,
            voucher.summary,
            str(voucher.entry_count),
            f"{money.format_minor(voucher.total, voucher.currency)} {voucher.currency}",
            voucher.maker,
            voucher.checker or "",
        )
    console().print(table)


def _show_voucher(voucher: Voucher, as_json: bool) -> None:
    if as_json:
        print_json(dump(VoucherOut.of(voucher)))
    else:
        _print_voucher(voucher)


def _print_voucher(voucher: Voucher) -> None:
    out = console()
    number = f"{voucher.label}  " if voucher.number is not None else ""
    out.print(f"{number}{voucher.ref}  {voucher.voucher_date}  {voucher.kind}  {voucher.state}")
    out.print(f"摘要 {voucher.summary}   maker {voucher.maker}   checker {voucher.checker or '-'}")
    table = Table()
    for column in ("subject", "aux"):
        table.add_column(column)
    for column in ("debit", "credit"):
        table.add_column(column, justify="right")
    for line in voucher.lines:
        table.add_row(
            line.subject_code,
            line.aux,
            money.format_minor(line.debit, voucher.currency) if line.debit else "",
            money.format_minor(line.credit, voucher.currency) if line.credit else "",
        )
    out.print(table)


@vouchers_app.command("list")
def vouchers_list(
    ctx: typer.Context,
    period: PeriodOption = None,
    state: Annotated[str | None, typer.Option(help="pending, posted or rejected.")] = None,
    kind: Annotated[str | None, typer.Option(help="summary, entry, manual or closing.")] = None,
    limit: int = 100,
    as_json: JsonFlag = False,
) -> None:
    """Vouchers in the order they were made."""
    found = _work(
        ctx, lambda conn: service.list_vouchers(conn, period=period, state=state, kind=kind, limit=limit), readonly=True
    )
    if as_json:
        print_json({"vouchers": [dump(VoucherOut.of(voucher)) for voucher in found]})
        return
    _print_vouchers(found)


@vouchers_app.command("show")
def vouchers_show(ctx: typer.Context, ref: str, as_json: JsonFlag = False) -> None:
    """One voucher with its lines, by ref (vch_…) or number (记-2026-11-0001)."""
    voucher = _work(ctx, lambda conn: service.get_voucher(conn, ref=ref), readonly=True)
    _show_voucher(voucher, as_json)


def parse_voucher_line(text: str, side: str, currency: str) -> VoucherLine:
    """``642101:12.34`` or ``224101@merchant:mch_…:12.34`` → a line of 1234 minor units on ``side``."""
    target, separator, amount_text = text.rpartition(":")
    if not separator or not target or not amount_text:
        raise VoucherLineFormatInvalid(
            f"--{side} must be SUBJECT:AMOUNT or SUBJECT@AUX:AMOUNT in major units, such as 642101:12.34; got {text!r}",
            field=side,
        )
    subject, _, aux = target.partition("@")
    dimension = aux.partition(":")[0] if ":" in aux else None
    amount = money.parse_amount(amount_text, currency)
    return VoucherLine(
        subject,
        debit=amount if side == "debit" else 0,
        credit=amount if side == "credit" else 0,
        dimension=dimension,
        aux=aux,
    )


@vouchers_app.command("submit")
def vouchers_submit(
    ctx: typer.Context,
    key: Annotated[str, typer.Option(help="Your idempotency key: submitting it again returns the same voucher.")],
    date: Annotated[str, typer.Option("--date", help="The voucher's date (in an open period).")],
    summary: Annotated[str, typer.Option(help="摘要.")],
    maker: Annotated[str, typer.Option(help="You, the maker.")],
    debit: Annotated[list[str], typer.Option(help="SUBJECT:AMOUNT (repeat).")],
    credit: Annotated[list[str], typer.Option(help="SUBJECT:AMOUNT (repeat).")],
    currency: CurrencyOption = "CNY",
    as_json: JsonFlag = False,
) -> None:
    """Make a manual voucher (手工凭证); it waits for a second person to approve it."""
    request = ManualVoucherRequest(
        idempotency_key=key,
        voucher_date=parse_date(date, "date"),
        currency=currency,
        summary=summary,
        lines=(
            *(parse_voucher_line(text, "debit", currency) for text in debit),
            *(parse_voucher_line(text, "credit", currency) for text in credit),
        ),
        maker=maker,
    )
    voucher, _created = _work(ctx, lambda conn: service.submit_manual_voucher(conn, request=request))
    _show_voucher(voucher, as_json)


@vouchers_app.command("approve")
def vouchers_approve(
    ctx: typer.Context,
    ref: str,
    checker: Annotated[str, typer.Option(help="You, the checker (not the maker).")],
    as_json: JsonFlag = False,
) -> None:
    """Approve and post a pending manual voucher (maker-checker): it gets its number."""
    voucher = _work(ctx, lambda conn: service.approve_voucher(conn, ref=ref, checker=checker))
    _show_voucher(voucher, as_json)


@vouchers_app.command("reject")
def vouchers_reject(
    ctx: typer.Context,
    ref: str,
    checker: Annotated[str, typer.Option(help="You, the checker (not the maker).")],
    reason: Annotated[str, typer.Option(help="Why.")],
    as_json: JsonFlag = False,
) -> None:
    """Reject a pending manual voucher; it is kept, never posted."""
    voucher = _work(ctx, lambda conn: service.reject_voucher(conn, ref=ref, checker=checker, reason=reason))
    _show_voucher(voucher, as_json)


# --------------------------------------------------------------------------- periods


@periods_app.command("list")
def periods_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every period accounting has used, oldest first."""
    found = _work(ctx, service.list_periods, readonly=True)
    if as_json:
        print_json({"periods": [dump(PeriodOut.of(period)) for period in found]})
        return
    table = Table(title="会计期间 periods")
    for column in ("period", "state", "vouchers", "closed at", "closed by"):
        table.add_column(column)
    for period in found:
        table.add_row(
            period.period,
            period.state,
            str(period.next_number - 1),
            period.closed_at.isoformat() if period.closed_at else "",
            period.closed_by or "",
        )
    console().print(table)


@periods_app.command("close")
def periods_close(
    ctx: typer.Context,
    period: str,
    operator: Annotated[str, typer.Option(help="You.")],
    as_json: JsonFlag = False,
) -> None:
    """Close a period (月结; December is 年结 and posts the closing voucher); it then takes no voucher."""
    closed = _work(ctx, lambda conn: service.close_period(conn, period=period, operator=operator))
    if as_json:
        print_json(dump(PeriodOut.of(closed)))
        return
    console().print(f"period {closed.period} closed by {closed.closed_by} at {closed.closed_at}")
