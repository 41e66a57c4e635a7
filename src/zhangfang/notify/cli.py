"""``zhangfang webhooks …``: list, show and replay merchant webhook events, for operators; ``listen`` for merchants.

Translation only: read the arguments, call ``notify.service`` in a unit of
work of its own, print a Rich table for people or ``--json`` for machines (the
same JSON as the admin API). Refusals are the service's ``ZhangfangError``s;
the root command prints them as one line on stderr and exits 2 (see
``zhangfang.cli``). Deliveries themselves are made by ``zhangfang worker``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.table import Table

from zhangfang.cli import console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.notify import service as notify
from zhangfang.notify.api import AdminWebhookEventDetailOut, AdminWebhookEventOut
from zhangfang.notify.models import Page, WebhookAttempt, WebhookEvent
from zhangfang.parties import service as parties

app = typer.Typer(
    name="webhooks",
    help="通知 merchant webhooks: list, show and replay events (deliveries run in `zhangfang worker`).",
    no_args_is_help=True,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (as the admin API answers) instead of a table.")]


def _time(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def print_events(items: list[WebhookEvent]) -> None:
    table = Table(title="webhook events (newest first)")
    for column in ("id", "merchant", "type", "state", "attempts", "created", "delivered", "url"):
        table.add_column(column, no_wrap=column != "url")
    for e in items:
        table.add_row(
            e.ref,
            e.merchant_ref,
            e.event_type,
            e.state,
            str(e.attempts),
            _time(e.created_at),
            _time(e.delivered_at),
            e.url,
        )
    console().print(table)


def print_event(event: WebhookEvent, attempts: list[WebhookAttempt]) -> None:
    table = Table(title=f"webhook event {event.ref}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in (
        ("id (webhook-id)", event.ref),
        ("merchant", event.merchant_ref),
        ("type", event.event_type),
        ("state", event.state),
        ("url", event.url),
        ("idempotency key", event.idempotency_key),
        ("attempts", str(event.attempts)),
        ("replays", str(event.replays)),
        ("job", event.job_ref or ""),
        ("created", _time(event.created_at)),
        ("delivered", _time(event.delivered_at)),
    ):
        table.add_row(field, value)
    out = console()
    out.print(table)
    log = Table(title="attempts")
    for column in ("#", "started", "ms", "status", "outcome", "error / answer"):
        log.add_column(column, no_wrap=column != "error / answer")
    for a in attempts:
        log.add_row(
            str(a.number),
            _time(a.started_at),
            "" if a.duration_ms is None else str(a.duration_ms),
            "" if a.status_code is None else str(a.status_code),
            a.outcome or "(unfinished)",
            (a.error or a.response_excerpt or "")[:200],
        )
    out.print(log)


@app.command("list")
def webhooks_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="pending, delivered, dead or disabled.")] = None,
    merchant: Annotated[str | None, typer.Option(help="Only this merchant's events (mch_…).")] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    limit: Annotated[int, typer.Option(help="1 to 500.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List webhook events, newest first."""

    def read(conn) -> Page:
        merchant_id = None if merchant is None else parties.get_merchant(conn, ref=merchant).id
        return notify.list_events(conn, merchant_id=merchant_id, state=state, cursor=cursor, limit=limit)

    page = run_in_transaction(get_state(ctx).engine, read, readonly=True)
    if as_json:
        print_json(
            {
                "items": [AdminWebhookEventOut.of(e).model_dump(mode="json") for e in page.items],
                "next_cursor": page.next_cursor,
            }
        )
        return
    print_events(page.items)
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}")


@app.command("show")
def webhooks_show(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="The event's id, msg_… (its webhook-id).")],
    as_json: JsonFlag = False,
) -> None:
    """Show a webhook event and every delivery attempt."""

    def read(conn) -> tuple[WebhookEvent, list[WebhookAttempt]]:
        return notify.get_event(conn, event_id=event_id), notify.list_attempts(conn, event_id=event_id)

    event, attempts = run_in_transaction(get_state(ctx).engine, read, readonly=True)
    if as_json:
        print_json(AdminWebhookEventDetailOut.of_detail(event, attempts).model_dump(mode="json"))
        return
    print_event(event, attempts)


@app.command("replay")
def webhooks_replay(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="The event's id, msg_…; it keeps its webhook-id.")],
    as_json: JsonFlag = False,
) -> None:
    """Deliver a delivered, dead or disabled event again (a worker sends it, with the same webhook-id)."""
    event = run_in_transaction(get_state(ctx).engine, lambda conn: notify.replay(conn, event_id=event_id))
    if as_json:
        print_json(AdminWebhookEventOut.of(event).model_dump(mode="json"))
        return
    typer.echo(f"{event.ref} is pending again (job {event.job_ref}); `zhangfang worker` delivers it")


@app.command("listen")
def webhooks_listen(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1).")] = 9000,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="ZHANGFANG_WEBHOOK_SECRET",
            help="Your whsec_… secret: each webhook's signature is checked with the standardwebhooks package.",
        ),
    ] = None,
) -> None:
    """Receive webhooks on 127.0.0.1 and print each one, verified (a merchant's endpoint, for trying things out)."""
    import uvicorn
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    verifier = Webhook(secret) if secret else None

    async def receive(request: Request) -> PlainTextResponse:
        body = await request.body()
        headers = dict(request.headers)
        if verifier is None:
            verdict = "signature not checked (no --secret)"
        else:
            try:
                verifier.verify(body, headers)
            except WebhookVerificationError as error:
                typer.echo(f"REFUSED {request.url.path}: {error}")
                return PlainTextResponse("signature does not verify", status_code=400)
            verdict = "signature verified"
        try:
            shown = json.dumps(json.loads(body), ensure_ascii=False, indent=2)
        except ValueError:
            shown = body.decode("utf-8", "replace")
        typer.echo(f"POST {request.url.path}  webhook-id {headers.get('webhook-id')}  ({verdict})\n{shown}")
        return PlainTextResponse("ok")

    listener = Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])
    typer.echo(f"listening on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    uvicorn.run(listener, host="127.0.0.1", port=port, log_level="warning")
