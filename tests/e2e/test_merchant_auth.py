"""The merchant API over HTTP with real signatures, on SQLite and PostgreSQL.

Merchants are created through the admin API; every merchant request is signed
with ``parties.signing.sign_request`` (RSA2 or HMAC-SHA256) and every response
to an authenticated request is checked with ``verify_platform_response``.
Every refusal is checked twice: its stable code, and that the database holds
exactly the rows it held before (the nonce an accepted request leaves behind
is the only bookkeeping a request may add).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from tests.snapshots import snapshot
from typer.testing import CliRunner

from zhangfang.api.app import create_app
from zhangfang.cli.main import app as zhangfang_app
from zhangfang.config import Settings
from zhangfang.db.engine import create_engine
from zhangfang.db.migrate import upgrade
from zhangfang.db.uow import run_in_transaction
from zhangfang.parties import service as parties
from zhangfang.parties import signing
from zhangfang.parties.tables import idempotency_records, merchants, platform_keys, request_nonces, users

ADMIN_KEY = "test-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SIGNATURE_HEADERS = ("zhangfang-timestamp", "zhangfang-nonce", "zhangfang-sign-type", "zhangfang-signature")


# --------------------------------------------------------------------------- keys, made once


@dataclass(frozen=True)
class Keys:
    platform: rsa.RSAPrivateKey
    merchant_a: rsa.RSAPrivateKey
    merchant_b: rsa.RSAPrivateKey
    short: rsa.RSAPrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        platform=signing.generate_private_key(),
        merchant_a=signing.generate_private_key(),
        merchant_b=signing.generate_private_key(),
        short=signing.generate_private_key(1024),
    )


# --------------------------------------------------------------------------- app and clients


def settings_for(engine: Engine) -> Settings:
    return Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        run_jobs_in_server=False,
    )


@pytest.fixture
def client(engine: Engine, keys: Keys) -> Iterator[TestClient]:
    """The API on a clean database whose platform key is the session's (generating one per test is slow)."""
    pem = signing.private_key_pem(keys.platform)
    run_in_transaction(engine, lambda conn: parties.store_platform_key(conn, private_key_pem=pem))
    with TestClient(create_app(settings_for(engine), engine)) as test_client:
        yield test_client


