"""``zhangfang payments …`` and ``zhangfang channels …``: payment orders, channel notifies and channels, for operators.

Translation only: read the arguments, call ``payments.service`` (and
``payments.routing`` for the circuit breakers) in a unit of work of its own,
print a Rich table for people or ``--json`` for machines. The JSON is the admin
API's, built by the same functions (``payments.api``): ``payments list`` is
``GET /v1/admin/payments``, ``payments show`` and ``payments close`` are
``GET /v1/admin/payments/{id}``, ``payments notifies`` is
``GET /v1/admin/channel-notifies``, ``channels list`` is
``GET /v1/admin/channels`` and ``channels reset`` is
``POST /v1/admin/channels/{channel}/reset``. Amounts are yuan (``"12.34"``) in
tables and integer minor units (``1234``) in JSON.

An operator's ``payments close`` is not scoped to a merchant; it closes the
order as the merchant's close would, with ``close_reason`` ``operator`` (its
merchant hears ``payment.closed``), and its attempts still open at channels are
closed there by ``zhangfang worker``.

The ``channels`` commands read the channels the settings name
(``ZHANGFANG_CHANNELS_FILE``, or the sandbox's ``channels.toml`` with
``ZHANGFANG_SANDBOX=1``), as a worker does, and close them when done.

Refusals are the service's ``ZhangfangError``s; the root command prints them
as one line on stderr and exits 2 (see ``zhangfang.cli``). Errors of the
command line itself, in the same style:

=========================  ==================================================
code                       rule broken
=========================  ==================================================
channels_not_configured    no channels file is set (nor a sandbox's)
channels_file_invalid      the channels file cannot be read or breaks its rules
channel_not_configured     ``channels reset`` names no configured channel
=========================  ==================================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.engine import Connection

from zhangfang import money
from zhangfang.channels import registry as channel_registry
from zhangfang.channels.registry import ChannelConfigInvalid, ChannelRegistry
from zhangfang.cli import console, get_state, print_json
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import InvalidInput
from zhangfang.parties import service as parties
from zhangfang.payments import errors, routing, service
from zhangfang.payments.api import (
    AdminPaymentOut,
    AdminPaymentPage,
    AdminPaymentSummaryOut,
    ChannelList,
    NotifyOut,
    admin_payment_out,
    channels_out,
)
from zhangfang.payments.models import ChannelHealth, Page, PaymentOrder


class ChannelsFileInvalid(InvalidInput):
    code = "channels_file_invalid"


app = typer.Typer(
    name="payments",
    help="收单 payments: list, show and close payment orders; the notifies channels sent (operators).",
    no_args_is_help=True,
)
channels_app = typer.Typer(
    name="channels",
    help="渠道 channels: their routes and circuit breakers; put a channel back in rotation.",
    no_args_is_help=True,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (as the admin API answers) instead of a table.")]


def _time(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _yuan(amount: int | None, currency: str) -> str:
    return "" if amount is None else money.format_minor(amount, currency)


# --------------------------------------------------------------------------- payments: printing


def print_orders(orders: list[PaymentOrder]) -> None:
    table = Table(title="payments (newest first)")
    for column in ("id", "merchant", "out_trade_no", "state"):
        table.add_column(column, no_wrap=True)
    table.add_column("amount", justify="right", no_wrap=True)
    for column in ("currency", "channel", "created"):
        table.add_column(column, no_wrap=True)
    for o in orders:
        table.add_row(
            o.ref,
            o.merchant_ref,
            o.out_trade_no,
            o.state,
            _yuan(o.amount, o.currency),
            o.currency,
            o.channel or "",
            _time(o.created_at),
        )
    console().print(table)
    if not orders:
        console().print("no payments")


def print_order(view: AdminPaymentOut, title: str | None = None) -> None:
    c = view.currency
    table = Table(title=title or f"payment {view.id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in (
        ("id", view.id),
        ("merchant", view.merchant_id),
        ("out_trade_no", view.out_trade_no),
        ("state", view.state),
        ("amount", f"{_yuan(view.amount, c)} {c}"),
        ("subject", view.subject),
        ("user", view.user or ""),
        ("method", view.method or ""),
        ("channel", view.channel or ""),
        ("channel trade no", view.channel_trade_no or ""),
        ("paying attempt", view.attempt or ""),
        ("fee rate", view.fee_rate),
        ("fee", _yuan(view.fee, c)),
        ("refunded", _yuan(view.refunded, c)),
        ("refunding", _yuan(view.refunding, c)),
        ("ledger entry", view.entry or ""),
        ("notify url", view.notify_url or ""),
        ("created", _time(view.created_at)),
        ("expires", _time(view.expires_at)),
        ("paid", _time(view.paid_at)),
        ("closed", _time(view.closed_at)),
        ("close reason", view.close_reason or ""),
    ):
        table.add_row(field, value)
    out = console()
    out.print(table)

    attempts = Table(title="attempts at channels (oldest first)")
    for column in ("id", "channel", "method", "state"):
        attempts.add_column(column, no_wrap=True)
    attempts.add_column("amount", justify="right", no_wrap=True)
    for column in ("duplicate", "channel trade no", "created", "paid"):
        attempts.add_column(column, no_wrap=True)
    attempts.add_column("error")
    for a in view.attempts:
        attempts.add_row(
            a.id,
            a.channel,
            f"{a.method} ({a.channel_method})",
            a.state,
            _yuan(a.amount, a.currency),
            "yes: refunded to the payer" if a.duplicate else "no",
            a.channel_trade_no or "",
            _time(a.created_at),
            _time(a.paid_at),
            ": ".join(part for part in (a.error_code, a.error_message) if part),
        )
    out.print(attempts)

    refunds = Table(title="refunds (oldest first)")
    for column in ("id", "kind", "out_refund_no", "state"):
        refunds.add_column(column, no_wrap=True)
    refunds.add_column("amount", justify="right", no_wrap=True)
    refunds.add_column("fee returned", justify="right", no_wrap=True)
    for column in ("channel refund no", "created", "finished"):
        refunds.add_column(column, no_wrap=True)
    refunds.add_column("failure")
    for r in view.refunds:
        refunds.add_row(
            r.id,
            r.kind,
            r.out_refund_no or "",
            r.state,
            _yuan(r.amount, r.currency),
            _yuan(r.fee_returned, r.currency),
            r.channel_refund_no or "",
            _time(r.created_at),
            _time(r.finished_at),
            ": ".join(part for part in (r.failure_code, r.failure_message) if part),
        )
    out.print(refunds)


def print_notifies(items: list[NotifyOut]) -> None:
    table = Table(title="notifies received from channels (newest first)")
    for column in ("received", "channel", "kind", "about", "outcome", "notify id"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason")
    for n in items:
        table.add_row(
            _time(n.received_at), n.channel, n.kind, n.ref or "", n.outcome, n.notify_id or "", n.reason or ""
        )
    console().print(table)
    if not items:
        console().print("no notifies")


# --------------------------------------------------------------------------- payments: commands


@app.command("list")
def payments_list(
    ctx: typer.Context,
    merchant: Annotated[str | None, typer.Option(help="Only this merchant's payments (mch_…).")] = None,
    state: Annotated[str | None, typer.Option(help="pending, succeeded, refunded or closed.")] = None,
    limit: Annotated[int, typer.Option(help="Payments per page, 1 to 500.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List payment orders of every merchant (or one), newest first."""
    cli_state = get_state(ctx)

    def read(conn: Connection) -> Page:
        merchant_id = None if merchant is None else parties.get_merchant(conn, ref=merchant).id
        return service.list_orders(conn, merchant_id=merchant_id, state=state, cursor=cursor, limit=limit)

    page = run_in_transaction(cli_state.engine, read, readonly=True)
    if as_json:
        items = [AdminPaymentSummaryOut.of(o, cli_state.settings) for o in page.items]
        print_json(AdminPaymentPage(items=items, next_cursor=page.next_cursor).model_dump(mode="json"))
        return
    print_orders(page.items)
    if page.next_cursor:
        console().print(f"more: --cursor {page.next_cursor}")


