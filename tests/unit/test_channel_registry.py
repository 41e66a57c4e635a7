"""The channel configuration file and the registry built from it: parsing, every refusal, routes, slugs, install.

Files are written into ``tmp_path`` with keys generated once per module; the
registry's filtering is also checked on a registry of stand-in adapters, which
need no keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.channels import registry as registry_module
from zhangfang.channels.alipay import AlipayAdapter
from zhangfang.channels.bank_direct import BankDirectAdapter
from zhangfang.channels.registry import (
    ChannelConfigInvalid,
    ChannelNotConfigured,
    ChannelRegistry,
    ChannelsNotConfigured,
    Route,
    current,
    install,
    installed,
    load_registry,
)
from zhangfang.channels.wechatpay import WechatPayAdapter

APIV3_KEY = "0123456789abcdef0123456789abcdef"


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Pems:
    private: str
    public: str


def _pems() -> Pems:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Pems(
        private=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        public=key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )


@pytest.fixture(scope="module")
def pems() -> tuple[Pems, Pems]:
    """Two key pairs: ours and the channel's (2048-bit generation is slowish, so once per module)."""
    return _pems(), _pems()


@pytest.fixture
def config_dir(tmp_path: Path, pems: tuple[Pems, Pems]) -> Path:
    """A configuration directory with ``keys/`` holding our key, the channel's public key and an APIv3 key."""
    ours, theirs = pems
    keys = tmp_path / "keys"
    keys.mkdir()
    for name, text, mode in (
        ("ours.pem", ours.private, 0o600),
        ("theirs.pub.pem", theirs.public, 0o644),
        ("apiv3.key", APIV3_KEY + "\n", 0o600),
    ):
        (keys / name).write_text(text)
        os.chmod(keys / name, mode)
    return tmp_path


def route(**overrides: Any) -> dict[str, Any]:
    return {"method": "alipay", "channel_method": "page", "amount_max": 10_000_000_000, "cost_rate": "0.0038"} | (
        overrides
    )


def alipay(**overrides: Any) -> dict[str, Any]:
    return {
        "code": "alipay",
        "kind": "alipay",
        "app_id": "2021000000000001",
        "app_private_key_file": "keys/ours.pem",
        "alipay_public_key_file": "keys/theirs.pub.pem",
        "seller_id": "2088000000000001",
        "gateway_url": "http://127.0.0.1:8101/gateway.do",
        "timeout_seconds": 10,
        "routes": [route()],
    } | overrides


def wechatpay(**overrides: Any) -> dict[str, Any]:
    return {
        "code": "wechatpay",
        "kind": "wechatpay",
        "mchid": "1900000109",
        "appid": "wxd678efh567hg6787",
        "private_key_file": "keys/ours.pem",
        "cert_serial_no": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "apiv3_key_file": "keys/apiv3.key",
        "platform_public_key_file": "keys/theirs.pub.pem",
        "platform_public_key_id": "PUB_KEY_ID_0119000001092024060100000000000001",
        "gateway_url": "http://127.0.0.1:8102",
        "routes": [route(method="wechatpay", channel_method="native")],
    } | overrides


def bank(profile: str = "icbc", **overrides: Any) -> dict[str, Any]:
    return {
        "code": f"bank_direct:{profile}",
        "kind": "bank_direct",
        "profile": profile,
        "base_url": "http://127.0.0.1:8103",
        "merchant_id": "M100200300",
        "platform_private_key_file": "keys/ours.pem",
        "bank_public_key_file": "keys/theirs.pub.pem",
        "routes": [route(method="bank_card", channel_method="bank_card", amount_max=5_000_000, cost_rate="0.0020")],
    } | overrides


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    assert isinstance(value, str), value
    return json.dumps(value)


