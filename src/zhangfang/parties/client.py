"""A merchant's client for the zhangfang API: signs every request, verifies every answer.

What a merchant's server does to call us, in a few lines (``docs/merchant-api.md``
explains the scheme; ``signing`` implements it)::

    client = MerchantClient("https://pay.example.com", app_id="app_…", hmac_secret="…")
    order = client.post("/v1/merchant/payments", {"out_trade_no": "A1", "amount": 1999, "subject": "tea"},
                        idempotency_key="A1").json()

Guarantees
- Every request carries the five ``Zhangfang-*`` headers over the exact bytes
  sent; POSTs carry the ``Idempotency-Key`` given (a retry with the same key
  and body is answered with the first response).
- Every answer to an authenticated request is checked before it is returned:
  ``ResponseSignatureInvalid`` when its signature does not verify (HMAC
  merchants with their secret; RSA2 merchants with the platform key they
  pinned). A refusal of authentication itself (401) is not signed and is
  returned as it is.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from zhangfang.parties import signing

__all__ = ["MerchantClient"]


class MerchantClient:
    """Signed calls to the merchant API as one merchant (HMAC-SHA256 or RSA2)."""

    def __init__(
        self,
        base_url: str,
        *,
        app_id: str,
        hmac_secret: str | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
        platform_public_key: rsa.RSAPublicKey | str | None = None,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if (hmac_secret is None) == (private_key is None):
            raise ValueError("give exactly one of hmac_secret (HMAC-SHA256) and private_key (RSA2)")
        if private_key is not None and platform_public_key is None:
            raise ValueError("an RSA2 merchant verifies answers with the platform's public key: pass it")
        self.app_id = app_id
        self.sign_type = signing.SIGN_TYPE_HMAC if hmac_secret is not None else signing.SIGN_TYPE_RSA2
        self._hmac_secret = hmac_secret
        self._private_key = private_key
        self._platform_public_key = platform_public_key
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_seconds, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MerchantClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        verify: bool = True,
    ) -> httpx.Response:
        """Sends one signed request; checks the answer's signature unless it refuses authentication (401)."""
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        signed = signing.sign_request(
            method=method,
            path=path,
            app_id=self.app_id,
            sign_type=self.sign_type,
            private_key=self._private_key,
            hmac_secret=self._hmac_secret,
            query=sorted(query.items()) if query else None,
            body=raw,
        )
        headers = dict(signed.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        response = self._http.request(signed.method, signed.url, headers=headers, content=raw)
        if verify and response.status_code != 401:
            signing.verify_platform_response(
                headers=response.headers,
                body=response.content,
                platform_public_key=self._platform_public_key if self._private_key is not None else None,
                hmac_secret=self._hmac_secret,
            )
        return response

    def get(self, path: str, query: dict[str, str] | None = None) -> httpx.Response:
        """A signed GET."""
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any, *, idempotency_key: str) -> httpx.Response:
        """A signed POST of ``body`` as JSON under ``idempotency_key``."""
        return self.request("POST", path, body=body, idempotency_key=idempotency_key)