@app.command("show")
def payments_show(
    ctx: typer.Context,
    payment_id: Annotated[str, typer.Argument(help="Payment id, pay_….")],
    as_json: JsonFlag = False,
) -> None:
    """Show a payment with its attempts at channels, its refunds (duplicate-payment ones too) and its ledger entry."""
    cli_state = get_state(ctx)
    view = run_in_transaction(
        cli_state.engine,
        lambda conn: admin_payment_out(conn, service.get_order(conn, ref=payment_id), cli_state.settings),
        readonly=True,
    )
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    print_order(view)


@app.command("close")
def payments_close(
    ctx: typer.Context,
    payment_id: Annotated[str, typer.Argument(help="Payment id, pay_…; it must be unpaid (pending).")],
    as_json: JsonFlag = False,
) -> None:
    """Close an unpaid payment so it can no longer be paid; closing a closed one changes nothing.

    A paid payment is refused (payment_already_paid): refund it instead. The
    merchant hears payment.closed; attempts still open at channels are closed
    there by `zhangfang worker`, which refunds a payment made in the meantime.
    """
    cli_state = get_state(ctx)

    def close(conn: Connection) -> tuple[bool, AdminPaymentOut]:
        was_closed = service.get_order(conn, ref=payment_id).state == "closed"
        order = service.close_order(conn, ref=payment_id, reason="operator", settings=cli_state.settings)
        return was_closed, admin_payment_out(conn, order, cli_state.settings)

    was_closed, view = run_in_transaction(cli_state.engine, close)
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    if was_closed:
        typer.echo(f"{view.id} was already closed ({_time(view.closed_at)}); nothing changed")
        return
    typer.echo(f"{view.id} is closed: it can no longer be paid")
    live = [a.id for a in view.attempts if a.state in ("opening", "open", "failed")]
    if live:
        typer.echo(f"`zhangfang worker` closes its attempts still open at channels: {', '.join(live)}")


