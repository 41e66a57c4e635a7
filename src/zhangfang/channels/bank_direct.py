"""Banks connected directly (直连): one adapter, one wire profile per bank.

A bank's merchant gateway (网关支付) and its enterprise link (银企直连) are each
bank's own design: its own message encoding, where the signature goes, field
names, how amounts are written, state codes, error codes, bill layout and what
a notify must be answered with. This module holds those facts as data — a
``BankProfile`` — plus one ``Wire`` per message style, and one adapter,
``BankDirectAdapter``, that speaks any profile. ``ICBC`` and ``CMB`` are the two
profiles of the demo; ``docs/channels/bank_direct.md`` is their specification,
which this module and ``zhangfang.sandbox.bank_direct`` (the simulator) both follow.

Guarantees
- Every request is signed with the platform's RSA key and every response and
  notify is verified with the bank's RSA public key, RSA-SHA256 PKCS#1 v1.5
  (``RSA2``) both ways. Nothing from an unverified message is returned: an
  unsigned or badly signed response is ``ChannelUnavailable``, such a notify is
  ``NotifyInvalid``. A response must also echo our request's message id and
  carry our merchant id, so a replayed or misrouted answer is not believed.
- Amounts are exact: the ICBC profile counts fen in a JSON integer, the CMB
  profile writes yuan with exactly two decimals (``"12.34"``); both go through
  integers and ``zhangfang.money``, never ``float``. Anything else on the wire
  (``12.5``, ``"12.3"``, ``true``) is refused, not rounded.
- ``create_payment``, ``refund`` and ``create_payout`` are idempotent at the
  bank on ``out_trade_no``/``out_refund_no``/``out_payout_no``: the same
  request again returns the first result; reusing a number with different
  content is refused with the bank's conflict code.
- Classification: timeout, refused connection, any status other than 200, an
  unsigned, undecodable or badly signed body, a wrong echo → ``ChannelUnavailable``
  (the outcome is unknown: query before retrying). A verified answer with a
  non-success return code → ``ChannelRejected`` whose ``code`` is the bank's
  own code as it appeared on the wire (``"30001"``, ``"RFD_AMT_EXCEED"``);
  ``BankProfile.error_name`` turns it back into our name for the rule.
- The browser's return to ``return_url`` carries only the order reference;
  results come from ``parse_notify`` or ``query_payment``.

Wire facts relied on (invented banks, modelled on how Chinese banks' 网关/银企直连
interfaces look; the full text is ``docs/channels/bank_direct.md``)
- ICBC-like (``FormJsonWire``): requests are ``application/x-www-form-urlencoded``
  POSTs to one path per API (``/api/pay/order/create/V1``…) with envelope fields
  ``msg_id, timestamp, format=json, charset=UTF-8, sign_type=RSA2, biz_content``
  (compact JSON) and ``sign``, computed over ``path?k=v&…`` (keys sorted, raw
  values, ``sign`` left out) — the way Alipay and ICBC's open platform sign.
  Responses are ``{"response_biz_content":{…},"sign_type":"RSA2","sign":"…"}``
  with the signature over the exact bytes of the ``response_biz_content``
  value, as Alipay's responses are (channels.md, "Response envelope"; we find
  the value's end with a JSON decoder, not a brace count, so braces inside
  strings are harmless). Notifies are form POSTs signed like requests without
  the path; the ack is itself a signed ``response_biz_content`` with
  ``return_code`` 0, as ICBC requires.
- CMB-like (``XmlHeaderWire``): every message is UTF-8 XML in a
  ``<CMBSDKPGK><INFO>…</INFO><FUNNAMX|Z>…</…></CMBSDKPGK>`` package posted to a
  single gateway path, the function named by ``INFO/FUNNAM``, as CMB's 银企直连
  packages are; the signature is the ``X-CMB-Signature`` header over the raw
  body bytes. Return code ``INFO/RETCOD`` (``"0"`` is success). A notify is
  acknowledged by the body ``SUCCESS``; anything else is retried.
- Notify retries: each bank retries on its own schedule (in the profile) until
  acknowledged, and keeps the notify id (``msg_id``/``NTFSEQ``) across retries,
  like Alipay's ``notify_id`` (channels.md, "Async notify"): the id is what to
  de-duplicate on.
- Bills: the ICBC profile returns a ``|``-separated UTF-8 file inline in the
  signed response (base64); the CMB profile returns a download URL and the file's
  SHA-256 (as WeChat Pay's tradebill gives ``hash_value`` — channels.md, "Trade
  bill"), and its file is GBK with ``#`` preamble and footer lines, like Alipay's
  (channels.md, "Bill (trade)"). ``download_bill`` checks the hash.

Beyond ``ChannelAdapter`` the adapter offers payouts (代付) to bank accounts:
``create_payout``, ``query_payout`` and ``parse_payout_notify``; and withholding
agreements (协议代扣): ``sign_agreement`` (the bank answers its agreement
number), ``cancel_agreement`` and ``withhold`` (a synchronous debit under an
agreement, a trade like any other: queried with ``query_payment``, listed in the
bill as a ``bank_card`` payment).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from zhangfang.channels.protocol import (
    ChannelError,
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
from zhangfang.ids import new_id
from zhangfang.money import AMOUNT_MINOR_MAX, format_minor, parse_amount

__all__ = [
    "CMB",
    "ICBC",
    "PROFILES",
    "AgreementState",
    "AgreementStatus",
    "BankDirectAdapter",
    "BankProfile",
    "BillLayout",
    "FormJsonWire",
    "PayoutNotify",
    "PayoutRequest",
    "PayoutState",
    "PayoutStatus",
    "SignRequest",
    "Wire",
    "WireError",
    "WireNotify",
    "WireRequest",
    "WireResponse",
    "WithholdRequest",
    "XmlHeaderWire",
    "load_private_key",
    "load_public_key",
    "sign_rsa2",
    "verify_rsa2",
]

SHANGHAI = ZoneInfo("Asia/Shanghai")

PayoutState = Literal["processing", "succeeded", "failed"]
AgreementState = Literal["active", "cancelled"]
NotifyType = Literal["payment", "refund", "payout"]


# --------------------------------------------------------------------------- signatures


def sign_rsa2(private_key: RSAPrivateKey, data: bytes) -> str:
    """Returns base64 of the RSA-SHA256 PKCS#1 v1.5 signature of ``data``."""
    return base64.b64encode(private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify_rsa2(public_key: RSAPublicKey, data: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is ``public_key``'s RSA-SHA256 PKCS#1 v1.5 signature of ``data``."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        public_key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def load_private_key(key: RSAPrivateKey | bytes | str) -> RSAPrivateKey:
    """Returns an RSA private key given as a key object or unencrypted PEM."""
    if isinstance(key, RSAPrivateKey):
        return key
    loaded = serialization.load_pem_private_key(key.encode() if isinstance(key, str) else key, password=None)
    if not isinstance(loaded, RSAPrivateKey):
        raise ValueError("the private key must be an RSA key")
    return loaded


def load_public_key(key: RSAPublicKey | bytes | str) -> RSAPublicKey:
    """Returns an RSA public key given as a key object or PEM."""
    if isinstance(key, RSAPublicKey):
        return key
    loaded = serialization.load_pem_public_key(key.encode() if isinstance(key, str) else key)
    if not isinstance(loaded, RSAPublicKey):
        raise ValueError("the public key must be an RSA key")
    return loaded


# --------------------------------------------------------------------------- wires


class WireError(Exception):
    """A message that does not decode (``reason="malformed"``) or does not verify (``"signature_invalid"``)."""

    def __init__(self, message: str, *, reason: Literal["malformed", "signature_invalid"]) -> None:
        super().__init__(message)
        self.reason = reason


WireValue = str | int


@dataclass(frozen=True)
class WireMessage:
    """Bytes ready to send: the path (requests only; appended to the bank's base URL), headers and body."""

    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class WireRequest:
    api: str
    message_id: str
    timestamp: str
    biz: dict[str, Any]


@dataclass(frozen=True)
class WireResponse:
    code: str
    message: str
    message_id: str
    biz: dict[str, Any]


@dataclass(frozen=True)
class WireNotify:
    notify_type: str
    notify_id: str
    timestamp: str
    biz: dict[str, Any]


class Wire(Protocol):
    """One message style: how a bank encodes, signs and verifies requests, responses, notifies and acks.

    The platform side uses ``encode_request``/``decode_response``/``decode_notify``/
    ``encode_ack``; the bank side (the simulator) the other four. ``biz`` maps the
    bank's wire field names to ``str`` or ``int`` values.
    """

    def encode_request(
        self, api: str, biz: Mapping[str, WireValue], *, message_id: str, timestamp: str, private_key: RSAPrivateKey
    ) -> WireMessage: ...

    def decode_request(
        self, path: str, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey
    ) -> WireRequest: ...

    def peek_request(self, path: str, body: bytes) -> tuple[str, str]:
        """The API and message id of a request that did not verify, best effort, to echo in the refusal."""
        ...

    def encode_response(
        self,
        api: str,
        biz: Mapping[str, WireValue],
        *,
        code: str,
        message: str,
        message_id: str,
        timestamp: str,
        private_key: RSAPrivateKey,
    ) -> WireMessage: ...

    def decode_response(self, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey) -> WireResponse: ...

    def encode_notify(
        self,
        notify_type: str,
        biz: Mapping[str, WireValue],
        *,
        notify_id: str,
        timestamp: str,
        private_key: RSAPrivateKey,
    ) -> WireMessage: ...

    def decode_notify(self, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey) -> WireNotify: ...

    def encode_ack(self, accepted: bool, *, private_key: RSAPrivateKey) -> NotifyAck: ...

    def is_ack(self, status_code: int, body: bytes, *, public_key: RSAPublicKey) -> bool: ...


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise WireError(f"duplicate JSON key {key!r}", reason="malformed")
        result[key] = value
    return result


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as error:
        raise WireError(f"not JSON: {error}", reason="malformed") from error
    if not isinstance(value, dict):
        raise WireError("JSON value is not an object", reason="malformed")
    return value


def _compact_json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"))


class FormJsonWire:
    """ICBC style: form requests and notifies with a ``sign`` field; JSON responses signed over their biz value."""

    request_content_type = "application/x-www-form-urlencoded; charset=UTF-8"
    _envelope_fields = frozenset({"msg_id", "timestamp", "format", "charset", "sign_type", "biz_content", "sign"})
    _notify_fields = _envelope_fields | {"api"}
    _response_prefix = '{"response_biz_content":'

    # -- signing strings

    @staticmethod
    def _sorted_pairs(fields: Mapping[str, str]) -> str:
        return "&".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "sign")

    def request_sign_string(self, path: str, fields: Mapping[str, str]) -> bytes:
        """``path?k1=v1&k2=v2…``: every field but ``sign``, keys sorted, values raw (not URL-encoded)."""
        return f"{path}?{self._sorted_pairs(fields)}".encode()

    def notify_sign_string(self, fields: Mapping[str, str]) -> bytes:
        """``k1=v1&k2=v2…`` as for requests, without the path."""
        return self._sorted_pairs(fields).encode()

    # -- form bodies

    @staticmethod
    def _parse_form(body: bytes, expected: frozenset[str]) -> dict[str, str]:
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, errors="strict")
        except (UnicodeDecodeError, ValueError) as error:
            raise WireError(f"not a form body: {error}", reason="malformed") from error
        fields: dict[str, str] = {}
        for key, value in pairs:
            if key in fields:
                raise WireError(f"field {key} appears twice", reason="malformed")
            fields[key] = value
        missing = expected - fields.keys()
        if missing:
            raise WireError(f"missing fields: {', '.join(sorted(missing))}", reason="malformed")
        if fields["sign_type"] != "RSA2" or fields["format"] != "json" or fields["charset"] != "UTF-8":
            raise WireError("sign_type must be RSA2, format json, charset UTF-8", reason="malformed")
        return fields

    def _signed_form(self, fields: dict[str, str], sign_string: bytes, private_key: RSAPrivateKey) -> bytes:
        fields["sign"] = sign_rsa2(private_key, sign_string)
        return urlencode(fields).encode("ascii")

    @staticmethod
    def _envelope(biz: Mapping[str, WireValue], message_id: str, timestamp: str) -> dict[str, str]:
        return {
            "msg_id": message_id,
            "timestamp": timestamp,
            "format": "json",
            "charset": "UTF-8",
            "sign_type": "RSA2",
            "biz_content": _compact_json(biz),
        }

    # -- signed JSON (responses and acks)

    def _signed_json(self, biz: Mapping[str, Any], private_key: RSAPrivateKey) -> bytes:
        value = _compact_json(biz)
        signature = sign_rsa2(private_key, value.encode())
        return f'{self._response_prefix}{value},"sign_type":"RSA2","sign":"{signature}"}}'.encode()

    def _verified_json(self, body: bytes, public_key: RSAPublicKey) -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise WireError("body is not UTF-8", reason="malformed") from error
        if not text.startswith(self._response_prefix):
            raise WireError("body does not start with response_biz_content", reason="malformed")
        try:
            _, end = json.JSONDecoder().raw_decode(text, len(self._response_prefix))
        except ValueError as error:
            raise WireError(f"response_biz_content is not JSON: {error}", reason="malformed") from error
        signed = text[len(self._response_prefix) : end]
        envelope = _json_object(text)
        if set(envelope) != {"response_biz_content", "sign_type", "sign"} or envelope["sign_type"] != "RSA2":
            raise WireError("envelope must hold response_biz_content, sign_type=RSA2 and sign", reason="malformed")
        if not isinstance(envelope["sign"], str) or not verify_rsa2(public_key, signed.encode(), envelope["sign"]):
            raise WireError("response signature does not verify", reason="signature_invalid")
        return _json_object(signed)

    # -- Wire

    def encode_request(
        self, api: str, biz: Mapping[str, WireValue], *, message_id: str, timestamp: str, private_key: RSAPrivateKey
    ) -> WireMessage:
        fields = self._envelope(biz, message_id, timestamp)
        body = self._signed_form(fields, self.request_sign_string(api, fields), private_key)
        return WireMessage(path=api, headers={"Content-Type": self.request_content_type}, body=body)

    def decode_request(
        self, path: str, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey
    ) -> WireRequest:
        fields = self._parse_form(body, self._envelope_fields)
        if not verify_rsa2(public_key, self.request_sign_string(path, fields), fields["sign"]):
            raise WireError("request signature does not verify", reason="signature_invalid")
        return WireRequest(
            api=path,
            message_id=fields["msg_id"],
            timestamp=fields["timestamp"],
            biz=_json_object(fields["biz_content"]),
        )

    def peek_request(self, path: str, body: bytes) -> tuple[str, str]:
        try:
            fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        except ValueError:
            fields = {}
        return path, fields.get("msg_id", "")

    def encode_response(
        self,
        api: str,
        biz: Mapping[str, WireValue],
        *,
        code: str,
        message: str,
        message_id: str,
        timestamp: str,
        private_key: RSAPrivateKey,
    ) -> WireMessage:
        content = {"return_code": int(code), "return_msg": message, "msg_id": message_id, **biz}
        body = self._signed_json(content, private_key)
        return WireMessage(path="", headers={"Content-Type": "application/json; charset=UTF-8"}, body=body)

    def decode_response(self, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey) -> WireResponse:
        biz = self._verified_json(body, public_key)
        code, message, message_id = biz.pop("return_code", None), biz.pop("return_msg", ""), biz.pop("msg_id", "")
        if type(code) is not int or not isinstance(message, str) or not isinstance(message_id, str):
            raise WireError("return_code must be an integer, return_msg and msg_id strings", reason="malformed")
        return WireResponse(code=str(code), message=message, message_id=message_id, biz=biz)

    def encode_notify(
        self,
        notify_type: str,
        biz: Mapping[str, WireValue],
        *,
        notify_id: str,
        timestamp: str,
        private_key: RSAPrivateKey,
    ) -> WireMessage:
        fields = {"api": notify_type, **self._envelope(biz, notify_id, timestamp)}
        body = self._signed_form(fields, self.notify_sign_string(fields), private_key)
        return WireMessage(path="", headers={"Content-Type": self.request_content_type}, body=body)

    def decode_notify(self, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey) -> WireNotify:
        fields = self._parse_form(body, self._notify_fields)
        if not verify_rsa2(public_key, self.notify_sign_string(fields), fields["sign"]):
            raise WireError("notify signature does not verify", reason="signature_invalid")
        return WireNotify(
            notify_type=fields["api"],
            notify_id=fields["msg_id"],
            timestamp=fields["timestamp"],
            biz=_json_object(fields["biz_content"]),
        )

    def encode_ack(self, accepted: bool, *, private_key: RSAPrivateKey) -> NotifyAck:
        content = {"return_code": 0, "return_msg": "success"} if accepted else {"return_code": 1, "return_msg": "fail"}
        return NotifyAck(
            status_code=200,
            body=self._signed_json(content, private_key),
            headers={"Content-Type": "application/json; charset=UTF-8"},
        )

    def is_ack(self, status_code: int, body: bytes, *, public_key: RSAPublicKey) -> bool:
        if status_code != 200:
            return False
        try:
            content = self._verified_json(body, public_key)
        except WireError:
            return False
        return type(content.get("return_code")) is int and content["return_code"] == 0


