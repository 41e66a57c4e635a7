"""The ledger over HTTP, on SQLite and PostgreSQL: what a caller sends, what it gets back, what is stored.

Every refusal is checked twice: the stable error code, and that the database
holds exactly the rows it held before the request.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from tests.snapshots import snapshot

from zhangfang.api.app import create_app
from zhangfang.config import Settings

ADMIN_KEY = "test-key"
LEDGER = "/v1/ledger"


def settings_for(engine: Engine) -> Settings:
    return Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        transaction_age_max_seconds=10,
        run_jobs_in_server=False,
    )


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    app = create_app(settings_for(engine), engine)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as test_client:
        yield test_client


def error_of(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", "field", "details"}
    return body["error"]


def open_account(client: TestClient, key: str, **attributes: Any) -> dict[str, Any]:
    response = client.post(
        f"{LEDGER}/accounts", json={"key": key, "ledger_code": "wallet", "currency": "CNY"} | attributes
    )
    assert response.status_code == 201, response.text
    return response.json()


def leg(account: str, side: str, amount: Any, currency: str = "CNY") -> dict[str, Any]:
    return {"account": account, "side": side, "amount": amount, "currency": currency}


def entry(key: str, *legs: dict[str, Any], business_code: str = "top_up", **extra: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "business_code": business_code, "legs": list(legs), **extra}


def transfer(key: str, debit: str, credit: str, amount: Any, currency: str = "CNY") -> dict[str, Any]:
    return entry(key, leg(debit, "debit", amount, currency), leg(credit, "credit", amount, currency))


def balance_of(client: TestClient, account: str) -> dict[str, Any]:
    response = client.get(f"{LEDGER}/accounts/{account}/balance")
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Books:
    """A bank clearing account (debit-normal, unconstrained), a wallet holding 1000 fen, a merchant."""

    bank: str
    wallet: str
    merchant: str
    closed: str


@pytest.fixture
def books(client: TestClient) -> Books:
    bank = open_account(client, "bank", ledger_code="bank_clearing", normal_side="debit")["id"]
    wallet = open_account(client, "wallet:alice", owner_ref="usr_alice", debits_must_not_exceed_credits=True)["id"]
    merchant = open_account(client, "merchant:shop", ledger_code="merchant", owner_ref="mch_shop")["id"]
    closed = open_account(client, "wallet:gone")["id"]
    assert client.post(f"{LEDGER}/accounts/{closed}/close").json()["flags"]["closed"] is True
    response = client.post(f"{LEDGER}/entries", json=transfer("top-up:1", bank, wallet, 1000))
    assert response.status_code == 201, response.text
    return Books(bank=bank, wallet=wallet, merchant=merchant, closed=closed)


# --------------------------------------------------------------------------- the app itself


def test_the_app_refuses_to_start_without_an_admin_key(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="ZHANGFANG_ADMIN_API_KEY"):
        create_app(Settings(admin_api_key=None, database_url="sqlite:///unused.db"), engine)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {ADMIN_KEY}", "Bearer ", f"Bearer {ADMIN_KEY}x"],
    ids=["missing", "wrong", "not-bearer", "empty", "longer"],
)
def test_a_request_without_the_right_admin_key_is_refused(client: TestClient, authorization: str | None) -> None:
    del client.headers["Authorization"]
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get(f"{LEDGER}/accounts", headers=headers)
    error = error_of(response, 401)
    assert error["code"] == "admin_key_invalid"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_refused_write_without_the_admin_key_writes_nothing(client: TestClient, engine: Engine) -> None:
    del client.headers["Authorization"]
    before = snapshot(engine)
    response = client.post(f"{LEDGER}/accounts", json={"key": "k", "ledger_code": "wallet", "currency": "CNY"})
    assert error_of(response, 401)["code"] == "admin_key_invalid"
    assert snapshot(engine) == before


def test_the_key_is_checked_before_the_body_is_read(client: TestClient) -> None:
    del client.headers["Authorization"]
    response = client.post(f"{LEDGER}/entries", content=b"{", headers={"Content-Type": "application/json"})
    assert error_of(response, 401)["code"] == "admin_key_invalid"


def test_healthz_reports_a_database_that_does_not_answer_as_503() -> None:
    unreachable = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    app = create_app(Settings(admin_api_key=ADMIN_KEY, run_jobs_in_server=False), unreachable)
    with TestClient(app) as test_client:
        response = test_client.get("/healthz")
    assert error_of(response, 503)["code"] == "database_unavailable"
    unreachable.dispose()


def test_healthz_answers_without_a_key_and_names_the_database(client: TestClient, engine: Engine) -> None:
    del client.headers["Authorization"]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": engine.dialect.name}


def test_docs_serve_html_and_the_openapi_lists_every_ledger_path(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "zhangfang (账房)"
    assert {
        f"{LEDGER}/accounts",
        f"{LEDGER}/accounts/{{ref}}",
        f"{LEDGER}/accounts/{{ref}}/close",
        f"{LEDGER}/accounts/{{ref}}/balance",
        f"{LEDGER}/accounts/{{ref}}/statement",
        f"{LEDGER}/accounts/{{ref}}/history",
        f"{LEDGER}/entries",
        f"{LEDGER}/entries/batch",
        f"{LEDGER}/entries/{{ref}}",
        f"{LEDGER}/entries/{{ref}}/reverse",
        f"{LEDGER}/holds",
        f"{LEDGER}/holds/{{ref}}",
        f"{LEDGER}/holds/{{ref}}/post",
        f"{LEDGER}/holds/{{ref}}/void",
        f"{LEDGER}/day-end",
        f"{LEDGER}/chain",
        f"{LEDGER}/chain/verify",
    } <= set(spec["paths"])
    post_entry = spec["paths"][f"{LEDGER}/entries"]["post"]
    assert post_entry["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert {"200", "201", "401", "404", "409", "422"} <= set(post_entry["responses"])
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_an_unknown_route_answers_in_the_error_shape(client: TestClient) -> None:
    assert error_of(client.get(f"{LEDGER}/nowhere"), 404)["code"] == "route_not_found"


def test_an_unexpected_failure_answers_500_without_its_details(engine: Engine) -> None:
    app = create_app(settings_for(engine), engine)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app) as test_client:
        response = test_client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}


# --------------------------------------------------------------------------- accounts


def test_opening_an_account_again_with_the_same_key_returns_it_with_200(client: TestClient) -> None:
    body = {"key": "wallet:bob", "ledger_code": "wallet", "currency": "CNY", "metadata": {"tier": "gold"}}
    first = client.post(f"{LEDGER}/accounts", json=body)
    again = client.post(f"{LEDGER}/accounts", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    account = first.json()
    assert account["id"].startswith("acc_")
    assert account["flags"] == {
        "debits_must_not_exceed_credits": False,
        "credits_must_not_exceed_debits": False,
        "hot": False,
        "closed": False,
    }
    assert account["balance"]["posted"] == 0
    assert account["metadata"] == {"tier": "gold"}
    assert client.get(f"{LEDGER}/accounts/{account['id']}").json() == account


def test_opening_an_account_with_a_used_key_and_other_attributes_is_a_conflict(
    client: TestClient, engine: Engine
) -> None:
    open_account(client, "wallet:bob")
    before = snapshot(engine)
    response = client.post(f"{LEDGER}/accounts", json={"key": "wallet:bob", "ledger_code": "wallet", "currency": "USD"})
    assert error_of(response, 409)["code"] == "idempotency_key_conflict"
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"currency": "cny"}, "currency_unknown"),
        ({"normal_side": "left"}, "normal_side_invalid"),
        ({"debits_must_not_exceed_credits": True, "credits_must_not_exceed_debits": True}, "account_flags_invalid"),
        ({"hot": True, "debits_must_not_exceed_credits": True}, "account_flags_invalid"),
        ({"hot": "yes"}, "request_invalid"),
        ({"colour": "red"}, "request_invalid"),
    ],
)
def test_an_account_that_breaks_a_rule_is_refused_with_its_code(
    client: TestClient, engine: Engine, body: dict[str, Any], code: str
) -> None:
    before = snapshot(engine)
    response = client.post(f"{LEDGER}/accounts", json={"key": "k", "ledger_code": "wallet", "currency": "CNY"} | body)
    assert error_of(response, 422)["code"] == code
    assert snapshot(engine) == before


def test_accounts_are_listed_in_pages_and_filtered(client: TestClient, books: Books) -> None:
    first = client.get(f"{LEDGER}/accounts", params={"limit": 3}).json()
    assert [a["id"] for a in first["items"]] == [books.bank, books.wallet, books.merchant]
    second = client.get(f"{LEDGER}/accounts", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [a["id"] for a in second["items"]] == [books.closed]
    assert second["next_cursor"] is None
    mine = client.get(f"{LEDGER}/accounts", params={"owner_ref": "usr_alice"}).json()
    assert [a["id"] for a in mine["items"]] == [books.wallet]
    assert error_of(client.get(f"{LEDGER}/accounts", params={"limit": 0}), 422)["code"] == "limit_invalid"
    assert error_of(client.get(f"{LEDGER}/accounts", params={"cursor": "x"}), 422)["code"] == "cursor_invalid"


def test_an_account_with_a_balance_cannot_be_closed(client: TestClient, engine: Engine, books: Books) -> None:
    before = snapshot(engine)
    error = error_of(client.post(f"{LEDGER}/accounts/{books.wallet}/close"), 422)
    assert error["code"] == "account_balance_not_zero"
    assert snapshot(engine) == before
    assert error_of(client.get(f"{LEDGER}/accounts/acc_nope"), 404)["code"] == "account_not_found"


# --------------------------------------------------------------------------- entries


def test_a_posted_entry_moves_the_balances_and_reads_back(client: TestClient, books: Books) -> None:
    response = client.post(
        f"{LEDGER}/entries", json=transfer("pay:1", books.wallet, books.merchant, 300) | {"metadata": {"order": "o1"}}
    )
    assert response.status_code == 201, response.text
    posted = response.json()
    assert posted["replayed"] is False
    assert posted["kind"] == "entry"
    assert posted["idempotency_key"] == "pay:1"
    assert posted["metadata"] == {"order": "o1"}
    assert [(p["seq"], p["account"], p["side"], p["effect"], p["amount"]) for p in posted["postings"]] == [
        (0, books.wallet, "debit", "posted", 300),
        (1, books.merchant, "credit", "posted", 300),
    ]
    assert dt.datetime.fromisoformat(posted["created_at"]).tzinfo is not None

    wallet = balance_of(client, books.wallet)
    assert (wallet["posted"], wallet["available"], wallet["debits_posted"], wallet["credits_posted"]) == (
        700,
        700,
        300,
        1000,
    )
    assert wallet["account"] == books.wallet
    assert balance_of(client, books.merchant)["posted"] == 300
    assert balance_of(client, books.bank)["posted"] == 1000

    fetched = client.get(f"{LEDGER}/entries/{posted['id']}").json()
    assert fetched == {k: v for k, v in posted.items() if k != "replayed"}

    as_of_top_up = client.get(f"{LEDGER}/accounts/{books.wallet}/balance", params={"as_of_entry": posted["id"]}).json()
    assert as_of_top_up["posted"] == 700
    before_everything = client.get(
        f"{LEDGER}/accounts/{books.wallet}/balance", params={"as_of_time": "2000-01-01T08:00:00+08:00"}
    ).json()
    assert before_everything["posted"] == 0
    naive = client.get(f"{LEDGER}/accounts/{books.wallet}/balance", params={"as_of_time": "2000-01-01T00:00:00"})
    assert error_of(naive, 422)["code"] == "request_invalid"

    statement = client.get(f"{LEDGER}/accounts/{books.wallet}/statement").json()
    assert [(line["side"], line["amount"], line["posted_balance_after"]) for line in statement["items"]] == [
        ("credit", 1000, 1000),
        ("debit", 300, 700),
    ]
    assert statement["next_cursor"] is None


def test_a_replayed_entry_answers_200_and_changes_nothing(client: TestClient, engine: Engine, books: Books) -> None:
    body = transfer("pay:1", books.wallet, books.merchant, 300)
    first = client.post(f"{LEDGER}/entries", json=body)
    assert first.status_code == 201
    before = snapshot(engine)
    again = client.post(f"{LEDGER}/entries", json=body)
    assert again.status_code == 200
    assert again.json() == first.json() | {"replayed": True}
    assert snapshot(engine) == before


def test_the_same_key_with_a_different_body_is_a_conflict(client: TestClient, engine: Engine, books: Books) -> None:
    assert (
        client.post(f"{LEDGER}/entries", json=transfer("pay:1", books.wallet, books.merchant, 300)).status_code == 201
    )
    before = snapshot(engine)
    response = client.post(f"{LEDGER}/entries", json=transfer("pay:1", books.wallet, books.merchant, 301))
    error = error_of(response, 409)
    assert error["code"] == "idempotency_key_conflict"
    assert error["field"] == "idempotency_key"
    assert snapshot(engine) == before


def test_the_idempotency_key_header_stands_in_for_a_missing_body_key(
    client: TestClient, engine: Engine, books: Books
) -> None:
    body = transfer("ignored", books.wallet, books.merchant, 100)
    del body["idempotency_key"]
    first = client.post(f"{LEDGER}/entries", json=body, headers={"Idempotency-Key": "pay:h1"})
    assert first.status_code == 201, first.text
    assert first.json()["idempotency_key"] == "pay:h1"
    same = client.post(
        f"{LEDGER}/entries", json=body | {"idempotency_key": "pay:h1"}, headers={"Idempotency-Key": "pay:h1"}
    )
    assert same.status_code == 200 and same.json()["replayed"] is True

    before = snapshot(engine)
    mismatch = client.post(
        f"{LEDGER}/entries", json=body | {"idempotency_key": "pay:a"}, headers={"Idempotency-Key": "pay:b"}
    )
    assert error_of(mismatch, 422)["code"] == "idempotency_key_mismatch"
    neither = client.post(f"{LEDGER}/entries", json=body)
    assert error_of(neither, 422)["code"] == "idempotency_key_invalid"
    assert snapshot(engine) == before


BAD_ENTRIES: list[tuple[str, Callable[[Books], dict[str, Any]], int, str, str | None]] = [
    ("unknown account", lambda b: transfer("bad", b.bank, "acc_nobody", 100), 404, "account_not_found", None),
    (
        "currency mismatch",
        lambda b: transfer("bad", b.bank, b.wallet, 100, currency="USD"),
        422,
        "account_currency_mismatch",
        None,
    ),
    (
        "unbalanced legs",
        lambda b: entry("bad", leg(b.bank, "debit", 100), leg(b.wallet, "credit", 99)),
        422,
        "entry_must_balance",
        "legs",
    ),
    ("zero amount", lambda b: transfer("bad", b.bank, b.wallet, 0), 422, "amount_must_be_positive", None),
    ("negative amount", lambda b: transfer("bad", b.bank, b.wallet, -100), 422, "amount_must_be_positive", None),
    ("float amount", lambda b: transfer("bad", b.bank, b.wallet, 1.5), 422, "request_invalid", "legs.0.amount"),
    ("string amount", lambda b: transfer("bad", b.bank, b.wallet, "100"), 422, "request_invalid", "legs.0.amount"),
    ("boolean amount", lambda b: transfer("bad", b.bank, b.wallet, True), 422, "request_invalid", "legs.0.amount"),
    ("huge amount", lambda b: transfer("bad", b.bank, b.wallet, 2**64), 422, "request_invalid", "legs.0.amount"),
    ("overdraft", lambda b: transfer("bad", b.wallet, b.merchant, 1001), 422, "debits_exceed_credits", None),
    ("closed account", lambda b: transfer("bad", b.bank, b.closed, 100), 422, "account_closed", None),
    ("one leg", lambda b: entry("bad", leg(b.bank, "debit", 100)), 422, "postings_too_few", "legs"),
    (
        "unknown currency",
        lambda b: transfer("bad", b.bank, b.wallet, 100, currency="XYZ"),
        422,
        "currency_unknown",
        None,
    ),
    (
        "bad side",
        lambda b: entry("bad", leg(b.bank, "up", 100), leg(b.wallet, "credit", 100)),
        422,
        "side_invalid",
        None,
    ),
    ("empty key", lambda b: transfer("", b.bank, b.wallet, 100), 422, "idempotency_key_invalid", "idempotency_key"),
    (
        "unknown field",
        lambda b: transfer("bad", b.bank, b.wallet, 100) | {"posted_at": "2024-01-01"},
        422,
        "request_invalid",
        "posted_at",
    ),
]


@pytest.mark.parametrize(
    ("body_for", "status_code", "code", "field"),
    [case[1:] for case in BAD_ENTRIES],
    ids=[case[0] for case in BAD_ENTRIES],
)
def test_a_bad_entry_gets_its_stable_code_and_changes_nothing(
    client: TestClient,
    engine: Engine,
    books: Books,
    body_for: Callable[[Books], dict[str, Any]],
    status_code: int,
    code: str,
    field: str | None,
) -> None:
    before = snapshot(engine)
    error = error_of(client.post(f"{LEDGER}/entries", json=body_for(books)), status_code)
    assert error["code"] == code, error
    if field is not None:
        assert error["field"] == field
    assert snapshot(engine) == before


def test_a_missing_field_is_request_invalid_naming_the_field(client: TestClient, engine: Engine, books: Books) -> None:
    body = transfer("pay:1", books.wallet, books.merchant, 100)
    del body["business_code"]
    before = snapshot(engine)
    error = error_of(client.post(f"{LEDGER}/entries", json=body), 422)
    assert error["code"] == "request_invalid"
    assert error["field"] == "business_code"
    assert error["message"] == "Field required"
    assert error["details"]["errors"][0] == {"field": "business_code", "message": "Field required", "type": "missing"}
    not_json = client.post(f"{LEDGER}/entries", content=b"{", headers={"Content-Type": "application/json"})
    assert (error_of(not_json, 422)["code"], error_of(not_json, 422)["field"]) == ("request_invalid", "body")
    assert snapshot(engine) == before


def test_a_reversed_entry_restores_the_balances_once(client: TestClient, engine: Engine, books: Books) -> None:
    paid = client.post(f"{LEDGER}/entries", json=transfer("pay:1", books.wallet, books.merchant, 300)).json()
    reversal = client.post(f"{LEDGER}/entries/{paid['id']}/reverse", json={"metadata": {"reason": "refund"}})
    assert reversal.status_code == 201, reversal.text
    assert reversal.json()["kind"] == "reversal"
    assert reversal.json()["reverses"] == paid["id"]
    assert [(p["account"], p["side"]) for p in reversal.json()["postings"]] == [
        (books.wallet, "credit"),
        (books.merchant, "debit"),
    ]
    assert balance_of(client, books.wallet)["posted"] == 1000
    assert balance_of(client, books.merchant)["posted"] == 0

    before = snapshot(engine)
    again = client.post(f"{LEDGER}/entries/{paid['id']}/reverse", json={"metadata": {"reason": "refund"}})
    assert again.status_code == 200 and again.json()["replayed"] is True
    other_key = client.post(f"{LEDGER}/entries/{paid['id']}/reverse", json={"idempotency_key": "undo:2"})
    assert error_of(other_key, 409)["code"] == "entry_already_reversed"
    reversing_a_reversal = client.post(f"{LEDGER}/entries/{reversal.json()['id']}/reverse")
    assert error_of(reversing_a_reversal, 422)["code"] == "entry_not_reversible"
    assert error_of(client.post(f"{LEDGER}/entries/je_nope/reverse"), 404)["code"] == "entry_not_found"
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- batches


def test_an_atomic_batch_posts_all_or_nothing(client: TestClient, engine: Engine, books: Books) -> None:
    good = transfer("b:1", books.wallet, books.merchant, 100)
    bad = entry("b:2", leg(books.wallet, "debit", 100), leg(books.merchant, "credit", 90))
    before = snapshot(engine)
    refused = client.post(f"{LEDGER}/entries/batch", json={"entries": [good, bad]})
    error = error_of(refused, 422)
    assert error["code"] == "entry_must_balance"
    assert error["details"]["index"] == 1
    overdraft = client.post(
        f"{LEDGER}/entries/batch",
        json={"entries": [good, transfer("b:3", books.wallet, books.merchant, 901)]},
    )
    assert error_of(overdraft, 422)["code"] == "debits_exceed_credits"
    assert error_of(overdraft, 422)["details"]["index"] == 1
    assert snapshot(engine) == before

    posted = client.post(
        f"{LEDGER}/entries/batch", json={"entries": [good, transfer("b:3", books.wallet, books.merchant, 200)]}
    )
    assert posted.status_code == 200, posted.text
    assert [(r["index"], r["status"]) for r in posted.json()["results"]] == [(0, "posted"), (1, "posted")]
    assert balance_of(client, books.wallet)["posted"] == 700


def test_a_non_atomic_batch_reports_each_entry_on_its_own(client: TestClient, books: Books) -> None:
    client.post(f"{LEDGER}/entries", json=transfer("b:old", books.wallet, books.merchant, 100))
    response = client.post(
        f"{LEDGER}/entries/batch",
        json={
            "atomic": False,
            "entries": [
                transfer("b:1", books.wallet, books.merchant, 200),
                transfer("b:2", books.wallet, books.merchant, 5000),
                transfer("b:old", books.wallet, books.merchant, 100),
                transfer("b:3", books.bank, books.closed, 1),
                transfer("b:4", books.wallet, books.merchant, 0),
            ],
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, "posted"),
        (1, "refused"),
        (2, "replayed"),
        (3, "refused"),
        (4, "refused"),
    ]
    assert [r["error"]["code"] for r in results if r["status"] == "refused"] == [
        "debits_exceed_credits",
        "account_closed",
        "amount_must_be_positive",
    ]
    assert results[0]["entry"]["idempotency_key"] == "b:1"
    assert results[0]["error"] is None
    assert balance_of(client, books.wallet)["posted"] == 700


def test_an_empty_batch_is_request_invalid(client: TestClient) -> None:
    error = error_of(client.post(f"{LEDGER}/entries/batch", json={"entries": []}), 422)
    assert (error["code"], error["field"]) == ("request_invalid", "entries")


# --------------------------------------------------------------------------- holds


def hold_body(books: Books, key: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "debit_account": books.wallet,
        "credit_account": books.merchant,
        "amount": amount,
        "currency": "CNY",
        "business_code": "pre_auth",
        **extra,
    }


def test_a_hold_reserves_funds_and_a_partial_post_releases_the_rest(
    client: TestClient, engine: Engine, books: Books
) -> None:
    created = client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 600))
    assert created.status_code == 201, created.text
    hold = created.json()["hold"]
    assert hold["id"].startswith("hld_")
    assert (hold["state"], hold["amount"], hold["debit_account"]) == ("pending", 600, books.wallet)
    assert created.json()["entry"]["kind"] == "hold"
    assert created.json()["replayed"] is False
    wallet = balance_of(client, books.wallet)
    assert (wallet["posted"], wallet["pending_out"], wallet["available"]) == (1000, 600, 400)

    again = client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 600))
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["hold"] == hold
    too_much = client.post(f"{LEDGER}/entries", json=transfer("pay:x", books.wallet, books.merchant, 401))
    assert error_of(too_much, 422)["code"] == "debits_exceed_credits"

    posted = client.post(f"{LEDGER}/holds/{hold['id']}/post", json={"idempotency_key": "capture:1", "amount": 250})
    assert posted.status_code == 200, posted.text
    assert (posted.json()["hold"]["state"], posted.json()["hold"]["posted_amount"]) == ("posted", 250)
    assert posted.json()["hold"]["resolving_entry"] == posted.json()["entry"]["id"]
    assert client.get(f"{LEDGER}/holds/{hold['id']}").json() == posted.json()["hold"]
    wallet = balance_of(client, books.wallet)
    assert (wallet["posted"], wallet["pending_out"], wallet["available"]) == (750, 0, 750)
    assert balance_of(client, books.merchant)["posted"] == 250

    before = snapshot(engine)
    replay = client.post(f"{LEDGER}/holds/{hold['id']}/post", json={"idempotency_key": "capture:1", "amount": 250})
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    twice = client.post(f"{LEDGER}/holds/{hold['id']}/post", json={"idempotency_key": "capture:2"})
    assert error_of(twice, 409)["code"] == "hold_already_resolved"
    assert error_of(client.get(f"{LEDGER}/holds/hld_nope"), 404)["code"] == "hold_not_found"
    assert snapshot(engine) == before


def test_a_voided_hold_gives_the_funds_back(client: TestClient, engine: Engine, books: Books) -> None:
    hold = client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 600)).json()["hold"]
    before = snapshot(engine)
    over = client.post(f"{LEDGER}/holds/{hold['id']}/post", json={"idempotency_key": "capture:1", "amount": 601})
    assert error_of(over, 422)["code"] == "hold_post_amount_exceeds_hold"
    assert snapshot(engine) == before
    voided = client.post(f"{LEDGER}/holds/{hold['id']}/void", json={"idempotency_key": "void:1"})
    assert voided.status_code == 200, voided.text
    assert voided.json()["hold"]["state"] == "voided"
    assert voided.json()["entry"]["kind"] == "hold_void"
    wallet = balance_of(client, books.wallet)
    assert (wallet["posted"], wallet["pending_out"], wallet["available"]) == (1000, 0, 1000)


def test_a_hold_beyond_the_available_balance_is_refused(client: TestClient, engine: Engine, books: Books) -> None:
    before = snapshot(engine)
    error = error_of(client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 1001)), 422)
    assert error["code"] == "debits_exceed_credits"
    float_amount = client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 10.0))
    assert (error_of(float_amount, 422)["code"], error_of(float_amount, 422)["field"]) == ("request_invalid", "amount")
    past = client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 10, expires_at="2000-01-01T00:00:00Z"))
    assert error_of(past, 422)["code"] == "hold_expiry_in_past"
    assert snapshot(engine) == before


def test_an_expired_hold_cannot_be_posted(client: TestClient, engine: Engine, books: Books) -> None:
    expires_at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).astimezone(dt.timezone(dt.timedelta(hours=8)))
    created = client.post(f"{LEDGER}/holds", json=hold_body(books, "hold:1", 600, expires_at=expires_at.isoformat()))
    assert created.status_code == 201, created.text
    hold = created.json()["hold"]
    assert dt.datetime.fromisoformat(hold["expires_at"]) == expires_at
    time.sleep(1.2)
    before = snapshot(engine)
    response = client.post(f"{LEDGER}/holds/{hold['id']}/post", json={"idempotency_key": "capture:1"})
    assert error_of(response, 422)["code"] == "hold_expired"
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- day-end and chain


def test_day_end_closes_the_open_date_once_and_in_order(client: TestClient, engine: Engine, books: Books) -> None:
    status = client.get(f"{LEDGER}/day-end").json()
    assert status["closes"] == []
    day = dt.date.fromisoformat(status["open_date"])

    closed = client.post(f"{LEDGER}/day-end", json={"accounting_date": day.isoformat()})
    assert closed.status_code == 200, closed.text
    close = closed.json()
    assert (close["accounting_date"], close["state"], close["entry_count"], close["account_count"]) == (
        day.isoformat(),
        "closed",
        1,
        4,
    )
    again = client.post(f"{LEDGER}/day-end", json={"accounting_date": day.isoformat()})
    assert again.status_code == 200 and again.json() == close

    status = client.get(f"{LEDGER}/day-end").json()
    assert status["open_date"] == (day + dt.timedelta(days=1)).isoformat()
    assert status["closes"] == [close]

    history = client.get(
        f"{LEDGER}/accounts/{books.wallet}/history", params={"date_from": day.isoformat(), "date_to": day.isoformat()}
    )
    assert history.status_code == 200, history.text
    assert [(h["accounting_date"], h["posted"]) for h in history.json()] == [(day.isoformat(), 1000)]
    by_default = client.get(f"{LEDGER}/accounts/{books.wallet}/history")
    assert by_default.json() == history.json()
    backwards = client.get(
        f"{LEDGER}/accounts/{books.wallet}/history",
        params={"date_from": day.isoformat(), "date_to": (day - dt.timedelta(days=1)).isoformat()},
    )
    assert error_of(backwards, 422)["code"] == "date_range_invalid"

    before = snapshot(engine)
    skipped = client.post(f"{LEDGER}/day-end", json={"accounting_date": (day + dt.timedelta(days=5)).isoformat()})
    error = error_of(skipped, 422)
    assert error["code"] == "day_end_out_of_order"
    assert error["details"]["open_date"] == (day + dt.timedelta(days=1)).isoformat()
    assert snapshot(engine) == before


def test_the_chain_reports_unsealed_entries_and_verifies(client: TestClient, books: Books) -> None:
    status = client.get(f"{LEDGER}/chain").json()
    assert (status["sealed_seq"], status["unsealed_count"]) == (0, 1)
    assert status["oldest_unsealed"] is not None
    report = client.post(f"{LEDGER}/chain/verify").json()
    assert report == {
        "ok": True,
        "checked": 0,
        "unsealed": 1,
        "first_bad_entry": None,
        "first_bad_seq": None,
        "reason": None,
        "details": {},
    }


def test_the_server_runs_the_periodic_jobs_when_asked(engine: Engine) -> None:
    settings = settings_for(engine).model_copy(update={"run_jobs_in_server": True, "job_interval_seconds": 0.05})
    with TestClient(create_app(settings, engine), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        bank = client.post(
            f"{LEDGER}/accounts", json={"key": "bank", "ledger_code": "bank", "currency": "CNY", "normal_side": "debit"}
        ).json()["id"]
        fee = client.post(
            f"{LEDGER}/accounts", json={"key": "fee", "ledger_code": "fee", "currency": "CNY", "hot": True}
        ).json()["id"]
        posted = client.post(
            f"{LEDGER}/entries",
            json={
                "idempotency_key": "jobs-1",
                "business_code": "fee",
                "legs": [
                    {"account": bank, "side": "debit", "amount": 5, "currency": "CNY"},
                    {"account": fee, "side": "credit", "amount": 5, "currency": "CNY"},
                ],
            },
        )
        assert posted.status_code == 201
        deadline = time.monotonic() + 10
        while client.get(f"{LEDGER}/chain").json()["unsealed_count"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(f"{LEDGER}/chain").json()["unsealed_count"] == 0
        assert client.post(f"{LEDGER}/chain/verify").json()["ok"] is True


def test_a_body_that_is_not_utf8_is_refused_like_malformed_json(client: TestClient) -> None:
    response = client.post(f"{LEDGER}/entries", content=b"\xff\xfe\x00{", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request_invalid"
    assert response.json()["error"]["field"] == "body"


def test_history_ending_on_the_first_day_of_the_calendar_is_not_an_error(client: TestClient) -> None:
    account = client.post(f"{LEDGER}/accounts", json={"key": "w", "ledger_code": "w", "currency": "CNY"}).json()["id"]
    response = client.get(f"{LEDGER}/accounts/{account}/history", params={"date_to": "0001-01-05"})
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/accounts?owner_ref=a%00b", None, "query"),
        ("GET", "/accounts/acc_%00x", None, "path"),
        ("POST", "/accounts", b'{"key": "k\\u0000", "ledger_code": "w", "currency": "CNY"}', "body"),
    ],
)
def test_text_with_a_nul_character_is_refused_everywhere(client: TestClient, method, path, body, field) -> None:
    response = client.request(
        method, f"{LEDGER}{path}", content=body, headers={"Content-Type": "application/json"} if body else {}
    )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "request_invalid",
        "message": "text may not contain NUL characters",
        "field": field,
    }


def test_a_cursor_of_unicode_digits_is_refused_not_a_crash(client: TestClient) -> None:
    response = client.get(f"{LEDGER}/accounts", params={"cursor": "¹²"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "cursor_invalid"
