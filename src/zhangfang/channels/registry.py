"""Channel configuration (a TOML file) and the registry of configured channel adapters.

Production names its channels in one TOML file (``ZHANGFANG_CHANNELS_FILE``);
``load_registry`` reads it into a ``ChannelRegistry``: one adapter per channel
plus the routes (which payer method, currency and amount range a channel
carries, and what it costs). Payments, routing, jobs and the API ask the
process-wide registry (``install``/``current``) for adapters and routes; they
never build adapters themselves. The sandbox (``zhangfang.sandbox.environment``)
writes the same format for its simulators.

File format (every field; ``docs/channels/configuration.md`` explains each)::

    [[channels]]
    code = "alipay"                 # unique; alipay | wechatpay | bank_direct:<profile> by convention
    kind = "alipay"                 # alipay | wechatpay | bank_direct
    enabled = true                  # default true
    # kind-specific credentials and endpoint; *_file paths are relative to the TOML file's directory
    app_id = "2021000000000001"
    app_private_key_file = "keys/alipay-app.pem"      # or app_private_key_pem = "-----BEGIN ..."
    alipay_public_key_file = "keys/alipay.pub.pem"    # or alipay_public_key_pem
    seller_id = "2088000000000001"  # optional
    gateway_url = "http://127.0.0.1:8101/gateway.do"  # default: Alipay's production gateway
    timeout_seconds = 10            # optional

      [[channels.routes]]
      method = "alipay"             # payer-facing method, [a-z_]{2,32}
      channel_method = "page"       # one of the adapter's ``methods``
      currency = "CNY"              # default CNY
      amount_min = 1                # fen, inclusive, default 1
      amount_max = 10000000000      # fen, inclusive, default: no upper limit
      cost_rate = "0.0038"          # Decimal text (a TOML float is refused)
      cost_fixed = 0                # fen per payment, default 0
      priority = 100                # lower is preferred when cost ties, default 100

    [[channels]]
    code = "wechatpay"
    kind = "wechatpay"
    mchid = "1900000109"
    appid = "wxd678efh567hg6787"
    private_key_file = "keys/wechatpay-merchant.pem"  # or private_key_pem
    cert_serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
    apiv3_key_file = "keys/wechatpay-apiv3.key"       # or apiv3_key = "<32 characters>"
    platform_public_key_file = "keys/wechatpay-platform.pub.pem"  # or platform_public_key_pem
    platform_public_key_id = "PUB_KEY_ID_0119000001092024060100000000000001"
    gateway_url = "https://api.mch.weixin.qq.com"     # default: WeChat Pay's production base URL
    timeout_seconds = 10            # optional

    [[channels]]
    code = "bank_direct:icbc"
    kind = "bank_direct"
    profile = "icbc"                # a key of zhangfang.channels.bank_direct.PROFILES
    base_url = "https://gateway.bank.example"
    merchant_id = "M100200300"
    platform_private_key_file = "keys/icbc-platform.pem"  # or platform_private_key_pem
    bank_public_key_file = "keys/icbc-bank.pub.pem"       # or bank_public_key_pem
    payouts = true                  # default true: this channel may carry payouts (代付)
    timeout_seconds = 10            # optional

Guarantees
- A registry is built whole or not at all. ``load_registry`` checks the whole
  file before it builds any adapter and raises one ``ChannelConfigInvalid``
  listing the problems, each with the file and the field
  (``channels[1] (wechatpay).apiv3_key``): every shape problem (types, missing
  or unknown fields), or, once the shape is right, every other one (duplicate
  codes, routes the adapter cannot carry, keys that are missing or unreadable).
- Money in configuration is exact: amounts are integer fen and ``cost_rate``
  is ``Decimal`` text; a TOML float (``cost_rate = 0.0038``) is refused, never
  rounded. ``Route.cost_minor`` rounds half up to the fen with ``Decimal``.
- Every route's ``channel_method`` is one its adapter offers and its
  ``currency`` one its adapter supports; ``1 <= amount_min <= amount_max``;
  ``0 <= cost_rate <= 0.1``. Codes are unique and URL-safe once slugged.
- Each key is given exactly once, as a file or inline PEM, and must parse as
  an RSA key of the expected half (private or public). Unknown fields are
  refused, so a misspelt field is an error, not a silently ignored default.
- ``routes``, ``methods`` and ``payout_channels`` see enabled channels only;
  ``adapter`` serves disabled channels too, so payments already made through a
  channel can still be queried, refunded and notified after it is switched off.
- ``slug`` and ``code_for_slug`` are inverse: codes never contain ``-``.
"""

