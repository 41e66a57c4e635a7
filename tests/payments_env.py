"""The whole payments stack for tests: sandbox channels, the API on a real port, merchants, a payer's browser.

Registered as a pytest plugin (``tests/conftest.py``): ``sandbox`` (the four
simulators, once per module) and ``payments`` (a ``PaymentsEnv`` on the test's
database, SQLite or PostgreSQL) are fixtures in every test module.

- ``payments.merchant()`` creates a merchant through the admin API (HMAC-SHA256
  by default, or RSA2) with a signing ``MerchantClient`` and a webhook secret the
  ``receiver`` verifies with.
- ``payments.create_order(shop, …)`` creates an order over the signed API.
- ``payments.pay(order, method)`` is the payer: the cashier page, the chosen
  method, the channel's own page, its pay button — over real HTTP.
- ``payments.run_jobs()`` runs the job queue in this process until it is idle
  (channel queries, closes, refunds, payouts, webhook deliveries).
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine

from zhangfang.api.app import create_app
from zhangfang.channels import registry as channel_registry
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import periodic, queue
from zhangfang.ledger import service as ledger
from zhangfang.notify import service as notify
from zhangfang.parties import signing
from zhangfang.parties.client import MerchantClient
from zhangfang.payments import flows, postings
from zhangfang.sandbox.environment import Sandbox, start_sandbox
from zhangfang.sandbox.server import RunningServer, serve_in_thread

ADMIN_KEY = "payments-test-key"
SETTLEMENT_ACCOUNT = {"bank_name": "招商银行上海分行", "account_number": "6214830212345678", "account_name": "示例商户"}
_QR = re.compile(r'data-qr-code="([^"]+)"')


@dataclass
class Shop:
    """A merchant as its own server sees itself: ids, a signing client, and its webhook secret."""

    ref: str
    id: int
    app_id: str
    sign_type: str
    client: MerchantClient
    webhook_secret: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PaymentsEnv:
    engine: Engine
    settings: Settings
    registry: ChannelRegistry
    sandbox: Sandbox
    server: RunningServer
    admin: httpx.Client
    receiver: Any

    @property
    def base_url(self) -> str:
        return self.server.base_url

    # -- merchants and orders

    def merchant(self, key: str = "shop", *, sign_type: str = "HMAC-SHA256", fee_rate: str = "0.006") -> Shop:
        body: dict[str, Any] = {
            "key": key,
            "name": f"商户 {key}",
            "mcc": "5812",
            "fee_rate": fee_rate,
            "settlement_account": SETTLEMENT_ACCOUNT,
            "sign_type": sign_type,
        }
        private_key: rsa.RSAPrivateKey | None = None
        if sign_type == signing.SIGN_TYPE_RSA2:
            private_key = signing.generate_private_key()
            body["public_key_pem"] = signing.public_key_pem(private_key)
        created = self.admin.post("/v1/admin/merchants", json=body)
        assert created.status_code == 201, created.text
        merchant = created.json()
        platform_key = self.admin.get("/v1/platform/public-key").json()["public_key_pem"]
        client = MerchantClient(
            self.base_url,
            app_id=merchant["app_id"],
            hmac_secret=merchant["hmac_secret"],
            private_key=private_key,
            platform_public_key=platform_key if private_key is not None else None,
        )
        internal_id = self.merchant_id(merchant["id"])
        secret = run_in_transaction(
            self.engine, lambda conn: notify.rotate_secret(conn, merchant_id=internal_id, grace_seconds=0)
        ).secret
        self.receiver.secrets = [*self.receiver.secrets, secret]
        return Shop(merchant["id"], internal_id, merchant["app_id"], sign_type, client, secret)

    def merchant_id(self, ref: str) -> int:
        from zhangfang.parties import service as parties

        return run_in_transaction(self.engine, lambda conn: parties.get_merchant(conn, ref=ref).id, readonly=True)

    def create_order(self, shop: Shop, out_trade_no: str, amount: int = 1999, **fields: Any) -> dict[str, Any]:
        body = {
            "out_trade_no": out_trade_no,
            "amount": amount,
            "currency": "CNY",
            "subject": "西湖龙井 250g",
            "notify_url": f"{self.receiver.base_url}/webhooks/{shop.ref}",
            "return_url": "https://shop.example/return",
            **fields,
        }
        response = shop.client.post("/v1/merchant/payments", body, idempotency_key=f"create:{out_trade_no}")
        assert response.status_code in (200, 201), response.text
        return response.json()

    def order(self, ref: str) -> dict[str, Any]:
        """The order as operators see it, with its attempts and refunds."""
        response = self.admin.get(f"/v1/admin/payments/{ref}")
        assert response.status_code == 200, response.text
        return response.json()

    # -- the payer

    def open_payment(self, order: dict[str, Any], method: str) -> tuple[httpx.Client, httpx.Response]:
        """The payer picks ``method`` at the cashier; returns the browser and the cashier's answer."""
        browser = httpx.Client(follow_redirects=False, timeout=10)
        page = browser.get(order["cashier_url"])
        assert page.status_code == 200, page.text
        return browser, browser.post(f"{order['cashier_url']}/pay", data={"method": method})

    def channel_page(self, browser: httpx.Client, answer: httpx.Response, method: str) -> str:
        """The URL of the channel's own pay page the payer lands on after the cashier."""
        if method == "wechatpay":
            match = _QR.search(answer.text)
            assert answer.status_code == 200 and match, answer.text
            return self.sandbox.wechatpay.cashier_url(match.group(1).replace("&amp;", "&"))
        assert answer.status_code == 303, answer.text
        landing = browser.get(answer.headers["location"], follow_redirects=True)
        assert landing.status_code == 200, landing.text
        return str(landing.url)

    def pay(self, order: dict[str, Any], method: str, *, outcome: str | None = None) -> httpx.Response:
        """The payer pays ``order`` with ``method`` through the cashier and the channel's page.

        Returns the channel's answer to the pay button (a redirect back to our
        cashier's return page, for the channels that have one).
        """
        browser, answer = self.open_payment(order, method)
        url = self.channel_page(browser, answer, method)
        if outcome is not None:
            url = f"{url}{'&' if '?' in url else '?'}outcome={outcome}"
        paid = browser.post(url, data={})
        assert paid.status_code in (200, 302, 303), paid.text
        return paid

    # -- time passing

    def run_jobs(self, *, now: dt.datetime | None = None, rounds_max: int = 50) -> int:
        """Runs due jobs (and hands expired orders to jobs) until none is left (``now``: pretend it is then).

        Returns how many jobs ran.

        With ``now``, the payment job handlers live at ``now`` too: the queue
        claims and records at ``now`` but calls each handler as ``fn(engine,
        job)``, and the payment handlers read the clock through ``flows._now``.
        """
        with pytest.MonkeyPatch.context() as patch:
            if now is not None:
                at = now
                patch.setattr(flows, "_now", lambda given=None: at if given is None else given.astimezone(dt.UTC))
            ran = 0
            for _ in range(rounds_max):
                periodic.hand_over_expired_payments(self.engine, now=now)  # a worker's round does this
                counts = queue.run_once(self.engine, worker_id="test-worker", limit=50, now=now)
                if not counts["claimed"]:
                    return ran
                ran += counts["claimed"]
        raise AssertionError("jobs still due after many rounds")

    def wait_for(self, predicate: Callable[[], Any], *, timeout_seconds: float = 10.0, jobs: bool = True) -> Any:
        """Polls ``predicate`` (running due jobs in between) until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout_seconds}s: {predicate}")
            if jobs:
                self.run_jobs()
            time.sleep(0.05)

    # -- the ledger

    def balance(self, key: str) -> int:
        """The posted balance of the ledger account with this key (0 when it does not exist yet)."""

        def read(conn: Any) -> int:
            found = ledger.list_accounts(conn, limit=500)
            for account in found.items:
                if account.key == key:
                    return account.balance.posted
            return 0

        return run_in_transaction(self.engine, read, readonly=True)

    def merchant_balance(self, shop: Shop) -> int:
        return self.balance(postings.merchant_pending_request(shop.ref, "CNY").key)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The four channel simulators, with fast notify retries, for one test module."""
    running = start_sandbox(Path(tmp_path_factory.mktemp("sandbox")), notify_delay_seconds=0.002)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sandbox_registry(sandbox: Sandbox) -> Iterator[ChannelRegistry]:
    """The sandbox's channels, loaded once per module (loading checks every key: a fraction of a second)."""
    registry = sandbox.registry()
    yield registry
    registry.close()


@pytest.fixture
def payments(
    engine: Engine, sandbox: Sandbox, sandbox_registry: ChannelRegistry, receiver: Any
) -> Iterator[PaymentsEnv]:
    """The API with payments on this test's database, on a real port the channels notify."""
    port = _free_port()
    settings = Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        run_jobs_in_server=False,
        public_base_url=f"http://127.0.0.1:{port}",
        payment_poll_schedule_seconds=(1, 2, 5),
        channel_failure_threshold=2,
        channel_cooldown_seconds=30,
        transaction_age_max_seconds=5,
    )
    registry = sandbox_registry
    app = create_app(settings, engine, registry=registry)
    server = serve_in_thread(app, port=port)
    admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    env = PaymentsEnv(engine, settings, registry, sandbox, server, admin, receiver)
    try:
        yield env
    finally:
        admin.close()
        server.stop()
        channel_registry.install(None)
        flows.install_settings(None)
