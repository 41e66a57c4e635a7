"""Where payments meet the channels: opening attempts, receiving notifies, and the jobs that query and retry.

Every call to a channel happens here, outside any database transaction (a
channel may take seconds to answer; no row stays locked meanwhile). What the
channel said is then recorded through ``service`` in a short transaction of
its own, with retries on transient conflicts.

Guarantees
- Only a channel decides a payment: a verified notify (``handle_notify``) or
  our own query (``poll``, ``expire``, ``close_attempt``). The payer's browser
  coming back (the synchronous return) never does.
- A notify that does not verify, names no attempt of ours, or reports another
  amount or currency is refused (answered so that the channel retries, if it
  does) and kept in ``channel_notifies`` with the reason; it changes nothing.
  A duplicate or late notify is acknowledged and changes nothing.
- A channel that does not answer (``ChannelUnavailable``) counts against its
  circuit breaker, and the cashier moves on to the next route; one that
  answers "no" (``ChannelRejected``) does not count.
- Jobs are idempotent: each asks the channel first and records through
  ``service``, whose transitions and ledger keys make a second run a no-op.
  Payments and refunds at the channels are idempotent on our refs, so a job
  retried after a crash never charges or refunds twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine

from zhangfang.channels import registry as channel_registry
from zhangfang.channels.bank_direct import PayoutRequest as BankPayoutRequest
from zhangfang.channels.protocol import (
    ChannelAdapter,
    ChannelError,
    ChannelRejected,
    ChannelUnavailable,
    CreatePayment,
    NotifyAck,
    NotifyInvalid,
    PaymentStatus,
    RefundStatus,
)
from zhangfang.channels.protocol import RefundRequest as ChannelRefundRequest
from zhangfang.channels.registry import ChannelRegistry, Route
from zhangfang.config import Settings, get_settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import queue
from zhangfang.jobs.models import Job
from zhangfang.payments import errors, routing, service
from zhangfang.payments.models import LIVE_ATTEMPT_STATES, PaymentAttempt, PaymentOrder, Refund

logger = logging.getLogger(__name__)

_job_settings: Settings | None = None


def install_settings(settings: Settings | None) -> None:
    """The settings the payment jobs of this process use (the app's or the worker's); None: the environment's."""
    global _job_settings
    _job_settings = settings


def job_settings() -> Settings:
    """The settings payment jobs run with: those installed, else the environment's."""
    return _job_settings or get_settings()


# What each channel answers for a trade it never heard of (a page the payer never opened, say).
TRADE_NOT_FOUND_CODES = frozenset({"ACQ.TRADE_NOT_EXIST", "ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"})
TRIAL_SECONDS = 30.0


