"""``zhangfang settlement …``: merchants' settlement terms, the settlement run, statements, float, reserve check.

::

    zhangfang settlement merchants show MCH [--json]
    zhangfang settlement merchants set MCH [--cycle T1] [--fee-contract JSON | --default-fee-contract]
        [--account-number N --account-name NAME [--bank-code C] | --default-account]
        [--minimum 100.00 | --no-minimum] [--json]
    zhangfang settlement run --date D [--channel C] [--json]          pays every merchant due on D
    zhangfang settlement statement --merchant MCH --date D [--output FILE]   the statement CSV (UTF-8, BOM)
    zhangfang settlement float --date D [--from D] [--json]           沉淀资金: collected, not yet paid out
    zhangfang settlement reserve-check --date D --statement FILE --format camt053|mt940 [--json]
                                                                      备付金: exit 1 when there is a gap

Translation only (see ``zhangfang.cli``); refusals exit 2 with ``error: <code>: <message>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from zhangfang import money
from zhangfang.channels import registry as channel_registry
from zhangfang.cli import console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger.cli import parse_date
from zhangfang.lending import pos as pos_loans
from zhangfang.payments import flows as payment_flows
from zhangfang.settlement import errors, service
from zhangfang.settlement.models import PayoutAccount

app = typer.Typer(
    name="settlement", help="清结算 settlement: cycles, fees, runs, statements, float.", no_args_is_help=True
)
merchants_app = typer.Typer(name="merchants", help="Merchants' settlement terms.", no_args_is_help=True)
app.add_typer(merchants_app, name="merchants")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DateOption = Annotated[str, typer.Option("--date", help="A date, 2025-10-09.")]
CURRENCY = service.SETTLEMENT_CURRENCY


def _money(amount: int) -> str:
    return money.format_minor(amount, CURRENCY)


def _show_settings(settings: Any, as_json: bool) -> None:
    data = settings.as_json()
    if as_json:
        print_json(data)
        return
    out = console()
    account = data["payout_account"]
    minimum = data["payout_minimum"]
    default = " (default)"
    out.print(f"merchant        {data['merchant']}")
    out.print(f"cycle           {data['cycle']}")
    contract = json.dumps(data["fee_contract"], ensure_ascii=False)
    out.print(f"fee contract    {contract}{default if data['fee_contract_is_default'] else ''}")
    out.print(
        f"payout account  {account['account_name']} {account['account_number_masked']}"
        f"{' bank ' + account['bank_code'] if account['bank_code'] else ''}"
        f"{default if data['payout_account_is_default'] else ''}"
    )
    out.print(f"payout minimum  {_money(minimum) if minimum is not None else 'none'}")


@merchants_app.command("show")
def merchants_show(ctx: typer.Context, merchant: str, as_json: JsonFlag = False) -> None:
    """A merchant's settlement terms (defaults for those never set)."""
    found = run_in_transaction(
        get_state(ctx).engine, lambda conn: service.get_merchant_settings(conn, merchant_ref=merchant), readonly=True
    )
    _show_settings(found, as_json)


