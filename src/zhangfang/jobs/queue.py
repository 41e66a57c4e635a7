"""The durable job queue: the outbox side effects leave through (DESIGN.md, principle 4).

A domain writes its state change and ``enqueue``s the side effect (a merchant
webhook, a channel query, a voucher to post) on the same connection, in the
same transaction: both commit or neither does. Workers (``run_forever``, run by
``zhangfang worker``) claim due jobs, run each kind's registered handler, and
record the outcome; a failure is retried later on the handler's schedule.

Guarantees
- Nothing is lost: a committed job is eventually run, or ends ``dead``/``failed``
  where an operator sees it (``stats``, ``list_jobs``) and can ``replay`` it.
- One holder at a time: ``claim`` locks the rows it takes (``FOR UPDATE SKIP
  LOCKED`` on PostgreSQL, so workers on several machines skip each other's rows
  instead of queueing; the write lock that ``BEGIN IMMEDIATE`` takes on SQLite)
  and leases them to one worker. ``complete``, ``fail`` and ``release`` change a
  job only while it still carries that worker's id and attempt number
  (compare-and-set), so a worker that lost its lease cannot overwrite the
  outcome of the worker that took over.
- Delivery is AT LEAST ONCE. A handler may run twice for one job: when a worker
  dies (or stalls past its lease) after the handler did its work and before
  ``complete`` is recorded, the lease runs out and another worker runs the job
  again. Handlers must therefore be idempotent: carry ``job.ref`` (or the
  dedupe key) as the idempotency key of whatever they call, or check whether
  the effect already happened. A crash never runs a job *zero* times.
- A lost worker costs an attempt: the claim that ran out counts, and a job
  whose last attempt ran out its lease is dead-lettered rather than claimed
  again, so a job that kills its worker cannot kill every worker in turn.

Retries: after a failed attempt ``n`` the job waits ``retry_schedule_seconds[n-1]``
(the last entry repeats), stretched or shrunk by up to ``jitter_ratio`` at random
so that jobs failing together do not retry together. The default schedule is
10 s, 30 s, 1 min, 5 min, 15 min, 1 h, then 1 h until ``attempts_max`` (12) claims
were made; a failure on the last attempt makes the job ``dead``. A handler that
knows retrying is pointless raises ``PermanentFailure``: the job is ``failed`` at
once; one whose callee named a time to come back (HTTP ``Retry-After``) raises
``RetryAfter``: the retry waits that long or the schedule's delay, whichever is longer.
``replay`` puts a ``dead`` or ``failed`` job back to ``pending`` with its
attempts at zero.

Leases: a claim leases its jobs for ``lease_seconds``. Pick it longer than the
slowest handler times the batch size (``limit``), plus the clock skew between
machines (times come from each worker's clock; keep them NTP-synced). A claimed
job whose lease ran out before its turn in the batch is released, not run.

Functions taking a ``Connection`` run inside the caller's transaction and never
commit. Functions taking an ``Engine`` (``claim``, ``complete``, ``fail``,
``release``, ``run_once``, ``run_forever``) run their own short transactions;
handlers run outside any of them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import secrets
import socket
import threading
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from zhangfang import ids
from zhangfang.db.sql import Prepared, insert_ignoring_conflict_in
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import errors
from zhangfang.jobs.models import FINAL_STATES, JOB_STATES, Job, Page
from zhangfang.jobs.tables import DUE_STATES_SQL, jobs

__all__ = [
    "DEFAULT_ATTEMPTS_MAX",
    "DEFAULT_RETRY_SCHEDULE_SECONDS",
    "Handler",
    "PermanentFailure",
    "RetryAfter",
    "claim",
    "complete",
    "default_worker_id",
    "enqueue",
    "fail",
    "get_handler",
    "get_job",
    "handler",
    "list_jobs",
    "registered_kinds",
    "release",
    "replay",
    "run_forever",
    "run_once",
    "start_in_thread",
    "stats",
]

logger = logging.getLogger(__name__)

DEFAULT_RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (10, 30, 60, 300, 900, 3600)
DEFAULT_ATTEMPTS_MAX = 12
DEFAULT_JITTER_RATIO = 0.2
DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_BATCH_SIZE = 10
ATTEMPTS_MAX_LIMIT = 100
KIND_LENGTH_MAX = 64
DEDUPE_KEY_LENGTH_MAX = 200
PAYLOAD_BYTES_MAX = 64 * 1024
WORKER_ID_LENGTH_MAX = 100
ERROR_LENGTH_MAX = 2000
PAGE_LIMIT_MAX = 500
LEASE_RAN_OUT_ON_LAST_ATTEMPT = "lease ran out on the last attempt (the worker died or outran its lease)"

_KIND = re.compile(rf"[a-z0-9][a-z0-9_.\-]{{0,{KIND_LENGTH_MAX - 1}}}")

HandlerFn = Callable[[Engine, Job], None]
F = TypeVar("F", bound=HandlerFn)


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help (the job ends ``failed`` at once, replayable)."""


