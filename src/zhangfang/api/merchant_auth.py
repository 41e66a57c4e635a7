"""Merchant authentication: signed requests, signed responses, idempotent POSTs.

Every merchant request carries five headers and a signature over the canonical
request, as Alipay (RSA2) and WeChat Pay v3 sign theirs:

=======================  ============================================================
header                   value
=======================  ============================================================
``Zhangfang-App-Id``     the merchant's public ``app_id`` (``app_`` + 16 hex)
``Zhangfang-Timestamp``  unix seconds; within 300 s of the server's clock
``Zhangfang-Nonce``      16 to 64 characters of ``[A-Za-z0-9_-]``, never reused
``Zhangfang-Sign-Type``  ``RSA2`` or ``HMAC-SHA256``: the merchant's scheme
``Zhangfang-Signature``  base64 (standard, padded) signature of the canonical request
=======================  ============================================================

The canonical request is five lines, each ending in ``\\n``::

    METHOD\\nPATH?sorted_query\\nTIMESTAMP\\nNONCE\\nSHA256-hex(BODY)\\n

- METHOD upper case; PATH exactly as on the request line (percent-encoding
  kept), then ``?`` and the raw query's ``name=value`` pieces sorted by their
  bytes and joined with ``&`` — PATH alone when there is no query;
- TIMESTAMP and NONCE as sent in their headers;
- the lower-case hex SHA-256 of the raw body bytes (of nothing for a GET).

RSA2 is RSASSA-PKCS1-v1_5 with SHA-256 under the merchant's private key;
HMAC-SHA256 is keyed with the merchant's secret (its 64 hex characters as
ASCII bytes). ``zhangfang.parties.signing`` implements both, and
``docs/merchant-api.md`` is the integration guide.

Refusals, in order of precedence (all 401; see ``parties.errors``):
``signature_missing``, ``signature_header_invalid``, ``timestamp_stale``,
``app_id_unknown``, ``sign_type_mismatch``, ``signature_invalid``,
``merchant_not_active``, ``nonce_replayed``.

Guarantees
- The signature is checked over the raw body bytes FastAPI then parses (the
  body is read once; Starlette keeps it), before the body is parsed, so a
  caller without a valid signature never learns how the body would be judged.
- A refused request writes nothing. An accepted one records its nonce: an
  idempotent POST in its handler's transaction, as its first statement (one
  commit per request, not two); any other request in a transaction of its own
  before the handler runs; and a request whose handler refused it, or never
  ran (a malformed body), in a transaction of its own after. Either way the
  same signed request is accepted at most once (``nonce_replayed``), even if
  its handler then fails.
- Merchants are cached per process for ``merchant_cache_seconds`` (1 s by
  default): a change made through this process's admin API takes effect at
  once, one made elsewhere (another API process, the CLI) within that time.
  Nonces are kept ``NONCE_RETENTION_SECONDS`` (twice the window: a request is
  acceptable from 300 s before its timestamp to 300 s after), then pruned by
  the workers' periodic round (``jobs.periodic``), never on a request's time.
- Every response to an authenticated request — success or error — carries
  ``Zhangfang-Timestamp``, ``Zhangfang-Nonce``, ``Zhangfang-Sign-Type`` and
  ``Zhangfang-Signature`` over ``TIMESTAMP\\nNONCE\\nSHA256-hex(BODY)\\n``: RSA2
  with the platform's key (``GET /v1/platform/public-key``) for RSA2
  merchants, HMAC-SHA256 with the merchant's secret for HMAC merchants. Refusals
  of authentication itself are not signed: there is no merchant to sign for.
- ``Idempotency-Key`` on a merchant POST (``idempotent_post``): the first
  successful response is stored with the request's hash in the handler's own
  transaction. The same key with the same method, path, query and body returns
  that status and those bytes again with ``Idempotency-Replayed: true``; with
  anything else it is ``409 idempotency_key_conflict``. Keys are per merchant.
  Refusals are not stored (they wrote nothing), so a corrected retry may reuse
  the key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from zhangfang.api.responses import error_doc
from zhangfang.db.uow import RetryableConflict, run_in_transaction
from zhangfang.parties import errors, signing
from zhangfang.parties import service as parties
from zhangfang.parties.models import IdempotencyRecord, Merchant, PlatformKey

__all__ = [
    "IdempotentPost",
    "MerchantRoute",
    "authenticate",
    "authenticated_merchant",
    "idempotent_post",
    "platform_key",
]

logger = logging.getLogger("zhangfang.api.merchant_auth")

SCOPE_MERCHANT = "zhangfang.merchant"
SCOPE_SIGNER = "zhangfang.response_signer"
SCOPE_NONCE = "zhangfang.pending_nonce"
SCOPE_DEFER_NONCE = "zhangfang.defer_nonce"
MERCHANT_CACHE_SIZE_MAX = 10_000
HEADER_IDEMPOTENCY_KEY = "Idempotency-Key"
HEADER_IDEMPOTENCY_REPLAYED = "Idempotency-Replayed"
NONCE_RETENTION_SECONDS = parties.NONCE_RETENTION_SECONDS

_SIGNED_HEADERS = (
    signing.HEADER_APP_ID,
    signing.HEADER_TIMESTAMP,
    signing.HEADER_NONCE,
    signing.HEADER_SIGN_TYPE,
    signing.HEADER_SIGNATURE,
)

# --------------------------------------------------------------------------- the platform's key


@dataclass(frozen=True)
class _LoadedPlatformKey:
    key: PlatformKey
    private_key: rsa.RSAPrivateKey = field(repr=False)


_platform_key_lock = threading.Lock()


def _load_platform_key(request: Request) -> _LoadedPlatformKey:
    state = request.app.state
    loaded: _LoadedPlatformKey | None = getattr(state, "zhangfang_platform_key", None)
    if loaded is not None:
        return loaded
    with _platform_key_lock:
        loaded = getattr(state, "zhangfang_platform_key", None)
        if loaded is None:
            # Settings may carry the key (ZHANGFANG_PLATFORM_PRIVATE_KEY_PEM) once config.py declares it.
            configured = state.settings.platform_private_key_pem
            key = parties.platform_key(state.engine, configured_pem=configured)
            loaded = _LoadedPlatformKey(key=key, private_key=signing.load_private_key(key.private_key_pem))
            state.zhangfang_platform_key = loaded
    return loaded


async def platform_key(request: Request) -> PlatformKey:
    """The platform's response-signing key (generated and stored on first use), cached for the app's life."""
    return (await _platform_key_loaded(request)).key


async def _platform_key_loaded(request: Request) -> _LoadedPlatformKey:
    """The cached key without leaving the event loop; the first call loads it in the threadpool."""
    loaded: _LoadedPlatformKey | None = getattr(request.app.state, "zhangfang_platform_key", None)
    return loaded if loaded is not None else await run_in_threadpool(_load_platform_key, request)


# --------------------------------------------------------------------------- authentication


@functools.lru_cache(maxsize=1024)
def _public_key(pem: str) -> rsa.RSAPublicKey:
    return signing.load_public_key(pem)


def _target(scope: Scope) -> tuple[str, str]:
    """The path as sent on the request line and the raw query string."""
    raw_path = scope.get("raw_path")
    path = raw_path.split(b"?", 1)[0].decode("latin-1") if raw_path else quote(scope["path"])
    return path, scope.get("query_string", b"").decode("latin-1")


@dataclass(frozen=True)
class ResponseSigner:
    """Signs a response body for one authenticated merchant: RSA2 with the platform key, or its HMAC secret."""

    sign_type: str
    private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    hmac_secret: str | None = field(default=None, repr=False)

    def headers(self, body: bytes) -> dict[str, str]:
        return signing.sign_response(
            body, sign_type=self.sign_type, private_key=self.private_key, hmac_secret=self.hmac_secret
        )


# --------------------------------------------------------------------------- merchants, cached briefly


@dataclass
class _CachedMerchant:
    merchant: Merchant | None
    read_at: float
    refreshing: asyncio.Future[Merchant | None] | None = None


def _merchants(state: Any) -> dict[str, _CachedMerchant]:
    cache: dict[str, _CachedMerchant] | None = getattr(state, "zhangfang_merchants", None)
    if cache is None:
        cache = state.zhangfang_merchants = {}
    return cache


def forget_merchant(request: Request, app_id: str) -> None:
    """Drops a merchant from this app's cache at once (its status or credentials just changed here)."""
    _merchants(request.app.state).pop(app_id, None)


