"""Installment plans (分期) over HTTP: a merchant signs a mandate up, posts a plan on it, reads it, repays it
early and cancels another; operators list and read plans; the CLI shows and cancels them.

The whole stack of ``tests/payments_env.py`` (API on a real port, sandbox banks,
the job queue run in this process); the payer's phone is the sandbox SMS gateway.
Every merchant request and answer is signed (``parties.client.MerchantClient``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.payments_env import PaymentsEnv, Shop
from typer.testing import CliRunner

from zhangfang.cli.main import app as cli_app
from zhangfang.jobs import periodic
from zhangfang.lending import installments
from zhangfang.sandbox import sms

PHONE = "13900139000"
PLANS = "/v1/installment-plans"


@pytest.fixture
def phone() -> Iterator[sms.SandboxSmsGateway]:
    gateway = sms.SandboxSmsGateway()
    sms.install(gateway)
    yield gateway
    sms.install(None)


def hook_url(payments: PaymentsEnv, shop: Shop) -> str:
    return f"{payments.receiver.base_url}/webhooks/{shop.ref}"


def events(payments: PaymentsEnv, shop: Shop) -> list[str]:
    return [request.json()["type"] for request in payments.receiver.requests(f"/webhooks/{shop.ref}")]


def active_mandate(payments: PaymentsEnv, shop: Shop, phone: sms.SandboxSmsGateway, number: str = "M1") -> str:
    user = shop.client.post("/v1/merchant/users", {"external_ref": f"payer-{number}"}, idempotency_key=f"u:{number}")
    assert user.status_code in (200, 201), user.text
    body = {
        "out_mandate_no": number,
        "user": user.json()["id"],
        "account_number": "6222020200445566",
        "account_name": "李四",
        "phone": PHONE,
        "limits": {"per_debit": 500_000, "per_day": 1_000_000, "per_month": 1_000_000},
        "description": "手机分期",
        "notify_url": hook_url(payments, shop),
    }
    created = shop.client.post("/v1/mandates", body, idempotency_key=f"mandate:{number}")
    assert created.status_code == 201, created.text
    mandate_id = created.json()["id"]
    confirmed = shop.client.request("POST", f"/v1/mandates/{mandate_id}/confirm", body={"code": phone.last_code(PHONE)})
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "active", confirmed.text
    return mandate_id


def today() -> dt.date:
    return installments.business_date(dt.datetime.now(dt.UTC))


def error_code(answer: httpx.Response) -> str:
    return answer.json()["error"]["code"]


def test_a_merchant_posts_a_plan_reads_it_and_its_first_period_is_collected(
    payments: PaymentsEnv, phone: sms.SandboxSmsGateway
) -> None:
    shop = payments.merchant()
    mandate = active_mandate(payments, shop, phone)
    days = [today(), today() + dt.timedelta(days=31)]
    body = {
        "key": "order-2026-001",
        "mandate": mandate,
        "periods": [
            {"due_date": days[0].isoformat(), "amount": 50_000},
            {"due_date": days[1].isoformat(), "amount": 49_900},
        ],
        "notify_url": hook_url(payments, shop),
    }
    created = shop.client.post(PLANS, body, idempotency_key="plan:1")
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["id"].startswith("ipl_") and plan["replayed"] is False
    assert (plan["mode"], plan["state"], plan["principal"], plan["merchant"]) == (
        "per_period",
        "active",
        99_900,
        shop.ref,
    )
    assert [(p["due_date"], p["amount"], p["state"]) for p in plan["periods"]] == [
        (days[0].isoformat(), 50_000, "scheduled"),
        (days[1].isoformat(), 49_900, "scheduled"),
    ]

    # the same request under the same Idempotency-Key: the stored answer again, byte for byte
    again = shop.client.post(PLANS, body, idempotency_key="plan:1")
    assert (again.status_code, again.headers.get("Idempotency-Replayed"), again.content) == (
        201,
        "true",
        created.content,
    )
    # the same plan key under another Idempotency-Key: the plan, replayed
    replayed = shop.client.post(PLANS, body, idempotency_key="plan:1-again")
    assert replayed.status_code == 200 and replayed.json()["replayed"] is True and replayed.json()["id"] == plan["id"]
    # the plan key for another plan: a conflict; the Idempotency-Key for another request: a conflict
    other = {**body, "periods": body["periods"][:1]}
    conflict = shop.client.post(PLANS, other, idempotency_key="plan:2")
    assert conflict.status_code == 409 and error_code(conflict) == "installment_plan_key_conflict"
    reused = shop.client.post(PLANS, {**other, "key": "order-2026-002"}, idempotency_key="plan:1")
    assert reused.status_code == 409 and error_code(reused) == "idempotency_key_conflict"

    read = shop.client.get(f"{PLANS}/{plan['id']}")
    assert read.status_code == 200 and read.json() == {k: v for k, v in plan.items() if k != "replayed"}

    # the worker's round: the first period is due today
    periodic.request_due_debits(payments.engine, today=today())
    payments.wait_for(lambda: "installment.paid" in events(payments, shop))
    paid = shop.client.get(f"{PLANS}/{plan['id']}").json()
    assert [p["state"] for p in paid["periods"]] == ["paid", "scheduled"] and paid["collected"] == 50_000
    assert paid["periods"][0]["debit"].startswith("dbt_")
    debit = shop.client.get(f"/v1/mandates/debits/{paid['periods'][0]['debit']}").json()
    assert (debit["purpose"], debit["purpose_ref"], debit["state"]) == ("installment", f"{plan['id']}:1", "succeeded")
    assert {"installment_plan.created", "installment.paid", "debit.succeeded"} <= set(events(payments, shop))

    # operators see every plan
    assert payments.admin.get(f"/v1/admin/installment-plans/{plan['id']}").json()["id"] == plan["id"]
    listed = payments.admin.get("/v1/admin/installment-plans", params={"merchant": shop.ref, "state": "active"})
    assert listed.status_code == 200 and [p["id"] for p in listed.json()["items"]] == [plan["id"]]
    assert payments.admin.get("/v1/admin/installment-plans", params={"state": "completed"}).json() == {"items": []}
    refused = payments.admin.get("/v1/admin/installment-plans", params={"state": "done"})
    assert refused.status_code == 422 and error_code(refused) == "request_invalid"


def test_refusals_carry_stable_codes_and_another_merchants_plan_is_not_found(
    payments: PaymentsEnv, phone: sms.SandboxSmsGateway
) -> None:
    shop, other = payments.merchant("shop"), payments.merchant("other")
    mandate = active_mandate(payments, shop, phone)
    base = {"key": "p1", "mandate": mandate, "principal": 300_000, "annual_rate": "0.12", "term": 3}

    def refused(body: dict[str, Any], client_shop: Shop = shop) -> tuple[int, str]:
        answer = client_shop.client.post(PLANS, body, idempotency_key=f"bad:{json.dumps(body, sort_keys=True)}"[:200])
        return answer.status_code, error_code(answer)

    assert refused({**base, "mode": "monthly"}) == (422, "installment_mode_unknown")
    assert refused({**base, "term": 0}) == (422, "period_count_invalid")
    assert refused({**base, "term": 121}) == (422, "installment_plan_invalid")
    assert refused({**base, "annual_rate": "abc"}) == (422, "annual_rate_invalid")
    assert refused({**base, "annual_rate": 0.12}) == (422, "request_invalid")  # never a JSON float
    assert refused({**base, "penalty_daily_rate": "0.5"}) == (422, "penalty_rate_invalid")
    assert refused({**base, "periods": [{"due_date": today().isoformat(), "amount": 1}]}) == (
        422,
        "installment_plan_invalid",
    )
    past = {"key": "p1", "mandate": mandate, "periods": [{"due_date": "2020-01-01", "amount": 100}]}
    assert refused(past) == (422, "installment_plan_invalid")
    assert refused({**base, "mandate": "mdt_01J0000000000000000000000"}) == (404, "mandate_not_found")
    assert refused(base, other) == (404, "mandate_not_found")  # another merchant's mandate

    plan = shop.client.post(PLANS, base, idempotency_key="good").json()
    for path in ("", "/early-repayment", "/cancel"):
        method = "GET" if not path else "POST"
        answer = other.client.request(method, f"{PLANS}/{plan['id']}{path}", idempotency_key="x" if path else None)
        assert (answer.status_code, error_code(answer)) == (404, "installment_plan_not_found"), path
    unsigned = httpx.get(f"{payments.base_url}{PLANS}/{plan['id']}")
    assert unsigned.status_code == 401 and error_code(unsigned) == "signature_missing"

    revoked = shop.client.request("POST", f"/v1/mandates/{mandate}/revoke", body={"by": "user"})
    assert revoked.status_code == 200
    assert refused({**base, "key": "p2"}) == (422, "installment_mandate_not_active")


def test_a_merchant_repays_one_plan_early_and_cancels_an_advance_plan(
    payments: PaymentsEnv, phone: sms.SandboxSmsGateway
) -> None:
    shop = payments.merchant()
    mandate = active_mandate(payments, shop, phone)
    terms = {"mandate": mandate, "principal": 300_000, "annual_rate": "0.12", "term": 3}
    plan = shop.client.post(PLANS, {**terms, "key": "early"}, idempotency_key="early").json()
    early = shop.client.post(f"{PLANS}/{plan['id']}/early-repayment", None, idempotency_key="early:repay")
    assert early.status_code == 201, early.text
    assert early.json()["debit"].startswith("dbt_")
    assert [p["state"] for p in early.json()["plan"]["periods"]] == ["collecting"] * 3
    busy = shop.client.post(f"{PLANS}/{plan['id']}/early-repayment", None, idempotency_key="early:repay-2")
    assert busy.status_code == 409 and error_code(busy) == "installment_debit_in_flight"
    payments.wait_for(lambda: shop.client.get(f"{PLANS}/{plan['id']}").json()["state"] == "completed")
    done = shop.client.get(f"{PLANS}/{plan['id']}").json()
    assert done["collected"] == 300_000 and all(p["interest"] == 0 for p in done["periods"])  # none was due

    advance = shop.client.post(PLANS, {**terms, "key": "advance", "mode": "advance"}, idempotency_key="adv")
    assert advance.status_code == 201 and advance.json()["advance_entry"] is not None
    balance = payments.merchant_balance(shop)
    cancelled = shop.client.post(f"{PLANS}/{advance.json()['id']}/cancel", None, idempotency_key="adv:cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert [p["state"] for p in cancelled.json()["periods"]] == ["cancelled"] * 3
    assert payments.merchant_balance(shop) == balance - 300_000  # the advance went back
    replay = shop.client.post(f"{PLANS}/{advance.json()['id']}/cancel", None, idempotency_key="adv:cancel")
    assert replay.headers.get("Idempotency-Replayed") == "true" and replay.content == cancelled.content
    twice = shop.client.post(f"{PLANS}/{advance.json()['id']}/cancel", None, idempotency_key="adv:cancel-2")
    assert twice.status_code == 409 and error_code(twice) == "installment_plan_not_active"


def test_an_operator_lists_shows_and_cancels_plans_on_the_command_line(
    payments: PaymentsEnv, phone: sms.SandboxSmsGateway
) -> None:
    shop = payments.merchant()
    mandate = active_mandate(payments, shop, phone)
    body = {"key": "cli", "mandate": mandate, "principal": 300_000, "annual_rate": "0.12", "term": 3}
    plan = shop.client.post(PLANS, body, idempotency_key="cli").json()
    url = payments.engine.url.render_as_string(hide_password=False)
    runner = CliRunner()

    def cli(*args: str, expect: int = 0) -> Any:
        result = runner.invoke(cli_app, ["--database-url", url, "lending", *args])
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    assert [p["id"] for p in json.loads(cli("plans", "--merchant", shop.ref, "--json").stdout)] == [plan["id"]]
    assert plan["id"] in cli("plans").stdout
    assert json.loads(cli("plan", plan["id"], "--json").stdout)["periods"] == plan["periods"]
    assert "equal-installment" in cli("plan", plan["id"]).stdout
    cancelled = json.loads(cli("plan-cancel", plan["id"], "--json").stdout)
    assert cancelled["state"] == "cancelled"
    again = cli("plan-cancel", plan["id"], expect=2)
    assert again.stderr.startswith("error: installment_plan_not_active: ") and again.stderr.count("\n") == 1
    missing = cli("plan", "ipl_nope", expect=2)
    assert missing.stderr.startswith("error: installment_plan_not_found: ")
    bad = cli("plans", "--state", "done", expect=2)
    assert bad.stderr.startswith("error: installment_plan_state_invalid: ")
