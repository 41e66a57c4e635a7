"""Periodic maintenance of the ledger and payments, run in rounds by a worker loop.

Each round runs these jobs in order, each in transactions of its own:

1. seal     ``seal_entries`` until a call seals fewer than its limit (at most
            ``BATCHES_PER_ROUND_MAX`` calls): the chain catches up with the journal.
2. fold     ``fold_hot_accounts``: hot accounts' appended deltas into their rows.
3. expire   ``expire_holds`` until a call releases fewer than its limit (same bound).
4. day-end  while the ledger's open date is before today in ``settings.timezone``
            (Asia/Shanghai), ``close_day(open_date)``: a date closes in the first
            round after its midnight, and dates missed while no worker ran close
            one after another, oldest first.
5. accounts ``accounting.sync``: the days just closed (and any not yet booked) become
            vouchers (记账凭证) in the configured mode; a bad chart or rules file fails
            this job only, every round, until it is fixed.
6. payments ``enqueue_due_expiries``: each pending payment order past its
            ``expires_at`` is handed, once, to a ``payments.expire`` job (same bound).
7. nonces   ``prune_nonces``: merchant request nonces too old to be replayed.
8. payouts  ``settlement.sync_batch_states``: each settlement batch still ``paying``
            follows its payout to ``paid`` or ``failed`` (a failed payout's amount is
            carried into the merchant's next batch by the next run).
9. collect  the day's withholding for lending: installment periods due (and overdue ones
            due for another try) and POS-loan periods settlements left unpaid are debited
            under their mandates (``lending.installments.collect_due``, ``lending.pos.collect_due``).
10. accrue  ``lending.service.accrue``: interest of loan periods fallen due and penalty on
            overdue principal, into the ledger (once per business date per worker).
11. mandates ``mandates.expire_due_mandates``: mandates past their end, and requests not
            authorized in time, expire (their open debits fail, their agreements are cancelled).

Where it runs: ``zhangfang jobs run`` (or ``zhangfang worker``) loops in the
foreground until SIGTERM/SIGINT; the API server may run the same loop in a
thread (``start_in_thread``, when ``settings.run_jobs_in_server``). Both go
through ``run_forever_with_queue``, which also runs the job queue: this module
imports every module that registers a job handler (``notify.deliver``), so the
worker claims those kinds. Its lease is ``ZHANGFANG_JOB_LEASE_SECONDS``
(default ``queue.DEFAULT_LEASE_SECONDS``).

Guarantees
- Every job is safe next to writers and next to another worker: sealing locks
  the chain head row, folding moves each delta once, expiry skips holds another
  worker has locked, and day-end is idempotent and closes dates in order.
- A failing job does not stop the other jobs of its round; the round then
  raises an ``ExceptionGroup`` of the failures. ``run_forever`` logs it and
  runs the next round after the interval, so a transient failure heals itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection, Engine

from zhangfang.accounting import chart as accounting_chart
from zhangfang.accounting import sync as accounting_sync
from zhangfang.config import Settings, get_settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import queue
from zhangfang.ledger import service as ledger
from zhangfang.lending import installments, pos
from zhangfang.lending import service as lending
from zhangfang.mandates import flows as mandate_flows  # noqa: F401  (registers the mandates.* handlers)
from zhangfang.mandates import service as mandates
from zhangfang.notify import service as notify_service  # noqa: F401  (registers the notify.deliver handler)
from zhangfang.parties import service as parties
from zhangfang.payments import flows as payment_flows  # noqa: F401  (registers the payments.* handlers)
from zhangfang.payments import service as payments
from zhangfang.settlement import service as settlement

logger = logging.getLogger(__name__)

SEAL_BATCH_SIZE = 5000
EXPIRE_BATCH_SIZE = 1000
# A round does at most this many batches of one job, so a job that cannot catch up with a busy
# ledger in one round (sealing under a sustained load) never starves the jobs after it.
BATCHES_PER_ROUND_MAX = 20

JOB_NAMES = (
    "sealed",
    "folded",
    "expired",
    "days_closed",
    "days_booked",
    "payments_expiring",
    "nonces_pruned",
    "settlements_synced",
    "debits_requested",
    "loans_accrued",
    "mandates_expired",
)
PAYMENT_EXPIRY_BATCH_SIZE = 500


def seal(engine: Engine) -> int:
    """Seal committed entries (up to ``BATCHES_PER_ROUND_MAX`` batches); returns how many."""
    total = 0
    for _ in range(BATCHES_PER_ROUND_MAX):
        count = run_in_transaction(engine, lambda conn: ledger.seal_entries(conn, limit=SEAL_BATCH_SIZE))
        total += count
        if count < SEAL_BATCH_SIZE:
            break
    return total


def fold(engine: Engine) -> int:
    """Fold hot accounts' deltas; returns how many deltas."""
    return run_in_transaction(engine, lambda conn: ledger.fold_hot_accounts(conn))


