"""WeChat Pay API v3 (微信支付), through the ``wechatpayv3`` SDK: the ``wechatpay`` channel adapter.

Guarantees (on top of those of ``ChannelAdapter``)
- Amounts: WeChat Pay counts CNY in fen, which is our minor unit, so ``amount_minor`` goes
  on the wire as the same integer and comes back as it (``amount.total``,
  ``amount.refund``); a non-``int`` amount from the channel is a response we cannot use.
  Only CNY; only the ``native`` (QR ``code_url``), ``h5`` (``h5_url`` redirect) and
  ``jsapi`` (``prepay_id`` → WeixinJSBridge parameters) methods.
- Every 2xx answer is verified by the SDK with the platform public key (public-key mode:
  ``Wechatpay-Serial`` is the public key id) before anything is read from it; an answer
  that is unsigned, badly signed, not JSON, or 5xx, and any timeout or connection error,
  is ``ChannelUnavailable`` (the outcome is unknown: query before retrying). A 4xx answer
  is ``ChannelRejected`` whose ``code`` is the channel's (``ORDER_NOT_EXIST``,
  ``INVALID_REQUEST`` for a refund above what is left, ``ORDERPAID``, ``SIGN_ERROR`` …).
- ``parse_notify`` returns a ``Notify`` only when the five ``Wechatpay-*`` headers are
  present, the serial is our platform public key id, the timestamp is within
  ``notify_max_age_seconds`` of our clock, the SDK's ``callback()`` verifies the
  signature over ``TS\\nNONCE\\nBODY\\n`` and decrypts the AES-256-GCM ``resource`` with our
  APIv3 key, and the decrypted ``mchid`` (and ``appid`` for payments) is ours. Anything
  else is ``NotifyInvalid``. The amount it reports is the channel's; comparing it with
  the order is the payments service's job.
- ``ack_notify(True)`` is HTTP 200 ``{"code":"SUCCESS","message":"成功"}`` (the channel
  stops); ``ack_notify(False)`` is HTTP 500, so the channel retries on its schedule.

Wire facts relied on (see /work/shared/reference/channels.md, "WeChat Pay v3"): the SDK's
base URL is the hard-coded ``Core._gate_way``, so it is overridden on the client object
here and the SDK is never patched; the SDK signs requests
(``Authorization: WECHATPAY2-SHA256-RSA2048 …`` over ``METHOD\\nPATH\\nTS\\nNONCE\\nBODY\\n``)
and raises a bare ``Exception`` when a 2xx answer does not verify or lacks
``Wechatpay-Signature-Type``; it returns ``(status, text)`` and never raises for 4xx/5xx;
query ``trade_state`` is SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING or
PAYERROR; refund ``status`` is SUCCESS, CLOSED, PROCESSING or ABNORMAL; notifies are
``TRANSACTION.SUCCESS`` or ``REFUND.SUCCESS|ABNORMAL|CLOSED``; the trade bill comes from
``/v3/bill/tradebill`` (a ``download_url`` under the same base URL and the SHA1 of the
uncompressed file) and is downloaded unsigned.

What ``ChannelAdapter`` lacks and this adapter adds: ``create_payment`` takes the payer's
``payer_openid`` (required for ``jsapi``) and ``payer_client_ip`` (required for ``h5``)
as keyword arguments, since the channel refuses those methods without them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests
from wechatpayv3 import WeChatPay, WeChatPayType

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
    RefundState,
    RefundStatus,
)

__all__ = ["GATEWAY", "WechatPayAdapter"]

GATEWAY = "https://api.mch.weixin.qq.com"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"

_PAY_TYPES = {"native": WeChatPayType.NATIVE, "h5": WeChatPayType.H5, "jsapi": WeChatPayType.JSAPI}
_PAYMENT_STATES: dict[str, PaymentState] = {
    "SUCCESS": "succeeded",
    "REFUND": "succeeded",  # paid, then (partly) refunded: the payment itself succeeded
    "NOTPAY": "pending",
    "USERPAYING": "pending",
    "CLOSED": "closed",
    "REVOKED": "closed",
    "PAYERROR": "failed",
}
_REFUND_STATES: dict[str, RefundState] = {
    "PROCESSING": "processing",
    "SUCCESS": "succeeded",
    "CLOSED": "failed",
    "ABNORMAL": "failed",
}
_REFUND_EVENTS: dict[str, RefundState] = {
    "REFUND.SUCCESS": "succeeded",
    "REFUND.ABNORMAL": "failed",
    "REFUND.CLOSED": "failed",
}
_NOTIFY_HEADERS = (
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
)
_ACK_ACCEPTED = json.dumps({"code": "SUCCESS", "message": "成功"}, ensure_ascii=False).encode()
_ACK_REFUSED = json.dumps({"code": "FAIL", "message": "失败"}, ensure_ascii=False).encode()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WechatPayAdapter:
    """One WeChat Pay direct merchant (商户号 + AppID), in public-key mode."""

    code = "wechatpay"
    connection: ConnectionKind = "indirect"
    methods = frozenset({"native", "h5", "jsapi"})
    currencies = frozenset({"CNY"})

    def __init__(
        self,
        *,
        mchid: str,
        appid: str,
        private_key_pem: str,
        cert_serial_no: str,
        apiv3_key: str,
        platform_public_key_pem: str,
        platform_public_key_id: str,
        gateway: str = GATEWAY,
        timeout_seconds: float = 10.0,
        notify_max_age_seconds: int = 300,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._mchid = mchid
        self._appid = appid
        self._public_key_id = platform_public_key_id
        self._notify_max_age_seconds = notify_max_age_seconds
        self._clock = clock
        self.timeout_seconds = timeout_seconds
        self._client = WeChatPay(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=mchid,
            private_key=private_key_pem,
            cert_serial_no=cert_serial_no,
            appid=appid,
            apiv3_key=apiv3_key,
            timeout=timeout_seconds,
            public_key=platform_public_key_pem,
            public_key_id=platform_public_key_id,
        )
        # The SDK hard-codes its base URL and has no parameter for it (channels.md).
        self._client._core._gate_way = gateway.rstrip("/")

    # ----------------------------------------------------------------- payments

    def create_payment(
        self, request: CreatePayment, *, payer_openid: str | None = None, payer_client_ip: str | None = None
    ) -> PaymentAction:
        """Order at WeChat Pay: ``native`` → a QR ``code_url``, ``h5`` → redirect to ``h5_url``, ``jsapi`` → a form.

        The ``jsapi`` form holds the parameters of ``WeixinJSBridge.invoke('getBrandWCPayRequest')``,
        signed with the merchant key. For ``h5``, ``return_url`` is appended as ``redirect_url``:
        WeChat sends the browser back there unchanged, with no result in it.
        """
        if request.method not in self.methods:
            raise ValueError(f"wechatpay has no method {request.method!r}; it has {sorted(self.methods)}")
        self._check_amount(request.amount_minor, request.currency)
        if request.method == "jsapi" and not payer_openid:
            raise ValueError("a jsapi payment needs the payer's openid (payer_openid)")
        if request.method == "h5" and not payer_client_ip:
            raise ValueError("an h5 payment needs the payer's IP address (payer_client_ip)")
        time_expire = None
        if request.expires_at is not None:
            time_expire = request.expires_at.astimezone(dt.timezone(dt.timedelta(hours=8))).isoformat(
                timespec="seconds"
            )
        body = self._call(
            self._client.pay,
            description=request.subject,
            out_trade_no=request.out_trade_no,
            amount={"total": request.amount_minor, "currency": request.currency},
            payer={"openid": payer_openid} if request.method == "jsapi" else None,
            time_expire=time_expire,
            scene_info={"payer_client_ip": payer_client_ip, "h5_info": {"type": "Wap"}}
            if request.method == "h5"
            else None,
            notify_url=request.notify_url,
            pay_type=_PAY_TYPES[request.method],
        )
        if request.method == "native":
            return PaymentAction(kind="qr_code", qr_code=self._text(body, "code_url"))
        if request.method == "h5":
            url = self._text(body, "h5_url")
            if request.return_url:
                url += ("&" if "?" in url else "?") + "redirect_url=" + quote(request.return_url, safe="")
            return PaymentAction(kind="redirect", url=url)
        package = "prepay_id=" + self._text(body, "prepay_id")
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        pay_sign = self._client.sign([self._appid, timestamp, nonce, package])
        form = {
            "appId": self._appid,
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": pay_sign,
        }
        return PaymentAction(kind="form", form=form)

    def query_payment(self, out_trade_no: str) -> PaymentStatus:
        """``GET /v3/pay/transactions/out-trade-no/{no}``; an unknown trade is ``ChannelRejected(ORDER_NOT_EXIST)``."""
        body = self._call(self._client.query, out_trade_no=out_trade_no)
        if body.get("out_trade_no") != out_trade_no or body.get("mchid") != self._mchid:
            raise ChannelUnavailable("the query answer is about another trade", code="response_mismatch", raw=body)
        trade_state = body.get("trade_state")
        state = _PAYMENT_STATES.get(trade_state) if isinstance(trade_state, str) else None
        if state is None:
            raise ChannelUnavailable(f"unknown trade_state {trade_state!r}", code="response_invalid", raw=body)
        amount = body.get("amount") if isinstance(body.get("amount"), dict) else {}
        return PaymentStatus(
            out_trade_no=out_trade_no,
            state=state,
            amount_minor=self._optional_fen(amount.get("total"), body),
            currency=amount.get("currency") or amount.get("payer_currency"),
            channel_trade_no=body.get("transaction_id"),
            paid_at=self._time(body.get("success_time"), body),
            raw=body,
        )

    def close_payment(self, out_trade_no: str) -> None:
        """Close an unpaid trade (204); a paid one is ``ChannelRejected(ORDERPAID)``."""
        self._call(self._client.close, out_trade_no=out_trade_no)

    # ----------------------------------------------------------------- refunds

    def refund(self, request: RefundRequest) -> RefundStatus:
        """``POST /v3/refund/domestic/refunds``; the channel keeps it idempotent on ``out_refund_no``."""
        self._check_amount(request.refund_minor, request.currency)
        self._check_amount(request.total_minor, request.currency)
        body = self._call(
            self._client.refund,
            out_refund_no=request.out_refund_no,
            amount={"refund": request.refund_minor, "total": request.total_minor, "currency": request.currency},
            out_trade_no=request.out_trade_no,
            reason=request.reason,
            notify_url=request.notify_url,
        )
        return self._refund_status(body, request.out_trade_no, request.out_refund_no)

    def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        """``GET /v3/refund/domestic/refunds/{out_refund_no}``; unknown is ``ChannelRejected(RESOURCE_NOT_EXISTS)``."""
        body = self._call(self._client.query_refund, out_refund_no=out_refund_no)
        return self._refund_status(body, out_trade_no, out_refund_no)

    # ----------------------------------------------------------------- notifies

    def parse_notify(self, headers: Mapping[str, str], body: bytes) -> Notify:
        """Verify (platform key), decrypt (APIv3 key) and translate a notify; ``NotifyInvalid`` otherwise."""
        by_name = {name.lower(): value for name, value in headers.items()}
        canonical = {name: by_name.get(name.lower(), "") for name in _NOTIFY_HEADERS}
        missing = [name for name, value in canonical.items() if not value]
        if missing:
            raise NotifyInvalid(f"notify lacks {', '.join(missing)}", code="notify_headers_missing")
        if canonical["Wechatpay-Signature-Type"] != SIGNATURE_TYPE:
            raise NotifyInvalid("notify signature type is not RSA2048/SHA256", code="notify_signature_invalid")
        if canonical["Wechatpay-Serial"] != self._public_key_id:
            raise NotifyInvalid("notify is signed by a key we do not know", code="notify_signature_invalid")
        timestamp = canonical["Wechatpay-Timestamp"]
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or abs(self._clock().timestamp() - int(timestamp)) > self._notify_max_age_seconds
        ):
            raise NotifyInvalid("notify timestamp is too far from now (replay?)", code="notify_timestamp_stale")
        try:
            data = self._client.callback(canonical, body)
        except Exception as exc:  # the SDK raises bare Exception (bad JSON, bad UTF-8, unknown algorithm)
            raise NotifyInvalid(f"notify does not verify: {exc}", code="notify_signature_invalid") from exc
        if not isinstance(data, dict) or not isinstance(data.get("resource"), dict):
            raise NotifyInvalid(
                "notify signature or decryption does not verify", code="notify_signature_invalid", raw=body
            )
        resource: dict[str, Any] = data["resource"]
        if resource.get("mchid") != self._mchid:
            raise NotifyInvalid(f"notify is for merchant {resource.get('mchid')!r}", code="notify_merchant_mismatch")
        notify_id = data.get("id")
        event_type = data.get("event_type")
        out_trade_no = resource.get("out_trade_no")
        if not isinstance(notify_id, str) or not isinstance(out_trade_no, str):
            raise NotifyInvalid("notify lacks id or out_trade_no", code="notify_content_invalid", raw=data)
        amount = resource.get("amount") if isinstance(resource.get("amount"), dict) else {}
        if event_type == "TRANSACTION.SUCCESS":
            if resource.get("appid") != self._appid:
                raise NotifyInvalid(f"notify is for app {resource.get('appid')!r}", code="notify_merchant_mismatch")
            if resource.get("trade_state") != "SUCCESS":
                raise NotifyInvalid("payment notify without trade_state SUCCESS", code="notify_content_invalid")
            return Notify(
                kind="payment",
                notify_id=notify_id,
                out_trade_no=out_trade_no,
                state="succeeded",
                amount_minor=self._notify_fen(amount.get("total")),
                currency=str(amount.get("currency") or "CNY"),
                channel_trade_no=resource.get("transaction_id"),
                occurred_at=self._notify_time(resource.get("success_time")),
                raw=data,
            )
        if isinstance(event_type, str) and event_type in _REFUND_EVENTS:
            out_refund_no = resource.get("out_refund_no")
            if not isinstance(out_refund_no, str):
                raise NotifyInvalid("refund notify lacks out_refund_no", code="notify_content_invalid")
            return Notify(
                kind="refund",
                notify_id=notify_id,
                out_trade_no=out_trade_no,
                state=_REFUND_EVENTS[event_type],
                amount_minor=self._notify_fen(amount.get("refund")),
                currency="CNY",  # refund notifies carry no currency; WeChat Pay domestic refunds are CNY
                channel_trade_no=resource.get("transaction_id"),
                out_refund_no=out_refund_no,
                occurred_at=self._notify_time(resource.get("success_time")),
                raw=data,
            )
        raise NotifyInvalid(f"notify event {event_type!r} is not one we act on", code="notify_event_unknown")

    def ack_notify(self, accepted: bool) -> NotifyAck:
        """200 with the SUCCESS body stops the channel; 500 makes it retry on its schedule."""
        if accepted:
            return NotifyAck(status_code=200, body=_ACK_ACCEPTED, headers={"Content-Type": "application/json"})
        return NotifyAck(status_code=500, body=_ACK_REFUSED, headers={"Content-Type": "application/json"})

    # ----------------------------------------------------------------- bills

    def download_bill(self, bill_date: dt.date) -> bytes:
        """The ALL trade bill of a day as UTF-8 CSV bytes (gunzipped), checked against the channel's SHA1.

        A day without a bill is ``ChannelRejected(NO_STATEMENT_EXIST)``.
        """
        body = self._call(self._client.trade_bill, bill_date=bill_date.isoformat(), bill_type="ALL", tar_type="GZIP")
        url, hash_value = self._text(body, "download_url"), self._text(body, "hash_value")
        if body.get("hash_type") != "SHA1":
            raise ChannelUnavailable(f"unknown bill hash {body.get('hash_type')!r}", code="response_invalid", raw=body)
        gateway = self._client._core._gate_way
        if not url.startswith(gateway + "/"):
            raise ChannelUnavailable(f"bill download_url {url!r} is not under {gateway}", code="response_invalid")
        status, content = self._raw_call(self._client.download_bill, url=url)
        if not 200 <= status < 300:
            self._raise_for(status, content)
        data = content if isinstance(content, bytes) else content.encode()
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ChannelUnavailable("bill file is not gzip", code="bill_corrupt") from exc
        if hashlib.sha1(data).hexdigest().lower() != hash_value.lower():
            raise ChannelUnavailable("bill file does not match its SHA1", code="bill_corrupt")
        return data

    # ----------------------------------------------------------------- helpers

    def _raw_call(self, method: Callable[..., tuple[int, Any]], **kwargs: Any) -> tuple[int, Any]:
        try:
            return method(**kwargs)
        except requests.Timeout as exc:
            raise ChannelUnavailable(f"no answer within {self.timeout_seconds}s", code="timeout") from exc
        except requests.RequestException as exc:
            raise ChannelUnavailable(f"cannot reach WeChat Pay: {exc}", code="connection_error") from exc
        except Exception as exc:  # the SDK raises bare Exception when a 2xx answer does not verify
            raise ChannelUnavailable(f"answer does not verify: {exc}", code="response_signature_invalid") from exc

    def _call(self, method: Callable[..., tuple[int, Any]], **kwargs: Any) -> dict[str, Any]:
        status, text = self._raw_call(method, **kwargs)
        if not 200 <= status < 300:
            self._raise_for(status, text)
        if status == 204:
            return {}
        try:
            body = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ChannelUnavailable("answer is not JSON", code="response_invalid", raw=text) from exc
        if not isinstance(body, dict):
            raise ChannelUnavailable("answer is not a JSON object", code="response_invalid", raw=body)
        return body

    def _raise_for(self, status: int, text: Any) -> None:
        try:
            body = json.loads(text)
        except (TypeError, ValueError):
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        if status >= 500 or code is None:
            raise ChannelUnavailable(f"WeChat Pay answered {status}: {message or text!r}", code=code, raw=body)
        raise ChannelRejected(f"WeChat Pay refused ({status} {code}): {message}", code=code, raw=body)

    @staticmethod
    def _check_amount(amount_minor: int, currency: str) -> None:
        if currency != "CNY":
            raise ValueError(f"wechatpay takes CNY only, not {currency!r}")
        if type(amount_minor) is not int or amount_minor <= 0:
            raise ValueError(f"amount must be a positive int of fen, got {amount_minor!r}")

    @staticmethod
    def _text(body: Mapping[str, Any], key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise ChannelUnavailable(f"answer lacks {key}", code="response_invalid", raw=body)
        return value

    @staticmethod
    def _optional_fen(value: Any, body: Any) -> int | None:
        if value is None:
            return None
        if type(value) is not int:
            raise ChannelUnavailable(f"amount {value!r} is not an integer of fen", code="response_invalid", raw=body)
        return value

    @staticmethod
    def _time(value: Any, body: Any) -> dt.datetime | None:
        if value is None:
            return None
        try:
            moment = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise ChannelUnavailable(f"time {value!r} is not RFC 3339", code="response_invalid", raw=body) from exc
        if moment.tzinfo is None:
            raise ChannelUnavailable(f"time {value!r} has no offset", code="response_invalid", raw=body)
        return moment.astimezone(dt.UTC)

    @staticmethod
    def _notify_fen(value: Any) -> int:
        if type(value) is not int or value < 0:
            raise NotifyInvalid(f"notify amount {value!r} is not an integer of fen", code="notify_content_invalid")
        return value

    @staticmethod
    def _notify_time(value: Any) -> dt.datetime | None:
        if value is None:
            return None
        try:
            moment = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise NotifyInvalid(f"notify time {value!r} is not RFC 3339", code="notify_content_invalid") from exc
        if moment.tzinfo is None:
            raise NotifyInvalid(f"notify time {value!r} has no offset", code="notify_content_invalid")
        return moment.astimezone(dt.UTC)

    def _refund_status(self, body: dict[str, Any], out_trade_no: str, out_refund_no: str) -> RefundStatus:
        if body.get("out_refund_no") != out_refund_no:
            raise ChannelUnavailable("the refund answer is about another refund", code="response_mismatch", raw=body)
        if body.get("out_trade_no") != out_trade_no:
            raise ChannelRejected(
                f"refund {out_refund_no} belongs to trade {body.get('out_trade_no')!r}, not {out_trade_no!r}",
                code="refund_belongs_to_another_trade",
                raw=body,
            )
        status = body.get("status")
        state = _REFUND_STATES.get(status) if isinstance(status, str) else None
        if state is None:
            raise ChannelUnavailable(f"unknown refund status {status!r}", code="response_invalid", raw=body)
        amount = body.get("amount") if isinstance(body.get("amount"), dict) else {}
        return RefundStatus(
            out_refund_no=out_refund_no,
            state=state,
            refund_minor=self._optional_fen(amount.get("refund"), body),
            channel_refund_no=body.get("refund_id"),
            refunded_at=self._time(body.get("success_time"), body),
            raw=body,
        )
