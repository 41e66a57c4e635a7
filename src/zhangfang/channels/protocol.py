"""The contract every channel adapter keeps, whatever it talks to.

A channel is a bank connected directly (直连, ``bank_direct``) or a payment
company connected indirectly (间连, ``alipay``, ``wechatpay``). Payments,
refunds, reconciliation and routing only ever see this protocol; what a
channel's wire looks like stays inside its adapter (and its simulator in
``zhangfang.sandbox``).

Guarantees an adapter gives
- Amounts cross this boundary as integer minor units plus currency; an adapter
  converts to the channel's own representation (yuan strings for Alipay, fen
  for WeChat Pay) exactly, and back, never through float.
- ``create_payment`` and ``refund`` are idempotent on ``out_trade_no`` /
  ``out_refund_no`` at the channel, as the channels themselves are: calling
  again with the same number never charges or refunds twice.
- Nothing an adapter returns from the payer's browser decides a result: only a
  verified notify (``parse_notify``) or our own query (``query_payment``).
- ``parse_notify`` verifies the channel's signature (and decrypts, where the
  channel encrypts) before it returns anything; anything it cannot verify is
  ``NotifyInvalid``.
- Failures are classified: ``ChannelUnavailable`` (timeout, connection refused,
  5xx — the outcome is unknown; query before retrying a money-moving call) and
  ``ChannelRejected`` (the channel answered and said no; ``code`` says why).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ConnectionKind = Literal["direct", "indirect"]
PaymentState = Literal["pending", "succeeded", "closed", "failed"]
RefundState = Literal["processing", "succeeded", "failed"]
NotifyKind = Literal["payment", "refund"]


class ChannelError(Exception):
    """Base of what an adapter raises; carries the channel's code and message when it gave one."""

    def __init__(self, message: str, *, code: str | None = None, raw: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.raw = raw


class ChannelUnavailable(ChannelError):
    """No answer, or no usable one (timeout, refused connection, 5xx, unsigned body): outcome unknown."""


class ChannelRejected(ChannelError):
    """The channel answered and refused (unknown trade, refund above what was paid, bad argument)."""


class NotifyInvalid(ChannelError):
    """A notify whose signature, decryption or content does not verify: refused and logged, never acted on."""


@dataclass(frozen=True)
class CreatePayment:
    out_trade_no: str
    amount_minor: int
    currency: str
    subject: str
    method: str  # one of the adapter's ``methods``: "page", "wap", "qr", "bank_card", …
    notify_url: str
    return_url: str | None = None
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class PaymentAction:
    """What the cashier does next with the payer: open ``url`` (redirect), show ``qr_code``, or post ``form``."""

    kind: Literal["redirect", "qr_code", "form"]
    url: str | None = None
    qr_code: str | None = None
    form: Mapping[str, str] = field(default_factory=dict)
    channel_trade_no: str | None = None


@dataclass(frozen=True)
class PaymentStatus:
    out_trade_no: str
    state: PaymentState
    amount_minor: int | None = None
    currency: str | None = None
    channel_trade_no: str | None = None
    paid_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundRequest:
    out_trade_no: str
    out_refund_no: str
    refund_minor: int
    total_minor: int
    currency: str
    reason: str | None = None
    notify_url: str | None = None


@dataclass(frozen=True)
class RefundStatus:
    out_refund_no: str
    state: RefundState
    refund_minor: int | None = None
    channel_refund_no: str | None = None
    refunded_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notify:
    """A verified asynchronous notify, in our terms."""

    kind: NotifyKind
    notify_id: str
    out_trade_no: str
    state: str  # PaymentState for payments, RefundState for refunds
    amount_minor: int
    currency: str
    channel_trade_no: str | None = None
    out_refund_no: str | None = None
    occurred_at: dt.datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NotifyAck:
    """What to answer the channel's notify with, so it stops (or keeps) retrying."""

    status_code: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class ChannelAdapter(Protocol):
    """One channel, as payments, refunds, routing and reconciliation see it."""

    code: str  # "bank_direct:icbc", "alipay", "wechatpay"
    connection: ConnectionKind
    methods: frozenset[str]
    currencies: frozenset[str]

    def create_payment(self, request: CreatePayment) -> PaymentAction:
        """Open a payment at the channel and say how the payer pays it."""
        ...

    def query_payment(self, out_trade_no: str) -> PaymentStatus:
        """Ask the channel what became of a payment (our fallback when no notify arrives)."""
        ...

    def close_payment(self, out_trade_no: str) -> None:
        """Close an unpaid payment at the channel so it can no longer be paid."""
        ...

    def refund(self, request: RefundRequest) -> RefundStatus:
        """Refund all or part of a paid payment (idempotent on ``out_refund_no``)."""
        ...

    def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        """Ask the channel what became of a refund."""
        ...

    def parse_notify(self, headers: Mapping[str, str], body: bytes) -> Notify:
        """Verify and translate an asynchronous notify; raise ``NotifyInvalid`` if it does not verify."""
        ...

    def ack_notify(self, accepted: bool) -> NotifyAck:
        """The answer the channel expects (Alipay: the text ``success``; WeChat Pay: HTTP 200/204)."""
        ...

    def download_bill(self, bill_date: dt.date) -> bytes:
        """The channel's trade bill for a day, as the channel serves it (for reconciliation)."""
        ...