class XmlHeaderWire:
    """CMB style: ``CMBSDKPGK`` XML packages to one gateway path, signed over the raw body in ``X-CMB-Signature``."""

    content_type = "application/xml; charset=UTF-8"
    signature_header = "X-CMB-Signature"
    sign_type_header = "X-CMB-Sign-Type"
    ack_body = b"SUCCESS"
    _root = "CMBSDKPGK"
    _declaration = '<?xml version="1.0" encoding="UTF-8"?>'

    def __init__(self, gateway_path: str) -> None:
        self.gateway_path = gateway_path

    def _package(self, info: Mapping[str, str], body_tag: str, biz: Mapping[str, WireValue]) -> bytes:
        root = ET.Element(self._root)
        info_element = ET.SubElement(root, "INFO")
        for key, value in info.items():
            ET.SubElement(info_element, key).text = value
        body_element = ET.SubElement(root, body_tag)
        for key, value in biz.items():
            ET.SubElement(body_element, key).text = str(value)
        return (self._declaration + ET.tostring(root, encoding="unicode")).encode("utf-8")

    def _signed(self, body: bytes, private_key: RSAPrivateKey) -> WireMessage:
        headers = {
            "Content-Type": self.content_type,
            self.sign_type_header: "RSA2",
            self.signature_header: sign_rsa2(private_key, body),
        }
        return WireMessage(path=self.gateway_path, headers=headers, body=body)

    def _verified(
        self, headers: Mapping[str, str], body: bytes, public_key: RSAPublicKey, suffix: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Returns (INFO fields, body fields) of a package whose header signature verifies."""
        lowered = _lower_keys(headers)
        signature = lowered.get(self.signature_header.lower())
        if not signature:
            raise WireError(f"no {self.signature_header} header", reason="signature_invalid")
        if lowered.get(self.sign_type_header.lower(), "RSA2") != "RSA2":
            raise WireError("sign type must be RSA2", reason="malformed")
        if not verify_rsa2(public_key, body, signature):
            raise WireError("signature does not verify", reason="signature_invalid")
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise WireError("DTDs and entities are not allowed", reason="malformed")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as error:
            raise WireError(f"not XML: {error}", reason="malformed") from error
        if root.tag != self._root or len(root) != 2 or root[0].tag != "INFO":
            raise WireError(f"package must be <{self._root}> with <INFO> and one body element", reason="malformed")
        info = self._fields(root[0])
        funnam = info.get("FUNNAM", "")
        if root[1].tag != f"{funnam}{suffix}":
            raise WireError(f"body element must be <{funnam}{suffix}>", reason="malformed")
        return info, self._fields(root[1])

    @staticmethod
    def _fields(element: ET.Element) -> dict[str, str]:
        fields: dict[str, str] = {}
        for child in element:
            if len(child) or child.tag in fields:
                raise WireError(f"<{child.tag}> must be a single leaf element", reason="malformed")
            fields[child.tag] = child.text or ""
        return fields

    @staticmethod
    def _require(info: Mapping[str, str], *names: str) -> None:
        missing = [name for name in names if name not in info]
        if missing:
            raise WireError(f"INFO lacks {', '.join(missing)}", reason="malformed")

    def encode_request(
        self, api: str, biz: Mapping[str, WireValue], *, message_id: str, timestamp: str, private_key: RSAPrivateKey
    ) -> WireMessage:
        info = {"FUNNAM": api, "DATTYP": "2", "SEQNBR": message_id, "REQTIM": timestamp}
        return self._signed(self._package(info, f"{api}X", biz), private_key)

    def decode_request(
        self, path: str, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey
    ) -> WireRequest:
        if path != self.gateway_path:
            raise WireError(f"requests go to {self.gateway_path}", reason="malformed")
        info, biz = self._verified(headers, body, public_key, "X")
        self._require(info, "FUNNAM", "SEQNBR", "REQTIM")
        return WireRequest(api=info["FUNNAM"], message_id=info["SEQNBR"], timestamp=info["REQTIM"], biz=biz)

    def peek_request(self, path: str, body: bytes) -> tuple[str, str]:
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            return "ERROR", ""
        try:
            info = ET.fromstring(body).find("INFO")
        except ET.ParseError:
            return "ERROR", ""
        if info is None:
            return "ERROR", ""
        return info.findtext("FUNNAM") or "ERROR", info.findtext("SEQNBR") or ""

    def encode_response(
        self,
        api: str,
        biz: Mapping[str, WireValue],
        *,
        code: str,
        message: str,
        message_id: str,
        timestamp: str,
        private_key: RSAPrivateKey,
    ) -> WireMessage:
        info = {"FUNNAM": api, "SEQNBR": message_id, "RETCOD": code, "ERRMSG": message, "RSPTIM": timestamp}
        return self._signed(self._package(info, f"{api}Z", biz), private_key)

    def decode_response(self, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey) -> WireResponse:
        info, biz = self._verified(headers, body, public_key, "Z")
        self._require(info, "FUNNAM", "SEQNBR", "RETCOD")
        return WireResponse(code=info["RETCOD"], message=info.get("ERRMSG", ""), message_id=info["SEQNBR"], biz=biz)

    def encode_notify(
        self,
        notify_type: str,
        biz: Mapping[str, WireValue],
        *,
        notify_id: str,
        timestamp: str,
        private_key: RSAPrivateKey,
    ) -> WireMessage:
        info = {"FUNNAM": notify_type, "NTFSEQ": notify_id, "NTFTIM": timestamp}
        message = self._signed(self._package(info, f"{notify_type}Z", biz), private_key)
        return WireMessage(path="", headers=message.headers, body=message.body)

    def decode_notify(self, headers: Mapping[str, str], body: bytes, *, public_key: RSAPublicKey) -> WireNotify:
        info, biz = self._verified(headers, body, public_key, "Z")
        self._require(info, "FUNNAM", "NTFSEQ", "NTFTIM")
        return WireNotify(notify_type=info["FUNNAM"], notify_id=info["NTFSEQ"], timestamp=info["NTFTIM"], biz=biz)

    def encode_ack(self, accepted: bool, *, private_key: RSAPrivateKey) -> NotifyAck:
        return NotifyAck(
            status_code=200,
            body=self.ack_body if accepted else b"FAIL",
            headers={"Content-Type": "text/plain; charset=UTF-8"},
        )

    def is_ack(self, status_code: int, body: bytes, *, public_key: RSAPublicKey) -> bool:
        return status_code == 200 and body.strip() == self.ack_body


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class BillLayout:
    """How a bank writes its daily trade bill (对账单); the simulator renders it, reconciliation reads it.

    ``columns`` pairs each header title with what it holds: ``merchant_id``,
    ``bill_date``, ``occurred_at`` (date and time), ``occurred_date``,
    ``occurred_time``, ``kind``, ``out_trade_no``, ``bank_trade_no``,
    ``out_refund_no``, ``bank_refund_no``, ``currency``, ``amount``, ``fee``,
    ``method``, ``subject``. Preamble and footer lines are ``str.format``
    templates (see ``docs/channels/bank_direct.md`` for their fields).
    """

    encoding: str
    delimiter: str
    line_terminator: str
    preamble: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    footer: tuple[str, ...]
    kind_labels: Mapping[str, str]
    currency_labels: Mapping[str, str]
    method_labels: Mapping[str, str]
    refunds_negative: bool
    occurred_at_format: str = "%Y-%m-%d %H:%M:%S"
    occurred_date_format: str = "%Y%m%d"
    occurred_time_format: str = "%H%M%S"


@dataclass(frozen=True)
class BankProfile:
    """Everything that differs between two directly connected banks, as data plus a ``Wire``.

    Logical names (keys of ``fields``, ``apis``, ``notify_types``,
    ``error_codes``) are ours and the same for every bank; the values are what
    the bank calls them on the wire.
    """

    code: str
    name: str
    wire: Wire
    apis: Mapping[str, str]  # create, query, close, refund, refund_query, bill, payout, payout_query, sign, unsign,
    # withhold
    notify_types: Mapping[NotifyType, str]
    fields: Mapping[str, str]
    amount_unit: Literal["fen", "yuan"]
    currency_codes: Mapping[str, str]  # ISO 4217 → the bank's currency code
    method_codes: Mapping[str, str]  # our method → the bank's pay type
    trade_states: Mapping[PaymentState, str]
    refund_states: Mapping[RefundState, str]
    payout_states: Mapping[PayoutState, str]
    agreement_states: Mapping[AgreementState, str]
    error_codes: Mapping[str, str]  # our rule name → the bank's return code; "ok" is success
    time_format: str  # wire timestamps, Asia/Shanghai
    date_format: str
    notify_retry_intervals_seconds: tuple[int, ...]  # waits between deliveries of one notify
    return_fields: tuple[str, ...]  # logical fields the browser's return to return_url carries
    bill: BillLayout
    bill_delivery: Literal["inline_base64", "download_url"]

    def wire_name(self, logical: str) -> str:
        return self.fields[logical]

    def to_wire(self, values: Mapping[str, WireValue | None]) -> dict[str, WireValue]:
        """Returns the logical ``values`` under the bank's field names, leaving out ``None``."""
        return {self.fields[key]: value for key, value in values.items() if value is not None}

    def amount_to_wire(self, amount_minor: int) -> WireValue:
        """Fen as an ``int``, or yuan as a string with exactly two decimals."""
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
            raise TypeError("amount_minor must be an int")
        return amount_minor if self.amount_unit == "fen" else format_minor(amount_minor, "CNY")

    def amount_from_wire(self, value: object) -> int:
        """The exact amount in fen; ``ValueError`` for anything but the bank's own representation."""
        if self.amount_unit == "fen":
            if type(value) is int and abs(value) <= AMOUNT_MINOR_MAX:
                return value
            if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
                return int(value)
            raise ValueError(f"amount must be an integer of fen, got {value!r}")
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,16}\.[0-9]{2}", value):
            return parse_amount(value, "CNY")
        raise ValueError(f"amount must be yuan with two decimals, got {value!r}")

    def time_to_wire(self, moment: dt.datetime) -> str:
        if moment.tzinfo is None:
            raise ValueError("times must be timezone-aware")
        return moment.astimezone(SHANGHAI).strftime(self.time_format)

    def time_from_wire(self, value: object) -> dt.datetime:
        if not isinstance(value, str):
            raise ValueError(f"time must be a string, got {value!r}")
        return dt.datetime.strptime(value, self.time_format).replace(tzinfo=SHANGHAI).astimezone(dt.UTC)

    def date_to_wire(self, day: dt.date) -> str:
        return day.strftime(self.date_format)

    def date_from_wire(self, value: object) -> dt.date:
        if not isinstance(value, str):
            raise ValueError(f"date must be a string, got {value!r}")
        return dt.datetime.strptime(value, self.date_format).date()

    def currency_from_wire(self, value: object) -> str:
        for iso, code in self.currency_codes.items():
            if value == code:
                return iso
        raise ValueError(f"unknown currency code {value!r}")

    def error_name(self, code: str | None) -> str | None:
        """Our name for the rule behind a bank return code (``"30001"`` → ``"refund_exceeds_paid"``)."""
        for name, wire_code in self.error_codes.items():
            if wire_code == code:
                return name
        return None