def expire(engine: Engine, *, now: dt.datetime | None = None) -> int:
    """Release holds past their expiry (up to ``BATCHES_PER_ROUND_MAX`` batches); returns how many."""
    total = 0
    for _ in range(BATCHES_PER_ROUND_MAX):
        count = run_in_transaction(engine, lambda conn: ledger.expire_holds(conn, now=now, limit=EXPIRE_BATCH_SIZE))
        total += count
        if count < EXPIRE_BATCH_SIZE:
            break
    return total


def hand_over_expired_payments(engine: Engine, *, now: dt.datetime | None = None) -> int:
    """Give each pending payment past its expiry to a ``payments.expire`` job (same bound); returns how many."""
    total = 0
    for _ in range(BATCHES_PER_ROUND_MAX):
        count = run_in_transaction(
            engine, lambda conn: payments.enqueue_due_expiries(conn, now=now, limit=PAYMENT_EXPIRY_BATCH_SIZE)
        )
        total += count
        if count < PAYMENT_EXPIRY_BATCH_SIZE:
            break
    return total


def prune_nonces(engine: Engine, *, now: dt.datetime | None = None) -> int:
    """Forget merchant request nonces too old to be replayed (``parties.NONCE_RETENTION_SECONDS``)."""
    before = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=parties.NONCE_RETENTION_SECONDS)
    return run_in_transaction(engine, lambda conn: parties.prune_nonces(conn, before=before))


def close_past_days(engine: Engine, *, today: dt.date, wait_seconds_max: float) -> list[dt.date]:
    """Close the open date while it is before ``today``; returns the dates closed, in order."""
    closed: list[dt.date] = []
    while True:
        current = run_in_transaction(engine, lambda conn: ledger.open_date(conn), readonly=True)
        if current >= today:
            return closed
        ledger.close_day(engine, accounting_date=current, wait_seconds_max=wait_seconds_max)
        closed.append(current)
        following = run_in_transaction(engine, lambda conn: ledger.open_date(conn), readonly=True)
        assert following > current, f"closing {current} left the open date at {following}"


def book_closed_days(engine: Engine, settings: Settings) -> int:
    """Book the ledger days closed since the last sync into vouchers; returns how many days."""
    # Most rounds find nothing to book: ask first, so the chart and rules files are read only when needed.
    if not run_in_transaction(engine, lambda conn: accounting_sync.days_to_sync(conn), readonly=True):
        return 0
    chart, posting_rules = accounting_chart.configured(settings)
    result = accounting_sync.sync(engine, chart=chart, posting_rules=posting_rules, mode=settings.accounting_sync_mode)
    for day in result.days:
        logger.info(
            "accounting: booked %s (%d entries, %d vouchers, %d exceptions)",
            day.accounting_date.isoformat(),
            day.entry_count,
            day.voucher_count,
            day.exception_count,
        )
    return len(result.days)


def sync_settlement_batches(engine: Engine, *, now: dt.datetime | None = None) -> int:
    """Settlement batches paying out follow their payouts; returns how many changed state."""
    return run_in_transaction(engine, lambda conn: settlement.sync_batch_states(conn, now=now))


def request_due_debits(engine: Engine, *, today: dt.date, now: dt.datetime | None = None) -> int:
    """Installment and POS-loan periods due by ``today`` debited under their mandates; returns how many."""

    def work(conn: Connection) -> int:
        return installments.collect_due(conn, today=today, now=now) + pos.collect_due(conn, today=today, now=now)

    return run_in_transaction(engine, work)


_accrued_through: dict[str, dt.date] = {}


def accrue_loans(engine: Engine, *, today: dt.date, now: dt.datetime | None = None) -> int:
    """Loans' interest and penalty recognised through ``today``, once per business date in this process."""
    url = engine.url.render_as_string(hide_password=True)
    if _accrued_through.get(url) == today:
        return 0
    touched = run_in_transaction(engine, lambda conn: lending.accrue(conn, as_of=today, now=now))
    _accrued_through[url] = today
    return touched


