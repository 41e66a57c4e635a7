"""Small helpers so ledger tests read as what they check, not how they call it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zhangfang.db.tables import metadata
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import Account, AccountRequest, EntryRequest, EntryResult, Leg


def open_account(engine: Engine, key: str, *, currency: str = "CNY", **flags: Any) -> Account:
    request = AccountRequest(key=key, ledger_code=flags.pop("ledger_code", "test"), currency=currency, **flags)
    account, _ = run_in_transaction(engine, lambda conn: ledger.open_account(conn, request=request))
    return account


def wallet(engine: Engine, key: str, *, currency: str = "CNY") -> Account:
    """A customer wallet: credit-normal, may never go below zero."""
    return open_account(engine, key, currency=currency, debits_must_not_exceed_credits=True)


def bank(engine: Engine, key: str = "bank", *, currency: str = "CNY") -> Account:
    """A platform asset account: debit-normal, unconstrained."""
    return open_account(engine, key, currency=currency, normal_side="debit")


def transfer_request(key: str, debit: str, credit: str, amount: int, currency: str = "CNY") -> EntryRequest:
    return EntryRequest(
        idempotency_key=key,
        business_code="transfer",
        legs=(Leg(debit, "debit", amount, currency), Leg(credit, "credit", amount, currency)),
    )


def transfer(engine: Engine, key: str, debit: str, credit: str, amount: int, currency: str = "CNY") -> EntryResult:
    request = transfer_request(key, debit, credit, amount, currency)
    return run_in_transaction(engine, lambda conn: ledger.post_entry(conn, request=request))


def account(engine: Engine, ref: str) -> Account:
    return run_in_transaction(engine, lambda conn: ledger.get_account(conn, ref=ref), readonly=True)


def available(engine: Engine, ref: str) -> int:
    return account(engine, ref).balance.available


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: to prove a refused request changed nothing."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*order))]
    return rows
