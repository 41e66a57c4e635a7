"""Merchant webhooks: emitted with the state change, signed per Standard Webhooks, retried, dead-lettered, replayed.

Every test runs on SQLite and PostgreSQL against a real HTTP receiver on a
loopback port (``Receiver``, served by ``sandbox.server.serve_in_thread``) that
checks every delivery with ``standardwebhooks.Webhook(secret).verify`` — the
reference implementation, not our own code. Time moves through ``run_once(now=…)``;
the signatures' own timestamps are the wall clock, as the receiver's check wants.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from standardwebhooks import Webhook
from tests.snapshots import snapshot
from tests.webhook_receiver import Answer

from zhangfang.config import Settings
from zhangfang.db.uow import UnitOfWork, run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.jobs import queue
from zhangfang.jobs.models import Job
from zhangfang.jobs.tables import jobs
from zhangfang.notify import service as notify
from zhangfang.notify.models import WebhookAttempt, WebhookEvent
from zhangfang.notify.tables import webhook_attempts, webhook_events, webhook_secrets
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant, MerchantRequest, SettlementAccount

SCHEDULE = notify.RETRY_SCHEDULE_SECONDS
JITTER = notify.RETRY_JITTER_RATIO


# --------------------------------------------------------------------------- the merchant's receiver


# --------------------------------------------------------------------------- helpers


def make_merchant(engine: Engine, key: str = "merchant-a") -> Merchant:
    request = MerchantRequest(
        key=key,
        name=f"示例商户 {key}",
        mcc="5812",
        fee_rate="0.006",
        settlement_account=SettlementAccount("招商银行上海分行", "6214830212345678", "上海示例餐饮有限公司"),
        sign_type="HMAC-SHA256",
    )
    return run_in_transaction(engine, lambda conn: parties.create_merchant(conn, request=request)).merchant


def rotate(engine: Engine, merchant: Merchant, **kwargs: Any) -> str:
    rotation = run_in_transaction(engine, lambda conn: notify.rotate_secret(conn, merchant_id=merchant.id, **kwargs))
    return rotation.secret


def emit(
    engine: Engine,
    merchant: Merchant,
    url: str,
    *,
    key: str = "pay_1:succeeded",
    event_type: str = "payment.succeeded",
    data: dict[str, Any] | None = None,
) -> WebhookEvent:
    data = {"order": "pay_1", "amount_minor": 1250, "currency": "CNY"} if data is None else data
    result = run_in_transaction(
        engine,
        lambda conn: notify.emit(
            conn, merchant_id=merchant.id, event_type=event_type, data=data, url=url, idempotency_key=key
        ),
    )
    return result.event


def deliver_due(engine: Engine, now: dt.datetime | None = None) -> dict[str, int]:
    return queue.run_once(engine, worker_id="test-worker", now=now, kinds={notify.JOB_KIND})


def event_of(engine: Engine, ref: str) -> WebhookEvent:
    return run_in_transaction(engine, lambda conn: notify.get_event(conn, event_id=ref), readonly=True)


def attempts_of(engine: Engine, ref: str) -> list[WebhookAttempt]:
    return run_in_transaction(engine, lambda conn: notify.list_attempts(conn, event_id=ref), readonly=True)


def job_of(engine: Engine, event: WebhookEvent) -> Job:
    current = event_of(engine, event.ref)
    assert current.job_ref is not None
    return run_in_transaction(engine, lambda conn: queue.get_job(conn, ref=current.job_ref), readonly=True)


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- emit and deliver


def test_a_webhook_is_signed_per_standard_webhooks_and_delivered_once_on_a_2xx(engine, receiver):
    merchant = make_merchant(engine)
    receiver.secrets = [rotate(engine, merchant)]
    event = emit(engine, merchant, f"{receiver.base_url}/notify")
    assert (event.state, event.attempts, event.ref[:4]) == ("pending", 0, "msg_")

    counts = deliver_due(engine)
    assert (counts["claimed"], counts["succeeded"]) == (1, 1)
    [request] = receiver.requests()
    assert request.verified_by == [0]
    assert request.webhook_id == event.ref
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["webhook-signature"].startswith("v1,") and " " not in request.headers["webhook-signature"]
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body == {
        "type": "payment.succeeded",
        "timestamp": event.created_at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "data": {"order": "pay_1", "amount_minor": 1250, "currency": "CNY"},
    }
    assert Webhook(receiver.secrets[0]).verify(request.body, request.headers) == body

    delivered = event_of(engine, event.ref)
    assert (delivered.state, delivered.attempts) == ("delivered", 1) and delivered.delivered_at is not None
    [attempt] = attempts_of(engine, event.ref)
    assert (attempt.number, attempt.status_code, attempt.outcome, attempt.error, attempt.response_excerpt) == (
        1,
        200,
        "delivered",
        None,
        "ok",
    )
    assert attempt.duration_ms is not None and attempt.duration_ms >= 0 and attempt.finished_at >= attempt.started_at
    assert job_of(engine, event).state == "succeeded"

    assert deliver_due(engine, now() + dt.timedelta(days=5))["claimed"] == 0
    assert len(receiver.requests()) == 1


def test_an_event_emitted_in_a_transaction_that_rolls_back_is_never_delivered(engine, receiver):
    merchant = make_merchant(engine)
    with UnitOfWork(engine) as uow:
        result = notify.emit(
            uow.conn,
            merchant_id=merchant.id,
            event_type="payment.succeeded",
            data={"order": "pay_1"},
            url=f"{receiver.base_url}/notify",
            idempotency_key="pay_1:succeeded",
        )
        assert result.created
        # leaving without commit() rolls back, as a payment that failed to commit would
    assert (count(engine, webhook_events), count(engine, jobs)) == (0, 0)
    assert deliver_due(engine)["claimed"] == 0
    assert receiver.requests() == []


def test_emitting_again_with_the_same_key_returns_the_first_event_and_other_content_conflicts(engine, receiver):
    merchant, other = make_merchant(engine), make_merchant(engine, "merchant-b")
    url = f"{receiver.base_url}/notify"
    first = emit(engine, merchant, url)
    again = run_in_transaction(
        engine,
        lambda conn: notify.emit(
            conn,
            merchant_id=merchant.id,
            event_type="payment.succeeded",
            data={"order": "pay_1", "amount_minor": 1250, "currency": "CNY"},
            url=url,
            idempotency_key="pay_1:succeeded",
        ),
    )
    assert not again.created and again.event == event_of(engine, first.ref)
    with pytest.raises(ZhangfangError) as raised:
        emit(engine, merchant, url, data={"order": "pay_1", "amount_minor": 9999})
    assert raised.value.code == "idempotency_key_conflict"
    assert emit(engine, other, url).ref != first.ref  # keys are per merchant
    assert (count(engine, webhook_events), count(engine, jobs)) == (2, 2)


def test_a_failing_receiver_is_retried_on_the_published_schedule_with_the_same_webhook_id(engine, receiver):
    merchant = make_merchant(engine)
    receiver.secrets = [rotate(engine, merchant)]
    receiver.plan("/flaky", Answer(503), Answer(502), Answer(500, body=b"database down"), Answer(200))
    event = emit(engine, merchant, f"{receiver.base_url}/flaky")

    at = now()
    for number in (1, 2, 3):
        assert deliver_due(engine, at)["retried"] == 1
        job = job_of(engine, event)
        delay = seconds(job.run_at - at)
        expected = SCHEDULE[number - 1]
        assert expected * (1 - JITTER) <= delay <= expected * (1 + JITTER), (number, delay)
        assert deliver_due(engine, job.run_at - dt.timedelta(seconds=1))["claimed"] == 0  # not before it is due
        assert event_of(engine, event.ref).state == "pending"
        at = job.run_at
    assert deliver_due(engine, at)["succeeded"] == 1

    requests = receiver.requests("/flaky")
    assert [r.webhook_id for r in requests] == [event.ref] * 4
    assert all(r.verified_by == [0] for r in requests)
    assert len({r.body for r in requests}) == 1  # the same body every time; only the signature's time moves
    log = attempts_of(engine, event.ref)
    assert [(a.number, a.status_code, a.outcome) for a in log] == [
        (1, 503, "failed"),
        (2, 502, "failed"),
        (3, 500, "failed"),
        (4, 200, "delivered"),
    ]
    assert log[2].response_excerpt == "database down"
    assert event_of(engine, event.ref).state == "delivered"
    assert "HTTP 500" in job_of(engine, event).last_error


def test_the_schedule_is_ten_attempts_over_more_than_a_day_and_then_the_event_is_dead(engine, receiver):
    assert SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    registered = queue.get_handler(notify.JOB_KIND)
    assert registered is not None and registered.fn is notify.deliver
    assert registered.retry_schedule_seconds == tuple(float(s) for s in SCHEDULE)
    assert registered.attempts_max == notify.ATTEMPTS_MAX == 10

    merchant = make_merchant(engine)
    receiver.plan("/down", Answer(500))
    event = emit(engine, merchant, f"{receiver.base_url}/down")
    first = at = now()
    for number in range(1, 11):
        counts = deliver_due(engine, at)
        assert counts["claimed"] == 1, (number, counts)
        if number < 10:
            assert counts["retried"] == 1 and event_of(engine, event.ref).state == "pending"
            at = job_of(engine, event).run_at
    assert counts["dead"] == 1
    assert (event_of(engine, event.ref).state, job_of(engine, event).state) == ("dead", "dead")
    assert seconds(at - first) >= 24 * 3600
    assert [a.number for a in attempts_of(engine, event.ref)] == list(range(1, 11))
    assert {r.webhook_id for r in receiver.requests("/down")} == {event.ref}
    assert deliver_due(engine, at + dt.timedelta(days=30))["claimed"] == 0
    assert len(receiver.requests("/down")) == 10


def test_a_410_disables_the_event_and_nothing_is_retried(engine, receiver):
    merchant = make_merchant(engine)
    receiver.plan("/gone", Answer(410, body=b"endpoint removed"))
    event = emit(engine, merchant, f"{receiver.base_url}/gone")
    assert deliver_due(engine)["succeeded"] == 1
    assert event_of(engine, event.ref).state == "disabled"
    [attempt] = attempts_of(engine, event.ref)
    assert (attempt.status_code, attempt.outcome, attempt.response_excerpt) == (410, "gone", "endpoint removed")
    assert deliver_due(engine, now() + dt.timedelta(days=5))["claimed"] == 0
    assert len(receiver.requests("/gone")) == 1


def test_retry_after_postpones_the_next_attempt_within_a_bound(engine, receiver):
    merchant = make_merchant(engine)
    in_two_minutes = email.utils.format_datetime(now() + dt.timedelta(seconds=120), usegmt=True)
    receiver.plan(
        "/busy",
        Answer(503, {"Retry-After": in_two_minutes}),  # an HTTP date: about 120 s, longer than the scheduled 5 s
        Answer(429, {"Retry-After": "86400"}),  # a day: bounded to an hour, longer than the scheduled 5 min
        Answer(503, {"Retry-After": "soon"}),  # unreadable: the schedule (30 min)
        Answer(200),
    )
    event = emit(engine, merchant, f"{receiver.base_url}/busy")
    at = now()
    deliver_due(engine, at)
    job = job_of(engine, event)
    assert 115 <= seconds(job.run_at - at) <= 121
    assert deliver_due(engine, at + dt.timedelta(seconds=60))["claimed"] == 0
    at = job.run_at
    deliver_due(engine, at)
    job = job_of(engine, event)
    assert seconds(job.run_at - at) == notify.RETRY_AFTER_SECONDS_MAX == 3600
    at = job.run_at
    deliver_due(engine, at)
    job = job_of(engine, event)
    assert 1800 * (1 - JITTER) <= seconds(job.run_at - at) <= 1800 * (1 + JITTER)
    assert deliver_due(engine, job.run_at)["succeeded"] == 1
    assert [a.status_code for a in attempts_of(engine, event.ref)] == [503, 429, 503, 200]


def test_an_unreachable_receiver_is_an_attempt_without_status_and_is_retried(engine):
    merchant = make_merchant(engine)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    event = emit(engine, merchant, f"http://127.0.0.1:{port}/notify")
    assert deliver_due(engine)["retried"] == 1
    [attempt] = attempts_of(engine, event.ref)
    assert (attempt.status_code, attempt.outcome, attempt.response_excerpt) == (None, "failed", None)
    assert attempt.error.startswith("ConnectError")
    assert event_of(engine, event.ref).state == "pending"
    assert "ConnectError" in job_of(engine, event).last_error


def test_the_answer_is_logged_as_an_excerpt_of_at_most_1024_bytes(engine, receiver):
    merchant = make_merchant(engine)
    receiver.plan("/chatty", Answer(500, body="中".encode() * 1000))
    event = emit(engine, merchant, f"{receiver.base_url}/chatty")
    deliver_due(engine)
    [attempt] = attempts_of(engine, event.ref)
    assert attempt.response_excerpt == "中" * 341  # 1023 bytes: the character cut in two at byte 1024 is dropped


# --------------------------------------------------------------------------- replay


def test_a_delivered_or_disabled_event_is_replayed_with_the_same_webhook_id(engine, receiver):
    merchant = make_merchant(engine)
    receiver.secrets = [rotate(engine, merchant)]
    receiver.plan("/gone-then-back", Answer(410), Answer(200))
    delivered = emit(engine, merchant, f"{receiver.base_url}/notify", key="a")
    disabled = emit(engine, merchant, f"{receiver.base_url}/gone-then-back", key="b")
    deliver_due(engine)
    assert [event_of(engine, e.ref).state for e in (delivered, disabled)] == ["delivered", "disabled"]
    first_jobs = [event_of(engine, e.ref).job_ref for e in (delivered, disabled)]

    replayed = [
        run_in_transaction(engine, lambda conn, e=e: notify.replay(conn, event_id=e.ref)) for e in (delivered, disabled)
    ]
    assert [(e.state, e.replays) for e in replayed] == [("pending", 1), ("pending", 1)]
    assert [e.job_ref for e in replayed] != first_jobs
    assert deliver_due(engine)["succeeded"] == 2

    for event, path in ((delivered, "/notify"), (disabled, "/gone-then-back")):
        requests = receiver.requests(path)
        assert [r.webhook_id for r in requests] == [event.ref, event.ref]
        assert all(r.verified_by == [0] for r in requests)
        assert [a.number for a in attempts_of(engine, event.ref)] == [1, 2]
        assert event_of(engine, event.ref).state == "delivered"


def test_a_pending_event_is_not_replayable_and_an_unknown_one_is_not_found(engine, receiver):
    merchant = make_merchant(engine)
    receiver.plan("/down", Answer(500))
    event = emit(engine, merchant, f"{receiver.base_url}/down")
    deliver_due(engine)  # failed once, retrying: still pending
    before = snapshot(
        engine,
        tables=(
            webhook_events,
            jobs,
        ),
    )
    for event_id, code in (
        (event.ref, "webhook_event_not_replayable"),
        ("msg_01J00000000000000000000000", "webhook_event_not_found"),
    ):
        with pytest.raises(ZhangfangError) as raised:
            run_in_transaction(engine, lambda conn, event_id=event_id: notify.replay(conn, event_id=event_id))
        assert raised.value.code == code
    assert (
        snapshot(
            engine,
            tables=(
                webhook_events,
                jobs,
            ),
        )
        == before
    )


def test_an_event_whose_worker_died_before_its_last_attempt_started_can_be_replayed(engine, receiver):
    merchant = make_merchant(engine)
    receiver.plan("/late", *[Answer(500)] * 9, Answer(200))
    event = emit(engine, merchant, f"{receiver.base_url}/late")
    at = now()
    for _ in range(9):
        deliver_due(engine, at)
        at = job_of(engine, event).run_at
    # The last attempt is claimed by a worker that dies before it starts; its lease runs out.
    [claimed] = queue.claim(engine, worker_id="doomed", limit=1, lease_seconds=60, now=at, kinds={notify.JOB_KIND})
    assert claimed.attempts == claimed.attempts_max
    assert deliver_due(engine, at + dt.timedelta(seconds=61))["claimed"] == 0
    assert (job_of(engine, event).state, event_of(engine, event.ref).state) == ("dead", "pending")

    replayed = run_in_transaction(engine, lambda conn: notify.replay(conn, event_id=event.ref))
    assert replayed.state == "pending" and replayed.job_ref != claimed.ref
    assert deliver_due(engine)["succeeded"] == 1
    assert event_of(engine, event.ref).state == "delivered"
    assert len(receiver.requests("/late")) == 10


# --------------------------------------------------------------------------- secrets


def test_a_rotated_out_secret_signs_beside_the_new_one_until_its_grace_period_ends(engine, receiver):
    merchant = make_merchant(engine)
    event = emit(engine, merchant, f"{receiver.base_url}/notify")
    deliver_due(engine)  # the first use makes the merchant's secret
    assert count(engine, webhook_secrets) == 1

    before = now()
    first = run_in_transaction(engine, lambda conn: notify.rotate_secret(conn, merchant_id=merchant.id))
    assert first.secret.startswith("whsec_") and len(Webhook(first.secret)._whsecret) == 32
    grace = seconds(first.previous_expires_at - before)
    assert 24 * 3600 - 1 <= grace <= 24 * 3600 + 60  # the secret made on first use signs on for a day

    second = run_in_transaction(engine, lambda conn: notify.rotate_secret(conn, merchant_id=merchant.id))
    receiver.secrets = [first.secret, second.secret]
    run_in_transaction(engine, lambda conn: notify.replay(conn, event_id=event.ref))
    deliver_due(engine)
    during_grace = receiver.requests()[-1]
    assert during_grace.verified_by == [0, 1]  # either secret verifies: receivers switch over at their pace
    assert len(during_grace.headers["webhook-signature"].split(" ")) == 2  # the one made on first use has expired

    third = run_in_transaction(
        engine, lambda conn: notify.rotate_secret(conn, merchant_id=merchant.id, grace_seconds=0)
    )
    receiver.secrets = [first.secret, second.secret, third.secret]
    run_in_transaction(engine, lambda conn: notify.replay(conn, event_id=event.ref))
    deliver_due(engine)
    after_grace = receiver.requests()[-1]
    assert after_grace.verified_by == [2]
    assert [r.webhook_id for r in receiver.requests()] == [event.ref] * 3


def test_the_current_secret_is_made_once_even_by_concurrent_first_uses(engine):
    merchant = make_merchant(engine)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            results.append(
                run_in_transaction(engine, lambda conn: notify.signing_secrets(conn, merchant_id=merchant.id))
            )
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert count(engine, webhook_secrets) == 1
    assert len({tuple(secrets) for secrets in results}) == 1 and len(results[0]) == 1


# --------------------------------------------------------------------------- merchants and refusals


def test_a_merchant_reaches_only_its_own_events(engine, receiver):
    merchant_a, merchant_b = make_merchant(engine), make_merchant(engine, "merchant-b")
    receiver.plan("/gone", Answer(410))
    event = emit(engine, merchant_a, f"{receiver.base_url}/gone")
    deliver_due(engine)
    before = snapshot(
        engine,
        tables=(
            webhook_events,
            jobs,
        ),
    )

    def as_b(call: Any) -> str:
        with pytest.raises(ZhangfangError) as raised:
            run_in_transaction(engine, call)
        return raised.value.code

    assert as_b(lambda conn: notify.get_event(conn, event_id=event.ref, merchant_id=merchant_b.id)) == (
        "webhook_event_not_found"
    )
    assert as_b(lambda conn: notify.list_attempts(conn, event_id=event.ref, merchant_id=merchant_b.id)) == (
        "webhook_event_not_found"
    )
    assert as_b(lambda conn: notify.replay(conn, event_id=event.ref, merchant_id=merchant_b.id)) == (
        "webhook_event_not_found"
    )
    assert (
        snapshot(
            engine,
            tables=(
                webhook_events,
                jobs,
            ),
        )
        == before
    )

    def listed(merchant: Merchant) -> list[str]:
        page = run_in_transaction(engine, lambda conn: notify.list_events(conn, merchant_id=merchant.id))
        return [e.ref for e in page.items]

    assert (listed(merchant_a), listed(merchant_b)) == ([event.ref], [])
    mine = run_in_transaction(
        engine, lambda conn: notify.get_event(conn, event_id=event.ref, merchant_id=merchant_a.id)
    )
    assert mine.merchant_ref == merchant_a.ref


GOOD = {
    "event_type": "payment.succeeded",
    "data": {"order": "pay_1"},
    "url": "https://shop.example.com/notify",
    "idempotency_key": "pay_1:succeeded",
}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"idempotency_key": ""}, "idempotency_key_invalid"),
        ({"idempotency_key": "k" * 201}, "idempotency_key_invalid"),
        ({"idempotency_key": "", "url": "ftp://x"}, "idempotency_key_invalid"),  # precedence
        ({"event_type": "payment"}, "webhook_event_type_invalid"),
        ({"event_type": "Payment.Succeeded"}, "webhook_event_type_invalid"),
        ({"event_type": "payment..succeeded"}, "webhook_event_type_invalid"),
        ({"event_type": "payment." + "x" * 60}, "webhook_event_type_invalid"),
        ({"event_type": "payment", "url": "ftp://x"}, "webhook_event_type_invalid"),  # precedence
        ({"data": [1, 2]}, "webhook_payload_invalid"),
        ({"data": {"amount": float("nan")}}, "webhook_payload_invalid"),
        ({"data": {1: "one"}}, "webhook_payload_invalid"),
        ({"data": {"blob": "x" * (64 * 1024)}}, "webhook_payload_invalid"),
        ({"url": "ftp://shop.example.com/notify"}, "webhook_url_invalid"),
        ({"url": "shop.example.com/notify"}, "webhook_url_invalid"),
        ({"url": "https:///notify"}, "webhook_url_invalid"),
        ({"url": "https://shop.example.com/no tify"}, "webhook_url_invalid"),
        ({"url": "https://user:secret@shop.example.com/notify"}, "webhook_url_invalid"),
        ({"url": "https://shop.example.com/notify#top"}, "webhook_url_invalid"),
        ({"url": "https://shop.example.com:99999/notify"}, "webhook_url_invalid"),
        ({"url": "https://shop.example.com/" + "x" * 2048}, "webhook_url_invalid"),
        ({"url": "http://shop.example.com/notify"}, "webhook_url_must_be_https"),
        ({"merchant_id": 999_999}, "merchant_not_found"),
    ],
)
def test_a_bad_event_is_refused_with_its_code_and_nothing_is_written(engine, changes, code):
    merchant = make_merchant(engine)
    arguments = {**GOOD, "merchant_id": merchant.id, **changes}
    before = snapshot(
        engine,
        tables=(
            webhook_events,
            jobs,
            webhook_secrets,
        ),
    )
    with pytest.raises(ZhangfangError) as raised:
        run_in_transaction(engine, lambda conn: notify.emit(conn, **arguments))
    assert raised.value.code == code
    assert (
        snapshot(
            engine,
            tables=(
                webhook_events,
                jobs,
                webhook_secrets,
            ),
        )
        == before
    )


def test_http_is_accepted_for_loopback_hosts_and_when_the_setting_allows_it(monkeypatch):
    for url in ("http://127.0.0.1:8000/notify", "http://localhost/notify", "http://[::1]:9/notify"):
        assert notify.check_url(url, allow_http=False) == url
    with pytest.raises(ZhangfangError, match="https only"):
        notify.check_url("http://10.0.0.8/notify", allow_http=False)
    assert notify.check_url("http://10.0.0.8/notify", allow_http=True) == "http://10.0.0.8/notify"
    assert Settings().webhook_allow_http is False
    monkeypatch.setenv("ZHANGFANG_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("ZHANGFANG_WEBHOOK_TIMEOUT_SECONDS", "5")
    settings = Settings()
    assert (settings.webhook_allow_http, settings.webhook_timeout_seconds, settings.webhook_secret_grace_seconds) == (
        True,
        5.0,
        86400,
    )


def test_events_are_listed_newest_first_by_state_one_page_at_a_time(engine, receiver):
    merchant = make_merchant(engine)
    receiver.plan("/gone", Answer(410))
    delivered = emit(engine, merchant, f"{receiver.base_url}/notify", key="a")
    disabled = emit(engine, merchant, f"{receiver.base_url}/gone", key="b")
    deliver_due(engine)
    pending = emit(engine, merchant, f"{receiver.base_url}/notify", key="c")

    def page(**kwargs: Any) -> Any:
        return run_in_transaction(engine, lambda conn: notify.list_events(conn, **kwargs), readonly=True)

    first = page(limit=2)
    assert [e.ref for e in first.items] == [pending.ref, disabled.ref] and first.next_cursor
    rest = page(limit=2, cursor=first.next_cursor)
    assert [e.ref for e in rest.items] == [delivered.ref] and rest.next_cursor is None
    assert [e.ref for e in page(state="disabled").items] == [disabled.ref]
    assert [e.ref for e in page(state="pending", merchant_id=merchant.id).items] == [pending.ref]
    for arguments, code in (
        ({"state": "stuck"}, "webhook_event_state_invalid"),
        ({"limit": 0}, "limit_invalid"),
        ({"limit": 501}, "limit_invalid"),
        ({"cursor": "abc"}, "cursor_invalid"),
    ):
        with pytest.raises(ZhangfangError) as raised:
            page(**arguments)
        assert raised.value.code == code


def test_the_database_refuses_rows_that_break_a_rule(engine, receiver):
    merchant = make_merchant(engine)
    event = emit(engine, merchant, f"{receiver.base_url}/notify")
    deliver_due(engine)
    stamp = now()
    statements = [
        webhook_secrets.insert().values(merchant_id=merchant.id, secret="whsec_AAAA", created_at=stamp),  # 2nd current
        webhook_secrets.insert().values(merchant_id=merchant.id, secret="plain", created_at=stamp, expires_at=stamp),
        webhook_events.update().where(webhook_events.c.ref == event.ref).values(state="stuck"),
        webhook_events.update().where(webhook_events.c.ref == event.ref).values(delivered_at=None),
        webhook_attempts.update().values(outcome=None),  # finished without an outcome
        webhook_attempts.update().values(status_code=99),
        webhook_attempts.update().values(response_excerpt="x" * 1025),
        webhook_attempts.insert().values(event_id=event.id, number=1, job_ref="job_x", started_at=stamp),  # twice #1
    ]
    for statement in statements:
        with pytest.raises((IntegrityError, DataError)), engine.begin() as conn:
            conn.execute(statement)
    assert event_of(engine, event.ref).state == "delivered"
