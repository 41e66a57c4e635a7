"""Loans over HTTP (``/v1/lending``), on SQLite and PostgreSQL: operators lend, take repayments, read aging.

The worked loan: 10,000.00 at 12 % a year over 3 months, equal installments, from 2026-01-15 (30/360):
installments of 3400.22 (3300.22 principal + 100.00 interest), 3400.22 and 3400.23, due on the 15th.
Penalty (罚息) is 0.05 % a day of overdue principal: 3300.22 overdue for 14 days on 2026-03-01 is 23.10.
Refusals are checked for their stable code and for changing nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from zhangfang import ids
from zhangfang.api.app import create_app
from zhangfang.config import Settings
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.ledger.tables import journal_entries
from zhangfang.lending.tables import loan_installments, loan_repayments, loans
from zhangfang.payments import postings

ADMIN_KEY = "lending-test-key"
BASE = "/v1/lending"
START = "2026-01-15"
PRINCIPAL = 1_000_000


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    settings = Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        transaction_age_max_seconds=10,
        run_jobs_in_server=False,
    )
    with TestClient(create_app(settings, engine), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as test_client:
        yield test_client


@pytest.fixture
def merchant(client: TestClient) -> str:
    created = client.post(
        "/v1/admin/merchants",
        json={
            "key": "noodle-shop",
            "name": "兰州拉面",
            "mcc": "5812",
            "fee_rate": "0.006",
            "settlement_account": {
                "bank_name": "招商银行",
                "account_number": "6214830212345678",
                "account_name": "店主",
            },
            "sign_type": "HMAC-SHA256",
        },
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


def loan_body(merchant: str, key: str = "loan-1", **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "merchant": merchant,
        "principal": PRINCIPAL,
        "annual_rate": "0.12",
        "periods": 3,
        "start": START,
        "kind": "term",
        **fields,
    }


def lend(client: TestClient, merchant: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{BASE}/loans", json=loan_body(merchant, **fields))
    assert response.status_code == 201, response.text
    return response.json()


def error_of(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    return response.json()["error"]


def balance(engine: Engine, key: str) -> int:
    def read(conn: Any) -> int:
        for account in ledger.list_accounts(conn, limit=500).items:
            if account.key == key:
                return account.balance.posted
        return 0

    return run_in_transaction(engine, read, readonly=True)


def merchant_balance(engine: Engine, merchant: str) -> int:
    return balance(engine, f"merchant:{merchant}:pending_settlement")


def fund(engine: Engine, merchant: str, amount: int) -> None:
    """The merchant's balance grows by ``amount``, as if a settlement had brought it (the money to pay interest)."""

    def post(conn: Any) -> None:
        source = AccountRequest(key="test:funding", ledger_code="test_funding", currency="CNY", normal_side="debit")
        legs = (
            Leg(ledger.open_account(conn, request=source)[0].ref, "debit", amount, "CNY"),
            Leg(ledger.open_account(conn, request=postings.merchant_pending_request(merchant, "CNY"))[0].ref,
                "credit", amount, "CNY"),
        )  # fmt: skip
        ledger.post_entry(
            conn, request=EntryRequest(idempotency_key=f"fund:{merchant}:{amount}", business_code="test", legs=legs)
        )

    run_in_transaction(engine, post)


def counts(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (loans, loan_installments, loan_repayments, journal_entries)
        )


def test_a_term_drawdown_credits_the_merchant_and_its_key_replays_the_loan(client, engine, merchant):
    loan = lend(client, merchant)

    assert (loan["merchant"], loan["kind"], loan["state"], loan["principal"]) == (merchant, "term", "active", PRINCIPAL)
    assert loan["annual_rate"] == "0.12" and loan["allocation_order"] == ["penalty", "fee", "interest", "principal"]
    assert [(i["due_date"], i["principal"], i["interest"]) for i in loan["installments"]] == [
        ("2026-02-15", 330022, 10000),
        ("2026-03-15", 333322, 6700),
        ("2026-04-15", 336656, 3367),
    ]
    assert sum(i["principal"] for i in loan["installments"]) == PRINCIPAL
    assert merchant_balance(engine, merchant) == PRINCIPAL
    assert balance(engine, f"merchant:{merchant}:loan_principal") == PRINCIPAL

    before = counts(engine)
    replayed = client.post(f"{BASE}/loans", json=loan_body(merchant))
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["id"] == loan["id"]
    conflict = error_of(client.post(f"{BASE}/loans", json=loan_body(merchant, principal=PRINCIPAL + 1)), 409)
    assert (conflict["code"], conflict["field"]) == ("loan_key_conflict", "key")
    assert counts(engine) == before
    assert merchant_balance(engine, merchant) == PRINCIPAL

    listed = client.get(f"{BASE}/loans", params={"merchant": merchant, "state": "active"}).json()["loans"]
    assert [item["id"] for item in listed] == [loan["id"]]
    assert client.get(f"{BASE}/loans", params={"state": "settled"}).json()["loans"] == []