from __future__ import annotations

import logging
import re
import stat
import threading
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zhangfang.channels.alipay import ALIPAY_GATEWAY_URL, AlipayAdapter
from zhangfang.channels.bank_direct import PROFILES, BankDirectAdapter
from zhangfang.channels.protocol import ChannelAdapter
from zhangfang.channels.wechatpay import GATEWAY as WECHATPAY_GATEWAY_URL
from zhangfang.channels.wechatpay import WechatPayAdapter
from zhangfang.config import Settings
from zhangfang.money import AMOUNT_MINOR_MAX

__all__ = [
    "COST_RATE_MAX",
    "KINDS",
    "ChannelConfigInvalid",
    "ChannelNotConfigured",
    "ChannelRegistry",
    "ChannelsNotConfigured",
    "Route",
    "current",
    "install",
    "installed",
    "load_registry",
]

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("alipay", "wechatpay", "bank_direct")
COST_RATE_MAX = Decimal("0.1")
CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,31}(?::[a-z0-9_]{1,32})?")
METHOD_PATTERN = re.compile(r"[a-z_]{2,32}")
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
_URL_PATTERN = r"^https?://[^\s/?#]+(?:/[^\s]*)?$"
_URL_HINT = "must be an http:// or https:// URL"
_PATTERN_HINTS = {
    "code": "must be 2-32 of [a-z0-9_] starting with a letter, optionally ':' and a suffix (bank_direct:icbc)",
    "method": "must be 2-32 of [a-z_]",
    "currency": "must be an ISO 4217 code of three uppercase letters",
    "gateway_url": _URL_HINT,
    "base_url": _URL_HINT,
    "app_id": "must be digits",
    "seller_id": "must be digits",
    "mchid": "must be digits",
}
# Wide enough for any amount times any rate this module accepts; independent of the thread's context.
_DECIMAL = Context(prec=60)


class ChannelConfigInvalid(ValueError):
    """The channel configuration cannot be used; ``problems`` lists ``(field, message)`` pairs."""

    def __init__(self, path: Path | str, problems: Sequence[tuple[str, str]]) -> None:
        self.path = Path(path)
        self.problems = tuple(problems)
        lines = [f"  {field}: {message}" if field else f"  {message}" for field, message in self.problems]
        super().__init__(f"channel configuration {self.path} is invalid:\n" + "\n".join(lines))


class ChannelNotConfigured(LookupError):
    """No channel with this code (or slug) is configured."""