def write_config(directory: Path, *channels: dict[str, Any], name: str = "channels.toml") -> Path:
    """Writes ``channels`` as ``[[channels]]`` tables (``routes`` as ``[[channels.routes]]``)."""
    lines: list[str] = []
    for channel in channels:
        lines.append("[[channels]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in channel.items() if key != "routes"]
        for each in channel.get("routes", []):
            lines.append("[[channels.routes]]")
            lines += [f"{key} = {toml_value(value)}" for key, value in each.items()]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(ChannelConfigInvalid) as caught:
        load_registry(path)
    assert str(path) in str(caught.value)
    return dict(caught.value.problems)


# --------------------------------------------------------------------------- a valid file


def test_a_valid_file_builds_one_adapter_per_channel_with_its_routes(config_dir: Path) -> None:
    path = write_config(config_dir, alipay(), wechatpay(), bank("icbc"), bank("cmb", payouts=False))
    registry = load_registry(path)
    try:
        assert registry.codes() == ("alipay", "wechatpay", "bank_direct:icbc", "bank_direct:cmb")
        assert isinstance(registry.adapter("alipay"), AlipayAdapter)
        assert isinstance(registry.adapter("wechatpay"), WechatPayAdapter)
        icbc = registry.adapter("bank_direct:icbc")
        assert isinstance(icbc, BankDirectAdapter)
        assert (icbc.profile.code, icbc.base_url, icbc.merchant_id) == ("icbc", "http://127.0.0.1:8103", "M100200300")
        assert [registry.adapter(code).code for code in registry.codes()] == list(registry.codes())
        assert registry.routes(method="alipay") == (
            Route(
                channel="alipay",
                method="alipay",
                channel_method="page",
                currency="CNY",
                amount_min_minor=1,
                amount_max_minor=10_000_000_000,
                cost_rate=Decimal("0.0038"),
                cost_fixed_minor=0,
                priority=100,
            ),
        )
        assert registry.methods() == ("alipay", "wechatpay", "bank_card")
        assert registry.payout_channels() == ("bank_direct:icbc",)  # cmb says payouts = false
    finally:
        registry.close()


def test_keys_may_be_given_inline_instead_of_as_files(config_dir: Path, pems: tuple[Pems, Pems]) -> None:
    ours, theirs = pems
    channel = wechatpay(private_key_file=None, apiv3_key_file=None, platform_public_key_file=None)
    channel = {key: value for key, value in channel.items() if value is not None}
    channel |= {"private_key_pem": ours.private, "apiv3_key": APIV3_KEY, "platform_public_key_pem": theirs.public}
    path = config_dir / "channels.toml"
    path.write_text(
        "[[channels]]\n"
        + "".join(
            f"{key} = {toml_value(value)}\n"
            if not key.endswith("_pem")
            else f"{key} = '''\n{value}'''\n"  # a multi-line literal string, as an operator would paste a PEM
            for key, value in channel.items()
            if key != "routes"
        )
    )
    registry = load_registry(path)
    assert isinstance(registry.adapter("wechatpay"), WechatPayAdapter)
    assert registry.routes() == ()  # a channel without routes is allowed


def test_a_disabled_channel_offers_no_routes_but_keeps_its_adapter(config_dir: Path) -> None:
    registry = load_registry(write_config(config_dir, alipay(enabled=False), bank("icbc")))
    try:
        assert [r.channel for r in registry.routes()] == ["bank_direct:icbc"]
        assert registry.methods() == ("bank_card",)
        assert isinstance(registry.adapter("alipay"), AlipayAdapter)  # orders made before still need it
        assert not registry.is_enabled("alipay") and registry.is_enabled("bank_direct:icbc")
    finally:
        registry.close()


# --------------------------------------------------------------------------- refusals

Mutation = Callable[[Path], Path]


def _drop(channel: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in channel.items() if key not in names}


REFUSALS: dict[str, tuple[Mutation, str, str]] = {
    "duplicate code": (
        lambda d: write_config(d, alipay(), alipay(app_id="2021000000000002")),
        "channels[1] (alipay).code",
        "duplicates the code of channels[0]",
    ),
    "unknown kind": (
        lambda d: write_config(d, {"code": "paypal", "kind": "paypal"}),
        "channels[0] (paypal).kind",
        "must be one of alipay, wechatpay, bank_direct, got 'paypal'",
    ),
    "missing kind": (lambda d: write_config(d, _drop(alipay(), "kind")), "channels[0] (alipay).kind", "is required"),
    "float cost_rate": (
        lambda d: write_config(d, alipay(routes=[route(cost_rate=0.0038)])),
        "channels[0] (alipay).routes[0].cost_rate",
        'a TOML float (0.0038) is refused: write Decimal text in quotes, like "0.0038"',
    ),
    "integer cost_rate": (
        lambda d: write_config(d, alipay(routes=[route(cost_rate=0)])),
        "channels[0] (alipay).routes[0].cost_rate",
        "must be Decimal text in quotes",
    ),
    "cost_rate not a number": (
        lambda d: write_config(d, alipay(routes=[route(cost_rate="NaN")])),
        "channels[0] (alipay).routes[0].cost_rate",
        "must be a finite number",
    ),
    "cost_rate above 10%": (
        lambda d: write_config(d, alipay(routes=[route(cost_rate="0.2")])),
        "channels[0] (alipay).routes[0].cost_rate",
        "must be between 0 and 0.1, got 0.2",
    ),
    "channel_method not offered by the adapter": (
        lambda d: write_config(d, wechatpay(routes=[route(method="wechatpay", channel_method="page")])),
        "channels[0] (wechatpay).routes[0].channel_method",
        "'page' is not a method of wechatpay channels (h5, jsapi, native)",
    ),
    "currency not supported by the adapter": (
        lambda d: write_config(d, alipay(routes=[route(currency="USD")])),
        "channels[0] (alipay).routes[0].currency",
        "USD is not a currency of alipay channels (CNY)",
    ),
    "amount_min above amount_max": (
        lambda d: write_config(d, alipay(routes=[route(amount_min=500, amount_max=499)])),
        "channels[0] (alipay).routes[0].amount_min",
        "500 is greater than amount_max (499)",
    ),
    "amount_min zero": (
        lambda d: write_config(d, alipay(routes=[route(amount_min=0)])),
        "channels[0] (alipay).routes[0].amount_min",
        "greater than or equal to 1",
    ),
    "amount as a float": (
        lambda d: write_config(d, alipay(routes=[route(amount_max=100.0)])),
        "channels[0] (alipay).routes[0].amount_max",
        "valid integer",
    ),
    "both key file and inline key": (
        lambda d: write_config(d, alipay(app_private_key_pem="-----BEGIN PRIVATE KEY-----")),
        "channels[0] (alipay).app_private_key_file",
        "give exactly one of app_private_key_file and app_private_key_pem (both are set)",
    ),
    "neither key file nor inline key": (
        lambda d: write_config(d, _drop(alipay(), "app_private_key_file")),
        "channels[0] (alipay).app_private_key_file",
        "give exactly one of app_private_key_file and app_private_key_pem (neither is set)",
    ),
    "missing key file": (
        lambda d: write_config(d, alipay(alipay_public_key_file="keys/nowhere.pem")),
        "channels[0] (alipay).alipay_public_key_file",
        "cannot read",
    ),
    "public key where a private key belongs": (
        lambda d: write_config(d, bank(platform_private_key_file="keys/theirs.pub.pem")),
        "channels[0] (bank_direct:icbc).platform_private_key_file",
        "is not an unencrypted private key in PEM",
    ),
    "APIv3 key of the wrong length": (
        lambda d: write_config(d, _drop(wechatpay(), "apiv3_key_file") | {"apiv3_key": "short"}),
        "channels[0] (wechatpay).apiv3_key",
        "an APIv3 key is 32 ASCII characters",
    ),
    "unknown bank profile": (
        lambda d: write_config(d, bank(profile="boc")),
        "channels[0] (bank_direct:boc).profile",
        "must be one of cmb, icbc, got 'boc'",
    ),
    "misspelt field": (
        lambda d: write_config(d, alipay(seller="2088000000000001")),
        "channels[0] (alipay).seller",
        "is not a known field (misspelt?)",
    ),
    "code with a hyphen": (
        lambda d: write_config(d, alipay(code="alipay-hk")),
        "channels[0] (alipay-hk).code",
        "must be 2-32 of [a-z0-9_] starting with a letter",
    ),
    "no channels": (lambda d: write_config(d), "channels", "is required"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_bad_file_is_refused_naming_the_file_and_the_field(case: str, config_dir: Path) -> None:
    write, field_name, message = REFUSALS[case]
    problems = problems_of(write(config_dir))
    assert field_name in problems, problems
    assert message in problems[field_name]


def test_every_problem_of_a_file_is_reported_at_once(config_dir: Path) -> None:
    path = write_config(
        config_dir,
        alipay(routes=[route(cost_rate=0.006)]),
        bank(bank_public_key_file="keys/missing.pem", routes=[route(method="bank_card", channel_method="qr")]),
    )
    with pytest.raises(ChannelConfigInvalid) as caught:
        load_registry(path)
    assert {name for name, _ in caught.value.problems} == {
        "channels[0] (alipay).routes[0].cost_rate",
    }  # shape errors come first; the semantic checks run once the shape is right
    path = write_config(
        config_dir,
        alipay(routes=[route(amount_min=9, amount_max=1)]),
        bank(bank_public_key_file="keys/missing.pem", routes=[route(method="bank_card", channel_method="qr")]),
    )
    with pytest.raises(ChannelConfigInvalid) as caught:
        load_registry(path)
    assert {name for name, _ in caught.value.problems} == {
        "channels[0] (alipay).routes[0].amount_min",
        "channels[1] (bank_direct:icbc).routes[0].channel_method",
        "channels[1] (bank_direct:icbc).bank_public_key_file",
    }
    text = str(caught.value)
    assert text.startswith(f"channel configuration {path} is invalid:\n")
    assert "  channels[1] (bank_direct:icbc).bank_public_key_file: cannot read " in text


def test_a_file_that_is_missing_or_not_toml_is_refused(tmp_path: Path) -> None:
    assert "cannot read the file" in problems_of(tmp_path / "absent.toml")[""]
    broken = tmp_path / "broken.toml"
    broken.write_text("[[channels]]\ncode = alipay\n")
    assert "not valid TOML" in problems_of(broken)[""] and "line 2" in problems_of(broken)[""]


def test_key_paths_are_relative_to_the_files_directory_not_the_working_directory(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    load_registry(write_config(config_dir, bank("cmb"))).close()


def test_a_private_key_file_others_can_read_is_accepted_with_a_warning(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.chmod(config_dir / "keys" / "ours.pem", 0o644)
    load_registry(write_config(config_dir, bank("icbc"))).close()
    assert "chmod 600" in caplog.text


# --------------------------------------------------------------------------- the registry itself


@dataclass
class StandIn:
    """An adapter as the registry sees it: code, methods, currencies, and whether it holds resources."""

    code: str
    methods: frozenset[str] = frozenset({"page", "bank_card"})
    currencies: frozenset[str] = frozenset({"CNY", "USD"})
    connection: str = "direct"
    closed: bool = field(default=False)

    def close(self) -> None:
        self.closed = True


@dataclass
class StandInBank(StandIn):
    def create_payout(self, request: object) -> None:
        raise NotImplementedError


def make_route(channel: str, **overrides: Any) -> Route:
    values: dict[str, Any] = {
        "channel": channel,
        "method": "bank_card",
        "channel_method": "bank_card",
        "currency": "CNY",
        "amount_min_minor": 1,
        "amount_max_minor": 5_000_000,
        "cost_rate": Decimal("0.0020"),
        "cost_fixed_minor": 0,
        "priority": 100,
    }
    return Route(**(values | overrides))


@pytest.fixture
def stand_ins() -> dict[str, StandIn]:
    return {
        "bank_direct:icbc": StandInBank("bank_direct:icbc"),
        "bank_direct:cmb": StandInBank("bank_direct:cmb"),
        "alipay": StandIn("alipay"),
        "wallet": StandIn("wallet"),
    }


@pytest.fixture
def registry(stand_ins: dict[str, StandIn]) -> ChannelRegistry:
    return ChannelRegistry(
        stand_ins,  # type: ignore[arg-type]  # stand-ins carry only what the registry reads
        [
            make_route("bank_direct:icbc", amount_min_minor=100, amount_max_minor=5_000_000),
            make_route("bank_direct:cmb", amount_max_minor=20_000_000, cost_rate=Decimal("0.0025")),
            make_route("bank_direct:cmb", currency="USD", amount_max_minor=1_000_000),
            make_route("alipay", method="alipay", channel_method="page"),
            make_route("wallet", method="wallet", channel_method="page"),
        ],
        payout_channels=["bank_direct:icbc", "bank_direct:cmb", "alipay"],
        enabled=["bank_direct:icbc", "bank_direct:cmb", "alipay"],
    )


def channels_of(routes: tuple[Route, ...]) -> list[tuple[str, str]]:
    return [(r.channel, r.currency) for r in routes]


def test_routes_are_filtered_by_currency_amount_and_method_with_inclusive_bounds(registry: ChannelRegistry) -> None:
    icbc, cmb, alipay_ = ("bank_direct:icbc", "CNY"), ("bank_direct:cmb", "CNY"), ("alipay", "CNY")
    assert channels_of(registry.routes(currency="USD")) == [("bank_direct:cmb", "USD")]
    assert channels_of(registry.routes(currency="CNY", method="bank_card")) == [icbc, cmb]
    assert channels_of(registry.routes(currency="CNY", amount_minor=99)) == [cmb, alipay_]
    assert channels_of(registry.routes(currency="CNY", amount_minor=100, method="bank_card")) == [icbc, cmb]
    assert channels_of(registry.routes(currency="CNY", amount_minor=5_000_000, method="bank_card")) == [icbc, cmb]
    assert channels_of(registry.routes(currency="CNY", amount_minor=5_000_001, method="bank_card")) == [cmb]
    assert channels_of(registry.routes(currency="CNY", amount_minor=20_000_001)) == []
    assert channels_of(registry.routes(amount_minor=1_000_000, method="bank_card")) == [
        icbc,
        cmb,
        ("bank_direct:cmb", "USD"),
    ]
    assert registry.routes(method="wallet") == ()  # its channel is disabled


def test_methods_and_payout_channels_come_from_enabled_channels_only(registry: ChannelRegistry) -> None:
    assert registry.methods() == ("bank_card", "alipay")
    # alipay may pay out by configuration but its adapter cannot; wallet is disabled.
    assert registry.payout_channels() == ("bank_direct:icbc", "bank_direct:cmb")
    assert registry.codes() == ("bank_direct:icbc", "bank_direct:cmb", "alipay", "wallet")


def test_an_unknown_code_or_slug_is_channel_not_configured(registry: ChannelRegistry) -> None:
    with pytest.raises(ChannelNotConfigured, match="no channel 'paypal' is configured"):
        registry.adapter("paypal")
    with pytest.raises(LookupError):
        registry.code_for_slug("bank_direct:icbc")  # a code is not a slug
    with pytest.raises(ChannelNotConfigured):
        registry.slug("paypal")


def test_slugs_are_url_safe_and_round_trip(registry: ChannelRegistry) -> None:
    assert registry.slug("bank_direct:icbc") == "bank_direct-icbc"
    assert registry.slug("alipay") == "alipay"
    for code in registry.codes():
        slug = registry.slug(code)
        assert slug.replace("_", "").replace("-", "").isalnum()
        assert registry.code_for_slug(slug) == code


def test_close_closes_every_adapter_that_can_be_closed(
    stand_ins: dict[str, StandIn], registry: ChannelRegistry
) -> None:
    registry.close()
    assert all(adapter.closed for adapter in stand_ins.values())


@pytest.mark.parametrize(
    ("routes", "options", "message"),
    [
        ([make_route("paypal")], {}, "a route names channel 'paypal', which has no adapter"),
        ([make_route("alipay", channel_method="qr")], {}, "offers methods ['bank_card', 'page'], not 'qr'"),
        ([make_route("alipay", currency="EUR")], {}, "supports currencies ['CNY', 'USD'], not 'EUR'"),
        ([], {"enabled": ["paypal"]}, "enabled names channels that have no adapter: paypal"),
        ([], {"payout_channels": ["paypal"]}, "payout_channels names channels that have no adapter: paypal"),
    ],
)
def test_a_registry_refuses_routes_and_lists_its_adapters_do_not_back(
    stand_ins: dict[str, StandIn], routes: list[Route], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        ChannelRegistry(stand_ins, routes, **options)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_a_registry_refuses_a_code_that_would_not_slug_back() -> None:
    with pytest.raises(ValueError, match="channel code 'bank-icbc' must match"):
        ChannelRegistry({"bank-icbc": StandIn("bank-icbc")}, [])  # type: ignore[dict-item]


# --------------------------------------------------------------------------- Route


@pytest.mark.parametrize(
    ("amount_minor", "rate", "fixed", "cost"),
    [
        (1000, "0.0038", 0, 4),  # 3.8 → 4
        (375, "0.0038", 0, 1),  # 1.425 → 1
        (250, "0.0020", 0, 1),  # exactly 0.5 → 1 (half up, not to even)
        (750, "0.0020", 0, 2),  # exactly 1.5 → 2
        (1250, "0.0020", 0, 3),  # exactly 2.5 → 3 (half even would give 2)
        (249, "0.0020", 0, 0),  # 0.498 → 0
        (10_000_000_000, "0.0038", 0, 38_000_000),
        (1000, "0", 30, 30),
        (1000, "0.0025", 100, 103),  # 2.5 → 3, plus the fixed 100
    ],
)
def test_cost_is_fixed_plus_rate_rounded_half_up_to_the_fen(
    amount_minor: int, rate: str, fixed: int, cost: int
) -> None:
    assert make_route("x", cost_rate=Decimal(rate), cost_fixed_minor=fixed).cost_minor(amount_minor) == cost


@given(
    amount_minor=st.integers(min_value=1, max_value=10**15),
    rate=st.decimals(min_value=0, max_value=Decimal("0.1"), places=6),
    fixed=st.integers(min_value=0, max_value=10_000),
)
def test_cost_agrees_with_exact_fraction_arithmetic(amount_minor: int, rate: Decimal, fixed: int) -> None:
    # An independent rounding: floor(x + 1/2) over exact rationals is half up for non-negative x.
    exact = Fraction(amount_minor) * Fraction(rate)
    expected = fixed + int(exact + Fraction(1, 2))
    assert make_route("x", cost_rate=rate, cost_fixed_minor=fixed).cost_minor(amount_minor) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cost_rate": 0.0038}, "not a float"),
        ({"cost_rate": Decimal("Infinity")}, "finite"),
        ({"cost_rate": Decimal("-0.001")}, "between 0 and 0.1"),
        ({"amount_min_minor": 0}, "1 <= amount_min (0)"),
        ({"amount_min_minor": 10, "amount_max_minor": 9}, "amount_min (10) <= amount_max (9)"),
        ({"amount_max_minor": 5_000_000.0}, "amount_max_minor must be an int"),
        ({"cost_fixed_minor": -1}, "must not be negative"),
        ({"method": "Bank-Card"}, "method must match"),
    ],
)
def test_a_route_refuses_inexact_or_impossible_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        make_route("x", **overrides)
    assert message in str(caught.value)


def test_covers_needs_the_currency_and_an_amount_within_both_bounds() -> None:
    covering = make_route("x", amount_min_minor=100, amount_max_minor=200)
    assert covering.covers(currency="CNY", amount_minor=100) and covering.covers(currency="CNY", amount_minor=200)
    assert not covering.covers(currency="CNY", amount_minor=99)
    assert not covering.covers(currency="CNY", amount_minor=201)
    assert not covering.covers(currency="USD", amount_minor=150)


# --------------------------------------------------------------------------- the process-wide registry


@pytest.fixture
def no_registry() -> Iterator[None]:
    before = installed()
    install(None)
    yield
    install(before)


def test_current_says_how_to_configure_channels_when_none_is_installed(no_registry: None) -> None:
    assert installed() is None
    with pytest.raises(ChannelsNotConfigured) as caught:
        current()
    assert "ZHANGFANG_CHANNELS_FILE" in str(caught.value) and "ZHANGFANG_SANDBOX=1" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


def test_install_makes_a_registry_current_for_every_thread(no_registry: None, registry: ChannelRegistry) -> None:
    import threading

    install(registry)
    seen: list[ChannelRegistry] = []
    thread = threading.Thread(target=lambda: seen.append(current()))
    thread.start()
    thread.join()
    assert current() is registry and installed() is registry and seen == [registry]
    install(None)
    assert registry_module.installed() is None