class RetryAfter(Exception):
    """Raised by a handler whose attempt failed and must not be retried before ``seconds`` from now."""

    def __init__(self, message: str, *, seconds: float = 0.0) -> None:
        super().__init__(message)
        if not seconds >= 0:
            raise ValueError(f"seconds must be non-negative, got {seconds!r}")
        self.seconds = float(seconds)  # seconds, not money


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Handler:
    """A kind's handler and how its jobs are retried."""

    kind: str
    fn: HandlerFn
    attempts_max: int = DEFAULT_ATTEMPTS_MAX
    retry_schedule_seconds: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_SECONDS
    jitter_ratio: float = DEFAULT_JITTER_RATIO

    def retry_delay_seconds(self, attempts: int) -> float:
        """Seconds to wait after failed attempt number ``attempts`` (1-based), jitter included."""
        assert attempts >= 1, attempts
        base = self.retry_schedule_seconds[min(attempts, len(self.retry_schedule_seconds)) - 1]
        return base * (1 + self.jitter_ratio * random.uniform(-1, 1))


_registry: dict[str, Handler] = {}
_registry_lock = threading.Lock()


def handler(
    kind: str,
    *,
    attempts_max: int = DEFAULT_ATTEMPTS_MAX,
    retry_schedule_seconds: Sequence[float] = DEFAULT_RETRY_SCHEDULE_SECONDS,
    jitter_ratio: float = DEFAULT_JITTER_RATIO,
) -> Callable[[F], F]:
    """Register the decorated ``fn(engine, job) -> None`` as the handler of ``kind``.

    The handler runs outside any transaction and opens its own; returning means
    success, raising means the attempt failed (``PermanentFailure``: do not retry).
    It must be idempotent (see the module docstring). Registering the same
    function again (a module imported twice) is harmless; a different function
    for a registered kind is a programming error (``ValueError``).
    """
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"job kind must match {_KIND.pattern}, got {kind!r}")
    if isinstance(attempts_max, bool) or not isinstance(attempts_max, int):
        raise ValueError(f"attempts_max must be an integer, got {attempts_max!r}")
    if not 1 <= attempts_max <= ATTEMPTS_MAX_LIMIT:
        raise ValueError(f"attempts_max must be from 1 to {ATTEMPTS_MAX_LIMIT}, got {attempts_max}")
    schedule = tuple(float(seconds) for seconds in retry_schedule_seconds)  # seconds, not money
    if not schedule or any(not seconds >= 0 for seconds in schedule):
        raise ValueError(f"retry_schedule_seconds must be non-negative and not empty, got {retry_schedule_seconds!r}")
    if not 0 <= jitter_ratio < 1:
        raise ValueError(f"jitter_ratio must be from 0 to below 1, got {jitter_ratio!r}")

    def register(fn: F) -> F:
        entry = Handler(kind, fn, attempts_max, schedule, jitter_ratio)
        with _registry_lock:
            existing = _registry.get(kind)
            if existing is not None and _qualified_name(existing.fn) != _qualified_name(fn):
                raise ValueError(f"job kind {kind!r} is already handled by {_qualified_name(existing.fn)}")
            _registry[kind] = entry
        return fn

    return register


def _qualified_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def get_handler(kind: str) -> Handler | None:
    """Returns the handler registered for ``kind``, or None."""
    return _registry.get(kind)


def registered_kinds() -> frozenset[str]:
    """Returns every kind with a registered handler in this process."""
    return frozenset(_registry)


# --------------------------------------------------------------------------- validation


