"""The job queue (outbox): written with the state change, run at least once, retried, dead-lettered, replayed.

Every test runs on SQLite and PostgreSQL. Time moves through ``now=``; the test
handlers below are registered when this module is imported (also in the
spawned worker processes), under ``test.`` kinds.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from zhangfang.db.engine import create_engine
from zhangfang.db.uow import UnitOfWork, run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.jobs import queue
from zhangfang.jobs.errors import JobKeyConflict, JobKindUnknown, JobNotFound, JobNotReplayable
from zhangfang.jobs.models import Job
from zhangfang.jobs.tables import jobs
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest
from zhangfang.ledger.tables import accounts

T0 = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)
LEASE_SECONDS = 60


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- test handlers

calls: list[str] = []
stop_requested = threading.Event()


@queue.handler("test.ok")  # the default schedule, with jitter
def ok_handler(_engine, job: Job) -> None:
    calls.append(job.ref)


@queue.handler("test.fail", attempts_max=4, retry_schedule_seconds=(10, 30), jitter_ratio=0)
def failing_handler(_engine, job: Job) -> None:
    calls.append(job.ref)
    raise RuntimeError(f"channel timed out ({job.payload.get('order')})")


@queue.handler("test.permanent", jitter_ratio=0)
def permanent_handler(_engine, _job: Job) -> None:
    raise queue.PermanentFailure("merchant endpoint is gone")


@queue.handler("test.stop")
def stopping_handler(_engine, job: Job) -> None:
    """Asks the worker to stop while it is running this job."""
    calls.append(job.ref)
    stop_requested.set()


@queue.handler("test.record")
def recording_handler(_engine, job: Job) -> None:
    """Appends ``ref attempts pid`` to the payload's log file, in one write (O_APPEND keeps lines whole)."""
    fd = os.open(job.payload["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{job.ref} {job.attempts} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    time.sleep(0.002)


@pytest.fixture(autouse=True)
def _fresh_calls():
    calls.clear()
    stop_requested.clear()


def enqueue(engine, kind: str = "test.ok", payload: dict | None = None, **kwargs) -> Job:
    kwargs.setdefault("now", T0)
    return run_in_transaction(
        engine, lambda conn: queue.enqueue(conn, kind=kind, payload=payload or {"order": "o1"}, **kwargs)
    )


def get(engine, ref: str) -> Job:
    return run_in_transaction(engine, lambda conn: queue.get_job(conn, ref=ref), readonly=True)


def stats(engine) -> dict[str, int]:
    return run_in_transaction(engine, lambda conn: queue.stats(conn), readonly=True)


def claim(engine, worker_id: str, now: dt.datetime, **kwargs) -> list[Job]:
    kwargs.setdefault("limit", 10)
    return queue.claim(engine, worker_id=worker_id, lease_seconds=LEASE_SECONDS, now=now, **kwargs)


def run_once(engine, now: dt.datetime, **kwargs) -> dict[str, int]:
    return queue.run_once(engine, worker_id="w1", lease_seconds=LEASE_SECONDS, now=now, **kwargs)


# --------------------------------------------------------------------------- enqueue


def test_a_job_is_written_in_the_callers_transaction_and_rolls_back_with_it(engine):
    request = AccountRequest(key="merchant-1", ledger_code="merchant", currency="CNY")
    with UnitOfWork(engine) as uow:
        ledger.open_account(uow.conn, request=request)
        queue.enqueue(uow.conn, kind="test.ok", payload={"account": "merchant-1"}, dedupe_key="welcome:merchant-1")
        # leaving without commit() rolls back
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 0

    with UnitOfWork(engine) as uow:
        account, _ = ledger.open_account(uow.conn, request=request)
        job = queue.enqueue(uow.conn, kind="test.ok", payload={"account": account.ref}, dedupe_key="welcome:m1")
        uow.commit()
    stored = get(engine, job.ref)
    assert (stored.state, stored.attempts, stored.payload) == ("pending", 0, {"account": account.ref})
    assert stored.ref.startswith("job_") and stored.attempts_max == queue.DEFAULT_ATTEMPTS_MAX


def test_enqueueing_twice_with_one_dedupe_key_returns_the_first_job(engine):
    first = enqueue(engine, payload={"order": "o1", "amount_minor": 100}, dedupe_key="notify:o1")
    again = enqueue(engine, payload={"amount_minor": 100, "order": "o1"}, dedupe_key="notify:o1", now=at(5))
    assert again == first
    run_once(engine, at(1))
    after_success = enqueue(engine, payload={"order": "o1", "amount_minor": 100}, dedupe_key="notify:o1", now=at(9))
    assert (after_success.ref, after_success.state) == (first.ref, "succeeded")
    assert stats(engine)["succeeded"] == 1 and sum(stats(engine).values()) == 1
    assert calls == [first.ref]


def test_jobs_without_a_dedupe_key_are_never_merged(engine):
    first, second = enqueue(engine), enqueue(engine)
    assert first.ref != second.ref
    assert stats(engine)["pending"] == 2


@pytest.mark.parametrize(
    ("kind", "payload"),
    [("test.ok", {"order": "o2"}), ("test.fail", {"order": "o1"})],
    ids=["other payload", "other kind"],
)
def test_a_dedupe_key_reused_for_a_different_job_is_a_conflict(engine, kind, payload):
    first = enqueue(engine, payload={"order": "o1"}, dedupe_key="notify:o1")
    with pytest.raises(JobKeyConflict) as raised:
        enqueue(engine, kind=kind, payload=payload, dedupe_key="notify:o1")
    assert raised.value.code == "job_key_conflict"
    assert raised.value.details["ref"] == first.ref
    assert sum(stats(engine).values()) == 1


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"kind": "test.nobody-handles-this"}, "job_kind_unknown"),
        ({"kind": None}, "job_kind_unknown"),
        ({"payload": ["not", "an", "object"]}, "job_payload_invalid"),
        ({"payload": {"amount": float("nan")}}, "job_payload_invalid"),
        ({"payload": {"at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}}, "job_payload_invalid"),
        ({"payload": {"legs": ("a", "b")}}, "job_payload_invalid"),
        ({"payload": {1: "integer key"}}, "job_payload_invalid"),
        ({"payload": {"blob": "x" * 70_000}}, "job_payload_invalid"),
        ({"dedupe_key": ""}, "job_dedupe_key_invalid"),
        ({"dedupe_key": "k" * 201}, "job_dedupe_key_invalid"),
        ({"dedupe_key": "订单-1"}, "job_dedupe_key_invalid"),
        ({"run_at": dt.datetime(2030, 1, 1)}, "time_zone_missing"),
        ({"attempts_max": 0}, "job_attempts_max_invalid"),
        ({"attempts_max": 101}, "job_attempts_max_invalid"),
        ({"kind": "test.unknown", "payload": [], "dedupe_key": ""}, "job_kind_unknown"),
        ({"payload": [], "dedupe_key": "", "attempts_max": 0}, "job_payload_invalid"),
    ],
)
def test_a_bad_job_is_refused_with_its_code_and_nothing_is_written(engine, arguments, code):
    arguments = {"kind": "test.ok", "payload": {"order": "o1"}, **arguments}
    with pytest.raises(ZhangfangError) as raised:
        run_in_transaction(engine, lambda conn: queue.enqueue(conn, **arguments))
    assert raised.value.code == code
    assert sum(stats(engine).values()) == 0


def test_an_unknown_kind_is_refused_even_inside_a_larger_transaction(engine):
    with UnitOfWork(engine) as uow, pytest.raises(JobKindUnknown):
        queue.enqueue(uow.conn, kind="nobody.handles_this", payload={})


# --------------------------------------------------------------------------- claim, run, outcomes


def test_a_due_job_is_claimed_run_and_succeeds(engine):
    job = enqueue(engine, run_at=at(10))
    assert run_once(engine, at(9))["claimed"] == 0

    counts = run_once(engine, at(10))
    assert counts == {"claimed": 1, "succeeded": 1, "retried": 0, "failed": 0, "dead": 0, "released": 0, "lost": 0}
    assert calls == [job.ref]
    done = get(engine, job.ref)
    assert (done.state, done.attempts, done.finished_at) == ("succeeded", 1, at(10))
    assert (done.locked_by, done.locked_until, done.last_error) == (None, None, None)
    assert run_once(engine, at(1000))["claimed"] == 0


def test_claim_takes_the_earliest_due_jobs_and_leases_them(engine):
    late = enqueue(engine, run_at=at(3))
    early = enqueue(engine, run_at=at(1))
    enqueue(engine, run_at=at(100))
    claimed = claim(engine, "w1", at(5))
    assert [job.ref for job in claimed] == [early.ref, late.ref]
    for job in claimed:
        assert (job.state, job.attempts, job.locked_by) == ("running", 1, "w1")
        assert job.locked_until == job.run_at == at(5 + LEASE_SECONDS)
    assert claim(engine, "w2", at(6)) == []


def test_a_worker_claims_only_the_kinds_it_asks_for(engine):
    enqueue(engine, kind="test.fail")
    wanted = enqueue(engine, kind="test.ok")
    assert [job.ref for job in claim(engine, "w1", at(1), kinds={"test.ok"})] == [wanted.ref]
    assert stats(engine) == {"pending": 1, "running": 1, "succeeded": 0, "failed": 0, "dead": 0}
    with pytest.raises(ValueError, match="no handler"):
        claim(engine, "w1", at(1), kinds={"nobody.handles_this"})


def test_a_failing_job_is_retried_on_its_schedule_then_dead_then_replayed(engine):
    job = enqueue(engine, kind="test.fail", payload={"order": "o7"})  # attempts_max 4, schedule 10 s, 30 s, 30 s

    assert run_once(engine, at(0))["retried"] == 1
    first = get(engine, job.ref)
    assert (first.state, first.attempts, first.run_at) == ("pending", 1, at(10))
    assert first.last_error == "RuntimeError: channel timed out (o7)"
    assert first.locked_by is None and first.finished_at is None

    assert run_once(engine, at(9))["claimed"] == 0
    assert run_once(engine, at(10))["retried"] == 1
    assert get(engine, job.ref).run_at == at(40)
    assert run_once(engine, at(40))["retried"] == 1
    assert get(engine, job.ref).run_at == at(70)  # the last delay repeats
    assert run_once(engine, at(70))["dead"] == 1

    dead = get(engine, job.ref)
    assert (dead.state, dead.attempts, dead.finished_at) == ("dead", 4, at(70))
    assert run_once(engine, at(10_000))["claimed"] == 0
    assert len(calls) == 4

    replayed = run_in_transaction(engine, lambda conn: queue.replay(conn, ref=job.ref, now=at(20_000)))
    assert (replayed.state, replayed.attempts, replayed.run_at, replayed.finished_at) == (
        "pending",
        0,
        at(20_000),
        None,
    )
    assert replayed.last_error == dead.last_error
    assert run_once(engine, at(20_000))["retried"] == 1
    assert get(engine, job.ref).attempts == 1


def test_the_default_schedule_is_ten_seconds_to_an_hour_with_jitter(engine):
    entry = queue.get_handler("test.ok")
    assert (entry.attempts_max, entry.jitter_ratio) == (12, 0.2)
    exact = queue.Handler("x", ok_handler, jitter_ratio=0)
    assert [exact.retry_delay_seconds(n) for n in range(1, 12)] == [10, 30, 60, 300, 900] + [3600] * 6
    delays = {entry.retry_delay_seconds(1) for _ in range(200)}
    assert all(8 <= d <= 12 for d in delays) and len(delays) > 100

    job = enqueue(engine)
    (claimed,) = claim(engine, "w1", at(0))
    retried = queue.fail(engine, job=claimed, worker_id="w1", error="timeout", now=at(0))
    assert retried.state == "pending" and at(8) <= retried.run_at <= at(12)
    assert retried.last_error == "timeout" and job.ref == retried.ref


def test_a_permanent_failure_fails_the_job_at_once_and_it_can_be_replayed(engine):
    job = enqueue(engine, kind="test.permanent")
    assert run_once(engine, at(0))["failed"] == 1
    failed = get(engine, job.ref)
    assert (failed.state, failed.attempts, failed.finished_at) == ("failed", 1, at(0))
    assert "PermanentFailure: merchant endpoint is gone" in failed.last_error
    replayed = run_in_transaction(engine, lambda conn: queue.replay(conn, ref=job.ref, now=at(5)))
    assert (replayed.state, replayed.attempts) == ("pending", 0)


def test_a_long_error_is_kept_truncated_to_2000_characters(engine):
    enqueue(engine)
    (job,) = claim(engine, "w1", at(0))
    failed = queue.fail(engine, job=job, worker_id="w1", error=RuntimeError("x" * 5000), now=at(0))
    assert len(failed.last_error) == 2000 and failed.last_error.endswith("…")


def test_only_dead_or_failed_jobs_can_be_replayed(engine):
    job = enqueue(engine)
    with pytest.raises(JobNotReplayable) as raised:
        run_in_transaction(engine, lambda conn: queue.replay(conn, ref=job.ref))
    assert raised.value.code == "job_not_replayable"
    run_once(engine, at(0))
    with pytest.raises(JobNotReplayable):
        run_in_transaction(engine, lambda conn: queue.replay(conn, ref=job.ref))
    with pytest.raises(JobNotFound) as missing:
        run_in_transaction(engine, lambda conn: queue.replay(conn, ref="job_nope"))
    assert missing.value.code == "job_not_found"


# --------------------------------------------------------------------------- leases


def test_a_crashed_workers_job_is_taken_over_when_its_lease_runs_out(engine):
    job = enqueue(engine)
    (held,) = claim(engine, "crashed", at(0))  # ... and the worker dies without a word

    assert claim(engine, "w2", at(LEASE_SECONDS - 1)) == []
    (taken,) = claim(engine, "w2", at(LEASE_SECONDS))
    assert (taken.ref, taken.locked_by, taken.attempts) == (job.ref, "w2", 2)

    done = queue.complete(engine, job=taken, worker_id="w2", now=at(LEASE_SECONDS + 1))
    assert (done.state, done.attempts) == ("succeeded", 2)
    assert held.attempts == 1


def test_complete_or_fail_from_a_worker_that_lost_its_lease_is_ignored(engine):
    enqueue(engine)
    (slow,) = claim(engine, "slow", at(0))
    (fast,) = claim(engine, "fast", at(LEASE_SECONDS + 1))

    assert queue.complete(engine, job=slow, worker_id="slow", now=at(LEASE_SECONDS + 2)) is None
    assert queue.fail(engine, job=slow, worker_id="slow", error="late", now=at(LEASE_SECONDS + 2)) is None
    assert queue.release(engine, job=slow, worker_id="slow") is None
    still = get(engine, fast.ref)
    assert (still.state, still.locked_by, still.attempts, still.last_error) == ("running", "fast", 2, None)

    assert queue.fail(engine, job=fast, worker_id="fast", error="refused", now=at(LEASE_SECONDS + 3)).state == "pending"
    assert queue.complete(engine, job=slow, worker_id="slow") is None  # a stale claim stays stale
    assert queue.complete(engine, job=fast, worker_id="fast") is None  # and so does one already recorded
    assert get(engine, fast.ref).last_error == "refused"


def test_a_claim_that_ran_out_is_stale_even_when_the_same_worker_claims_the_job_again(engine):
    enqueue(engine)
    (first,) = claim(engine, "w1", at(0))
    (second,) = claim(engine, "w1", at(LEASE_SECONDS))
    assert queue.complete(engine, job=first, worker_id="w1") is None
    assert queue.complete(engine, job=second, worker_id="w1").attempts == 2


def test_a_worker_past_its_lease_still_completes_a_job_nobody_took_over(engine):
    enqueue(engine)
    (job,) = claim(engine, "w1", at(0))
    assert queue.complete(engine, job=job, worker_id="w1", now=at(LEASE_SECONDS * 3)).state == "succeeded"


def test_a_job_whose_last_attempt_ran_out_its_lease_is_dead_lettered_not_claimed(engine):
    job = enqueue(engine, attempts_max=1)
    claim(engine, "crashed", at(0))
    assert claim(engine, "w2", at(LEASE_SECONDS)) == []
    dead = get(engine, job.ref)
    assert (dead.state, dead.attempts, dead.locked_by, dead.finished_at) == ("dead", 1, None, at(LEASE_SECONDS))
    assert dead.last_error == queue.LEASE_RAN_OUT_ON_LAST_ATTEMPT


def test_a_released_job_is_due_again_without_losing_an_attempt(engine):
    job = enqueue(engine)
    (claimed,) = claim(engine, "w1", at(0))
    released = queue.release(engine, job=claimed, worker_id="w1", now=at(1))
    assert (released.state, released.attempts, released.run_at, released.locked_by) == ("pending", 0, at(1), None)
    assert [j.ref for j in claim(engine, "w2", at(1))] == [job.ref]


# --------------------------------------------------------------------------- the worker loop


def test_a_stopping_worker_finishes_its_job_releases_the_rest_and_claims_nothing_new(engine):
    refs = [enqueue(engine, kind="test.stop", now=None).ref for _ in range(3)]
    thread = queue.start_in_thread(engine, stop_event=stop_requested, worker_id="w1", poll_seconds=0.01, limit=10)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert calls == refs[:1]  # the first job asks to stop: it finishes; the other two are not started
    states = [(get(engine, ref).state, get(engine, ref).attempts, get(engine, ref).locked_by) for ref in refs]
    assert states == [("succeeded", 1, None), ("pending", 0, None), ("pending", 0, None)]


def test_the_worker_loop_runs_jobs_as_they_arrive_and_stops_when_asked(engine):
    stop = threading.Event()
    thread = queue.start_in_thread(engine, stop_event=stop, poll_seconds=0.01)
    try:
        refs = {enqueue(engine, now=None).ref for _ in range(5)}
        deadline = time.monotonic() + 20
        while stats(engine)["succeeded"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert set(calls) == refs and len(calls) == 5


def test_a_loop_told_to_stop_before_it_starts_claims_nothing(engine):
    enqueue(engine, now=None)
    stop = threading.Event()
    stop.set()
    queue.run_forever(engine, worker_id="w1", stop_event=stop, poll_seconds=0.01)
    assert stats(engine)["pending"] == 1 and calls == []


# --------------------------------------------------------------------------- operations


def test_list_jobs_filters_by_state_and_kind_and_pages_oldest_first(engine):
    failing = [enqueue(engine, kind="test.fail").ref for _ in range(2)]
    ok = [enqueue(engine).ref for _ in range(3)]
    run_once(engine, at(0), kinds={"test.fail"})

    def page(**kwargs):
        return run_in_transaction(engine, lambda conn: queue.list_jobs(conn, **kwargs), readonly=True)

    first = page(limit=2)
    assert [j.ref for j in first.items] == [*failing, *ok][:2] and first.next_cursor
    rest = page(limit=10, cursor=first.next_cursor)
    assert [j.ref for j in rest.items] == ok and rest.next_cursor is None
    assert [j.ref for j in page(kind="test.ok", state="pending").items] == ok
    assert [j.ref for j in page(state="pending", kind="test.fail").items] == failing
    assert page(state="dead").items == []
    assert stats(engine) == {"pending": 5, "running": 0, "succeeded": 0, "failed": 0, "dead": 0}

    for arguments, code in [
        ({"state": "stuck"}, "job_state_invalid"),
        ({"limit": 0}, "limit_invalid"),
        ({"cursor": "abc"}, "cursor_invalid"),
    ]:
        with pytest.raises(ZhangfangError) as raised:
            page(**arguments)
        assert raised.value.code == code


def test_get_job_of_an_unknown_ref_is_not_found(engine):
    with pytest.raises(JobNotFound):
        get(engine, "job_01J00000000000000000000000")


@pytest.mark.parametrize(
    "values",
    [
        {"state": "stuck"},
        {"state": "running"},  # without a lease
        {"state": "succeeded"},  # without finished_at
        {"attempts": 13},  # above attempts_max
        {"attempts": -1},
        {"last_error": "e" * 2001},
    ],
    ids=["unknown state", "running without lease", "final without finished_at", "too many", "negative", "long error"],
)
def test_the_database_refuses_a_job_row_that_breaks_a_rule(engine, values):
    job = enqueue(engine)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job.id).values(**values))
    assert get(engine, job.ref) == job


