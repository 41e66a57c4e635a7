"""Shapes the ledger takes in and gives out. Plain frozen dataclasses: no framework here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Side = Literal["debit", "credit"]
Effect = Literal["posted", "pending", "release"]
EntryKind = Literal["entry", "reversal", "hold", "hold_post", "hold_void", "hold_expire"]
HoldState = Literal["pending", "posted", "voided", "expired"]


@dataclass(frozen=True)
class Leg:
    """One side of an entry as the caller states it: which account, which side, how much."""

    account: str
    side: str
    amount: int
    currency: str


@dataclass(frozen=True)
class EntryRequest:
    """A balanced set of legs to post at once, under the caller's idempotency key."""

    idempotency_key: str
    business_code: str
    legs: tuple[Leg, ...]
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class AccountRequest:
    """What a caller asks for when opening an account; ``key`` makes the call idempotent."""

    key: str
    ledger_code: str
    currency: str
    normal_side: str = "credit"
    owner_ref: str | None = None
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False
    hot: bool = False
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Balance:
    """The four balances of an account and what follows from them.

    ``posted`` and ``available`` are signed on the account's normal side: a
    credit-normal account (a customer's wallet) with more credits than debits
    has a positive balance. ``available`` subtracts what holds reserve against
    the account's own normal side.
    """

    currency: str
    normal_side: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def posted(self) -> int:
        net = self.credits_posted - self.debits_posted
        return net if self.normal_side == "credit" else -net

    @property
    def pending_out(self) -> int:
        """Funds reserved by holds that would leave the account (against its normal side)."""
        return self.debits_pending if self.normal_side == "credit" else self.credits_pending

    @property
    def pending_in(self) -> int:
        return self.credits_pending if self.normal_side == "credit" else self.debits_pending

    @property
    def available(self) -> int:
        return self.posted - self.pending_out

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "debits_posted": self.debits_posted,
            "credits_posted": self.credits_posted,
            "debits_pending": self.debits_pending,
            "credits_pending": self.credits_pending,
            "posted": self.posted,
            "pending_in": self.pending_in,
            "pending_out": self.pending_out,
            "available": self.available,
        }


@dataclass(frozen=True)
class Account:
    id: int
    ref: str
    key: str
    ledger_code: str
    currency: str
    owner_ref: str | None
    normal_side: str
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    hot: bool
    closed: bool
    balance: Balance
    metadata: Mapping[str, Any] | None
    created_at: dt.datetime
    closed_at: dt.datetime | None


class Posting(NamedTuple):
    """One line of an entry as stored: a side, an effect (posted, pending, release) and an amount."""

    seq: int
    account: str
    side: str
    effect: str
    amount: int
    currency: str


@dataclass(frozen=True)
class Entry:
    id: int
    ref: str
    idempotency_key: str
    kind: str
    business_code: str
    accounting_date: dt.date
    metadata: Mapping[str, Any] | None
    postings: tuple[Posting, ...]
    created_at: dt.datetime
    reverses: str | None = None
    hold: str | None = None
    seal_seq: int | None = None


@dataclass(frozen=True)
class EntryResult:
    """The entry a request produced; ``replayed`` when the key had been used before."""

    entry: Entry
    replayed: bool = False


@dataclass(frozen=True)
class Hold:
    id: int
    ref: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    state: str
    expires_at: dt.datetime | None
    posted_amount: int | None
    entry: str
    resolving_entry: str | None
    created_at: dt.datetime
    resolved_at: dt.datetime | None


@dataclass(frozen=True)
class HoldResult:
    hold: Hold
    entry: Entry
    replayed: bool = False


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None = None


@dataclass(frozen=True)
class DayClose:
    accounting_date: dt.date
    state: str
    switched_at: dt.datetime
    closed_at: dt.datetime | None
    entry_count: int | None
    account_count: int | None


@dataclass(frozen=True)
class ChainStatus:
    sealed_seq: int
    unsealed_count: int
    lag_seconds: float  # not money: age of the oldest unsealed entry
    oldest_unsealed: str | None


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    unsealed: int
    first_bad_entry: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