def _state_from_wire(table: Mapping[str, str], value: object) -> str:
    for state, code in table.items():
        if value == code:
            return state
    raise ValueError(f"unknown state code {value!r}")


ICBC = BankProfile(
    code="icbc",
    name="ICBC-like bank (工银 style)",
    wire=FormJsonWire(),
    apis={
        "create": "/api/pay/order/create/V1",
        "query": "/api/pay/order/query/V1",
        "close": "/api/pay/order/close/V1",
        "refund": "/api/pay/refund/apply/V1",
        "refund_query": "/api/pay/refund/query/V1",
        "bill": "/api/pay/bill/download/V1",
        "payout": "/api/payout/apply/V1",
        "payout_query": "/api/payout/query/V1",
        "sign": "/api/agreement/sign/V1",
        "unsign": "/api/agreement/unsign/V1",
        "withhold": "/api/pay/withhold/V1",
    },
    notify_types={"payment": "/notify/pay/V1", "refund": "/notify/refund/V1", "payout": "/notify/payout/V1"},
    fields={
        "merchant_id": "mer_id",
        "out_trade_no": "out_trade_no",
        "bank_trade_no": "order_id",
        "amount": "order_amt",
        "currency": "cur_type",
        "subject": "goods_name",
        "method": "pay_mode",
        "notify_url": "notify_url",
        "return_url": "return_url",
        "expires_at": "expire_time",
        "pay_url": "pay_url",
        "trade_state": "pay_status",
        "paid_at": "pay_time",
        "refunded_total": "refund_amt_total",
        "out_refund_no": "out_refund_no",
        "bank_refund_no": "refund_id",
        "refund_amount": "refund_amt",
        "refund_state": "refund_status",
        "refunded_at": "refund_time",
        "reason": "refund_reason",
        "bill_date": "bill_date",
        "bill_file": "bill_file",
        "out_payout_no": "serial_no",
        "bank_payout_no": "trans_id",
        "payout_amount": "trans_amt",
        "payee_account": "payee_acct_no",
        "payee_name": "payee_acct_name",
        "payee_bank": "payee_bank_code",
        "remark": "remark",
        "payout_state": "trans_status",
        "finished_at": "finish_time",
        "failure_code": "fail_code",
        "failure_message": "fail_msg",
        "out_sign_no": "sign_serial_no",
        "agreement_no": "agreement_no",
        "account_number": "payer_acct_no",
        "account_name": "payer_acct_name",
        "phone": "mobile",
        "agreement_state": "agreement_status",
    },
    amount_unit="fen",
    currency_codes={"CNY": "001"},
    method_codes={"page": "01", "bank_card": "02"},
    trade_states={"pending": "0", "succeeded": "1", "failed": "2", "closed": "3"},
    refund_states={"processing": "0", "succeeded": "1", "failed": "2"},
    payout_states={"processing": "0", "succeeded": "1", "failed": "2"},
    agreement_states={"active": "1", "cancelled": "2"},
    error_codes={
        "ok": "0",
        "param_invalid": "10001",
        "signature_invalid": "10002",
        "merchant_unknown": "10003",
        "trade_not_found": "20001",
        "trade_already_paid": "20002",
        "trade_closed": "20003",
        "out_trade_no_reused": "20004",
        "refund_exceeds_paid": "30001",
        "trade_not_paid": "30002",
        "out_refund_no_reused": "30003",
        "refund_not_found": "30004",
        "account_closed": "40001",
        "out_payout_no_reused": "40002",
        "payout_not_found": "40003",
        "insufficient_funds": "50001",
        "agreement_invalid": "50002",
        "out_sign_no_reused": "50003",
    },
    time_format="%Y-%m-%d %H:%M:%S",
    date_format="%Y-%m-%d",
    notify_retry_intervals_seconds=(15, 60, 300, 900, 3600, 7200, 21600),
    return_fields=("out_trade_no",),
    bill=BillLayout(
        encoding="utf-8",
        delimiter="|",
        line_terminator="\n",
        preamble=(),
        columns=(
            ("mer_id", "merchant_id"),
            ("bill_date", "bill_date"),
            ("trade_time", "occurred_at"),
            ("trade_type", "kind"),
            ("order_id", "bank_trade_no"),
            ("out_trade_no", "out_trade_no"),
            ("refund_id", "bank_refund_no"),
            ("out_refund_no", "out_refund_no"),
            ("cur_type", "currency"),
            ("trade_amt", "amount"),
            ("fee_amt", "fee"),
            ("pay_mode", "method"),
            ("goods_name", "subject"),
        ),
        footer=("TOTAL|{row_count}|{payment_count}|{payment_total}|{refund_count}|{refund_total}|{fee_total}",),
        kind_labels={"payment": "PAY", "refund": "REFUND"},
        currency_labels={"CNY": "001"},
        method_labels={"page": "01", "bank_card": "02"},
        refunds_negative=False,
    ),
    bill_delivery="inline_base64",
)

