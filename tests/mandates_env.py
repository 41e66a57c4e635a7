"""The mandates test environment: a merchant, its payers, the bank simulator and the sandbox SMS gateway.

``MandatesEnv`` drives mandates without HTTP (service and flows, time passed
explicitly); the ``mandates_env`` fixture gives one on this test's database
with the sandbox's ICBC-like bank, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang.channels import registry as channel_registry
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import periodic, queue
from zhangfang.ledger import service as ledger
from zhangfang.ledger.tables import accounts
from zhangfang.mandates import flows, service
from zhangfang.mandates.models import Debit, Limits, Mandate, MandateRequest
from zhangfang.notify.tables import webhook_events
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant, MerchantRequest, SettlementAccount
from zhangfang.payments import flows as payment_flows
from zhangfang.payments import service as payments
from zhangfang.sandbox import sms
from zhangfang.sandbox.bank_direct import BankSimulator
from zhangfang.sandbox.environment import Sandbox

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
CHANNEL = "bank_direct:icbc"
NOTIFY_URL = "https://shop.example.com/notify"
ACCOUNT = "6222020200112233"
PHONE = "13800138000"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
LIMITS = Limits(per_debit=50_000, per_day=80_000, per_month=200_000, total=300_000)
SETTINGS = Settings(
    public_base_url="https://pay.example.com",
    mandate_retry_schedule="1d,2d",
    mandate_code_attempts_max=3,
)

_numbers = itertools.count(1)


def tx(engine: Engine, work: Callable[[Connection], Any]) -> Any:
    return run_in_transaction(engine, work)


@dataclass
class MandatesEnv:
    engine: Engine
    registry: ChannelRegistry
    bank: BankSimulator
    gateway: sms.SandboxSmsGateway
    now: dt.datetime = NOW
    notify_url: str = NOTIFY_URL

    @property
    def today(self) -> dt.date:
        """The business date (Asia/Shanghai) of ``now``."""
        return self.now.astimezone(SHANGHAI).date()

    def run_jobs(self, now: dt.datetime) -> int:
        """Runs the jobs due at ``now`` (the mandates' and payments' handlers living at ``now`` too), until
        none is left; returns how many ran."""
        ran = 0
        with pytest.MonkeyPatch.context() as patch:
            for module in (flows, payment_flows):
                patch.setattr(module, "_now", lambda given=None: now if given is None else given.astimezone(dt.UTC))
            for _ in range(50):
                claimed = queue.run_once(self.engine, worker_id="test-worker", limit=50, now=now)["claimed"]
                if not claimed:
                    return ran
                ran += claimed
        raise AssertionError("jobs still due after many rounds")

    def merchant(self, key: str = "shop", mcc: str = "5812") -> Merchant:
        request = MerchantRequest(
            key=key,
            name=f"商户 {key}",
            mcc=mcc,
            fee_rate="0.006",
            settlement_account=SettlementAccount("招商银行上海分行", "6214830212345678", "示例商户"),
            sign_type="HMAC-SHA256",
        )
        return tx(self.engine, lambda conn: parties.create_merchant(conn, request=request)).merchant

    def user(self, merchant: Merchant, external_ref: str = "payer-1") -> str:
        return tx(
            self.engine, lambda conn: parties.create_user(conn, merchant_id=merchant.id, external_ref=external_ref)
        )[0].ref

    def request(self, merchant: Merchant, **changes: Any) -> Mandate:
        user = changes.pop("user", None) or self.user(merchant)
        fields: dict[str, Any] = {
            "out_mandate_no": f"M{next(_numbers)}",
            "user": user,
            "account_number": ACCOUNT,
            "account_name": "张三",
            "phone": PHONE,
            "limits": LIMITS,
            "description": "会员月费",
            "notify_url": NOTIFY_URL,
            **changes,
        }
        result = flows.request_mandate(
            self.engine,
            merchant=merchant,
            request=MandateRequest(**fields),
            registry=self.registry,
            settings=SETTINGS,
            now=NOW,
        )
        return result.mandate

    def confirm(self, mandate: Mandate, code: str | None = None, now: dt.datetime = NOW) -> Mandate:
        code = code or self.gateway.last_code(mandate.phone)
        return flows.confirm(
            self.engine,
            ref=mandate.ref,
            code=code,
            merchant_id=mandate.merchant_id,
            registry=self.registry,
            settings=SETTINGS,
            now=now,
        )

    def active(self, merchant: Merchant, **changes: Any) -> Mandate:
        mandate = self.confirm(self.request(merchant, **changes))
        assert mandate.state == "active", mandate
        return mandate

    def debit(self, mandate: Mandate, amount: int = 10_000, **changes: Any) -> Debit:
        fields: dict[str, Any] = {"key": f"D{next(_numbers)}", "currency": "CNY", "now": NOW, **changes}
        return tx(
            self.engine,
            lambda conn: service.create_debit(
                conn, merchant_id=mandate.merchant_id, mandate_ref=mandate.ref, amount=amount, **fields
            ),
        )

    def run(self, debit: Debit, now: dt.datetime = NOW) -> str:
        return flows.execute_debit(self.engine, ref=debit.ref, registry=self.registry, settings=SETTINGS, now=now)

    def get(self, debit: Debit) -> Debit:
        return tx(self.engine, lambda conn: service.get_debit(conn, ref=debit.ref))

    def mandate(self, mandate: Mandate) -> Mandate:
        return tx(self.engine, lambda conn: service.get_mandate(conn, ref=mandate.ref))

    def order(self, debit: Debit) -> Any:
        ref = self.get(debit).order_ref
        return tx(self.engine, lambda conn: payments.get_order(conn, ref=ref))

    def events(self, prefix: str = "") -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(webhook_events.c.event_type).order_by(webhook_events.c.id)).all()
        return [row.event_type for row in rows if row.event_type.startswith(prefix)]

    def balance(self, key: str) -> int:
        periodic.fold(self.engine)

        def read(conn: Connection) -> int:
            row = conn.execute(sa.select(accounts.c.id).where(accounts.c.key == key)).first()
            return 0 if row is None else ledger.get_account(conn, ref=self.account_ref(conn, key)).balance.posted

        return tx(self.engine, read)

    @staticmethod
    def account_ref(conn: Connection, key: str) -> str:
        return conn.execute(sa.select(accounts.c.ref).where(accounts.c.key == key)).scalar_one()

    def books_balance(self) -> None:
        """Every account folded: total debits posted equal total credits posted."""
        periodic.fold(self.engine)
        with self.engine.connect() as conn:
            debits, credits = conn.execute(
                sa.select(sa.func.sum(accounts.c.debits_posted), sa.func.sum(accounts.c.credits_posted))
            ).one()
        assert int(debits or 0) == int(credits or 0)


@pytest.fixture
def mandates_env(engine: Engine, sandbox: Sandbox, sandbox_registry: ChannelRegistry) -> Iterator[MandatesEnv]:
    gateway = sms.SandboxSmsGateway()
    sms.install(gateway)
    channel_registry.install(sandbox_registry)
    payment_flows.install_settings(SETTINGS)
    try:
        yield MandatesEnv(engine, sandbox_registry, sandbox.banks["icbc"], gateway)
    finally:
        sms.install(None)
        channel_registry.install(None)
        payment_flows.install_settings(None)