def _check_kind(kind: Any) -> Handler:
    entry = _registry.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise errors.JobKindUnknown(f"no handler is registered for job kind {kind!r}", field="kind")
    return entry


def _check_payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise errors.JobPayloadInvalid("payload must be a JSON object", field="payload")
    payload = dict(payload)
    try:
        encoded = json.dumps(payload, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise errors.JobPayloadInvalid(f"payload is not plain JSON: {exc}", field="payload") from exc
    if json.loads(encoded) != payload:
        # json.dumps quietly turns tuples into lists and 1 into "1" as a key: refuse what would not read back.
        raise errors.JobPayloadInvalid(
            "payload must be plain JSON: string keys; dict, list, str, int, float, bool or None values",
            field="payload",
        )
    if len(encoded.encode()) > PAYLOAD_BYTES_MAX:
        raise errors.JobPayloadInvalid(f"payload exceeds {PAYLOAD_BYTES_MAX} bytes", field="payload")
    return payload


def _check_dedupe_key(key: Any) -> str | None:
    if key is None:
        return None
    if (
        not isinstance(key, str)
        or not 1 <= len(key) <= DEDUPE_KEY_LENGTH_MAX
        or not key.isascii()
        or not key.isprintable()
    ):
        raise errors.JobDedupeKeyInvalid(
            f"dedupe_key must be 1 to {DEDUPE_KEY_LENGTH_MAX} printable ASCII characters", field="dedupe_key"
        )
    return key


def _utc_time(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise errors.TimeZoneMissing(f"{field} must be a time with a time zone", field=field)
    return value.astimezone(dt.UTC)


def _now(now: dt.datetime | None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else _utc_time(now, "now")


def _check_attempts_max(attempts_max: Any, default: int) -> int:
    if attempts_max is None:
        return default
    if isinstance(attempts_max, bool) or not isinstance(attempts_max, int):
        raise errors.JobAttemptsMaxInvalid("attempts_max must be an integer", field="attempts_max")
    if not 1 <= attempts_max <= ATTEMPTS_MAX_LIMIT:
        raise errors.JobAttemptsMaxInvalid(f"attempts_max must be from 1 to {ATTEMPTS_MAX_LIMIT}", field="attempts_max")
    return attempts_max


def _check_worker_id(worker_id: Any) -> str:
    # Worker ids come from our own code (``default_worker_id``), so a bad one is a bug, not input.
    if not isinstance(worker_id, str) or not 1 <= len(worker_id) <= WORKER_ID_LENGTH_MAX:
        raise ValueError(f"worker_id must be 1 to {WORKER_ID_LENGTH_MAX} characters, got {worker_id!r}")
    return worker_id


# --------------------------------------------------------------------------- enqueue

# Built once (``db.sql.Prepared``): every payment order enqueues a job.
_INSERT_JOB = jobs.insert().returning(*jobs.c)
_INSERT_JOB_ONCE = Prepared(
    lambda dialect: insert_ignoring_conflict_in(dialect, jobs, ["dedupe_key"]).returning(*jobs.c)
)


def enqueue(
    conn: Connection,
    *,
    kind: str,
    payload: Mapping[str, Any],
    run_at: dt.datetime | None = None,
    dedupe_key: str | None = None,
    attempts_max: int | None = None,
    now: dt.datetime | None = None,
) -> Job:
    """Write a job in the caller's transaction; returns it (or, for a known ``dedupe_key``, the first job).

    The job runs at ``run_at`` (default: now) or later, after the caller commits.
    Same ``dedupe_key`` with the same kind and payload returns the existing job
    whatever its state (``run_at`` and ``attempts_max`` of the repeat are
    ignored); with a different kind or payload it raises ``JobKeyConflict``.
    Refusals (see ``zhangfang.jobs.errors`` for their order) write nothing.
    """
    entry = _check_kind(kind)
    payload = _check_payload(payload)
    dedupe_key = _check_dedupe_key(dedupe_key)
    now = _now(now)
    run_at = now if run_at is None else _utc_time(run_at, "run_at")
    attempts_max = _check_attempts_max(attempts_max, entry.attempts_max)

    values = {
        "ref": ids.new_id("job"),
        "kind": kind,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "state": "pending",
        "attempts": 0,
        "attempts_max": attempts_max,
        "run_at": run_at,
        "created_at": now,
    }
    if dedupe_key is None:
        row = conn.execute(_INSERT_JOB, values).one()
        return _job_from_row(row)
    # Insert first (a new key, the common case, costs one statement); on conflict — a repeat, or a concurrent
    # transaction that inserted the same key (PostgreSQL waits for it to end) — read back the job it names.
    row = conn.execute(_INSERT_JOB_ONCE(conn), values).first()
    if row is not None:
        return _job_from_row(row)
    existing = _find_by_dedupe_key(conn, dedupe_key)
    assert existing is not None, f"dedupe key {dedupe_key!r} conflicted but no job carries it"
    return _same_or_conflict(existing, kind=kind, payload=payload)


def _find_by_dedupe_key(conn: Connection, dedupe_key: str) -> Job | None:
    row = conn.execute(sa.select(jobs).where(jobs.c.dedupe_key == dedupe_key)).first()
    return None if row is None else _job_from_row(row)


def _same_or_conflict(existing: Job, *, kind: str, payload: dict[str, Any]) -> Job:
    if existing.kind != kind or existing.payload != payload:
        raise errors.JobKeyConflict(
            "a job with this dedupe key was enqueued with a different kind or payload",
            field="dedupe_key",
            dedupe_key=existing.dedupe_key,
            ref=existing.ref,
        )
    return existing


# --------------------------------------------------------------------------- claim and outcomes


def claim(
    engine: Engine,
    *,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    now: dt.datetime | None = None,
    kinds: Collection[str] | None = None,
) -> list[Job]:
    """Lease up to ``limit`` due jobs to ``worker_id``, in its own transaction; returns them by ``run_at``.

    Due: ``pending`` with ``run_at <= now``, or ``running`` with a lease that ran
    out (a crashed worker's job). Each claimed job becomes ``running``, leased
    until ``now + lease_seconds``, with one more attempt. A running job whose
    lease ran out on its last attempt is dead-lettered instead. Only ``kinds``
    (default: every kind registered in this process) are claimed, so a worker
    never takes a job it has no handler for. On PostgreSQL, ``FOR UPDATE SKIP
    LOCKED`` lets concurrent claims take disjoint jobs without waiting; on
    SQLite the transaction's write lock serializes them.
    """
    worker_id = _check_worker_id(worker_id)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    kinds = registered_kinds() if kinds is None else frozenset(kinds)
    unknown = kinds - registered_kinds()
    if unknown:
        raise ValueError(f"no handler registered for {sorted(unknown)}; this worker could not run them")
    if not kinds:
        return []

    def work(conn: Connection) -> list[Job]:
        at = _now(now)
        return _claim(
            conn, worker_id=worker_id, limit=limit, now=at, lease_until=at + _seconds(lease_seconds), kinds=kinds
        )

    return run_in_transaction(engine, work)


def _claim(
    conn: Connection, *, worker_id: str, limit: int, now: dt.datetime, lease_until: dt.datetime, kinds: frozenset[str]
) -> list[Job]:
    due = (
        sa.select(jobs.c.id, jobs.c.state, jobs.c.attempts, jobs.c.attempts_max)
        .where(sa.text(DUE_STATES_SQL), jobs.c.run_at <= now, jobs.c.kind.in_(sorted(kinds)))
        .order_by(jobs.c.run_at, jobs.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = conn.execute(due).all()
    exhausted = [row.id for row in rows if row.state == "running" and row.attempts >= row.attempts_max]
    if exhausted:
        conn.execute(
            jobs.update()
            .where(jobs.c.id.in_(exhausted))
            .values(
                state="dead",
                locked_by=None,
                locked_until=None,
                finished_at=now,
                last_error=LEASE_RAN_OUT_ON_LAST_ATTEMPT,
            )
        )
        logger.error("jobs: %d job(s) dead-lettered: %s", len(exhausted), LEASE_RAN_OUT_ON_LAST_ATTEMPT)
    taken = [row.id for row in rows if row.id not in exhausted]
    if not taken:
        return []
    claimed = conn.execute(
        jobs.update()
        .where(jobs.c.id.in_(taken))
        .values(
            state="running",
            attempts=jobs.c.attempts + 1,
            locked_by=worker_id,
            locked_until=lease_until,
            run_at=lease_until,
        )
        .returning(*jobs.c)
    ).all()
    by_id = {row.id: _job_from_row(row) for row in claimed}
    assert len(by_id) == len(taken), f"locked {len(taken)} jobs but updated {len(by_id)}"
    return [by_id[job_id] for job_id in taken]


def complete(engine: Engine, *, job: Job, worker_id: str, now: dt.datetime | None = None) -> Job | None:
    """Record that ``worker_id`` ran ``job`` successfully; returns the ``succeeded`` job.

    Returns None, changing nothing, when the job is no longer this worker's
    claim (its lease ran out and another worker took it over): the other
    worker's outcome stands. A worker whose lease ran out while nobody took the
    job yet still completes it.
    """

    def work(conn: Connection) -> Job | None:
        return _finish_claim(
            conn,
            job=job,
            worker_id=worker_id,
            values={"state": "succeeded", "locked_by": None, "locked_until": None, "finished_at": _now(now)},
        )

    return run_in_transaction(engine, work)


def fail(
    engine: Engine,
    *,
    job: Job,
    worker_id: str,
    error: BaseException | str,
    now: dt.datetime | None = None,
    permanent: bool = False,
) -> Job | None:
    """Record that ``job``'s attempt failed with ``error``; returns the job, retried (``pending``) or final.

    A retry waits the handler's ``retry_delay_seconds`` for this attempt, or a
    ``RetryAfter`` error's ``seconds`` if longer. After the last attempt
    (``attempts == attempts_max``) the job is ``dead``; with ``permanent`` it
    is ``failed`` at once. ``last_error`` keeps the error,
    truncated to 2000 characters. Returns None, changing nothing, when the job
    is no longer this worker's claim (as ``complete``).
    """
    message = _error_text(error)

    def work(conn: Connection) -> Job | None:
        at = _now(now)
        values: dict[str, Any] = {"locked_by": None, "locked_until": None, "last_error": message}
        if permanent:
            values.update(state="failed", finished_at=at)
        elif job.attempts >= job.attempts_max:
            values.update(state="dead", finished_at=at)
        else:
            entry = get_handler(job.kind) or _DEFAULT_HANDLER
            delay_seconds = entry.retry_delay_seconds(job.attempts)
            if isinstance(error, RetryAfter):
                delay_seconds = max(delay_seconds, error.seconds)
            values.update(state="pending", run_at=at + _seconds(delay_seconds))
        return _finish_claim(conn, job=job, worker_id=worker_id, values=values)

    return run_in_transaction(engine, work)


def release(engine: Engine, *, job: Job, worker_id: str, now: dt.datetime | None = None) -> Job | None:
    """Hand a claimed job back unrun: ``pending``, due now, its attempt not counted; returns it.

    For a worker that claimed more than it will run (it is stopping, or a lease
    ran out before the job's turn). Returns None when the claim was already lost.
    """

    def work(conn: Connection) -> Job | None:
        values = {
            "state": "pending",
            "attempts": jobs.c.attempts - 1,
            "run_at": _now(now),
            "locked_by": None,
            "locked_until": None,
        }
        return _finish_claim(conn, job=job, worker_id=worker_id, values=values)

    return run_in_transaction(engine, work)


def _finish_claim(conn: Connection, *, job: Job, worker_id: str, values: Mapping[str, Any]) -> Job | None:
    """Compare-and-set: change the job only while it is this worker's claim of this attempt."""
    row = conn.execute(
        jobs.update()
        .where(
            jobs.c.id == job.id,
            jobs.c.state == "running",
            jobs.c.locked_by == _check_worker_id(worker_id),
            jobs.c.attempts == job.attempts,
        )
        .values(**values)
        .returning(*jobs.c)
    ).first()
    return None if row is None else _job_from_row(row)


def _no_handler(_engine: Engine, _job: Job) -> None:  # pragma: no cover - never called
    raise AssertionError("unreachable")


# Retries of a kind this process has no handler for (``fail`` called by hand) follow the default schedule.
_DEFAULT_HANDLER = Handler("default", _no_handler)


def _error_text(error: BaseException | str) -> str:
    text = "".join(traceback.format_exception_only(error)) if isinstance(error, BaseException) else str(error)
    text = text.strip() or "error without a message"
    return text if len(text) <= ERROR_LENGTH_MAX else text[: ERROR_LENGTH_MAX - 1] + "…"


def _seconds(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- workers

RUN_COUNT_NAMES = ("claimed", "succeeded", "retried", "failed", "dead", "released", "lost")


def run_once(
    engine: Engine,
    *,
    worker_id: str,
    limit: int = DEFAULT_BATCH_SIZE,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: dt.datetime | None = None,
    kinds: Collection[str] | None = None,
    stop_event: threading.Event | None = None,
) -> dict[str, int]:
    """Claim up to ``limit`` due jobs and run them one after another; returns what happened to them.

    Counts: ``claimed``; outcomes ``succeeded``, ``retried`` (pending again),
    ``failed``, ``dead``; ``released`` (handed back unrun, because ``stop_event``
    was set or the lease ran out before the job's turn); ``lost`` (the outcome
    was not recorded: the lease was taken over, or recording raised — the job
    runs again after its lease). Each handler runs outside the claim transaction;
    its exception is recorded with ``fail``. ``now`` (default: the clock) is used
    for the claim and every outcome.
    """
    counts = dict.fromkeys(RUN_COUNT_NAMES, 0)
    if stop_event is not None and stop_event.is_set():
        return counts
    claimed = claim(engine, worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, now=now, kinds=kinds)
    counts["claimed"] = len(claimed)
    for job in claimed:
        stopping = stop_event is not None and stop_event.is_set()
        lease_ran_out = job.locked_until is not None and _now(now) >= job.locked_until
        if stopping or lease_ran_out:
            released = _record(lambda job=job: release(engine, job=job, worker_id=worker_id, now=now), job)
            counts["released" if released is not None else "lost"] += 1
            continue
        counts[_run_one(engine, job=job, worker_id=worker_id, now=now)] += 1
    return counts


def _run_one(engine: Engine, *, job: Job, worker_id: str, now: dt.datetime | None) -> str:
    """Run one claimed job's handler and record the outcome; returns the name of its count."""
    entry = get_handler(job.kind)
    assert entry is not None, f"claimed job {job.ref} of kind {job.kind!r} has no handler"
    try:
        entry.fn(engine, job)
    except Exception as error:
        permanent = isinstance(error, PermanentFailure)
        logger.warning(
            "jobs: %s (%s) attempt %d/%d failed: %s",
            job.ref,
            job.kind,
            job.attempts,
            job.attempts_max,
            error,
            exc_info=True,
        )
        outcome = _record(
            lambda error=error: fail(engine, job=job, worker_id=worker_id, error=error, now=now, permanent=permanent),
            job,
        )
        if outcome is None:
            return "lost"
        if outcome.state == "dead":
            logger.error("jobs: %s (%s) is dead after %d attempts", job.ref, job.kind, job.attempts)
        return {"pending": "retried", "failed": "failed", "dead": "dead"}[outcome.state]
    outcome = _record(lambda: complete(engine, job=job, worker_id=worker_id, now=now), job)
    return "lost" if outcome is None else "succeeded"


def _record(record: Callable[[], Job | None], job: Job) -> Job | None:
    """Record an outcome; when that fails (the database is away), log it: the lease brings the job back."""
    try:
        outcome = record()
    except Exception:
        logger.exception("jobs: could not record the outcome of %s; it runs again after its lease", job.ref)
        return None
    if outcome is None:
        logger.warning("jobs: %s was taken over by another worker before its outcome was recorded", job.ref)
    return outcome


def run_forever(
    engine: Engine,
    *,
    worker_id: str | None = None,
    stop_event: threading.Event,
    poll_seconds: float = 1.0,
    limit: int = DEFAULT_BATCH_SIZE,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    kinds: Collection[str] | None = None,
) -> None:
    """Run jobs until ``stop_event`` is set; never dies of a job or of a database outage.

    Claims again at once while there is work, and waits ``poll_seconds`` when
    there is none (or after an error). Clean shutdown: once ``stop_event`` is
    set, the job being run finishes and is recorded, jobs claimed but not
    started are released to other workers, and nothing new is claimed.
    """
    worker_id = _check_worker_id(worker_id or default_worker_id())
    logger.info("jobs: worker %s running, polling every %ss", worker_id, poll_seconds)
    while not stop_event.is_set():
        try:
            counts = run_once(
                engine,
                worker_id=worker_id,
                limit=limit,
                lease_seconds=lease_seconds,
                kinds=kinds,
                stop_event=stop_event,
            )
        except Exception:
            logger.exception("jobs: claiming failed; retrying after %ss", poll_seconds)
            stop_event.wait(poll_seconds)
            continue
        if counts["claimed"]:
            logger.info("jobs: %s", {name: count for name, count in counts.items() if count})
        else:
            stop_event.wait(poll_seconds)
    logger.info("jobs: worker %s stopped", worker_id)


def start_in_thread(
    engine: Engine,
    *,
    stop_event: threading.Event,
    worker_id: str | None = None,
    poll_seconds: float = 1.0,
    limit: int = DEFAULT_BATCH_SIZE,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> threading.Thread:
    """Run ``run_forever`` in a daemon thread; set ``stop_event`` and join the thread to stop cleanly."""
    thread = threading.Thread(
        target=run_forever,
        kwargs={
            "engine": engine,
            "worker_id": worker_id,
            "stop_event": stop_event,
            "poll_seconds": poll_seconds,
            "limit": limit,
            "lease_seconds": lease_seconds,
        },
        name="zhangfang-job-worker",
        daemon=True,
    )
    thread.start()
    return thread


def default_worker_id() -> str:
    """Returns ``host:pid:random``, unique per worker across machines and restarts."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- operations


def get_job(conn: Connection, *, ref: str) -> Job:
    """Returns the job with this ref, or raises ``JobNotFound``."""
    row = conn.execute(sa.select(jobs).where(jobs.c.ref == ref)).first() if isinstance(ref, str) else None
    if row is None:
        raise errors.JobNotFound(f"no job {ref!r}", field="ref")
    return _job_from_row(row)


def list_jobs(
    conn: Connection,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Returns jobs oldest first, filtered by ``state`` and ``kind``; pass ``next_cursor`` for the next page."""
    if state is not None and state not in JOB_STATES:
        raise errors.JobStateInvalid(f"state must be one of {', '.join(JOB_STATES)}", field="state")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT_MAX:
        raise errors.LimitInvalid(f"limit must be an integer from 1 to {PAGE_LIMIT_MAX}", field="limit")
    query = sa.select(jobs).order_by(jobs.c.id).limit(limit + 1)
    if cursor is not None:
        if not isinstance(cursor, str) or not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
            raise errors.CursorInvalid("cursor must be a value returned as next_cursor", field="cursor")
        query = query.where(jobs.c.id > int(cursor))
    if state is not None:
        query = query.where(jobs.c.state == state)
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    rows = conn.execute(query).all()
    items = [_job_from_row(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def stats(conn: Connection) -> dict[str, int]:
    """Returns how many jobs are in each state (every state, zeros included)."""
    counts = dict.fromkeys(JOB_STATES, 0)
    for state, count in conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)):
        counts[state] = count
    return counts


def replay(conn: Connection, *, ref: str, now: dt.datetime | None = None) -> Job:
    """Put a ``dead`` or ``failed`` job back to ``pending``, due now, with its attempts at zero; returns it.

    ``last_error`` is kept until the next failure. Any other state raises
    ``JobNotReplayable``; an unknown ref ``JobNotFound``.
    """
    current = get_job(conn, ref=ref)
    row = conn.execute(
        jobs.update()
        .where(jobs.c.id == current.id, jobs.c.state.in_(("dead", "failed")))
        .values(state="pending", attempts=0, run_at=_now(now), finished_at=None)
        .returning(*jobs.c)
    ).first()
    if row is None:
        state = get_job(conn, ref=ref).state
        raise errors.JobNotReplayable(
            f"job {ref} is {state}; only a dead or failed job can be replayed", field="ref", state=state
        )
    return _job_from_row(row)


def _job_from_row(row: Row[Any]) -> Job:
    job = Job(
        id=row.id,
        ref=row.ref,
        kind=row.kind,
        payload=row.payload,
        dedupe_key=row.dedupe_key,
        state=row.state,
        attempts=row.attempts,
        attempts_max=row.attempts_max,
        run_at=row.run_at,
        locked_by=row.locked_by,
        locked_until=row.locked_until,
        last_error=row.last_error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )
    assert (job.state == "running") == (job.locked_by is not None), job
    assert (job.state in FINAL_STATES) == (job.finished_at is not None), job
    return job