CMB = BankProfile(
    code="cmb",
    name="CMB-like bank (招行 style)",
    wire=XmlHeaderWire(gateway_path="/cdcserver/api/v2"),
    apis={
        "create": "NTPAYCRT",
        "query": "NTPAYQRY",
        "close": "NTPAYCLS",
        "refund": "NTRFDAPL",
        "refund_query": "NTRFDQRY",
        "bill": "NTBILDWN",
        "payout": "NTAGPAPL",
        "payout_query": "NTAGPQRY",
        "sign": "NTAGRSGN",
        "unsign": "NTAGRCNL",
        "withhold": "NTWHDAPL",
    },
    notify_types={"payment": "NTPAYNTF", "refund": "NTRFDNTF", "payout": "NTAGPNTF"},
    fields={
        "merchant_id": "MCHNBR",
        "out_trade_no": "ORDNBR",
        "bank_trade_no": "TRXSEQ",
        "amount": "TRSAMT",
        "currency": "CCYNBR",
        "subject": "GODNAM",
        "method": "PAYTYP",
        "notify_url": "NTFURL",
        "return_url": "RTNURL",
        "expires_at": "EXPTIM",
        "pay_url": "PAYURL",
        "trade_state": "ORDSTS",
        "paid_at": "PAYTIM",
        "refunded_total": "RFDTOT",
        "out_refund_no": "RFDNBR",
        "bank_refund_no": "RFDSEQ",
        "refund_amount": "RFDAMT",
        "refund_state": "RFDSTS",
        "refunded_at": "RFDTIM",
        "reason": "RFDRSN",
        "bill_date": "BILDAT",
        "bill_url": "FILURL",
        "bill_sha256": "FILHSH",
        "out_payout_no": "YURREF",
        "bank_payout_no": "REQNBR",
        "payout_amount": "TRSAMT",
        "payee_account": "CRTACC",
        "payee_name": "CRTNAM",
        "payee_bank": "CRTBNK",
        "remark": "NUSAGE",
        "payout_state": "REQSTS",
        "finished_at": "FINTIM",
        "failure_code": "ERRCOD",
        "failure_message": "ERRTXT",
        "out_sign_no": "SGNNBR",
        "agreement_no": "AGRNBR",
        "account_number": "PAYACC",
        "account_name": "PAYNAM",
        "phone": "MOBTEL",
        "agreement_state": "AGRSTS",
    },
    amount_unit="yuan",
    currency_codes={"CNY": "10"},
    method_codes={"page": "WY", "bank_card": "KJ"},
    trade_states={"pending": "A", "succeeded": "S", "failed": "F", "closed": "C"},
    refund_states={"processing": "P", "succeeded": "S", "failed": "F"},
    payout_states={"processing": "OPR", "succeeded": "FIN", "failed": "FAL"},
    agreement_states={"active": "A", "cancelled": "C"},
    error_codes={
        "ok": "0",
        "param_invalid": "PARAM_ERR",
        "signature_invalid": "SIGN_ERR",
        "merchant_unknown": "MCH_ERR",
        "trade_not_found": "ORD_NOT_EXIST",
        "trade_already_paid": "ORD_PAID",
        "trade_closed": "ORD_CLOSED",
        "out_trade_no_reused": "ORD_REPEAT",
        "refund_exceeds_paid": "RFD_AMT_EXCEED",
        "trade_not_paid": "ORD_NOT_PAID",
        "out_refund_no_reused": "RFD_REPEAT",
        "refund_not_found": "RFD_NOT_EXIST",
        "account_closed": "ACC_CLOSED",
        "out_payout_no_reused": "AGP_REPEAT",
        "payout_not_found": "AGP_NOT_EXIST",
        "insufficient_funds": "BAL_NOT_ENOUGH",
        "agreement_invalid": "AGR_INVALID",
        "out_sign_no_reused": "AGR_REPEAT",
    },
    time_format="%Y%m%d%H%M%S",
    date_format="%Y%m%d",
    notify_retry_intervals_seconds=(30, 60, 300, 900, 1800, 3600, 7200, 14400),
    return_fields=("merchant_id", "out_trade_no"),
    bill=BillLayout(
        encoding="gbk",
        delimiter=",",
        line_terminator="\r\n",
        preamble=("#招商银行商户交易明细", "#商户号：[{merchant_id}]", "#账单日期：[{bill_date}]"),
        columns=(
            ("交易日期", "occurred_date"),
            ("交易时间", "occurred_time"),
            ("交易类型", "kind"),
            ("商户订单号", "out_trade_no"),
            ("银行流水号", "bank_trade_no"),
            ("商户退款单号", "out_refund_no"),
            ("银行退款流水号", "bank_refund_no"),
            ("币种", "currency"),
            ("交易金额（元）", "amount"),
            ("手续费（元）", "fee"),
            ("支付方式", "method"),
            ("商品名称", "subject"),
        ),
        footer=(
            "#合计：支付{payment_count}笔，共{payment_total}元；退款{refund_count}笔，共{refund_total}元；"
            "手续费{fee_total}元",
            "#导出时间：[{exported_at}]",
        ),
        kind_labels={"payment": "支付", "refund": "退款"},
        currency_labels={"CNY": "人民币"},
        method_labels={"page": "网银", "bank_card": "快捷"},
        refunds_negative=True,
    ),
    bill_delivery="download_url",
)

