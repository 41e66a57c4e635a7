"""A ``zhangfang worker`` killed (SIGKILL) in the middle of delivering a payment webhook loses and doubles nothing.

Orders are paid through the sandbox channels and the payer's browser; their
notifies are applied by the API served in this process. One order's notify is
held back at the bank, so that only a worker's query of the bank books it. Then
a worker process runs the job queue, and is killed while the merchant's
endpoint holds its first webhook delivery open. A second worker takes over once
the dead one's leases run out. Every payment must then be in the ledger exactly
once, and every ``payment.succeeded`` webhook delivered at least once, always
with the same ``webhook-id`` and the same body. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tests.payments_env import PaymentsEnv

from zhangfang.ledger.tables import journal_entries

SRC = Path(__file__).resolve().parents[2] / "src"
LEASE_SECONDS = 2
WAIT_SECONDS = 30
AMOUNT = 12345
FEE = 74  # 12345 × 0.006 = 74.07, rounded half up
WAYS = [  # (payer method, channel) of each order; ICBC's second order is the one whose notify never comes
    ("alipay", "alipay"),
    ("wechatpay", "wechatpay"),
    ("bank_card", "bank_direct:icbc"),
    ("bank_card", "bank_direct:cmb"),
    ("bank_card", "bank_direct:icbc"),
]


def start_worker(database_url: str, payments: PaymentsEnv, log: Path) -> subprocess.Popen[bytes]:
    """``zhangfang worker`` in a process of its own: the sandbox's channels, our base URL, a short job lease."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "ZHANGFANG_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "ZHANGFANG_CHANNELS_FILE": str(payments.sandbox.config_path),
        "ZHANGFANG_PUBLIC_BASE_URL": payments.base_url,
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


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def payment_entries(engine: Engine) -> dict[str, list[str]]:
    """For each order, the business codes of the ledger entries booking its payment."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(journal_entries.c.business_code, journal_entries.c.metadata).where(
                journal_entries.c.business_code.in_(["payment", "duplicate_payment"])
            )
        ).all()
    booked: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        booked[(row.metadata or {})["payment"]].append(row.business_code)
    return dict(booked)


def test_a_worker_killed_mid_webhook_leaves_every_payment_booked_once_and_every_webhook_delivered_with_its_id(
    database: Any, payments: PaymentsEnv, tmp_path: Path
) -> None:
    shop = payments.merchant()
    icbc = payments.sandbox.banks["icbc"]
    orders = []
    for number, (method, channel) in enumerate(WAYS, start=1):
        preferred = channel if method == "bank_card" else None
        order = payments.create_order(shop, f"T-{number}", amount=AMOUNT, preferred_channel=preferred)
        last = number == len(WAYS)
        icbc.delay_notify(3600 if last else 0)  # the bank holds this notify back for an hour
        try:
            payments.pay(order, method)
        finally:
            icbc.delay_notify(0)
        orders.append(order)
    by_notify, by_query = orders[:-1], orders[-1]
    for order in by_notify:
        payments.wait_for(lambda order=order: payments.order(order["id"])["state"] == "succeeded", jobs=False)
    assert payments.order(by_query["id"])["state"] == "pending"
    assert [payments.order(o["id"])["channel"] for o in by_notify] == [channel for _, channel in WAYS[:-1]]

    path = f"/webhooks/{shop.ref}"
    payments.receiver.hold(path)  # the first delivery hangs: the worker is mid-delivery when it dies
    log = tmp_path / "workers.log"
    first = start_worker(database.url, payments, log)
    try:
        assert payments.receiver.held.wait(timeout=WAIT_SECONDS), log.read_text()
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    [interrupted] = payments.receiver.requests(path)
    payments.receiver.release.set()

    def events() -> list[dict[str, Any]]:
        answer = payments.admin.get("/v1/admin/webhooks/events", params={"merchant": shop.ref})
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    def all_done() -> bool:
        paid = all(payments.order(o["id"])["state"] == "succeeded" for o in orders)
        found = events()
        return paid and len(found) == len(orders) and {e["state"] for e in found} == {"delivered"}

    second = start_worker(database.url, payments, log)
    try:
        payments.wait_for(all_done, timeout_seconds=WAIT_SECONDS, jobs=False)
    except AssertionError:
        raise AssertionError(f"not done: {events()}\n{log.read_text()}") from None
    finally:
        stop(second)

    # The ledger has each payment exactly once, the one our query found included.
    assert payment_entries(payments.engine) == {o["id"]: ["payment"] for o in orders}
    assert payments.balance("channel:alipay:clearing") == AMOUNT
    assert payments.balance("channel:wechatpay:clearing") == AMOUNT
    assert payments.balance("channel:bank_direct:icbc:clearing") == 2 * AMOUNT
    assert payments.balance("channel:bank_direct:cmb:clearing") == AMOUNT
    assert payments.merchant_balance(shop) == len(orders) * (AMOUNT - FEE)
    assert payments.balance("platform:fee_income") == len(orders) * FEE
    assert payments.order(by_query["id"])["fee"] == FEE

    # Every webhook arrived at least once, each time with its own webhook-id and the very same body.
    received = payments.receiver.requests(path)
    assert all(r.verified_by == [0] for r in received), [r.verified_by for r in received]
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in received:
        bodies[request.webhook_id].add(request.body)
    assert set(bodies) == {e["id"] for e in events()}
    assert all(len(sent) == 1 for sent in bodies.values()), bodies
    assert len([r for r in received if r.webhook_id == interrupted.webhook_id]) >= 2  # sent again after the kill
    told = {}
    for request in received:
        body = request.json()
        assert body["type"] == "payment.succeeded"
        told[body["data"]["id"]] = body["data"]
    assert set(told) == {o["id"] for o in orders}
    for order in orders:
        answer = shop.client.get(f"/v1/merchant/payments/{order['id']}")
        assert answer.status_code == 200, answer.text
        assert told[order["id"]] == answer.json()
