"""``zhangfang merchants …``: create, show, list merchants and change their status, for operators.

Translation only: read the arguments, call ``parties.service`` in a unit of
work of its own, print a Rich table for people or ``--json`` for machines (the
same JSON as the admin API). The command line is an operator's tool, so it
shows the full settlement account number; an HMAC merchant's secret is printed
by ``create`` when it generates it, and never again. Refusals are the
service's ``ZhangfangError``s; the root command prints them as one line on
stderr and exits 2 (see ``zhangfang.cli``).

Errors of the command line itself:

=====================  ==================================================
code                   rule broken
=====================  ==================================================
public_key_file_unreadable  ``--public-key-file`` cannot be read as text
=====================  ==================================================
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from zhangfang.cli import console, get_state, print_json
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import InvalidInput
from zhangfang.parties import service as parties
from zhangfang.parties.api import MerchantCreatedOut, MerchantOut
from zhangfang.parties.models import Merchant, MerchantRequest, SettlementAccount


class PublicKeyFileUnreadable(InvalidInput):
    code = "public_key_file_unreadable"


app = typer.Typer(
    name="merchants",
    help="商户 merchants: create, show, list, change status (operators).",
    no_args_is_help=True,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (as the admin API answers) instead of a table.")]


def _time(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def merchant_json(merchant: Merchant) -> dict[str, Any]:
    return MerchantOut.of(merchant).model_dump(mode="json")


def print_merchant(merchant: Merchant, title: str | None = None) -> None:
    table = Table(title=title or f"merchant {merchant.ref}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    account = merchant.settlement_account
    rows = [
        ("ref", merchant.ref),
        ("key", merchant.key),
        ("name", merchant.name),
        ("mcc", merchant.mcc),
        ("status", merchant.status),
        ("fee rate", str(merchant.fee_rate)),
        ("bank", account.bank_name),
        ("account number", account.account_number),
        ("account name", account.account_name),
        ("app id", merchant.app_id),
        ("sign type", merchant.sign_type),
        ("created", _time(merchant.created_at)),
        ("status changed", _time(merchant.status_changed_at)),
        ("credentials rotated", _time(merchant.credentials_rotated_at)),
    ]
    for field, value in rows:
        table.add_row(field, value)
    console().print(table)


def print_merchants(items: Sequence[Merchant]) -> None:
    table = Table(title="merchants")
    for column in ("ref", "name", "mcc", "status", "fee rate", "app id", "sign type", "created"):
        table.add_column(column, no_wrap=True)
    for m in items:
        table.add_row(m.ref, m.name, m.mcc, m.status, str(m.fee_rate), m.app_id, m.sign_type, _time(m.created_at))
    console().print(table)


def _read_public_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublicKeyFileUnreadable(f"cannot read {path}: {exc}", field="public_key_file") from None


@app.command("create")
def merchants_create(
    ctx: typer.Context,
    key: Annotated[str, typer.Option(help="Your idempotency key for this merchant; reusing it returns it.")],
    name: Annotated[str, typer.Option(help="Merchant name.")],
    mcc: Annotated[str, typer.Option(help="Merchant category code, 4 digits (行业类别).")],
    fee_rate: Annotated[str, typer.Option(help="Fee rate as a decimal, 0 to 0.1 (0.006 is 0.6 %).")],
    bank_name: Annotated[str, typer.Option(help="Settlement bank (开户行).")],
    account_number: Annotated[str, typer.Option(help="Settlement account number, 8 to 32 digits.")],
    account_name: Annotated[str, typer.Option(help="Settlement account holder's name (户名).")],
    sign_type: Annotated[str, typer.Option(help="RSA2 or HMAC-SHA256.")] = "RSA2",
    public_key_file: Annotated[
        Path | None, typer.Option(help="RSA2: the merchant's RSA public key, a PEM file (at least 2048 bits).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a merchant (idempotent on --key). An HMAC-SHA256 merchant's secret is printed this once."""
    request = MerchantRequest(
        key=key,
        name=name,
        mcc=mcc,
        fee_rate=fee_rate,
        settlement_account=SettlementAccount(
            bank_name=bank_name, account_number=account_number, account_name=account_name
        ),
        sign_type=sign_type,
        public_key_pem=_read_public_key(public_key_file),
    )
    result = run_in_transaction(get_state(ctx).engine, lambda conn: parties.create_merchant(conn, request=request))
    if as_json:
        print_json(MerchantCreatedOut.of_created(result).model_dump(mode="json"))
        return
    title = f"merchant {result.merchant.ref}"
    if not result.created:
        title += " — replayed: this key created it before, nothing new was written"
    print_merchant(result.merchant, title)
    if result.hmac_secret is not None:
        console().print(f"HMAC secret (shown once, store it now): {result.hmac_secret}")
    elif not result.created and result.merchant.sign_type == "HMAC-SHA256":
        console().print("The HMAC secret is not shown again; rotate it if it was lost.")


@app.command("show")
def merchants_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Merchant id, mch_….")],
    as_json: JsonFlag = False,
) -> None:
    """Show a merchant, with its full settlement account."""
    merchant = run_in_transaction(
        get_state(ctx).engine, lambda conn: parties.get_merchant(conn, ref=ref), readonly=True
    )
    if as_json:
        print_json(merchant_json(merchant))
        return
    print_merchant(merchant)


@app.command("list")
def merchants_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only merchants in this status.")] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    limit: Annotated[int, typer.Option(help="1 to 500.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List merchants in creation order."""
    page = run_in_transaction(
        get_state(ctx).engine,
        lambda conn: parties.list_merchants(conn, status=status, cursor=cursor, limit=limit),
        readonly=True,
    )
    if as_json:
        print_json({"items": [merchant_json(m) for m in page.items], "next_cursor": page.next_cursor})
        return
    print_merchants(page.items)
    if page.next_cursor:
        console().print(f"more: --cursor {page.next_cursor}")


@app.command("status")
def merchants_status(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Merchant id, mch_….")],
    status: Annotated[str, typer.Argument(help="active, suspended or closed (closed is final).")],
    as_json: JsonFlag = False,
) -> None:
    """Move a merchant along active ⇄ suspended → closed."""
    merchant = run_in_transaction(
        get_state(ctx).engine, lambda conn: parties.change_merchant_status(conn, ref=ref, status=status)
    )
    if as_json:
        print_json(merchant_json(merchant))
        return
    print_merchant(merchant)
