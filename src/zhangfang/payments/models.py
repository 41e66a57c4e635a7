"""Shapes the payments domain takes in and gives out, and its state machines. No framework here.

Four objects, each with an explicit state machine (DESIGN.md, principle 3):

- ``PaymentOrder`` (支付订单, ``pay_…``): what the merchant asked to collect.
  ``pending`` → ``succeeded`` (a channel confirmed the money) → ``refunded``
  (refunded in full); ``pending`` → ``closed`` (by the merchant, or expired).
- ``PaymentAttempt`` (``pat_…``): one try of an order at one channel, opened
  when the payer picks a method at the cashier. Its ref is the channel's
  ``out_trade_no``, so two attempts are two trades at the channels and can
  never be confused. ``opening`` (written, the channel being called) → ``open``
  (the payer is at the channel) | ``failed`` (the channel refused or did not
  answer); ``open`` → ``closed`` | ``failed``; and from any state but
  ``succeeded`` → ``succeeded``, because a verified "paid" from the channel is
  a fact we must account for, whatever we thought before.
- ``Refund`` (``rfd_…``): ``processing`` → ``succeeded`` | ``failed``. A
  merchant's refund, or an automatic one returning a duplicate payment
  (``kind="duplicate"``: a payer who paid twice, or paid a closed order).
- ``Payout`` (代付, ``po_…``): ``processing`` → ``succeeded`` | ``failed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

OrderState = Literal["pending", "succeeded", "refunded", "closed"]
AttemptState = Literal["opening", "open", "succeeded", "failed", "closed"]
RefundState = Literal["processing", "succeeded", "failed"]
PayoutState = Literal["processing", "succeeded", "failed"]
RefundKind = Literal["merchant", "duplicate"]
CloseReason = Literal["merchant", "operator", "expired"]
CLOSE_REASONS: tuple[str, ...] = ("merchant", "operator", "expired")

ORDER_STATES: tuple[str, ...] = ("pending", "succeeded", "refunded", "closed")
ATTEMPT_STATES: tuple[str, ...] = ("opening", "open", "succeeded", "failed", "closed")
REFUND_STATES: tuple[str, ...] = ("processing", "succeeded", "failed")
PAYOUT_STATES: tuple[str, ...] = ("processing", "succeeded", "failed")

# From each state, the states it may move to. Anything else is a programming error or a refusal.
ORDER_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "closed"}),
    "succeeded": frozenset({"refunded"}),
    "refunded": frozenset(),
    "closed": frozenset(),
}
ATTEMPT_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "opening": frozenset({"open", "failed", "succeeded", "closed"}),
    "open": frozenset({"succeeded", "failed", "closed"}),
    "failed": frozenset({"succeeded", "closed"}),
    "closed": frozenset({"succeeded"}),
    "succeeded": frozenset(),
}
REFUND_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "processing": frozenset({"succeeded", "failed"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
}
PAYOUT_TRANSITIONS = REFUND_TRANSITIONS

# Attempts still able to take the payer's money at their channel.
LIVE_ATTEMPT_STATES: frozenset[str] = frozenset({"opening", "open", "failed"})

# The payer-facing methods the cashier knows how to present, with their labels.
METHOD_LABELS: Mapping[str, str] = {
    "alipay": "支付宝 Alipay",
    "wechatpay": "微信支付 WeChat Pay",
    "bank_card": "银行卡 Bank card",
}


def can_move(transitions: Mapping[str, frozenset[str]], current: str, target: str) -> bool:
    """True when the state machine has an arrow from ``current`` to ``target``."""
    return target in transitions.get(current, frozenset())


@dataclass(frozen=True)
class OrderRequest:
    """What a merchant asks for when creating an order; ``out_trade_no`` makes it idempotent."""

    out_trade_no: str
    amount: int
    currency: str
    subject: str
    description: str | None = None
    user: str | None = None  # usr_… of one of the merchant's payers
    notify_url: str | None = None
    return_url: str | None = None
    expires_at: dt.datetime | None = None
    method: str | None = None  # restrict the cashier to one payer method
    preferred_channel: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PaymentOrder:
    id: int
    ref: str
    merchant_id: int
    merchant_ref: str
    out_trade_no: str
    state: str
    amount: int
    currency: str
    subject: str
    description: str | None
    user_ref: str | None
    notify_url: str | None
    return_url: str | None
    method: str | None
    preferred_channel: str | None
    metadata: Mapping[str, Any] | None
    fee_rate: Decimal
    fee: int | None
    refunded: int
    refunding: int
    channel: str | None
    channel_trade_no: str | None
    attempt_ref: str | None
    entry_ref: str | None
    close_reason: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    paid_at: dt.datetime | None
    closed_at: dt.datetime | None

    @property
    def refundable(self) -> int:
        """What a new refund may still take: paid, minus refunded, minus refunds in flight."""
        if self.state not in ("succeeded", "refunded"):
            return 0
        return self.amount - self.refunded - self.refunding


@dataclass(frozen=True)
class OrderResult:
    order: PaymentOrder
    created: bool = True


@dataclass(frozen=True)
class PaymentAttempt:
    id: int
    ref: str
    order_id: int
    order_ref: str
    channel: str
    method: str
    channel_method: str
    state: str
    amount: int
    currency: str
    action_kind: str | None
    action_url: str | None
    action_qr_code: str | None
    channel_trade_no: str | None
    duplicate: bool
    error_code: str | None
    error_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    paid_at: dt.datetime | None


@dataclass(frozen=True)
class RefundRequest:
    """A merchant's refund of (part of) a paid order; ``out_refund_no`` makes it idempotent."""

    out_refund_no: str
    amount: int
    reason: str | None = None
    notify_url: str | None = None


@dataclass(frozen=True)
class Refund:
    id: int
    ref: str
    kind: str
    order_id: int
    order_ref: str
    attempt_ref: str
    merchant_id: int
    out_refund_no: str | None
    state: str
    amount: int
    currency: str
    fee_returned: int
    reason: str | None
    notify_url: str | None
    channel: str
    channel_refund_no: str | None
    hold_ref: str | None
    entry_ref: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    created: bool = True


@dataclass(frozen=True)
class Payee:
    """The bank account a payout goes to."""

    account_number: str
    account_name: str
    bank_code: str | None = None  # None: an account at the paying bank


@dataclass(frozen=True)
class PayoutRequest:
    """A merchant's payout (代付) from its balance to a bank account; ``out_payout_no`` makes it idempotent."""

    out_payout_no: str
    amount: int
    currency: str
    payee: Payee
    remark: str | None = None
    notify_url: str | None = None
    channel: str | None = None


@dataclass(frozen=True)
class Payout:
    id: int
    ref: str
    merchant_id: int
    merchant_ref: str
    out_payout_no: str
    state: str
    amount: int
    currency: str
    payee_account_number: str
    payee_account_name: str
    payee_bank_code: str | None
    remark: str | None
    notify_url: str | None
    channel: str
    channel_payout_no: str | None
    hold_ref: str
    entry_ref: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class PayoutResult:
    payout: Payout
    created: bool = True


@dataclass(frozen=True)
class ChannelHealth:
    """The circuit breaker of one channel: closed (in rotation), open (cooling down) or half-open (one trial)."""

    channel: str
    consecutive_failures: int
    open_until: dt.datetime | None
    last_failure_at: dt.datetime | None
    last_error: str | None

    def state(self, now: dt.datetime, threshold: int) -> Literal["closed", "open", "half_open"]:
        if self.consecutive_failures < threshold:
            return "closed"
        if self.open_until is not None and now < self.open_until:
            return "open"
        return "half_open"


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None = None
