"""Signatures of the merchant API: RSA2 (SHA256withRSA) and HMAC-SHA256, as Alipay and WeChat Pay sign.

All of zhangfang's cryptography for merchant requests and platform responses is
here, written against the ``cryptography`` package and the standard library
only, so a merchant's SDK can copy this module as it is. ``docs/merchant-api.md``
is the integration guide built on it.

Canonical request (what a merchant signs; every line ends with ``\\n``)::

    METHOD\\n               upper case: GET, POST
    PATH[?QUERY]\\n         the path as sent on the request line (percent-encoding kept);
                           QUERY is the raw query string split on "&", empty pieces dropped,
                           the "name=value" pieces sorted by their bytes and joined with "&";
                           without a query, the line is PATH alone (no "?")
    TIMESTAMP\\n            the Zhangfang-Timestamp header: unix seconds
    NONCE\\n                the Zhangfang-Nonce header
    SHA256-HEX(BODY)\\n     lower-case hex SHA-256 of the raw body bytes (of b"" when there is none)

Canonical response (what the platform signs)::

    TIMESTAMP\\nNONCE\\nSHA256-HEX(BODY)\\n

Signatures
- ``RSA2``: RSASSA-PKCS1-v1_5 with SHA-256 over the UTF-8 canonical string,
  with the merchant's private key (requests) or the platform's (responses).
- ``HMAC-SHA256``: HMAC-SHA256 over the UTF-8 canonical string; the key is
  the merchant's secret exactly as shown (64 hex characters), as ASCII bytes.
- ``Zhangfang-Signature`` is always standard base64 with padding (RFC 4648
  section 4), for both schemes.

Guarantees
- Changing any of method, path, query (a piece, not the order), timestamp,
  nonce or one byte of the body changes the canonical string, so the
  signature no longer verifies.
- ``verify`` never raises on bad input: a malformed signature, a key of the
  wrong kind or a tampered message is ``False``. HMACs are compared with
  ``hmac.compare_digest``.
- Nothing here reads a clock or the network except ``sign_request`` and
  ``verify_platform_response``, which take ``now`` for tests.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "HEADER_APP_ID",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_SIGN_TYPE",
    "HEADER_TIMESTAMP",
    "SIGN_TYPES",
    "SIGN_TYPE_HMAC",
    "SIGN_TYPE_RSA2",
    "TIMESTAMP_TOLERANCE_SECONDS",
    "KeyInvalid",
    "ResponseSignatureInvalid",
    "SignedRequest",
    "body_digest",
    "canonical_query",
    "canonical_request",
    "canonical_response",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "new_hmac_secret",
    "new_nonce",
    "private_key_pem",
    "public_key_fingerprint",
    "public_key_pem",
    "sign",
    "sign_request",
    "sign_response",
    "verify",
    "verify_platform_response",
]

SIGN_TYPE_RSA2 = "RSA2"
SIGN_TYPE_HMAC = "HMAC-SHA256"
SIGN_TYPES = (SIGN_TYPE_RSA2, SIGN_TYPE_HMAC)

HEADER_APP_ID = "Zhangfang-App-Id"
HEADER_TIMESTAMP = "Zhangfang-Timestamp"
HEADER_NONCE = "Zhangfang-Nonce"
HEADER_SIGNATURE = "Zhangfang-Signature"
HEADER_SIGN_TYPE = "Zhangfang-Sign-Type"

TIMESTAMP_TOLERANCE_SECONDS = 300
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")
RSA_KEY_BITS_DEFAULT = 2048
PEM_LENGTH_MAX = 16_384

_PKCS1_SHA256 = (padding.PKCS1v15(), hashes.SHA256())


class KeyInvalid(ValueError):
    """A PEM text that is not an RSA key of the expected kind (public or private)."""


class ResponseSignatureInvalid(ValueError):
    """A platform response whose signature headers are missing, stale, or do not verify."""


# --------------------------------------------------------------------------- canonical strings


def body_digest(body: bytes) -> str:
    """Lower-case hex SHA-256 of the raw body (of ``b""`` for an empty body)."""
    return hashlib.sha256(body).hexdigest()


def canonical_query(query: str) -> str:
    """The raw query string with its ``name=value`` pieces sorted by their bytes; empty pieces dropped."""
    pieces = [piece for piece in query.split("&") if piece]
    return "&".join(sorted(pieces, key=lambda piece: piece.encode("utf-8")))


def canonical_request(*, method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    """``METHOD\\nPATH[?sorted query]\\nTIMESTAMP\\nNONCE\\nSHA256-HEX(BODY)\\n``, the string a merchant signs."""
    sorted_query = canonical_query(query)
    target = f"{path}?{sorted_query}" if sorted_query else path
    return f"{method.upper()}\n{target}\n{timestamp}\n{nonce}\n{body_digest(body)}\n"


def canonical_response(*, timestamp: str, nonce: str, body: bytes) -> str:
    """``TIMESTAMP\\nNONCE\\nSHA256-HEX(BODY)\\n``, the string the platform signs on a response."""
    return f"{timestamp}\n{nonce}\n{body_digest(body)}\n"


# --------------------------------------------------------------------------- keys


def generate_private_key(bits: int = RSA_KEY_BITS_DEFAULT) -> rsa.RSAPrivateKey:
    """A new RSA private key (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: rsa.RSAPrivateKey) -> str:
    """The private key as unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``)."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


def public_key_fingerprint(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Lower-case hex SHA-256 of the public key's DER SubjectPublicKeyInfo."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _pem_bytes(pem: str | bytes) -> bytes:
    if isinstance(pem, str):
        if not pem.isascii():
            raise KeyInvalid("a PEM key is ASCII text")
        pem = pem.encode("ascii")
    if not isinstance(pem, bytes) or len(pem) > PEM_LENGTH_MAX:
        raise KeyInvalid(f"a PEM key is text of at most {PEM_LENGTH_MAX} characters")
    return pem


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """An RSA public key from PEM (``PUBLIC KEY`` or ``RSA PUBLIC KEY``); ``KeyInvalid`` otherwise."""
    try:
        key = serialization.load_pem_public_key(_pem_bytes(pem))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyInvalid(f"not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyInvalid("the key is not an RSA key")
    return key


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key from PEM (PKCS#8 or PKCS#1); ``KeyInvalid`` otherwise."""
    return _load_private_key(_pem_bytes(pem))