@dataclass
class MerchantClient:
    """A merchant's SDK in a few lines: signs each request, checks each response's signature."""

    http: TestClient
    ref: str
    app_id: str
    sign_type: str
    platform_key: rsa.RSAPublicKey
    private_key: rsa.RSAPrivateKey | None = None
    hmac_secret: str | None = field(default=None, repr=False)

    def signed(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        query: Any = None,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> signing.SignedRequest:
        body = b"" if payload is None else json.dumps(payload).encode()
        return signing.sign_request(
            method=method,
            path=path,
            query=query,
            body=body,
            app_id=self.app_id,
            sign_type=self.sign_type,
            private_key=self.private_key,
            hmac_secret=self.hmac_secret,
            timestamp=timestamp,
            nonce=nonce,
        )

    def send(self, request: signing.SignedRequest, **extra_headers: str) -> Any:
        headers = {**request.headers, "Content-Type": "application/json", **extra_headers}
        return self.http.request(request.method, request.url, content=request.body, headers=headers)

    def call(self, method: str, path: str, *, payload: Any = None, key: str | None = None, **options: Any) -> Any:
        extra = {"Idempotency-Key": key} if key is not None else {}
        return self.send(self.signed(method, path, payload=payload, **options), **extra)

    def verify(self, response: Any, body: bytes | None = None) -> None:
        key = {"platform_public_key": self.platform_key} if self.sign_type == "RSA2" else {}
        signing.verify_platform_response(
            headers=response.headers,
            body=response.content if body is None else body,
            hmac_secret=self.hmac_secret,
            **key,
        )


def merchant_body(key: str, sign_type: str, private_key: rsa.RSAPrivateKey | None = None, **extra: Any) -> dict:
    body: dict[str, Any] = {
        "key": key,
        "name": f"示例商户 {key}",
        "mcc": "5812",
        "fee_rate": "0.006",
        "settlement_account": {
            "bank_name": "招商银行上海分行",
            "account_number": "6214830212345678",
            "account_name": "上海示例餐饮有限公司",
        },
        "sign_type": sign_type,
    }
    if private_key is not None:
        body["public_key_pem"] = signing.public_key_pem(private_key)
    return body | extra


def create_merchant(
    client: TestClient, keys: Keys, key: str, sign_type: str, private_key: rsa.RSAPrivateKey | None = None
) -> MerchantClient:
    if sign_type == "RSA2" and private_key is None:
        private_key = keys.merchant_a
    response = client.post(
        "/v1/admin/merchants",
        json=merchant_body(key, sign_type, private_key if sign_type == "RSA2" else None),
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return MerchantClient(
        http=client,
        ref=created["id"],
        app_id=created["app_id"],
        sign_type=sign_type,
        platform_key=keys.platform.public_key(),
        private_key=private_key if sign_type == "RSA2" else None,
        hmac_secret=created["hmac_secret"],
    )


@pytest.fixture(params=["RSA2", "HMAC-SHA256"])
def merchant(request: pytest.FixtureRequest, client: TestClient, keys: Keys) -> MerchantClient:
    """Merchant A, signing with each scheme in turn."""
    return create_merchant(client, keys, "merchant-a", request.param, keys.merchant_a)


@pytest.fixture
def other_merchant(client: TestClient, keys: Keys) -> MerchantClient:
    """Merchant B, RSA2 with its own key."""
    return create_merchant(client, keys, "merchant-b", "RSA2", keys.merchant_b)


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def error_of(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


def is_signed(response: Any) -> bool:
    return all(name in response.headers for name in SIGNATURE_HEADERS)


# --------------------------------------------------------------------------- authentication


def test_an_rsa2_merchant_and_an_hmac_merchant_both_authenticate(merchant: MerchantClient) -> None:
    response = merchant.call("GET", "/v1/merchant/me")
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["id"] == merchant.ref and profile["app_id"] == merchant.app_id
    assert profile["sign_type"] == merchant.sign_type
    assert profile["fee_rate"] == "0.006" and profile["mcc"] == "5812" and profile["status"] == "active"
    assert profile["settlement_account"] == {
        "bank_name": "招商银行上海分行",
        "account_name": "上海示例餐饮有限公司",
        "account_number_masked": "****5678",
    }
    assert "6214830212345678" not in response.text
    assert "hmac_secret" not in profile and "key" not in profile


def test_a_signed_query_string_in_any_order_authenticates(merchant: MerchantClient) -> None:
    response = merchant.call("GET", "/v1/merchant/me", query=[("z", "中 文"), ("a", "1"), ("a", "0")])
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("sign_type", ["RSA2", "HMAC-SHA256"])
def test_responses_are_signed_with_the_merchants_scheme_and_verify(
    client: TestClient, keys: Keys, sign_type: str
) -> None:
    merchant = create_merchant(client, keys, "signed", sign_type)
    ok = merchant.call("GET", "/v1/merchant/me")
    assert ok.headers["Zhangfang-Sign-Type"] == sign_type
    merchant.verify(ok)
    missing = merchant.call("GET", "/v1/merchant/users/usr_01J00000000000000000000000")
    assert missing.status_code == 404 and is_signed(missing)
    merchant.verify(missing)
    with pytest.raises(signing.ResponseSignatureInvalid, match="does not verify"):
        merchant.verify(ok, body=ok.content + b" ")
    if sign_type == "HMAC-SHA256":
        with pytest.raises(signing.ResponseSignatureInvalid):
            signing.verify_platform_response(
                headers=ok.headers, body=ok.content, platform_public_key=keys.platform.public_key()
            )


def test_the_platform_public_key_is_served_and_verifies_rsa2_responses(client: TestClient, keys: Keys) -> None:
    served = client.get("/v1/platform/public-key")
    assert served.status_code == 200 and not is_signed(served)
    body = served.json()
    assert body["algorithm"] == "RSA2"
    assert body["public_key_pem"] == signing.public_key_pem(keys.platform)
    assert body["fingerprint_sha256"] == signing.public_key_fingerprint(keys.platform)
    merchant = create_merchant(client, keys, "rsa", "RSA2")
    response = merchant.call("GET", "/v1/merchant/me")
    signing.verify_platform_response(
        headers=response.headers, body=response.content, platform_public_key=body["public_key_pem"]
    )


def test_the_platform_key_is_generated_on_first_use_stored_and_then_kept(engine: Engine, keys: Keys) -> None:
    assert count(engine, platform_keys) == 0
    with TestClient(create_app(settings_for(engine), engine)) as first_app:
        first = first_app.get("/v1/platform/public-key").json()
    with TestClient(create_app(settings_for(engine), engine)) as second_app:
        second = second_app.get("/v1/platform/public-key").json()
        merchant = create_merchant(second_app, keys, "rsa", "RSA2")
        response = merchant.call("GET", "/v1/merchant/me")
    assert first == second and count(engine, platform_keys) == 1
    assert signing.load_public_key(first["public_key_pem"]).key_size == 2048
    signing.verify_platform_response(
        headers=response.headers, body=response.content, platform_public_key=first["public_key_pem"]
    )


def _drop(name: str):
    def change(request: signing.SignedRequest, merchant: MerchantClient) -> signing.SignedRequest:
        return replace(request, headers={k: v for k, v in request.headers.items() if k != name})

    return change


def _header(name: str, value: str):
    def change(request: signing.SignedRequest, merchant: MerchantClient) -> signing.SignedRequest:
        return replace(request, headers={**request.headers, name: value})

    return change


def _resigned_with_skew(seconds: int):
    def change(request: signing.SignedRequest, merchant: MerchantClient) -> signing.SignedRequest:
        return merchant.signed("GET", "/v1/merchant/me", timestamp=int(time.time()) + seconds)

    return change


def _timestamp_changed(request: signing.SignedRequest, merchant: MerchantClient) -> signing.SignedRequest:
    changed = str(int(request.headers["Zhangfang-Timestamp"]) - 1)
    return replace(request, headers={**request.headers, "Zhangfang-Timestamp": changed})


def _other_sign_type(request: signing.SignedRequest, merchant: MerchantClient) -> signing.SignedRequest:
    other = "HMAC-SHA256" if merchant.sign_type == "RSA2" else "RSA2"
    return replace(request, headers={**request.headers, "Zhangfang-Sign-Type": other})


def _other_path(request: signing.SignedRequest, merchant: MerchantClient) -> signing.SignedRequest:
    return replace(request, url="/v1/merchant/me?extra=1")


REFUSALS = [
    ("signature_missing", _drop("Zhangfang-App-Id")),
    ("signature_missing", _drop("Zhangfang-Timestamp")),
    ("signature_missing", _drop("Zhangfang-Nonce")),
    ("signature_missing", _drop("Zhangfang-Sign-Type")),
    ("signature_missing", _drop("Zhangfang-Signature")),
    ("signature_missing", _header("Zhangfang-Signature", "")),
    ("signature_header_invalid", _header("Zhangfang-Timestamp", "2026-01-01T00:00:00Z")),
    ("signature_header_invalid", _header("Zhangfang-Timestamp", "-5")),
    ("signature_header_invalid", _header("Zhangfang-Nonce", "too-short")),
    ("signature_header_invalid", _header("Zhangfang-Nonce", "x" * 65)),
    ("signature_header_invalid", _header("Zhangfang-Nonce", "has spaces in it ok")),
    ("signature_header_invalid", _header("Zhangfang-Sign-Type", "RSA")),
    ("timestamp_stale", _resigned_with_skew(-301)),
    ("timestamp_stale", _resigned_with_skew(+301)),
    ("app_id_unknown", _header("Zhangfang-App-Id", "app_ffffffffffffffff")),
    ("app_id_unknown", _header("Zhangfang-App-Id", "not an app id")),
    ("sign_type_mismatch", _other_sign_type),
    ("signature_invalid", _header("Zhangfang-Signature", "QUJD")),
    ("signature_invalid", _header("Zhangfang-Nonce", "0123456789abcdef0123456789abcdef")),
    ("signature_invalid", _timestamp_changed),
    ("signature_invalid", _other_path),
]


@pytest.mark.parametrize("code, change", REFUSALS, ids=[f"{code}-{i}" for i, (code, _) in enumerate(REFUSALS)])
def test_every_refusal_has_its_code_and_changes_nothing(
    merchant: MerchantClient, engine: Engine, code: str, change: Any
) -> None:
    before = snapshot(engine)
    response = merchant.send(change(merchant.signed("GET", "/v1/merchant/me"), merchant))
    error = error_of(response, 401)
    assert error["code"] == code, error
    assert not is_signed(response)
    assert snapshot(engine) == before


def test_a_tampered_body_is_refused_before_it_is_parsed(merchant: MerchantClient, engine: Engine) -> None:
    request = merchant.signed("POST", "/v1/merchant/users", payload={"external_ref": "u-1"})
    before = snapshot(engine)
    tampered = merchant.send(replace(request, body=b'{"external_ref":"u-2"}'), **{"Idempotency-Key": "k"})
    assert error_of(tampered, 401)["code"] == "signature_invalid"
    garbage = merchant.send(replace(request, body=b"{not json"), **{"Idempotency-Key": "k"})
    assert error_of(garbage, 401)["code"] == "signature_invalid"
    assert snapshot(engine) == before


def test_timestamps_within_the_window_on_either_side_are_accepted(merchant: MerchantClient) -> None:
    for skew in (-290, 290):
        response = merchant.call("GET", "/v1/merchant/me", timestamp=int(time.time()) + skew)
        assert response.status_code == 200, response.text


def test_a_replayed_request_is_refused_and_changes_nothing(merchant: MerchantClient, engine: Engine) -> None:
    request = merchant.signed("GET", "/v1/merchant/me")
    assert merchant.send(request).status_code == 200
    with engine.connect() as conn:
        seen = conn.execute(sa.select(request_nonces.c.app_id, request_nonces.c.nonce)).all()
    assert seen == [(merchant.app_id, request.headers["Zhangfang-Nonce"])]
    before = snapshot(engine)
    replayed = merchant.send(request)
    assert error_of(replayed, 401)["code"] == "nonce_replayed"
    assert snapshot(engine) == before


def test_a_nonce_is_per_merchant(merchant: MerchantClient, other_merchant: MerchantClient) -> None:
    nonce = "shared-nonce-0123456789"
    assert merchant.call("GET", "/v1/merchant/me", nonce=nonce).status_code == 200
    assert other_merchant.call("GET", "/v1/merchant/me", nonce=nonce).status_code == 200
    assert error_of(merchant.call("GET", "/v1/merchant/me", nonce=nonce), 401)["code"] == "nonce_replayed"


def test_the_same_signed_request_sent_at_once_from_many_threads_is_accepted_once(merchant: MerchantClient) -> None:
    request = merchant.signed("GET", "/v1/merchant/me")
    statuses: list[int] = []
    codes: list[str] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        barrier.wait()
        response = merchant.send(request)
        statuses.append(response.status_code)
        if response.status_code != 200:
            codes.append(response.json()["error"]["code"])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 401, 401, 401, 401, 401]
    assert codes == ["nonce_replayed"] * 5


def test_a_suspended_or_closed_merchant_is_refused_and_a_reactivated_one_is_not(
    client: TestClient, merchant: MerchantClient, engine: Engine
) -> None:
    suspended = client.post(f"/v1/admin/merchants/{merchant.ref}/status", json={"status": "suspended"}, headers=ADMIN)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    before = snapshot(engine)
    refused = merchant.call("GET", "/v1/merchant/me")
    assert error_of(refused, 401)["code"] == "merchant_not_active"
    assert snapshot(engine) == before
    client.post(f"/v1/admin/merchants/{merchant.ref}/status", json={"status": "active"}, headers=ADMIN)
    assert merchant.call("GET", "/v1/merchant/me").status_code == 200
    client.post(f"/v1/admin/merchants/{merchant.ref}/status", json={"status": "closed"}, headers=ADMIN)
    assert error_of(merchant.call("GET", "/v1/merchant/me"), 401)["code"] == "merchant_not_active"


def test_old_nonces_are_pruned_after_twice_the_window(engine: Engine) -> None:
    now = dt.datetime.now(dt.UTC)

    def record(conn: Any) -> None:
        assert parties.record_nonce(
            conn, app_id="app_0000000000000000", nonce="old" * 6, now=now - dt.timedelta(hours=1)
        )
        assert parties.record_nonce(conn, app_id="app_0000000000000000", nonce="new" * 6, now=now)
        assert not parties.record_nonce(conn, app_id="app_0000000000000000", nonce="new" * 6, now=now)

    run_in_transaction(engine, record)
    pruned = run_in_transaction(engine, lambda conn: parties.prune_nonces(conn, before=now - dt.timedelta(seconds=600)))
    assert pruned == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(request_nonces.c.nonce)).scalars().all() == ["new" * 6]


# --------------------------------------------------------------------------- merchants see only their own objects


def test_a_merchant_cannot_read_another_merchants_user(
    merchant: MerchantClient, other_merchant: MerchantClient
) -> None:
    created = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="k1")
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    assert merchant.call("GET", f"/v1/merchant/users/{user_id}").json()["id"] == user_id

    foreign = other_merchant.call("GET", f"/v1/merchant/users/{user_id}")
    unknown = other_merchant.call("GET", "/v1/merchant/users/usr_01J00000000000000000000000")
    foreign_error, unknown_error = error_of(foreign, 404), error_of(unknown, 404)
    assert foreign_error["code"] == unknown_error["code"] == "user_not_found"
    assert foreign_error["message"].replace(user_id, "ID") == unknown_error["message"].replace(
        "usr_01J00000000000000000000000", "ID"
    )
    assert set(foreign_error) == set(unknown_error)


