"""The ``zhangfang`` command (console script ``zhangfang = zhangfang.cli.main:app``).

::

    zhangfang [--database-url URL] db upgrade | db current
    zhangfang ledger …            accounts, entries, holds, chain, day-end (``zhangfang.ledger.cli``)
    zhangfang accounting …        vouchers, trial balance, 账账核对, periods, reports (``zhangfang.accounting.cli``)
    zhangfang recon …             对账: parse and import bills, run, report, resolve (``zhangfang.recon.cli``)
    zhangfang settlement …        清结算: terms, run, statement, float, reserve-check (``zhangfang.settlement.cli``)
    zhangfang lending schedule    借贷: an amortization schedule, no database (``zhangfang.lending.cli``)
    zhangfang merchants …         merchants: create, show, list, status (``zhangfang.parties.cli``)
    zhangfang webhooks …          merchant webhook events: list, show, replay; listen (``zhangfang.notify.cli``)
    zhangfang payments …          payment orders: list, show, close; channel notifies (``zhangfang.payments.cli``)
    zhangfang channels …          payment channels: list (routes, breakers), reset (``zhangfang.payments.cli``)
    zhangfang client get|post     call the merchant API as a merchant, signed (``zhangfang.parties.client_cli``)
    zhangfang demo load           idempotent demo data
    zhangfang jobs run-once       one round of the periodic ledger jobs
    zhangfang jobs run            rounds until SIGTERM/SIGINT (``zhangfang worker`` is the same)
    zhangfang serve               the HTTP API on 127.0.0.1:8000

The database URL defaults to ``ZHANGFANG_DATABASE_URL`` (see ``zhangfang.config``).
A refused request (a ``ZhangfangError``) is one line on stderr,
``error: <code>: <message>``, and exit code 2 (3 when unauthorized); see
``zhangfang.cli`` for every exit code.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Annotated, Any

import typer
from rich.table import Table

from zhangfang import demo, money
from zhangfang.accounting.cli import app as accounting_app
from zhangfang.channels import registry as channel_registry
from zhangfang.cli import CliState, console, get_state, print_json
from zhangfang.config import get_settings
from zhangfang.db import migrate
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import Unauthorized, ZhangfangError
from zhangfang.jobs import periodic
from zhangfang.ledger import service as ledger
from zhangfang.ledger.cli import app as ledger_app
from zhangfang.lending.cli import app as lending_app
from zhangfang.mandates.cli import app as mandates_app
from zhangfang.notify.cli import app as webhooks_app
from zhangfang.parties.cli import app as merchants_app
from zhangfang.parties.client_cli import app as client_app
from zhangfang.payments import flows as payment_flows
from zhangfang.payments.cli import app as payments_app
from zhangfang.payments.cli import channels_app
from zhangfang.recon.cli import app as recon_app
from zhangfang.settlement import calendar as settlement_calendar
from zhangfang.settlement.cli import app as settlement_app

EXIT_REFUSED = 2
EXIT_UNAUTHORIZED = 3


def exit_code_for(error: ZhangfangError) -> int:
    """The exit code of a refusal: 3 for ``Unauthorized``, 2 for every other kind."""
    return EXIT_UNAUTHORIZED if isinstance(error, Unauthorized) else EXIT_REFUSED


def error_line(error: ZhangfangError) -> str:
    message = " ".join(str(error.message).split())
    return f"error: {error.code}: {message}"


class _RefusalsToExitCodes(typer.core.TyperGroup):
    """The root group: every sub-command runs inside its ``invoke``, so refusals are caught once, here."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ZhangfangError as error:
            typer.echo(error_line(error), err=True)
            raise typer.Exit(exit_code_for(error)) from None


app = typer.Typer(
    name="zhangfang",
    cls=_RefusalsToExitCodes,
    help="账房 zhangfang — the money core: ledger, payments, settlement.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data.", no_args_is_help=True)