class ChannelsNotConfigured(RuntimeError):
    """The process has no channel registry installed yet."""


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One way a channel carries payments: payer ``method`` in ``currency`` for amounts in a range, at a cost.

    Constraints: ``1 <= amount_min_minor <= amount_max_minor``; ``cost_rate`` is a
    finite ``Decimal`` in ``[0, 0.1]``; ``cost_fixed_minor >= 0``.
    """

    channel: str
    method: str
    channel_method: str
    currency: str
    amount_min_minor: int
    amount_max_minor: int
    cost_rate: Decimal
    cost_fixed_minor: int
    priority: int

    def __post_init__(self) -> None:
        for name in ("amount_min_minor", "amount_max_minor", "cost_fixed_minor", "priority"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not METHOD_PATTERN.fullmatch(self.method):
            raise ValueError(f"method must match [a-z_]{{2,32}}, got {self.method!r}")
        if not CURRENCY_PATTERN.fullmatch(self.currency):
            raise ValueError(f"currency must be three uppercase letters, got {self.currency!r}")
        if not 1 <= self.amount_min_minor <= self.amount_max_minor <= AMOUNT_MINOR_MAX:
            raise ValueError(
                f"amounts must satisfy 1 <= amount_min ({self.amount_min_minor}) <= amount_max "
                f"({self.amount_max_minor})"
            )
        _check_cost_rate(self.cost_rate)
        if self.cost_fixed_minor < 0:
            raise ValueError(f"cost_fixed_minor must not be negative, got {self.cost_fixed_minor}")

    def covers(self, *, currency: str, amount_minor: int) -> bool:
        """True when this route carries ``amount_minor`` of ``currency`` (both bounds inclusive)."""
        return currency == self.currency and self.amount_min_minor <= amount_minor <= self.amount_max_minor

    def cost_minor(self, amount_minor: int) -> int:
        """What the channel charges for one payment: ``cost_fixed + amount × cost_rate``, half up to the fen."""
        variable = _DECIMAL.multiply(Decimal(amount_minor), self.cost_rate)
        return self.cost_fixed_minor + int(variable.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_DECIMAL))


def _check_cost_rate(value: object) -> Decimal:
    """Returns ``value`` when it is a finite ``Decimal`` in ``[0, COST_RATE_MAX]``; raises ``ValueError`` otherwise."""
    if isinstance(value, float):
        raise ValueError('cost_rate must be Decimal text in quotes, like "0.0038", not a float')
    if not isinstance(value, Decimal):
        raise ValueError(f"cost_rate must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"cost_rate must be a finite number, got {value}")
    if not Decimal(0) <= value <= COST_RATE_MAX:
        raise ValueError(f"cost_rate must be between 0 and {COST_RATE_MAX}, got {value}")
    return value


# --------------------------------------------------------------------------- the registry


class ChannelRegistry:
    """The configured channels: their adapters, the routes of the enabled ones, and which may pay out.

    ``adapters`` maps channel code to adapter; ``routes`` may only name those codes,
    with a ``channel_method`` and ``currency`` the adapter offers. ``enabled``
    (default: all) limits ``routes``, ``methods`` and ``payout_channels``;
    ``payout_channels`` names the channels configuration allows to pay out.
    """

    def __init__(
        self,
        adapters: Mapping[str, ChannelAdapter],
        routes: Sequence[Route],
        *,
        payout_channels: Collection[str] = (),
        enabled: Collection[str] | None = None,
    ) -> None:
        for code in adapters:
            if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
                raise ValueError(f"channel code {code!r} must match {CODE_PATTERN.pattern}")
        for name, codes in (("payout_channels", payout_channels), ("enabled", enabled or ())):
            unknown = sorted(set(codes) - set(adapters))
            if unknown:
                raise ValueError(f"{name} names channels that have no adapter: {', '.join(unknown)}")
        for route in routes:
            adapter = adapters.get(route.channel)
            if adapter is None:
                raise ValueError(f"a route names channel {route.channel!r}, which has no adapter")
            if route.channel_method not in adapter.methods:
                raise ValueError(
                    f"channel {route.channel!r} offers methods {sorted(adapter.methods)}, not {route.channel_method!r}"
                )
            if route.currency not in adapter.currencies:
                raise ValueError(
                    f"channel {route.channel!r} supports currencies {sorted(adapter.currencies)}, "
                    f"not {route.currency!r}"
                )
        self._adapters = dict(adapters)
        self._enabled = frozenset(self._adapters if enabled is None else enabled)
        self._routes = tuple(routes)
        self._payout_channels = frozenset(payout_channels)
        self._codes_by_slug = {_slug(code): code for code in self._adapters}

    def codes(self) -> tuple[str, ...]:
        """Every configured channel code, enabled or not, in configuration order."""
        return tuple(self._adapters)

    def is_enabled(self, code: str) -> bool:
        """True when ``code`` is configured and enabled."""
        self.adapter(code)
        return code in self._enabled

    def adapter(self, code: str) -> ChannelAdapter:
        """The adapter of channel ``code`` (disabled channels included); ``ChannelNotConfigured`` if unknown."""
        try:
            return self._adapters[code]
        except KeyError:
            raise ChannelNotConfigured(
                f"no channel {code!r} is configured (configured: {', '.join(self._adapters) or 'none'})"
            ) from None

    def routes(
        self, *, currency: str | None = None, amount_minor: int | None = None, method: str | None = None
    ) -> tuple[Route, ...]:
        """The routes of enabled channels, in configuration order, narrowed by whichever filters are given."""
        return tuple(
            route
            for route in self._routes
            if route.channel in self._enabled
            and (currency is None or route.currency == currency)
            and (amount_minor is None or route.amount_min_minor <= amount_minor <= route.amount_max_minor)
            and (method is None or route.method == method)
        )

    def methods(self) -> tuple[str, ...]:
        """The payer methods that enabled routes offer, in order of first appearance."""
        return tuple(dict.fromkeys(route.method for route in self.routes()))

    def payout_channels(self) -> tuple[str, ...]:
        """Enabled channels that configuration allows to pay out and whose adapter can (``create_payout``)."""
        return tuple(
            code
            for code, adapter in self._adapters.items()
            if code in self._enabled
            and code in self._payout_channels
            and callable(getattr(adapter, "create_payout", None))
        )

    def slug(self, code: str) -> str:
        """The URL-safe form of ``code`` used in notify paths: ``bank_direct:icbc`` → ``bank_direct-icbc``."""
        self.adapter(code)
        return _slug(code)

    def code_for_slug(self, slug: str) -> str:
        """The channel code whose ``slug`` is ``slug``; ``ChannelNotConfigured`` if none."""
        try:
            return self._codes_by_slug[slug]
        except KeyError:
            raise ChannelNotConfigured(f"no channel is configured under the slug {slug!r}") from None

    def close(self) -> None:
        """Closes every adapter that holds resources (``close()``), e.g. HTTP connection pools."""
        for adapter in self._adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()


def _slug(code: str) -> str:
    return code.replace(":", "-")


# --------------------------------------------------------------------------- the process-wide registry

_installed: ChannelRegistry | None = None
_installed_lock = threading.Lock()


def install(registry: ChannelRegistry | None) -> None:
    """Makes ``registry`` the process's current one (``None`` uninstalls); the previous one is not closed."""
    global _installed
    with _installed_lock:
        _installed = registry