@merchants_app.command("set")
def merchants_set(
    ctx: typer.Context,
    merchant: str,
    cycle: Annotated[str | None, typer.Option(help="T0, T1, T<n>, D<n>, WEEKLY[:MON..SUN].")] = None,
    fee_contract: Annotated[
        str | None, typer.Option(help='JSON: {"fee_model": {"model": "percentage", "rate": "0.006"}}.')
    ] = None,
    default_fee_contract: Annotated[bool, typer.Option(help="Back to the merchant's fee_rate.")] = False,
    account_number: Annotated[str | None, typer.Option(help="Payout account number.")] = None,
    account_name: Annotated[str | None, typer.Option(help="Payout account holder.")] = None,
    bank_code: Annotated[str | None, typer.Option(help="The payout account's bank.")] = None,
    default_account: Annotated[bool, typer.Option(help="Back to the merchant's settlement account.")] = False,
    minimum: Annotated[str | None, typer.Option(help="Minimum payout, e.g. 100.00; less is carried.")] = None,
    no_minimum: Annotated[bool, typer.Option(help="No minimum payout.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Set some of a merchant's settlement terms; the others stay as they are."""
    changes: dict[str, Any] = {}
    if cycle is not None:
        changes["cycle"] = cycle
    if default_fee_contract:
        changes["fee_contract"] = None
    elif fee_contract is not None:
        try:
            changes["fee_contract"] = json.loads(fee_contract)
        except ValueError:
            raise errors.FeeContractInvalid("--fee-contract is JSON", field="fee_contract") from None
    if default_account:
        changes["payout_account"] = None
    elif account_number is not None or account_name is not None or bank_code is not None:
        changes["payout_account"] = PayoutAccount(account_number or "", account_name or "", bank_code)
    if no_minimum:
        changes["payout_minimum"] = None
    elif minimum is not None:
        changes["payout_minimum"] = money.parse_amount(minimum, CURRENCY)
    found = run_in_transaction(
        get_state(ctx).engine, lambda conn: service.set_merchant_settings(conn, merchant_ref=merchant, **changes)
    )
    _show_settings(found, as_json)


@app.command("run")
def run_command(
    ctx: typer.Context,
    date: DateOption,
    channel: Annotated[str | None, typer.Option(help="The payout channel (default: the first able).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Settle every merchant whose cycle pays on the date; running a date again changes nothing."""
    state = get_state(ctx)
    day = parse_date(date, "date")
    registry = channel_registry.install_from_settings(state.settings)
    payment_flows.install_settings(state.settings)
    result = run_in_transaction(
        state.engine,
        lambda conn: service.run_settlement(
            conn,
            settlement_date=day,
            registry=registry,
            channel=channel,
            deduction_providers=pos_loans.settlement_deductions(),
        ),
    )
    if as_json:
        print_json(result.as_json())
        return
    out = console()
    table = Table(title=f"settlement {day} ({result.created} new, {result.replayed} from an earlier run)")
    for column in ("merchant", "dates", "captured", "refunds", "fees", "fee adj.", "net", "carried in", "paid",
                   "carried out", "state"):  # fmt: skip
        table.add_column(column)
    for batch in result.batches:
        table.add_row(
            batch.merchant_ref,
            f"{batch.first_business_date}..{batch.last_business_date}",
            _money(batch.captured),
            _money(batch.refunds),
            _money(batch.fees - batch.fees_returned),
            _money(batch.fee_adjustment),
            _money(batch.net),
            _money(batch.carried_in),
            _money(batch.amount),
            _money(batch.carried_out),
            batch.state,
        )
    out.print(table)
    for skip in result.skipped:
        out.print(f"skipped {skip.merchant_ref}: {skip.code}: {skip.message}")


@app.command("statement")
def statement_command(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option("--merchant", help="mch_…")],
    date: DateOption,
    output: Annotated[
        Path | None, typer.Option(help="Where to write (default: statement-<merchant>-<date>.csv).")
    ] = None,
) -> None:
    """Write a merchant's settlement statement of a settlement date as CSV (UTF-8 with BOM)."""
    day = parse_date(date, "date")
    text = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.statement_csv(conn, merchant_ref=merchant, settlement_date=day),
        readonly=True,
    )
    path = output or Path(f"statement-{merchant}-{day.isoformat()}.csv")
    path.write_text(text, encoding="utf-8", newline="")
    console().print(f"wrote {path}")


@app.command("float")
def float_command(
    ctx: typer.Context,
    date: DateOption,
    date_from: Annotated[
        str | None, typer.Option("--from", help="First business date (default: 92 days back).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """沉淀资金: funds collected but not yet paid out, per business date and merchant, and in total."""
    as_of = parse_date(date, "date")
    since = parse_date(date_from, "from") if date_from is not None else None
    report = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.float_report(conn, as_of=as_of, date_from=since),
        readonly=True,
    )
    if as_json:
        print_json(report.as_json())
        return
    out = console()
    table = Table(title=f"float at the end of {as_of} (from {report.date_from})")
    for column in ("business date", "merchant", "payments", "captured", "refunds", "fees", "net", "source"):
        table.add_column(column)
    for line in report.lines:
        table.add_row(
            line.business_date.isoformat(),
            line.merchant_ref,
            str(line.payment_count),
            _money(line.captured),
            _money(line.refunds),
            _money(line.fees - line.fees_returned),
            _money(line.net),
            line.source,
        )
    out.print(table)
    merchants = Table(title="per merchant")
    for column in ("merchant", "float", "carried (owed, not held)"):
        merchants.add_column(column)
    for merchant, figures in report.by_merchant.items():
        merchants.add_row(merchant, _money(figures["total"]), _money(figures["carried"]))
    out.print(merchants)
    out.print(f"total float {_money(report.total)} {report.currency}")


@app.command("reserve-check")
def reserve_check_command(
    ctx: typer.Context,
    date: DateOption,
    statement: Annotated[Path, typer.Option("--statement", help="The custody account's bank statement.")],
    fmt: Annotated[str, typer.Option("--format", help="camt053 | mt940")] = "camt053",
    as_json: JsonFlag = False,
) -> None:
    """备付金: customer funds in the ledger against the custody account's closing balance; exit 1 on a gap."""
    day = parse_date(date, "date")
    check = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.reserve_check(conn, date=day, statement=statement, fmt=fmt),
        readonly=True,
    )
    if as_json:
        print_json(check.as_json())
    else:
        out = console()
        table = Table(title=f"reserve funds at the end of {day}")
        table.add_column("ledger code")
        table.add_column("balance")
        for code, amount in check.ledger_codes.items():
            table.add_row(code, _money(amount))
        table.add_row("customer funds", _money(check.customer_funds))
        table.add_row(f"custody account {check.bank_account or ''}".strip(), _money(check.bank_balance))
        table.add_row("gap", _money(check.gap))
        out.print(table)
        out.print("agrees" if check.agrees else f"GAP of {_money(check.gap)} {check.currency}")
    if not check.agrees:
        raise typer.Exit(1)