PROFILES: Mapping[str, BankProfile] = {ICBC.code: ICBC, CMB.code: CMB}


# --------------------------------------------------------------------------- payouts


@dataclass(frozen=True)
class PayoutRequest:
    """A payout (代付) from the platform's account at the bank to a bank account."""

    out_payout_no: str
    amount_minor: int
    currency: str
    payee_account: str
    payee_name: str
    payee_bank: str | None = None  # the payee's bank code; None for an account at this bank
    remark: str | None = None  # 用途, shown on the payee's statement
    notify_url: str | None = None


@dataclass(frozen=True)
class PayoutStatus:
    out_payout_no: str
    state: PayoutState
    amount_minor: int | None = None
    currency: str | None = None
    bank_payout_no: str | None = None
    finished_at: dt.datetime | None = None
    failure_code: str | None = None  # the bank's code, for a failed payout ("40001", "ACC_CLOSED")
    failure_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PayoutNotify:
    """A verified payout notify: its id (to de-duplicate on) and the payout's status."""

    notify_id: str
    status: PayoutStatus


# --------------------------------------------------------------------------- withholding agreements (协议代扣)


@dataclass(frozen=True)
class SignRequest:
    """Sign a withholding agreement for the payer's account; ``out_sign_no`` (our mandate's ref) makes it
    idempotent at the bank."""

    out_sign_no: str
    account_number: str = field(repr=False)
    account_name: str
    phone: str = field(repr=False)