def test_registering_the_same_handler_again_is_harmless_and_another_is_refused():
    queue.handler("test.ok")(ok_handler)
    assert queue.get_handler("test.ok").fn is ok_handler
    with pytest.raises(ValueError, match="already handled"):
        queue.handler("test.ok")(failing_handler)
    with pytest.raises(ValueError, match="kind must match"):
        queue.handler("Test OK")
    assert {"test.ok", "test.fail", "test.record"} <= queue.registered_kinds()


# --------------------------------------------------------------------------- several processes

PROCESSES = 4
JOBS = 300


def _drain(url: str, worker_id: str, barrier, results) -> None:
    """Run ``run_once`` until a claim comes back empty; report the counts and anything unexpected."""
    engine = create_engine(url, pool_size=2)
    totals: Counter[str] = Counter()
    unexpected: list[str] = []
    barrier.wait(timeout=120)
    try:
        while True:
            counts = queue.run_once(engine, worker_id=worker_id, limit=5, lease_seconds=120, kinds={"test.record"})
            totals.update(counts)
            if counts["claimed"] == 0:
                break
    except Exception as error:
        unexpected.append(f"{type(error).__name__}: {error}")
    engine.dispose()
    results.put({"worker": worker_id, "counts": dict(totals), "unexpected": unexpected})