@app.command("notifies")
def payments_notifies(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Option(help="Only those about this attempt, refund or payout (pat_…, rfd_…, po_…)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, 1 to 500.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """The latest notifies channels sent, newest first, with what became of each (refused ones too)."""
    rows = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: service.list_notifies(conn, ref=ref, limit=limit),
        readonly=True,
    )
    items = [NotifyOut(**row) for row in rows]
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    print_notifies(items)


# --------------------------------------------------------------------------- channels


@contextlib.contextmanager
def configured_channels(settings: Settings) -> Iterator[ChannelRegistry]:
    """The channels the settings name, loaded as a worker loads them; closed when the command is done."""
    try:
        registry = channel_registry.load_from_settings(settings)
    except ChannelConfigInvalid as error:
        raise ChannelsFileInvalid(str(error), field="channels_file") from None
    if registry is None:
        raise errors.ChannelsNotConfigured(
            "no payment channels are configured: set ZHANGFANG_CHANNELS_FILE to the channels TOML file "
            "(docs/channels/configuration.md), or ZHANGFANG_SANDBOX=1 beside a running sandbox"
        )
    try:
        yield registry
    finally:
        registry.close()


def print_channels(channels: ChannelList) -> None:
    table = Table(title="channels")
    for column in ("code", "connection", "breaker", "failures in a row", "open until", "payouts", "routes"):
        table.add_column(column, no_wrap=True)
    table.add_column("last error")
    for ch in channels.items:
        table.add_row(
            ch.code,
            ch.connection,
            ch.breaker,
            str(ch.consecutive_failures),
            _time(ch.open_until),
            "yes" if ch.payouts else "no",
            str(len(ch.routes)),
            ch.last_error or "",
        )
    out = console()
    out.print(table)
    routes = Table(title="routes (enabled channels)")
    for column in ("channel", "method", "channel method", "currency"):
        routes.add_column(column, no_wrap=True)
    for column in ("amount min", "amount max", "cost rate", "cost fixed", "priority"):
        routes.add_column(column, justify="right", no_wrap=True)
    for ch in channels.items:
        for r in ch.routes:
            routes.add_row(
                ch.code,
                r.method,
                r.channel_method,
                r.currency,
                _yuan(r.amount_min, r.currency),
                _yuan(r.amount_max, r.currency),
                r.cost_rate,
                _yuan(r.cost_fixed, r.currency),
                str(r.priority),
            )
    out.print(routes)


@channels_app.command("list")
def channels_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The configured channels: each one's circuit breaker, failures in a row, last error and routes."""
    cli_state = get_state(ctx)
    with configured_channels(cli_state.settings) as registry:
        channels = run_in_transaction(
            cli_state.engine, lambda conn: channels_out(conn, registry, cli_state.settings), readonly=True
        )
    if as_json:
        print_json(channels.model_dump(mode="json"))
        return
    print_channels(channels)


@channels_app.command("reset")
def channels_reset(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The channel's code, as `channels list` shows it (alipay, …).")],
    as_json: JsonFlag = False,
) -> None:
    """Put a channel back in rotation now: close its circuit breaker and forget its failures in a row."""
    cli_state = get_state(ctx)
    with configured_channels(cli_state.settings) as registry:
        if code not in registry.codes():
            raise errors.ChannelNotConfigured(
                f"no channel is called {code!r} (configured: {', '.join(registry.codes())})", field="channel"
            )

        def reset(conn: Connection) -> tuple[ChannelHealth | None, ChannelList]:
            before = routing.health(conn).get(code)
            routing.reset(conn, channel=code, now=now)
            return before, channels_out(conn, registry, cli_state.settings)

        now = dt.datetime.now(dt.UTC)
        before, channels = run_in_transaction(cli_state.engine, reset)
    if as_json:
        print_json(channels.model_dump(mode="json"))
        return
    if before is None or before.consecutive_failures == 0:
        typer.echo(f"{code} was in rotation already (breaker closed); nothing changed")
        return
    was = before.state(now, cli_state.settings.channel_failure_threshold)
    typer.echo(
        f"{code} is back in rotation: its breaker was {was} after {before.consecutive_failures} failures in a row, "
        "now closed"
    )