def test_a_merchant_cannot_sign_with_its_key_under_another_merchants_app_id(
    client: TestClient, keys: Keys, other_merchant: MerchantClient, engine: Engine
) -> None:
    impostor = create_merchant(client, keys, "impostor", "RSA2", keys.merchant_a)
    borrowed = replace(impostor, app_id=other_merchant.app_id)
    before = snapshot(engine)
    response = borrowed.call("GET", "/v1/merchant/me")
    assert error_of(response, 401)["code"] == "signature_invalid"
    assert snapshot(engine) == before
    hmac_impostor = create_merchant(client, keys, "hmac-impostor", "HMAC-SHA256")
    response = replace(hmac_impostor, app_id=other_merchant.app_id).call("GET", "/v1/merchant/me")
    assert error_of(response, 401)["code"] == "sign_type_mismatch"


def test_each_merchant_sees_its_own_profile(merchant: MerchantClient, other_merchant: MerchantClient) -> None:
    assert merchant.call("GET", "/v1/merchant/me").json()["id"] == merchant.ref
    assert other_merchant.call("GET", "/v1/merchant/me").json()["id"] == other_merchant.ref


# --------------------------------------------------------------------------- Idempotency-Key


def test_an_idempotent_post_replays_the_same_status_and_bytes(merchant: MerchantClient, engine: Engine) -> None:
    first = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="create-u-1")
    assert first.status_code == 201, first.text
    assert "Idempotency-Replayed" not in first.headers
    merchant.verify(first)
    before = snapshot(engine, without=(request_nonces,))
    again = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="create-u-1")
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotency-Replayed"] == "true"
    merchant.verify(again)
    assert snapshot(engine, without=(request_nonces,)) == before
    assert count(engine, users) == 1 and count(engine, idempotency_records) == 1