def test_several_worker_processes_run_every_job_exactly_once(database, engine, tmp_path: Path):
    log = tmp_path / "ran.log"
    with UnitOfWork(engine) as uow:
        refs = {queue.enqueue(uow.conn, kind="test.record", payload={"log": str(log)}).ref for _ in range(JOBS)}
        uow.commit()

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=_drain, args=(database.url, f"worker-{n}", barrier, results)) for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    assert [r["unexpected"] for r in reports] == [[]] * PROCESSES
    assert sum(r["counts"].get("succeeded", 0) for r in reports) == JOBS
    assert sum(r["counts"].get("claimed", 0) for r in reports) == JOBS
    assert all(r["counts"].get("lost", 0) == 0 for r in reports)

    lines = [line.split() for line in log.read_text().splitlines()]
    ran = Counter(ref for ref, _attempts, _pid in lines)
    assert set(ran) == refs and set(ran.values()) == {1}  # every job ran, none twice
    assert {attempts for _ref, attempts, _pid in lines} == {"1"}  # and each was claimed once
    assert len({pid for _ref, _attempts, pid in lines}) == PROCESSES  # the work was shared
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.state, jobs.c.attempts, jobs.c.locked_by)).all()
    assert Counter(rows) == Counter({("succeeded", 1, None): JOBS})