async def _merchant(request: Request, app_id: str) -> Merchant | None:
    """The merchant with this app_id: from the cache while fresh, else read again (in the threadpool).

    One read at a time per app_id: when an entry goes stale under load, the
    first request reads it again and the others keep the stale one meanwhile
    (a few milliseconds more), instead of all reading at once. Runs on the
    event loop only, so the cache needs no lock.
    """
    cache = _merchants(request.app.state)
    ttl = request.app.state.settings.merchant_cache_seconds
    entry = cache.get(app_id)
    now = time.monotonic()
    if entry is not None and entry.merchant is not None and now - entry.read_at < ttl:
        return entry.merchant
    if entry is not None and entry.refreshing is not None:
        return entry.merchant if entry.merchant is not None else await asyncio.shield(entry.refreshing)
    if entry is None:
        if len(cache) >= MERCHANT_CACHE_SIZE_MAX:
            cache.clear()
        entry = cache[app_id] = _CachedMerchant(merchant=None, read_at=now)
    entry.refreshing = asyncio.get_running_loop().create_future()
    try:
        engine: Engine = request.app.state.engine
        merchant = await run_in_threadpool(
            run_in_transaction, engine, lambda conn: parties.find_merchant_by_app_id(conn, app_id=app_id), readonly=True
        )
    except BaseException as error:
        entry.refreshing.set_exception(error)
        entry.refreshing.exception()  # retrieved: the waiters (if any) see it, nobody else must
        entry.refreshing = None
        raise
    entry.refreshing.set_result(merchant)
    entry.merchant, entry.read_at, entry.refreshing = merchant, time.monotonic(), None
    if merchant is None or ttl <= 0:
        cache.pop(app_id, None)  # unknown app_ids are not remembered; a ttl of 0 reads every time
    return merchant


