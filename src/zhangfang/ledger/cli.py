"""``zhangfang ledger …``: accounts, entries, holds, the hash chain and day-end from the command line.

Translation only: read the arguments (amounts in major units, ``"12.34"``
CNY, parsed exactly by ``money.parse_amount``), call the ledger service in a
unit of work of its own, and print the result — a Rich table for people, or
``--json`` for machines with amounts as integer minor units. Refusals are the
service's ``ZhangfangError``s; the root command prints them as one line on
stderr and exits 2 (see ``zhangfang.cli``).

Errors of the command line itself, in the same style:

=====================  ==================================================
code                   rule broken
=====================  ==================================================
leg_format_invalid     ``--debit``/``--credit`` must be ``ACCOUNT:AMOUNT``
date_invalid           a date must be ISO 8601, ``2025-01-31``
time_invalid           a time must be ISO 8601, ``2025-01-31T18:00:00+08:00``
=====================  ==================================================
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from zhangfang import money
from zhangfang.cli import console, err_console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import InvalidInput
from zhangfang.ledger import errors
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import (
    Account,
    AccountRequest,
    Balance,
    DayClose,
    Entry,
    EntryRequest,
    Hold,
    Leg,
)
from zhangfang.ledger.schemas import AccountOut, DayCloseOut, EntryOut, HoldOut

SEAL_BATCH_SIZE = 5000


class LegFormatInvalid(InvalidInput):
    code = "leg_format_invalid"


class DateInvalid(InvalidInput):
    code = "date_invalid"


class TimeInvalid(InvalidInput):
    code = "time_invalid"


app = typer.Typer(name="ledger", help="账务 ledger: accounts, entries, holds, chain, day-end.", no_args_is_help=True)
accounts_app = typer.Typer(help="Open, list, show and close accounts.", no_args_is_help=True)
hold_app = typer.Typer(help="Holds (冻结): reserve funds, then post or void them.", no_args_is_help=True)
day_end_app = typer.Typer(
    help="Day-end (日切): close the open accounting date (or --date), or `day-end list`.",
    invoke_without_command=True,
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(hold_app, name="hold")
app.add_typer(day_end_app, name="day-end")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (amounts in minor units) instead of a table.")]


# --------------------------------------------------------------------------- parsing


def parse_leg(text: str, side: str, currency: str) -> Leg:
    """``acc_…:12.34`` → a leg of 1234 minor units on ``side``."""
    account, separator, amount_text = text.rpartition(":")
    if not separator or not account or not amount_text:
        raise LegFormatInvalid(
            f"--{side} must be ACCOUNT:AMOUNT with the amount in major units, such as acc_…:12.34; got {text!r}",
            field=side,
        )
    return Leg(account=account, side=side, amount=money.parse_amount(amount_text, currency), currency=currency)


def parse_date(text: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise DateInvalid(f"{field} must be a date such as 2025-01-31, got {text!r}", field=field) from None


def parse_time(text: str, field: str, zone: str) -> dt.datetime:
    """An ISO 8601 time, returned in UTC; without an offset it is read in the business time zone.

    Converted to UTC here because the SQLite engine stores a datetime's wall time and reads it
    back as UTC: a ``+08:00`` time would otherwise come back eight hours late.
    """
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeInvalid(
            f"{field} must be a time such as 2025-01-31T18:00:00+08:00, got {text!r}", field=field
        ) from None
    return (value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))).astimezone(dt.UTC)


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise errors.MetadataInvalid(f"metadata must be a JSON object: {exc}", field="metadata") from None
    if not isinstance(value, dict):
        raise errors.MetadataInvalid("metadata must be a JSON object", field="metadata")
    return value


# --------------------------------------------------------------------------- output shapes


def account_json(account: Account) -> dict[str, Any]:
    """The same JSON the HTTP API answers (``ledger.schemas``), so scripts can use either."""
    return AccountOut.of(account).model_dump(mode="json")


def entry_json(entry: Entry) -> dict[str, Any]:
    return EntryOut.of(entry).model_dump(mode="json")


def hold_json(hold: Hold) -> dict[str, Any]:
    return HoldOut.of(hold).model_dump(mode="json")


def day_close_json(close: DayClose) -> dict[str, Any]:
    return DayCloseOut.of(close).model_dump(mode="json")


def _major(amount: int, currency: str) -> str:
    return money.format_minor(amount, currency)


def _flags(account: Account) -> str:
    flags = []
    if account.debits_must_not_exceed_credits:
        flags.append("no-overdraft")
    if account.credits_must_not_exceed_debits:
        flags.append("credits≤debits")
    if account.hot:
        flags.append("hot")
    if account.closed:
        flags.append("closed")
    return ",".join(flags)


def _time(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def print_account(account: Account, title: str | None = None) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    b = account.balance
    rows = [
        ("ref", account.ref),
        ("key", account.key),
        ("ledger code", account.ledger_code),
        ("currency", account.currency),
        ("owner", account.owner_ref or ""),
        ("normal side", account.normal_side),
        ("flags", _flags(account)),
        ("posted", _major(b.posted, b.currency)),
        ("available", _major(b.available, b.currency)),
        ("pending in", _major(b.pending_in, b.currency)),
        ("pending out", _major(b.pending_out, b.currency)),
        ("debits posted", _major(b.debits_posted, b.currency)),
        ("credits posted", _major(b.credits_posted, b.currency)),
        ("created", _time(account.created_at)),
    ]
    if account.closed_at:
        rows.append(("closed", _time(account.closed_at)))
    for field, value in rows:
        table.add_row(field, value)
    console().print(table)


def print_accounts(items: Sequence[Account], title: str | None = None) -> None:
    table = Table(title=title)
    for column in ("ref", "key", "ledger code", "currency", "side", "flags"):
        table.add_column(column, no_wrap=True)
    table.add_column("posted", justify="right")
    table.add_column("available", justify="right")
    for account in items:
        b = account.balance
        table.add_row(
            account.ref,
            account.key,
            account.ledger_code,
            account.currency,
            account.normal_side,
            _flags(account),
            _major(b.posted, b.currency),
            _major(b.available, b.currency),
        )
    console().print(table)


def print_entry(entry: Entry, *, replayed: bool = False) -> None:
    title = f"entry {entry.ref} ({entry.kind}, {entry.business_code}, {entry.accounting_date.isoformat()})"
    if replayed:
        title += " — replayed: this key was used before, nothing new was written"
    table = Table(title=title)
    table.add_column("account", no_wrap=True)
    table.add_column("side")
    table.add_column("effect")
    table.add_column("amount", justify="right")
    table.add_column("currency")
    for p in entry.postings:
        table.add_row(p.account, p.side, p.effect, _major(p.amount, p.currency), p.currency)
    console().print(table)
    notes = [f"key {entry.idempotency_key}"]
    if entry.reverses:
        notes.append(f"reverses {entry.reverses}")
    if entry.hold:
        notes.append(f"hold {entry.hold}")
    console().print("; ".join(notes))


def print_hold(hold: Hold) -> None:
    table = Table(title=f"hold {hold.ref}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("state", hold.state),
        ("debit account", hold.debit_account),
        ("credit account", hold.credit_account),
        ("amount", f"{_major(hold.amount, hold.currency)} {hold.currency}"),
        (
            "posted amount",
            _major(hold.posted_amount, hold.currency) if hold.posted_amount is not None else "",
        ),
        ("expires", _time(hold.expires_at)),
        ("entry", hold.entry),
        ("resolving entry", hold.resolving_entry or ""),
        ("created", _time(hold.created_at)),
        ("resolved", _time(hold.resolved_at)),
    ]
    for field, value in rows:
        table.add_row(field, value)
    console().print(table)


def print_balance(ref: str, balance: Balance, title: str | None = None) -> None:
    table = Table(title=title or f"balance of {ref}")
    for column in ("posted", "available", "pending in", "pending out", "debits posted", "credits posted"):
        table.add_column(column, justify="right")
    c = balance.currency
    table.add_row(
        _major(balance.posted, c),
        _major(balance.available, c),
        _major(balance.pending_in, c),
        _major(balance.pending_out, c),
        _major(balance.debits_posted, c),
        _major(balance.credits_posted, c),
    )
    console().print(table)
    console().print(f"currency {c}, normal side {balance.normal_side}")


def print_day_closes(closes: Sequence[DayClose]) -> None:
    table = Table(title="day closes (日切)")
    for column in ("accounting date", "state", "switched", "closed"):
        table.add_column(column, no_wrap=True)
    table.add_column("entries", justify="right")
    table.add_column("accounts", justify="right")
    for close in closes:
        table.add_row(
            close.accounting_date.isoformat(),
            close.state,
            _time(close.switched_at),
            _time(close.closed_at),
            "" if close.entry_count is None else str(close.entry_count),
            "" if close.account_count is None else str(close.account_count),
        )
    console().print(table)


# --------------------------------------------------------------------------- accounts


@accounts_app.command("create")
def accounts_create(
    ctx: typer.Context,
    key: Annotated[str, typer.Option(help="Your idempotency key for this account; reusing it returns it.")],
    ledger_code: Annotated[str, typer.Option(help="Kind of account, e.g. user_wallet, merchant_pending.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "CNY",
    normal_side: Annotated[str, typer.Option(help="debit (assets) or credit (liabilities).")] = "credit",
    owner_ref: Annotated[str | None, typer.Option(help="The party that owns the account.")] = None,
    no_overdraft: Annotated[
        bool, typer.Option("--no-overdraft", help="Debits may never exceed credits (a wallet).")
    ] = False,
    hot: Annotated[bool, typer.Option("--hot", help="Hot account: postings appended, folded later.")] = False,
    metadata: Annotated[str | None, typer.Option(help="A JSON object stored with the account.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Open an account (idempotent on --key)."""
    request = AccountRequest(
        key=key,
        ledger_code=ledger_code,
        currency=currency,
        normal_side=normal_side,
        owner_ref=owner_ref,
        debits_must_not_exceed_credits=no_overdraft,
        hot=hot,
        metadata=parse_metadata(metadata),
    )
    account, created = run_in_transaction(
        get_state(ctx).engine, lambda conn: ledger.open_account(conn, request=request)
    )
    if as_json:
        print_json({**account_json(account), "created": created})
        return
    print_account(account, title="account opened" if created else "account exists (key used before)")


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context,
    owner_ref: Annotated[str | None, typer.Option(help="Only this owner's accounts.")] = None,
    ledger_code: Annotated[str | None, typer.Option(help="Only accounts of this kind.")] = None,
    limit: Annotated[int, typer.Option(help="Page size, 1 to 500.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List accounts in creation order, one page at a time."""
    page = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: ledger.list_accounts(
            conn, owner_ref=owner_ref, ledger_code=ledger_code, cursor=cursor, limit=limit
        ),
        readonly=True,
    )
    if as_json:
        print_json({"items": [account_json(a) for a in page.items], "next_cursor": page.next_cursor})
        return
    print_accounts(page.items, title=f"accounts ({len(page.items)})")
    if page.next_cursor:
        console().print(f"more: --cursor {page.next_cursor}")


@accounts_app.command("show")
def accounts_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Account id, acc_….")],
    as_json: JsonFlag = False,
) -> None:
    """Show an account and its balances."""
    account = run_in_transaction(get_state(ctx).engine, lambda conn: ledger.get_account(conn, ref=ref), readonly=True)
    if as_json:
        print_json(account_json(account))
        return
    print_account(account)