# Loading checks the key's mathematics (about 30 ms for 2048 bits); the same few keys are loaded again
# and again (every app start, every platform key lookup), and a loaded key is immutable.
@functools.lru_cache(maxsize=32)
def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyInvalid(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyInvalid("the key is not an RSA key")
    return key


def new_hmac_secret() -> str:
    """32 random bytes as 64 lower-case hex characters; the HMAC key is this text's ASCII bytes."""
    return secrets.token_hex(32)


def new_nonce() -> str:
    """A fresh nonce: 32 lower-case hex characters (128 random bits)."""
    return secrets.token_hex(16)


# --------------------------------------------------------------------------- sign and verify


def _message_bytes(message: str | bytes) -> bytes:
    return message.encode("utf-8") if isinstance(message, str) else message


def _hmac_key(secret: str | bytes) -> bytes:
    return secret.encode("ascii") if isinstance(secret, str) else secret


def sign(
    message: str | bytes,
    *,
    sign_type: str,
    private_key: rsa.RSAPrivateKey | None = None,
    hmac_secret: str | bytes | None = None,
) -> str:
    """The base64 signature of ``message``: RSA2 with ``private_key``, or HMAC-SHA256 with ``hmac_secret``."""
    data = _message_bytes(message)
    if sign_type == SIGN_TYPE_RSA2:
        if private_key is None:
            raise ValueError("RSA2 signing needs a private key")
        raw = private_key.sign(data, *_PKCS1_SHA256)
    elif sign_type == SIGN_TYPE_HMAC:
        if hmac_secret is None:
            raise ValueError("HMAC-SHA256 signing needs the secret")
        raw = hmac.new(_hmac_key(hmac_secret), data, hashlib.sha256).digest()
    else:
        raise ValueError(f"sign type must be one of {SIGN_TYPES}, got {sign_type!r}")
    return base64.b64encode(raw).decode("ascii")


def _decode_signature(signature: str) -> bytes | None:
    if not isinstance(signature, str) or not signature.isascii():
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None


def verify(
    message: str | bytes,
    signature: str,
    *,
    sign_type: str,
    public_key: rsa.RSAPublicKey | None = None,
    hmac_secret: str | bytes | None = None,
) -> bool:
    """Whether ``signature`` (base64) signs ``message`` under the scheme and key; never raises on bad input."""
    raw = _decode_signature(signature)
    if raw is None:
        return False
    data = _message_bytes(message)
    if sign_type == SIGN_TYPE_RSA2:
        if not isinstance(public_key, rsa.RSAPublicKey):
            return False
        try:
            public_key.verify(raw, data, *_PKCS1_SHA256)
        except (InvalidSignature, ValueError):
            return False
        return True
    if sign_type == SIGN_TYPE_HMAC:
        if hmac_secret is None:
            return False
        expected = hmac.new(_hmac_key(hmac_secret), data, hashlib.sha256).digest()
        return hmac.compare_digest(raw, expected)
    return False


# --------------------------------------------------------------------------- requests and responses


@dataclass(frozen=True)
class SignedRequest:
    """What to send: ``method`` to ``url`` (path and query, exactly as signed), with ``headers`` and ``body``."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


QueryParams = str | Mapping[str, str] | Sequence[tuple[str, str]] | None


def _query_string(query: QueryParams) -> str:
    if query is None:
        return ""
    if isinstance(query, str):
        return query
    pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
    return urlencode(pairs, quote_via=quote)


def sign_request(
    *,
    method: str,
    path: str,
    app_id: str,
    sign_type: str,
    private_key: rsa.RSAPrivateKey | None = None,
    hmac_secret: str | bytes | None = None,
    query: QueryParams = None,
    body: bytes = b"",
    timestamp: int | str | None = None,
    nonce: str | None = None,
) -> SignedRequest:
    """Build a signed merchant request: the five ``Zhangfang-*`` headers over the canonical request.

    ``path`` must already be percent-encoded as it will go on the request line.
    ``query`` is a raw query string sent as is, or pairs that are encoded with
    ``urllib.parse.quote``. ``timestamp`` defaults to now, ``nonce`` to a fresh one.
    """
    timestamp_text = str(int(time.time()) if timestamp is None else timestamp)
    nonce = new_nonce() if nonce is None else nonce
    query_text = _query_string(query)
    message = canonical_request(
        method=method, path=path, query=query_text, timestamp=timestamp_text, nonce=nonce, body=body
    )
    signature = sign(message, sign_type=sign_type, private_key=private_key, hmac_secret=hmac_secret)
    headers = {
        HEADER_APP_ID: app_id,
        HEADER_TIMESTAMP: timestamp_text,
        HEADER_NONCE: nonce,
        HEADER_SIGN_TYPE: sign_type,
        HEADER_SIGNATURE: signature,
    }
    url = f"{path}?{query_text}" if query_text else path
    return SignedRequest(method=method.upper(), url=url, headers=headers, body=body)


def sign_response(
    body: bytes,
    *,
    sign_type: str,
    private_key: rsa.RSAPrivateKey | None = None,
    hmac_secret: str | bytes | None = None,
    timestamp: int | str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers the platform adds to a response to an authenticated merchant request."""
    timestamp_text = str(int(time.time()) if timestamp is None else timestamp)
    nonce = new_nonce() if nonce is None else nonce
    message = canonical_response(timestamp=timestamp_text, nonce=nonce, body=body)
    return {
        HEADER_TIMESTAMP: timestamp_text,
        HEADER_NONCE: nonce,
        HEADER_SIGN_TYPE: sign_type,
        HEADER_SIGNATURE: sign(message, sign_type=sign_type, private_key=private_key, hmac_secret=hmac_secret),
    }


def verify_platform_response(
    *,
    headers: Mapping[str, str],
    body: bytes,
    platform_public_key: rsa.RSAPublicKey | str | bytes | None = None,
    hmac_secret: str | bytes | None = None,
    now: float | None = None,
    tolerance_seconds: int = TIMESTAMP_TOLERANCE_SECONDS,
) -> None:
    """Check zhangfang's signature on a response; raise ``ResponseSignatureInvalid`` unless it holds.

    Pass ``platform_public_key`` (the key from ``GET /v1/platform/public-key``,
    pinned) if you sign with RSA2, or your ``hmac_secret`` if you sign with
    HMAC-SHA256. The response's sign type must be that scheme, its timestamp
    within ``tolerance_seconds`` of ``now``, and its signature must verify over
    ``TIMESTAMP\\nNONCE\\nSHA256-HEX(BODY)\\n``. ``body`` is the raw bytes received.
    """
    if (platform_public_key is None) == (hmac_secret is None):
        raise ValueError("give exactly one of platform_public_key (RSA2) and hmac_secret (HMAC-SHA256)")
    lowered = {name.lower(): value for name, value in headers.items()}
    names = (HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE, HEADER_SIGN_TYPE)
    missing = [name for name in names if not lowered.get(name.lower())]
    if missing:
        raise ResponseSignatureInvalid(f"the response lacks {', '.join(missing)}")
    timestamp, nonce, signature, sign_type = (lowered[name.lower()] for name in names)
    expected_type = SIGN_TYPE_RSA2 if platform_public_key is not None else SIGN_TYPE_HMAC
    if sign_type != expected_type:
        raise ResponseSignatureInvalid(f"the response is signed with {sign_type!r}, expected {expected_type!r}")
    if not TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise ResponseSignatureInvalid("the response timestamp is not unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        raise ResponseSignatureInvalid("the response timestamp is outside the tolerance")
    public_key = platform_public_key
    if isinstance(public_key, str | bytes):
        public_key = load_public_key(public_key)
    message = canonical_response(timestamp=timestamp, nonce=nonce, body=body)
    if not verify(message, signature, sign_type=sign_type, public_key=public_key, hmac_secret=hmac_secret):
        raise ResponseSignatureInvalid("the response signature does not verify")
