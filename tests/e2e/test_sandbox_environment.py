"""The whole sandbox from one call: four simulators on loopback ports, used only through the registry it writes.

A merchant-side receiver (served with ``serve_in_thread``) takes every notify
at ``/notify/{slug}`` or ``/payout-notify/{slug}``, finds the adapter through
``registry.code_for_slug`` — as the API's notify endpoints will — and verifies
and acknowledges it with that adapter. Payers are played by the simulators'
``pay`` controls (Alipay's page trade is first opened in a "browser").
"""

from __future__ import annotations

import itertools
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zhangfang.channels.bank_direct import BankDirectAdapter, PayoutNotify, PayoutRequest
from zhangfang.channels.protocol import CreatePayment, Notify
from zhangfang.channels.registry import ChannelNotConfigured, ChannelRegistry, load_registry
from zhangfang.sandbox.alipay import AlipaySimulator
from zhangfang.sandbox.bank_direct import BankSimulator
from zhangfang.sandbox.environment import CHANNEL_CODES, DEFAULT_PORTS, Sandbox, start_sandbox
from zhangfang.sandbox.server import RunningServer, serve_in_thread
from zhangfang.sandbox.wechatpay import WechatPaySimulator

WAIT_SECONDS = 5.0
PAYOUT_SETTLE_SECONDS = 0.1
CHANNEL_METHODS = {
    "alipay": "page",
    "wechatpay": "native",
    "bank_direct:icbc": "bank_card",
    "bank_direct:cmb": "bank_card",
}
_numbers = itertools.count(1)


def next_number(prefix: str) -> str:
    return f"{prefix}{time.time_ns()}{next(_numbers):04d}"


@dataclass
class Merchant:
    """The merchant's notify endpoints: verified through the registry's adapters, then acknowledged."""

    registry: ChannelRegistry
    base_url: str = ""
    notifies: list[tuple[str, Notify]] = field(default_factory=list)
    payout_notifies: list[tuple[str, PayoutNotify]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            code = self.registry.code_for_slug(request.path_params["slug"])
            adapter = self.registry.adapter(code)
            payout = request.url.path.startswith("/payout-notify/")
            body = await request.body()
            try:
                if payout:
                    assert isinstance(adapter, BankDirectAdapter)
                    parsed: Any = adapter.parse_payout_notify(dict(request.headers), body)
                else:
                    parsed = adapter.parse_notify(dict(request.headers), body)
            except Exception as error:  # recorded for the test to fail on; the channel retries
                with self.changed:
                    self.refused.append((code, repr(error)))
                ack = adapter.ack_notify(False)
            else:
                with self.changed:
                    (self.payout_notifies if payout else self.notifies).append((code, parsed))
                    self.changed.notify_all()
                ack = adapter.ack_notify(True)
            return Response(ack.body, status_code=ack.status_code, headers=dict(ack.headers))

        return Starlette(
            routes=[
                Route("/notify/{slug}", notify, methods=["POST"]),
                Route("/payout-notify/{slug}", notify, methods=["POST"]),
            ]
        )

    def notify_url(self, code: str) -> str:
        return f"{self.base_url}/notify/{self.registry.slug(code)}"

    def payout_notify_url(self, code: str) -> str:
        return f"{self.base_url}/payout-notify/{self.registry.slug(code)}"

    def wait_for(self, found: Callable[[], Any]) -> Any:
        with self.changed:
            assert self.changed.wait_for(found, WAIT_SECONDS), f"not received in time; refused: {self.refused}"
            return found()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    started = start_sandbox(tmp_path_factory.mktemp("sandbox"), payout_settle_seconds=PAYOUT_SETTLE_SECONDS)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def registry(sandbox: Sandbox) -> Iterator[ChannelRegistry]:
    built = sandbox.registry()
    yield built
    built.close()


@pytest.fixture(scope="module")
def merchant(registry: ChannelRegistry) -> Iterator[Merchant]:
    receiver = Merchant(registry)
    server: RunningServer = serve_in_thread(receiver.app())
    receiver.base_url = server.base_url
    yield receiver
    server.stop()


# --------------------------------------------------------------------------- the written configuration


def test_the_configuration_describes_four_channels_each_on_its_own_loopback_port(
    sandbox: Sandbox, registry: ChannelRegistry
) -> None:
    assert sandbox.config_path == sandbox.directory / "channels.toml"
    assert registry.codes() == CHANNEL_CODES == tuple(DEFAULT_PORTS)
    assert set(sandbox.servers) == set(CHANNEL_CODES)
    assert {server.host for server in sandbox.servers.values()} == {"127.0.0.1"}
    assert len({server.port for server in sandbox.servers.values()}) == 4
    written = tomllib.loads(sandbox.config_path.read_text())["channels"]
    endpoints = {channel["code"]: channel.get("gateway_url") or channel["base_url"] for channel in written}
    assert endpoints == {
        "alipay": sandbox.base_url("alipay") + "/gateway.do",
        "wechatpay": sandbox.base_url("wechatpay"),
        "bank_direct:icbc": sandbox.base_url("bank_direct:icbc"),
        "bank_direct:cmb": sandbox.base_url("bank_direct:cmb"),
    }
    assert registry.methods() == ("alipay", "wechatpay", "bank_card")
    assert registry.payout_channels() == ("bank_direct:icbc", "bank_direct:cmb")
    # 100,000.00 yuan by card is above ICBC's 50,000.00 limit, within CMB's 200,000.00.
    assert [r.channel for r in registry.routes(currency="CNY", amount_minor=10_000_000, method="bank_card")] == [
        "bank_direct:cmb"
    ]
    assert [(r.channel, str(r.cost_rate)) for r in registry.routes(method="bank_card")] == [
        ("bank_direct:icbc", "0.0020"),
        ("bank_direct:cmb", "0.0025"),
    ]


def test_each_channel_code_names_its_simulator(sandbox: Sandbox) -> None:
    assert isinstance(sandbox.simulator("alipay"), AlipaySimulator)
    assert isinstance(sandbox.simulator("wechatpay"), WechatPaySimulator)
    for profile in ("icbc", "cmb"):
        assert sandbox.simulator(f"bank_direct:{profile}") is sandbox.banks[profile]
        assert isinstance(sandbox.banks[profile], BankSimulator)
    with pytest.raises(ChannelNotConfigured):
        sandbox.simulator("bank_direct:boc")


# --------------------------------------------------------------------------- money through each channel


@pytest.mark.parametrize("code", CHANNEL_CODES)
def test_a_payment_through_each_channel_is_notified_and_queried_as_succeeded(
    code: str, sandbox: Sandbox, registry: ChannelRegistry, merchant: Merchant
) -> None:
    adapter = registry.adapter(code)
    out_trade_no = next_number("T")
    action = adapter.create_payment(
        CreatePayment(
            out_trade_no=out_trade_no,
            amount_minor=1234,
            currency="CNY",
            subject="沙箱测试商品",
            method=CHANNEL_METHODS[code],
            notify_url=merchant.notify_url(code),
        )
    )
    if code == "alipay":
        # A page trade exists at Alipay only once the payer's browser has opened it.
        assert action.kind == "redirect" and action.url
        assert httpx.get(action.url, follow_redirects=True).status_code == 200
    simulator = sandbox.simulator(code)
    simulator.pay(out_trade_no)  # type: ignore[attr-defined]  # every simulator has this control

    code_notify = merchant.wait_for(
        lambda: next((n for c, n in merchant.notifies if c == code and n.out_trade_no == out_trade_no), None)
    )
    assert (code_notify.kind, code_notify.state, code_notify.amount_minor) == ("payment", "succeeded", 1234)
    status = adapter.query_payment(out_trade_no)
    assert (status.state, status.amount_minor, status.currency) == ("succeeded", 1234, "CNY")


def test_a_payout_through_a_bank_settles_on_its_own_and_is_notified(
    registry: ChannelRegistry, merchant: Merchant
) -> None:
    code = "bank_direct:icbc"
    adapter = registry.adapter(code)
    assert isinstance(adapter, BankDirectAdapter)
    out_payout_no = next_number("P")
    accepted = adapter.create_payout(
        PayoutRequest(
            out_payout_no=out_payout_no,
            amount_minor=500_000,
            currency="CNY",
            payee_account="6222020200112233445",
            payee_name="张三",
            remark="提现",
            notify_url=merchant.payout_notify_url(code),
        )
    )
    assert (accepted.state, accepted.amount_minor) == ("processing", 500_000)

    notified = merchant.wait_for(
        lambda: next((n for c, n in merchant.payout_notifies if n.status.out_payout_no == out_payout_no), None)
    )
    assert notified.status.state == "succeeded"
    queried = adapter.query_payout(out_payout_no)
    assert (queried.state, queried.amount_minor, queried.bank_payout_no) == (
        "succeeded",
        500_000,
        accepted.bank_payout_no,
    )


# --------------------------------------------------------------------------- restarts


def key_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((directory / "keys").iterdir()) if path.name != ".lock"}


