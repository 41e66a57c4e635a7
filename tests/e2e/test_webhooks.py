"""Merchant webhooks end to end: the signed merchant API, the admin API, the CLI, and a worker killed mid-delivery.

Events are emitted through ``notify.service.emit`` (as the payments domain
will), delivered to the loopback ``Receiver`` of the integration tests, which
checks every request with ``standardwebhooks.Webhook(secret).verify``. Merchant
requests are signed with ``parties.signing`` (HMAC-SHA256) and every answer's
signature is checked. Everything runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from tests.integration.test_notify import (
    attempts_of,
    count,
    deliver_due,
    emit,
    event_of,
    job_of,
    make_merchant,
    rotate,
)
from tests.snapshots import snapshot
from tests.webhook_receiver import Answer
from typer.testing import CliRunner

from zhangfang.api.app import create_app
from zhangfang.cli.main import app as zhangfang_app
from zhangfang.config import Settings
from zhangfang.jobs.tables import jobs
from zhangfang.notify.tables import webhook_events, webhook_secrets
from zhangfang.parties import signing
from zhangfang.parties.models import Merchant

SRC = Path(__file__).resolve().parents[2] / "src"
ADMIN_KEY = "test-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
LEASE_SECONDS = 2


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    settings = Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        run_jobs_in_server=False,
    )
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client


@dataclass
class MerchantClient:
    """A merchant calling the API: HMAC-SHA256 signed requests, every signed answer checked."""

    http: TestClient
    merchant: Merchant

    def call(self, method: str, path: str, *, query: Any = None, key: str | None = None) -> Any:
        request = signing.sign_request(
            method=method,
            path=path,
            query=query,
            app_id=self.merchant.app_id,
            sign_type=signing.SIGN_TYPE_HMAC,
            hmac_secret=self.merchant.hmac_secret,
        )
        headers = {**request.headers, **({"Idempotency-Key": key} if key is not None else {})}
        response = self.http.request(method, request.url, content=request.body, headers=headers)
        assert response.status_code != 401, response.text
        signing.verify_platform_response(
            headers=response.headers, body=response.content, hmac_secret=self.merchant.hmac_secret
        )
        return response


def merchant_client(client: TestClient, engine: Engine, key: str) -> MerchantClient:
    return MerchantClient(http=client, merchant=make_merchant(engine, key))


def error_code(response: Any, status_code: int) -> str:
    assert response.status_code == status_code, response.text
    return response.json()["error"]["code"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def kill_the_schedule(engine: Engine, event_ref: str) -> None:
    """Run the event's ten attempts, time moving on to each one's due time."""
    event = event_of(engine, event_ref)
    at = now()
    for _ in range(10):
        deliver_due(engine, at)
        at = job_of(engine, event).run_at
    assert event_of(engine, event_ref).state == "dead"


# --------------------------------------------------------------------------- the merchant API


def test_a_merchant_lists_its_events_and_reads_one_with_every_attempt(client, engine, receiver):
    shop = merchant_client(client, engine, "merchant-a")
    receiver.plan("/flaky", Answer(503, body=b"busy"), Answer(204, body=b""))
    receiver.plan("/down", Answer(503))
    delivered = emit(engine, shop.merchant, f"{receiver.base_url}/flaky", key="a")
    pending = emit(engine, shop.merchant, f"{receiver.base_url}/down", key="b", event_type="refund.succeeded")
    deliver_due(engine)  # both fail once
    deliver_due(engine, job_of(engine, delivered).run_at)  # the first gets a 204 on its second attempt
    assert event_of(engine, delivered.ref).state == "delivered"

    listed = shop.call("GET", "/v1/merchant/webhooks/events")
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert [e["id"] for e in page["items"]] == [pending.ref, delivered.ref] and page["next_cursor"] is None
    assert page["items"][0]["type"] == "refund.succeeded" and page["items"][0]["state"] == "pending"
    only_delivered = shop.call("GET", "/v1/merchant/webhooks/events", query=[("state", "delivered")]).json()
    assert [e["id"] for e in only_delivered["items"]] == [delivered.ref]
    first = shop.call("GET", "/v1/merchant/webhooks/events", query=[("limit", "1")]).json()
    older = shop.call("GET", "/v1/merchant/webhooks/events", query=[("limit", "1"), ("cursor", first["next_cursor"])])
    assert [e["id"] for e in older.json()["items"]] == [delivered.ref]

    shown = shop.call("GET", f"/v1/merchant/webhooks/events/{delivered.ref}")
    assert shown.status_code == 200, shown.text
    detail = shown.json()
    assert (detail["id"], detail["state"], detail["attempt_count"]) == (delivered.ref, "delivered", 2)
    assert detail["data"] == {"order": "pay_1", "amount_minor": 1250, "currency": "CNY"}
    assert [(a["number"], a["status_code"], a["outcome"]) for a in detail["attempts"]] == [
        (1, 503, "failed"),
        (2, 204, "delivered"),
    ]
    assert detail["attempts"][0]["response_excerpt"] == "busy"
    assert "idempotency_key" not in detail and "job_id" not in detail

    refused = shop.call("GET", "/v1/merchant/webhooks/events", query=[("state", "lost")])
    assert error_code(refused, 422) == "webhook_event_state_invalid"
    assert error_code(shop.call("GET", "/v1/merchant/webhooks/events", query=[("limit", "0")]), 422) == "limit_invalid"


def test_a_merchant_replays_a_dead_event_and_it_arrives_again_with_the_same_webhook_id(client, engine, receiver):
    shop = merchant_client(client, engine, "merchant-a")
    receiver.secrets = [rotate(engine, shop.merchant)]
    receiver.plan("/down", *[Answer(500)] * 10, Answer(200))
    event = emit(engine, shop.merchant, f"{receiver.base_url}/down")
    kill_the_schedule(engine, event.ref)

    replayed = shop.call("POST", f"/v1/merchant/webhooks/events/{event.ref}/replay")
    assert replayed.status_code == 202, replayed.text
    assert (replayed.json()["id"], replayed.json()["state"]) == (event.ref, "pending")
    again = shop.call("POST", f"/v1/merchant/webhooks/events/{event.ref}/replay")
    assert error_code(again, 422) == "webhook_event_not_replayable"

    assert deliver_due(engine)["succeeded"] == 1
    requests = receiver.requests("/down")
    assert len(requests) == 11 and {r.webhook_id for r in requests} == {event.ref}
    assert all(r.verified_by == [0] for r in requests)
    detail = shop.call("GET", f"/v1/merchant/webhooks/events/{event.ref}").json()
    assert (detail["state"], detail["attempt_count"]) == ("delivered", 11)
    assert detail["attempts"][-1]["outcome"] == "delivered"


def test_another_merchants_event_is_not_found_to_read_or_to_replay(client, engine, receiver):
    shop, other = merchant_client(client, engine, "merchant-a"), merchant_client(client, engine, "merchant-b")
    event = emit(engine, shop.merchant, f"{receiver.base_url}/notify")
    deliver_due(engine)
    before = snapshot(
        engine,
        tables=(
            webhook_events,
            jobs,
        ),
    )
    not_found = "webhook_event_not_found"
    assert error_code(other.call("GET", f"/v1/merchant/webhooks/events/{event.ref}"), 404) == not_found
    assert error_code(other.call("POST", f"/v1/merchant/webhooks/events/{event.ref}/replay"), 404) == not_found
    missing = "msg_01J00000000000000000000000"
    assert error_code(other.call("GET", f"/v1/merchant/webhooks/events/{missing}"), 404) == not_found
    assert other.call("GET", "/v1/merchant/webhooks/events").json()["items"] == []
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
    assert shop.call("GET", f"/v1/merchant/webhooks/events/{event.ref}").status_code == 200


def test_a_rotated_secret_is_shown_once_a_retry_replays_that_answer_and_both_secrets_sign_for_a_while(
    client, engine, receiver
):
    shop = merchant_client(client, engine, "merchant-a")
    first = shop.call("POST", "/v1/merchant/webhooks/secret/rotate", key="rotate-1")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["secret"].startswith("whsec_") and body["previous_secret_expires_at"] is None
    retried = shop.call("POST", "/v1/merchant/webhooks/secret/rotate", key="rotate-1")
    assert retried.content == first.content and retried.headers["Idempotency-Replayed"] == "true"
    assert count(engine, webhook_secrets) == 1

    second = shop.call("POST", "/v1/merchant/webhooks/secret/rotate", key="rotate-2").json()
    assert second["secret"] != body["secret"]
    expires = dt.datetime.fromisoformat(second["previous_secret_expires_at"])
    assert 23.9 * 3600 < (expires - now()).total_seconds() <= 24 * 3600
    receiver.secrets = [body["secret"], second["secret"]]
    emit(engine, shop.merchant, f"{receiver.base_url}/notify")
    deliver_due(engine)
    [request] = receiver.requests()
    assert request.verified_by == [0, 1]

    missing_key = shop.call("POST", "/v1/merchant/webhooks/secret/rotate")
    assert error_code(missing_key, 422) == "request_invalid"
    assert count(engine, webhook_secrets) == 2


# --------------------------------------------------------------------------- the admin API and the CLI


def test_operators_list_read_and_replay_any_merchants_events(client, engine, receiver):
    shop_a, shop_b = make_merchant(engine, "merchant-a"), make_merchant(engine, "merchant-b")
    receiver.plan("/gone", Answer(410))
    event_a = emit(engine, shop_a, f"{receiver.base_url}/gone")
    event_b = emit(engine, shop_b, f"{receiver.base_url}/notify")
    deliver_due(engine)

    listed = client.get("/v1/admin/webhooks/events", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(e["id"], e["merchant_id"], e["state"]) for e in items] == [
        (event_b.ref, shop_b.ref, "delivered"),
        (event_a.ref, shop_a.ref, "disabled"),
    ]
    assert items[1]["idempotency_key"] == "pay_1:succeeded" and items[1]["job_id"].startswith("job_")
    mine = client.get("/v1/admin/webhooks/events", params={"merchant": shop_a.ref}, headers=ADMIN).json()
    assert [e["id"] for e in mine["items"]] == [event_a.ref]
    disabled = client.get("/v1/admin/webhooks/events", params={"state": "disabled"}, headers=ADMIN).json()
    assert [e["id"] for e in disabled["items"]] == [event_a.ref]
    shown = client.get(f"/v1/admin/webhooks/events/{event_a.ref}", headers=ADMIN).json()
    assert [(a["status_code"], a["outcome"]) for a in shown["attempts"]] == [(410, "gone")]

    replayed = client.post(f"/v1/admin/webhooks/events/{event_a.ref}/replay", headers=ADMIN)
    assert replayed.status_code == 202 and replayed.json()["replays"] == 1
    receiver.plan("/gone", Answer(200))
    deliver_due(engine)
    assert event_of(engine, event_a.ref).state == "delivered"
    assert [r.webhook_id for r in receiver.requests("/gone")] == [event_a.ref, event_a.ref]

    unknown = client.get("/v1/admin/webhooks/events", params={"merchant": "mch_nobody"}, headers=ADMIN)
    assert error_code(unknown, 404) == "merchant_not_found"
    assert error_code(client.get("/v1/admin/webhooks/events"), 401) == "admin_key_invalid"
    no_key = client.post(f"/v1/admin/webhooks/events/{event_a.ref}/replay")
    assert error_code(no_key, 401) == "admin_key_invalid"


def test_the_webhooks_cli_lists_shows_and_replays(database, engine, receiver):
    runner = CliRunner()

    def cli(*args: str, expect: int = 0) -> Any:
        result = runner.invoke(zhangfang_app, ["--database-url", database.url, "webhooks", *args])
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    merchant = make_merchant(engine)
    receiver.plan("/gone", Answer(410))
    event = emit(engine, merchant, f"{receiver.base_url}/gone")
    deliver_due(engine)

    listed = json.loads(cli("list", "--json").stdout)
    assert [(e["id"], e["state"]) for e in listed["items"]] == [(event.ref, "disabled")]
    assert event.ref in cli("list", "--state", "disabled").stdout
    assert json.loads(cli("list", "--state", "delivered", "--json").stdout)["items"] == []
    shown = json.loads(cli("show", event.ref, "--json").stdout)
    assert shown["attempts"][0]["status_code"] == 410 and shown["merchant_id"] == merchant.ref
    assert "gone" in cli("show", event.ref).stdout

    replayed = cli("replay", event.ref)
    assert "pending again" in replayed.stdout
    assert cli("replay", event.ref, expect=2).stderr.startswith("error: webhook_event_not_replayable: ")
    assert cli("show", "msg_nothing", expect=2).stderr.startswith("error: webhook_event_not_found: ")
    assert cli("list", "--state", "lost", expect=2).stderr.startswith("error: webhook_event_state_invalid: ")
    receiver.plan("/gone", Answer(200))
    deliver_due(engine)
    assert event_of(engine, event.ref).state == "delivered"


def test_the_openapi_lists_the_webhook_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/merchant/webhooks/events"]) == {"get"}
    assert set(paths["/v1/merchant/webhooks/events/{event_id}"]) == {"get"}
    assert set(paths["/v1/merchant/webhooks/events/{event_id}/replay"]) == {"post"}
    assert set(paths["/v1/merchant/webhooks/secret/rotate"]) == {"post"}
    assert set(paths["/v1/admin/webhooks/events"]) == {"get"}
    assert set(paths["/v1/admin/webhooks/events/{event_id}/replay"]) == {"post"}
    rotate_headers = {p["name"] for p in paths["/v1/merchant/webhooks/secret/rotate"]["post"]["parameters"]}
    assert {"Zhangfang-Signature", "Idempotency-Key"} <= rotate_headers


# --------------------------------------------------------------------------- crash


def start_worker(database_url: str, log: Path) -> subprocess.Popen[bytes]:
    """``zhangfang worker`` in a process of its own, with a short job lease."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "ZHANGFANG_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    command = [
        sys.executable,
        "-m",
        "zhangfang.cli.main",
        "--database-url",
        database_url,
        "worker",
        "--interval",
        "0.1",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_a_worker_killed_mid_delivery_leaves_every_webhook_delivered_at_least_once_with_its_id(
    database, engine, receiver, tmp_path
):
    merchant = make_merchant(engine)
    receiver.secrets = [rotate(engine, merchant)]
    receiver.hold("/crash")  # the first delivery hangs: the worker is mid-delivery when it dies
    events = [
        emit(engine, merchant, f"{receiver.base_url}/crash", key=f"pay_{n}:succeeded", data={"order": f"pay_{n}"})
        for n in range(5)
    ]
    log = tmp_path / "workers.log"

    first = start_worker(database.url, log)
    try:
        assert receiver.held.wait(timeout=30), log.read_text()
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    [interrupted] = receiver.requests("/crash")
    assert interrupted.verified_by == [0]
    # The dead worker had claimed every job; they stay leased to it until the lease runs out.
    assert {job_of(engine, e).state for e in events} == {"running"}
    receiver.release.set()

    second = start_worker(database.url, log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and {event_of(engine, e.ref).state for e in events} != {"delivered"}:
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            second.kill()
    assert {event_of(engine, e.ref).state for e in events} == {"delivered"}, log.read_text()

    requests = receiver.requests("/crash")
    assert all(r.verified_by == [0] for r in requests)
    sent = Counter(r.webhook_id for r in requests)
    assert set(sent) == {e.ref for e in events}  # every webhook at least once, under its own id
    assert sent[interrupted.webhook_id] >= 2  # the interrupted one again, with the same webhook-id
    bodies = {r.body for r in requests if r.webhook_id == interrupted.webhook_id}
    assert len(bodies) == 1
    log_of_interrupted = attempts_of(engine, interrupted.webhook_id)
    assert log_of_interrupted[0].outcome is None and log_of_interrupted[0].finished_at is None  # its worker died
    assert log_of_interrupted[-1].outcome == "delivered"
    assert {job_of(engine, e).state for e in events} == {"succeeded"}
