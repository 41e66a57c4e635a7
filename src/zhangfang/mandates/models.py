"""Shapes the mandates domain takes in and gives out, and its two state machines. No framework here.

- ``Mandate`` (协议代扣授权, ``mdt_…``): one payer (a user of one merchant, with a
  bank account), one merchant (the only party that may debit under it), the
  platform. ``pending_authorization`` (requested; a one-time code went to the
  payer's phone) → ``active`` (the payer gave the code and the bank signed:
  it has an agreement number) | ``failed`` (the bank refused to sign) |
  ``expired`` (not authorized in time) | ``revoked``; ``active`` →
  ``suspended`` | ``revoked`` | ``expired``; ``suspended`` → ``active``
  (reinstated) | ``revoked`` | ``expired``. ``revoked``, ``expired`` and
  ``failed`` are final (GoCardless: pending_customer_approval → active →
  cancelled | expired | suspended_by_payer; lending.md 2.4).
- ``Debit`` (代扣, ``dbt_…``): one debit under a mandate. ``pending`` (due,
  not yet tried) → ``processing`` (the bank is being asked) → ``succeeded`` |
  ``failed`` | ``retrying`` (failed softly; tried again on the retry
  schedule) → ``processing`` …; ``pending`` and ``retrying`` → ``failed``
  (the mandate was revoked, suspended or expired meanwhile).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MandateState = Literal["pending_authorization", "active", "suspended", "revoked", "expired", "failed"]
DebitState = Literal["pending", "processing", "retrying", "succeeded", "failed"]
FailureClass = Literal["soft", "hard"]
RevokedBy = Literal["user", "merchant", "operator"]

MANDATE_STATES: tuple[str, ...] = ("pending_authorization", "active", "suspended", "revoked", "expired", "failed")
DEBIT_STATES: tuple[str, ...] = ("pending", "processing", "retrying", "succeeded", "failed")
REVOKED_BY: tuple[str, ...] = ("user", "merchant", "operator")

MANDATE_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending_authorization": frozenset({"active", "failed", "expired", "revoked"}),
    "active": frozenset({"suspended", "revoked", "expired"}),
    "suspended": frozenset({"active", "revoked", "expired"}),
    "revoked": frozenset(),
    "expired": frozenset(),
    "failed": frozenset(),
}
DEBIT_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"processing", "failed"}),
    "processing": frozenset({"succeeded", "failed", "retrying"}),
    "retrying": frozenset({"processing", "failed"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
}
FINAL_DEBIT_STATES: frozenset[str] = frozenset({"succeeded", "failed"})
# Debits that count against a mandate's limits: all but the failed.
COUNTED_DEBIT_STATES: tuple[str, ...] = ("pending", "processing", "retrying", "succeeded")

# Why a debit failed, and whether that is worth another try.
SOFT_REASONS: frozenset[str] = frozenset({"insufficient_funds", "channel_timeout"})
HARD_REASONS: frozenset[str] = frozenset(
    {
        "mandate_revoked",
        "mandate_suspended",
        "mandate_expired",
        "account_closed",
        "agreement_invalid",
        "industry_restricted",
        "bank_refused",
    }
)


def can_move(transitions: Mapping[str, frozenset[str]], current: str, target: str) -> bool:
    """True when the state machine has an arrow from ``current`` to ``target``."""
    return target in transitions.get(current, frozenset())


def mask(value: str, visible: int = 4) -> str:
    """``6222020200112233`` → ``****2233``: the last digits only, and not the length."""
    return "****" + value[-visible:]


@dataclass(frozen=True)
class Limits:
    """What a mandate lets its merchant take, in minor units; None: no limit beyond the others."""

    per_debit: int
    per_day: int
    per_month: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class MandateRequest:
    """What a merchant asks for when requesting a mandate; ``out_mandate_no`` makes it idempotent."""

    out_mandate_no: str
    user: str  # usr_… of one of the merchant's payers
    account_number: str = field(repr=False)
    account_name: str
    phone: str = field(repr=False)
    limits: Limits
    currency: str = "CNY"
    expires_at: dt.datetime | None = None
    description: str | None = None
    notify_url: str | None = None
    channel: str | None = None  # the bank; default: the first configured bank that signs agreements


@dataclass(frozen=True)
class Mandate:
    id: int
    ref: str
    merchant_id: int
    merchant_ref: str
    out_mandate_no: str
    user_id: int
    user_ref: str
    state: str
    channel: str
    account_number: str = field(repr=False)
    account_name: str = ""
    phone: str = field(default="", repr=False)
    agreement_no: str | None = None
    currency: str = "CNY"
    amount_per_debit_max: int = 0
    amount_per_day_max: int = 0
    amount_per_month_max: int | None = None
    amount_total_max: int | None = None
    description: str | None = None
    notify_url: str | None = None
    authorization_expires_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    authorized_at: dt.datetime | None = None
    activated_at: dt.datetime | None = None
    suspended_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    revoked_by: str | None = None
    end_reason: str | None = None
    failure_code: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def limits(self) -> Limits:
        return Limits(
            self.amount_per_debit_max, self.amount_per_day_max, self.amount_per_month_max, self.amount_total_max
        )


@dataclass(frozen=True)
class MandateResult:
    """A mandate just requested (``created``) and the one-time code to send, which only the caller sees.

    ``code`` is None when the request replayed an earlier one (ask for a new code instead).
    """

    mandate: Mandate
    created: bool = True
    code: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Debit:
    id: int
    ref: str
    mandate_id: int
    mandate_ref: str
    merchant_id: int
    key: str
    purpose: str
    purpose_ref: str | None
    state: str
    amount: int
    currency: str
    due_date: dt.date
    description: str | None
    notify_url: str | None
    batch_id: int | None
    tries: int
    next_try_at: dt.datetime | None
    order_ref: str | None
    attempt_ref: str | None
    attempt_unknown: bool
    failure_class: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_DEBIT_STATES


@dataclass(frozen=True)
class DebitResult:
    debit: Debit
    created: bool = True


@dataclass(frozen=True)
class DebitBatch:
    id: int
    ref: str
    merchant_id: int
    merchant_batch_no: str
    state: str
    row_count: int
    amount_total: int
    currency: str
    notify_url: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    counts: Mapping[str, int] = field(default_factory=dict)  # rows by result state


@dataclass(frozen=True)
class BatchResult:
    batch: DebitBatch
    created: bool = True


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None = None
