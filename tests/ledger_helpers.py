"""Small helpers so ledger tests read as what they check, not how they call it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from tests.snapshots import snapshot  # noqa: F401  (ledger tests import it from here)

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