def installed() -> ChannelRegistry | None:
    """The current registry, or ``None`` when none is installed."""
    with _installed_lock:
        return _installed


def current() -> ChannelRegistry:
    """The current registry; ``ChannelsNotConfigured`` when none is installed."""
    registry = installed()
    if registry is None:
        raise ChannelsNotConfigured(
            "no payment channels are configured: set ZHANGFANG_CHANNELS_FILE to a channels TOML file "
            "(docs/channels/configuration.md), or ZHANGFANG_SANDBOX=1 to use the local simulators"
        )
    return registry


def load_from_settings(settings: Settings) -> ChannelRegistry | None:
    """Loads the channels the settings name, for a process that did not start them (a worker, a command).

    ``channels_file`` when set; else, in sandbox mode, the ``channels.toml``
    the server's sandbox wrote (a worker beside ``make run``); else nothing.
    """
    path = settings.channels_file
    if path is None and settings.sandbox:
        path = settings.sandbox_dir / "channels.toml"
    if path is None or (settings.channels_file is None and not path.exists()):
        return None
    return load_registry(path)


def install_from_settings(settings: Settings) -> ChannelRegistry | None:
    """``load_from_settings``, installed as the process's registry (a worker's job handlers use it)."""
    registry = load_from_settings(settings)
    if registry is not None:
        install(registry)
    return registry


