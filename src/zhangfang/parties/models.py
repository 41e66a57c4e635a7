"""Shapes the parties take in and give out. Plain frozen dataclasses: no framework here.

Secrets and account numbers are left out of ``repr`` so that a logged object
does not leak them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

MERCHANT_STATUSES = ("active", "suspended", "closed")

# The merchant state machine: from each status, the statuses it may move to. Closed is final.
# Asking for the status a merchant already has is not a transition: it returns the merchant unchanged.
MERCHANT_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"suspended", "closed"}),
    "suspended": frozenset({"active", "closed"}),
    "closed": frozenset(),
}

ACCOUNT_NUMBER_VISIBLE_DIGITS = 4


def mask_account_number(account_number: str) -> str:
    """``6222020200112233`` → ``****2233``: the last four digits only, and not the length."""
    return "****" + account_number[-ACCOUNT_NUMBER_VISIBLE_DIGITS:]


@dataclass(frozen=True)
class SettlementAccount:
    """The bank account a merchant is settled to (结算账户)."""

    bank_name: str
    account_number: str = field(repr=False)
    account_name: str

    @property
    def account_number_masked(self) -> str:
        return mask_account_number(self.account_number)


@dataclass(frozen=True)
class MerchantRequest:
    """What an operator asks for when creating a merchant; ``key`` makes the call idempotent.

    ``fee_rate`` is a ``Decimal`` or its text (``"0.006"`` is 0.6 %), never a float.
    ``public_key_pem`` is the merchant's RSA public key for ``RSA2``; ``HMAC-SHA256``
    merchants get a generated secret instead.
    """

    key: str
    name: str
    mcc: str
    fee_rate: Decimal | str
    settlement_account: SettlementAccount
    sign_type: str
    public_key_pem: str | None = None


@dataclass(frozen=True)
class Merchant:
    id: int
    ref: str
    key: str
    name: str
    mcc: str
    status: str
    fee_rate: Decimal
    settlement_account: SettlementAccount
    app_id: str
    sign_type: str
    public_key_pem: str | None
    hmac_secret: str | None = field(repr=False)
    created_at: dt.datetime
    status_changed_at: dt.datetime | None
    credentials_rotated_at: dt.datetime | None

    @property
    def is_active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class MerchantResult:
    """A merchant just created or re-keyed. ``hmac_secret`` is the only time the secret is shown.

    ``created`` is False when the creation key replayed an earlier creation; the
    secret is then not shown again (rotate it if the first answer was lost).
    """

    merchant: Merchant
    created: bool = True
    hmac_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class User:
    """A payer, as a party of one merchant."""

    id: int
    ref: str
    merchant_id: int
    external_ref: str | None
    phone_hash: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class PlatformKey:
    """The platform's RSA key pair that signs responses to RSA2 merchants."""

    name: str
    private_key_pem: str = field(repr=False)
    public_key_pem: str
    fingerprint: str
    created_at: dt.datetime | None


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first response to a merchant's POST under an ``Idempotency-Key``."""

    app_id: str
    key: str
    request_hash: str
    status_code: int
    response_body: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None = None
