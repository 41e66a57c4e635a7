"""Signatures of the merchant API without a database: canonical strings, RSA2 and HMAC-SHA256 round trips.

The RSA keys are made once per session (2048-bit generation is slow). The RSA2
and HMAC results are also checked against OpenSSL's command line, an
implementation independent of ours, when it is installed.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from zhangfang.parties import signing

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SECRET = "3f" * 32


@pytest.fixture(scope="session")
def private_key():
    return signing.generate_private_key()


@pytest.fixture(scope="session")
def other_private_key():
    return signing.generate_private_key()


REQUEST = {
    "method": "POST",
    "path": "/v1/merchant/users",
    "query": "b=2&a=1",
    "timestamp": "1767225600",
    "nonce": "n0nce-0123456789abcdef",
    "body": b'{"external_ref":"u-1"}',
}


def test_the_canonical_request_is_five_lines_each_ending_in_a_newline():
    body_hash = hashlib.sha256(REQUEST["body"]).hexdigest()
    assert signing.canonical_request(**REQUEST) == (
        f"POST\n/v1/merchant/users?a=1&b=2\n1767225600\nn0nce-0123456789abcdef\n{body_hash}\n"
    )


def test_a_request_without_query_or_body_signs_the_path_alone_and_the_hash_of_nothing():
    text = signing.canonical_request(method="get", path="/v1/merchant/me", query="", timestamp="1", nonce="n", body=b"")
    assert text == f"GET\n/v1/merchant/me\n1\nn\n{EMPTY_SHA256}\n"


def test_the_query_is_sorted_by_the_bytes_of_its_raw_pieces_and_empty_pieces_are_dropped():
    assert signing.canonical_query("z=1&&a=%E4%B8%AD&a=0&m") == "a=%E4%B8%AD&a=0&m&z=1"
    assert signing.canonical_query("") == ""


def test_the_canonical_response_is_timestamp_nonce_and_body_hash():
    assert signing.canonical_response(timestamp="7", nonce="abc", body=b"") == f"7\nabc\n{EMPTY_SHA256}\n"


def test_an_rsa2_signature_verifies_with_the_public_key_and_not_with_another(private_key, other_private_key):
    message = signing.canonical_request(**REQUEST)
    signature = signing.sign(message, sign_type="RSA2", private_key=private_key)
    assert len(base64.b64decode(signature, validate=True)) == 256
    assert signing.verify(message, signature, sign_type="RSA2", public_key=private_key.public_key())
    assert not signing.verify(message, signature, sign_type="RSA2", public_key=other_private_key.public_key())
    assert not signing.verify(message, signature, sign_type="HMAC-SHA256", hmac_secret=SECRET)


def test_an_hmac_signature_verifies_with_the_secret_and_not_with_another():
    message = signing.canonical_request(**REQUEST)
    signature = signing.sign(message, sign_type="HMAC-SHA256", hmac_secret=SECRET)
    assert len(base64.b64decode(signature, validate=True)) == 32
    assert signing.verify(message, signature, sign_type="HMAC-SHA256", hmac_secret=SECRET)
    assert not signing.verify(message, signature, sign_type="HMAC-SHA256", hmac_secret="40" * 32)
    assert not signing.verify(message, signature, sign_type="RSA2", public_key=None)


@pytest.mark.parametrize(
    "field, value",
    [
        ("method", "PUT"),
        ("path", "/v1/merchant/users/x"),
        ("query", "a=1&b=3"),
        ("query", "a=1"),
        ("body", b'{"external_ref":"u-2"}'),
        ("body", b'{"external_ref":"u-1"} '),
        ("timestamp", "1767225601"),
        ("nonce", "n0nce-0123456789abcdeF"),
    ],
)
@pytest.mark.parametrize("sign_type", ["RSA2", "HMAC-SHA256"])
def test_tampering_with_any_part_of_the_request_breaks_the_signature(private_key, sign_type, field, value):
    signature = signing.sign(
        signing.canonical_request(**REQUEST), sign_type=sign_type, private_key=private_key, hmac_secret=SECRET
    )
    tampered = signing.canonical_request(**(REQUEST | {field: value}))
    assert not signing.verify(
        tampered, signature, sign_type=sign_type, public_key=private_key.public_key(), hmac_secret=SECRET
    )


def test_reordering_the_query_does_not_change_the_canonical_request():
    assert signing.canonical_request(**REQUEST) == signing.canonical_request(**(REQUEST | {"query": "a=1&b=2"}))


@pytest.mark.parametrize("signature", ["", "not base64!", "QUJD", "QUJD===", "中文"])
def test_a_malformed_signature_is_false_and_never_raises(private_key, signature):
    message = signing.canonical_request(**REQUEST)
    assert not signing.verify(message, signature, sign_type="RSA2", public_key=private_key.public_key())
    assert not signing.verify(message, signature, sign_type="HMAC-SHA256", hmac_secret=SECRET)


def test_sign_request_builds_the_five_headers_and_a_url_that_is_exactly_what_was_signed(private_key):
    signed = signing.sign_request(
        method="get",
        path="/v1/merchant/users/usr_1",
        query=[("z", "中 文"), ("a", "1")],
        app_id="app_0123456789abcdef",
        sign_type="RSA2",
        private_key=private_key,
        timestamp=1767225600,
        nonce="0123456789abcdef",
    )
    assert signed.url == "/v1/merchant/users/usr_1?z=%E4%B8%AD%20%E6%96%87&a=1"
    assert signed.headers["Zhangfang-App-Id"] == "app_0123456789abcdef"
    assert signed.headers["Zhangfang-Timestamp"] == "1767225600"
    assert signed.headers["Zhangfang-Nonce"] == "0123456789abcdef"
    assert signed.headers["Zhangfang-Sign-Type"] == "RSA2"
    message = signing.canonical_request(
        method="GET",
        path="/v1/merchant/users/usr_1",
        query="z=%E4%B8%AD%20%E6%96%87&a=1",
        timestamp="1767225600",
        nonce="0123456789abcdef",
        body=b"",
    )
    assert message.splitlines()[1] == "/v1/merchant/users/usr_1?a=1&z=%E4%B8%AD%20%E6%96%87"
    assert signing.verify(
        message, signed.headers["Zhangfang-Signature"], sign_type="RSA2", public_key=private_key.public_key()
    )


def test_sign_request_defaults_to_now_and_a_fresh_nonce():
    first = signing.sign_request(
        method="GET", path="/", app_id="app_0", sign_type="HMAC-SHA256", hmac_secret=SECRET
    ).headers
    second = signing.sign_request(
        method="GET", path="/", app_id="app_0", sign_type="HMAC-SHA256", hmac_secret=SECRET
    ).headers
    assert abs(int(first["Zhangfang-Timestamp"]) - time.time()) < 5
    assert signing.NONCE_PATTERN.fullmatch(first["Zhangfang-Nonce"])
    assert first["Zhangfang-Nonce"] != second["Zhangfang-Nonce"]


@pytest.mark.parametrize("sign_type", ["RSA2", "HMAC-SHA256"])
def test_a_signed_response_verifies_and_a_changed_body_or_stale_timestamp_does_not(private_key, sign_type):
    body = b'{"id":"usr_1"}'
    headers = signing.sign_response(body, sign_type=sign_type, private_key=private_key, hmac_secret=SECRET)
    key = (
        {"platform_public_key": signing.public_key_pem(private_key)} if sign_type == "RSA2" else {"hmac_secret": SECRET}
    )
    signing.verify_platform_response(headers=headers, body=body, **key)
    lowered = {name.lower(): value for name, value in headers.items()}
    signing.verify_platform_response(headers=lowered, body=body, **key)
    with pytest.raises(signing.ResponseSignatureInvalid, match="does not verify"):
        signing.verify_platform_response(headers=headers, body=body + b" ", **key)
    with pytest.raises(signing.ResponseSignatureInvalid, match="tolerance"):
        signing.verify_platform_response(headers=headers, body=body, now=time.time() + 301, **key)
    for name in headers:
        with pytest.raises(signing.ResponseSignatureInvalid, match="lacks"):
            signing.verify_platform_response(headers={k: v for k, v in headers.items() if k != name}, body=body, **key)


def test_a_response_signed_with_the_other_scheme_is_refused(private_key):
    headers = signing.sign_response(b"{}", sign_type="HMAC-SHA256", hmac_secret=SECRET)
    with pytest.raises(signing.ResponseSignatureInvalid, match="expected 'RSA2'"):
        signing.verify_platform_response(headers=headers, body=b"{}", platform_public_key=private_key.public_key())


def test_public_keys_load_from_pem_and_anything_but_rsa_is_refused(private_key):
    pem = signing.public_key_pem(private_key)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert signing.load_public_key(pem).key_size == 2048
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_text = ec_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for bad in [ec_text, "", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "公钥"]:
        with pytest.raises(signing.KeyInvalid):
            signing.load_public_key(bad)
    assert signing.load_private_key(signing.private_key_pem(private_key)).key_size == 2048


def test_secrets_and_nonces_are_fresh_and_of_the_documented_shape():
    secrets = {signing.new_hmac_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(s) == 64 and int(s, 16) >= 0 for s in secrets)
    assert all(signing.NONCE_PATTERN.fullmatch(signing.new_nonce()) for _ in range(50))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_openssl_agrees_with_our_rsa2_and_hmac_signatures(private_key, tmp_path: Path):
    message = signing.canonical_request(**REQUEST).encode()
    (tmp_path / "message").write_bytes(message)
    (tmp_path / "public.pem").write_text(signing.public_key_pem(private_key))
    signature = signing.sign(message, sign_type="RSA2", private_key=private_key)
    (tmp_path / "signature").write_bytes(base64.b64decode(signature))
    verified = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "public.pem", "-signature", "signature", "message"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr
    mac = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-binary", "message"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    assert base64.b64encode(mac).decode() == signing.sign(message, sign_type="HMAC-SHA256", hmac_secret=SECRET)


def test_the_worked_examples_in_the_merchant_guide_hold():
    """docs/merchant-api.md quotes these canonical strings and signatures; they must stay true."""
    secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    post = signing.canonical_request(
        method="POST",
        path="/v1/merchant/users",
        query="",
        timestamp="1767225600",
        nonce="4f1c2a9be0d34c7a",
        body=b'{"external_ref":"u-1001"}',
    )
    assert post == (
        "POST\n/v1/merchant/users\n1767225600\n4f1c2a9be0d34c7a\n"
        "0778cc30a8b7b87498553aac7669cec11438972ee79485455a7ca83412397c36\n"
    )
    assert signing.sign(post, sign_type="HMAC-SHA256", hmac_secret=secret) == (
        "sYsqg2eCD2JJO3jEYReQhKeW7rbYIRHJyS4SMO5EqJU="
    )
    get = signing.canonical_request(
        method="GET",
        path="/v1/merchant/users/usr_01KC0000000000000000000000",
        query="b=2&a=%E4%B8%AD",
        timestamp="1767225600",
        nonce="4f1c2a9be0d34c7a",
        body=b"",
    )
    assert get == (
        "GET\n/v1/merchant/users/usr_01KC0000000000000000000000?a=%E4%B8%AD&b=2\n1767225600\n"
        f"4f1c2a9be0d34c7a\n{EMPTY_SHA256}\n"
    )
    assert signing.sign(get, sign_type="HMAC-SHA256", hmac_secret=secret) == (
        "Y5vrr1h7rWgY+AN+FSLrujgH1JfT4crFLEjmkn6kUHQ="
    )
    guide = (Path(__file__).resolve().parents[2] / "docs" / "merchant-api.md").read_text(encoding="utf-8")
    assert "sYsqg2eCD2JJO3jEYReQhKeW7rbYIRHJyS4SMO5EqJU=" in guide
    assert "Y5vrr1h7rWgY+AN+FSLrujgH1JfT4crFLEjmkn6kUHQ=" in guide