def _check_credentials(merchant: Merchant | None, *, sign_type: str, message: str, signature: str) -> Merchant:
    """Rules 4-7 of the precedence, on the merchant the app_id names."""
    if merchant is None:
        raise errors.AppIdUnknown("no merchant has this app_id", field=signing.HEADER_APP_ID)
    if sign_type != merchant.sign_type:
        raise errors.SignTypeMismatch(
            f"this merchant signs with {merchant.sign_type}, not {sign_type}", field=signing.HEADER_SIGN_TYPE
        )
    public_key = _public_key(merchant.public_key_pem) if merchant.public_key_pem else None
    if not signing.verify(
        message, signature, sign_type=sign_type, public_key=public_key, hmac_secret=merchant.hmac_secret
    ):
        raise errors.SignatureInvalid(
            "the signature does not verify over the canonical request "
            "(METHOD\\nPATH?sorted_query\\nTIMESTAMP\\nNONCE\\nSHA256-hex(BODY)\\n)",
            field=signing.HEADER_SIGNATURE,
        )
    if not merchant.is_active:
        raise errors.MerchantNotActive(f"the merchant is {merchant.status}", status=merchant.status)
    return merchant


# --------------------------------------------------------------------------- nonces (rule 8)


@dataclass
class PendingNonce:
    """An accepted request's nonce, still to be recorded: by the handler's transaction, or after it."""

    app_id: str
    nonce: str
    seen_at: dt.datetime
    recorded: bool = False


def _nonce_replayed() -> errors.NonceReplayed:
    return errors.NonceReplayed("this nonce was used before; every request needs a new one", field=signing.HEADER_NONCE)


def _record_nonce_alone(engine: Engine, pending: PendingNonce) -> bool:
    """Records a nonce in a transaction of its own; False when it was used before."""
    accepted = run_in_transaction(
        engine, lambda conn: parties.record_nonce(conn, app_id=pending.app_id, nonce=pending.nonce, now=pending.seen_at)
    )
    pending.recorded = True
    return accepted


