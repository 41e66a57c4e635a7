"""A local Alipay (支付宝开放平台) that the unmodified ``python-alipay-sdk`` can talk to.

The simulator is an ASGI app (Starlette) owned by an :class:`AlipaySimulator`,
which also owns the in-memory trades and refunds, the notify sender (a
background thread) and the controls tests use to make the channel misbehave.
Serve ``simulator.app`` with :func:`zhangfang.sandbox.server.serve_in_thread`
and set ``simulator.base_url`` to the address it listens on; point the SDK (the
adapter's ``gateway_url``) at ``simulator.gateway_url``.

What it speaks (see ``/work/shared/reference/channels.md``, section "Alipay")
- ``GET|POST {base}/gateway.do`` with the common parameters (``app_id``,
  ``method``, ``charset``, ``sign_type``, ``timestamp``, ``version``,
  ``biz_content``, ``sign``). The request signature is checked against the
  calling app's public key: every parameter but ``sign``, sorted, ``k=v``
  joined with ``&`` over the raw (decoded) values, RSA PKCS#1 v1.5 with SHA-256
  (``RSA2``) or SHA-1 (``RSA``).
- Methods: ``alipay.trade.page.pay`` and ``alipay.trade.wap.pay`` (browser:
  answered with a redirect to the cashier page), ``alipay.trade.precreate``
  (returns ``qr_code``), ``alipay.trade.query``, ``alipay.trade.close``,
  ``alipay.trade.refund``, ``alipay.trade.fastpay.refund.query`` and
  ``alipay.data.dataservice.bill.downloadurl.query`` (``bill_type=trade``,
  daily). Others get ``40002 isv.invalid-method``.
- Responses are ``{"<method_with_underscores>_response": {...}, "sign": "..."}``
  where ``sign`` is Alipay's signature over exactly the inner object's JSON
  text, as the SDK extracts it (it counts braces without regard to quoting, so
  no string value in a response may contain a brace; this is asserted).
  Codes: ``10000`` success, ``40004`` business failure with ``ACQ.*``/``isp.*``
  sub-codes, ``40002`` invalid arguments; an unknown ``app_id`` gets an
  unsigned ``error_response``, as Alipay answers.
- A page, wap or QR trade exists for ``query``/``close``/``refund`` only once
  the payer has opened the cashier (logged in or scanned): before that Alipay
  answers ``ACQ.TRADE_NOT_EXIST``. ``time_expire`` (``yyyy-MM-dd HH:mm:ss``,
  Beijing time) closes an unpaid trade when it passes.
- ``refund``: ``refund_amount`` in yuan; ``out_request_no`` identifies a refund
  (defaults to the trade's ``out_trade_no``); repeating it answers the first
  result again with ``fund_change: "N"``; a different amount under the same
  number is ``ACQ.REFUND_AMT_NOT_EQUAL_TOTAL``; refunding more than is left is
  ``ACQ.REASON_TRADE_REFUND_FEE_ERR``. A partial refund leaves the trade
  ``TRADE_SUCCESS``; refunding everything makes it ``TRADE_CLOSED``.
- The payer's side: ``GET {base}/cashier/{trade_no}`` shows a page with a pay
  button; ``POST`` to it pays (``?outcome=fail`` declines: the trade stays
  ``WAIT_BUYER_PAY`` and nothing is sent, as a declined attempt at Alipay
  leaves the trade payable). A paid trade redirects the browser to
  ``return_url`` with only the documented sync-return fields (no
  ``trade_status``) and sends the asynchronous notify.
- Notifies: form-encoded POST to the trade's ``notify_url`` with the documented
  fields, signed by Alipay over the sorted parameters without ``sign`` and
  ``sign_type``. The merchant must answer the text ``success``; otherwise the
  same notify (same ``notify_id``) is sent again after 4m, 10m, 10m, 1h, 2h,
  6h and 15h (8 deliveries in all), each minute of that schedule lasting
  ``notify_delay_seconds`` real seconds. Which changes notify: page pay only
  ``TRADE_SUCCESS`` (payment, partial refund); wap and QR also
  ``TRADE_CLOSED`` (close, expiry, full refund).
- Bill: ``bill_download_url`` serves, for 30 s (by the simulator's clock), a
  zip of two GBK CSV files ``{pid}_{yyyymmdd}_业务明细.csv`` and
  ``{pid}_{yyyymmdd}_业务明细(汇总).csv``. The detail file has the ``#`` header
  lines, the 25-column header, one row per payment (by payment time) and per
  refund (by refund time) of that Beijing day, ID fields ending in a tab,
  refunds with a negative 商家实收, and the ``#`` footer lines. A bill exists
  only for a day before today (Beijing), as Alipay produces it the next day.

Simplified, on purpose
- One Alipay key pair for every app; no certificate mode, no ISV
  ``app_auth_token``, no ``timeout_express``; ``TRADE_FINISHED`` is never
  reached; no discounts; the zip's member names are
  stored as UTF-8 (Alipay's tooling writes GBK names); the summary file is an
  approximation of the real one.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import heapq
import html
import io
import itertools
import json
import secrets
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from zhangfang.money import AmountHasTooManyDecimals, AmountNotANumber, format_minor, parse_amount

__all__ = [
    "BILL_DETAIL_COLUMNS",
    "NOTIFY_RETRY_MINUTES",
    "AlipaySimulator",
    "NotifyDelivery",
    "SandboxMerchant",
    "create_alipay_simulator",
    "rsa_sign",
    "rsa_verify",
    "signing_string",
]

SHANGHAI = ZoneInfo("Asia/Shanghai")
CURRENCY = "CNY"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# Minutes between one delivery of a notify and the next, until ``success`` comes back (8 deliveries in all).
NOTIFY_RETRY_MINUTES: tuple[int, ...] = (4, 10, 10, 60, 120, 360, 900)

BILL_URL_VALID_SECONDS = 30
TOTAL_AMOUNT_MAX_MINOR = 100_000_000_00  # 100,000,000.00 yuan, Alipay's per-trade ceiling

BILL_DETAIL_COLUMNS: tuple[str, ...] = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
BILL_SUMMARY_COLUMNS: tuple[str, ...] = (
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
)
_DETAIL_BEGIN = "#-----------------------------------------业务明细列表----------------------------------------"
_DETAIL_END = "#-----------------------------------------业务明细列表结束------------------------------------"
_SUMMARY_BEGIN = "#-----------------------------------------业务汇总列表----------------------------------------"
_SUMMARY_END = "#----------------------------------------业务汇总列表结束-------------------------------------"

_PRODUCT_CODES = {
    "alipay.trade.page.pay": {"FAST_INSTANT_TRADE_PAY"},
    "alipay.trade.wap.pay": {"QUICK_WAP_PAY", "QUICK_WAP_WAY"},
    "alipay.trade.precreate": {"FACE_TO_FACE_PAYMENT", "QR_CODE_OFFLINE"},
}
# Trade statuses whose change is notified, by product (defaults; see the module docstring).
_NOTIFIED_STATUSES = {
    "alipay.trade.page.pay": {"TRADE_SUCCESS"},
    "alipay.trade.wap.pay": {"TRADE_SUCCESS", "TRADE_CLOSED"},
    "alipay.trade.precreate": {"TRADE_SUCCESS", "TRADE_CLOSED"},
}
_BROWSER_METHODS = ("alipay.trade.page.pay", "alipay.trade.wap.pay")
_API_METHODS = (
    "alipay.trade.precreate",
    "alipay.trade.query",
    "alipay.trade.close",
    "alipay.trade.refund",
    "alipay.trade.fastpay.refund.query",
    "alipay.data.dataservice.bill.downloadurl.query",
)


@dataclass(frozen=True)
class SandboxMerchant:
    """An app registered at the simulated Alipay: its ``app_id``, partner id (``seller_id``) and public key."""

    app_id: str
    pid: str
    app_public_key_pem: str | bytes
    seller_email: str = "merchant@sandbox.example"


@dataclass(frozen=True)
class NotifyDelivery:
    """One delivery of an asynchronous notify, as the simulator sent it and what the merchant answered."""

    notify_id: str
    out_trade_no: str
    url: str
    attempt: int  # 1 for the first delivery, 2 for the first retry, …; duplicates repeat the number
    params: Mapping[str, str]
    status_code: int | None
    response_text: str | None
    acknowledged: bool
    error: str | None
    sent_at_monotonic: float


@dataclass
class _Refund:
    out_request_no: str
    refund_minor: int
    refunded_at: dt.datetime
    reason: str | None
    sequence: int = 0


@dataclass
class _Trade:
    trade_no: str
    app_id: str
    out_trade_no: str
    api_method: str
    product_code: str
    subject: str
    body: str | None
    total_minor: int
    charset: str
    sign_type: str
    notify_url: str | None
    return_url: str | None
    time_expire: dt.datetime | None
    created_at: dt.datetime
    status: str = "WAIT_BUYER_PAY"
    visible: bool = False  # the payer opened the cashier (logged in / scanned): Alipay knows the trade
    paid_at: dt.datetime | None = None
    paid_sequence: int = 0  # orders the bill's rows when the clock stands still
    closed_at: dt.datetime | None = None
    buyer_id: str = "2088102177846880"
    buyer_logon_id: str = "pay***@sandbox.example"
    qr_token: str | None = None
    reported_total_minor: int | None = None
    refunds: list[_Refund] = field(default_factory=list)

    @property
    def shown_total_minor(self) -> int:
        return self.total_minor if self.reported_total_minor is None else self.reported_total_minor

    @property
    def refunded_minor(self) -> int:
        return sum(refund.refund_minor for refund in self.refunds)


@dataclass
class _PendingNotify:
    notify_id: str
    app_id: str
    out_trade_no: str
    url: str
    params: dict[str, str]  # without notify_time, sign, sign_type (set per delivery)
    sign_type: str
    charset: str
    attempt: int = 0
    copies: int = 1


@dataclass
class _BillFile:
    content: bytes
    expires_at: dt.datetime


class _GatewayError(Exception):
    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(sub_msg)
        self.payload = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}


def _invalid(sub_code: str, sub_msg: str) -> _GatewayError:
    return _GatewayError("40002", "Invalid Arguments", sub_code, sub_msg)


def _business(sub_code: str, sub_msg: str) -> _GatewayError:
    return _GatewayError("40004", "Business Failed", sub_code, sub_msg)


def signing_string(params: Mapping[str, str], *, exclude: Iterable[str]) -> str:
    """Alipay's string to sign: parameters except ``exclude`` (and empty ones), sorted, ``k=v`` joined by ``&``."""
    skipped = set(exclude)
    return "&".join(f"{key}={params[key]}" for key in sorted(params) if key not in skipped and params[key] != "")