# --------------------------------------------------------------------------- the file's shape (pydantic)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RouteConfig(_Strict):
    """One ``[[channels.routes]]`` table."""

    method: Annotated[str, Field(pattern=r"^[a-z_]{2,32}$")]
    channel_method: Annotated[str, Field(min_length=1, max_length=32)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "CNY"
    amount_min: Annotated[int, Field(ge=1, le=AMOUNT_MINOR_MAX)] = 1
    amount_max: Annotated[int, Field(ge=1, le=AMOUNT_MINOR_MAX)] = AMOUNT_MINOR_MAX
    cost_rate: Decimal
    cost_fixed: Annotated[int, Field(ge=0, le=AMOUNT_MINOR_MAX)] = 0
    priority: Annotated[int, Field(ge=0, le=1_000_000)] = 100

    @field_validator("cost_rate", mode="before")
    @classmethod
    def _cost_rate_from_text(cls, value: Any) -> Decimal:
        # TOML reads 0.0038 as a binary float, which cannot hold it; only text converts exactly.
        if isinstance(value, float):
            raise ValueError(f'a TOML float ({value!r}) is refused: write Decimal text in quotes, like "0.0038"')
        if not isinstance(value, str):
            raise ValueError(f'must be Decimal text in quotes, like "0.0038", got {type(value).__name__}')
        try:
            rate = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        return _check_cost_rate(rate)


Timeout = Annotated[float, Field(gt=0, le=300, strict=False)]  # seconds, not money: an int or a float will do
Url = Annotated[str, Field(pattern=_URL_PATTERN)]
Text = Annotated[str, Field(min_length=1, max_length=256)]
Pem = Annotated[str, Field(min_length=1, max_length=16384)]


class _ChannelConfig(_Strict):
    """Fields every channel has; subclasses add their kind's credentials."""

    # (field stem, "private" | "public" | "secret"): each is given as <stem>_file or <stem>_pem (secret: <stem>)
    key_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    adapter_class: ClassVar[type]

    kind: str
    code: Annotated[str, Field(pattern=f"^{CODE_PATTERN.pattern}$")]
    enabled: bool = True
    timeout_seconds: Timeout | None = None
    routes: list[RouteConfig] = Field(default_factory=list)


class AlipayConfig(_ChannelConfig):
    """An Alipay app (``kind = "alipay"``)."""

    key_fields = (("app_private_key", "private"), ("alipay_public_key", "public"))
    adapter_class = AlipayAdapter

    kind: Literal["alipay"]
    app_id: Annotated[str, Field(pattern=r"^[0-9]{1,32}$")]
    app_private_key_file: Text | None = None
    app_private_key_pem: Pem | None = None
    alipay_public_key_file: Text | None = None
    alipay_public_key_pem: Pem | None = None
    seller_id: Annotated[str, Field(pattern=r"^[0-9]{1,32}$")] | None = None
    gateway_url: Url = ALIPAY_GATEWAY_URL


class WechatPayConfig(_ChannelConfig):
    """A WeChat Pay direct merchant in public-key mode (``kind = "wechatpay"``)."""

    key_fields = (("private_key", "private"), ("platform_public_key", "public"), ("apiv3_key", "secret"))
    adapter_class = WechatPayAdapter

    kind: Literal["wechatpay"]
    mchid: Annotated[str, Field(pattern=r"^[0-9]{1,32}$")]
    appid: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")]
    private_key_file: Text | None = None
    private_key_pem: Pem | None = None
    cert_serial_no: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{1,64}$")]
    apiv3_key: Text | None = None
    apiv3_key_file: Text | None = None
    platform_public_key_file: Text | None = None
    platform_public_key_pem: Pem | None = None
    platform_public_key_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
    gateway_url: Url = WECHATPAY_GATEWAY_URL


class BankDirectConfig(_ChannelConfig):
    """A directly connected bank (``kind = "bank_direct"``) speaking one of ``bank_direct.PROFILES``."""

    key_fields = (("platform_private_key", "private"), ("bank_public_key", "public"))
    adapter_class = BankDirectAdapter

    kind: Literal["bank_direct"]
    profile: str
    base_url: Url
    merchant_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,32}$")]
    platform_private_key_file: Text | None = None
    platform_private_key_pem: Pem | None = None
    bank_public_key_file: Text | None = None
    bank_public_key_pem: Pem | None = None
    payouts: bool = True

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"must be one of {', '.join(sorted(PROFILES))}, got {value!r}")
        return value


ChannelConfig = Annotated[AlipayConfig | WechatPayConfig | BankDirectConfig, Field(discriminator="kind")]


class ChannelsFile(_Strict):
    """The whole file: a non-empty array of ``[[channels]]`` tables."""

    channels: Annotated[list[ChannelConfig], Field(min_length=1)]


# --------------------------------------------------------------------------- loading


