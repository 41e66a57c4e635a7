"""Where mandates meet the bank and the payer's phone: signing, cancelling, debiting, and their jobs.

Every call to the bank and every text message happens here, outside any
database transaction; what came back is recorded through ``service`` in short
transactions of its own (``run_in_transaction`` retries transient conflicts).

Guarantees
- A one-time code leaves only by text message to the mandate's phone, after
  the transaction that stored its hash committed; it is never written in clear
  to the database or a job.
- Bank calls are idempotent at the bank: signing on the mandate's ref
  (``out_sign_no``), debiting on the attempt's ref (``out_trade_no``). A job
  run twice, or a call whose answer was lost and is made again, never signs two
  agreements or debits twice.
- A bank that does not answer a debit (``ChannelUnavailable``) is a soft
  failure (``channel_timeout``) whose next try asks with the same
  ``out_trade_no``; a refusal is classified by the bank's code
  (``insufficient_funds`` soft; ``account_closed``, ``agreement_invalid`` and
  any other refusal hard).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy.engine import Connection, Engine

from zhangfang.channels import registry as channel_registry
from zhangfang.channels.bank_direct import SignRequest, WithholdRequest
from zhangfang.channels.protocol import ChannelRejected, ChannelUnavailable
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import queue
from zhangfang.jobs.models import Job
from zhangfang.mandates import service
from zhangfang.mandates.models import Mandate, MandateRequest, MandateResult
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant
from zhangfang.payments import flows as payment_flows
from zhangfang.sandbox import sms

logger = logging.getLogger(__name__)

# The bank's refusals we act on by name; any other refusal of a debit is a hard ``bank_refused``.
DEBIT_REFUSALS = frozenset({"insufficient_funds", "account_closed", "agreement_invalid"})


def _now(now: dt.datetime | None = None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else now.astimezone(dt.UTC)


def job_settings() -> Settings:
    """The settings jobs run with: the process's installed ones (``payments.flows.install_settings``)."""
    return payment_flows.job_settings()


def sms_gateway(settings: Settings) -> sms.SandboxSmsGateway:
    """Where codes are texted: the sandbox gateway (kept in ``ZHANGFANG_SANDBOX_DIR`` when the sandbox is on)."""
    return sms.current(settings.sandbox_dir if settings.sandbox else None)


def _bank(registry: ChannelRegistry, channel: str) -> Any:
    return registry.adapter(channel)


# --------------------------------------------------------------------------- requesting and authorizing


def send_code(
    engine: Engine, *, mandate: Mandate, code: str, settings: Settings, now: dt.datetime | None = None
) -> None:
    """Texts the one-time code to the mandate's phone."""
    merchant = run_in_transaction(
        engine, lambda conn: parties.find_merchant_by_id(conn, merchant_id=mandate.merchant_id), readonly=True
    )
    name = merchant.name if merchant is not None else mandate.merchant_ref
    sms_gateway(settings).send(phone=mandate.phone, text=service.code_message(mandate, code, name, settings), now=now)


def request_mandate(
    engine: Engine,
    *,
    merchant: Merchant,
    request: MandateRequest,
    registry: ChannelRegistry | None,
    settings: Settings,
    now: dt.datetime | None = None,
) -> MandateResult:
    """``service.create_mandate`` in its own transaction, then the code texted to the payer."""
    now = _now(now)
    result = run_in_transaction(
        engine,
        lambda conn: service.create_mandate(
            conn, merchant=merchant, request=request, registry=registry, settings=settings, now=now
        ),
    )
    if result.code is not None:
        send_code(engine, mandate=result.mandate, code=result.code, settings=settings, now=now)
    return result


def resend_code(
    engine: Engine, *, ref: str, merchant_id: int | None, settings: Settings, now: dt.datetime | None = None
) -> Mandate:
    """A new code for a mandate awaiting authorization, texted to its phone; the earlier code stops working."""
    now = _now(now)
    mandate, code = run_in_transaction(
        engine,
        lambda conn: service.issue_code(conn, ref=ref, merchant_id=merchant_id, settings=settings, now=now),
    )
    send_code(engine, mandate=mandate, code=code, settings=settings, now=now)
    return mandate


def confirm(
    engine: Engine,
    *,
    ref: str,
    code: Any,
    merchant_id: int | None,
    registry: ChannelRegistry,
    settings: Settings,
    now: dt.datetime | None = None,
) -> Mandate:
    """The payer's code: checked (a wrong one is counted, then refused), then the bank signs the agreement.

    Returns the mandate: ``active`` when the bank signed, ``failed`` when it
    refused, still ``pending_authorization`` (authorized) when it did not
    answer — the ``mandates.sign`` job then signs it. Confirming an authorized
    mandate again returns it as it is.
    """
    now = _now(now)
    mandate, refusal = run_in_transaction(
        engine,
        lambda conn: service.check_code(conn, ref=ref, code=code, merchant_id=merchant_id, settings=settings, now=now),
    )
    if refusal is not None:
        raise refusal
    if mandate.state != "pending_authorization":
        return mandate
    try:
        return sign(engine, ref=ref, registry=registry, now=now)
    except ChannelUnavailable as error:
        logger.warning("mandates: %s did not answer signing %s: %s; the sign job retries", mandate.channel, ref, error)
        return run_in_transaction(engine, lambda conn: service.get_mandate(conn, ref=ref), readonly=True)