def _hash_for(sign_type: str) -> hashes.HashAlgorithm:
    return hashes.SHA256() if sign_type == "RSA2" else hashes.SHA1()


def rsa_sign(private_key: rsa.RSAPrivateKey, message: str, sign_type: str = "RSA2") -> str:
    """Base64 RSA PKCS#1 v1.5 signature of the UTF-8 message (SHA-256 for RSA2, SHA-1 for RSA)."""
    signature = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), _hash_for(sign_type))
    return base64.b64encode(signature).decode("ascii")


def rsa_verify(public_key: rsa.RSAPublicKey, message: str, signature: str, sign_type: str = "RSA2") -> bool:
    try:
        raw = base64.b64decode(signature, validate=False)
        public_key.verify(raw, message.encode("utf-8"), padding.PKCS1v15(), _hash_for(sign_type))
    except (InvalidSignature, ValueError):
        return False
    return True


def _load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey), "Alipay's key must be RSA"
    return key


def _load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    assert isinstance(key, rsa.RSAPublicKey), "an app's key must be RSA"
    return key


def _beijing(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(SHANGHAI)


def _fmt(moment: dt.datetime) -> str:
    return _beijing(moment).strftime(TIME_FORMAT)


def _yuan(amount_minor: int) -> str:
    return format_minor(amount_minor, CURRENCY)


def _assert_no_braces(value: Any) -> None:
    """The SDK finds the signed object by counting braces, quoting ignored: a brace in a value would break it."""
    if isinstance(value, str):
        assert "{" not in value and "}" not in value, f"a response value must not contain braces: {value!r}"
    elif isinstance(value, Mapping):
        for item in value.values():
            _assert_no_braces(item)
    elif isinstance(value, list):
        for item in value:
            _assert_no_braces(item)


def _system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AlipaySimulator:
    """Owns the simulated Alipay: its ASGI ``app``, its state, its notify sender and the test controls."""

    def __init__(
        self,
        *,
        alipay_private_key_pem: str | bytes,
        merchants: Sequence[SandboxMerchant],
        base_url: str | None = None,
        clock: Callable[[], dt.datetime] = _system_clock,
        notify_delay_seconds: float = 0.01,
        notify_http_timeout_seconds: float = 5.0,
        fee_rate_bp: int = 0,
    ) -> None:
        if not merchants:
            raise ValueError("the simulator needs at least one merchant app")
        self._alipay_key = _load_private_key(alipay_private_key_pem)
        self._merchants = {merchant.app_id: merchant for merchant in merchants}
        self._app_keys = {merchant.app_id: _load_public_key(merchant.app_public_key_pem) for merchant in merchants}
        self.base_url = base_url.rstrip("/") if base_url else None
        self._clock = clock
        self.notify_delay_seconds = notify_delay_seconds
        self._notify_http_timeout_seconds = notify_http_timeout_seconds
        self._fee_rate_bp = fee_rate_bp

        self._lock = threading.RLock()
        self._trades: dict[tuple[str, str], _Trade] = {}
        self._trades_by_no: dict[str, _Trade] = {}
        self._qr_tokens: dict[str, str] = {}
        self._bill_files: dict[str, _BillFile] = {}
        self._sequence = itertools.count(1)

        # controls
        self._fail_remaining = 0
        self._fail_status = 500
        self._timeout_remaining = 0
        self._timeout_seconds = 0.0
        self._notify_extra_delay_seconds = 0.0
        self._duplicate_next_notify = 1
        self._deliveries: list[NotifyDelivery] = []

        # notify sender
        self._queue: list[tuple[float, int, _PendingNotify]] = []
        self._queue_changed = threading.Condition(self._lock)
        self._in_flight = 0
        self._stopping = False
        self._http = httpx.Client(timeout=notify_http_timeout_seconds, follow_redirects=False)
        self._sender = threading.Thread(target=self._send_notifies, name="alipay-sim-notify", daemon=True)
        self._sender.start()

        self.app = Starlette(
            routes=[
                Route("/gateway.do", self._gateway, methods=["GET", "POST"]),
                Route("/cashier/{trade_no}", self._cashier, methods=["GET", "POST"]),
                Route("/qr/{token}", self._qr, methods=["GET"]),
                Route("/downloadBillFile.resource", self._download_bill, methods=["GET"]),
            ]
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def gateway_url(self) -> str:
        """Where the SDK sends its requests (the adapter's ``gateway_url``)."""
        return f"{self._base()}/gateway.do"

    def close(self) -> None:
        """Stop the notify sender (pending notifies are dropped)."""
        with self._lock:
            self._stopping = True
            self._queue_changed.notify_all()
        self._sender.join(timeout=10)
        self._http.close()

    def __enter__(self) -> AlipaySimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ controls for tests

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next ``n`` gateway and bill-download requests get HTTP ``status`` and are not processed."""
        with self._lock:
            self._fail_remaining = n
            self._fail_status = status

    def timeout_next(self, n: int, seconds: float) -> None:
        """The next ``n`` gateway and bill-download requests are answered only after ``seconds`` (then processed)."""
        with self._lock:
            self._timeout_remaining = n
            self._timeout_seconds = seconds

    def delay_notify(self, seconds: float) -> None:
        """Every notify created from now on waits ``seconds`` (real, unscaled) before its first delivery."""
        with self._lock:
            self._notify_extra_delay_seconds = seconds

    def duplicate_notify(self, times: int = 2) -> None:
        """The next notify's first delivery is made ``times`` times in a row (same ``notify_id``)."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._duplicate_next_notify = times

    def disagree_amount(self, out_trade_no: str, amount_minor: int, *, app_id: str | None = None) -> None:
        """From now on the notify, the query and the bill report ``amount_minor`` as this trade's total."""
        with self._lock:
            self._trade_for_control(out_trade_no, app_id).reported_total_minor = amount_minor

    def pay(self, out_trade_no: str, *, app_id: str | None = None) -> str:
        """The payer pays without a browser: mark paid, send the notify; returns Alipay's ``trade_no``."""
        with self._lock:
            trade = self._trade_for_control(out_trade_no, app_id)
            self._expire_if_due(trade)
            if trade.status != "WAIT_BUYER_PAY":
                raise ValueError(f"trade {out_trade_no} is {trade.status}, it cannot be paid")
            self._mark_paid(trade)
            return trade.trade_no

    def trade_status(self, out_trade_no: str, *, app_id: str | None = None) -> str:
        """Alipay's ``trade_status`` of a trade (whether or not the payer has opened it yet)."""
        with self._lock:
            trade = self._trade_for_control(out_trade_no, app_id)
            self._expire_if_due(trade)
            return trade.status

    def notifies_sent(self) -> list[NotifyDelivery]:
        """Every notify delivery made so far, oldest first."""
        with self._lock:
            return list(self._deliveries)

    def wait_for_notifies(self, count: int, *, timeout_seconds: float = 5.0) -> list[NotifyDelivery]:
        """Waits until at least ``count`` deliveries were made; returns them all (raises ``TimeoutError``)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            sent = self.notifies_sent()
            if len(sent) >= count:
                return sent
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(sent)} notify deliveries after {timeout_seconds}s, wanted {count}")
            time.sleep(0.01)

    def wait_until_idle(self, *, timeout_seconds: float = 5.0) -> None:
        """Waits until no notify is queued or being delivered (raises ``TimeoutError``)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            with self._lock:
                if not self._queue and self._in_flight == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("notifies still pending")
            time.sleep(0.01)

    def bill_rows(self, bill_date: dt.date, *, app_id: str | None = None) -> list[dict[str, str]]:
        """The detail rows of the day's trade bill, column name → value exactly as in the file (tabs included)."""
        with self._lock:
            merchant = self._merchant_for_control(app_id)
            return [
                dict(zip(BILL_DETAIL_COLUMNS, row, strict=True)) for row in self._bill_detail_rows(merchant, bill_date)
            ]

    def bill_zip(self, bill_date: dt.date, *, app_id: str | None = None) -> bytes:
        """The day's bill zip as ``bill_download_url`` serves it."""
        with self._lock:
            return self._build_bill_zip(self._merchant_for_control(app_id), bill_date)

    # ------------------------------------------------------------------ HTTP: gateway

    async def _gateway(self, request: Request) -> Response:
        injected = await self._injected_failure()
        if injected is not None:
            return injected
        params = await self._request_params(request)
        method = params.get("method", "")
        if method in _BROWSER_METHODS:
            return self._browser_pay(params)
        with self._lock:
            return self._api_call(method, params)

    async def _injected_failure(self) -> Response | None:
        with self._lock:
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
                return PlainTextResponse("simulated failure", status_code=self._fail_status)
            delay = 0.0
            if self._timeout_remaining > 0:
                self._timeout_remaining -= 1
                delay = self._timeout_seconds
        if delay:
            await asyncio.sleep(delay)
        return None

    @staticmethod
    async def _request_params(request: Request) -> dict[str, str]:
        params = dict(parse_qsl(request.url.query, keep_blank_values=True))
        if request.method == "POST":
            raw = await request.body()
            charset = params.get("charset", "utf-8")
            params.update(parse_qsl(raw.decode("ascii", errors="replace"), keep_blank_values=True, encoding=charset))
        return params

    def _api_call(self, method: str, params: dict[str, str]) -> Response:
        app_id = params.get("app_id", "")
        if app_id not in self._merchants:
            body = {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.invalid-app-id",
                "sub_msg": "无效的AppID参数",
            }
            return self._json_text(json.dumps({"error_response": body}, ensure_ascii=False, separators=(",", ":")))
        sign_type = params.get("sign_type", "RSA2")
        if method not in _API_METHODS:
            return self._envelope("error", _invalid("isv.invalid-method", "不存在的方法名").payload, sign_type)
        try:
            self._check_request(params)
            biz = self._biz_content(params)
            handler = getattr(self, "_api_" + method.removeprefix("alipay.").replace(".", "_"))
            payload = {"code": "10000", "msg": "Success", **handler(self._merchants[app_id], params, biz)}
        except _GatewayError as error:
            payload = error.payload
        return self._envelope(method, payload, sign_type)

    def _check_request(self, params: Mapping[str, str]) -> None:
        for required in ("app_id", "method", "charset", "sign_type", "sign", "timestamp", "version"):
            if not params.get(required):
                raise _invalid(f"isv.missing-{required.replace('_', '-')}", f"缺少参数 {required}")
        if params["sign_type"] not in ("RSA2", "RSA"):
            raise _invalid("isv.invalid-signature-type", "无效的签名类型")
        if params["charset"].lower() not in ("utf-8", "gbk"):
            raise _invalid("isv.invalid-charset", "字符集错误")
        message = signing_string(params, exclude=("sign",))
        if not rsa_verify(self._app_keys[params["app_id"]], message, params["sign"], params["sign_type"]):
            raise _invalid("isv.invalid-signature", "验签出错")
        try:
            dt.datetime.strptime(params["timestamp"], TIME_FORMAT)
        except ValueError as error:
            raise _invalid("isv.invalid-timestamp", "非法的时间戳参数") from error

    @staticmethod
    def _biz_content(params: Mapping[str, str]) -> dict[str, Any]:
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError as error:
            raise _invalid("isv.invalid-parameter", "biz_content 不是合法的 JSON") from error
        if not isinstance(biz, dict):
            raise _invalid("isv.invalid-parameter", "biz_content 不是 JSON 对象")
        return biz

    def _envelope(self, method: str, payload: Mapping[str, Any], sign_type: str) -> Response:
        _assert_no_braces(payload)
        inner = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        key = method.replace(".", "_") + "_response"
        signature = rsa_sign(self._alipay_key, inner, sign_type if sign_type in ("RSA", "RSA2") else "RSA2")
        return self._json_text(f'{{"{key}":{inner},"sign":"{signature}"}}')

    @staticmethod
    def _json_text(text: str) -> Response:
        return Response(text.encode("utf-8"), media_type="text/html;charset=utf-8")

    # ------------------------------------------------------------------ methods

    def _open_trade(self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]) -> _Trade:
        """Creates the trade (or finds the same one again) for page/wap pay and precreate."""
        method = params["method"]
        out_trade_no = str(biz.get("out_trade_no") or "")
        subject = str(biz.get("subject") or "")
        if not out_trade_no or len(out_trade_no) > 64:
            raise _business("ACQ.INVALID_PARAMETER", "参数无效 out_trade_no")
        if not subject:
            raise _business("ACQ.INVALID_PARAMETER", "参数无效 subject")
        product_code = str(biz.get("product_code") or next(iter(sorted(_PRODUCT_CODES[method]))))
        if product_code not in _PRODUCT_CODES[method]:
            raise _business("ACQ.PRODUCT_CODE_ERROR", "产品码错误")
        total_minor = _parse_total(biz.get("total_amount"))
        time_expire = _parse_time_expire(biz.get("time_expire"))
        now = self._clock()
        existing = self._trades.get((merchant.app_id, out_trade_no))
        if existing is not None:
            self._expire_if_due(existing)
            if existing.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
                raise _business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            if existing.status == "TRADE_CLOSED":
                raise _business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
            if existing.visible and (existing.total_minor, existing.subject) != (total_minor, subject):
                raise _business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            existing.total_minor = total_minor
            existing.subject = subject
            existing.notify_url = params.get("notify_url") or existing.notify_url
            existing.return_url = params.get("return_url") or existing.return_url
            existing.time_expire = time_expire or existing.time_expire
            return existing
        trade = _Trade(
            trade_no=f"{_beijing(now):%Y%m%d}22001{next(self._sequence):05d}{secrets.randbelow(10**10):010d}",
            app_id=merchant.app_id,
            out_trade_no=out_trade_no,
            api_method=method,
            product_code=product_code,
            subject=subject,
            body=str(biz["body"]) if biz.get("body") else None,
            total_minor=total_minor,
            charset=params.get("charset", "utf-8"),
            sign_type=params.get("sign_type", "RSA2"),
            notify_url=params.get("notify_url") or None,
            return_url=params.get("return_url") or None,
            time_expire=time_expire,
            created_at=now,
        )
        self._trades[(merchant.app_id, out_trade_no)] = trade
        self._trades_by_no[trade.trade_no] = trade
        return trade

    def _api_trade_precreate(
        self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]
    ) -> dict[str, Any]:
        trade = self._open_trade(merchant, params, biz)
        if trade.qr_token is None:
            trade.qr_token = "bax" + secrets.token_hex(10)
            self._qr_tokens[trade.qr_token] = trade.trade_no
        return {"out_trade_no": trade.out_trade_no, "qr_code": f"{self._base()}/qr/{trade.qr_token}"}

    def _find_visible(self, merchant: SandboxMerchant, biz: Mapping[str, Any]) -> _Trade:
        trade: _Trade | None = None
        if biz.get("trade_no"):
            trade = self._trades_by_no.get(str(biz["trade_no"]))
            if trade is not None and trade.app_id != merchant.app_id:
                trade = None
        elif biz.get("out_trade_no"):
            trade = self._trades.get((merchant.app_id, str(biz["out_trade_no"])))
        else:
            raise _invalid("isv.missing-parameter", "out_trade_no 和 trade_no 不能同时为空")
        if trade is None or not trade.visible:
            raise _business("ACQ.TRADE_NOT_EXIST", "交易不存在")
        self._expire_if_due(trade)
        return trade

    def _api_trade_query(self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]) -> dict:
        trade = self._find_visible(merchant, biz)
        shown = _yuan(trade.shown_total_minor)
        paid = trade.paid_at is not None
        result: dict[str, Any] = {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": trade.buyer_logon_id,
            "trade_status": trade.status,
            "total_amount": shown,
            "buyer_pay_amount": shown if paid else "0.00",
            "point_amount": "0.00",
            "invoice_amount": shown if paid else "0.00",
            "receipt_amount": shown if paid else "0.00",
            "buyer_user_id": trade.buyer_id,
        }
        if trade.paid_at is not None:
            result["send_pay_date"] = _fmt(trade.paid_at)
            result["fund_bill_list"] = [{"amount": shown, "fund_channel": "ALIPAYACCOUNT"}]
        return result

    def _api_trade_close(self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]) -> dict:
        trade = self._find_visible(merchant, biz)
        if trade.status != "WAIT_BUYER_PAY":
            raise _business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        self._mark_closed(trade, self._clock())
        return {"trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}

    def _api_trade_refund(self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]) -> dict:
        trade = self._find_visible(merchant, biz)
        try:
            refund_minor = parse_amount(str(biz.get("refund_amount", "")), CURRENCY)
        except (AmountNotANumber, AmountHasTooManyDecimals) as error:
            raise _business("ACQ.INVALID_PARAMETER", "参数无效 refund_amount") from error
        if refund_minor <= 0:
            raise _business("ACQ.INVALID_PARAMETER", "参数无效 refund_amount")
        out_request_no = str(biz.get("out_request_no") or trade.out_trade_no)
        earlier = next((r for r in trade.refunds if r.out_request_no == out_request_no), None)
        if earlier is not None:
            if earlier.refund_minor != refund_minor:
                raise _business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额与原退款请求不一致")
            return self._refund_result(trade, earlier, fund_change="N")
        if trade.paid_at is None or trade.status == "WAIT_BUYER_PAY":
            raise _business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.status != "TRADE_SUCCESS":
            raise _business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
        if trade.refunded_minor + refund_minor > trade.total_minor:
            raise _business("ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额无效")
        now = self._clock()
        refund = _Refund(
            out_request_no=out_request_no,
            refund_minor=refund_minor,
            refunded_at=now,
            reason=str(biz["refund_reason"]) if biz.get("refund_reason") else None,
            sequence=next(self._sequence),
        )
        trade.refunds.append(refund)
        if trade.refunded_minor == trade.total_minor:
            trade.status = "TRADE_CLOSED"
            trade.closed_at = now
        self._queue_notify(trade, refund=refund)
        return self._refund_result(trade, refund, fund_change="Y")

    def _refund_result(self, trade: _Trade, refund: _Refund, *, fund_change: str) -> dict[str, Any]:
        refunded_until = sum(r.refund_minor for r in trade.refunds[: trade.refunds.index(refund) + 1])
        return {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": trade.buyer_logon_id,
            "fund_change": fund_change,
            "refund_fee": _yuan(refunded_until),
            "gmt_refund_pay": _fmt(refund.refunded_at),
            "buyer_user_id": trade.buyer_id,
        }

    def _api_trade_fastpay_refund_query(
        self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]
    ) -> dict[str, Any]:
        trade = self._find_visible(merchant, biz)
        out_request_no = str(biz.get("out_request_no") or "")
        if not out_request_no:
            raise _invalid("isv.missing-parameter", "缺少参数 out_request_no")
        refund = next((r for r in trade.refunds if r.out_request_no == out_request_no), None)
        if refund is None:
            return {}  # Alipay answers an unknown refund with a bare success: no refund happened
        result = {
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "out_request_no": refund.out_request_no,
            "total_amount": _yuan(trade.shown_total_minor),
            "refund_amount": _yuan(refund.refund_minor),
            "refund_status": "REFUND_SUCCESS",
            "gmt_refund_pay": _fmt(refund.refunded_at),
        }
        if refund.reason:
            result["refund_reason"] = refund.reason
        return result

    def _api_data_dataservice_bill_downloadurl_query(
        self, merchant: SandboxMerchant, params: Mapping[str, str], biz: Mapping[str, Any]
    ) -> dict[str, Any]:
        if biz.get("bill_type") not in ("trade", "signcustomer"):
            raise _invalid("isv.invalid-parameter", "参数无效 bill_type")
        try:
            bill_date = dt.date.fromisoformat(str(biz.get("bill_date", "")))
        except ValueError as error:
            raise _invalid("isv.invalid-parameter", "参数无效 bill_date") from error
        now = self._clock()
        if biz["bill_type"] != "trade" or bill_date >= _beijing(now).date():
            raise _business("isp.bill_not_exist", "账单不存在")
        token = secrets.token_urlsafe(16)
        self._bill_files[token] = _BillFile(
            content=self._build_bill_zip(merchant, bill_date),
            expires_at=now + dt.timedelta(seconds=BILL_URL_VALID_SECONDS),
        )
        query = urlencode(
            {
                "bizType": "trade",
                "userId": merchant.pid,
                "fileType": "csv.zip",
                "bizDates": f"{bill_date:%Y%m%d}",
                "downloadFileName": f"{bill_date:%Y%m%d}.csv.zip",
                "fileId": f"/trade/{merchant.pid}/{bill_date:%Y%m%d}.csv.zip",
                "timestamp": str(int(now.timestamp() * 1000)),
                "token": token,
            }
        )
        return {"bill_download_url": f"{self._base()}/downloadBillFile.resource?{query}"}

    # ------------------------------------------------------------------ HTTP: payer's browser

    def _browser_pay(self, params: dict[str, str]) -> Response:
        with self._lock:
            app_id = params.get("app_id", "")
            if app_id not in self._merchants:
                return _error_page("isv.invalid-app-id", "无效的AppID参数")
            try:
                self._check_request(params)
                trade = self._open_trade(self._merchants[app_id], params, self._biz_content(params))
            except _GatewayError as error:
                return _error_page(error.payload["sub_code"], error.payload["sub_msg"])
            return RedirectResponse(f"{self._base()}/cashier/{trade.trade_no}", status_code=302)

    async def _qr(self, request: Request) -> Response:
        with self._lock:
            trade_no = self._qr_tokens.get(request.path_params["token"])
        if trade_no is None:
            return _error_page("QR_NOT_FOUND", "二维码无效", status_code=404)
        return RedirectResponse(f"{self._base()}/cashier/{trade_no}", status_code=302)

    async def _cashier(self, request: Request) -> Response:
        with self._lock:
            trade = self._trades_by_no.get(request.path_params["trade_no"])
            if trade is None:
                return _error_page("ACQ.TRADE_NOT_EXIST", "交易不存在", status_code=404)
            self._expire_if_due(trade)
            if trade.status == "TRADE_CLOSED":
                return _error_page("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
            if trade.status != "WAIT_BUYER_PAY":
                return _error_page("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            trade.visible = True  # the payer logged in / scanned: Alipay now knows the trade
            if request.method == "GET":
                return HTMLResponse(_cashier_page(trade))
            if request.query_params.get("outcome") == "fail":
                return HTMLResponse(_page("支付失败", "<p id='result'>failed</p><p>余额不足，请更换付款方式。</p>"))
            self._mark_paid(trade)
            if trade.return_url:
                return RedirectResponse(self._return_url(trade), status_code=302)
            return HTMLResponse(_page("支付成功", "<p id='result'>paid</p>"))

    def _return_url(self, trade: _Trade) -> str:
        assert trade.return_url is not None
        merchant = self._merchants[trade.app_id]
        params = {
            "charset": trade.charset,
            "out_trade_no": trade.out_trade_no,
            "method": f"{trade.api_method}.return",
            "total_amount": _yuan(trade.shown_total_minor),
            "trade_no": trade.trade_no,
            "auth_app_id": trade.app_id,
            "app_id": trade.app_id,
            "seller_id": merchant.pid,
            "timestamp": _fmt(self._clock()),
            "version": "1.0",
            "sign_type": trade.sign_type,
        }
        params["sign"] = rsa_sign(
            self._alipay_key, signing_string(params, exclude=("sign", "sign_type")), trade.sign_type
        )
        separator = "&" if "?" in trade.return_url else "?"
        return trade.return_url + separator + urlencode(params)

    # ------------------------------------------------------------------ HTTP: bill file

    async def _download_bill(self, request: Request) -> Response:
        injected = await self._injected_failure()
        if injected is not None:
            return injected
        with self._lock:
            bill = self._bill_files.get(request.query_params.get("token", ""))
            if bill is None or self._clock() >= bill.expires_at:
                return PlainTextResponse("AccessDenied: the download URL is invalid or has expired", status_code=403)
            return Response(bill.content, media_type="application/zip")

    # ------------------------------------------------------------------ state changes

    def _mark_paid(self, trade: _Trade) -> None:
        trade.visible = True
        trade.status = "TRADE_SUCCESS"
        trade.paid_at = self._clock()
        trade.paid_sequence = next(self._sequence)
        self._queue_notify(trade)

    def _mark_closed(self, trade: _Trade, moment: dt.datetime) -> None:
        trade.status = "TRADE_CLOSED"
        trade.closed_at = moment
        self._queue_notify(trade)

    def _expire_if_due(self, trade: _Trade) -> None:
        if trade.status == "WAIT_BUYER_PAY" and trade.time_expire is not None and self._clock() >= trade.time_expire:
            if trade.visible:
                self._mark_closed(trade, trade.time_expire)
            else:
                trade.status = "TRADE_CLOSED"
                trade.closed_at = trade.time_expire

    # ------------------------------------------------------------------ notifies

    def _queue_notify(self, trade: _Trade, *, refund: _Refund | None = None) -> None:
        if not trade.notify_url or trade.status not in _NOTIFIED_STATUSES[trade.api_method]:
            return
        merchant = self._merchants[trade.app_id]
        shown = _yuan(trade.shown_total_minor)
        params: dict[str, str] = {
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "app_id": trade.app_id,
            "auth_app_id": trade.app_id,
            "charset": trade.charset,
            "version": "1.0",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "seller_id": merchant.pid,
            "seller_email": merchant.seller_email,
            "trade_status": trade.status,
            "total_amount": shown,
            "subject": trade.subject,
            "gmt_create": _fmt(trade.created_at),
        }
        if trade.body:
            params["body"] = trade.body
        if trade.paid_at is not None:
            params.update(
                {
                    "buyer_id": trade.buyer_id,
                    "buyer_logon_id": trade.buyer_logon_id,
                    "receipt_amount": shown,
                    "invoice_amount": shown,
                    "buyer_pay_amount": shown,
                    "point_amount": "0.00",
                    "gmt_payment": _fmt(trade.paid_at),
                    "fund_bill_list": json.dumps(
                        [{"amount": shown, "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
                    ),
                }
            )
        if trade.closed_at is not None and trade.status == "TRADE_CLOSED":
            params["gmt_close"] = _fmt(trade.closed_at)
        if refund is not None:
            params["out_biz_no"] = refund.out_request_no
            params["refund_fee"] = _yuan(trade.refunded_minor)
            params["gmt_refund"] = _beijing(refund.refunded_at).strftime(TIME_FORMAT + ".%f")[:-3]
        pending = _PendingNotify(
            notify_id=params["notify_id"],
            app_id=trade.app_id,
            out_trade_no=trade.out_trade_no,
            url=trade.notify_url,
            params=params,
            sign_type=trade.sign_type,
            charset=trade.charset,
            copies=self._duplicate_next_notify,
        )
        self._duplicate_next_notify = 1
        self._schedule(pending, self._notify_extra_delay_seconds)

    def _schedule(self, pending: _PendingNotify, delay_seconds: float) -> None:
        with self._lock:
            heapq.heappush(self._queue, (time.monotonic() + delay_seconds, next(self._sequence), pending))
            self._queue_changed.notify_all()

    def _send_notifies(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._queue_changed.wait(timeout=wait)
                if self._stopping:
                    return
                _, _, pending = heapq.heappop(self._queue)
                self._in_flight += 1
            try:
                self._deliver(pending)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _deliver(self, pending: _PendingNotify) -> None:
        pending.attempt += 1
        acknowledged = False
        for _ in range(pending.copies):
            acknowledged = self._deliver_once(pending) or acknowledged
        pending.copies = 1
        if not acknowledged and pending.attempt <= len(NOTIFY_RETRY_MINUTES):
            minutes = NOTIFY_RETRY_MINUTES[pending.attempt - 1]
            self._schedule(pending, minutes * self.notify_delay_seconds)

    def _deliver_once(self, pending: _PendingNotify) -> bool:
        params = dict(pending.params)
        params["notify_time"] = _fmt(self._clock())
        params["sign_type"] = pending.sign_type
        params["sign"] = rsa_sign(
            self._alipay_key, signing_string(params, exclude=("sign", "sign_type")), pending.sign_type
        )
        body = urlencode(params, encoding=pending.charset)
        headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={pending.charset}"}
        status_code: int | None = None
        text: str | None = None
        error: str | None = None
        try:
            response = self._http.post(pending.url, content=body.encode("ascii"), headers=headers)
            status_code, text = response.status_code, response.text
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        acknowledged = status_code == 200 and text is not None and text.strip() == "success"
        with self._lock:
            self._deliveries.append(
                NotifyDelivery(
                    notify_id=pending.notify_id,
                    out_trade_no=pending.out_trade_no,
                    url=pending.url,
                    attempt=pending.attempt,
                    params=params,
                    status_code=status_code,
                    response_text=text,
                    acknowledged=acknowledged,
                    error=error,
                    sent_at_monotonic=time.monotonic(),
                )
            )
        return acknowledged

    # ------------------------------------------------------------------ bill

    def _bill_detail_rows(self, merchant: SandboxMerchant, bill_date: dt.date) -> list[list[str]]:
        entries: list[tuple[dt.datetime, int, list[str]]] = []
        for trade in self._trades.values():
            if trade.app_id != merchant.app_id:
                continue
            shown = _yuan(trade.shown_total_minor)
            if trade.paid_at is not None and _beijing(trade.paid_at).date() == bill_date:
                fee = _yuan(-self._fee_minor(trade.shown_total_minor))  # charged: shown negative
                row = _bill_row(trade, "交易", shown, shown, trade.paid_at, refund_no="", fee=fee)
                entries.append((trade.paid_at, trade.paid_sequence, row))
            for refund in trade.refunds:
                if _beijing(refund.refunded_at).date() == bill_date:
                    received = _yuan(-refund.refund_minor)
                    fee = _yuan(self._fee_minor(refund.refund_minor))  # returned in proportion: positive
                    row = _bill_row(
                        trade, "退款", shown, received, refund.refunded_at, refund_no=refund.out_request_no, fee=fee
                    )
                    row[-1] = refund.reason or ""
                    entries.append((refund.refunded_at, refund.sequence, row))
        entries.sort(key=lambda entry: entry[:2])
        return [row for _, _, row in entries]

    def _fee_minor(self, amount_minor: int) -> int:
        """服务费: the merchant's rate on an amount, half up to the fen."""
        return (amount_minor * self._fee_rate_bp * 2 + 10_000) // 20_000

    def _build_bill_zip(self, merchant: SandboxMerchant, bill_date: dt.date) -> bytes:
        rows = self._bill_detail_rows(merchant, bill_date)
        start = dt.datetime.combine(bill_date, dt.time())
        period = f"[{start:%Y年%m月%d日 %H:%M:%S}]   终止日期：[{start + dt.timedelta(days=1):%Y年%m月%d日 %H:%M:%S}]"
        exported = f"#导出时间：[{_beijing(self._clock()):%Y年%m月%d日 %H:%M:%S}]"
        trades = [row for row in rows if row[2] == "交易"]
        refunds = [row for row in rows if row[2] == "退款"]
        trade_received = _sum_yuan(row[12] for row in trades)
        refund_received = _sum_yuan(row[12] for row in refunds)

        detail = io.StringIO()
        writer = csv.writer(detail, lineterminator="\r\n")
        # Alipay's account number is the partner id followed by 0156.
        for line in ("#支付宝业务明细查询", f"#账号：[{merchant.pid}0156]", f"#起始日期：{period}", _DETAIL_BEGIN):
            detail.write(line + "\r\n")
        writer.writerow(BILL_DETAIL_COLUMNS)
        writer.writerows(rows)
        detail.write(_DETAIL_END + "\r\n")
        detail.write(f"#交易合计：{len(trades)}笔，商家实收共{trade_received}元，商家优惠共0.00元\r\n")
        detail.write(f"#退款合计：{len(refunds)}笔，商家实收退款共{refund_received}元，商家优惠退款共0.00元\r\n")
        detail.write(exported + "\r\n")

        summary = io.StringIO()
        summary_writer = csv.writer(summary, lineterminator="\r\n")
        for line in ("#支付宝业务汇总查询", f"#账号：[{merchant.pid}0156]", f"#起始日期：{period}", _SUMMARY_BEGIN):
            summary.write(line + "\r\n")
        summary_writer.writerow(BILL_SUMMARY_COLUMNS)
        order_total = _sum_yuan(row[11] for row in trades)
        received = parse_amount(trade_received, CURRENCY) + parse_amount(refund_received, CURRENCY)
        fees = sum(parse_amount(row[BILL_DETAIL_COLUMNS.index("服务费（元）")], CURRENCY) for row in rows)
        figures = [order_total, _yuan(received), "0.00", "0.00", "0.00", _yuan(fees), "0.00", _yuan(received + fees)]
        summary_writer.writerow(["", "", len(trades), len(refunds), *figures])
        summary_writer.writerow(["合计", "", len(trades), len(refunds), *figures])
        summary.write(_SUMMARY_END + "\r\n")
        summary.write(exported + "\r\n")

        stem = f"{merchant.pid}_{bill_date:%Y%m%d}"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{stem}_业务明细.csv", detail.getvalue().encode("gbk", errors="replace"))
            archive.writestr(f"{stem}_业务明细(汇总).csv", summary.getvalue().encode("gbk", errors="replace"))
        return buffer.getvalue()

    # ------------------------------------------------------------------ helpers

    def _base(self) -> str:
        if not self.base_url:
            raise RuntimeError("set simulator.base_url to the address the app is served at")
        return self.base_url

    def _merchant_for_control(self, app_id: str | None) -> SandboxMerchant:
        if app_id is None:
            if len(self._merchants) != 1:
                raise ValueError("several merchant apps: say which app_id")
            return next(iter(self._merchants.values()))
        return self._merchants[app_id]

    def _trade_for_control(self, out_trade_no: str, app_id: str | None) -> _Trade:
        merchant = self._merchant_for_control(app_id)
        trade = self._trades.get((merchant.app_id, out_trade_no))
        if trade is None:
            raise KeyError(f"no trade {out_trade_no} for app {merchant.app_id}")
        return trade


def create_alipay_simulator(
    *,
    alipay_private_key_pem: str | bytes,
    merchants: Sequence[SandboxMerchant],
    base_url: str | None = None,
    clock: Callable[[], dt.datetime] = _system_clock,
    notify_delay_seconds: float = 0.01,
    fee_rate_bp: int = 0,
) -> AlipaySimulator:
    """Builds a simulated Alipay; ``notify_delay_seconds`` is how many real seconds one minute of retry takes,
    ``fee_rate_bp`` the 服务费 rate its bills show, in basis points."""
    return AlipaySimulator(
        alipay_private_key_pem=alipay_private_key_pem,
        merchants=merchants,
        base_url=base_url,
        clock=clock,
        notify_delay_seconds=notify_delay_seconds,
        fee_rate_bp=fee_rate_bp,
    )


def _parse_total(value: Any) -> int:
    try:
        amount_minor = parse_amount(str(value if value is not None else ""), CURRENCY)
    except (AmountNotANumber, AmountHasTooManyDecimals) as error:
        raise _business("ACQ.INVALID_PARAMETER", "参数无效 total_amount") from error
    if not 1 <= amount_minor <= TOTAL_AMOUNT_MAX_MINOR:
        raise _business("ACQ.TOTAL_FEE_EXCEED", "订单金额超过限额")
    return amount_minor


def _parse_time_expire(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=SHANGHAI)
    except ValueError as error:
        raise _business("ACQ.INVALID_PARAMETER", "参数无效 time_expire") from error


def _bill_row(
    trade: _Trade, kind: str, order_amount: str, received: str, finished_at: dt.datetime, *, refund_no: str, fee: str
) -> list[str]:
    row = [
        trade.trade_no + "\t",
        trade.out_trade_no + "\t",
        kind,
        trade.subject,
        _fmt(trade.created_at),
        _fmt(finished_at),
        "",
        "",
        "",
        "",
        trade.buyer_logon_id,
        order_amount,
        received,
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "",
        "0.00",
        "0.00",
        refund_no + "\t" if refund_no else "",
        fee,
        "0.00",
        "",
    ]
    assert len(row) == len(BILL_DETAIL_COLUMNS)
    return row


def _sum_yuan(values: Iterable[str]) -> str:
    return _yuan(sum(parse_amount(value, CURRENCY) for value in values))


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _error_page(code: str, message: str, *, status_code: int = 200) -> HTMLResponse:
    body = f"<p>错误代码 <span id='error-code'>{html.escape(code)}</span></p><p>{html.escape(message)}</p>"
    return HTMLResponse(_page("支付宝 - 错误", body), status_code=status_code)


def _cashier_page(trade: _Trade) -> str:
    action = f"/cashier/{html.escape(trade.trade_no)}"
    body = (
        f"<p>商品 <span id='subject'>{html.escape(trade.subject)}</span></p>"
        f"<p>金额 <span id='amount'>{_yuan(trade.shown_total_minor)}</span> 元</p>"
        f"<form method='post' action='{action}'><button id='pay' type='submit'>pay</button></form>"
        f"<form method='post' action='{action}?outcome=fail'><button id='fail' type='submit'>fail</button></form>"
    )
    return _page("支付宝 - 收银台", body)
