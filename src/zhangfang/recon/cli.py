"""``zhangfang recon …``: parse and import channel bills, reconcile a day, work the discrepancies.

::

    zhangfang recon parse --format bank_direct|alipay|wechat|mt940|camt053 FILE [--json]
    zhangfang recon import --channel C --date D --format F FILE [--partial --rejects FILE]
    zhangfang recon run --channel C --date D [--no-auto]        match, then resolve the safe ones
    zhangfang recon report --channel C --date D [--json]
    zhangfang recon discrepancies [--channel C] [--date D] [--state S] [--json]
    zhangfang recon assign REF --to PERSON --actor YOU
    zhangfang recon resolve REF --action no_action|supplement|write_off|book_overage --reason … --actor YOU
    zhangfang recon approve REF --actor SOMEONE_ELSE
    zhangfang recon bank-check STATEMENT --date D --format mt940|camt053 [--account bank:icbc:custody]

Translation only (see ``zhangfang.cli``); refusals exit 2 with ``error: <code>: <message>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from zhangfang import money
from zhangfang.channels import registry as channel_registry
from zhangfang.cli import console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger.cli import parse_date
from zhangfang.payments import flows as payment_flows
from zhangfang.recon import service, workflow
from zhangfang.recon.importers import FORMATS, LineError, iter_statement

app = typer.Typer(name="recon", help="对账 reconciliation: bills, matching, discrepancies.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ChannelOption = Annotated[str, typer.Option("--channel", help="Channel code, as configured.")]
DateOption = Annotated[str, typer.Option("--date", help="The bill's business date, 2026-11-30.")]
ActorOption = Annotated[str, typer.Option("--actor", help="You.")]


@app.command("parse")
def parse_command(
    file: Path,
    fmt: Annotated[str, typer.Option("--format", help=" | ".join(FORMATS))],
    as_json: JsonFlag = False,
) -> None:
    """Parse a bill or statement without storing it: its normalized lines and totals per currency."""
    reader = iter_statement(file, fmt)
    lines, problems = [], []
    for item in reader:
        (problems if isinstance(item, LineError) else lines).append(item)
    if as_json:
        print_json(
            {
                "format": fmt,
                "lines": [_line_json(line) for line in lines],
                "errors": [{"line": error.line_no, "reason": error.reason} for error in problems],
                "totals": reader.totals.as_json(),
            }
        )
    else:
        table = Table(title=f"{file.name} ({fmt})")
        for column in ("line", "kind", "channel ref", "order ref", "amount", "fee", "currency", "status"):
            table.add_column(column)
        for line in lines:
            table.add_row(
                str(line.line_no),
                line.kind,
                line.channel_ref or "",
                line.order_ref or "",
                money.format_minor(line.amount, line.currency),
                money.format_minor(line.fee, line.currency),
                line.currency,
                line.status or "",
            )
        out = console()
        out.print(table)
        for error in problems:
            out.print(f"line {error.line_no}: {error.reason}")
        out.print(json.dumps(reader.totals.as_json(), ensure_ascii=False, default=str))
    if problems:
        raise typer.Exit(1)


def _line_json(line: Any) -> dict[str, Any]:
    return {
        "line": line.line_no,
        "kind": line.kind,
        "channel_ref": line.channel_ref,
        "order_ref": line.order_ref,
        "original_ref": line.original_ref,
        "amount": line.amount,
        "fee": line.fee,
        "currency": line.currency,
        "direction": line.direction,
        "status": line.status,
        "occurred_at": line.occurred_at,
        "value_date": line.value_date,
        "description": line.description,
    }


@app.command("import")
def import_command(
    ctx: typer.Context,
    file: Path,
    channel: ChannelOption,
    date: DateOption,
    fmt: Annotated[str, typer.Option("--format", help=" | ".join(FORMATS))],
    partial: Annotated[
        bool, typer.Option(help="Import the valid lines and write the rejected ones to --rejects.")
    ] = False,
    rejects: Annotated[Path | None, typer.Option(help="Where --partial writes the rejected lines (CSV).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import a channel's bill for a day; a malformed line imports nothing unless --partial."""
    engine = get_state(ctx).engine
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console(), disable=as_json) as progress:
        task = progress.add_task("importing", total=None)
        result = service.import_bill(
            engine,
            channel=channel,
            bill_date=parse_date(date, "date"),
            path=file,
            fmt=fmt,
            partial=partial,
            on_lines=lambda count: progress.update(task, description=f"importing: {count} lines"),
        )
    if result.rejected and rejects is not None:
        with rejects.open("w", encoding="utf-8") as out:
            out.write("line,reason\n")
            for error in result.rejected:
                reason = error.reason.replace('"', '""')
                out.write(f'{error.line_no},"{reason}"\n')
    summary = {
        "bill": result.ref,
        "channel": result.channel,
        "bill_date": result.bill_date,
        "lines": result.line_count,
        "rejected": len(result.rejected),
        "replayed": result.replayed,
        "totals": result.totals,
    }
    if as_json:
        print_json(summary)
        return
    console().print(
        f"bill {result.ref}: {result.line_count} lines imported, {len(result.rejected)} rejected"
        + (" (already imported)" if result.replayed else "")
    )