def test_the_same_key_with_a_different_body_is_a_conflict(merchant: MerchantClient, engine: Engine) -> None:
    assert merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="k").status_code == 201
    before = snapshot(engine, without=(request_nonces,))
    conflict = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-2"}, key="k")
    error = error_of(conflict, 409)
    assert error["code"] == "idempotency_key_conflict" and error["field"] == "Idempotency-Key"
    merchant.verify(conflict)
    replay = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="k")
    assert replay.status_code == 201 and replay.headers["Idempotency-Replayed"] == "true"
    # The key stands for the bytes: the same JSON written differently is another request.
    reformatted = signing.sign_request(
        method="POST",
        path="/v1/merchant/users",
        body=b'{"external_ref": "u-1" }',
        app_id=merchant.app_id,
        sign_type=merchant.sign_type,
        private_key=merchant.private_key,
        hmac_secret=merchant.hmac_secret,
    )
    assert error_of(merchant.send(reformatted, **{"Idempotency-Key": "k"}), 409)["code"] == "idempotency_key_conflict"
    assert snapshot(engine, without=(request_nonces,)) == before


def test_the_same_key_used_by_another_merchant_is_independent(
    merchant: MerchantClient, other_merchant: MerchantClient
) -> None:
    mine = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="same-key")
    theirs = other_merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="same-key")
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotency-Replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_new_key_for_a_known_payer_returns_the_user_with_200(merchant: MerchantClient, engine: Engine) -> None:
    first = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="a")
    second = merchant.call("POST", "/v1/merchant/users", payload={"external_ref": "u-1"}, key="b")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"] and second.json()["replayed"] is True
    conflict = merchant.call(
        "POST", "/v1/merchant/users", payload={"external_ref": "u-1", "phone_hash": "0" * 64}, key="c"
    )
    assert error_of(conflict, 409)["code"] == "user_identity_conflict"
    assert count(engine, users) == 1