jobs_app = typer.Typer(help="Periodic ledger jobs: seal, fold, expire holds, day-end.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
app.add_typer(accounting_app, name="accounting")
app.add_typer(recon_app, name="recon")
app.add_typer(settlement_app, name="settlement")
app.add_typer(mandates_app, name="mandates")
app.add_typer(lending_app, name="lending")
app.add_typer(demo_app, name="demo")
app.add_typer(jobs_app, name="jobs")
app.add_typer(merchants_app, name="merchants")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(payments_app, name="payments")
app.add_typer(channels_app, name="channels")
app.add_typer(client_app, name="client")


@app.callback()
def main(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL of the database (default: $ZHANGFANG_DATABASE_URL, else sqlite:///./var/zhangfang.db).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """账房 zhangfang — the money core: ledger, payments, settlement."""
    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    settlement_calendar.install_published_years(settings.settlement_calendar_file)
    state = CliState(settings=settings)
    ctx.obj = state
    ctx.call_on_close(state.close)


# --------------------------------------------------------------------------- db


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database to the newest schema (safe to run again); creates a missing PostgreSQL database."""
    engine = get_state(ctx).engine
    if migrate.create_database_if_missing(engine):
        typer.echo(f"created database {engine.url.database}")
    migrate.upgrade(engine, revision)
    typer.echo(f"database at revision {migrate.current_revision(engine)}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's schema revision and whether it is the newest."""
    current = migrate.current_revision(get_state(ctx).engine)
    head = _head_revision()
    if current is None:
        typer.echo(f"none: the database is not migrated; run `zhangfang db upgrade` (head is {head})")
    elif current == head:
        typer.echo(f"{current} (head)")
    else:
        typer.echo(f"{current} (head is {head}: run `zhangfang db upgrade`)")


# --------------------------------------------------------------------------- demo


@demo_app.command("load")
def demo_load(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the refs as JSON.")] = False,
) -> None:
    """Load the demo ledger (idempotent: loading again changes nothing)."""
    engine = get_state(ctx).engine
    refs = demo.load_demo(engine)
    names = demo.account_names()
    accounts = run_in_transaction(
        engine, lambda conn: [ledger.get_account(conn, ref=refs[name]) for name in names], readonly=True
    )
    if as_json:
        print_json(refs)
        return
    table = Table(title="demo accounts")
    for column in ("name", "key", "ref", "currency"):
        table.add_column(column, no_wrap=True)
    table.add_column("posted", justify="right")
    table.add_column("available", justify="right")
    for name, account in zip(names, accounts, strict=True):
        b = account.balance
        table.add_row(
            name,
            account.key,
            account.ref,
            account.currency,
            money.format_minor(b.posted, b.currency),
            money.format_minor(b.available, b.currency),
        )
    out = console()
    out.print(table)
    codes = ", ".join(refs[name] for name in refs if name.startswith("loan_product_"))
    out.print(f"Loan products: {codes} (`zhangfang lending products`)")
    out.print("Read one over the API (`zhangfang serve`):")
    url = f"http://127.0.0.1:8000/v1/ledger/accounts/{refs[demo.SHOWCASE_ACCOUNT]}"
    out.print(f'  curl -H "Authorization: Bearer $ZHANGFANG_ADMIN_API_KEY" {url}', soft_wrap=True)


# --------------------------------------------------------------------------- jobs


@jobs_app.command("run-once")
def jobs_run_once(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Run one round: seal, fold, expire holds, close past days."""
    state = get_state(ctx)
    counts = periodic.run_round(state.engine, settings=state.settings)
    if as_json:
        print_json(counts)
        return
    typer.echo(", ".join(f"{name} {count}" for name, count in counts.items()))


IntervalOption = Annotated[
    float | None,
    typer.Option(help="Seconds between rounds (default: $ZHANGFANG_JOB_INTERVAL_SECONDS, else 1).", show_default=False),
]


def _run_worker(state: CliState, interval_seconds: float | None) -> None:
    """Loop until SIGTERM or SIGINT; the round in progress finishes first. A second signal stops at once."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_event = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_event.is_set():
            raise KeyboardInterrupt
        logging.getLogger(__name__).info("%s: stopping after this round", signal.Signals(signum).name)
        stop_event.set()

    payment_flows.install_settings(state.settings)
    if channel_registry.install_from_settings(state.settings) is None:
        logging.getLogger(__name__).warning(
            "no payment channels configured (ZHANGFANG_CHANNELS_FILE): payment jobs will wait for them"
        )
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        periodic.run_forever_with_queue(
            state.engine,
            interval_seconds=state.settings.job_interval_seconds if interval_seconds is None else interval_seconds,
            stop_event=stop_event,
            settings=state.settings,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@jobs_app.command("run")
def jobs_run(ctx: typer.Context, interval: IntervalOption = None) -> None:
    """Run the periodic ledger jobs and the job queue until SIGTERM or SIGINT."""
    _run_worker(get_state(ctx), interval)


@app.command("worker")
def worker(ctx: typer.Context, interval: IntervalOption = None) -> None:
    """Run the periodic ledger jobs and the job queue until SIGTERM or SIGINT (same as `jobs run`)."""
    _run_worker(get_state(ctx), interval)


# --------------------------------------------------------------------------- serve


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="Uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API (and, unless ZHANGFANG_RUN_JOBS_IN_SERVER=false, the periodic jobs)."""
    import uvicorn

    from zhangfang.api.app import create_app

    state = get_state(ctx)
    if not state.settings.admin_api_key:
        typer.echo(
            "error: admin_api_key_missing: set ZHANGFANG_ADMIN_API_KEY; the server does not start without one",
            err=True,
        )
        raise typer.Exit(EXIT_REFUSED)
    application = create_app(settings=state.settings, engine=state.engine)
    uvicorn.run(application, host=host, port=port, log_level=log_level)


if __name__ == "__main__":  # pragma: no cover
    app()