@dataclass(frozen=True)
class AgreementStatus:
    out_sign_no: str | None
    agreement_no: str
    state: AgreementState
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WithholdRequest:
    """Debit the payer's account under an agreement; idempotent at the bank on ``out_trade_no``."""

    out_trade_no: str
    agreement_no: str
    amount_minor: int
    currency: str
    subject: str


# --------------------------------------------------------------------------- adapter


class _Reader:
    """Reads logical fields out of a verified wire message; anything missing or malformed is ``error``."""

    def __init__(self, profile: BankProfile, biz: Mapping[str, Any], error: Callable[[str], ChannelError]) -> None:
        self._profile = profile
        self._biz = biz
        self._error = error

    def _value(self, name: str, required: bool) -> Any:
        wire = self._profile.fields[name]
        value = self._biz.get(wire)
        if value in (None, "") and required:
            raise self._error(f"{wire} is missing")
        return None if value == "" else value

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self._value(name, required)
        if value is not None and not isinstance(value, str):
            raise self._error(f"{self._profile.fields[name]} must be a string")
        return value

    def _convert(self, name: str, convert: Callable[[Any], Any], required: bool) -> Any:
        value = self._value(name, required)
        if value is None:
            return None
        try:
            return convert(value)
        except (ValueError, TypeError, ArithmeticError) as error:
            raise self._error(f"{self._profile.fields[name]}: {error}") from error

    def amount(self, name: str, *, required: bool = True) -> int | None:
        amount = self._convert(name, self._profile.amount_from_wire, required)
        if amount is not None and amount < 0:
            raise self._error(f"{self._profile.fields[name]} must not be negative")
        return amount

    def time(self, name: str, *, required: bool = False) -> dt.datetime | None:
        return self._convert(name, self._profile.time_from_wire, required)

    def currency(self, name: str = "currency") -> str:
        return self._convert(name, self._profile.currency_from_wire, True)

    def state(self, name: str, table: Mapping[str, str]) -> str:
        return self._convert(name, lambda value: _state_from_wire(table, value), True)