def test_a_user_may_be_known_by_phone_hash_alone(merchant: MerchantClient) -> None:
    phone_hash = hashlib.sha256(b"+8613800138000").hexdigest()
    created = merchant.call("POST", "/v1/merchant/users", payload={"phone_hash": phone_hash}, key="p")
    assert created.status_code == 201 and created.json()["phone_hash"] == phone_hash
    assert created.json()["external_ref"] is None


@pytest.mark.parametrize(
    "payload, key, status_code, code, field",
    [
        ({"external_ref": "u-1"}, None, 422, "request_invalid", "Idempotency-Key"),
        ({"external_ref": "u-1"}, "k" * 201, 422, "idempotency_key_invalid", "Idempotency-Key"),
        ({}, "k", 422, "user_identity_missing", "external_ref"),
        ({"external_ref": ""}, "k", 422, "external_ref_invalid", "external_ref"),
        ({"external_ref": "x" * 65}, "k", 422, "external_ref_invalid", "external_ref"),
        ({"phone_hash": "13800138000"}, "k", 422, "phone_hash_invalid", "phone_hash"),
        ({"external_ref": "u-1", "surprise": 1}, "k", 422, "request_invalid", "surprise"),
    ],
)
def test_a_bad_user_request_is_refused_signed_and_changes_nothing_but_its_nonce(
    merchant: MerchantClient, engine: Engine, payload: dict, key: str | None, status_code: int, code: str, field: str
) -> None:
    before = snapshot(engine, without=(request_nonces,))
    response = merchant.call("POST", "/v1/merchant/users", payload=payload, key=key)
    error = error_of(response, status_code)
    assert (error["code"], error.get("field")) == (code, field)
    merchant.verify(response)
    assert snapshot(engine, without=(request_nonces,)) == before


