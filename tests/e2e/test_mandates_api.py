"""Withholding mandates over HTTP: a merchant requests, the payer authorizes by text-message code, the
merchant debits one by one and by batch file, the bank simulator answers, webhooks arrive signed.

The whole stack of ``tests/payments_env.py`` (API on a real port, sandbox banks,
the job queue run in this process); the payer's phone is the sandbox SMS gateway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from tests.payments_env import PaymentsEnv, Shop

from zhangfang.mandates import service
from zhangfang.sandbox import sms

PHONE = "13900139000"


@pytest.fixture
def phone() -> Iterator[sms.SandboxSmsGateway]:
    gateway = sms.SandboxSmsGateway()
    sms.install(gateway)
    yield gateway
    sms.install(None)


def hook_url(payments: PaymentsEnv, shop: Shop) -> str:
    return f"{payments.receiver.base_url}/webhooks/{shop.ref}"


def new_user(shop: Shop, external_ref: str = "payer-1") -> str:
    answer = shop.client.post("/v1/merchant/users", {"external_ref": external_ref}, idempotency_key=f"u:{external_ref}")
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["id"]


def request_mandate(payments: PaymentsEnv, shop: Shop, number: str = "M1", **fields: Any) -> dict[str, Any]:
    body = {
        "out_mandate_no": number,
        "user": new_user(shop),
        "account_number": "6222020200445566",
        "account_name": "李四",
        "phone": PHONE,
        "limits": {"per_debit": 100_000, "per_day": 150_000, "per_month": 500_000},
        "description": "物业费",
        "notify_url": hook_url(payments, shop),
        **fields,
    }
    answer = shop.client.post("/v1/mandates", body, idempotency_key=f"mandate:{number}")
    assert answer.status_code == 201, answer.text
    return answer.json()


def confirm(shop: Shop, mandate_id: str, code: str | None) -> Any:
    return shop.client.request("POST", f"/v1/mandates/{mandate_id}/confirm", body={"code": code})


def active_mandate(payments: PaymentsEnv, shop: Shop, phone: sms.SandboxSmsGateway, number: str = "M1") -> dict:
    created = request_mandate(payments, shop, number)
    answer = confirm(shop, created["id"], phone.last_code(PHONE))
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "active"
    return answer.json()


def events(payments: PaymentsEnv, shop: Shop) -> list[str]:
    return [request.json()["type"] for request in payments.receiver.requests(f"/webhooks/{shop.ref}")]


def test_a_payer_authorizes_by_code_and_the_merchant_debits(
    payments: PaymentsEnv, phone: sms.SandboxSmsGateway
) -> None:
    shop = payments.merchant()
    created = request_mandate(payments, shop)
    assert created["state"] == "pending_authorization" and created["replayed"] is False
    assert created["account_number_masked"] == "****5566" and created["phone_masked"] == "****9000"
    [message] = phone.messages(PHONE)
    assert "物业费" in message.text and message.code is not None

    wrong = "000000" if message.code != "000000" else "111111"
    refused = confirm(shop, created["id"], wrong)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "authorization_code_wrong"
    answer = confirm(shop, created["id"], message.code)
    assert answer.status_code == 200 and answer.json()["state"] == "active"
    assert answer.json()["agreement_no"]

    debit = shop.client.post(
        f"/v1/mandates/{created['id']}/debits",
        {"out_debit_no": "D1", "amount": 8_800, "description": "2026年12月物业费"},
        idempotency_key="debit:D1",
    )
    assert debit.status_code == 201, debit.text
    assert debit.json()["state"] == "pending"
    payments.wait_for(lambda: "debit.succeeded" in events(payments, shop))
    found = shop.client.get(f"/v1/mandates/debits/{debit.json()['id']}").json()
    assert found["state"] == "succeeded" and found["payment"].startswith("pay_")
    order = shop.client.get(f"/v1/merchant/payments/{found['payment']}").json()
    assert order["state"] == "succeeded" and order["amount"] == 8_800 and order["method"] == "withhold"
    assert payments.merchant_balance(shop) == 8_800 - order["fee"]
    assert events(payments, shop) == ["mandate.activated", "debit.succeeded"]
    # Every webhook verified with the merchant's secret.
    assert all(request.verified_by for request in payments.receiver.requests(f"/webhooks/{shop.ref}"))


def test_another_merchant_cannot_see_or_debit_a_mandate(payments: PaymentsEnv, phone: sms.SandboxSmsGateway) -> None:
    shop, other = payments.merchant("shop"), payments.merchant("other")
    mandate = active_mandate(payments, shop, phone)
    assert other.client.get(f"/v1/mandates/{mandate['id']}").json()["error"]["code"] == "mandate_not_found"
    refused = other.client.post(
        f"/v1/mandates/{mandate['id']}/debits", {"out_debit_no": "X", "amount": 100}, idempotency_key="x"
    )
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "mandate_not_found"


def test_revoking_refuses_debits_at_once(payments: PaymentsEnv, phone: sms.SandboxSmsGateway) -> None:
    shop = payments.merchant()
    mandate = active_mandate(payments, shop, phone)
    tomorrow = (service.business_date(dt.datetime.now(dt.UTC)) + dt.timedelta(days=1)).isoformat()
    later = shop.client.post(
        f"/v1/mandates/{mandate['id']}/debits",
        {"out_debit_no": "D2", "amount": 500, "due_date": tomorrow},
        idempotency_key="debit:D2",
    ).json()
    revoked = shop.client.request("POST", f"/v1/mandates/{mandate['id']}/revoke", body={"by": "user", "reason": "搬家"})
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert revoked.json()["revoked_by"] == "user"
    found = shop.client.get(f"/v1/mandates/debits/{later['id']}").json()
    assert (found["state"], found["failure_class"], found["failure_code"]) == ("failed", "hard", "mandate_revoked")
    refused = shop.client.post(
        f"/v1/mandates/{mandate['id']}/debits", {"out_debit_no": "D3", "amount": 500}, idempotency_key="debit:D3"
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "mandate_not_active"
    payments.wait_for(lambda: "debit.failed" in events(payments, shop))
    assert {"mandate.activated", "mandate.revoked", "debit.failed"} <= set(events(payments, shop))


def test_a_batch_file_is_checked_as_a_whole_and_reported_row_by_row(
    payments: PaymentsEnv, phone: sms.SandboxSmsGateway
) -> None:
    shop = payments.merchant()
    mandate = active_mandate(payments, shop, phone)
    today = service.business_date(dt.datetime.now(dt.UTC)).isoformat()
    header = "merchant_batch_no,row_no,mandate,amount,due_date,reference\n"
    bad = header + f"B1,1,{mandate['id']},1.234,{today},x\nB1,1,{mandate['id']},1.00,{today},y\n"
    refused = shop.client.post("/v1/mandates/batches", {"content": bad}, idempotency_key="batch:bad")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "batch_file_invalid"
    assert [(p["line"], p["code"]) for p in error["details"]["errors"]] == [
        (2, "amount_invalid"),
        (3, "row_no_duplicate"),
    ]

    good = header + (
        f"B1,1,{mandate['id']},12.34,{today},INV-1\n"
        f"B1,2,{mandate['id']},1000.01,{today},too much\n"
        f"B1,3,{mandate['id']},5.00,{today},INV-3\n"
    )
    payments.sandbox.banks["icbc"].withhold_next("success", "account_closed")
    created = shop.client.post(
        "/v1/mandates/batches", {"content": good, "notify_url": hook_url(payments, shop)}, idempotency_key="batch:B1"
    )
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["row_count"] == 3 and batch["amount_total"] == 101_735
    payments.wait_for(lambda: "debit_batch.finished" in events(payments, shop))
    results = shop.client.get(f"/v1/mandates/batches/{batch['id']}/results")
    assert results.status_code == 200 and results.headers["content-type"].startswith("text/csv")
    lines = [line.split(",") for line in results.text.strip().split("\n")]
    assert lines[0][:7] == ["merchant_batch_no", "row_no", "mandate", "amount", "due_date", "reference", "state"]
    assert [(line[1], line[3], line[6], line[7], line[8]) for line in lines[1:]] == [
        ("1", "12.34", "succeeded", "", ""),
        ("2", "1000.01", "failed", "hard", "amount_exceeds_debit_limit"),
        ("3", "5.00", "failed", "hard", "account_closed"),
    ]
    status = shop.client.get(f"/v1/mandates/batches/{batch['id']}").json()
    assert status["state"] == "finished" and status["counts"]["succeeded"] == 1 and status["counts"]["failed"] == 2