def test_a_pos_loan_beyond_the_credit_line_is_refused_and_writes_nothing(client, engine, merchant):
    line = client.get(f"{BASE}/credit-line/{merchant}", params={"as_of": START})
    assert line.status_code == 200, line.text
    assert line.json() == {
        "merchant_ref": merchant,
        "as_of": START,
        "settled_volume": 0,
        "limit": 0,
        "outstanding_principal": 0,
        "available": 0,
    }
    before = counts(engine)

    refused = error_of(client.post(f"{BASE}/loans", json=loan_body(merchant, kind="pos")), 422)

    assert (refused["code"], refused["field"], refused["details"]) == (
        "credit_line_exceeded",
        "principal",
        {"available": 0},
    )
    assert counts(engine) == before
    assert merchant_balance(engine, merchant) == 0


def test_a_repayment_pays_what_is_due_first_in_the_loans_order_and_its_key_replays_it(client, engine, merchant):
    loan = lend(client, merchant)
    url = f"{BASE}/loans/{loan['id']}/repayments"

    shown = client.get(f"{BASE}/loans/{loan['id']}", params={"as_of": "2026-03-01"}).json()
    assert shown["owed"] == 330022 + 10000 + 2310  # the overdue installment and 14 days of penalty
    assert [i["state"] for i in shown["installments"]] == ["overdue", "pending", "pending"]

    paid = client.post(url, json={"amount": 350000, "source": "manual", "key": "pay-1", "as_of": "2026-03-01"})

    assert paid.status_code == 201, paid.text
    repayment = paid.json()
    assert (repayment["applied"], repayment["overpayment"], repayment["replayed"]) == (350000, 0, False)
    # Penalty, then interest, then principal of the overdue period; what is left goes to the current one.
    assert repayment["split"] == [
        {"period": 1, "penalty": 2310, "interest": 10000, "principal": 330022},
        {"period": 2, "penalty": 0, "interest": 6700, "principal": 968},
    ]
    assert merchant_balance(engine, merchant) == PRINCIPAL - 350000
    assert balance(engine, f"merchant:{merchant}:loan_principal") == PRINCIPAL - 330022 - 968
    assert balance(engine, f"merchant:{merchant}:interest_receivable") == 0  # accrued, then paid
    assert balance(engine, "platform:interest_income") == 2310 + 10000 + 6700

    before = counts(engine)
    again = client.post(url, json={"amount": 350000, "source": "manual", "key": "pay-1", "as_of": "2026-03-01"})
    assert again.status_code == 200, again.text
    assert (again.json()["ref"], again.json()["replayed"]) == (repayment["ref"], True)
    conflict = error_of(client.post(url, json={"amount": 1, "source": "manual", "key": "pay-1"}), 409)
    assert conflict["code"] == "repayment_key_conflict"
    assert counts(engine) == before

    listed = client.get(url).json()
    assert [item["ref"] for item in listed["repayments"]] == [repayment["ref"]]
    after = client.get(f"{BASE}/loans/{loan['id']}", params={"as_of": "2026-03-01"}).json()
    assert [i["state"] for i in after["installments"]] == ["paid", "pending", "pending"]
    assert after["outstanding_principal"] == PRINCIPAL - 330022 - 968


def test_a_loan_paid_in_full_is_settled_and_takes_nothing_more(client, engine, merchant):
    loan = lend(client, merchant)
    fund(engine, merchant, 100000)
    url = f"{BASE}/loans/{loan['id']}/repayments"
    owed = client.get(f"{BASE}/loans/{loan['id']}", params={"as_of": "2026-04-15"}).json()["owed"]

    paid = client.post(url, json={"amount": owed + 500, "source": "manual", "key": "all", "as_of": "2026-04-15"})

    assert paid.status_code == 201, paid.text
    assert (paid.json()["applied"], paid.json()["overpayment"]) == (owed, 500)
    shown = client.get(f"{BASE}/loans/{loan['id']}").json()
    assert (shown["state"], shown["outstanding_principal"], shown["owed"]) == ("settled", 0, 0)
    assert merchant_balance(engine, merchant) == PRINCIPAL + 100000 - owed  # the overpayment is not taken
    refused = error_of(client.post(url, json={"amount": 100, "source": "manual", "key": "more"}), 409)
    assert refused["code"] == "loan_settled"
    assert client.get(f"{BASE}/aging", params={"as_of": "2026-06-01"}).json()["loan_count"] == 0


