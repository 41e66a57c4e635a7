"""``zhangfang mandates …``: withholding mandates (协议代扣) for operators.

::

    zhangfang mandates list [--state S] [--limit N] [--json]
    zhangfang mandates show MDT [--json]                     a mandate and its latest debits
    zhangfang mandates suspend MDT [--reason TEXT]
    zhangfang mandates resume MDT
    zhangfang mandates revoke MDT [--by user|operator] [--reason TEXT]
    zhangfang mandates expire                                 expire mandates past their end (and requests
                                                              not authorized in time)
    zhangfang mandates results DBB [--output FILE]            a batch's per-row results (CSV)
    zhangfang mandates sms [--phone P] [--limit N]            the sandbox's text messages (one-time codes)

Translation only (see ``zhangfang.cli``); refusals exit 2 with ``error: <code>: <message>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from zhangfang import money
from zhangfang.cli import console, get_state, print_json
from zhangfang.config import get_settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.mandates import batch, flows, service

app = typer.Typer(name="mandates", help="协议代扣 withholding mandates, debits and batch files.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why, at most 256 characters.")]


@app.command("list")
def list_mandates(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Mandates, newest first."""
    page = run_in_transaction(
        get_state(ctx).engine, lambda conn: service.list_mandates(conn, state=state, limit=limit), readonly=True
    )
    if as_json:
        print_json({"items": [service.mandate_view(m) for m in page.items]})
        return
    table = Table("mandate", "merchant", "user", "state", "account", "per debit", "per day")
    for m in page.items:
        table.add_row(
            m.ref,
            m.merchant_ref,
            m.user_ref,
            m.state,
            service.mask(m.account_number),
            money.format_minor(m.amount_per_debit_max, m.currency),
            money.format_minor(m.amount_per_day_max, m.currency),
        )
    console().print(table)


@app.command("show")
def show(ctx: typer.Context, mandate: str, as_json: JsonFlag = False) -> None:
    """A mandate and its latest debits."""

    def read(conn):  # type: ignore[no-untyped-def]
        return service.get_mandate(conn, ref=mandate), service.list_debits(conn, mandate_ref=mandate, limit=20)

    found, debits = run_in_transaction(get_state(ctx).engine, read, readonly=True)
    if as_json:
        print_json({**service.mandate_view(found), "debits": [service.debit_view(d) for d in debits.items]})
        return
    out = console()
    view = service.mandate_view(found)
    for key in ("id", "state", "out_mandate_no", "user", "channel", "account_number_masked", "agreement_no"):
        out.print(f"{key:<22}{view[key] or ''}")
    limits = view["limits"]
    out.print(f"{'limits':<22}{limits}")
    table = Table("debit", "state", "amount", "due", "tries", "failure")
    for d in debits.items:
        failure = f"{d.failure_class}:{d.failure_code}" if d.failure_code else ""
        table.add_row(d.ref, d.state, money.format_minor(d.amount, d.currency), str(d.due_date), str(d.tries), failure)
    out.print(table)


def _print(found: service.Mandate) -> None:
    console().print(f"{found.ref} {found.state}")


@app.command("suspend")
def suspend(ctx: typer.Context, mandate: str, reason: ReasonOption = None) -> None:
    """Suspend an active mandate: no debit until it is reinstated; pending debits fail."""
    _print(
        run_in_transaction(
            get_state(ctx).engine, lambda conn: service.suspend_mandate(conn, ref=mandate, reason=reason)
        )
    )


@app.command("resume")
def resume(ctx: typer.Context, mandate: str) -> None:
    """Reinstate a suspended mandate."""
    _print(run_in_transaction(get_state(ctx).engine, lambda conn: service.resume_mandate(conn, ref=mandate)))


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    mandate: str,
    by: Annotated[str, typer.Option(help="user (on the payer's behalf) or operator.")] = "user",
    reason: ReasonOption = None,
) -> None:
    """Revoke a mandate: no debit from now on; pending debits fail."""
    _print(
        run_in_transaction(
            get_state(ctx).engine, lambda conn: service.revoke_mandate(conn, ref=mandate, by=by, reason=reason)
        )
    )


@app.command("expire")
def expire(ctx: typer.Context) -> None:
    """Expire mandates past their end, and requests not authorized in time."""
    count = run_in_transaction(get_state(ctx).engine, lambda conn: service.expire_due_mandates(conn))
    console().print(f"expired {count}")


@app.command("results")
def results(
    ctx: typer.Context,
    batch_ref: Annotated[str, typer.Argument(metavar="BATCH", help="dbb_…")],
    output: Annotated[Path | None, typer.Option(help="Write the CSV here instead of stdout.")] = None,
) -> None:
    """A batch's per-row results (CSV)."""
    text = run_in_transaction(get_state(ctx).engine, lambda conn: batch.results_csv(conn, ref=batch_ref), readonly=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@app.command("sms")
def sms(
    phone: Annotated[str | None, typer.Option(help="Only those to this phone.")] = None,
    limit: Annotated[int, typer.Option(help="The latest this many.")] = 10,
) -> None:
    """The sandbox's text messages (one-time codes), oldest first; read from ZHANGFANG_SANDBOX_DIR."""
    settings = get_settings()
    gateway = flows.sms.SandboxSmsGateway(settings.sandbox_dir)
    for message in gateway.messages(phone)[-limit:]:
        typer.echo(f"{message.sent_at:%Y-%m-%d %H:%M:%S} {message.phone} {message.code or '-'} {message.text}")