async def authenticate(request: Request) -> Merchant:
    """Check the request's signature headers and return its merchant; raise the first broken rule.

    Idempotent within one request: the second call returns what the first found.
    """
    found = request.scope.get(SCOPE_MERCHANT)
    if found is not None:
        return found
    values = {name: request.headers.get(name, "") for name in _SIGNED_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise errors.SignatureMissing(
            f"signed requests carry {', '.join(_SIGNED_HEADERS)}; missing: {', '.join(missing)}", field=missing[0]
        )
    app_id = values[signing.HEADER_APP_ID]
    timestamp = values[signing.HEADER_TIMESTAMP]
    nonce = values[signing.HEADER_NONCE]
    sign_type = values[signing.HEADER_SIGN_TYPE]
    if not signing.TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise errors.SignatureHeaderInvalid(
            "Zhangfang-Timestamp is unix seconds, such as 1767225600", field=signing.HEADER_TIMESTAMP
        )
    if not signing.NONCE_PATTERN.fullmatch(nonce):
        raise errors.SignatureHeaderInvalid(
            "Zhangfang-Nonce is 16 to 64 characters of A-Z, a-z, 0-9, _ and -", field=signing.HEADER_NONCE
        )
    if sign_type not in signing.SIGN_TYPES:
        raise errors.SignatureHeaderInvalid(
            f"Zhangfang-Sign-Type is one of {', '.join(signing.SIGN_TYPES)}", field=signing.HEADER_SIGN_TYPE
        )
    now = time.time()
    skew = int(now) - int(timestamp)
    if abs(skew) > signing.TIMESTAMP_TOLERANCE_SECONDS:
        raise errors.TimestampStale(
            f"Zhangfang-Timestamp is {abs(skew)} s from the server's clock; at most "
            f"{signing.TIMESTAMP_TOLERANCE_SECONDS} s are allowed",
            field=signing.HEADER_TIMESTAMP,
            server_time=int(now),
        )
    body = await request.body()
    path, query = _target(request.scope)
    message = signing.canonical_request(
        method=request.method, path=path, query=query, timestamp=timestamp, nonce=nonce, body=body
    )
    merchant = _check_credentials(
        await _merchant(request, app_id),
        sign_type=sign_type,
        message=message,
        signature=values[signing.HEADER_SIGNATURE],
    )
    pending = PendingNonce(app_id=app_id, nonce=nonce, seen_at=dt.datetime.fromtimestamp(now, dt.UTC))
    if request.scope.get(SCOPE_DEFER_NONCE):
        request.scope[SCOPE_NONCE] = pending
    elif not await run_in_threadpool(_record_nonce_alone, request.app.state.engine, pending):
        raise _nonce_replayed()
    if merchant.sign_type == signing.SIGN_TYPE_RSA2:
        loaded = await _platform_key_loaded(request)
        signer = ResponseSigner(sign_type=signing.SIGN_TYPE_RSA2, private_key=loaded.private_key)
    else:
        signer = ResponseSigner(sign_type=signing.SIGN_TYPE_HMAC, hmac_secret=merchant.hmac_secret)
    request.scope[SCOPE_SIGNER] = signer
    request.scope[SCOPE_MERCHANT] = merchant
    return merchant


def _header_doc(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


# The five headers, as OpenAPI parameters of every merchant route (``MerchantRoute`` adds them). They are
# documented, not declared as FastAPI parameters: ``authenticate`` reads and checks them itself, before
# anything else, so validating them again per request would be work for nothing.
SIGNED_HEADERS_DOC: list[dict[str, Any]] = [
    _header_doc(signing.HEADER_APP_ID, "your app_id (app_ + 16 hex)"),
    _header_doc(signing.HEADER_TIMESTAMP, "unix seconds, within 300 s of now"),
    _header_doc(signing.HEADER_NONCE, "16 to 64 characters of [A-Za-z0-9_-], never reused"),
    _header_doc(signing.HEADER_SIGN_TYPE, "your scheme: RSA2 or HMAC-SHA256", enum=list(signing.SIGN_TYPES)),
    _header_doc(
        signing.HEADER_SIGNATURE,
        "base64 signature of METHOD\\nPATH?sorted_query\\nTIMESTAMP\\nNONCE\\nSHA256-hex(BODY)\\n",
    ),
]


async def authenticated_merchant(request: Request) -> Merchant:
    """The merchant that signed this request (a FastAPI dependency).

    Use it on routes of a ``MerchantRoute`` router: the route checks the
    signature before FastAPI reads the body or the parameters, so a missing
    header is ``signature_missing`` (401), and signs the response; the route
    also documents the five headers in OpenAPI (``SIGNED_HEADERS_DOC``).
    """
    return await authenticate(request)


def _signing_send(scope: Scope, send: Send) -> Send:
    """Wraps ``send`` so that a response to an authenticated request leaves with its signature headers."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def signing_send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if scope.get(SCOPE_SIGNER) is None:
                await send(message)
                return
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        signer: ResponseSigner = scope[SCOPE_SIGNER]
        added = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in signer.headers(body).items()
        ]
        await send({**start, "headers": [*start.get("headers", []), *added]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        start = None

    return signing_send


class MerchantRoute(APIRoute):
    """A route for merchants: authenticates before FastAPI reads the body, and signs every response after.

    Like ``api.deps.AdminRoute``: without it, FastAPI would parse and validate a
    body before any dependency runs, so an unsigned caller could learn how the
    body is judged. Routes keep ``Depends(authenticated_merchant)`` to receive
    the merchant and to document the headers.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = dict(kwargs.pop("openapi_extra", None) or {})
        given = extra.get("parameters", [])
        named = {parameter.get("name") for parameter in given}
        extra["parameters"] = [*(p for p in SIGNED_HEADERS_DOC if p["name"] not in named), *given]
        super().__init__(path, endpoint, openapi_extra=extra, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        defers_nonce = _uses(self.dependant, idempotent_post)

        async def authenticated(request: Request) -> Response:
            # An idempotent POST records the nonce in its own transaction (one commit per request, not two);
            # whatever does not reach that transaction records it here, after.
            request.scope[SCOPE_DEFER_NONCE] = defers_nonce
            await authenticate(request)
            try:
                return await handler(request)
            finally:
                pending: PendingNonce | None = request.scope.get(SCOPE_NONCE)
                if pending is not None and not pending.recorded:
                    await run_in_threadpool(_record_nonce_alone, request.app.state.engine, pending)

        return authenticated

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().handle(scope, receive, _signing_send(scope, send))


def _uses(dependant: Any, dependency: Callable[..., Any]) -> bool:
    """True when ``dependency`` is among the dependencies of a route (at any depth)."""
    return any(d.call is dependency or _uses(d, dependency) for d in dependant.dependencies)


# --------------------------------------------------------------------------- idempotent POSTs


def _render(content: BaseModel | dict[str, Any]) -> bytes:
    """The JSON bytes FastAPI would send for this model, or for this dict already in JSON form (compact, UTF-8).

    A dict skips pydantic: the busiest answers (a created order) are built as the
    JSON they are, and validating them into a model only to dump them again
    costs more than the rest of the answer.
    """
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return JSONResponse(content).body


@dataclass(frozen=True)
class IdempotentPost:
    """A merchant POST under an ``Idempotency-Key``: call ``respond`` with the work that answers it."""

    app_id: str
    key: str
    request_hash: str
    scope: Scope = field(repr=False, compare=False)

    def _replay(self, record: IdempotencyRecord) -> Response:
        if record.request_hash != self.request_hash:
            raise errors.IdempotencyKeyConflict(
                "this Idempotency-Key was used for a different request",
                field=HEADER_IDEMPOTENCY_KEY,
                key=self.key,
            )
        return Response(
            content=record.response_body.encode("utf-8"),
            status_code=record.status_code,
            media_type="application/json",
            headers={HEADER_IDEMPOTENCY_REPLAYED: "true"},
        )

    def respond(self, engine: Engine, work: Callable[[Connection], tuple[int, BaseModel | dict[str, Any]]]) -> Response:
        """Replay the stored response for this key, or run ``work`` and store its answer in the same transaction.

        ``work(conn)`` returns ``(status_code, model)``; it runs at most once per
        committed key. A concurrent request with the same key that commits first
        wins, and this one replays it.
        """

        def attempt(conn: Connection) -> Response:
            # The request's nonce goes in this transaction, first thing (one commit per request, not two). Used
            # before: refused, unsigned as every refusal of authentication; rolled back: MerchantRoute records it.
            pending: PendingNonce | None = self.scope.get(SCOPE_NONCE)
            if pending is not None and not pending.recorded:
                accepted, record = parties.record_nonce_and_find_idempotency_record(
                    conn, app_id=self.app_id, nonce=pending.nonce, key=self.key, now=pending.seen_at
                )
                if not accepted:
                    self.scope.pop(SCOPE_SIGNER, None)
                    raise _nonce_replayed()
            else:
                record = parties.find_idempotency_record(conn, app_id=self.app_id, key=self.key)
            if record is not None:
                return self._replay(record)
            status_code, content = work(conn)
            body = _render(content)
            saved = parties.save_idempotency_record(
                conn,
                app_id=self.app_id,
                key=self.key,
                request_hash=self.request_hash,
                status_code=status_code,
                response_body=body.decode("utf-8"),
            )
            if not saved:
                raise RetryableConflict("a concurrent request recorded this Idempotency-Key first")
            return Response(content=body, status_code=status_code, media_type="application/json")

        response = run_in_transaction(engine, attempt)
        pending: PendingNonce | None = self.scope.get(SCOPE_NONCE)
        if pending is not None:
            pending.recorded = True  # committed with the answer
        return response


def request_fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """SHA-256 hex of ``METHOD\\nPATH?sorted_query\\nSHA256-hex(BODY)\\n``: what one key may stand for."""
    sorted_query = signing.canonical_query(query)
    text = f"{method.upper()}\n{path}?{sorted_query}\n{signing.body_digest(body)}\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def idempotent_post(
    request: Request,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency_key: str = Header(
        alias=HEADER_IDEMPOTENCY_KEY,
        description="1 to 200 printable ASCII characters, chosen by the merchant; the same key and request "
        "replay the first response (header Idempotency-Replayed: true), a different request is a conflict",
    ),
) -> IdempotentPost:
    """The ``Idempotency-Key`` of a merchant POST, bound to this merchant and this request's content."""
    key = parties.check_idempotency_key(idempotency_key, HEADER_IDEMPOTENCY_KEY)
    path, query = _target(request.scope)
    body = await request.body()
    return IdempotentPost(
        app_id=merchant.app_id,
        key=key,
        request_hash=request_fingerprint(request.method, path, query, body),
        scope=request.scope,
    )


def replayed_header_doc() -> dict[str, Any]:
    """OpenAPI description of the replay header, for the responses of idempotent routes."""
    return {
        HEADER_IDEMPOTENCY_REPLAYED: {
            "description": "true when this is the stored response to an earlier request with the same key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }


def signature_headers_doc() -> dict[str, Any]:
    """OpenAPI description of the four headers that sign a response to a merchant."""
    return {
        signing.HEADER_TIMESTAMP: {"description": "unix seconds", "schema": {"type": "string"}},
        signing.HEADER_NONCE: {"description": "fresh per response", "schema": {"type": "string"}},
        signing.HEADER_SIGN_TYPE: {
            "description": "RSA2 (platform key) or HMAC-SHA256 (your secret): your scheme",
            "schema": {"type": "string", "enum": list(signing.SIGN_TYPES)},
        },
        signing.HEADER_SIGNATURE: {
            "description": "base64 signature of TIMESTAMP\\nNONCE\\nSHA256-hex(BODY)\\n",
            "schema": {"type": "string"},
        },
    }


def signed_doc(model: type[BaseModel], description: str, *, replayable: bool = False) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for a signed merchant answer (and, for idempotent POSTs, the replay header)."""
    headers = signature_headers_doc() | (replayed_header_doc() if replayable else {})
    return {"model": model, "description": description, "headers": headers}


def make_merchant_router(*, prefix: str, tags: list[str]) -> APIRouter:
    """A router for merchant endpoints: every request signature-checked, every answer signed, refusals documented."""
    return APIRouter(
        prefix=prefix,
        tags=tags,
        route_class=MerchantRoute,
        responses={
            401: error_doc(
                "the request is not signed by an active merchant: signature_missing, signature_header_invalid, "
                "timestamp_stale, app_id_unknown, sign_type_mismatch, signature_invalid, merchant_not_active, "
                "nonce_replayed"
            ),
            422: error_doc("the request is malformed (request_invalid, …)"),
            500: error_doc("internal_error"),
        },
    )