def test_aging_moves_an_unpaid_loan_through_the_buckets_as_time_passes(client, merchant):
    loan = lend(client, merchant)

    def bucket_of(as_of: str) -> tuple[str, int]:
        report = client.get(f"{BASE}/aging", params={"as_of": as_of})
        assert report.status_code == 200, report.text
        body = report.json()
        assert [row["bucket"] for row in body["rows"]] == ["current", "M1", "M2", "M3+"]
        assert sum(row["loan_count"] for row in body["rows"]) == body["loan_count"] == 1
        assert body["outstanding_principal"] == PRINCIPAL
        (line,) = body["lines"]
        assert line["loan"] == loan["id"]
        assert [row["loan_count"] for row in body["rows"] if row["bucket"] == line["bucket"]] == [1]
        return line["bucket"], line["days_past_due"]

    assert bucket_of("2026-02-15") == ("current", 0)  # due today is not late yet
    assert bucket_of("2026-02-16") == ("M1", 1)
    assert bucket_of("2026-03-20") == ("M2", 33)
    assert bucket_of("2026-04-20") == ("M3+", 64)


def test_accrual_recognises_interest_due_and_penalty_once(client, engine, merchant):
    lend(client, merchant)
    receivable = f"merchant:{merchant}:interest_receivable"

    first = client.post(f"{BASE}/accrue", params={"as_of": "2026-03-01"})
    assert first.status_code == 200, first.text
    assert first.json() == {"as_of": "2026-03-01", "loans_accrued": 1}
    assert balance(engine, receivable) == 10000 + 2310

    assert client.post(f"{BASE}/accrue", params={"as_of": "2026-03-01"}).json()["loans_accrued"] == 0
    assert balance(engine, receivable) == 10000 + 2310
    assert balance(engine, "platform:interest_income") == 10000 + 2310


def test_a_repayment_beyond_the_merchants_balance_is_refused_by_the_ledger(client, engine, merchant):
    loan = lend(client, merchant, principal=10000, periods=1)
    before = counts(engine)

    refused = client.post(
        f"{BASE}/loans/{loan['id']}/repayments",
        json={"amount": 10100, "source": "manual", "key": "short", "as_of": "2026-02-15"},
    )

    assert error_of(refused, 422)["code"] == "debits_exceed_credits"
    assert counts(engine) == before
    assert merchant_balance(engine, merchant) == 10000


def test_unknown_loans_and_merchants_are_404(client, merchant):
    missing = ids.new_id("loan")
    for path in (f"/loans/{missing}", f"/loans/{missing}/repayments", "/loans/not-a-loan"):
        assert error_of(client.get(f"{BASE}{path}"), 404)["code"] == "loan_not_found", path
    repay = client.post(f"{BASE}/loans/{missing}/repayments", json={"amount": 1, "source": "manual", "key": "k"})
    assert error_of(repay, 404)["code"] == "loan_not_found"
    nobody = ids.new_id("mch")
    assert error_of(client.post(f"{BASE}/loans", json=loan_body(nobody)), 404)["code"] == "merchant_not_found"
    assert error_of(client.get(f"{BASE}/credit-line/{nobody}"), 404)["code"] == "merchant_not_found"