def business_today(settings: Settings, now: dt.datetime | None = None) -> dt.date:
    """Today's date in the business time zone (Asia/Shanghai)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(settings.timezone)).date()


def run_round(
    engine: Engine,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, int]:
    """Run every job once; returns what each did: ``sealed``, ``folded``, ``expired``, ``days_closed``.

    ``now`` (default: the clock) decides which holds have expired and, unless
    ``today`` is given, today's business date.
    """
    settings = settings or get_settings()
    today = today or business_today(settings, now)
    wait_seconds_max = settings.transaction_age_max_seconds
    jobs: dict[str, Callable[[], int]] = {
        "sealed": lambda: seal(engine),
        "folded": lambda: fold(engine),
        "expired": lambda: expire(engine, now=now),
        "days_closed": lambda: _close_and_log(engine, today, wait_seconds_max),
        "days_booked": lambda: book_closed_days(engine, settings),
        "payments_expiring": lambda: hand_over_expired_payments(engine, now=now),
        "nonces_pruned": lambda: prune_nonces(engine, now=now),
        "settlements_synced": lambda: sync_settlement_batches(engine, now=now),
        "debits_requested": lambda: request_due_debits(engine, today=today, now=now),
        "loans_accrued": lambda: accrue_loans(engine, today=today, now=now),
        "mandates_expired": lambda: run_in_transaction(
            engine, lambda conn: mandates.expire_due_mandates(conn, settings=settings, now=now)
        ),
    }
    counts = dict.fromkeys(JOB_NAMES, 0)
    failures: list[Exception] = []
    for name, job in jobs.items():
        try:
            counts[name] = job()
        except Exception as error:
            error.add_note(f"periodic job {name!r} failed")
            failures.append(error)
    if failures:
        raise ExceptionGroup(f"{len(failures)} periodic job(s) failed; the others ran", failures)
    return counts


def _close_and_log(engine: Engine, today: dt.date, wait_seconds_max: float) -> int:
    closed = close_past_days(engine, today=today, wait_seconds_max=wait_seconds_max)
    for day in closed:
        logger.info("day-end: closed accounting date %s", day.isoformat())
    return len(closed)


def run_forever(
    engine: Engine,
    *,
    interval_seconds: float,
    stop_event: threading.Event,
    settings: Settings | None = None,
) -> None:
    """Run rounds until ``stop_event`` is set, pausing ``interval_seconds`` between them; never dies of a job."""
    settings = settings or get_settings()
    logger.info("periodic ledger jobs: running every %ss", interval_seconds)
    while not stop_event.is_set():
        try:
            counts = run_round(engine, settings=settings)
        except Exception:
            logger.exception("periodic ledger jobs: a round failed; retrying after the interval")
        else:
            if any(counts.values()):
                logger.info("periodic ledger jobs: %s", counts)
        stop_event.wait(interval_seconds)
    logger.info("periodic ledger jobs: stopped")


def run_forever_with_queue(
    engine: Engine, *, interval_seconds: float, stop_event: threading.Event, settings: Settings | None = None
) -> None:
    """``run_forever``, with a job-queue worker (``queue.run_forever``) beside it that stops with it."""
    lease_seconds = (settings or get_settings()).job_lease_seconds
    queue_thread = queue.start_in_thread(
        engine, stop_event=stop_event, poll_seconds=interval_seconds, lease_seconds=lease_seconds
    )
    try:
        run_forever(engine, interval_seconds=interval_seconds, stop_event=stop_event, settings=settings)
    finally:
        stop_event.set()  # the queue worker finishes the job it is running, then stops too
        queue_thread.join()


def start_in_thread(engine: Engine, settings: Settings) -> tuple[threading.Thread, threading.Event]:
    """Run the loop in a daemon thread (inside the API server); set the event and join the thread to stop."""
    stop_event = threading.Event()
    thread = threading.Thread(
        target=run_forever_with_queue,
        kwargs={
            "engine": engine,
            "interval_seconds": settings.job_interval_seconds,
            "stop_event": stop_event,
            "settings": settings,
        },
        name="zhangfang-periodic-jobs",
        daemon=True,
    )
    thread.start()
    return thread, stop_event