def sign(engine: Engine, *, ref: str, registry: ChannelRegistry, now: dt.datetime | None = None) -> Mandate:
    """Signs an authorized mandate at its bank and records the answer; ``ChannelUnavailable`` when unanswered."""
    now = _now(now)
    mandate = run_in_transaction(engine, lambda conn: service.get_mandate(conn, ref=ref), readonly=True)
    if mandate.state != "pending_authorization" or mandate.authorized_at is None:
        return mandate
    adapter = _bank(registry, mandate.channel)
    try:
        status = adapter.sign_agreement(
            SignRequest(
                out_sign_no=mandate.ref,
                account_number=mandate.account_number,
                account_name=mandate.account_name,
                phone=mandate.phone,
            )
        )
    except ChannelRejected as error:
        name, message = adapter.profile.error_name(error.code) or "bank_refused", str(error)
        run_in_transaction(
            engine, lambda conn: service.fail_mandate(conn, ref=ref, code=name, message=message, now=now)
        )
    else:
        run_in_transaction(
            engine, lambda conn: service.activate_mandate(conn, ref=ref, agreement_no=status.agreement_no, now=now)
        )
    return run_in_transaction(engine, lambda conn: service.get_mandate(conn, ref=ref), readonly=True)


# --------------------------------------------------------------------------- debiting


def execute_debit(
    engine: Engine,
    *,
    ref: str,
    registry: ChannelRegistry,
    settings: Settings,
    now: dt.datetime | None = None,
) -> str:
    """One try of a debit at the bank, recorded; returns the debit's state after it (or ``not_due``)."""
    now = _now(now)
    debit = run_in_transaction(engine, lambda conn: service.get_debit(conn, ref=ref), readonly=True)
    if debit.is_final:
        return debit.state
    if debit.state == "retrying" and debit.next_try_at is not None and now < debit.next_try_at:
        return "not_due"
    plan = run_in_transaction(engine, lambda conn: service.begin_try(conn, ref=ref, settings=settings, now=now))
    if plan is None:
        return run_in_transaction(engine, lambda conn: service.get_debit(conn, ref=ref), readonly=True).state
    adapter = _bank(registry, plan.channel)
    request = WithholdRequest(
        out_trade_no=plan.attempt_ref,
        agreement_no=plan.agreement_no,
        amount_minor=plan.amount,
        currency=plan.currency,
        subject=plan.subject,
    )

    def failed(reason: str, message: str) -> str:
        return run_in_transaction(
            engine,
            lambda conn: service.record_failure(
                conn, ref=ref, attempt_ref=plan.attempt_ref, reason=reason, message=message, settings=settings, now=now
            ),
        )

    try:
        status = adapter.withhold(request)
    except ChannelUnavailable as error:
        return failed("channel_timeout", f"{plan.channel} did not answer: {error}")
    except ChannelRejected as error:
        name = adapter.profile.error_name(error.code)
        return failed(name if name in DEBIT_REFUSALS else "bank_refused", str(error))
    if status.state != "succeeded":
        return failed("bank_refused", f"{plan.channel} answered the debit {status.state}")

    def succeeded(conn: Connection) -> str:
        service.record_success(
            conn,
            ref=ref,
            attempt_ref=plan.attempt_ref,
            amount=status.amount_minor,
            currency=status.currency,
            channel_trade_no=status.channel_trade_no,
            paid_at=status.paid_at,
            settings=settings,
            now=now,
        )
        return service.get_debit(conn, ref=ref).state

    return run_in_transaction(engine, succeeded)


# --------------------------------------------------------------------------- jobs


@queue.handler(service.JOB_SIGN, attempts_max=20)
def sign_job(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Signs an authorized mandate at its bank (when the confirmation could not); retried while unanswered."""
    sign(engine, ref=job.payload["mandate"], registry=channel_registry.current(), now=_now(now))


@queue.handler(service.JOB_UNSIGN, attempts_max=20)
def unsign_job(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Cancels a revoked or expired mandate's agreement at its bank; retried while unanswered."""
    ref = job.payload["mandate"]
    mandate = run_in_transaction(engine, lambda conn: service.get_mandate(conn, ref=ref), readonly=True)
    if mandate.agreement_no is None or mandate.state in ("active", "suspended", "pending_authorization"):
        return
    adapter = _bank(channel_registry.current(), mandate.channel)
    try:
        adapter.cancel_agreement(mandate.agreement_no)
    except ChannelRejected as error:
        if adapter.profile.error_name(error.code) != "agreement_invalid":
            raise queue.PermanentFailure(
                f"{mandate.channel} refused to cancel {mandate.agreement_no}: {error}"
            ) from error


@queue.handler(service.JOB_DEBIT, attempts_max=20)
def debit_job(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """One try of a debit; a soft failure schedules the next try as a new job (``record_failure``)."""
    now = _now(now)
    outcome = execute_debit(
        engine, ref=job.payload["debit"], registry=channel_registry.current(), settings=job_settings(), now=now
    )
    if outcome == "not_due":
        debit = run_in_transaction(
            engine, lambda conn: service.get_debit(conn, ref=job.payload["debit"]), readonly=True
        )
        assert debit.next_try_at is not None
        raise queue.RetryAfter("not due yet", seconds=(debit.next_try_at - now).total_seconds())


@queue.handler(service.JOB_BATCH, attempts_max=20)
def batch_job(engine: Engine, job: Job, *, now: dt.datetime | None = None) -> None:
    """Turns a batch file's rows into debits, one row per transaction (``batch.submit_rows``)."""
    from zhangfang.mandates import batch  # batch imports this module's neighbours; import late

    batch.submit_rows(engine, batch_ref=job.payload["batch"], settings=job_settings(), now=_now(now))