def test_a_restart_on_the_same_directory_keeps_keys_ids_and_configuration(tmp_path: Path) -> None:
    first = start_sandbox(tmp_path)
    try:
        keys_before = key_files(tmp_path)
        config_before = first.config_path.read_bytes()
        ports = {code: server.port for code, server in first.servers.items()}
    finally:
        first.stop()
    assert len([name for name in keys_before if name.endswith(".pem")]) == 16
    for name in keys_before:
        mode = stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode)
        secret = name.endswith(".key") or (name.endswith(".pem") and not name.endswith(".pub.pem"))
        assert mode == (0o600 if secret else 0o644), (name, oct(mode))

    second = start_sandbox(tmp_path, ports=ports)  # the ports the first one had, as make run's fixed ones
    try:
        assert key_files(tmp_path) == keys_before
        assert second.config_path.read_bytes() == config_before
        registry = load_registry(second.config_path)
        try:
            assert registry.codes() == CHANNEL_CODES
            out_trade_no = next_number("R")
            registry.adapter("wechatpay").create_payment(
                CreatePayment(
                    out_trade_no=out_trade_no,
                    amount_minor=1,
                    currency="CNY",
                    subject="restart",
                    method="native",
                    notify_url="http://127.0.0.1:9/unused",
                )
            )
            second.wechatpay.pay(out_trade_no)
            assert registry.adapter("wechatpay").query_payment(out_trade_no).state == "succeeded"
        finally:
            registry.close()
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ports": {"paypal": 8105}}, "ports names unknown channels paypal"),
        ({"notify_delay_seconds": 0}, "notify_delay_seconds must be positive"),
        ({"payout_settle_seconds": -1}, "payout_settle_seconds must not be negative"),
    ],
)
def test_impossible_options_are_refused_before_anything_starts(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        start_sandbox(tmp_path / "sandbox", **options)
    assert not (tmp_path / "sandbox").exists()