@app.command("run")
def run_command(
    ctx: typer.Context,
    channel: ChannelOption,
    date: DateOption,
    auto: Annotated[bool, typer.Option(help="Resolve the safe discrepancies by asking the channel.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Match the day's bill against our records, then resolve what is safe; exit 1 if discrepancies stay open."""
    state = get_state(ctx)
    day = parse_date(date, "date")
    registry = channel_registry.install_from_settings(state.settings)
    payment_flows.install_settings(state.settings)
    service.run(state.engine, channel=channel, bill_date=day, registry=registry)
    resolved = workflow.auto_resolve(state.engine, channel=channel, bill_date=day) if auto and registry else 0
    report = run_in_transaction(
        state.engine, lambda conn: service.report(conn, channel=channel, bill_date=day), readonly=True
    )
    _show_report(report, as_json, auto_resolved=resolved)
    if report.by_state.get("open", 0) or report.by_state.get("assigned", 0):
        raise typer.Exit(1)


@app.command("report")
def report_command(ctx: typer.Context, channel: ChannelOption, date: DateOption, as_json: JsonFlag = False) -> None:
    """The daily report of a channel: matched, carried, discrepancies by class and state."""
    day = parse_date(date, "date")
    report = run_in_transaction(
        get_state(ctx).engine, lambda conn: service.report(conn, channel=channel, bill_date=day), readonly=True
    )
    _show_report(report, as_json)


def _show_report(report: service.DayReport, as_json: bool, *, auto_resolved: int | None = None) -> None:
    if as_json:
        print_json({**vars(report), **({"auto_resolved": auto_resolved} if auto_resolved is not None else {})})
        return
    out = console()
    out.print(
        f"{report.channel} {report.bill_date}: {report.bills} bill(s), {report.lines} lines; "
        f"matched {report.matched_count} ({money.format_minor(report.matched_amount, 'CNY')}), "
        f"carried to the next day {report.carried_count}"
    )
    table = Table(title="discrepancies")
    for column in ("class", "count", "amount"):
        table.add_column(column)
    for klass, figures in sorted(report.by_class.items()):
        table.add_row(klass, str(figures["count"]), money.format_minor(figures["amount"], "CNY"))
    out.print(table)
    out.print("by state: " + (", ".join(f"{k} {v}" for k, v in sorted(report.by_state.items())) or "none"))
    if auto_resolved is not None:
        out.print(f"auto-resolved now: {auto_resolved}")


@app.command("discrepancies")
def discrepancies_command(
    ctx: typer.Context,
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    date: Annotated[str | None, typer.Option("--date")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    limit: int = 100,
    as_json: JsonFlag = False,
) -> None:
    """Discrepancies, oldest first."""
    day = parse_date(date, "date") if date else None
    found = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.list_discrepancies(conn, channel=channel, bill_date=day, state=state, limit=limit),
        readonly=True,
    )
    if as_json:
        print_json({"discrepancies": found})
        return
    table = Table(title="discrepancies")
    for column in ("ref", "date", "class", "kind", "order ref", "channel", "ours", "state", "action"):
        table.add_column(column)
    for item in found:
        table.add_row(
            item["ref"],
            str(item["bill_date"]),
            item["class"],
            item["kind"],
            item["order_ref"] or "",
            "" if item["channel_amount"] is None else money.format_minor(item["channel_amount"], item["currency"]),
            "" if item["platform_amount"] is None else money.format_minor(item["platform_amount"], item["currency"]),
            item["state"],
            item["action"] or "",
        )
    console().print(table)


@app.command("assign")
def assign_command(
    ctx: typer.Context, ref: str, to: Annotated[str, typer.Option("--to", help="The person.")], actor: ActorOption
) -> None:
    """Give a discrepancy to a person."""
    run_in_transaction(get_state(ctx).engine, lambda conn: workflow.assign(conn, ref=ref, assignee=to, actor=actor))
    console().print(f"{ref} assigned to {to}")


@app.command("resolve")
def resolve_command(
    ctx: typer.Context,
    ref: str,
    action: Annotated[str, typer.Option(help=" | ".join(workflow.ACTIONS))],
    reason: Annotated[str, typer.Option(help="Why.")],
    actor: ActorOption,
) -> None:
    """Resolve a discrepancy; write_off and book_overage then wait for a second person's approval."""
    state = get_state(ctx)
    if action == "supplement":
        channel_registry.install_from_settings(state.settings)
        payment_flows.install_settings(state.settings)
    new_state = workflow.resolve(state.engine, ref=ref, action=action, reason=reason, actor=actor)
    console().print(f"{ref} {new_state}")


@app.command("approve")
def approve_command(ctx: typer.Context, ref: str, actor: ActorOption) -> None:
    """Approve a money-moving resolution (not by its resolver): its ledger entry is posted."""
    entry = run_in_transaction(get_state(ctx).engine, lambda conn: workflow.approve(conn, ref=ref, actor=actor))
    console().print(f"{ref} resolved; ledger entry {entry}")


@app.command("history")
def history_command(ctx: typer.Context, ref: str, as_json: JsonFlag = False) -> None:
    """Every step taken on a discrepancy (the audit log)."""
    steps = run_in_transaction(get_state(ctx).engine, lambda conn: workflow.history(conn, ref=ref), readonly=True)
    if as_json:
        print_json({"steps": steps})
        return
    for step in steps:
        console().print(f"{step['at']:%Y-%m-%d %H:%M:%S} {step['actor']} {step['action']} {step['detail'] or ''}")


@app.command("bank-check")
def bank_check_command(
    ctx: typer.Context,
    statement: Path,
    date: DateOption,
    fmt: Annotated[str, typer.Option("--format", help="mt940 | camt053")],
    subject: Annotated[str, typer.Option(help="The bank subject in the books.")] = "100202",
    account: Annotated[str | None, typer.Option(help="The bank account's ledger key, e.g. bank:icbc:custody.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """账实核对: the books' balance of a bank account against the bank statement; exit 1 on a difference."""
    day = parse_date(date, "date")
    check = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.bank_balance_check(
            conn, statement=statement, fmt=fmt, date=day, subject_code=subject, aux=account
        ),
        readonly=True,
    )
    if as_json:
        print_json({**vars(check), "difference": check.difference, "agrees": check.agrees})
    else:
        console().print(
            f"{check.date} {check.subject_code} {check.aux or ''} {check.currency}: "
            f"books {money.format_minor(check.books_balance, check.currency)}, "
            f"statement {money.format_minor(check.statement_balance, check.currency)}, "
            + ("agree" if check.agrees else f"differ by {money.format_minor(check.difference, check.currency)}")
        )
    if not check.agrees:
        raise typer.Exit(1)
