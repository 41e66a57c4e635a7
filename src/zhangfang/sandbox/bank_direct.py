"""A directly connected bank (直连) on a loopback port: gateway, cashier page, notifies, bills and payouts.

``create_bank_simulator(profile, …)`` builds a ``BankSimulator`` that speaks one
``BankProfile`` (``ICBC`` or ``CMB`` from ``zhangfang.channels.bank_direct``)
exactly as ``docs/channels/bank_direct.md`` specifies: it verifies every request
with the platform's public key, signs every response and notify with the bank's
key, and refuses badly signed requests with the bank's own signature error code.
Serve its ``app`` with ``zhangfang.sandbox.server.serve_in_thread``.

What it holds and does
- Trades, refunds and payouts in memory, one merchant per simulator.
- ``GET {base}/cashier/{bank_trade_no}``: a minimal payer page with a "pay"
  button; ``POST`` to it pays (``?outcome=fail`` fails the payment), redirects
  the browser to ``return_url`` with only the order reference the profile names
  (``out_trade_no``; CMB also ``MCHNBR``), and sends the notify from a
  background thread, retrying on the profile's schedule until acknowledged the
  way the bank expects (ICBC: a signed JSON with ``return_code`` 0, CMB: the
  body ``SUCCESS``). Every retry carries the same notify id and the same bytes.
- Refunds complete at once (a refund notify goes to the refund's
  ``notify_url`` if it had one). Payouts are ``processing`` until settled —
  by ``settle_payouts()`` or ``payout_settle_seconds`` after acceptance — and a
  payout to an account number ending in ``0000`` then fails with the bank's
  ``account_closed`` code; the result is notified to the payout's ``notify_url``.
- The daily trade bill in the profile's layout: successful payments by their
  paid date and successful refunds by their refund date (Asia/Shanghai).
  ICBC returns it inline (base64); CMB returns a URL under ``{base}/files/``
  plus the file's SHA-256.

Time: ``clock`` gives "now" for everything the bank records. Waits between
notify retries are the profile's schedule multiplied by ``notify_delay_seconds``
(1.0 is real time; 0.001 turns 15 s into 15 ms), and so is ``payout_settle_seconds``.

- Withholding agreements (协议代扣): ``sign`` answers an agreement number
  (idempotent on ``out_sign_no``; an account ending in ``0000``, or closed by
  ``close_account``, is refused ``account_closed``); ``unsign`` cancels it;
  ``withhold`` debits under an active agreement at once, idempotent on
  ``out_trade_no``, and the debit is a trade like a paid one: queried, listed in
  the day's bill as a ``bank_card`` payment, refundable.

Test controls (plain methods): ``fail_next``, ``timeout_next``,
``delay_notify``, ``duplicate_notify``, ``disagree_amount``, ``pay``,
``settle_payouts``, ``withhold_next``, ``close_account``, ``agreements``,
``notifies_sent``, ``bill_rows`` and ``bill_file``.
Simplified against a real bank (also listed in ``docs/channels/bank_direct.md``):
no request timestamp window or message-id replay check; refunds succeed at once
(never ``processing``); bills are available the same day and there is no payout
bill; one merchant and one platform key per simulator; bill URLs do not expire.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import hashlib
import html
import io
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from zhangfang.channels.bank_direct import (
    SHANGHAI,
    BankProfile,
    NotifyType,
    PayoutState,
    WireError,
    WireValue,
    load_private_key,
    load_public_key,
)
from zhangfang.channels.protocol import PaymentState, RefundState
from zhangfang.money import format_minor

__all__ = ["BankSimulator", "BillRow", "NotifyDelivery", "create_bank_simulator", "render_bill"]

_TEXT_LENGTH_MAX = 256


@dataclass
class _Trade:
    out_trade_no: str
    bank_trade_no: str
    amount_minor: int
    currency: str
    subject: str
    method: str
    notify_url: str
    return_url: str | None
    expires_at: dt.datetime | None
    created_at: dt.datetime
    state: PaymentState = "pending"
    paid_at: dt.datetime | None = None
    refunded_minor: int = 0
    reported_amount_minor: int | None = None  # set by disagree_amount

    @property
    def shown_amount_minor(self) -> int:
        return self.amount_minor if self.reported_amount_minor is None else self.reported_amount_minor


@dataclass
class _Refund:
    out_refund_no: str
    bank_refund_no: str
    trade: _Trade
    amount_minor: int
    reason: str | None
    notify_url: str | None
    state: RefundState
    refunded_at: dt.datetime | None


@dataclass
class _Payout:
    out_payout_no: str
    bank_payout_no: str
    amount_minor: int
    currency: str
    payee_account: str
    payee_name: str
    payee_bank: str | None
    remark: str | None
    notify_url: str | None
    created_at: dt.datetime
    state: PayoutState = "processing"
    finished_at: dt.datetime | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    def same_request(self, other: _Payout) -> bool:
        keys = ("amount_minor", "currency", "payee_account", "payee_name", "payee_bank")
        return all(getattr(self, key) == getattr(other, key) for key in keys)


@dataclass
class _Agreement:
    out_sign_no: str
    agreement_no: str
    account_number: str
    account_name: str
    phone: str
    state: str = "active"  # active | cancelled


class _AnswerLost(Exception):
    """The request was received (and, perhaps, carried out) but its answer never reaches the caller."""


WITHHOLD_OUTCOMES = frozenset(
    {"success", "insufficient_funds", "account_closed", "agreement_invalid", "timeout", "timeout_after_debit"}
)


@dataclass(frozen=True)
class NotifyDelivery:
    """One POST of a notify to the merchant, as the bank saw it."""

    notify_id: str
    kind: NotifyType
    url: str
    attempt: int  # position in the retry schedule, 1 = first; duplicates share an attempt
    sent_at_monotonic: float
    status_code: int | None  # None: no HTTP answer (connection refused, timeout)
    acknowledged: bool
    headers: Mapping[str, str]
    body: bytes
    error: str | None = None


@dataclass(frozen=True)
class BillRow:
    """One line of the day's trade bill, in our terms (amounts positive, in fen)."""

    kind: str  # "payment" | "refund"
    occurred_at: dt.datetime
    out_trade_no: str
    bank_trade_no: str
    out_refund_no: str | None
    bank_refund_no: str | None
    currency: str
    amount_minor: int
    fee_minor: int
    method: str
    subject: str