def load_registry(path: Path) -> ChannelRegistry:
    """Reads, checks and builds the registry of the channel TOML file at ``path``.

    Raises ``ChannelConfigInvalid`` (naming the file and every offending field)
    when the file cannot be read, is not TOML, or breaks any constraint of the
    module docstring; no adapter is built in that case.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ChannelConfigInvalid(path, [("", f"cannot read the file: {error.strerror or error}")]) from None
    except UnicodeDecodeError:
        raise ChannelConfigInvalid(path, [("", "the file is not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ChannelConfigInvalid(path, [("", f"not valid TOML: {error}")]) from None

    raw_channels = document.get("channels")
    try:
        parsed = ChannelsFile.model_validate(document)
    except ValidationError as error:
        raise ChannelConfigInvalid(path, _pydantic_problems(error, raw_channels)) from None

    problems: list[tuple[str, str]] = []
    key_texts: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for index, channel in enumerate(parsed.channels):
        where = _channel_label(index, channel.code)
        if channel.code in seen:
            problems.append((f"{where}.code", f"duplicates the code of channels[{seen[channel.code]}]"))
        seen.setdefault(channel.code, index)
        problems += _route_problems(where, channel)
        values, secret_problems = _read_secrets(where, channel, path.parent)
        problems += secret_problems
        key_texts.append(values)
    if problems:
        raise ChannelConfigInvalid(path, problems)

    adapters: dict[str, ChannelAdapter] = {}
    try:
        for index, (channel, values) in enumerate(zip(parsed.channels, key_texts, strict=True)):
            try:
                adapters[channel.code] = _build_adapter(channel, values)
            except (ValueError, TypeError) as error:  # the SDKs' own checks of what they were given
                problems.append((_channel_label(index, channel.code), f"the adapter refused its settings: {error}"))
        if problems:
            raise ChannelConfigInvalid(path, problems)
        return ChannelRegistry(
            adapters,
            [_route(channel.code, route) for channel in parsed.channels for route in channel.routes],
            payout_channels=[c.code for c in parsed.channels if isinstance(c, BankDirectConfig) and c.payouts],
            enabled=[channel.code for channel in parsed.channels if channel.enabled],
        )
    except BaseException:
        for adapter in adapters.values():  # no half-built registry keeps connection pools open
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
        raise


def _channel_label(index: int, code: object) -> str:
    return f"channels[{index}] ({code})" if isinstance(code, str) and code else f"channels[{index}]"


def _pydantic_problems(error: ValidationError, raw_channels: object) -> list[tuple[str, str]]:
    """Turns pydantic's errors into ``(field, message)`` in the file's own terms (``channels[0] (alipay).app_id``)."""
    problems = []
    for item in error.errors(include_url=False):
        location = list(item["loc"])
        field = ""
        raw: Any = None
        if location[:1] == ["channels"] and len(location) > 1 and isinstance(location[1], int):
            index = location[1]
            raw = raw_channels[index] if isinstance(raw_channels, list) and index < len(raw_channels) else None
            code = raw.get("code") if isinstance(raw, dict) else None
            field = _channel_label(index, code)
            location = location[2:]
            if location and isinstance(raw, dict) and location[0] == raw.get("kind") and location[0] in KINDS:
                location = location[1:]  # the discriminated union's tag, not a field of the file
        for part in location:
            field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
        kind = item["type"]
        if kind == "union_tag_invalid":
            got = raw.get("kind") if isinstance(raw, dict) else None
            problems.append((f"{field}.kind", f"must be one of {', '.join(KINDS)}, got {got!r}"))
        elif kind == "union_tag_not_found":
            problems.append((f"{field}.kind", f"is required: one of {', '.join(KINDS)}"))
        elif kind == "missing":
            problems.append((field, "is required"))
        elif kind == "extra_forbidden":
            problems.append((field, "is not a known field (misspelt?)"))
        elif kind == "string_pattern_mismatch" and str(location[-1]) in _PATTERN_HINTS:
            problems.append((field, _PATTERN_HINTS[str(location[-1])]))
        elif kind == "value_error":
            problems.append((field, str(item.get("ctx", {}).get("error", item["msg"]))))
        else:
            problems.append((field, item["msg"]))
    return problems


def _route_problems(where: str, channel: _ChannelConfig) -> list[tuple[str, str]]:
    adapter_class = channel.adapter_class
    problems = []
    for index, route in enumerate(channel.routes):
        at = f"{where}.routes[{index}]"
        if route.channel_method not in adapter_class.methods:
            offered = ", ".join(sorted(adapter_class.methods))
            message = f"{route.channel_method!r} is not a method of {channel.kind} channels ({offered})"
            problems.append((f"{at}.channel_method", message))
        if route.currency not in adapter_class.currencies:
            supported = ", ".join(sorted(adapter_class.currencies))
            message = f"{route.currency} is not a currency of {channel.kind} channels ({supported})"
            problems.append((f"{at}.currency", message))
        if route.amount_min > route.amount_max:
            problems.append((f"{at}.amount_min", f"{route.amount_min} is greater than amount_max ({route.amount_max})"))
    return problems


def _read_secrets(where: str, channel: _ChannelConfig, base: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Reads each key from its file or inline value; returns the texts by stem, and the problems."""
    values: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for stem, half in channel.key_fields:
        inline_name = stem if half == "secret" else f"{stem}_pem"
        file_name = f"{stem}_file"
        inline, file = getattr(channel, inline_name), getattr(channel, file_name)
        if (inline is None) == (file is None):
            state = "both are" if inline is not None else "neither is"
            problems.append(
                (f"{where}.{file_name}", f"give exactly one of {file_name} and {inline_name} ({state} set)")
            )
            continue
        field = f"{where}.{inline_name if inline is not None else file_name}"
        if file is not None:
            key_path = base / file
            try:
                text = key_path.read_text(encoding="utf-8")
            except OSError as error:
                problems.append((field, f"cannot read {key_path}: {error.strerror or error}"))
                continue
            except UnicodeDecodeError:
                problems.append((field, f"{key_path} is not text"))
                continue
            if half != "public":
                _warn_if_readable_by_others(key_path)
        else:
            text = inline
        problem = _check_secret(text, half)
        if problem:
            problems.append((field, problem))
        else:
            values[stem] = text.strip() if half == "secret" else text
    return values, problems