@pytest.mark.parametrize(
    "fields, code, field",
    [
        ({"key": ""}, "idempotency_key_invalid", "key"),
        ({"kind": "payday"}, "loan_kind_unknown", "kind"),
        ({"kind": "pos", "settlement_share": "1.5"}, "settlement_share_invalid", "settlement_share"),
        ({"penalty_daily_rate": "0.5"}, "penalty_rate_invalid", "penalty_daily_rate"),
        ({"principal": 0}, "amount_must_be_positive", "principal"),
        ({"principal": 10**16}, "loan_principal_too_large", "principal"),
        ({"annual_rate": "twelve"}, "annual_rate_invalid", "annual_rate"),
        ({"annual_rate": "-0.1"}, "annual_rate_invalid", "annual_rate"),
        ({"periods": 0}, "period_count_invalid", "periods"),
        ({"method": "balloon"}, "amortization_method_unknown", "method"),
        ({"start": "1800-01-01"}, "start_date_invalid", "start"),
        ({"day_count": "actual/actual"}, "day_count_unknown", "day_count"),
        ({"currency": "QQQ"}, "currency_unknown", "currency"),
        ({"allocation_order": ["principal", "interest"]}, "allocation_order_invalid", "order"),
        ({"allocation_order": ["a", "b", "c", "d"]}, "allocation_order_invalid", "order"),
        ({"principal": 100.5}, "request_invalid", "principal"),
        ({"principal": "10000"}, "request_invalid", "principal"),
        ({"annual_rate": 0.12}, "request_invalid", "annual_rate"),
        ({"start": "2026-02-30"}, "request_invalid", "start"),
        ({"grace_days": 3}, "request_invalid", "grace_days"),
    ],
)
def test_a_bad_drawdown_has_a_stable_code_and_changes_nothing(client, engine, merchant, fields, code, field):
    before = counts(engine)

    error = error_of(client.post(f"{BASE}/loans", json=loan_body(merchant, **fields)), 422)

    assert (error["code"], error.get("field")) == (code, field)
    assert counts(engine) == before
    assert merchant_balance(engine, merchant) == 0


@pytest.mark.parametrize(
    "fields, code, field",
    [
        ({"amount": 0}, "repayment_amount_invalid", "amount"),
        ({"amount": "12.34"}, "request_invalid", "amount"),
        ({"source": "cash"}, "repayment_source_invalid", "source"),
        ({"key": ""}, "idempotency_key_invalid", "key"),
        ({"as_of": "0001-01-01"}, "as_of_date_invalid", "as_of"),
        ({"as_of": "2026-13-01"}, "request_invalid", "as_of"),
    ],
)
def test_a_bad_repayment_has_a_stable_code_and_changes_nothing(client, engine, merchant, fields, code, field):
    loan = lend(client, merchant)
    before = counts(engine)
    body = {"amount": 1000, "source": "manual", "key": "k", "as_of": "2026-02-15", **fields}

    error = error_of(client.post(f"{BASE}/loans/{loan['id']}/repayments", json=body), 422)

    assert (error["code"], error.get("field")) == (code, field)
    assert counts(engine) == before


@pytest.mark.parametrize(
    "method, path",
    [("get", "/aging"), ("post", "/accrue"), ("get", "/credit-line/{merchant}"), ("get", "/loans/{loan}")],
)
def test_an_as_of_date_out_of_range_is_refused(client, engine, merchant, method, path):
    loan = lend(client, merchant)
    before = counts(engine)
    url = BASE + path.format(merchant=merchant, loan=loan["id"])
    for as_of in ("0001-01-01", "9999-12-31"):
        error = error_of(getattr(client, method)(url, params={"as_of": as_of}), 422)
        assert (error["code"], error["field"]) == ("as_of_date_invalid", "as_of")
    assert error_of(getattr(client, method)(url, params={"as_of": "yesterday"}), 422)["code"] == "request_invalid"
    assert counts(engine) == before


# --------------------------------------------------------------------------- loan products (贷款产品)

POS_PRODUCT = {
    "code": "pos-90d",
    "name": "POS贷 90 天",
    "kind": "pos",
    "annual_rate_min": "0.12",
    "annual_rate_max": "0.18",
    "periods_min": 3,
    "periods_max": 3,
    "principal_min": 100_000,
    "principal_max": 20_000_000,
    "credit_ratio": "0.5",
}
TERM_PRODUCT = {
    **POS_PRODUCT,
    "code": "term-3m",
    "name": "经营贷 3 个月",
    "kind": "term",
    "annual_rate_max": "0.12",
    "settlement_share": None,
    "credit_ratio": None,
}