@dataclass
class _NotifyJob:
    notify_id: str
    kind: NotifyType
    url: str
    headers: Mapping[str, str]
    body: bytes
    copies_first: int
    delay_first_seconds: float


class _Refusal(Exception):
    """The bank says no: ``rule`` is a key of ``BankProfile.error_codes``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class _In:
    """Reads logical fields out of a verified request; anything wrong is ``param_invalid``."""

    def __init__(self, profile: BankProfile, biz: Mapping[str, Any]) -> None:
        self._profile = profile
        self._biz = biz

    def text(self, name: str, *, required: bool = True) -> str | None:
        wire = self._profile.fields[name]
        value = self._biz.get(wire)
        if value is None or value == "":
            if required:
                raise _Refusal("param_invalid", f"{wire} is required")
            return None
        if not isinstance(value, str) or len(value) > _TEXT_LENGTH_MAX:
            raise _Refusal("param_invalid", f"{wire} must be a string of at most {_TEXT_LENGTH_MAX} characters")
        return value

    def amount(self, name: str) -> int:
        wire = self._profile.fields[name]
        try:
            amount = self._profile.amount_from_wire(self._biz.get(wire))
        except ValueError as error:
            raise _Refusal("param_invalid", f"{wire}: {error}") from error
        if amount <= 0:
            raise _Refusal("param_invalid", f"{wire} must be positive")
        return amount

    def currency(self) -> str:
        wire = self._profile.fields["currency"]
        try:
            return self._profile.currency_from_wire(self._biz.get(wire))
        except ValueError as error:
            raise _Refusal("param_invalid", f"{wire}: {error}") from error

    def method(self) -> str:
        code = self.text("method")
        for method, wire_code in self._profile.method_codes.items():
            if wire_code == code:
                return method
        raise _Refusal("param_invalid", f"{self._profile.fields['method']} {code!r} is not a pay type")

    def time(self, name: str) -> dt.datetime | None:
        value = self.text(name, required=False)
        if value is None:
            return None
        try:
            return self._profile.time_from_wire(value)
        except ValueError as error:
            raise _Refusal("param_invalid", f"{self._profile.fields[name]}: {error}") from error

    def date(self, name: str) -> dt.date:
        value = self.text(name)
        try:
            return self._profile.date_from_wire(value)
        except ValueError as error:
            raise _Refusal("param_invalid", f"{self._profile.fields[name]}: {error}") from error


def render_bill(
    profile: BankProfile, *, merchant_id: str, bill_date: dt.date, rows: list[BillRow], exported_at: dt.datetime
) -> bytes:
    """Returns the day's trade bill as the bank serves it (its layout, delimiter and encoding)."""
    layout = profile.bill

    def amount(amount_minor: int) -> str:
        return str(amount_minor) if profile.amount_unit == "fen" else format_minor(amount_minor, "CNY")

    def cell(row: BillRow, key: str) -> str:
        local = row.occurred_at.astimezone(SHANGHAI)
        sign = -1 if row.kind == "refund" and layout.refunds_negative else 1
        values: dict[str, str | None] = {
            "merchant_id": merchant_id,
            "bill_date": profile.date_to_wire(bill_date),
            "occurred_at": local.strftime(layout.occurred_at_format),
            "occurred_date": local.strftime(layout.occurred_date_format),
            "occurred_time": local.strftime(layout.occurred_time_format),
            "kind": layout.kind_labels[row.kind],
            "out_trade_no": row.out_trade_no,
            "bank_trade_no": row.bank_trade_no,
            "out_refund_no": row.out_refund_no,
            "bank_refund_no": row.bank_refund_no,
            "currency": layout.currency_labels[row.currency],
            "amount": amount(sign * row.amount_minor),
            "fee": amount(row.fee_minor),
            "method": layout.method_labels[row.method],
            "subject": row.subject,
        }
        return values[key] or ""

    payments = [row for row in rows if row.kind == "payment"]
    refunds = [row for row in rows if row.kind == "refund"]
    context = {
        "merchant_id": merchant_id,
        "bill_date": profile.date_to_wire(bill_date),
        "row_count": len(rows),
        "payment_count": len(payments),
        "payment_total": amount(sum(row.amount_minor for row in payments)),
        "refund_count": len(refunds),
        "refund_total": amount(sum(row.amount_minor for row in refunds)),
        "fee_total": amount(sum(row.fee_minor for row in rows)),
        "exported_at": exported_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = io.StringIO(newline="")
    for line in layout.preamble:
        out.write(line.format(**context) + layout.line_terminator)
    writer = csv.writer(out, delimiter=layout.delimiter, lineterminator=layout.line_terminator)
    writer.writerow([title for title, _ in layout.columns])
    for row in rows:
        writer.writerow([cell(row, key) for _, key in layout.columns])
    for line in layout.footer:
        out.write(line.format(**context) + layout.line_terminator)
    # A subject GBK cannot hold becomes "?" in the CMB file, as it would at a GBK-only bank.
    return out.getvalue().encode(layout.encoding, errors="replace")


class BankSimulator:
    """One bank, one merchant: the ASGI ``app``, its in-memory state and the test controls."""

    def __init__(
        self,
        profile: BankProfile,
        *,
        bank_private_key: RSAPrivateKey | bytes | str,
        platform_public_key: RSAPublicKey | bytes | str,
        merchant_id: str,
        base_url: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        notify_delay_seconds: float = 1.0,
        fee_rate_bp: int = 0,
        payout_settle_seconds: float | None = 60.0,
        notify_timeout_seconds: float = 5.0,
    ) -> None:
        self.profile = profile
        self.merchant_id = merchant_id
        self.base_url = base_url.rstrip("/") if base_url else None
        self.notify_delay_seconds = notify_delay_seconds
        self.fee_rate_bp = fee_rate_bp
        self.payout_settle_seconds = payout_settle_seconds
        self._bank_key = load_private_key(bank_private_key)
        self._platform_key = load_public_key(platform_public_key)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._http = httpx.Client(timeout=notify_timeout_seconds)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sequence = itertools.count(1)
        self._trades: dict[str, _Trade] = {}
        self._trades_by_bank_no: dict[str, _Trade] = {}
        self._refunds: dict[str, _Refund] = {}
        self._payouts: dict[str, _Payout] = {}
        self._agreements: dict[str, _Agreement] = {}  # by agreement number
        self._signs: dict[str, _Agreement] = {}  # by out_sign_no
        self._closed_accounts: set[str] = set()
        self._withhold_next: list[str] = []
        self._files: dict[str, bytes] = {}
        self._deliveries: list[NotifyDelivery] = []
        self._fail_next: list[int] = []
        self._timeout_next: list[float] = []
        self._notify_extra_delay_seconds = 0.0
        self._notify_copies = 1
        self._operations = {wire: logical for logical, wire in profile.apis.items()}
        self.app = Starlette(
            routes=[
                Route("/cashier/{bank_trade_no}", self._cashier, methods=["GET", "POST"]),
                Route("/files/{token}", self._file, methods=["GET"]),
                Route("/{path:path}", self._gateway, methods=["POST"]),
            ]
        )

    # ------------------------------------------------------------------ controls

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` gateway requests get HTTP ``status`` with an unsigned body, and change nothing."""
        with self._lock:
            self._fail_next.extend([status] * n)

    def timeout_next(self, n: int, seconds: float) -> None:
        """The next ``n`` gateway requests are answered only after ``seconds`` (they are still carried out)."""
        with self._lock:
            self._timeout_next.extend([seconds] * n)

    def delay_notify(self, seconds: float) -> None:
        """Notifies scheduled from now on wait ``seconds`` (real time) before their first delivery."""
        with self._lock:
            self._notify_extra_delay_seconds = seconds

    def duplicate_notify(self, times: int) -> None:
        """Notifies scheduled from now on are delivered ``times`` times at their first attempt (1 = normal)."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._notify_copies = times

    def disagree_amount(self, out_trade_no: str, amount_minor: int) -> None:
        """The bank reports ``amount_minor`` for this trade in query, notify and bill (refund checks stay true)."""
        with self._lock:
            self._trade(out_trade_no).reported_amount_minor = amount_minor

    def pay(self, out_trade_no: str, *, outcome: str = "success") -> None:
        """The payer pays (or fails to), without a browser; the notify is sent as after the cashier page."""
        with self._lock:
            trade = self._trade(out_trade_no)
            self._complete_payment(trade, succeeded=outcome != "fail")

    def withhold_next(self, *outcomes: str) -> None:
        """The next withholding debits answer these outcomes in turn, then debits succeed again.

        ``success``; ``insufficient_funds`` (a soft refusal); ``account_closed`` and
        ``agreement_invalid`` (hard refusals); ``timeout`` (HTTP 504, nothing
        debited) and ``timeout_after_debit`` (HTTP 504 after the debit was made:
        the same ``out_trade_no`` sent again answers the trade).
        """
        unknown = set(outcomes) - WITHHOLD_OUTCOMES
        if unknown:
            raise ValueError(f"unknown outcomes {sorted(unknown)}; choose from {sorted(WITHHOLD_OUTCOMES)}")
        with self._lock:
            self._withhold_next.extend(outcomes)

    def close_account(self, account_number: str) -> None:
        """The payer's account is closed (销户): signing with it and debiting it are refused ``account_closed``."""
        with self._lock:
            self._closed_accounts.add(account_number)

    def agreements(self) -> list[dict[str, str]]:
        """Every agreement signed at this bank: out_sign_no, agreement_no, state and the masked account."""
        with self._lock:
            return [
                {
                    "out_sign_no": agreement.out_sign_no,
                    "agreement_no": agreement.agreement_no,
                    "state": agreement.state,
                    "account": "****" + agreement.account_number[-4:],
                }
                for agreement in self._agreements.values()
            ]

    def settle_payouts(self) -> int:
        """Completes every processing payout (fails those to accounts ending in 0000); returns how many."""
        with self._lock:
            pending = [payout for payout in self._payouts.values() if payout.state == "processing"]
            for payout in pending:
                self._settle_payout(payout)
            return len(pending)

    def notifies_sent(self) -> list[NotifyDelivery]:
        """Every notify delivery so far, in order."""
        with self._lock:
            return list(self._deliveries)

    def bill_rows(self, bill_date: dt.date) -> list[BillRow]:
        """The rows of the trade bill for ``bill_date`` (Asia/Shanghai), payments then refunds, by time."""
        with self._lock:
            rows = [
                BillRow(
                    kind="payment",
                    occurred_at=trade.paid_at,
                    out_trade_no=trade.out_trade_no,
                    bank_trade_no=trade.bank_trade_no,
                    out_refund_no=None,
                    bank_refund_no=None,
                    currency=trade.currency,
                    amount_minor=trade.shown_amount_minor,
                    fee_minor=self._fee(trade.shown_amount_minor),
                    method=trade.method,
                    subject=trade.subject,
                )
                for trade in self._trades.values()
                if trade.state == "succeeded"
                and trade.paid_at
                and trade.paid_at.astimezone(SHANGHAI).date() == bill_date
            ]
            rows += [
                BillRow(
                    kind="refund",
                    occurred_at=refund.refunded_at,
                    out_trade_no=refund.trade.out_trade_no,
                    bank_trade_no=refund.trade.bank_trade_no,
                    out_refund_no=refund.out_refund_no,
                    bank_refund_no=refund.bank_refund_no,
                    currency=refund.trade.currency,
                    amount_minor=refund.amount_minor,
                    fee_minor=0,
                    method=refund.trade.method,
                    subject=refund.trade.subject,
                )
                for refund in self._refunds.values()
                if refund.state == "succeeded"
                and refund.refunded_at
                and refund.refunded_at.astimezone(SHANGHAI).date() == bill_date
            ]
            return sorted(rows, key=lambda row: (row.kind != "payment", row.occurred_at))

    def bill_file(self, bill_date: dt.date) -> bytes:
        """The bill for ``bill_date`` as the bank serves it."""
        return render_bill(
            self.profile,
            merchant_id=self.merchant_id,
            bill_date=bill_date,
            rows=self.bill_rows(bill_date),
            exported_at=self._clock(),
        )

    def shutdown(self) -> None:
        """Stops pending notify retries and payout timers and closes the notify HTTP client."""
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._http.close()

    # ------------------------------------------------------------------ HTTP: gateway

    async def _gateway(self, request: Request) -> Response:
        with self._lock:
            fail_status = self._fail_next.pop(0) if self._fail_next else None
            delay = self._timeout_next.pop(0) if self._timeout_next else None
        if fail_status is not None:
            return PlainTextResponse("system busy", status_code=fail_status)
        body = await request.body()
        if delay is not None:
            await asyncio.sleep(delay)
        path = "/" + request.path_params["path"]
        try:
            message = self._handle(path, request.headers, body, self._base(request))
        except _AnswerLost:
            return PlainTextResponse("gateway timeout", status_code=504)
        return Response(content=message.body, status_code=200, headers=dict(message.headers))

    def _handle(self, path: str, headers: Mapping[str, str], body: bytes, base: str) -> Any:
        p = self.profile
        timestamp = p.time_to_wire(self._clock())
        try:
            decoded = p.wire.decode_request(path, headers, body, public_key=self._platform_key)
        except WireError as error:
            rule = "signature_invalid" if error.reason == "signature_invalid" else "param_invalid"
            api, message_id = p.wire.peek_request(path, body)  # echoed, never trusted
            return p.wire.encode_response(
                api,
                {},
                code=p.error_codes[rule],
                message=str(error),
                message_id=message_id,
                timestamp=timestamp,
                private_key=self._bank_key,
            )
        operation = self._operations.get(decoded.api)
        try:
            if operation is None:
                raise _Refusal("param_invalid", f"unknown API {decoded.api!r}")
            read = _In(p, decoded.biz)
            if read.text("merchant_id") != self.merchant_id:
                raise _Refusal("merchant_unknown", "unknown merchant")
            with self._lock:
                values = getattr(self, f"_op_{operation}")(read, base)
            code, message, biz = p.error_codes["ok"], "success", self._out(values)
        except _Refusal as refusal:
            code, message, biz = p.error_codes[refusal.rule], refusal.message, {}
        return p.wire.encode_response(
            decoded.api,
            biz,
            code=code,
            message=message,
            message_id=decoded.message_id,
            timestamp=timestamp,
            private_key=self._bank_key,
        )

    def _out(self, values: Mapping[str, Any]) -> dict[str, WireValue]:
        """Logical response values → wire fields: amounts, times, currency and states in the bank's notation."""
        p = self.profile
        converted: dict[str, WireValue | None] = {}
        for name, value in values.items():
            if value is None:
                continue
            if name in {"amount", "refund_amount", "payout_amount", "refunded_total"}:
                converted[name] = p.amount_to_wire(value)
            elif isinstance(value, dt.datetime):
                converted[name] = p.time_to_wire(value)
            elif name == "currency":
                converted[name] = p.currency_codes[value]
            elif name == "method":
                converted[name] = p.method_codes[value]
            elif name == "trade_state":
                converted[name] = p.trade_states[value]
            elif name == "refund_state":
                converted[name] = p.refund_states[value]
            elif name == "payout_state":
                converted[name] = p.payout_states[value]
            elif name == "agreement_state":
                converted[name] = p.agreement_states[value]
            else:
                converted[name] = value
        return p.to_wire(converted)

    # ------------------------------------------------------------------ operations (called with the lock held)

    def _op_create(self, read: _In, base: str) -> dict[str, Any]:
        out_trade_no = read.text("out_trade_no")
        amount_minor, currency = read.amount("amount"), read.currency()
        subject, method = read.text("subject"), read.method()
        notify_url = read.text("notify_url")
        return_url = read.text("return_url", required=False)
        expires_at = read.time("expires_at")
        existing = self._trades.get(out_trade_no)
        if existing is not None:
            self._expire_if_due(existing)
            if (existing.amount_minor, existing.currency) != (amount_minor, currency):
                raise _Refusal("out_trade_no_reused", "out_trade_no was used with another amount")
            if existing.state == "succeeded":
                raise _Refusal("trade_already_paid", "the trade is already paid")
            if existing.state != "pending":
                raise _Refusal("trade_closed", "the trade is closed")
            trade = existing
        else:
            bank_trade_no = self._new_number("")
            trade = _Trade(
                out_trade_no=out_trade_no,
                bank_trade_no=bank_trade_no,
                amount_minor=amount_minor,
                currency=currency,
                subject=subject,
                method=method,
                notify_url=notify_url,
                return_url=return_url,
                expires_at=expires_at,
                created_at=self._clock(),
            )
            self._trades[out_trade_no] = trade
            self._trades_by_bank_no[bank_trade_no] = trade
        return {
            "merchant_id": self.merchant_id,
            "out_trade_no": trade.out_trade_no,
            "bank_trade_no": trade.bank_trade_no,
            "pay_url": f"{base}/cashier/{trade.bank_trade_no}",
        }

    def _op_query(self, read: _In, base: str) -> dict[str, Any]:
        trade = self._known_trade(read.text("out_trade_no"))
        self._expire_if_due(trade)
        return self._trade_values(trade)

    def _op_close(self, read: _In, base: str) -> dict[str, Any]:
        trade = self._known_trade(read.text("out_trade_no"))
        self._expire_if_due(trade)
        if trade.state == "succeeded":
            raise _Refusal("trade_already_paid", "a paid trade cannot be closed; refund it")
        if trade.state == "pending":
            trade.state = "closed"
        return {"merchant_id": self.merchant_id, "out_trade_no": trade.out_trade_no, "trade_state": trade.state}

    def _op_refund(self, read: _In, base: str) -> dict[str, Any]:
        out_trade_no, out_refund_no = read.text("out_trade_no"), read.text("out_refund_no")
        refund_minor, total_minor = read.amount("refund_amount"), read.amount("amount")
        currency = read.currency()
        reason, notify_url = read.text("reason", required=False), read.text("notify_url", required=False)
        existing = self._refunds.get(out_refund_no)
        if existing is not None:
            if existing.trade.out_trade_no != out_trade_no or existing.amount_minor != refund_minor:
                raise _Refusal("out_refund_no_reused", "out_refund_no was used for another refund")
            return self._refund_values(existing)
        trade = self._known_trade(out_trade_no)
        if trade.state != "succeeded":
            raise _Refusal("trade_not_paid", "only a paid trade can be refunded")
        if total_minor != trade.amount_minor or currency != trade.currency:
            raise _Refusal("param_invalid", "the order amount does not match the trade")
        if trade.refunded_minor + refund_minor > trade.amount_minor:
            raise _Refusal("refund_exceeds_paid", "the refunds would exceed what was paid")
        trade.refunded_minor += refund_minor
        refund = _Refund(
            out_refund_no=out_refund_no,
            bank_refund_no=self._new_number("R"),
            trade=trade,
            amount_minor=refund_minor,
            reason=reason,
            notify_url=notify_url,
            state="succeeded",
            refunded_at=self._clock(),
        )
        self._refunds[out_refund_no] = refund
        if notify_url:
            self._schedule_notify("refund", notify_url, self._refund_values(refund))
        return self._refund_values(refund)

    def _op_refund_query(self, read: _In, base: str) -> dict[str, Any]:
        out_trade_no, out_refund_no = read.text("out_trade_no"), read.text("out_refund_no")
        refund = self._refunds.get(out_refund_no)
        if refund is None or refund.trade.out_trade_no != out_trade_no:
            raise _Refusal("refund_not_found", "no such refund")
        return self._refund_values(refund)

    def _op_bill(self, read: _In, base: str) -> dict[str, Any]:
        bill_date = read.date("bill_date")
        content = self.bill_file(bill_date)
        values: dict[str, Any] = {"merchant_id": self.merchant_id, "bill_date": self.profile.date_to_wire(bill_date)}
        if self.profile.bill_delivery == "inline_base64":
            values["bill_file"] = base64.b64encode(content).decode("ascii")
        else:
            token = secrets.token_urlsafe(16)
            self._files[token] = content
            values["bill_url"] = f"{base}/files/{token}"
            values["bill_sha256"] = hashlib.sha256(content).hexdigest()
        return values

    def _op_payout(self, read: _In, base: str) -> dict[str, Any]:
        candidate = _Payout(
            out_payout_no=read.text("out_payout_no"),  # type: ignore[arg-type]
            bank_payout_no="",
            amount_minor=read.amount("payout_amount"),
            currency=read.currency(),
            payee_account=read.text("payee_account"),  # type: ignore[arg-type]
            payee_name=read.text("payee_name"),  # type: ignore[arg-type]
            payee_bank=read.text("payee_bank", required=False),
            remark=read.text("remark", required=False),
            notify_url=read.text("notify_url", required=False),
            created_at=self._clock(),
        )
        if not (candidate.payee_account.isascii() and candidate.payee_account.isdigit()):
            raise _Refusal("param_invalid", "the payee account must be digits")
        existing = self._payouts.get(candidate.out_payout_no)
        if existing is not None:
            if not existing.same_request(candidate):
                raise _Refusal("out_payout_no_reused", "out_payout_no was used for another payout")
            return self._payout_values(existing)
        candidate.bank_payout_no = self._new_number("P")
        self._payouts[candidate.out_payout_no] = candidate
        if self.payout_settle_seconds is not None:
            self._start(self._settle_later, candidate, self.payout_settle_seconds * self.notify_delay_seconds)
        return self._payout_values(candidate)

    def _op_sign(self, read: _In, base: str) -> dict[str, Any]:
        candidate = _Agreement(
            out_sign_no=read.text("out_sign_no"),  # type: ignore[arg-type]
            agreement_no="",
            account_number=read.text("account_number"),  # type: ignore[arg-type]
            account_name=read.text("account_name"),  # type: ignore[arg-type]
            phone=read.text("phone"),  # type: ignore[arg-type]
        )
        if not (candidate.account_number.isascii() and candidate.account_number.isdigit()):
            raise _Refusal("param_invalid", "the account number must be digits")
        existing = self._signs.get(candidate.out_sign_no)
        if existing is not None:
            same = (existing.account_number, existing.account_name, existing.phone) == (
                candidate.account_number,
                candidate.account_name,
                candidate.phone,
            )
            if not same:
                raise _Refusal("out_sign_no_reused", "out_sign_no was used for another agreement")
            return self._agreement_values(existing)
        if candidate.account_number in self._closed_accounts or candidate.account_number.endswith("0000"):
            raise _Refusal("account_closed", "the account is closed (账户已销户)")
        candidate.agreement_no = self._new_number("A")
        self._signs[candidate.out_sign_no] = candidate
        self._agreements[candidate.agreement_no] = candidate
        return self._agreement_values(candidate)

    def _op_unsign(self, read: _In, base: str) -> dict[str, Any]:
        agreement = self._agreements.get(read.text("agreement_no"))  # type: ignore[arg-type]
        if agreement is None:
            raise _Refusal("agreement_invalid", "no such agreement")
        agreement.state = "cancelled"
        return self._agreement_values(agreement)

    def _op_withhold(self, read: _In, base: str) -> dict[str, Any]:
        out_trade_no, agreement_no = read.text("out_trade_no"), read.text("agreement_no")
        amount_minor, currency, subject = read.amount("amount"), read.currency(), read.text("subject")
        outcome = self._withhold_next.pop(0) if self._withhold_next else "success"
        existing = self._trades.get(out_trade_no)  # type: ignore[arg-type]
        if existing is not None:
            if (existing.amount_minor, existing.currency) != (amount_minor, currency):
                raise _Refusal("out_trade_no_reused", "out_trade_no was used with another amount")
            if outcome in ("timeout", "timeout_after_debit"):
                raise _AnswerLost()
            return self._trade_values(existing)
        if outcome == "timeout":
            raise _AnswerLost()
        agreement = self._agreements.get(agreement_no)  # type: ignore[arg-type]
        if agreement is None or agreement.state != "active" or outcome == "agreement_invalid":
            raise _Refusal("agreement_invalid", "the agreement is cancelled or unknown (协议无效)")
        if agreement.account_number in self._closed_accounts or outcome == "account_closed":
            raise _Refusal("account_closed", "the account is closed (账户已销户)")
        if outcome == "insufficient_funds":
            raise _Refusal("insufficient_funds", "the balance is insufficient (余额不足)")
        bank_trade_no = self._new_number("")
        now = self._clock()
        trade = _Trade(
            out_trade_no=out_trade_no,  # type: ignore[arg-type]
            bank_trade_no=bank_trade_no,
            amount_minor=amount_minor,
            currency=currency,
            subject=subject,  # type: ignore[arg-type]
            method="bank_card",  # a withholding debit is a 快捷 payment in the bill
            notify_url="",  # answered synchronously: no notify
            return_url=None,
            expires_at=None,
            created_at=now,
            state="succeeded",
            paid_at=now,
        )
        self._trades[trade.out_trade_no] = trade
        self._trades_by_bank_no[bank_trade_no] = trade
        if outcome == "timeout_after_debit":
            raise _AnswerLost()
        return self._trade_values(trade)

    def _agreement_values(self, agreement: _Agreement) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "out_sign_no": agreement.out_sign_no,
            "agreement_no": agreement.agreement_no,
            "agreement_state": agreement.state,
        }

    def _op_payout_query(self, read: _In, base: str) -> dict[str, Any]:
        payout = self._payouts.get(read.text("out_payout_no"))  # type: ignore[arg-type]
        if payout is None:
            raise _Refusal("payout_not_found", "no such payout")
        return self._payout_values(payout)

    # ------------------------------------------------------------------ state helpers (lock held)

    def _trade(self, out_trade_no: str) -> _Trade:
        trade = self._trades.get(out_trade_no)
        if trade is None:
            raise KeyError(f"no trade {out_trade_no!r} at this bank")
        return trade

    def _known_trade(self, out_trade_no: str | None) -> _Trade:
        trade = self._trades.get(out_trade_no or "")
        if trade is None:
            raise _Refusal("trade_not_found", "no such trade")
        return trade

    def _expire_if_due(self, trade: _Trade) -> None:
        if trade.state == "pending" and trade.expires_at is not None and self._clock() >= trade.expires_at:
            trade.state = "closed"

    def _new_number(self, prefix: str) -> str:
        day = self._clock().astimezone(SHANGHAI).strftime("%Y%m%d")
        return f"{prefix}{self.profile.code.upper()}{day}{next(self._sequence):010d}"

    def _fee(self, amount_minor: int) -> int:
        return (amount_minor * self.fee_rate_bp + 5000) // 10000

    def _trade_values(self, trade: _Trade) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "out_trade_no": trade.out_trade_no,
            "bank_trade_no": trade.bank_trade_no,
            "amount": trade.shown_amount_minor,
            "currency": trade.currency,
            "method": trade.method,
            "trade_state": trade.state,
            "paid_at": trade.paid_at,
            "refunded_total": trade.refunded_minor,
        }

    def _refund_values(self, refund: _Refund) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "out_trade_no": refund.trade.out_trade_no,
            "bank_trade_no": refund.trade.bank_trade_no,
            "out_refund_no": refund.out_refund_no,
            "bank_refund_no": refund.bank_refund_no,
            "refund_amount": refund.amount_minor,
            "currency": refund.trade.currency,
            "refund_state": refund.state,
            "refunded_at": refund.refunded_at,
            "refunded_total": refund.trade.refunded_minor,
        }

    def _payout_values(self, payout: _Payout) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "out_payout_no": payout.out_payout_no,
            "bank_payout_no": payout.bank_payout_no,
            "payout_amount": payout.amount_minor,
            "currency": payout.currency,
            "payee_account": payout.payee_account,
            "payee_name": payout.payee_name,
            "payout_state": payout.state,
            "finished_at": payout.finished_at,
            "failure_code": payout.failure_code,
            "failure_message": payout.failure_message,
        }

    def _complete_payment(self, trade: _Trade, *, succeeded: bool) -> None:
        self._expire_if_due(trade)
        if trade.state != "pending":
            raise ValueError(f"trade {trade.out_trade_no} is {trade.state}, not pending")
        trade.state = "succeeded" if succeeded else "failed"
        trade.paid_at = self._clock() if succeeded else None
        self._schedule_notify("payment", trade.notify_url, self._trade_values(trade))

    def _settle_payout(self, payout: _Payout) -> None:
        if payout.state != "processing":
            return
        payout.finished_at = self._clock()
        if payout.payee_account.endswith("0000"):
            payout.state = "failed"
            payout.failure_code = self.profile.error_codes["account_closed"]
            payout.failure_message = "the payee account is closed (账户已销户)"
        else:
            payout.state = "succeeded"
        if payout.notify_url:
            self._schedule_notify("payout", payout.notify_url, self._payout_values(payout))

    def _settle_later(self, payout: _Payout, wait_seconds: float) -> None:
        if self._stopping.wait(wait_seconds):
            return
        with self._lock:
            self._settle_payout(payout)

    # ------------------------------------------------------------------ notifies

    def _schedule_notify(self, kind: NotifyType, url: str, values: Mapping[str, Any]) -> None:
        notify_id = self._new_number("N")
        message = self.profile.wire.encode_notify(
            self.profile.notify_types[kind],
            self._out(values),
            notify_id=notify_id,
            timestamp=self.profile.time_to_wire(self._clock()),
            private_key=self._bank_key,
        )
        job = _NotifyJob(
            notify_id=notify_id,
            kind=kind,
            url=url,
            headers=message.headers,
            body=message.body,
            copies_first=self._notify_copies,
            delay_first_seconds=self._notify_extra_delay_seconds,
        )
        self._start(self._deliver, job)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"bank-{self.profile.code}", daemon=True)
        self._threads = [alive for alive in self._threads if alive.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _deliver(self, job: _NotifyJob) -> None:
        """Delivers one notify on the bank's schedule until it is acknowledged or the schedule ends."""
        if job.delay_first_seconds and self._stopping.wait(job.delay_first_seconds):
            return
        waits = (0, *self.profile.notify_retry_intervals_seconds)
        for attempt, wait in enumerate(waits, start=1):
            if wait and self._stopping.wait(wait * self.notify_delay_seconds):
                return
            acknowledged = False
            for _ in range(job.copies_first if attempt == 1 else 1):
                acknowledged = self._post_notify(job, attempt) or acknowledged
            if acknowledged:
                return

    def _post_notify(self, job: _NotifyJob, attempt: int) -> bool:
        sent_at = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        acknowledged = False
        try:
            response = self._http.post(job.url, content=job.body, headers=dict(job.headers))
            status_code = response.status_code
            acknowledged = self.profile.wire.is_ack(status_code, response.content, public_key=self._platform_key)
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        with self._lock:
            self._deliveries.append(
                NotifyDelivery(
                    notify_id=job.notify_id,
                    kind=job.kind,
                    url=job.url,
                    attempt=attempt,
                    sent_at_monotonic=sent_at,
                    status_code=status_code,
                    acknowledged=acknowledged,
                    headers=job.headers,
                    body=job.body,
                    error=error,
                )
            )
        return acknowledged

    # ------------------------------------------------------------------ HTTP: cashier and files

    def _base(self, request: Request) -> str:
        return self.base_url or str(request.base_url).rstrip("/")

    async def _cashier(self, request: Request) -> Response:
        bank_trade_no = request.path_params["bank_trade_no"]
        with self._lock:
            trade = self._trades_by_bank_no.get(bank_trade_no)
            if trade is None:
                return HTMLResponse("<p>交易不存在 (no such trade)</p>", status_code=404)
            self._expire_if_due(trade)
            if request.method == "GET":
                return self._cashier_page(trade)
            if trade.state != "pending":
                return HTMLResponse(f"<p>交易状态 {html.escape(trade.state)}，不能支付</p>", status_code=409)
            self._complete_payment(trade, succeeded=request.query_params.get("outcome") != "fail")
            return_url = trade.return_url
            reference = {self.profile.fields[name]: self._reference(trade, name) for name in self.profile.return_fields}
        if return_url is None:
            return HTMLResponse("<p>支付已提交 (payment submitted)</p>")
        return RedirectResponse(_with_query(return_url, reference), status_code=303)

    def _reference(self, trade: _Trade, name: str) -> str:
        return self.merchant_id if name == "merchant_id" else getattr(trade, name)

    def _cashier_page(self, trade: _Trade) -> HTMLResponse:
        escape = html.escape
        payable = trade.state == "pending"
        buttons = (
            '<form method="post" action=""><button type="submit" name="pay">pay</button></form>'
            '<form method="post" action="?outcome=fail"><button type="submit" name="fail">fail</button></form>'
            if payable
            else f"<p>交易状态 {escape(trade.state)}</p>"
        )
        page = (
            '<!doctype html><html><head><meta charset="utf-8">'
            f"<title>{escape(self.profile.name)} 收银台</title></head><body>"
            f"<h1>{escape(self.profile.name)}</h1>"
            f"<p>商户订单号 {escape(trade.out_trade_no)}</p>"
            f"<p>金额 {escape(format_minor(trade.amount_minor, trade.currency))} {escape(trade.currency)}</p>"
            f"<p>{escape(trade.subject)}</p>{buttons}</body></html>"
        )
        return HTMLResponse(page, status_code=200 if payable else 410)

    async def _file(self, request: Request) -> Response:
        with self._lock:
            content = self._files.get(request.path_params["token"])
        if content is None:
            return PlainTextResponse("not found", status_code=404)
        media_type = f"text/csv; charset={self.profile.bill.encoding}"
        return Response(content=content, media_type=media_type)


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_bank_simulator(
    profile: BankProfile,
    *,
    bank_private_key: RSAPrivateKey | bytes | str,
    platform_public_key: RSAPublicKey | bytes | str,
    merchant_id: str,
    base_url: str | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    notify_delay_seconds: float = 1.0,
    fee_rate_bp: int = 0,
    payout_settle_seconds: float | None = 60.0,
    notify_timeout_seconds: float = 5.0,
) -> BankSimulator:
    """Returns a simulator of ``profile``'s bank for one merchant; serve ``.app`` and call ``.shutdown()`` after.

    ``base_url`` is where the app is reachable (for cashier and bill URLs); by
    default it is taken from each incoming request. ``fee_rate_bp`` is the
    bank's fee in basis points of each payment, rounded half up to the fen.
    """
    return BankSimulator(
        profile,
        bank_private_key=bank_private_key,
        platform_public_key=platform_public_key,
        merchant_id=merchant_id,
        base_url=base_url,
        clock=clock,
        notify_delay_seconds=notify_delay_seconds,
        fee_rate_bp=fee_rate_bp,
        payout_settle_seconds=payout_settle_seconds,
        notify_timeout_seconds=notify_timeout_seconds,
    )