def _now(now: dt.datetime | None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else now.astimezone(dt.UTC)


def notify_url(settings: Settings, registry: ChannelRegistry, channel: str, *, payouts: bool = False) -> str:
    """Where ``channel`` sends its notifies to us (payouts have their own path)."""
    path = "payout-notify" if payouts else "notify"
    return f"{settings.public_base_url.rstrip('/')}/v1/channels/{registry.slug(channel)}/{path}"


def return_url(settings: Settings, order_ref: str) -> str:
    """Where a channel sends the payer's browser back: our cashier, which shows what we know, never decides."""
    return f"{settings.public_base_url.rstrip('/')}/cashier/{order_ref}/return"


def _trade_unknown(adapter: ChannelAdapter, error: ChannelError) -> bool:
    """True when a rejection means "no such trade": it never opened at the channel."""
    profile = getattr(adapter, "profile", None)
    if profile is not None and profile.error_name(error.code) == "trade_not_found":
        return True
    return error.code in TRADE_NOT_FOUND_CODES


# --------------------------------------------------------------------------- the cashier


@dataclass(frozen=True)
class CashierMethod:
    """A payer method the cashier can offer for an order right now."""

    method: str
    routes: tuple[Route, ...]
    trials: frozenset[str]  # channels among the routes whose breaker is half-open: a call is a trial


def cashier_methods(
    conn: Connection, *, order: PaymentOrder, registry: ChannelRegistry, settings: Settings, now: dt.datetime
) -> list[CashierMethod]:
    """The methods the payer may choose for ``order``: those with a route not cooling down, in registry order."""
    healths = routing.health(conn)
    threshold = settings.channel_failure_threshold
    trials = frozenset(code for code, entry in healths.items() if entry.state(now, threshold) == "half_open")
    offered = []
    for method in registry.methods():
        if order.method is not None and method != order.method:
            continue
        routes = routing.rank(
            registry.routes(currency=order.currency, amount_minor=order.amount, method=method),
            amount=order.amount,
            preferred_channel=order.preferred_channel,
            healths=healths,
            threshold=threshold,
            now=now,
        )
        if routes:
            on_trial = trials & {route.channel for route in routes}
            offered.append(CashierMethod(method=method, routes=tuple(routes), trials=on_trial))
    return offered


def open_attempt(
    engine: Engine,
    *,
    order_ref: str,
    method: str,
    registry: ChannelRegistry,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> PaymentAttempt:
    """The payer chose ``method``: open a trade at the best channel that answers, and say how to pay it.

    Tries the ranked routes in turn: a channel that does not answer counts
    against its breaker and the next one is tried; a half-open channel is tried
    only by the caller that claims its trial. Raises ``payment_not_found``,
    ``payment_not_payable``, ``payment_method_unavailable`` or, when no channel
    answered, ``channel_unavailable``.
    """
    settings = settings or get_settings()
    now = _now(now)

    def plan(conn: Connection) -> tuple[PaymentOrder, PaymentAttempt | None, CashierMethod]:
        order = service.get_order(conn, ref=order_ref)
        if not service.is_payable(order, now):
            raise errors.PaymentNotPayable(f"payment {order_ref} is {order.state}", field="payment", state=order.state)
        offered = {
            m.method: m for m in cashier_methods(conn, order=order, registry=registry, settings=settings, now=now)
        }
        if method not in offered:
            raise errors.PaymentMethodUnavailable(
                f"method {method!r} is not available for this payment", field="method", methods=sorted(offered)
            )
        return order, service.reusable_attempt(conn, order=order, method=method, now=now), offered[method]

    order, reusable, chosen = run_in_transaction(engine, plan, readonly=True)
    if reusable is not None:
        return reusable
    for route in chosen.routes:
        if route.channel in chosen.trials and not routing.claim_trial(
            engine,
            channel=route.channel,
            threshold=settings.channel_failure_threshold,
            trial_seconds=TRIAL_SECONDS,
            now=now,
        ):
            continue
        attempt = _try_route(engine, order=order, route=route, registry=registry, settings=settings, now=now)
        if attempt is not None:
            return attempt
    raise errors.ChannelUnavailable(
        f"no channel for {method} answered; try again in a moment", field="method", method=method
    )


def _try_route(
    engine: Engine,
    *,
    order: PaymentOrder,
    route: Route,
    registry: ChannelRegistry,
    settings: Settings,
    now: dt.datetime,
) -> PaymentAttempt | None:
    """One attempt at one channel: the open attempt, or None when the channel refused or did not answer."""
    attempt = run_in_transaction(
        engine, lambda conn: service.start_attempt(conn, order_ref=order.ref, route=route, now=now)
    )
    adapter = registry.adapter(route.channel)
    request = CreatePayment(
        out_trade_no=attempt.ref,
        amount_minor=order.amount,
        currency=order.currency,
        subject=order.subject,
        method=route.channel_method,
        notify_url=notify_url(settings, registry, route.channel),
        return_url=return_url(settings, order.ref),
        expires_at=order.expires_at,
    )
    try:
        action = adapter.create_payment(request)
    except ChannelUnavailable as error:
        _record_failure(engine, route.channel, error, settings, now)
        # The trade may exist at the channel even though no answer came: close it later, to be sure.
        _fail_attempt(engine, attempt.ref, "channel_unavailable", str(error), close_later=True, now=now)
        return None
    except (ChannelRejected, ValueError) as error:
        code = error.code if isinstance(error, ChannelRejected) else "channel_refused_request"
        logger.warning("payments: %s refused attempt %s: %s", route.channel, attempt.ref, error)
        _fail_attempt(engine, attempt.ref, code, str(error), close_later=False, now=now)
        return None
    routing.record_success(engine, channel=route.channel, now=now)
    return run_in_transaction(
        engine,
        lambda conn: service.mark_attempt_open(
            conn,
            ref=attempt.ref,
            action_kind=action.kind,
            action_url=action.url,
            action_qr_code=action.qr_code,
            channel_trade_no=action.channel_trade_no,
            poll_schedule_seconds=settings.payment_poll_schedule_seconds,
            now=now,
        ),
    )


def _fail_attempt(
    engine: Engine, ref: str, code: str | None, message: str, *, close_later: bool, now: dt.datetime
) -> None:
    run_in_transaction(
        engine,
        lambda conn: service.mark_attempt_failed(
            conn, ref=ref, code=code, message=message, close_later=close_later, now=now
        ),
    )


def _record_failure(engine: Engine, channel: str, error: Exception, settings: Settings, now: dt.datetime) -> None:
    health = routing.record_failure(
        engine,
        channel=channel,
        error=f"{type(error).__name__}: {error}",
        threshold=settings.channel_failure_threshold,
        cooldown_seconds=settings.channel_cooldown_seconds,
        now=now,
    )
    if health.consecutive_failures == settings.channel_failure_threshold:
        logger.error(
            "payments: channel %s failed %d times in a row: out of rotation for %ss",
            channel,
            health.consecutive_failures,
            settings.channel_cooldown_seconds,
        )


# --------------------------------------------------------------------------- notifies


def handle_notify(
    engine: Engine,
    *,
    slug: str,
    headers: Mapping[str, str],
    body: bytes,
    registry: ChannelRegistry,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> NotifyAck:
    """Verify and apply a channel's payment or refund notify; returns what to answer the channel.

    Raises ``ChannelNotConfigured`` for a path that names no channel.
    """
    settings = settings or get_settings()
    now = _now(now)
    channel = registry.code_for_slug(slug)
    adapter = registry.adapter(channel)

    def record(
        kind: str, notify_id: str | None, ref: str | None, outcome: str, reason: str | None, conn: Connection
    ) -> None:
        service.record_notify(
            conn,
            channel=channel,
            kind=kind,
            notify_id=notify_id,
            ref=ref,
            outcome=outcome,
            reason=reason,
            body=body,
            now=now,
        )

    try:
        notify = adapter.parse_notify(headers, body)
    except NotifyInvalid as error:
        logger.warning("payments: refused a notify on %s: %s (%s)", channel, error, error.code)
        reason = f"{error.code or 'notify_invalid'}: {error}"
        run_in_transaction(engine, lambda conn: record("unknown", None, None, "refused", reason, conn))
        return adapter.ack_notify(False)

    if notify.kind == "refund":
        ref = notify.out_refund_no

        def apply_refund(conn: Connection) -> str:
            try:
                refund: Refund | None = service.get_refund(conn, ref=ref or "")
            except errors.RefundNotFound:
                refund = None
            if refund is None or refund.channel != channel:
                outcome = "unknown_refund"
            elif notify.state == "succeeded":
                outcome = service.complete_refund(
                    conn,
                    ref=refund.ref,
                    channel_refund_no=None,
                    refunded_at=notify.occurred_at,
                    settings=settings,
                    now=now,
                )
            elif notify.state == "failed":
                outcome = service.fail_refund(
                    conn,
                    ref=refund.ref,
                    code="refund_failed_at_channel",
                    message="the channel reports the refund failed",
                    settings=settings,
                    now=now,
                )
            else:
                outcome = "no_change"
            record("refund", notify.notify_id, ref, outcome, None, conn)
            return outcome

        outcome = run_in_transaction(engine, apply_refund)
        return adapter.ack_notify(outcome != "unknown_refund")

    ref = notify.out_trade_no

    def apply_payment(conn: Connection) -> str:
        attempt = service.get_attempt(conn, ref=ref)
        if attempt is None or attempt.channel != channel:
            outcome = "unknown_attempt"
        elif notify.state == "succeeded":
            outcome = service.apply_payment_success(
                conn,
                attempt_ref=ref,
                amount=notify.amount_minor,
                currency=notify.currency,
                channel_trade_no=notify.channel_trade_no,
                paid_at=notify.occurred_at,
                settings=settings,
                now=now,
            )
        elif notify.state in ("closed", "failed"):
            outcome = "applied" if service.mark_attempt_closed(conn, ref=ref, now=now) else "no_change"
        else:
            outcome = "no_change"
        reason = None
        if outcome == "amount_mismatch":
            reason = f"notify says {notify.amount_minor} {notify.currency}"
            _flag_mismatch(conn, ref, notify.amount_minor, notify.currency, now)
        record("payment", notify.notify_id, ref, outcome, reason, conn)
        return outcome

    outcome = run_in_transaction(engine, apply_payment)
    return adapter.ack_notify(outcome not in ("unknown_attempt", "amount_mismatch"))


def handle_payout_notify(
    engine: Engine,
    *,
    slug: str,
    headers: Mapping[str, str],
    body: bytes,
    registry: ChannelRegistry,
    now: dt.datetime | None = None,
) -> NotifyAck:
    """Verify and apply a bank's payout notify; returns what to answer the bank."""
    now = _now(now)
    channel = registry.code_for_slug(slug)
    adapter = registry.adapter(channel)
    parse = getattr(adapter, "parse_payout_notify", None)

    def record(notify_id: str | None, ref: str | None, outcome: str, reason: str | None, conn: Connection) -> None:
        service.record_notify(
            conn,
            channel=channel,
            kind="payout",
            notify_id=notify_id,
            ref=ref,
            outcome=outcome,
            reason=reason,
            body=body,
            now=now,
        )

    if parse is None:
        run_in_transaction(engine, lambda conn: record(None, None, "refused", "channel makes no payouts", conn))
        return adapter.ack_notify(False)
    try:
        notify = parse(headers, body)
    except NotifyInvalid as error:
        logger.warning("payments: refused a payout notify on %s: %s", channel, error)
        reason = f"{error.code or 'notify_invalid'}: {error}"
        run_in_transaction(engine, lambda conn: record(None, None, "refused", reason, conn))
        return adapter.ack_notify(False)
    status = notify.status

    def apply(conn: Connection) -> str:
        try:
            payout = service.get_payout(conn, ref=status.out_payout_no)
        except errors.PayoutNotFound:
            payout = None
        if payout is None or payout.channel != channel:
            outcome = "unknown_payout"
        elif status.state == "processing":
            outcome = "no_change"
        else:
            outcome = _finish_payout(conn, payout.ref, status, now)
        record(notify.notify_id, status.out_payout_no, outcome, None, conn)
        return outcome

    outcome = run_in_transaction(engine, apply)
    return adapter.ack_notify(outcome != "unknown_payout")


def _finish_payout(conn: Connection, ref: str, status: Any, now: dt.datetime) -> str:
    return service.finish_payout(
        conn,
        ref=ref,
        succeeded=status.state == "succeeded",
        channel_payout_no=status.bank_payout_no,
        code=status.failure_code,
        message=status.failure_message or ("the bank could not pay" if status.state == "failed" else None),
        finished_at=status.finished_at,
        now=now,
    )


# --------------------------------------------------------------------------- applying a query


def _apply_status(
    engine: Engine, attempt: PaymentAttempt, status: PaymentStatus, settings: Settings, now: dt.datetime
) -> str:
    """Records what a query said about an attempt; returns the outcome (``pending`` when nothing changed)."""
    if status.state == "succeeded":

        def apply(conn: Connection) -> str:
            outcome = service.apply_payment_success(
                conn,
                attempt_ref=attempt.ref,
                amount=status.amount_minor,
                currency=status.currency,
                channel_trade_no=status.channel_trade_no,
                paid_at=status.paid_at,
                settings=settings,
                now=now,
            )
            if outcome == "amount_mismatch":
                _flag_mismatch(conn, attempt.ref, status.amount_minor, status.currency, now)
            return outcome

        return run_in_transaction(engine, apply)
    if status.state in ("closed", "failed"):
        run_in_transaction(engine, lambda conn: service.mark_attempt_closed(conn, ref=attempt.ref, now=now))
        return "closed"
    return "pending"


def verify_with_channel(engine: Engine, *, attempt_ref: str, now: dt.datetime | None = None) -> str:
    """Ask the channel about an attempt and record its answer through the normal path (a query's result).

    What reconciliation uses to supplement (补单) a payment the channel's bill shows and we missed.
    Returns the outcome: ``applied``, ``already_applied``, ``duplicate``, ``amount_mismatch`` (see
    ``service.apply_payment_success``), ``closed``, ``pending``, or ``unknown`` when the channel never
    heard of the attempt (or we did not).
    """
    settings = job_settings()
    now = _now(now)
    attempt = _attempt(engine, attempt_ref)
    if attempt is None:
        return "unknown"
    status = _query(engine, channel_registry.current().adapter(attempt.channel), attempt, settings, now)
    if status is None:
        return "unknown"
    if attempt.state == "succeeded":
        return "already_applied" if status.state == "succeeded" else status.state
    return _apply_status(engine, attempt, status, settings, now)


def verify_refund_with_channel(engine: Engine, *, refund_ref: str) -> str:
    """Ask the channel what became of a refund; returns its state there (``succeeded``, ``processing``,
    ``failed``), ``already_applied`` when it and we both have it succeeded, or ``unknown`` when the
    channel never heard of it (or we did not).

    What reconciliation uses to confirm a refund the channel's bill left out. It
    records nothing: a refund still processing here is finished by its own job.
    """
    found = run_in_transaction(engine, lambda conn: _refund_or_none(conn, refund_ref), readonly=True)
    if found is None:
        return "unknown"
    try:
        status = channel_registry.current().adapter(found.channel).query_refund(found.attempt_ref, found.ref)
    except ChannelRejected:
        return "unknown"
    if status.state == "succeeded" and found.state == "succeeded":
        return "already_applied"
    return status.state


def _refund_or_none(conn: Connection, ref: str) -> Refund | None:
    try:
        return service.get_refund(conn, ref=ref)
    except errors.RefundNotFound:
        return None


def _flag_mismatch(conn: Connection, ref: str, amount: int | None, currency: str | None, now: dt.datetime) -> None:
    """The channel says it took another amount than the attempt's: nothing is booked, and operators must look
    (the attempt carries ``amount_mismatch`` until reconciliation resolves it)."""
    service.flag_attempt(
        conn, ref=ref, code="amount_mismatch", message=f"the channel reports {amount} {currency}", now=now
    )


def _query(
    engine: Engine, adapter: ChannelAdapter, attempt: PaymentAttempt, settings: Settings, now: dt.datetime
) -> PaymentStatus | None:
    """The channel's word on an attempt; None when the channel never heard of it. Unanswered: raises."""
    try:
        status = adapter.query_payment(attempt.ref)
    except ChannelUnavailable as error:
        _record_failure(engine, attempt.channel, error, settings, now)
        raise
    except ChannelRejected as error:
        if _trade_unknown(adapter, error):
            return None
        raise
    routing.record_success(engine, channel=attempt.channel, now=now)
    return status


# --------------------------------------------------------------------------- jobs


def _attempt(engine: Engine, ref: str) -> PaymentAttempt | None:
    return run_in_transaction(engine, lambda conn: service.get_attempt(conn, ref=ref), readonly=True)


@queue.handler(service.JOB_POLL, attempts_max=5)
def poll(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Asks the channel about an open attempt whose notify has not come, then schedules the next query."""
    settings = job_settings()
    registry = channel_registry.current()
    now = _now(now)
    attempt = _attempt(engine, job.payload["attempt"])
    if attempt is None or attempt.state not in ("opening", "open"):
        return
    status = _query(engine, registry.adapter(attempt.channel), attempt, settings, now)
    outcome = "pending" if status is None else _apply_status(engine, attempt, status, settings, now)
    if outcome != "pending":
        return

    def next_round(conn: Connection) -> None:
        order = service.get_order(conn, ref=attempt.order_ref)
        if order.state == "pending":  # once the order closes, ``close_attempt`` has the last word
            service.schedule_poll(
                conn,
                attempt_ref=attempt.ref,
                round_number=int(job.payload["round"]) + 1,
                schedule=settings.payment_poll_schedule_seconds,
                now=now,
            )

    run_in_transaction(engine, next_round)


@queue.handler(service.JOB_EXPIRE)
def expire(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """At an order's expiry: a last query of its live attempts (a payment may be in flight), then close it."""
    settings = job_settings()
    now = _now(now)
    order_ref = job.payload["order"]
    order = run_in_transaction(engine, lambda conn: service.get_order(conn, ref=order_ref), readonly=True)
    if order.state != "pending":
        return
    if now < order.expires_at:
        raise queue.RetryAfter("not expired yet", seconds=(order.expires_at - now).total_seconds())
    attempts = run_in_transaction(engine, lambda conn: service.list_attempts(conn, order=order), readonly=True)
    live = [attempt for attempt in attempts if attempt.state in LIVE_ATTEMPT_STATES]
    if live:
        registry = channel_registry.current()
        for attempt in live:
            try:
                status = _query(engine, registry.adapter(attempt.channel), attempt, settings, now)
            except ChannelError:
                continue  # ``close_attempt`` asks again, and refunds anything paid after the close
            if status is not None and _apply_status(engine, attempt, status, settings, now) in (
                "applied",
                "already_applied",
            ):
                return
    run_in_transaction(
        engine, lambda conn: service.close_order(conn, ref=order_ref, reason="expired", settings=settings, now=now)
    )


@queue.handler(service.JOB_CLOSE_ATTEMPT)
def close_attempt(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Closes an attempt at its channel; a payment that got in first is recorded (and refunded if not needed)."""
    settings = job_settings()
    registry = channel_registry.current()
    now = _now(now)
    attempt = _attempt(engine, job.payload["attempt"])
    if attempt is None or attempt.state not in LIVE_ATTEMPT_STATES:
        return
    adapter = registry.adapter(attempt.channel)
    status = _query(engine, adapter, attempt, settings, now)
    if status is not None and status.state != "pending":
        _apply_status(engine, attempt, status, settings, now)
        return
    if status is not None:
        try:
            adapter.close_payment(attempt.ref)
        except ChannelUnavailable as error:
            _record_failure(engine, attempt.channel, error, settings, now)
            raise
        except ChannelRejected as error:
            # Refused: most likely paid just now. Ask again and record whatever it is.
            again = _query(engine, adapter, attempt, settings, now)
            if again is not None and again.state != "pending":
                _apply_status(engine, attempt, again, settings, now)
                return
            if again is not None:
                raise queue.RetryAfter(f"{attempt.channel} refused to close {attempt.ref}: {error}") from error
    run_in_transaction(engine, lambda conn: service.mark_attempt_closed(conn, ref=attempt.ref, now=now))


@queue.handler(service.JOB_REFUND, attempts_max=20)
def refund(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Asks the channel to refund (idempotent on the refund's ref), then records the answer or asks again later.

    A retry first asks the channel what became of the refund, and submits it
    again only when the channel does not have it as done or in progress.
    """
    settings = job_settings()
    registry = channel_registry.current()
    now = _now(now)
    ref = job.payload["refund"]

    def load(conn: Connection) -> tuple[Refund, PaymentOrder]:
        found = service.get_refund(conn, ref=ref)
        return found, service.get_order(conn, ref=found.order_ref)

    found, order = run_in_transaction(engine, load, readonly=True)
    if found.state != "processing":
        return
    adapter = registry.adapter(found.channel)
    status: RefundStatus | None = None
    try:
        if job.attempts > 1:
            status = _known_refund(adapter, found)
        if status is None:
            status = adapter.refund(
                ChannelRefundRequest(
                    out_trade_no=found.attempt_ref,
                    out_refund_no=found.ref,
                    refund_minor=found.amount,
                    total_minor=order.amount,
                    currency=found.currency,
                    reason=found.reason,
                    notify_url=notify_url(settings, registry, found.channel),
                )
            )
        if status.state == "processing":
            status = adapter.query_refund(found.attempt_ref, found.ref)
    except ChannelUnavailable as error:
        _record_failure(engine, found.channel, error, settings, now)
        raise  # the queue retries; the channel deduplicates on out_refund_no
    except ChannelRejected as error:
        code, message = error.code, str(error)
        run_in_transaction(
            engine,
            lambda conn: service.fail_refund(conn, ref=ref, code=code, message=message, settings=settings, now=now),
        )
        return
    routing.record_success(engine, channel=found.channel, now=now)
    if status.state == "succeeded":
        run_in_transaction(
            engine,
            lambda conn: service.complete_refund(
                conn,
                ref=ref,
                channel_refund_no=status.channel_refund_no,
                refunded_at=status.refunded_at,
                settings=settings,
                now=now,
            ),
        )
    elif status.state == "failed":
        run_in_transaction(
            engine,
            lambda conn: service.fail_refund(
                conn,
                ref=ref,
                code="refund_failed_at_channel",
                message="the channel reports the refund failed",
                settings=settings,
                now=now,
            ),
        )
    else:
        # The channel finishes it later; its notify, or this job's next run, records the result.
        raise queue.RetryAfter(f"refund {ref} is still processing at {found.channel}", seconds=5)


def _known_refund(adapter: ChannelAdapter, found: Refund) -> RefundStatus | None:
    """The channel's refund, if it has it as done or in progress; None when it should be (re)submitted."""
    try:
        status = adapter.query_refund(found.attempt_ref, found.ref)
    except ChannelRejected:
        return None  # the channel does not know it: submit it
    return status if status.state in ("succeeded", "processing") else None


@queue.handler(service.JOB_PAYOUT, attempts_max=30)
def payout(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Asks the bank to pay out (idempotent on the payout's ref), then records the result or asks again later.

    Once the bank has accepted the payout, later runs only query it.
    """
    registry = channel_registry.current()
    settings = job_settings()
    now = _now(now)
    ref = job.payload["payout"]
    found = run_in_transaction(engine, lambda conn: service.get_payout(conn, ref=ref), readonly=True)
    if found.state != "processing":
        return
    adapter: Any = registry.adapter(found.channel)
    try:
        if found.channel_payout_no is not None:
            status = adapter.query_payout(found.ref)
        else:
            status = adapter.create_payout(
                BankPayoutRequest(
                    out_payout_no=found.ref,
                    amount_minor=found.amount,
                    currency=found.currency,
                    payee_account=found.payee_account_number,
                    payee_name=found.payee_account_name,
                    payee_bank=found.payee_bank_code,
                    remark=found.remark,
                    notify_url=notify_url(settings, registry, found.channel, payouts=True),
                )
            )
    except ChannelUnavailable as error:
        _record_failure(engine, found.channel, error, settings, now)
        raise
    except ChannelRejected as error:
        code, message = error.code, str(error)
        run_in_transaction(
            engine,
            lambda conn: service.finish_payout(
                conn, ref=ref, succeeded=False, channel_payout_no=None, code=code, message=message, now=now
            ),
        )
        return
    routing.record_success(engine, channel=found.channel, now=now)
    if status.state == "processing":
        run_in_transaction(
            engine,
            lambda conn: service.set_payout_channel_no(
                conn, ref=ref, channel_payout_no=status.bank_payout_no or found.ref, now=now
            ),
        )
        raise queue.RetryAfter(f"payout {ref} is processing at {found.channel}", seconds=10)
    run_in_transaction(engine, lambda conn: _finish_payout(conn, ref, status, now))
