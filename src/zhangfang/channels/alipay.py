"""The Alipay channel (支付宝, indirect): page, wap and QR payments through ``python-alipay-sdk``.

Guarantees
- Amounts cross as integer fen and go on the wire as yuan strings with two
  decimals (``format_minor``/``parse_amount``), never through float. Only CNY.
- Every call the SDK makes has the adapter's timeout (``timeout_seconds``, per
  socket operation). A timeout, a refused connection, a non-200 answer, an
  unsigned answer, an answer whose signature does not verify, Alipay's
  ``20000`` (service unavailable) and ``ACQ.SYSTEM_ERROR`` are
  ``ChannelUnavailable``: the outcome is unknown, query before retrying. Any
  other code than ``10000`` is ``ChannelRejected`` with Alipay's ``sub_code``
  (``ACQ.TRADE_NOT_EXIST``, ``ACQ.REASON_TRADE_REFUND_FEE_ERR``, …).
- ``refund`` is idempotent on ``out_refund_no``: it is sent as Alipay's
  ``out_request_no``, which Alipay deduplicates (a repeat answers the first
  result with ``fund_change: "N"``).
- ``parse_notify`` returns nothing it has not verified: Alipay's RSA signature,
  ``sign_type``, ``notify_type``, our ``app_id`` (and ``seller_id`` when
  configured). The amount it returns is what Alipay signed; comparing it with
  the order is the caller's job.
- The synchronous return (``parse_return``) yields only the order reference.

Wire facts relied on (``/work/shared/reference/channels.md``, "Alipay")
- Transport: the SDK signs the request parameters and sends a GET to its
  private ``_gateway``, which has no constructor parameter; the constructor sets
  it from ``gateway_url`` (production by default, a simulator's in tests).
- page and wap pay make no call: the SDK builds a signed query string and the
  payer's browser opens ``gateway?query`` (``PaymentAction(kind="redirect")``).
  QR pay calls ``alipay.trade.precreate`` and shows its ``qr_code``.
- A page/wap/QR trade does not exist at Alipay until the payer opens the
  cashier or scans the code: until then query, close and refund answer
  ``ACQ.TRADE_NOT_EXIST`` (``ChannelRejected``). Callers treat that code, for
  an order they created, as "still pending"; ``expires_at`` is sent as
  ``time_expire`` so an unopened link stops working on its own.
- Trade states: ``WAIT_BUYER_PAY`` → pending; ``TRADE_SUCCESS`` and
  ``TRADE_FINISHED`` → succeeded; ``TRADE_CLOSED`` → closed, unless it was paid
  (``send_pay_date`` / ``gmt_payment`` present): a trade refunded in full is
  also ``TRADE_CLOSED``, and the payment still succeeded. Alipay has no failed
  state: a declined attempt leaves the trade payable.
- Refunds are synchronous: ``10000`` means refunded. The refund query answers
  an unknown refund with a bare success, which means the refund did not happen
  (state ``failed``; repeating the refund with the same number is safe).
- Notifies are form POSTs signed with Alipay's key over the sorted parameters
  without ``sign`` and ``sign_type``; the merchant answers the text ``success``
  or Alipay retries (4m, 10m, 10m, 1h, 2h, 6h, 15h) with the same
  ``notify_id``. A refund notify carries ``out_biz_no`` (our ``out_refund_no``)
  and ``refund_fee``, which is the trade's *cumulative* refunded amount: that
  is the refund ``Notify.amount_minor`` (query the refund for its own amount).
  Refund notifies go to the payment's ``notify_url``; Alipay has no per-refund
  one, so ``RefundRequest.notify_url`` is not used.
- The bill: ``alipay.data.dataservice.bill.downloadurl.query`` gives a
  ``bill_download_url`` valid for 30 s; ``download_bill`` fetches it at once
  and returns the zip (GBK CSV files) unchanged.
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import urllib.error
import zipfile
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig

from zhangfang.channels.protocol import (
    ChannelRejected,
    ChannelUnavailable,
    ConnectionKind,
    CreatePayment,
    Notify,
    NotifyAck,
    NotifyInvalid,
    PaymentAction,
    PaymentState,
    PaymentStatus,
    RefundRequest,
    RefundStatus,
)
from zhangfang.money import AmountHasTooManyDecimals, AmountNotANumber, format_minor, parse_amount

__all__ = ["ALIPAY_GATEWAY_URL", "AlipayAdapter"]

ALIPAY_GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
CURRENCY = "CNY"
SHANGHAI = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# Codes that mean "the outcome is unknown", not "no".
_UNKNOWN_OUTCOME_CODES = frozenset({"20000"})
_UNKNOWN_OUTCOME_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR", "aop.ACQ.SYSTEM_ERROR", "isp.unknow-error"})
_TRADE_STATUSES = frozenset({"WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED"})
_SIGN_TYPES = frozenset({"RSA2", "RSA"})
_RETURN_METHODS = frozenset({"alipay.trade.page.pay.return", "alipay.trade.wap.pay.return"})


class AlipayAdapter:
    """Alipay through ``python-alipay-sdk``'s ``AliPay`` client, with our keys and ``gateway_url``."""

    code: str = "alipay"
    connection: ConnectionKind = "indirect"
    methods: frozenset[str] = frozenset({"page", "wap", "qr"})
    currencies: frozenset[str] = frozenset({CURRENCY})

    def __init__(
        self,
        *,
        app_id: str,
        app_private_key_pem: str,
        alipay_public_key_pem: str,
        seller_id: str | None = None,
        gateway_url: str = ALIPAY_GATEWAY_URL,
        timeout_seconds: float = 15.0,
        sign_type: str = "RSA2",
    ) -> None:
        if sign_type not in _SIGN_TYPES:
            raise ValueError(f"sign_type must be RSA2 or RSA, got {sign_type!r}")
        self.app_id = app_id
        self.seller_id = seller_id
        self.gateway_url = gateway_url
        self.timeout_seconds = timeout_seconds
        self._sign_type = sign_type
        self._client = AliPay(
            appid=app_id,
            app_private_key_string=app_private_key_pem,
            alipay_public_key_string=alipay_public_key_pem,
            sign_type=sign_type,
            config=AliPayConfig(timeout=timeout_seconds),
        )
        # The SDK hard-codes Alipay's gateway and has no parameter for it (channels.md, "Transport").
        self._client._gateway = gateway_url

    # ------------------------------------------------------------------ payments

    def create_payment(self, request: CreatePayment) -> PaymentAction:
        """Page/wap: a signed gateway URL for the payer's browser (no call). QR: precreate, then its ``qr_code``."""
        if request.method not in self.methods:
            raise ValueError(f"Alipay adapter does not offer method {request.method!r}")
        total_amount = self._yuan(request.amount_minor, request.currency)
        extra: dict[str, str] = {}
        if request.expires_at is not None:
            extra["time_expire"] = _to_beijing_text(request.expires_at)
        if request.method == "qr":
            result = self._call(
                self._client.api_alipay_trade_precreate,
                request.subject,
                request.out_trade_no,
                total_amount,
                notify_url=request.notify_url,
                **extra,
            )
            self._check_same_trade(result, request.out_trade_no)
            if not result.get("qr_code"):
                raise ChannelUnavailable("precreate answered without qr_code", raw=result)
            return PaymentAction(kind="qr_code", qr_code=result["qr_code"])
        build = (
            self._client.api_alipay_trade_page_pay
            if request.method == "page"
            else self._client.api_alipay_trade_wap_pay
        )
        query = build(
            request.subject,
            request.out_trade_no,
            total_amount,
            return_url=request.return_url,
            notify_url=request.notify_url,
            **extra,
        )
        return PaymentAction(kind="redirect", url=f"{self.gateway_url}?{query}")

    def query_payment(self, out_trade_no: str) -> PaymentStatus:
        """``alipay.trade.query``; an order the payer never opened is ``ChannelRejected("ACQ.TRADE_NOT_EXIST")``."""
        result = self._call(self._client.api_alipay_trade_query, out_trade_no=out_trade_no)
        self._check_same_trade(result, out_trade_no)
        trade_status = result.get("trade_status")
        if trade_status not in _TRADE_STATUSES:
            raise ChannelUnavailable(f"unknown trade_status {trade_status!r}", raw=result)
        paid_at = _from_beijing_text(result.get("send_pay_date"))
        return PaymentStatus(
            out_trade_no=out_trade_no,
            state=_payment_state(trade_status, paid=paid_at is not None),
            amount_minor=_amount(result.get("total_amount"), ChannelUnavailable, result),
            currency=CURRENCY,
            channel_trade_no=result.get("trade_no"),
            paid_at=paid_at,
            raw=result,
        )

    def close_payment(self, out_trade_no: str) -> None:
        """``alipay.trade.close``; only an unpaid trade the payer has opened can be closed."""
        result = self._call(self._client.api_alipay_trade_close, out_trade_no=out_trade_no)
        self._check_same_trade(result, out_trade_no)

    # ------------------------------------------------------------------ refunds

    def refund(self, request: RefundRequest) -> RefundStatus:
        """``alipay.trade.refund`` with ``out_request_no = out_refund_no``; ``10000`` means refunded."""
        refund_amount = self._yuan(request.refund_minor, request.currency)
        extra: dict[str, str] = {"out_request_no": request.out_refund_no}
        if request.reason:
            extra["refund_reason"] = request.reason
        result = self._call(
            self._client.api_alipay_trade_refund, refund_amount, out_trade_no=request.out_trade_no, **extra
        )
        self._check_same_trade(result, request.out_trade_no)
        return RefundStatus(
            out_refund_no=request.out_refund_no,
            state="succeeded",
            refund_minor=request.refund_minor,
            channel_refund_no=None,  # Alipay numbers refunds by our out_request_no only
            refunded_at=_from_beijing_text(result.get("gmt_refund_pay")),
            raw=result,
        )

    def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        """``alipay.trade.fastpay.refund.query``; a refund Alipay does not know is ``failed`` (it never happened)."""
        result = self._call(
            self._client.api_alipay_trade_fastpay_refund_query, out_refund_no, out_trade_no=out_trade_no
        )
        refund_status = result.get("refund_status")
        if refund_status is None and not result.get("refund_amount"):
            return RefundStatus(out_refund_no=out_refund_no, state="failed", raw=result)
        if refund_status not in (None, "REFUND_SUCCESS"):
            return RefundStatus(out_refund_no=out_refund_no, state="processing", raw=result)
        if result.get("out_request_no") not in (None, out_refund_no):
            raise ChannelUnavailable("refund query answered for another refund", raw=result)
        return RefundStatus(
            out_refund_no=out_refund_no,
            state="succeeded",
            refund_minor=_amount(result.get("refund_amount"), ChannelUnavailable, result),
            refunded_at=_from_beijing_text(result.get("gmt_refund_pay")),
            raw=result,
        )

    # ------------------------------------------------------------------ notifies and returns

    def parse_notify(self, headers: Mapping[str, str], body: bytes) -> Notify:
        """Verifies a ``trade_status_sync`` notify (signature, app, seller) and translates it."""
        params = _parse_form(body)
        self._verify_signed(params, NotifyInvalid)
        if params.get("notify_type") != "trade_status_sync":
            raise NotifyInvalid(f"unexpected notify_type {params.get('notify_type')!r}", code="notify_type_unknown")
        for required in ("notify_id", "out_trade_no", "trade_status", "total_amount"):
            if not params.get(required):
                raise NotifyInvalid(f"notify lacks {required}", code="notify_malformed", raw=params)
        trade_status = params["trade_status"]
        if trade_status not in _TRADE_STATUSES:
            raise NotifyInvalid(f"unknown trade_status {trade_status!r}", code="notify_malformed", raw=params)
        paid_at = _notify_time(params, "gmt_payment")
        if params.get("out_biz_no") and params.get("refund_fee"):
            return Notify(
                kind="refund",
                notify_id=params["notify_id"],
                out_trade_no=params["out_trade_no"],
                state="succeeded",
                amount_minor=_amount(params["refund_fee"], NotifyInvalid, params),
                currency=CURRENCY,
                channel_trade_no=params.get("trade_no"),
                out_refund_no=params["out_biz_no"],
                occurred_at=_notify_time(params, "gmt_refund"),
                raw=params,
            )
        state = _payment_state(trade_status, paid=paid_at is not None)
        return Notify(
            kind="payment",
            notify_id=params["notify_id"],
            out_trade_no=params["out_trade_no"],
            state=state,
            amount_minor=_amount(params["total_amount"], NotifyInvalid, params),
            currency=CURRENCY,
            channel_trade_no=params.get("trade_no"),
            occurred_at=paid_at if state == "succeeded" else _notify_time(params, "gmt_close"),
            raw=params,
        )

    def ack_notify(self, accepted: bool) -> NotifyAck:
        """The text ``success`` stops Alipay's retries; anything else (here ``fail``) keeps them coming."""
        return NotifyAck(
            status_code=200,
            body=b"success" if accepted else b"fail",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    def parse_return(self, query: str | Mapping[str, str]) -> str:
        """Verifies the browser's sync return and gives its ``out_trade_no`` — a reference, never a result.

        Not part of ``ChannelAdapter``: the cashier uses it to know which order
        to show (and then asks ``query_payment`` or waits for the notify).
        """
        params = dict(parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else dict(query)
        self._verify_signed(params, NotifyInvalid)
        if params.get("method") not in _RETURN_METHODS or not params.get("out_trade_no"):
            raise NotifyInvalid("not an Alipay sync return", code="return_malformed", raw=params)
        return params["out_trade_no"]

    # ------------------------------------------------------------------ bill

    def download_bill(self, bill_date: dt.date) -> bytes:
        """The day's trade bill zip as Alipay serves it (GBK CSV files inside); the URL is followed at once."""
        result = self._call(
            self._client.server_api,
            "alipay.data.dataservice.bill.downloadurl.query",
            biz_content={"bill_type": "trade", "bill_date": bill_date.isoformat()},
        )
        url = result.get("bill_download_url")
        if not url:
            raise ChannelUnavailable("bill query answered without bill_download_url", raw=result)
        try:
            response = httpx.get(url, timeout=self.timeout_seconds)
        except httpx.HTTPError as error:
            raise ChannelUnavailable(f"bill download failed: {type(error).__name__}: {error}") from error
        if response.status_code != 200:
            raise ChannelUnavailable(f"bill download answered HTTP {response.status_code}", raw=response.text[:200])
        if not zipfile.is_zipfile(io.BytesIO(response.content)):
            raise ChannelUnavailable("bill download is not a zip file")
        return response.content

    # ------------------------------------------------------------------ helpers

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One SDK call, its failures classified; returns the verified response object when ``code`` is 10000."""
        try:
            result = function(*args, **kwargs)
        except AliPayValidationError as error:
            raise ChannelUnavailable("Alipay's response signature does not verify") from error
        except AliPayException as error:
            raise ChannelUnavailable(f"unsigned or error response from Alipay: {error}") from error
        except urllib.error.HTTPError as error:
            raise ChannelUnavailable(f"Alipay answered HTTP {error.code}") from error
        except (OSError, http.client.HTTPException) as error:  # timeouts, refused connections, resets
            raise ChannelUnavailable(f"no answer from Alipay: {type(error).__name__}: {error}") from error
        except (ValueError, AttributeError, TypeError, KeyError) as error:  # a body the SDK cannot read
            raise ChannelUnavailable(f"unreadable answer from Alipay: {type(error).__name__}") from error
        if not isinstance(result, dict):
            raise ChannelUnavailable("unreadable answer from Alipay", raw=result)
        code = str(result.get("code", ""))
        if code == "10000":
            return result
        sub_code = result.get("sub_code")
        message = f"Alipay {code} {sub_code or ''}: {result.get('sub_msg') or result.get('msg') or ''}".strip()
        if code in _UNKNOWN_OUTCOME_CODES or sub_code in _UNKNOWN_OUTCOME_SUB_CODES:
            raise ChannelUnavailable(message, code=sub_code or code, raw=result)
        raise ChannelRejected(message, code=sub_code or code, raw=result)

    @staticmethod
    def _check_same_trade(result: Mapping[str, Any], out_trade_no: str) -> None:
        if result.get("out_trade_no") not in (None, out_trade_no):
            raise ChannelUnavailable("Alipay answered about another trade", raw=result)

    def _yuan(self, amount_minor: int, currency: str) -> str:
        if currency not in self.currencies:
            raise ValueError(f"Alipay adapter takes CNY only, got {currency!r}")
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
            raise ValueError(f"amount must be a positive int of fen, got {amount_minor!r}")
        return format_minor(amount_minor, CURRENCY)

    def _verify_signed(self, params: dict[str, str], error: type[NotifyInvalid]) -> None:
        """Alipay's signature over the sorted parameters without ``sign``/``sign_type``; then our app and seller."""
        signature = params.get("sign")
        if not signature:
            raise error("unsigned", code="signature_missing", raw=params)
        if params.get("sign_type") != self._sign_type:
            raise error(f"sign_type {params.get('sign_type')!r} is not ours", code="sign_type_mismatch", raw=params)
        unsigned = {key: value for key, value in params.items() if key != "sign"}
        try:
            verified = self._client.verify(unsigned, signature)  # drops sign_type itself
        except (AliPayException, ValueError, TypeError) as exc:
            raise error("signature is not readable", code="signature_invalid", raw=params) from exc
        if not verified:
            raise error("signature does not verify with Alipay's key", code="signature_invalid", raw=params)
        if params.get("app_id") != self.app_id:
            raise error(f"for app {params.get('app_id')!r}, not ours", code="app_id_mismatch", raw=params)
        if self.seller_id is not None and params.get("seller_id") != self.seller_id:
            raise error(f"for seller {params.get('seller_id')!r}, not ours", code="seller_id_mismatch", raw=params)


def _payment_state(trade_status: str, *, paid: bool) -> PaymentState:
    if trade_status == "WAIT_BUYER_PAY":
        return "pending"
    if trade_status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
        return "succeeded"
    return "succeeded" if paid else "closed"  # TRADE_CLOSED: closed unpaid, or paid and refunded in full


def _amount(text: Any, error: type[ChannelUnavailable] | type[NotifyInvalid], raw: Any) -> int:
    try:
        return parse_amount(str(text), CURRENCY)
    except (AmountNotANumber, AmountHasTooManyDecimals) as exc:
        raise error(f"amount {text!r} is not a yuan amount", code="amount_invalid", raw=raw) from exc


def _parse_form(body: bytes) -> dict[str, str]:
    """The notify's form body, decoded in the charset it declares; duplicate or malformed fields are refused."""
    try:
        text = body.decode("ascii")
        charset = dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1")).get("charset") or "utf-8"
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding=charset, errors="strict")
    except (UnicodeDecodeError, LookupError, ValueError) as exc:
        raise NotifyInvalid("notify body is not a form", code="notify_malformed") from exc
    params = dict(pairs)
    if len(params) != len(pairs):
        raise NotifyInvalid("notify repeats a field", code="notify_malformed")
    return params


def _to_beijing_text(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    return moment.astimezone(SHANGHAI).strftime(TIME_FORMAT)


def _from_beijing_text(text: Any) -> dt.datetime | None:
    """Alipay's ``yyyy-MM-dd HH:mm:ss[.SSS]`` Beijing time as an aware UTC datetime."""
    if not text:
        return None
    value = str(text)
    try:
        parsed = dt.datetime.strptime(value, TIME_FORMAT + ".%f" if "." in value else TIME_FORMAT)
    except ValueError:
        return None
    return parsed.replace(tzinfo=SHANGHAI).astimezone(dt.UTC)


def _notify_time(params: Mapping[str, str], name: str) -> dt.datetime | None:
    return _from_beijing_text(params.get(name))
