"""A local WeChat Pay API v3 simulator that the real ``wechatpayv3`` SDK talks to unchanged.

The SDK is only pointed at this simulator's base URL (its ``Core._gate_way``); every byte
it sends and checks is the real wire format (channels.md, "WeChat Pay v3"):

- Requests must carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,
  signature=…,timestamp=…,serial_no=…``; the simulator rebuilds
  ``METHOD\\nPATH[?query]\\nTS\\nNONCE\\nBODY\\n`` from the raw request (raw path, raw body bytes)
  and verifies it with the merchant's public key, the serial against the merchant's
  certificate serial and the timestamp within five minutes. Anything else is
  ``401 SIGN_ERROR``.
- Every 2xx answer except the bill file is signed with the platform private key over
  ``TS\\nNONCE\\nBODY\\n`` (an empty body line for 204) and carries ``Wechatpay-Timestamp``,
  ``-Nonce``, ``-Signature``, ``-Serial`` (the platform public key id: the SDK's
  public-key mode) and ``Wechatpay-Signature-Type: WECHATPAY2-SHA256-RSA2048``;
  JSON bodies are ``application/json; charset=utf-8``. Errors are
  ``{"code": …, "message": …}`` with the channel's HTTP status.
- Endpoints: ``POST /v3/pay/transactions/{native|h5|jsapi}`` (amounts in fen;
  ``code_url`` ``weixin://wxpay/bizpayurl?pr=…``, ``h5_url``, ``prepay_id``), query by
  ``out-trade-no`` or ``id``, close (204), ``POST /v3/refund/domestic/refunds``
  (PROCESSING, then SUCCESS after ``refund_settle_seconds``), refund query,
  ``GET /v3/bill/tradebill`` (SHA1 of the uncompressed file, ``download_url`` under
  ``/v3/billdownload/file``), and the file itself (gzip when ``tar_type=GZIP``).
- Notifies: a JSON POST whose ``resource`` is AES-256-GCM encrypted with the merchant's
  APIv3 key (12-character nonce, ``associated_data`` = the resource's original type),
  signed like a response. Only a 2xx answer is an acknowledgement; otherwise the
  simulator retries at 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h, keeping
  the same notify ``id``. Payments notify only on success (``TRANSACTION.SUCCESS``);
  refunds notify ``REFUND.SUCCESS``/``REFUND.ABNORMAL``/``REFUND.CLOSED`` when the
  refund request named a ``notify_url``.
- The trade bill (ALL): UTF-8, comma-separated, every value prefixed with a backtick,
  27 detail columns, then the 7-column summary; amounts in yuan.

Time. Everything the real channel does "after N seconds" (notify retries, a delayed
notify, a refund settling) happens after ``N * notify_delay_seconds`` wall seconds, so
``notify_delay_seconds=0.001`` turns the first 15 s retry into 15 ms. ``clock`` gives the
business times (``success_time``, bill dates, ``time_expire``); signature timestamps are
always the wall clock, as the SDK's are.

Controls for tests (plain methods, thread-safe): ``fail_next``, ``timeout_next``,
``bad_signature_next``, ``delay_notify``, ``duplicate_notify``, ``disagree_amount``,
``pay``, ``settle_refund``, ``notifies_sent``, ``bill_rows``/``bill_text``, plus
``cashier_url`` (what the payer's phone opens) and ``notify_body``/``notify_headers``
(to build notifies by hand, e.g. forged ones).

Simplified compared with the real channel: one direct-merchant mode (no partner
``/v3/pay/partner/…`` paths, no ``app``/``codepay``), public-key mode only (no
``/v3/certificates``), only the ALL bill type, fees rounded to the fen at one flat rate,
refund rows dated by the refund's application time, bills available the same day, and
the payer page is a stand-in for the WeChat client.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import gzip
import hashlib
import html
import io
import json
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from zhangfang.money import format_minor, parse_amount

__all__ = [
    "BILL_ALL_HEADER",
    "BILL_SUMMARY_HEADER",
    "NOTIFY_RETRY_SCHEDULE_SECONDS",
    "SIGNATURE_TYPE",
    "NotifyAttempt",
    "SimulatedMerchant",
    "WechatPaySimulator",
    "create_simulator",
]

SHANGHAI = ZoneInfo("Asia/Shanghai")
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
NOTIFY_RETRY_SCHEDULE_SECONDS: tuple[int, ...] = (
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
)  # fmt: skip
SIGNATURE_SKEW_SECONDS_MAX = 300
BILL_URL_TTL_SECONDS = 300
BILL_ALL_HEADER: tuple[str, ...] = (
    "交易时间", "公众账号ID", "商户号", "特约商户号", "设备号", "微信订单号", "商户订单号", "用户标识",
    "交易类型", "交易状态", "付款银行", "货币种类", "应结订单金额", "代金券金额", "微信退款单号",
    "商户退款单号", "退款金额", "充值券退款金额", "退款类型", "退款状态", "商品名称", "商户数据包",
    "手续费", "费率", "订单金额", "申请退款金额", "费率备注",
)  # fmt: skip
BILL_SUMMARY_HEADER: tuple[str, ...] = (
    "总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额",
)  # fmt: skip

_TRADE_TYPES = {"native": "NATIVE", "h5": "MWEB", "jsapi": "JSAPI"}
_TRADE_STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "CLOSED": "订单已关闭",
    "PAYERROR": "支付失败，请重新下单支付",
}
_REFUND_EVENTS = {
    "SUCCESS": ("REFUND.SUCCESS", "退款成功"),
    "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
    "CLOSED": ("REFUND.CLOSED", "退款关闭"),
}
_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
_OUT_REFUND_NO = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')
_NONCE_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class SimulatedMerchant:
    """A merchant the simulator knows: its ids, its APIv3 key and the public key of its API certificate."""

    mchid: str
    appid: str
    apiv3_key: str  # 32 ASCII characters: the AES-256-GCM key of notifies
    cert_serial_no: str  # serial of the merchant API certificate named in ``Authorization``
    public_key_pem: str  # verifies the merchant's request signatures


@dataclass(frozen=True)
class NotifyAttempt:
    """One delivery attempt of one notify (retries and duplicates share ``notify_id``)."""

    notify_id: str
    event_type: str
    url: str
    attempt: int  # 1-based, per notify
    headers: Mapping[str, str]
    body: bytes
    status_code: int | None  # None when the receiver could not be reached
    error: str | None
    acknowledged: bool
    sent_monotonic: float


@dataclass
class _Trade:
    mchid: str
    appid: str
    out_trade_no: str
    trade_type: str
    description: str
    total_minor: int
    notify_url: str
    attach: str
    payer_openid: str | None
    time_expire: dt.datetime | None
    created_at: dt.datetime
    prepay_id: str
    cashier_token: str
    fingerprint: dict[str, Any]
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: dt.datetime | None = None
    bank_type: str = "OTHERS"
    reported_total_minor: int | None = None  # disagree_amount: what notify/query/bill report instead

    @property
    def shown_total_minor(self) -> int:
        return self.total_minor if self.reported_total_minor is None else self.reported_total_minor


@dataclass
class _Refund:
    mchid: str
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    refund_minor: int
    reason: str
    notify_url: str | None
    created_at: dt.datetime
    status: str = "PROCESSING"
    success_time: dt.datetime | None = None


@dataclass
class _NotifyJob:
    notify_id: str
    event_type: str
    url: str
    body: bytes
    deliveries: int  # acknowledged deliveries wanted (1, or more with duplicate_notify)
    initial_delay_seconds: float


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")


def _nonce(length: int) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def _digits(length: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(length))


def _param_error(field_name: str, issue: str, location: str = "body") -> _ApiError:
    return _ApiError(400, "PARAM_ERROR", f"{field_name}: {issue}", {"field": field_name, "location": location})


class WechatPaySimulator:
    """WeChat Pay API v3 for a set of direct merchants, in memory; ``app`` is the ASGI app to serve."""

    def __init__(
        self,
        *,
        merchants: Iterable[SimulatedMerchant],
        platform_private_key_pem: str,
        platform_public_key_id: str,
        base_url: str | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        notify_delay_seconds: float = 1.0,
        notify_timeout_seconds: float = 5.0,
        refund_settle_seconds: float | None = 60.0,
        fee_rate_bp: int = 60,
    ) -> None:
        self._merchants = {merchant.mchid: merchant for merchant in merchants}
        if not self._merchants:
            raise ValueError("a simulator needs at least one merchant")
        for merchant in self._merchants.values():
            if len(merchant.apiv3_key.encode()) != 32:
                raise ValueError(f"merchant {merchant.mchid}: an APIv3 key is 32 bytes (AES-256)")
        self._merchant_keys = {
            mchid: serialization.load_pem_public_key(merchant.public_key_pem.encode())
            for mchid, merchant in self._merchants.items()
        }
        key = serialization.load_pem_private_key(platform_private_key_pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._platform_key = key
        self.platform_public_key_id = platform_public_key_id
        self.base_url = base_url.rstrip("/") if base_url else None
        self._clock = clock
        self._scale = notify_delay_seconds
        self._notify_timeout_seconds = notify_timeout_seconds
        self._refund_settle_seconds = refund_settle_seconds
        self._fee_rate_bp = fee_rate_bp

        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._trades: dict[tuple[str, str], _Trade] = {}
        self._cashier_tokens: dict[str, tuple[str, str]] = {}
        self._refunds: dict[tuple[str, str], _Refund] = {}
        self._bill_files: dict[str, tuple[str, bytes, float]] = {}
        self._attempts: list[NotifyAttempt] = []
        self._fail_statuses: list[int] = []
        self._timeouts_seconds: list[float] = []
        self._bad_signatures: list[bool] = []
        self._notify_delay_extra_seconds = 0.0
        self._duplicate_times = 1
        self.app = self._build_app()

    # ----------------------------------------------------------------- controls

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next ``n`` API requests answer ``status`` (``SYSTEM_ERROR`` for 5xx) without being processed."""
        with self._lock:
            self._fail_statuses.extend([status] * n)

    def timeout_next(self, n: int = 1, seconds: float = 30.0) -> None:
        """The next ``n`` API requests wait ``seconds`` (wall time) before being processed and answered."""
        with self._lock:
            self._timeouts_seconds.extend([seconds] * n)

    def bad_signature_next(self, n: int = 1, *, drop_headers: bool = False) -> None:
        """The next ``n`` 2xx answers carry a signature that does not verify (or, ``drop_headers``, none)."""
        with self._lock:
            self._bad_signatures.extend([drop_headers] * n)

    def delay_notify(self, seconds: float) -> None:
        """Hold every later notify ``seconds`` channel seconds (scaled like the retry schedule) before sending."""
        with self._lock:
            self._notify_delay_extra_seconds = seconds

    def duplicate_notify(self, times: int = 2) -> None:
        """Deliver the next notify ``times`` times in all: once acknowledged, send it again with the same id."""
        assert times >= 1
        with self._lock:
            self._duplicate_times = times

    def disagree_amount(self, out_trade_no: str, amount_minor: int, *, mchid: str | None = None) -> None:
        """From now on the notify, query and bill of this trade report ``amount_minor`` instead of its amount."""
        with self._lock:
            self._trade(mchid, out_trade_no).reported_total_minor = amount_minor

    def pay(self, out_trade_no: str, *, mchid: str | None = None) -> str:
        """The payer pays without a browser: mark paid, send the notify; returns the ``transaction_id``."""
        with self._lock:
            trade = self._trade(mchid, out_trade_no)
            refusal = self._pay_refusal(trade)
            if refusal is not None:
                raise ValueError(f"{out_trade_no} cannot be paid: {refusal}")
            self._mark_paid(trade)
            assert trade.transaction_id is not None
            return trade.transaction_id

    def settle_refund(self, out_refund_no: str, status: str = "SUCCESS", *, mchid: str | None = None) -> None:
        """Finish a PROCESSING refund now as SUCCESS, ABNORMAL or CLOSED (and notify if it asked to)."""
        assert status in _REFUND_EVENTS, status
        with self._lock:
            refund = self._refunds.get((self._mchid(mchid), out_refund_no))
            if refund is None:
                raise KeyError(out_refund_no)
            self._settle(refund, status)

    def notifies_sent(self) -> list[NotifyAttempt]:
        """Every notify delivery attempt so far, oldest first."""
        with self._lock:
            return list(self._attempts)

    def trade_state(self, out_trade_no: str, *, mchid: str | None = None) -> str:
        with self._lock:
            return self._trade(mchid, out_trade_no).state

    def cashier_url(self, payment_code: str) -> str:
        """The payer page for a ``code_url`` (what scanning the QR opens), an ``h5_url`` or a JSAPI ``package``."""
        if payment_code.startswith(("http://", "https://")):
            return payment_code
        if payment_code.startswith("weixin://"):
            token = parse_qs(urlsplit(payment_code).query)["pr"][0]
        elif payment_code.startswith("prepay_id="):
            token = payment_code.removeprefix("prepay_id=")
        else:
            raise ValueError(f"not a WeChat Pay payment code: {payment_code!r}")
        if self.base_url is None:
            raise RuntimeError("the simulator's base URL is not known yet (serve it and make a request first)")
        return f"{self.base_url}/cashier/{token}"

    def verify_jsapi_params(self, params: Mapping[str, str]) -> bool:
        """What the WeChat client checks before a JSAPI payment: ``paySign`` by the merchant over the four fields."""
        prepay_id = params.get("package", "").removeprefix("prepay_id=")
        with self._lock:
            found = self._cashier_tokens.get(prepay_id)
            if found is None or params.get("signType") != "RSA":
                return False
            trade = self._trades[found]
        if trade.appid != params.get("appId"):
            return False
        message = "\n".join([params["appId"], params["timeStamp"], params["nonceStr"], params["package"]]) + "\n"
        return self._verify(trade.mchid, message.encode(), params.get("paySign", ""))

    def bill_rows(self, bill_date: dt.date, *, mchid: str | None = None) -> list[dict[str, str]]:
        """The ALL bill's detail rows for a day (Asia/Shanghai), keyed by column, without the backticks."""
        with self._lock:
            return [
                dict(zip(BILL_ALL_HEADER, row, strict=True)) for row in self._bill_detail(self._mchid(mchid), bill_date)
            ]

    def bill_text(self, bill_date: dt.date, *, mchid: str | None = None) -> str:
        """The ALL bill file for a day, as served (before gzip)."""
        with self._lock:
            return self._bill_file(self._mchid(mchid), bill_date)

    def notify_body(
        self,
        *,
        event_type: str,
        summary: str,
        original_type: str,
        resource: Mapping[str, Any],
        apiv3_key: str,
        notify_id: str | None = None,
    ) -> bytes:
        """A notify body: ``resource`` AES-256-GCM encrypted with ``apiv3_key``, as the channel sends it."""
        nonce = _nonce(12)
        plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
        sealed = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext, original_type.encode())
        envelope = {
            "id": notify_id or str(uuid.uuid4()),
            "create_time": _rfc3339(self._clock()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()

    def notify_headers(self, body: bytes, *, private_key_pem: str | None = None) -> dict[str, str]:
        """The five signature headers for a notify body (signed by the platform key unless another is given)."""
        key = self._platform_key
        if private_key_pem is not None:
            loaded = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            key = loaded
        headers = self._signature_headers(body, key)
        headers["Content-Type"] = "application/json"
        return headers

    def close(self) -> None:
        """Stop sending notifies and settling refunds; wake up requests held by ``timeout_next``."""
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)

    # ----------------------------------------------------------------- the app

    def _build_app(self) -> Starlette:
        api = self._api_endpoint
        routes = [
            Route("/v3/pay/transactions/{kind}", api(self._create), methods=["POST"]),
            Route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}", api(self._query_by_out_trade_no), methods=["GET"]
            ),
            Route("/v3/pay/transactions/id/{transaction_id}", api(self._query_by_id), methods=["GET"]),
            Route("/v3/pay/transactions/out-trade-no/{out_trade_no}/close", api(self._close), methods=["POST"]),
            Route("/v3/refund/domestic/refunds", api(self._refund), methods=["POST"]),
            Route("/v3/refund/domestic/refunds/{out_refund_no}", api(self._query_refund), methods=["GET"]),
            Route("/v3/bill/tradebill", api(self._trade_bill), methods=["GET"]),
            Route("/v3/billdownload/file", api(self._bill_download), methods=["GET"]),
            Route("/cashier/{token}", self._cashier_page, methods=["GET"]),
            Route("/cashier/{token}", self._cashier_submit, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def _api_endpoint(
        self, handler: Callable[[Request, SimulatedMerchant, bytes], Response | tuple[int, Any]]
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            self._remember_base_url(request)
            body = await request.body()  # read before any held delay: the client may hang up meanwhile
            with self._lock:
                delay = self._timeouts_seconds.pop(0) if self._timeouts_seconds else None
            if delay is not None and await self._sleep_unless_closed(delay):
                return Response(status_code=503)
            with self._lock:
                failure = self._fail_statuses.pop(0) if self._fail_statuses else None
            if failure is not None:
                if failure >= 500:
                    return self._json_response(failure, {"code": "SYSTEM_ERROR", "message": "系统错误"})
                return self._json_response(failure, {"code": "INVALID_REQUEST", "message": "无效请求"})
            try:
                merchant = self._authenticate(request, body)
                with self._lock:
                    result = handler(request, merchant, body)
            except _ApiError as error:
                payload: dict[str, Any] = {"code": error.code, "message": error.message}
                if error.detail:
                    payload["detail"] = dict(error.detail)
                return self._json_response(error.status, payload)
            if isinstance(result, Response):
                return result
            status, payload = result
            return self._json_response(status, payload)

        return endpoint

    async def _sleep_unless_closed(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop.is_set():
                return True
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return self._stop.is_set()

    def _remember_base_url(self, request: Request) -> None:
        if self.base_url is None:
            self.base_url = str(request.base_url).rstrip("/")

    def _authenticate(self, request: Request, body: bytes) -> SimulatedMerchant:
        schema, _, params = request.headers.get("authorization", "").partition(" ")
        if schema != SIGNATURE_TYPE:
            raise _ApiError(401, "SIGN_ERROR", "Authorization 认证类型错误")
        fields = dict(_AUTH_PARAM.findall(params))
        merchant = self._merchants.get(fields.get("mchid", ""))
        if merchant is None:
            raise _ApiError(400, "MCH_NOT_EXISTS", "商户号不存在")
        if fields.get("serial_no", "").upper() != merchant.cert_serial_no.upper():
            raise _ApiError(401, "SIGN_ERROR", "商户证书序列号有误")
        timestamp = fields.get("timestamp", "")
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or abs(time.time() - int(timestamp)) > SIGNATURE_SKEW_SECONDS_MAX
        ):
            raise _ApiError(401, "SIGN_ERROR", "请求时间戳已过期")
        path = request.scope["raw_path"].decode("latin-1")
        if request.scope["query_string"]:
            path += "?" + request.scope["query_string"].decode("latin-1")
        message = f"{request.method}\n{path}\n{timestamp}\n{fields.get('nonce_str', '')}\n".encode() + body + b"\n"
        if not self._verify(merchant.mchid, message, fields.get("signature", "")):
            raise _ApiError(401, "SIGN_ERROR", "签名错误")
        serial = request.headers.get("wechatpay-serial")
        if serial is not None and serial != self.platform_public_key_id:
            raise _ApiError(400, "PARAM_ERROR", "Wechatpay-Serial 不是有效的平台公钥ID")
        return merchant

    def _verify(self, mchid: str, message: bytes, signature_b64: str) -> bool:
        key = self._merchant_keys[mchid]
        assert isinstance(key, rsa.RSAPublicKey)
        try:
            key.verify(base64.b64decode(signature_b64, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True

    def _signature_headers(self, body: bytes, key: rsa.RSAPrivateKey) -> dict[str, str]:
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16).upper()
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": self.platform_public_key_id,
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }

    def _json_response(self, status: int, payload: Any) -> Response:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = self._signature_headers(body, self._platform_key)
        if 200 <= status < 300:
            with self._lock:
                bad = self._bad_signatures.pop(0) if self._bad_signatures else None
            if bad is True:
                for name in ("Wechatpay-Signature", "Wechatpay-Signature-Type"):
                    del headers[name]
            elif bad is False:
                headers["Wechatpay-Signature"] = self._signature_headers(body + b" ", self._platform_key)[
                    "Wechatpay-Signature"
                ]
        headers["Request-ID"] = str(uuid.uuid4())
        if payload is None:
            return Response(status_code=status, headers=headers)
        return Response(body, status_code=status, headers=headers, media_type="application/json; charset=utf-8")

    # ----------------------------------------------------------------- API handlers (called under the lock)

    def _create(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        kind = request.path_params["kind"]
        if kind not in _TRADE_TYPES:
            raise _ApiError(404, "NOT_FOUND", f"不支持的交易类型 {kind}")
        data = self._json_body(body)
        self._check_ids(merchant, data)
        out_trade_no = data.get("out_trade_no")
        if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.fullmatch(out_trade_no):
            raise _param_error("out_trade_no", "商户订单号只能是6-32位数字、大小写字母_-|*")
        description = data.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= 127:
            raise _param_error("description", "商品描述必填，不超过127个字符")
        notify_url = data.get("notify_url")
        if not isinstance(notify_url, str) or not notify_url.startswith(("http://", "https://")):
            raise _param_error("notify_url", "通知地址必须是http(s)链接")
        amount = data.get("amount")
        total = amount.get("total") if isinstance(amount, dict) else None
        if type(total) is not int or total <= 0:
            raise _param_error("amount.total", "订单金额必须是正整数（单位：分）")
        if amount.get("currency", "CNY") != "CNY":
            raise _param_error("amount.currency", "境内商户仅支持CNY")
        payer = data.get("payer") if isinstance(data.get("payer"), dict) else {}
        openid = payer.get("openid")
        if kind == "jsapi" and not isinstance(openid, str):
            raise _param_error("payer.openid", "JSAPI下单必须传openid")
        scene = data.get("scene_info") if isinstance(data.get("scene_info"), dict) else {}
        if kind == "h5" and not isinstance(scene.get("payer_client_ip"), str):
            raise _param_error("scene_info.payer_client_ip", "H5下单必须传用户终端IP")
        time_expire = None
        if data.get("time_expire") is not None:
            try:
                time_expire = dt.datetime.fromisoformat(data["time_expire"])
            except (TypeError, ValueError):
                raise _param_error("time_expire", "时间格式须为RFC3339") from None
            if time_expire.tzinfo is None:
                raise _param_error("time_expire", "时间格式须为RFC3339")
        fingerprint = {
            "trade_type": _TRADE_TYPES[kind],
            "appid": data["appid"],
            "description": description,
            "total": total,
            "notify_url": notify_url,
            "openid": openid,
        }
        key = (merchant.mchid, out_trade_no)
        trade = self._trades.get(key)
        if trade is not None:
            if trade.state in ("SUCCESS", "REFUND"):
                raise _ApiError(400, "ORDERPAID", "该订单已支付")
            if trade.state == "CLOSED":
                raise _ApiError(400, "ORDER_CLOSED", "订单已关闭")
            if trade.fingerprint != fingerprint:
                raise _ApiError(403, "OUT_TRADE_NO_USED", "商户订单号重复")
        else:
            now = self._clock()
            prepay_id = "wx" + now.astimezone(SHANGHAI).strftime("%d%H%M%S") + secrets.token_hex(12)
            trade = _Trade(
                mchid=merchant.mchid,
                appid=data["appid"],
                out_trade_no=out_trade_no,
                trade_type=_TRADE_TYPES[kind],
                description=description,
                total_minor=total,
                notify_url=notify_url,
                attach=data.get("attach") or "",
                payer_openid=openid,
                time_expire=time_expire,
                created_at=now,
                prepay_id=prepay_id,
                cashier_token=prepay_id if kind != "native" else _nonce(7),
                fingerprint=fingerprint,
            )
            self._trades[key] = trade
            self._cashier_tokens[trade.cashier_token] = key
            self._cashier_tokens[prepay_id] = key
        base = self.base_url or str(request.base_url).rstrip("/")
        if kind == "native":
            return 200, {"code_url": f"weixin://wxpay/bizpayurl?pr={trade.cashier_token}"}
        if kind == "h5":
            package = str(int.from_bytes(hashlib.sha1(trade.prepay_id.encode()).digest()[:4], "big"))
            return 200, {"h5_url": f"{base}/cashier/{trade.prepay_id}?prepay_id={trade.prepay_id}&package={package}"}
        return 200, {"prepay_id": trade.prepay_id}

    def _query_by_out_trade_no(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        self._check_query_mchid(request, merchant)
        trade = self._trades.get((merchant.mchid, request.path_params["out_trade_no"]))
        if trade is None:
            raise _ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
        return 200, self._transaction_resource(trade)

    def _query_by_id(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        self._check_query_mchid(request, merchant)
        wanted = request.path_params["transaction_id"]
        for trade in self._trades.values():
            if trade.mchid == merchant.mchid and trade.transaction_id == wanted:
                return 200, self._transaction_resource(trade)
        raise _ApiError(404, "ORDER_NOT_EXIST", "订单不存在")

    def _close(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        data = self._json_body(body)
        if data.get("mchid") != merchant.mchid:
            raise _param_error("mchid", "与请求头中的商户号不一致")
        trade = self._trades.get((merchant.mchid, request.path_params["out_trade_no"]))
        if trade is not None:
            if trade.state in ("SUCCESS", "REFUND"):
                raise _ApiError(400, "ORDERPAID", "订单已支付，不能关闭")
            trade.state = "CLOSED"
        # The real channel answers 204 even for an out_trade_no it does not know.
        return 204, None

    def _refund(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        data = self._json_body(body)
        out_refund_no = data.get("out_refund_no")
        if not isinstance(out_refund_no, str) or not _OUT_REFUND_NO.fullmatch(out_refund_no):
            raise _param_error("out_refund_no", "商户退款单号只能是1-64位数字、大小写字母_-|*@")
        amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
        refund_minor, total_minor = amount.get("refund"), amount.get("total")
        if type(refund_minor) is not int or refund_minor <= 0:
            raise _param_error("amount.refund", "退款金额必须是正整数（单位：分）")
        if type(total_minor) is not int or total_minor <= 0:
            raise _param_error("amount.total", "原订单金额必须是正整数（单位：分）")
        if amount.get("currency") != "CNY":
            raise _param_error("amount.currency", "退款币种必须是CNY")
        trade = self._find_trade(merchant.mchid, data.get("out_trade_no"), data.get("transaction_id"))
        if trade is None:
            raise _ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        existing = self._refunds.get((merchant.mchid, out_refund_no))
        if existing is not None:
            if existing.out_trade_no != trade.out_trade_no or existing.refund_minor != refund_minor:
                raise _ApiError(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
            return 200, self._refund_resource(existing)
        if trade.state not in ("SUCCESS", "REFUND"):
            raise _ApiError(400, "INVALID_REQUEST", "订单未支付，不能退款")
        if total_minor != trade.total_minor:
            raise _ApiError(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试")
        refunded = sum(
            refund.refund_minor
            for refund in self._refunds.values()
            if refund.mchid == merchant.mchid
            and refund.out_trade_no == trade.out_trade_no
            and refund.status != "CLOSED"
        )
        if refunded + refund_minor > trade.total_minor:
            raise _ApiError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
        notify_url = data.get("notify_url")
        refund = _Refund(
            mchid=merchant.mchid,
            out_refund_no=out_refund_no,
            refund_id="50" + _digits(27),
            out_trade_no=trade.out_trade_no,
            refund_minor=refund_minor,
            reason=data.get("reason") or "",
            notify_url=notify_url if isinstance(notify_url, str) else None,
            created_at=self._clock(),
        )
        self._refunds[(merchant.mchid, out_refund_no)] = refund
        trade.state = "REFUND"
        if self._refund_settle_seconds is not None:
            self._start_thread(self._settle_later, refund)
        return 200, self._refund_resource(refund)

    def _query_refund(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        refund = self._refunds.get((merchant.mchid, request.path_params["out_refund_no"]))
        if refund is None:
            raise _ApiError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return 200, self._refund_resource(refund)

    def _trade_bill(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> tuple[int, Any]:
        params = request.query_params
        try:
            bill_date = dt.date.fromisoformat(params.get("bill_date", ""))
        except ValueError:
            raise _param_error("bill_date", "账单日期格式须为YYYY-MM-DD", "query") from None
        if params.get("bill_type", "ALL") != "ALL":
            raise _param_error("bill_type", "模拟器仅支持ALL", "query")
        tar_type = params.get("tar_type")
        if tar_type not in (None, "GZIP"):
            raise _param_error("tar_type", "压缩类型只能是GZIP", "query")
        if bill_date > self._clock().astimezone(SHANGHAI).date():
            raise _ApiError(400, "INVALID_REQUEST", "账单日期不能晚于今天")
        if not self._bill_detail(merchant.mchid, bill_date):
            raise _ApiError(400, "NO_STATEMENT_EXIST", "账单文件不存在")
        text = self._bill_file(merchant.mchid, bill_date).encode()
        token = secrets.token_urlsafe(24)
        served = gzip.compress(text, mtime=0) if tar_type == "GZIP" else text
        self._bill_files[token] = (merchant.mchid, served, time.monotonic() + BILL_URL_TTL_SECONDS)
        base = self.base_url or str(request.base_url).rstrip("/")
        return 200, {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(text).hexdigest(),
            "download_url": f"{base}/v3/billdownload/file?token={token}",
        }

    def _bill_download(self, request: Request, merchant: SimulatedMerchant, body: bytes) -> Response:
        found = self._bill_files.get(request.query_params.get("token", ""))
        if found is None or found[0] != merchant.mchid or found[2] < time.monotonic():
            raise _ApiError(400, "INVALID_REQUEST", "下载链接无效或已过期")
        # The file itself is not signed (the SDK skips verification for it; the SHA1 covers it).
        return Response(found[1], status_code=200, media_type="application/octet-stream")

    # ----------------------------------------------------------------- payer pages

    async def _cashier_page(self, request: Request) -> Response:
        self._remember_base_url(request)
        with self._lock:
            key = self._cashier_tokens.get(request.path_params["token"])
            if key is None:
                return HTMLResponse("<p>二维码已失效</p>", status_code=404)
            trade = self._trades[key]
            amount = format_minor(trade.total_minor, "CNY")
            state = _TRADE_STATE_DESC[trade.state]
            description = trade.description
        action = html.escape(str(request.url), quote=True)
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>微信支付</title></head><body>"
            f"<h1>{html.escape(description)}</h1><p>¥{amount}</p><p>{html.escape(state)}</p>"
            f"<form method='post' action='{action}'>"
            "<button name='outcome' value='success'>支付</button>"
            "<button name='outcome' value='fail'>支付失败</button></form></body></html>"
        )
        return HTMLResponse(page)

    async def _cashier_submit(self, request: Request) -> Response:
        self._remember_base_url(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        outcome = request.query_params.get("outcome") or form.get("outcome", ["success"])[0]
        with self._lock:
            key = self._cashier_tokens.get(request.path_params["token"])
            if key is None:
                return HTMLResponse("<p>二维码已失效</p>", status_code=404)
            trade = self._trades[key]
            refusal = self._pay_refusal(trade)
            if refusal is not None:
                return HTMLResponse(f"<p>{html.escape(refusal)}</p>", status_code=400)
            if outcome == "fail":
                trade.state = "PAYERROR"
            else:
                self._mark_paid(trade)
        redirect_url = request.query_params.get("redirect_url")
        if redirect_url:
            # H5: the browser goes back to the merchant's redirect_url exactly as given, with no result in it.
            return RedirectResponse(redirect_url, status_code=303)
        message = "支付失败" if outcome == "fail" else "支付成功"
        return HTMLResponse(f"<p>{message}</p>")

    # ----------------------------------------------------------------- state (called under the lock)

    def _mchid(self, mchid: str | None) -> str:
        if mchid is not None:
            return mchid
        if len(self._merchants) != 1:
            raise ValueError("several merchants: say which mchid")
        return next(iter(self._merchants))

    def _trade(self, mchid: str | None, out_trade_no: str) -> _Trade:
        trade = self._trades.get((self._mchid(mchid), out_trade_no))
        if trade is None:
            raise KeyError(out_trade_no)
        return trade

    def _find_trade(self, mchid: str, out_trade_no: Any, transaction_id: Any) -> _Trade | None:
        if isinstance(transaction_id, str):
            for trade in self._trades.values():
                if trade.mchid == mchid and trade.transaction_id == transaction_id:
                    return trade
            return None
        if isinstance(out_trade_no, str):
            return self._trades.get((mchid, out_trade_no))
        raise _param_error("out_trade_no", "transaction_id与out_trade_no必须二选一")

    def _pay_refusal(self, trade: _Trade) -> str | None:
        if trade.state in ("SUCCESS", "REFUND"):
            return "订单已支付"
        if trade.state == "CLOSED":
            return "订单已关闭"
        if trade.time_expire is not None and self._clock() > trade.time_expire:
            return "订单已过期"
        return None

    def _mark_paid(self, trade: _Trade) -> None:
        now = self._clock()
        trade.state = "SUCCESS"
        trade.success_time = now
        trade.transaction_id = "42000" + now.astimezone(SHANGHAI).strftime("%Y%m%d") + _digits(15)
        if trade.payer_openid is None:
            trade.payer_openid = "o" + _nonce(27)
        merchant = self._merchants[trade.mchid]
        body = self.notify_body(
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            original_type="transaction",
            resource=self._transaction_resource(trade),
            apiv3_key=merchant.apiv3_key,
        )
        self._send_notify(trade.notify_url, body)

    def _settle_later(self, refund: _Refund) -> None:
        assert self._refund_settle_seconds is not None
        if self._stop.wait(self._refund_settle_seconds * self._scale):
            return
        with self._lock:
            if refund.status == "PROCESSING":
                self._settle(refund, "SUCCESS")

    def _settle(self, refund: _Refund, status: str) -> None:
        if refund.status != "PROCESSING":
            raise ValueError(f"refund {refund.out_refund_no} is already {refund.status}")
        refund.status = status
        if status == "SUCCESS":
            refund.success_time = self._clock()
        if refund.notify_url:
            event_type, summary = _REFUND_EVENTS[status]
            body = self.notify_body(
                event_type=event_type,
                summary=summary,
                original_type="refund",
                resource=self._refund_notify_resource(refund),
                apiv3_key=self._merchants[refund.mchid].apiv3_key,
            )
            self._send_notify(refund.notify_url, body)

    def _transaction_resource(self, trade: _Trade) -> dict[str, Any]:
        total = trade.shown_total_minor
        resource: dict[str, Any] = {
            "appid": trade.appid,
            "mchid": trade.mchid,
            "out_trade_no": trade.out_trade_no,
            "trade_state": trade.state,
            "trade_state_desc": _TRADE_STATE_DESC[trade.state],
            "amount": {"total": total, "currency": "CNY", "payer_currency": "CNY"},
        }
        if trade.state in ("SUCCESS", "REFUND"):
            assert trade.success_time is not None
            resource.update(
                transaction_id=trade.transaction_id,
                trade_type=trade.trade_type,
                bank_type=trade.bank_type,
                attach=trade.attach,
                success_time=_rfc3339(trade.success_time),
                payer={"openid": trade.payer_openid},
                promotion_detail=[],
            )
            resource["amount"]["payer_total"] = total
        return resource

    def _refund_resource(self, refund: _Refund) -> dict[str, Any]:
        trade = self._trades[(refund.mchid, refund.out_trade_no)]
        resource: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": trade.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": _rfc3339(refund.created_at),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": trade.total_minor,
                "refund": refund.refund_minor,
                "payer_total": trade.total_minor,
                "payer_refund": refund.refund_minor,
                "settlement_total": trade.total_minor,
                "settlement_refund": refund.refund_minor,
                "discount_refund": 0,
                "currency": "CNY",
                "from": [],
            },
            "promotion_detail": [],
        }
        if refund.success_time is not None:
            resource["success_time"] = _rfc3339(refund.success_time)
        return resource

    def _refund_notify_resource(self, refund: _Refund) -> dict[str, Any]:
        trade = self._trades[(refund.mchid, refund.out_trade_no)]
        resource: dict[str, Any] = {
            "mchid": refund.mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": trade.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": trade.total_minor,
                "refund": refund.refund_minor,
                "payer_total": trade.total_minor,
                "payer_refund": refund.refund_minor,
            },
        }
        if refund.success_time is not None:
            resource["success_time"] = _rfc3339(refund.success_time)
        return resource

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            raise _ApiError(400, "PARAM_ERROR", "请求体不是合法的JSON") from None
        if not isinstance(data, dict):
            raise _ApiError(400, "PARAM_ERROR", "请求体必须是JSON对象")
        return data

    def _check_ids(self, merchant: SimulatedMerchant, data: Mapping[str, Any]) -> None:
        if data.get("mchid") != merchant.mchid:
            raise _param_error("mchid", "与请求头中的商户号不一致")
        if data.get("appid") != merchant.appid:
            raise _ApiError(400, "APPID_MCHID_NOT_MATCH", "appid和mchid不匹配")

    def _check_query_mchid(self, request: Request, merchant: SimulatedMerchant) -> None:
        if request.query_params.get("mchid") != merchant.mchid:
            raise _param_error("mchid", "与请求头中的商户号不一致", "query")

    # ----------------------------------------------------------------- notifies

    def _send_notify(self, url: str, body: bytes) -> None:
        envelope = json.loads(body)
        job = _NotifyJob(
            notify_id=envelope["id"],
            event_type=envelope["event_type"],
            url=url,
            body=body,
            deliveries=self._duplicate_times,
            initial_delay_seconds=self._notify_delay_extra_seconds * self._scale,
        )
        self._duplicate_times = 1
        self._start_thread(self._deliver, job)

    def _start_thread(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="wechatpay-sim", daemon=True)
        with self._lock:
            self._threads = [alive for alive in self._threads if alive.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _deliver(self, job: _NotifyJob) -> None:
        if self._stop.wait(job.initial_delay_seconds):
            return
        acknowledged = 0
        retry_index = 0
        attempt = 0
        with httpx.Client(timeout=self._notify_timeout_seconds) as client:
            while True:
                attempt += 1
                headers = self.notify_headers(job.body)
                status: int | None = None
                error: str | None = None
                try:
                    status = client.post(job.url, content=job.body, headers=headers).status_code
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                ok = status is not None and 200 <= status < 300
                with self._lock:
                    self._attempts.append(
                        NotifyAttempt(
                            notify_id=job.notify_id,
                            event_type=job.event_type,
                            url=job.url,
                            attempt=attempt,
                            headers=headers,
                            body=job.body,
                            status_code=status,
                            error=error,
                            acknowledged=ok,
                            sent_monotonic=time.monotonic(),
                        )
                    )
                if ok:
                    acknowledged += 1
                    if acknowledged >= job.deliveries:
                        return
                    wait = 0.0
                else:
                    if retry_index >= len(NOTIFY_RETRY_SCHEDULE_SECONDS):
                        return  # given up after about 24 h, as the channel does
                    wait = NOTIFY_RETRY_SCHEDULE_SECONDS[retry_index] * self._scale
                    retry_index += 1
                if self._stop.wait(wait):
                    return

    # ----------------------------------------------------------------- bills

    def _fee_minor(self, amount_minor: int) -> int:
        # Round half up to the fen, in integers.
        return (amount_minor * self._fee_rate_bp * 2 + 10000) // 20000

    def _bill_detail(self, mchid: str, bill_date: dt.date) -> list[list[str]]:
        rate = f"{self._fee_rate_bp // 100}.{self._fee_rate_bp % 100:02d}%"
        merchant = self._merchants[mchid]
        rows: list[tuple[dt.datetime, list[str]]] = []
        for trade in self._trades.values():
            if trade.mchid != mchid or trade.success_time is None:
                continue
            if trade.success_time.astimezone(SHANGHAI).date() != bill_date:
                continue
            total = format_minor(trade.shown_total_minor, "CNY")
            rows.append(
                (
                    trade.success_time,
                    [
                        trade.success_time.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
                        merchant.appid,
                        mchid,
                        "0",
                        "",
                        trade.transaction_id or "",
                        trade.out_trade_no,
                        trade.payer_openid or "",
                        trade.trade_type,
                        "SUCCESS",
                        trade.bank_type,
                        "CNY",
                        total,
                        "0.00",
                        "0",
                        "0",
                        "0.00",
                        "0.00",
                        "",
                        "",
                        trade.description,
                        trade.attach,
                        format_minor(self._fee_minor(trade.shown_total_minor), "CNY"),
                        rate,
                        total,
                        "0.00",
                        "",
                    ],
                )
            )
        for refund in self._refunds.values():
            if refund.mchid != mchid or refund.created_at.astimezone(SHANGHAI).date() != bill_date:
                continue
            trade = self._trades[(mchid, refund.out_trade_no)]
            amount = format_minor(refund.refund_minor, "CNY")
            rows.append(
                (
                    refund.created_at,
                    [
                        refund.created_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
                        merchant.appid,
                        mchid,
                        "0",
                        "",
                        trade.transaction_id or "",
                        trade.out_trade_no,
                        trade.payer_openid or "",
                        trade.trade_type,
                        "REFUND",
                        trade.bank_type,
                        "CNY",
                        "0.00",
                        "0.00",
                        refund.refund_id,
                        refund.out_refund_no,
                        amount,
                        "0.00",
                        "ORIGINAL",
                        refund.status,
                        trade.description,
                        trade.attach,
                        format_minor(-self._fee_minor(refund.refund_minor), "CNY"),
                        rate,
                        "0.00",
                        amount,
                        "",
                    ],
                )
            )
        rows.sort(key=lambda pair: pair[0])
        return [row for _, row in rows]

    def _bill_file(self, mchid: str, bill_date: dt.date) -> str:
        detail = self._bill_detail(mchid, bill_date)
        index = {name: position for position, name in enumerate(BILL_ALL_HEADER)}

        def column_sum(name: str) -> int:
            return sum(parse_amount(row[index[name]], "CNY") for row in detail)

        summary = [
            str(len(detail)),
            format_minor(column_sum("应结订单金额"), "CNY"),
            format_minor(column_sum("退款金额"), "CNY"),
            format_minor(column_sum("充值券退款金额"), "CNY"),
            format_minor(column_sum("手续费"), "CNY"),
            format_minor(column_sum("订单金额"), "CNY"),
            format_minor(column_sum("申请退款金额"), "CNY"),
        ]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(BILL_ALL_HEADER)
        for row in detail:
            writer.writerow(["`" + value for value in row])
        writer.writerow(BILL_SUMMARY_HEADER)
        writer.writerow(["`" + value for value in summary])
        return out.getvalue()


def create_simulator(
    *,
    merchants: Iterable[SimulatedMerchant],
    platform_private_key_pem: str,
    platform_public_key_id: str,
    base_url: str | None = None,
    clock: Callable[[], dt.datetime] = _utc_now,
    notify_delay_seconds: float = 1.0,
    notify_timeout_seconds: float = 5.0,
    refund_settle_seconds: float | None = 60.0,
    fee_rate_bp: int = 60,
) -> WechatPaySimulator:
    """Build a simulator; serve ``simulator.app`` (``serve_in_thread``) and point the SDK at its base URL.

    ``base_url`` is where it is served; left out, it is learnt from the first request
    (``serve_in_thread`` picks the port). ``notify_delay_seconds`` is how many wall seconds one
    channel second lasts. ``refund_settle_seconds`` (channel seconds) is how long a refund stays
    PROCESSING; ``None`` keeps it PROCESSING until ``settle_refund``. ``fee_rate_bp`` is the
    bill's fee rate in basis points (60 is 0.60%).
    """
    return WechatPaySimulator(
        merchants=merchants,
        platform_private_key_pem=platform_private_key_pem,
        platform_public_key_id=platform_public_key_id,
        base_url=base_url,
        clock=clock,
        notify_delay_seconds=notify_delay_seconds,
        notify_timeout_seconds=notify_timeout_seconds,
        refund_settle_seconds=refund_settle_seconds,
        fee_rate_bp=fee_rate_bp,
    )