def test_concurrent_posts_with_one_key_create_one_user_and_answer_the_same_bytes(
    merchant: MerchantClient, engine: Engine
) -> None:
    requests = [merchant.signed("POST", "/v1/merchant/users", payload={"external_ref": "u-9"}) for _ in range(5)]
    bodies: list[bytes] = []
    statuses: list[int] = []
    barrier = threading.Barrier(len(requests))

    def send(request: signing.SignedRequest) -> None:
        barrier.wait()
        response = merchant.send(request, **{"Idempotency-Key": "together"})
        statuses.append(response.status_code)
        bodies.append(response.content)

    threads = [threading.Thread(target=send, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 5
    assert len(set(bodies)) == 1
    assert count(engine, users) == 1 and count(engine, idempotency_records) == 1


# --------------------------------------------------------------------------- admin: merchants


def test_an_hmac_merchant_gets_its_secret_once_and_a_replayed_creation_does_not_show_it(
    client: TestClient, engine: Engine
) -> None:
    body = merchant_body("m-1", "HMAC-SHA256")
    first = client.post("/v1/admin/merchants", json=body, headers=ADMIN)
    assert first.status_code == 201, first.text
    created = first.json()
    assert len(created["hmac_secret"]) == 64 and int(created["hmac_secret"], 16) >= 0
    assert created["replayed"] is False and created["public_key_pem"] is None
    assert created["app_id"].startswith("app_") and len(created["app_id"]) == 20
    assert created["id"].startswith("mch_")
    again = client.post("/v1/admin/merchants", json=body, headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["hmac_secret"] is None and again.json()["replayed"] is True
    assert again.json()["id"] == created["id"]
    shown = client.get(f"/v1/admin/merchants/{created['id']}", headers=ADMIN)
    assert shown.status_code == 200 and "hmac_secret" not in shown.json()
    assert created["hmac_secret"] not in shown.text
    before = snapshot(engine)
    conflict = client.post("/v1/admin/merchants", json=body | {"mcc": "5411"}, headers=ADMIN)
    assert error_of(conflict, 409)["code"] == "idempotency_key_conflict"
    assert snapshot(engine) == before


def test_the_operator_sees_the_full_account_number_and_the_merchant_only_its_last_digits(
    client: TestClient, merchant: MerchantClient
) -> None:
    shown = client.get(f"/v1/admin/merchants/{merchant.ref}", headers=ADMIN).json()
    assert shown["settlement_account"]["account_number"] == "6214830212345678"
    assert shown["settlement_account"]["account_number_masked"] == "****5678"
    listed = client.get("/v1/admin/merchants", headers=ADMIN).json()
    assert [item["id"] for item in listed["items"]] == [merchant.ref]
    assert "6214830212345678" not in merchant.call("GET", "/v1/merchant/me").text


def test_the_admin_api_needs_the_admin_key(client: TestClient, merchant: MerchantClient) -> None:
    assert error_of(client.get(f"/v1/admin/merchants/{merchant.ref}"), 401)["code"] == "admin_key_invalid"
    response = client.post("/v1/admin/merchants", json=merchant_body("x", "HMAC-SHA256"))
    assert error_of(response, 401)["code"] == "admin_key_invalid"


@pytest.mark.parametrize(
    "change, status_code, code, field",
    [
        ({"fee_rate": 0.006}, 422, "request_invalid", "fee_rate"),
        ({"fee_rate": "0.2"}, 422, "fee_rate_out_of_range", "fee_rate"),
        ({"fee_rate": "-0.001"}, 422, "fee_rate_out_of_range", "fee_rate"),
        ({"fee_rate": "0.0000001"}, 422, "fee_rate_invalid", "fee_rate"),
        ({"fee_rate": "1e-3"}, 422, "fee_rate_invalid", "fee_rate"),
        ({"fee_rate": "NaN"}, 422, "fee_rate_invalid", "fee_rate"),
        ({"mcc": "58a2"}, 422, "mcc_invalid", "mcc"),
        ({"mcc": "581"}, 422, "mcc_invalid", "mcc"),
        ({"name": " "}, 422, "merchant_name_invalid", "name"),
        ({"key": ""}, 422, "idempotency_key_invalid", "key"),
        ({"sign_type": "RSA"}, 422, "sign_type_invalid", "sign_type"),
        ({"sign_type": "RSA2"}, 422, "public_key_invalid", "public_key_pem"),
        ({"sign_type": "RSA2", "public_key_pem": "not a key"}, 422, "public_key_invalid", "public_key_pem"),
        ({"public_key_pem": "-----BEGIN PUBLIC KEY-----"}, 422, "public_key_invalid", "public_key_pem"),
        (
            {"settlement_account": {"bank_name": "b", "account_number": "6214-8302", "account_name": "n"}},
            422,
            "settlement_account_invalid",
            "settlement_account.account_number",
        ),
        (
            {"settlement_account": {"bank_name": "", "account_number": "62148302", "account_name": "n"}},
            422,
            "settlement_account_invalid",
            "settlement_account.bank_name",
        ),
    ],
)
def test_a_merchant_that_breaks_a_rule_is_refused_with_its_code_and_changes_nothing(
    client: TestClient, engine: Engine, change: dict, status_code: int, code: str, field: str
) -> None:
    before = snapshot(engine)
    response = client.post("/v1/admin/merchants", json=merchant_body("bad", "HMAC-SHA256") | change, headers=ADMIN)
    error = error_of(response, status_code)
    assert (error["code"], error.get("field")) == (code, field)
    assert snapshot(engine) == before


def test_an_rsa_key_shorter_than_2048_bits_is_refused(client: TestClient, keys: Keys) -> None:
    body = merchant_body("short", "RSA2", keys.short)
    error = error_of(client.post("/v1/admin/merchants", json=body, headers=ADMIN), 422)
    assert error["code"] == "public_key_too_short" and error["details"] == {"key_bits": 1024}


def test_fee_rates_are_decimal_text_stored_exactly_in_canonical_form(client: TestClient, engine: Engine) -> None:
    for key, given, shown in [
        ("a", "0.0060", "0.006"),
        ("b", "0.1", "0.1"),
        ("c", "0", "0"),
        ("d", "0.000001", "0.000001"),
    ]:
        response = client.post(
            "/v1/admin/merchants", json=merchant_body(key, "HMAC-SHA256", fee_rate=given), headers=ADMIN
        )
        assert response.status_code == 201, response.text
        assert response.json()["fee_rate"] == shown
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT fee_rate FROM merchants ORDER BY id")).scalars().all()
    assert stored == ["0.006", "0.1", "0", "0.000001"]


def test_merchant_status_follows_its_state_machine(client: TestClient, keys: Keys, engine: Engine) -> None:
    ref = create_merchant(client, keys, "m", "HMAC-SHA256").ref

    def move(status: str) -> Any:
        return client.post(f"/v1/admin/merchants/{ref}/status", json={"status": status}, headers=ADMIN)

    assert move("active").json()["status_changed_at"] is None  # already active: nothing changes
    assert move("suspended").json()["status"] == "suspended"
    assert move("active").json()["status"] == "active"
    assert move("closed").json()["status"] == "closed"
    before = snapshot(engine)
    for status in ("active", "suspended"):
        error = error_of(move(status), 422)
        assert error["code"] == "merchant_transition_invalid" and error["details"]["allowed"] == []
    assert error_of(move("frozen"), 422)["code"] == "merchant_status_invalid"
    assert (
        error_of(client.post("/v1/admin/merchants/mch_nope/status", json={"status": "active"}, headers=ADMIN), 404)[
            "code"
        ]
        == "merchant_not_found"
    )
    assert snapshot(engine) == before


def test_rotating_an_hmac_secret_retires_the_old_one_at_once(client: TestClient, keys: Keys) -> None:
    merchant = create_merchant(client, keys, "rotating", "HMAC-SHA256")
    rotated = client.post(f"/v1/admin/merchants/{merchant.ref}/rotate-secret", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["hmac_secret"]
    assert new_secret and new_secret != merchant.hmac_secret
    assert error_of(merchant.call("GET", "/v1/merchant/me"), 401)["code"] == "signature_invalid"
    renewed = replace(merchant, hmac_secret=new_secret)
    response = renewed.call("GET", "/v1/merchant/me")
    assert response.status_code == 200
    renewed.verify(response)
    with pytest.raises(signing.ResponseSignatureInvalid):
        merchant.verify(response)


def test_rotating_an_rsa2_merchant_replaces_its_public_key(client: TestClient, keys: Keys) -> None:
    merchant = create_merchant(client, keys, "rsa", "RSA2", keys.merchant_a)
    assert (
        error_of(client.post(f"/v1/admin/merchants/{merchant.ref}/rotate-secret", headers=ADMIN), 422)["code"]
        == "public_key_invalid"
    )
    rotated = client.post(
        f"/v1/admin/merchants/{merchant.ref}/rotate-secret",
        json={"public_key_pem": signing.public_key_pem(keys.merchant_b)},
        headers=ADMIN,
    )
    assert rotated.status_code == 200 and rotated.json()["hmac_secret"] is None
    assert error_of(merchant.call("GET", "/v1/merchant/me"), 401)["code"] == "signature_invalid"
    assert replace(merchant, private_key=keys.merchant_b).call("GET", "/v1/merchant/me").status_code == 200
    client.post(f"/v1/admin/merchants/{merchant.ref}/status", json={"status": "closed"}, headers=ADMIN)
    closed = client.post(
        f"/v1/admin/merchants/{merchant.ref}/rotate-secret",
        json={"public_key_pem": signing.public_key_pem(keys.merchant_a)},
        headers=ADMIN,
    )
    assert error_of(closed, 422)["code"] == "merchant_closed"


# --------------------------------------------------------------------------- the database's own guards


def merchant_row(**changes: Any) -> dict[str, Any]:
    row = {
        "ref": "mch_x",
        "key": "x",
        "request_hash": "0" * 64,
        "name": "x",
        "mcc": "5812",
        "status": "active",
        "fee_rate": "0.006",
        "bank_name": "b",
        "bank_account_number": "62148302",
        "bank_account_name": "n",
        "app_id": "app_0000000000000000",
        "sign_type": "HMAC-SHA256",
        "public_key_pem": None,
        "hmac_secret": "0" * 64,
        "created_at": dt.datetime.now(dt.UTC),
    }
    return row | changes


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "frozen"},
        {"sign_type": "RSA"},
        {"mcc": "581"},
        {"fee_rate": "0.2"},
        {"fee_rate": "-0.001"},
        {"sign_type": "RSA2"},
        {"hmac_secret": None},
        {"public_key_pem": "-----BEGIN PUBLIC KEY-----"},
    ],
)
def test_the_database_refuses_a_merchant_row_that_breaks_a_rule(engine: Engine, changes: dict) -> None:
    with engine.begin() as conn:
        conn.execute(merchants.insert().values(**merchant_row(ref="mch_ok", key="ok", app_id="app_1111111111111111")))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(merchants.insert().values(**merchant_row(**changes)))
    assert count(engine, merchants) == 1


def test_the_database_refuses_a_user_without_identity_and_a_second_nonce(engine: Engine) -> None:
    with engine.begin() as conn:
        merchant_id = conn.execute(merchants.insert().values(**merchant_row()).returning(merchants.c.id)).scalar_one()
    now = dt.datetime.now(dt.UTC)
    user = {"ref": "usr_x", "merchant_id": merchant_id, "identity": "ref:x", "request_hash": "0", "created_at": now}
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(users.insert().values(**user))
    nonce = {"app_id": "app_0000000000000000", "nonce": "n" * 16, "seen_at": now}
    with engine.begin() as conn:
        conn.execute(request_nonces.insert().values(**nonce))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(request_nonces.insert().values(**nonce))


# --------------------------------------------------------------------------- OpenAPI


def test_the_openapi_lists_the_merchant_platform_and_admin_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/v1/merchant/me"]) == {"get"}
    assert set(paths["/v1/merchant/users"]) == {"post"}
    assert set(paths["/v1/merchant/users/{user_id}"]) == {"get"}
    assert set(paths["/v1/platform/public-key"]) == {"get"}
    assert set(paths["/v1/admin/merchants"]) == {"get", "post"}
    assert set(paths["/v1/admin/merchants/{merchant_id}"]) == {"get"}
    assert set(paths["/v1/admin/merchants/{merchant_id}/status"]) == {"post"}
    assert set(paths["/v1/admin/merchants/{merchant_id}/rotate-secret"]) == {"post"}
    create_user = paths["/v1/merchant/users"]["post"]
    headers = {p["name"]: p for p in create_user["parameters"] if p["in"] == "header"}
    for name in (
        "Zhangfang-App-Id",
        "Zhangfang-Timestamp",
        "Zhangfang-Nonce",
        "Zhangfang-Sign-Type",
        "Zhangfang-Signature",
        "Idempotency-Key",
    ):
        assert headers[name]["required"] is True, name
    me_headers = {p["name"] for p in paths["/v1/merchant/me"]["get"]["parameters"]}
    assert "Zhangfang-Signature" in me_headers and "Idempotency-Key" not in me_headers
    assert "Zhangfang-Signature" in create_user["responses"]["201"]["headers"]
    assert "401" in paths["/v1/merchant/me"]["get"]["responses"]


# --------------------------------------------------------------------------- the CLI group


@pytest.fixture
def cli(database: Any, engine: Engine):
    """``zhangfang --database-url <test database> merchants …``."""
    runner = CliRunner()

    def run(*args: str, expect: int = 0) -> Any:
        result = runner.invoke(zhangfang_app, ["--database-url", database.url, *args])
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return run


def test_the_merchants_cli_creates_shows_lists_and_changes_status(cli: Any, tmp_path: Any, keys: Keys) -> None:
    common = ["--name", "示例", "--mcc", "5812", "--fee-rate", "0.0038", "--bank-name", "工商银行",
              "--account-number", "6222020200112233", "--account-name", "示例公司"]  # fmt: skip
    created = json.loads(
        cli("merchants", "create", "--key", "h", "--sign-type", "HMAC-SHA256", *common, "--json").stdout
    )
    assert created["fee_rate"] == "0.0038" and len(created["hmac_secret"]) == 64
    table = cli("merchants", "create", "--key", "h", "--sign-type", "HMAC-SHA256", *common).stdout
    assert "replayed" in table and created["hmac_secret"] not in table
    pem = tmp_path / "merchant.pem"
    pem.write_text(signing.public_key_pem(keys.merchant_a))
    rsa_merchant = json.loads(
        cli("merchants", "create", "--key", "r", "--public-key-file", str(pem), *common, "--json").stdout
    )
    assert rsa_merchant["sign_type"] == "RSA2" and rsa_merchant["hmac_secret"] is None

    shown = json.loads(cli("merchants", "show", created["id"], "--json").stdout)
    assert shown["settlement_account"]["account_number"] == "6222020200112233"
    assert created["id"] in cli("merchants", "show", created["id"]).stdout
    listed = json.loads(cli("merchants", "list", "--json").stdout)
    assert [m["id"] for m in listed["items"]] == [created["id"], rsa_merchant["id"]]
    assert json.loads(cli("merchants", "status", created["id"], "suspended", "--json").stdout)["status"] == "suspended"
    assert [m["id"] for m in json.loads(cli("merchants", "list", "--status", "active", "--json").stdout)["items"]] == [
        rsa_merchant["id"]
    ]
    cli("merchants", "status", created["id"], "closed")
    refused = cli("merchants", "status", created["id"], "active", expect=2)
    assert refused.stderr.startswith("error: merchant_transition_invalid: ")
    refused = cli("merchants", "create", "--key", "x", "--sign-type", "RSA2", *common, expect=2)
    assert refused.stderr.startswith("error: public_key_invalid: ")


def test_apps_in_one_process_share_their_routes_but_not_their_databases(engine, keys, tmp_path):
    """Every app of a process serves the same route table (built once); each still answers from its own
    database, with its own platform key."""
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = create_engine(other_url)
    upgrade(other)
    for database, key in ((engine, keys.platform), (other, keys.merchant_b)):
        pem = signing.private_key_pem(key)
        run_in_transaction(database, lambda conn, pem=pem: parties.store_platform_key(conn, private_key_pem=pem))
    try:
        with (
            TestClient(create_app(settings_for(engine), engine)) as first,
            TestClient(create_app(settings_for(other), other)) as second,
        ):
            create_merchant(first, keys, "only-in-the-first", "HMAC-SHA256")
            listed = [m["key"] for m in first.get("/v1/admin/merchants", headers=ADMIN).json()["items"]]
            assert listed == ["only-in-the-first"]
            assert second.get("/v1/admin/merchants", headers=ADMIN).json()["items"] == []
            fingerprints = [
                client.get("/v1/platform/public-key").json()["fingerprint_sha256"] for client in (first, second)
            ]
            assert fingerprints == [
                signing.public_key_fingerprint(keys.platform),
                signing.public_key_fingerprint(keys.merchant_b),
            ]
    finally:
        other.dispose()