def _check_secret(text: str, half: str) -> str | None:
    """None when ``text`` is what ``half`` says (an RSA private/public PEM, or a 32-byte APIv3 key)."""
    if half == "secret":
        key = text.strip()
        if not key.isascii() or len(key) != 32:
            return "an APIv3 key is 32 ASCII characters (the AES-256 key of notifies)"
        return None
    try:
        data = text.encode()
        key_object: object = (
            serialization.load_pem_private_key(data, password=None)
            if half == "private"
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError, UnicodeEncodeError) as error:
        return f"is not an unencrypted {half} key in PEM: {error}"
    expected = RSAPrivateKey if half == "private" else RSAPublicKey
    if not isinstance(key_object, expected):
        return f"must be an RSA {half} key"
    return None


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "secret key file %s is accessible to group or others (mode %o); chmod 600 it", path, mode & 0o777
        )


def _build_adapter(channel: _ChannelConfig, secrets: Mapping[str, str]) -> ChannelAdapter:
    timeout = {} if channel.timeout_seconds is None else {"timeout_seconds": channel.timeout_seconds}
    adapter: Any
    if isinstance(channel, AlipayConfig):
        adapter = AlipayAdapter(
            app_id=channel.app_id,
            app_private_key_pem=secrets["app_private_key"],
            alipay_public_key_pem=secrets["alipay_public_key"],
            seller_id=channel.seller_id,
            gateway_url=channel.gateway_url,
            **timeout,
        )
    elif isinstance(channel, WechatPayConfig):
        adapter = WechatPayAdapter(
            mchid=channel.mchid,
            appid=channel.appid,
            private_key_pem=secrets["private_key"],
            cert_serial_no=channel.cert_serial_no,
            apiv3_key=secrets["apiv3_key"],
            platform_public_key_pem=secrets["platform_public_key"],
            platform_public_key_id=channel.platform_public_key_id,
            gateway=channel.gateway_url,
            **timeout,
        )
    elif isinstance(channel, BankDirectConfig):
        adapter = BankDirectAdapter(
            profile=PROFILES[channel.profile],
            base_url=channel.base_url,
            merchant_id=channel.merchant_id,
            platform_private_key=secrets["platform_private_key"],
            bank_public_key=secrets["bank_public_key"],
            **timeout,
        )
    else:  # pragma: no cover - the discriminated union admits no other kind
        raise AssertionError(f"unknown channel kind {type(channel).__name__}")
    # Orders, notify paths and bills carry the configured code; the adapter must answer to the same one.
    adapter.code = channel.code
    return adapter


def _route(code: str, route: RouteConfig) -> Route:
    return Route(
        channel=code,
        method=route.method,
        channel_method=route.channel_method,
        currency=route.currency,
        amount_min_minor=route.amount_min,
        amount_max_minor=route.amount_max,
        cost_rate=route.cost_rate,
        cost_fixed_minor=route.cost_fixed,
        priority=route.priority,
    )