class BankDirectAdapter:
    """A directly connected bank (``bank_direct:<bank>``), speaking that bank's ``BankProfile``.

    Keys: the platform's RSA private key signs requests and notify acks; the
    bank's RSA public key verifies responses and notifies. ``timeout_seconds``
    bounds every HTTP call (connect, read and write each).
    """

    connection: ConnectionKind = "direct"
    methods: frozenset[str] = frozenset({"bank_card", "page"})
    currencies: frozenset[str] = frozenset({"CNY"})

    def __init__(
        self,
        *,
        profile: BankProfile,
        base_url: str,
        merchant_id: str,
        platform_private_key: RSAPrivateKey | bytes | str,
        bank_public_key: RSAPublicKey | bytes | str,
        timeout_seconds: float = 10.0,
        clock: Callable[[], dt.datetime] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.profile = profile
        self.code = f"bank_direct:{profile.code}"
        self.merchant_id = merchant_id
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._private_key = load_private_key(platform_private_key)
        self._bank_public_key = load_public_key(bank_public_key)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._http = http_client or httpx.Client(timeout=timeout_seconds)

    def close(self) -> None:
        """Closes the HTTP connection pool."""
        self._http.close()

    # -- ChannelAdapter

    def create_payment(self, request: CreatePayment) -> PaymentAction:
        """Opens the trade at the bank; the payer is redirected to the bank's cashier ``pay_url``."""
        self._check_money(request.amount_minor, request.currency)
        if request.method not in self.methods:
            raise ValueError(f"method {request.method!r} is not one of {sorted(self.methods)}")
        p = self.profile
        biz = self._call(
            "create",
            {
                "out_trade_no": request.out_trade_no,
                "amount": p.amount_to_wire(request.amount_minor),
                "currency": p.currency_codes[request.currency],
                "subject": request.subject,
                "method": p.method_codes[request.method],
                "notify_url": request.notify_url,
                "return_url": request.return_url,
                "expires_at": p.time_to_wire(request.expires_at) if request.expires_at else None,
            },
        )
        read = self._response_reader(biz)
        self._check_echo(read, "out_trade_no", request.out_trade_no)
        return PaymentAction(
            kind="redirect", url=read.text("pay_url"), channel_trade_no=read.text("bank_trade_no", required=False)
        )

    def query_payment(self, out_trade_no: str) -> PaymentStatus:
        biz = self._call("query", {"out_trade_no": out_trade_no})
        read = self._response_reader(biz)
        self._check_echo(read, "out_trade_no", out_trade_no)
        return PaymentStatus(
            out_trade_no=out_trade_no,
            state=read.state("trade_state", self.profile.trade_states),  # type: ignore[arg-type]
            amount_minor=read.amount("amount"),
            currency=read.currency(),
            channel_trade_no=read.text("bank_trade_no", required=False),
            paid_at=read.time("paid_at"),
            raw=biz,
        )

    def close_payment(self, out_trade_no: str) -> None:
        biz = self._call("close", {"out_trade_no": out_trade_no})
        self._check_echo(self._response_reader(biz), "out_trade_no", out_trade_no)

    def refund(self, request: RefundRequest) -> RefundStatus:
        self._check_money(request.refund_minor, request.currency)
        self._check_money(request.total_minor, request.currency)
        p = self.profile
        biz = self._call(
            "refund",
            {
                "out_trade_no": request.out_trade_no,
                "out_refund_no": request.out_refund_no,
                "refund_amount": p.amount_to_wire(request.refund_minor),
                "amount": p.amount_to_wire(request.total_minor),
                "currency": p.currency_codes[request.currency],
                "reason": request.reason,
                "notify_url": request.notify_url,
            },
        )
        return self._refund_status(biz, request.out_trade_no, request.out_refund_no)

    def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        biz = self._call("refund_query", {"out_trade_no": out_trade_no, "out_refund_no": out_refund_no})
        return self._refund_status(biz, out_trade_no, out_refund_no)

    def parse_notify(self, headers: Mapping[str, str], body: bytes) -> Notify:
        """Verifies a payment or refund notify (signature, merchant id, fields) and returns it in our terms."""
        notify_type, notify_id, read, biz = self._verified_notify(headers, body)
        if notify_type == "payout":
            raise NotifyInvalid("a payout notify: parse it with parse_payout_notify", raw=biz)
        if notify_type == "payment":
            return Notify(
                kind="payment",
                notify_id=notify_id,
                out_trade_no=read.text("out_trade_no"),  # type: ignore[arg-type]
                state=read.state("trade_state", self.profile.trade_states),
                amount_minor=read.amount("amount"),  # type: ignore[arg-type]
                currency=read.currency(),
                channel_trade_no=read.text("bank_trade_no", required=False),
                occurred_at=read.time("paid_at"),
                raw=biz,
            )
        return Notify(
            kind="refund",
            notify_id=notify_id,
            out_trade_no=read.text("out_trade_no"),  # type: ignore[arg-type]
            state=read.state("refund_state", self.profile.refund_states),
            amount_minor=read.amount("refund_amount"),  # type: ignore[arg-type]
            currency=read.currency(),
            channel_trade_no=read.text("bank_trade_no", required=False),
            out_refund_no=read.text("out_refund_no"),
            occurred_at=read.time("refunded_at"),
            raw=biz,
        )

    def ack_notify(self, accepted: bool) -> NotifyAck:
        """ICBC profile: a signed JSON with ``return_code`` 0 (1 to refuse); CMB profile: the text ``SUCCESS``."""
        return self.profile.wire.encode_ack(accepted, private_key=self._private_key)

    def download_bill(self, bill_date: dt.date) -> bytes:
        """The bank's trade bill for ``bill_date`` (Asia/Shanghai), bytes exactly as the bank serves them."""
        p = self.profile
        biz = self._call("bill", {"bill_date": p.date_to_wire(bill_date)})
        read = self._response_reader(biz)
        if p.bill_delivery == "inline_base64":
            content = read.text("bill_file")
            try:
                return base64.b64decode(content.encode("ascii"), validate=True)  # type: ignore[union-attr]
            except (binascii.Error, UnicodeEncodeError) as error:
                raise ChannelUnavailable("the bill is not valid base64", raw=biz) from error
        url, digest = read.text("bill_url"), read.text("bill_sha256")
        response = self._send("GET", url, headers={}, content=None)  # type: ignore[arg-type]
        if response.status_code != 200:
            raise ChannelUnavailable(f"bill download answered HTTP {response.status_code}", raw=response.text[:200])
        if hashlib.sha256(response.content).hexdigest() != (digest or "").lower():
            raise ChannelUnavailable("the downloaded bill does not match the signed SHA-256", raw=biz)
        return response.content

    # -- payouts (代付)

    def create_payout(self, request: PayoutRequest) -> PayoutStatus:
        """Asks the bank to pay ``amount_minor`` to a bank account; idempotent on ``out_payout_no``.

        A payout is usually ``processing`` when accepted; its result arrives by
        notify (``parse_payout_notify``) or ``query_payout``. A refused payout
        (bad account, conflicting reuse of the number) raises ``ChannelRejected``;
        a payout the bank accepted and later could not complete is ``failed``
        with the bank's ``failure_code``.
        """
        self._check_money(request.amount_minor, request.currency)
        p = self.profile
        biz = self._call(
            "payout",
            {
                "out_payout_no": request.out_payout_no,
                "payout_amount": p.amount_to_wire(request.amount_minor),
                "currency": p.currency_codes[request.currency],
                "payee_account": request.payee_account,
                "payee_name": request.payee_name,
                "payee_bank": request.payee_bank,
                "remark": request.remark,
                "notify_url": request.notify_url,
            },
        )
        return self._payout_status(self._response_reader(biz), biz, request.out_payout_no)

    def query_payout(self, out_payout_no: str) -> PayoutStatus:
        biz = self._call("payout_query", {"out_payout_no": out_payout_no})
        return self._payout_status(self._response_reader(biz), biz, out_payout_no)

    def parse_payout_notify(self, headers: Mapping[str, str], body: bytes) -> PayoutNotify:
        """Verifies a payout notify; ``NotifyInvalid`` for anything else, including payment and refund notifies."""
        notify_type, notify_id, read, biz = self._verified_notify(headers, body)
        if notify_type != "payout":
            raise NotifyInvalid(f"a {notify_type} notify: parse it with parse_notify", raw=biz)
        out_payout_no = read.text("out_payout_no")
        return PayoutNotify(notify_id=notify_id, status=self._payout_status(read, biz, out_payout_no))  # type: ignore[arg-type]

    # -- withholding agreements (协议代扣)

    def sign_agreement(self, request: SignRequest) -> AgreementStatus:
        """Signs a withholding agreement for the payer's account; the bank answers its agreement number.

        Idempotent on ``out_sign_no``: the same request again returns the same
        agreement; other content under the number is refused (``out_sign_no_reused``).
        A closed account is refused (``account_closed``).
        """
        biz = self._call(
            "sign",
            {
                "out_sign_no": request.out_sign_no,
                "account_number": request.account_number,
                "account_name": request.account_name,
                "phone": request.phone,
            },
        )
        read = self._response_reader(biz)
        self._check_echo(read, "out_sign_no", request.out_sign_no)
        return self._agreement_status(read, biz)

    def cancel_agreement(self, agreement_no: str) -> AgreementStatus:
        """Cancels (解约) an agreement; cancelling a cancelled one answers it unchanged."""
        biz = self._call("unsign", {"agreement_no": agreement_no})
        read = self._response_reader(biz)
        self._check_echo(read, "agreement_no", agreement_no)
        return self._agreement_status(read, biz)

    def withhold(self, request: WithholdRequest) -> PaymentStatus:
        """Debits the payer under an agreement (代扣), synchronously; idempotent on ``out_trade_no``.

        A debit the bank made is ``succeeded`` (the same ``out_trade_no`` again
        answers that trade, never a second debit). A refusal is
        ``ChannelRejected`` with the bank's code: ``insufficient_funds``,
        ``account_closed``, ``agreement_invalid`` (cancelled or unknown) and
        the usual parameter codes. No answer is ``ChannelUnavailable``: the
        debit may have been made; send the same ``out_trade_no`` again to learn.
        """
        self._check_money(request.amount_minor, request.currency)
        p = self.profile
        biz = self._call(
            "withhold",
            {
                "out_trade_no": request.out_trade_no,
                "agreement_no": request.agreement_no,
                "amount": p.amount_to_wire(request.amount_minor),
                "currency": p.currency_codes[request.currency],
                "subject": request.subject,
            },
        )
        read = self._response_reader(biz)
        self._check_echo(read, "out_trade_no", request.out_trade_no)
        return PaymentStatus(
            out_trade_no=request.out_trade_no,
            state=read.state("trade_state", p.trade_states),  # type: ignore[arg-type]
            amount_minor=read.amount("amount"),
            currency=read.currency(),
            channel_trade_no=read.text("bank_trade_no", required=False),
            paid_at=read.time("paid_at"),
            raw=biz,
        )

    def _agreement_status(self, read: _Reader, biz: Mapping[str, Any]) -> AgreementStatus:
        return AgreementStatus(
            out_sign_no=read.text("out_sign_no", required=False),
            agreement_no=read.text("agreement_no"),  # type: ignore[arg-type]
            state=read.state("agreement_state", self.profile.agreement_states),  # type: ignore[arg-type]
            raw=biz,
        )

    # -- internals

    def _check_money(self, amount_minor: int, currency: str) -> None:
        if currency not in self.currencies:
            raise ValueError(f"currency {currency!r} is not one of {sorted(self.currencies)}")
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
            raise ValueError(f"amount_minor must be a positive int, got {amount_minor!r}")

    def _send(self, method: str, url: str, *, headers: Mapping[str, str], content: bytes | None) -> httpx.Response:
        try:
            return self._http.request(method, url, headers=dict(headers), content=content, timeout=self.timeout_seconds)
        except httpx.TimeoutException as error:
            raise ChannelUnavailable(f"{self.code} did not answer within {self.timeout_seconds} s") from error
        except httpx.HTTPError as error:
            raise ChannelUnavailable(f"{self.code} could not be reached: {error}") from error

    def _call(self, operation: str, fields: Mapping[str, WireValue | None]) -> dict[str, Any]:
        """Sends one signed request; returns the verified response's fields, or raises as the module says."""
        p = self.profile
        message_id = new_id("msg")
        message = p.wire.encode_request(
            p.apis[operation],
            p.to_wire({"merchant_id": self.merchant_id, **fields}),
            message_id=message_id,
            timestamp=p.time_to_wire(self._clock()),
            private_key=self._private_key,
        )
        response = self._send("POST", self.base_url + message.path, headers=message.headers, content=message.body)
        if response.status_code != 200:
            raise ChannelUnavailable(f"{self.code} answered HTTP {response.status_code}", raw=response.text[:200])
        try:
            decoded = p.wire.decode_response(response.headers, response.content, public_key=self._bank_public_key)
        except WireError as error:
            raise ChannelUnavailable(f"{self.code} answered with an unusable body: {error}") from error
        if decoded.message_id != message_id:
            raise ChannelUnavailable(f"{self.code} answered another request ({decoded.message_id!r})")
        if decoded.code != p.error_codes["ok"]:
            name = p.error_name(decoded.code) or "unknown"
            raise ChannelRejected(
                f"{self.code} refused {operation}: {decoded.message} ({name})", code=decoded.code, raw=decoded.biz
            )
        return decoded.biz

    def _response_reader(self, biz: Mapping[str, Any]) -> _Reader:
        read = _Reader(self.profile, biz, lambda message: ChannelUnavailable(f"{self.code} answered: {message}"))
        self._check_echo(read, "merchant_id", self.merchant_id)
        return read

    def _check_echo(self, read: _Reader, name: str, expected: str) -> None:
        got = read.text(name)
        if got != expected:
            raise ChannelUnavailable(f"{self.code} answered for {name} {got!r}, not {expected!r}")

    def _refund_status(self, biz: Mapping[str, Any], out_trade_no: str, out_refund_no: str) -> RefundStatus:
        read = self._response_reader(biz)
        self._check_echo(read, "out_trade_no", out_trade_no)
        self._check_echo(read, "out_refund_no", out_refund_no)
        return RefundStatus(
            out_refund_no=out_refund_no,
            state=read.state("refund_state", self.profile.refund_states),  # type: ignore[arg-type]
            refund_minor=read.amount("refund_amount"),
            channel_refund_no=read.text("bank_refund_no", required=False),
            refunded_at=read.time("refunded_at"),
            raw=biz,
        )

    def _payout_status(self, read: _Reader, biz: Mapping[str, Any], out_payout_no: str) -> PayoutStatus:
        self._check_echo(read, "out_payout_no", out_payout_no)
        return PayoutStatus(
            out_payout_no=out_payout_no,
            state=read.state("payout_state", self.profile.payout_states),  # type: ignore[arg-type]
            amount_minor=read.amount("payout_amount"),
            currency=read.currency(),
            bank_payout_no=read.text("bank_payout_no", required=False),
            finished_at=read.time("finished_at"),
            failure_code=read.text("failure_code", required=False),
            failure_message=read.text("failure_message", required=False),
            raw=biz,
        )

    def _verified_notify(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[NotifyType, str, _Reader, dict[str, Any]]:
        p = self.profile
        try:
            decoded = p.wire.decode_notify(headers, body, public_key=self._bank_public_key)
        except WireError as error:
            raise NotifyInvalid(f"{self.code} notify does not verify: {error}") from error
        kinds = {wire: kind for kind, wire in p.notify_types.items()}
        if decoded.notify_type not in kinds:
            raise NotifyInvalid(f"unknown notify type {decoded.notify_type!r}", raw=decoded.biz)
        if not decoded.notify_id:
            raise NotifyInvalid("the notify has no id", raw=decoded.biz)
        read = _Reader(p, decoded.biz, lambda message: NotifyInvalid(f"{self.code} notify: {message}", raw=decoded.biz))
        merchant_id = read.text("merchant_id")
        if merchant_id != self.merchant_id:
            raise NotifyInvalid(
                f"the notify is for merchant {merchant_id!r}, not {self.merchant_id!r}", raw=decoded.biz
            )
        return kinds[decoded.notify_type], decoded.notify_id, read, decoded.biz