def test_an_operator_keeps_a_product_catalogue_and_retires_a_product(client, engine):
    created = client.post(f"{BASE}/products", json=POS_PRODUCT)
    assert created.status_code == 201, created.text
    product = created.json()
    assert (product["code"], product["state"], product["settlement_share"]) == ("pos-90d", "active", "0.2")
    assert (product["credit_ratio"], product["credit_lookback_days"], product["credit_step"]) == ("0.5", 90, 10000)

    replayed = client.post(f"{BASE}/products", json={**POS_PRODUCT, "annual_rate_min": "0.120"})
    assert (replayed.status_code, replayed.json()) == (200, product)
    conflict = error_of(client.post(f"{BASE}/products", json={**POS_PRODUCT, "periods_max": 6}), 409)
    assert (conflict["code"], conflict["field"]) == ("loan_product_conflict", "code")
    refused = error_of(client.post(f"{BASE}/products", json={**POS_PRODUCT, "code": "POS/90"}), 422)
    assert (refused["code"], refused["field"]) == ("loan_product_code_invalid", "code")
    bounds = error_of(client.post(f"{BASE}/products", json={**TERM_PRODUCT, "annual_rate_min": "0.2"}), 422)
    assert (bounds["code"], bounds["field"]) == ("loan_product_bounds_invalid", "annual_rate_min")
    assert client.post(f"{BASE}/products", json=TERM_PRODUCT).status_code == 201

    assert client.get(f"{BASE}/products/pos-90d").json() == product
    assert error_of(client.get(f"{BASE}/products/nope"), 404)["code"] == "loan_product_not_found"
    listed = client.get(f"{BASE}/products").json()["products"]
    assert [item["code"] for item in listed] == ["pos-90d", "term-3m"]

    retired = client.post(f"{BASE}/products/term-3m/retire")
    assert retired.status_code == 200, retired.text
    assert (retired.json()["state"], retired.json()["retired_now"]) == ("retired", True)
    assert client.post(f"{BASE}/products/term-3m/retire").json()["retired_now"] is False
    assert error_of(client.post(f"{BASE}/products/nope/retire"), 404)["code"] == "loan_product_not_found"
    active = client.get(f"{BASE}/products", params={"state": "active"}).json()["products"]
    assert [item["code"] for item in active] == ["pos-90d"]
    assert error_of(client.get(f"{BASE}/products", params={"state": "gone"}), 422)["code"] == "request_invalid"


def test_a_drawdown_naming_a_product_takes_its_terms_and_stays_within_its_bounds(client, engine, merchant):
    assert client.post(f"{BASE}/products", json=TERM_PRODUCT).status_code == 201
    body = {"key": "loan-p", "merchant": merchant, "principal": PRINCIPAL, "start": START, "product": "term-3m"}

    drawn = client.post(f"{BASE}/loans", json=body)

    assert drawn.status_code == 201, drawn.text
    loan = drawn.json()
    assert (loan["product"], loan["kind"], loan["annual_rate"], loan["periods"]) == ("term-3m", "term", "0.12", 3)
    assert loan["settlement_share"] is None
    # the worked loan of this file, drawn on the product's terms
    assert [i["principal"] + i["interest"] for i in loan["installments"]] == [340022, 340022, 340023]
    assert client.post(f"{BASE}/loans", json=body).status_code == 200
    plain = lend(client, merchant, key="loan-plain")
    assert plain["product"] is None

    before = counts(engine)
    for fields, status_code, code, field in (
        ({"principal": 99_999}, 422, "loan_terms_outside_product", "principal"),
        ({"annual_rate": "0.13"}, 422, "loan_terms_outside_product", "annual_rate"),
        ({"periods": 6}, 422, "loan_terms_outside_product", "periods"),
        ({"kind": "pos"}, 422, "loan_terms_outside_product", "kind"),
        ({"method": "bullet"}, 422, "loan_terms_outside_product", "method"),
        ({"product": "no-such"}, 404, "loan_product_not_found", "product"),
    ):
        error = error_of(client.post(f"{BASE}/loans", json={**body, "key": "loan-q", **fields}), status_code)
        assert (error["code"], error["field"]) == (code, field), fields
    # without a product, the rate and the term are required as they always were
    missing = {key: value for key, value in loan_body(merchant, key="loan-r").items() if key != "annual_rate"}
    assert error_of(client.post(f"{BASE}/loans", json=missing), 422)["code"] == "request_invalid"
    assert client.post(f"{BASE}/products/term-3m/retire").status_code == 200
    retired = error_of(client.post(f"{BASE}/loans", json={**body, "key": "loan-s"}), 422)
    assert (retired["code"], retired["field"]) == ("loan_product_retired", "product")
    assert counts(engine) == before
    assert client.post(f"{BASE}/loans", json=body).json()["id"] == loan["id"]  # its loan still replays