@accounts_app.command("close")
def accounts_close(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Account id, acc_….")],
    as_json: JsonFlag = False,
) -> None:
    """Close an account whose balance is zero and that has no pending holds."""
    account = run_in_transaction(get_state(ctx).engine, lambda conn: ledger.close_account(conn, ref=ref))
    if as_json:
        print_json(account_json(account))
        return
    print_account(account, title="account closed")


# --------------------------------------------------------------------------- balances


@app.command("balance")
def balance_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Account id, acc_….")],
    as_of_entry: Annotated[str | None, typer.Option(help="Balance right after this entry (ent_…), inclusive.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """An account's balance now, or as of an entry."""
    result = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: ledger.balance(conn, ref=ref, as_of_entry=as_of_entry),
        readonly=True,
    )
    if as_json:
        print_json({"account": ref, "as_of_entry": as_of_entry, **result.as_dict()})
        return
    title = f"balance of {ref}" + (f" as of {as_of_entry}" if as_of_entry else "")
    print_balance(ref, result, title=title)


@app.command("statement")
def statement_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Account id, acc_….")],
    limit: Annotated[int, typer.Option(help="Postings per page, 1 to 500.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """An account's postings, oldest first, with the posted balance after each (账户明细)."""

    def work(conn: Any) -> tuple[Account, Any]:
        return ledger.get_account(conn, ref=ref), ledger.account_statement(conn, ref=ref, cursor=cursor, limit=limit)

    account, page = run_in_transaction(get_state(ctx).engine, work, readonly=True)
    if as_json:
        print_json({"account": ref, "items": page.items, "next_cursor": page.next_cursor})
        return
    c = account.currency
    table = Table(title=f"statement of {ref} ({c})")
    for column in ("entry", "date", "kind", "business code", "side", "effect"):
        table.add_column(column, no_wrap=True)
    table.add_column("amount", justify="right")
    table.add_column("posted after", justify="right")
    for item in page.items:
        table.add_row(
            item["entry"],
            item["accounting_date"].isoformat(),
            item["kind"],
            item["business_code"],
            item["side"],
            item["effect"],
            _major(item["amount"], c),
            _major(item["posted_balance_after"], c),
        )
    console().print(table)
    if page.next_cursor:
        console().print(f"more: --cursor {page.next_cursor}")


@app.command("history")
def history_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Account id, acc_….")],
    date_from: Annotated[str | None, typer.Option("--from", help="First date (default: 30 days before --to).")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Last date (default: the last closed date).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Closing balances of an account for each closed accounting date (from day-end snapshots)."""
    engine = get_state(ctx).engine
    end = parse_date(date_to, "to") if date_to else None
    start = parse_date(date_from, "from") if date_from else None

    def work(conn: Any) -> list[tuple[dt.date, Balance]]:
        last = end or ledger.open_date(conn) - dt.timedelta(days=1)
        first = start or last - dt.timedelta(days=30)
        return ledger.balance_history(conn, ref=ref, date_from=first, date_to=last)

    rows = run_in_transaction(engine, work, readonly=True)
    if as_json:
        print_json(
            {
                "account": ref,
                "items": [{"accounting_date": day, **bal.as_dict()} for day, bal in rows],
            }
        )
        return
    table = Table(title=f"closing balances of {ref}")
    table.add_column("accounting date", no_wrap=True)
    for column in ("posted", "available", "pending in", "pending out"):
        table.add_column(column, justify="right")
    for day, bal in rows:
        c = bal.currency
        table.add_row(
            day.isoformat(),
            _major(bal.posted, c),
            _major(bal.available, c),
            _major(bal.pending_in, c),
            _major(bal.pending_out, c),
        )
    console().print(table)
    if not rows:
        console().print("no closed dates in this range")


# --------------------------------------------------------------------------- entries


@app.command("post")
def post_command(
    ctx: typer.Context,
    key: Annotated[str, typer.Option(help="Your idempotency key; posting it again returns the first entry.")],
    code: Annotated[str, typer.Option(help="Business code, e.g. payment, wallet_topup.")],
    debit: Annotated[list[str] | None, typer.Option(help="ACCOUNT:AMOUNT in major units (12.34); repeatable.")] = None,
    credit: Annotated[list[str] | None, typer.Option(help="ACCOUNT:AMOUNT in major units (12.34); repeatable.")] = None,
    currency: Annotated[str, typer.Option(help="Currency of every leg (ISO 4217).")] = "CNY",
    metadata: Annotated[str | None, typer.Option(help="A JSON object stored with the entry.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Post one balanced entry: --debit ACC:12.34 --credit ACC:12.34 (amounts in major units)."""
    legs = tuple(
        [parse_leg(text, "debit", currency) for text in debit or ()]
        + [parse_leg(text, "credit", currency) for text in credit or ()]
    )
    request = EntryRequest(idempotency_key=key, business_code=code, legs=legs, metadata=parse_metadata(metadata))
    result = ledger.post_entry_alone(get_state(ctx).engine, request=request)
    if as_json:
        print_json({**entry_json(result.entry), "replayed": result.replayed})
        return
    print_entry(result.entry, replayed=result.replayed)


@app.command("reverse")
def reverse_command(
    ctx: typer.Context,
    entry_ref: Annotated[str, typer.Argument(help="The entry to reverse, ent_….")],
    key: Annotated[str | None, typer.Option(help="Idempotency key (default: reverse:<entry>).")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object stored with the reversal.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Post the mirror of an entry (a refund or a correction); an entry is reversed once."""
    meta = parse_metadata(metadata)
    result = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: ledger.reverse_entry(conn, ref=entry_ref, idempotency_key=key, metadata=meta),
    )
    if as_json:
        print_json({**entry_json(result.entry), "replayed": result.replayed})
        return
    print_entry(result.entry, replayed=result.replayed)


# --------------------------------------------------------------------------- holds


@hold_app.command("create")
def hold_create(
    ctx: typer.Context,
    key: Annotated[str, typer.Option(help="Your idempotency key for this hold.")],
    debit: Annotated[str, typer.Option(help="Account the funds would leave (debited), acc_….")],
    credit: Annotated[str, typer.Option(help="Account the funds would reach (credited), acc_….")],
    amount: Annotated[str, typer.Option(help="Amount in major units, e.g. 12.34.")],
    code: Annotated[str, typer.Option(help="Business code, e.g. preauth.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "CNY",
    expires_at: Annotated[
        str | None,
        typer.Option(help="ISO 8601 time the hold is released by itself; no offset means Asia/Shanghai."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Reserve funds (冻结) to move from --debit to --credit later."""
    state = get_state(ctx)
    amount_minor = money.parse_amount(amount, currency)
    expiry = parse_time(expires_at, "expires_at", state.settings.timezone) if expires_at else None
    result = run_in_transaction(
        state.engine,
        lambda conn: ledger.create_hold(
            conn,
            idempotency_key=key,
            debit_account=debit,
            credit_account=credit,
            amount=amount_minor,
            currency=currency,
            business_code=code,
            expires_at=expiry,
        ),
    )
    if as_json:
        print_json({**hold_json(result.hold), "replayed": result.replayed})
        return
    print_hold(result.hold)


@hold_app.command("post")
def hold_post(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Hold id, hld_….")],
    amount: Annotated[
        str | None, typer.Option(help="Amount to move in major units (default: all); the rest is released.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key (default: hold-post:<hold>).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Post a pending hold: move the funds (all or part) and release the rest."""

    def work(conn: Any) -> Any:
        amount_minor = None
        if amount is not None:
            amount_minor = money.parse_amount(amount, ledger.get_hold(conn, ref=ref).currency)
        return ledger.post_hold(conn, ref=ref, idempotency_key=key or f"hold-post:{ref}", amount=amount_minor)

    result = run_in_transaction(get_state(ctx).engine, work)
    if as_json:
        print_json({**hold_json(result.hold), "replayed": result.replayed})
        return
    print_hold(result.hold)


@hold_app.command("void")
def hold_void(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Hold id, hld_….")],
    key: Annotated[str | None, typer.Option(help="Idempotency key (default: hold-void:<hold>).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Release a pending hold entirely (解冻); nothing moves."""
    result = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: ledger.void_hold(conn, ref=ref, idempotency_key=key or f"hold-void:{ref}"),
    )
    if as_json:
        print_json({**hold_json(result.hold), "replayed": result.replayed})
        return
    print_hold(result.hold)


@hold_app.command("show")
def hold_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Hold id, hld_….")],
    as_json: JsonFlag = False,
) -> None:
    """Show a hold and its state."""
    hold = run_in_transaction(get_state(ctx).engine, lambda conn: ledger.get_hold(conn, ref=ref), readonly=True)
    if as_json:
        print_json(hold_json(hold))
        return
    print_hold(hold)


# --------------------------------------------------------------------------- chain


@app.command("verify")
def verify_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Recompute the hash chain from the genesis seal; exit 1 naming the first entry that no longer matches."""
    report = run_in_transaction(get_state(ctx).engine, lambda conn: ledger.verify_chain(conn), readonly=True)
    if as_json:
        print_json(report)
    if report.ok:
        if not as_json:
            typer.echo(f"chain ok: {report.checked} entries checked, {report.unsealed} not yet sealed")
        return
    where = f"entry {report.first_bad_entry} " if report.first_bad_entry else ""
    detail = report.details.get("message")
    typer.echo(
        f"chain broken at {where}(position {report.first_bad_seq}): {report.reason}"
        + (f" — {detail}" if detail else ""),
        err=True,
    )
    raise typer.Exit(1)


@app.command("seal")
def seal_command(
    ctx: typer.Context,
    batch: Annotated[int, typer.Option(help="Entries sealed per transaction.")] = SEAL_BATCH_SIZE,
    as_json: JsonFlag = False,
) -> None:
    """Seal every committed entry onto the hash chain now (the worker does this continuously)."""
    engine = get_state(ctx).engine
    waiting = run_in_transaction(engine, lambda conn: ledger.chain_status(conn), readonly=True).unsealed_count
    sealed = 0
    progress_console = err_console()
    with Progress(
        TextColumn("sealing"),
        BarColumn(),
        MofNCompleteColumn(),
        console=progress_console,
        transient=True,
        disable=as_json or not progress_console.is_terminal,
    ) as progress:
        task = progress.add_task("seal", total=waiting)
        while True:
            count = run_in_transaction(engine, lambda conn: ledger.seal_entries(conn, limit=batch))
            if count == 0:
                break
            sealed += count
            progress.update(task, completed=sealed, total=max(waiting, sealed))
    status = run_in_transaction(engine, lambda conn: ledger.chain_status(conn), readonly=True)
    if as_json:
        print_json({"sealed": sealed, "sealed_seq": status.sealed_seq, "unsealed": status.unsealed_count})
        return
    typer.echo(f"sealed {sealed} entries; the chain is at position {status.sealed_seq}")


@app.command("chain-status")
def chain_status_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """How far sealing has got: last position, entries waiting, and the lag."""
    status = run_in_transaction(get_state(ctx).engine, lambda conn: ledger.chain_status(conn), readonly=True)
    if as_json:
        print_json(status)
        return
    table = Table(title="hash chain", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("sealed up to position", str(status.sealed_seq))
    table.add_row("entries not yet sealed", str(status.unsealed_count))
    table.add_row("oldest unsealed", status.oldest_unsealed or "")
    table.add_row("lag (seconds)", f"{status.lag_seconds:.3f}")
    console().print(table)


# --------------------------------------------------------------------------- maintenance


@app.command("fold")
def fold_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Fold hot accounts' appended deltas into their balance rows."""
    folded = run_in_transaction(get_state(ctx).engine, lambda conn: ledger.fold_hot_accounts(conn))
    if as_json:
        print_json({"folded": folded})
        return
    typer.echo(f"folded {folded} deltas into hot accounts")


@app.command("expire-holds")
def expire_holds_command(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Release every pending hold whose expiry has passed."""
    engine = get_state(ctx).engine
    expired = 0
    while True:
        count = run_in_transaction(engine, lambda conn: ledger.expire_holds(conn))
        expired += count
        if count == 0:
            break
    if as_json:
        print_json({"expired": expired})
        return
    typer.echo(f"expired {expired} holds")


@day_end_app.callback()
def day_end_command(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option(help="Accounting date to close (default: the open date).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Close the open accounting date (or --date, which must be it) and snapshot every balance."""
    if ctx.invoked_subcommand is not None:
        return
    state = get_state(ctx)
    engine = state.engine
    accounting_date = (
        parse_date(date, "date")
        if date
        else run_in_transaction(engine, lambda conn: ledger.open_date(conn), readonly=True)
    )
    close = ledger.close_day(
        engine,
        accounting_date=accounting_date,
        wait_seconds_max=state.settings.transaction_age_max_seconds,
    )
    if as_json:
        print_json(day_close_json(close))
        return
    print_day_closes([close])


@day_end_app.command("list")
def day_end_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many recent closes.")] = 31,
    as_json: JsonFlag = False,
) -> None:
    """The most recent day closes, newest first, and the open date."""

    def work(conn: Any) -> tuple[list[DayClose], dt.date]:
        return ledger.list_day_closes(conn, limit=limit), ledger.open_date(conn)

    closes, open_date = run_in_transaction(get_state(ctx).engine, work, readonly=True)
    if as_json:
        print_json({"open_date": open_date, "closes": [day_close_json(c) for c in closes]})
        return
    print_day_closes(closes)
    console().print(f"open accounting date: {open_date.isoformat()}")
