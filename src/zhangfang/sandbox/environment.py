"""The whole sandbox in one call: every channel simulator on its own loopback port, plus its channels TOML.

``start_sandbox(directory)`` starts four simulators — Alipay, WeChat Pay and two
directly connected banks (the ``icbc`` and ``cmb`` profiles) — each served on
its own port (the WeChat Pay simulator verifies signatures over the raw request
path, so none is mounted under a prefix), and writes ``<directory>/channels.toml``
describing them in the production format (``zhangfang.channels.registry``). Any
process — the API server, a separate ``zhangfang worker``, a test — builds the
same registry from that file with ``load_registry``; ``Sandbox.registry()`` does
it for the process that started the sandbox.

Guarantees
- Keys persist. RSA keys (2048-bit), the WeChat Pay APIv3 key and the merchant
  ids are generated on first use into ``<directory>/keys/`` and reused by every
  later start on the same directory, so restarting keeps the configuration
  stable. Files are written atomically (temporary file, then rename), private
  keys and the APIv3 key with mode 0600; concurrent starts on one directory
  serialize on a lock file, so they never make two different keys for one name.
- The configuration is the production format: the same ``load_registry`` reads
  it, with keys referenced by ``*_file`` paths relative to the file. Only the
  ports and base URLs change between starts (when ports are chosen freely).
- Nothing listens beyond ``host`` (default ``127.0.0.1``): each simulator is
  bound there, and its ``base_url`` is ``http://host:port``.
- Simulated costs agree with the configured routes: each channel's fee in its
  bill (Alipay's 服务费, WeChat Pay's 手续费, the banks' fee column) is the
  route's ``cost_rate``.

Time: ``notify_delay_seconds`` is how many wall seconds one second of a
channel's own schedule lasts (its notify retries), the same for every
simulator (0.01 turns WeChat Pay's first 15 s retry into 0.15 s, Alipay's
first 4 min retry into 2.4 s). ``refund_settle_seconds`` (WeChat Pay refunds
stay PROCESSING that long) and ``payout_settle_seconds`` (bank payouts) are wall
seconds; ``None`` leaves them pending until the simulator's control
(``settle_refund``, ``settle_payouts``) is called.

The sandbox is for development and tests only: its keys sit unencrypted beside
the configuration, and the simulators accept any payer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zhangfang.channels.bank_direct import PROFILES
from zhangfang.channels.registry import ChannelNotConfigured, ChannelRegistry, load_registry
from zhangfang.sandbox.alipay import AlipaySimulator, SandboxMerchant, create_alipay_simulator
from zhangfang.sandbox.bank_direct import BankSimulator, create_bank_simulator
from zhangfang.sandbox.server import RunningServer, serve_in_thread
from zhangfang.sandbox.wechatpay import SimulatedMerchant, WechatPaySimulator, create_simulator

__all__ = ["CHANNEL_CODES", "CONFIG_FILE_NAME", "DEFAULT_PORTS", "KEYS_DIRECTORY_NAME", "Sandbox", "start_sandbox"]

# The fixed ports ``make run`` uses; tests pass 0 (any free port).
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType(
    {"alipay": 8101, "wechatpay": 8102, "bank_direct:icbc": 8103, "bank_direct:cmb": 8104}
)
CHANNEL_CODES: tuple[str, ...] = tuple(DEFAULT_PORTS)
CONFIG_FILE_NAME = "channels.toml"
KEYS_DIRECTORY_NAME = "keys"
BANK_PROFILES: tuple[str, ...] = ("icbc", "cmb")
RSA_KEY_SIZE_BITS = 2048
SECONDS_PER_MINUTE = 60
_IDS_FILE_NAME = "ids.json"
_LOCK_FILE_NAME = ".lock"


@dataclass(frozen=True)
class _SandboxRoute:
    method: str
    channel_method: str
    cost_rate: str  # Decimal text, as the TOML file holds it
    amount_max_minor: int

    @property
    def cost_rate_bp(self) -> int:
        """The rate in basis points, as the simulators take it; exact for the rates below."""
        basis_points = Decimal(self.cost_rate) * 10_000
        assert basis_points == basis_points.to_integral_value(), self.cost_rate
        return int(basis_points)


# Realistic costs: Alipay and WeChat Pay charge merchants 0.38%; banks less, and CMB takes larger payments.
_ROUTES: Mapping[str, _SandboxRoute] = MappingProxyType(
    {
        "alipay": _SandboxRoute("alipay", "page", "0.0038", 10_000_000_000),
        "wechatpay": _SandboxRoute("wechatpay", "native", "0.0038", 10_000_000_000),
        "bank_direct:icbc": _SandboxRoute("bank_card", "bank_card", "0.0020", 5_000_000),
        "bank_direct:cmb": _SandboxRoute("bank_card", "bank_card", "0.0025", 20_000_000),
    }
)


@dataclass
class Sandbox:
    """A running sandbox: the simulators, their servers (by channel code) and the configuration file."""

    directory: Path
    config_path: Path
    alipay: AlipaySimulator
    wechatpay: WechatPaySimulator
    banks: dict[str, BankSimulator]  # by profile: "icbc", "cmb"
    servers: dict[str, RunningServer]  # by channel code
    _stopped: bool = field(default=False, init=False, repr=False)

    def registry(self) -> ChannelRegistry:
        """A new registry built from ``config_path`` (the caller closes it)."""
        return load_registry(self.config_path)

    def simulator(self, code: str) -> object:
        """The simulator of channel ``code`` (``alipay``, ``wechatpay``, ``bank_direct:icbc``, ``bank_direct:cmb``)."""
        if code == "alipay":
            return self.alipay
        if code == "wechatpay":
            return self.wechatpay
        profile = code.removeprefix("bank_direct:")
        if code.startswith("bank_direct:") and profile in self.banks:
            return self.banks[profile]
        raise ChannelNotConfigured(f"the sandbox has no channel {code!r} (it has {', '.join(CHANNEL_CODES)})")

    def base_url(self, code: str) -> str:
        """Where the simulator of channel ``code`` listens (``http://host:port``)."""
        try:
            return self.servers[code].base_url
        except KeyError:
            raise ChannelNotConfigured(f"the sandbox has no channel {code!r}") from None

    def phone_url(self, code: str, qr_code: str) -> str | None:
        """What scanning ``qr_code`` of channel ``code`` opens in the sandbox: the simulator's payer page."""
        if code == "wechatpay":
            return self.wechatpay.cashier_url(qr_code)
        return qr_code if qr_code.startswith(("http://", "https://")) else None

    def stop(self) -> None:
        """Stops the simulators' notify and settlement threads, then the servers; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        _stop(self.alipay, self.wechatpay, self.banks, self.servers)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_sandbox(
    directory: Path,
    *,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    notify_delay_seconds: float = 0.01,
    refund_settle_seconds: float | None = 0.5,
    payout_settle_seconds: float | None = 0.5,
    clock: Callable[[], dt.datetime] | None = None,
) -> Sandbox:
    """Starts the four simulators on ``host`` and writes ``<directory>/channels.toml`` for them.

    ``ports`` maps channel code to port (missing codes and 0 mean any free port;
    ``DEFAULT_PORTS`` are the fixed ones of ``make run``). ``clock`` is the
    simulators' business clock (default: the system's). See the module
    docstring for the time parameters. On failure everything already started is
    stopped again before the error propagates.
    """
    if not notify_delay_seconds > 0:
        raise ValueError(f"notify_delay_seconds must be positive, got {notify_delay_seconds!r}")
    for name, value in (
        ("refund_settle_seconds", refund_settle_seconds),
        ("payout_settle_seconds", payout_settle_seconds),
    ):
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, got {value!r}")
    unknown = sorted(set(ports or {}) - set(CHANNEL_CODES))
    if unknown:
        raise ValueError(
            f"ports names unknown channels {', '.join(unknown)}; the sandbox has {', '.join(CHANNEL_CODES)}"
        )
    chosen_ports = {code: (ports or {}).get(code, 0) for code in CHANNEL_CODES}

    directory = Path(directory).resolve()
    keys = _Keys.ensure(directory / KEYS_DIRECTORY_NAME)
    clock_option: dict[str, Any] = {} if clock is None else {"clock": clock}

    def channel_seconds(wall_seconds: float | None) -> float | None:
        # WeChat Pay and the banks count their settling time in channel seconds, scaled like their retries.
        return None if wall_seconds is None else wall_seconds / notify_delay_seconds

    alipay: AlipaySimulator | None = None
    wechatpay: WechatPaySimulator | None = None
    banks: dict[str, BankSimulator] = {}
    servers: dict[str, RunningServer] = {}
    try:
        alipay = create_alipay_simulator(
            alipay_private_key_pem=keys.private_pem("alipay"),
            merchants=[
                SandboxMerchant(
                    app_id=keys.ids["alipay"]["app_id"],
                    pid=keys.ids["alipay"]["pid"],
                    app_public_key_pem=keys.public_pem("alipay-app"),
                )
            ],
            # Alipay's simulator counts its retry schedule in minutes.
            notify_delay_seconds=notify_delay_seconds * SECONDS_PER_MINUTE,
            fee_rate_bp=_ROUTES["alipay"].cost_rate_bp,
            **clock_option,
        )
        servers["alipay"] = _serve(alipay.app, "alipay", host, chosen_ports["alipay"])
        alipay.base_url = servers["alipay"].base_url

        wechat_ids = keys.ids["wechatpay"]
        wechatpay = create_simulator(
            merchants=[
                SimulatedMerchant(
                    mchid=wechat_ids["mchid"],
                    appid=wechat_ids["appid"],
                    apiv3_key=keys.apiv3_key(),
                    cert_serial_no=wechat_ids["cert_serial_no"],
                    public_key_pem=keys.public_pem("wechatpay-merchant"),
                )
            ],
            platform_private_key_pem=keys.private_pem("wechatpay-platform"),
            platform_public_key_id=wechat_ids["platform_public_key_id"],
            notify_delay_seconds=notify_delay_seconds,
            refund_settle_seconds=channel_seconds(refund_settle_seconds),
            fee_rate_bp=_ROUTES["wechatpay"].cost_rate_bp,
            **clock_option,
        )
        servers["wechatpay"] = _serve(wechatpay.app, "wechatpay", host, chosen_ports["wechatpay"])
        wechatpay.base_url = servers["wechatpay"].base_url

        for profile in BANK_PROFILES:
            code = f"bank_direct:{profile}"
            bank = create_bank_simulator(
                PROFILES[profile],
                bank_private_key=keys.private_pem(f"{profile}-bank"),
                platform_public_key=keys.public_pem(f"{profile}-platform"),
                merchant_id=keys.ids[code]["merchant_id"],
                notify_delay_seconds=notify_delay_seconds,
                payout_settle_seconds=channel_seconds(payout_settle_seconds),
                fee_rate_bp=_ROUTES[code].cost_rate_bp,
                **clock_option,
            )
            banks[profile] = bank
            servers[code] = _serve(bank.app, code, host, chosen_ports[code])
            bank.base_url = servers[code].base_url

        config_path = directory / CONFIG_FILE_NAME
        _write_atomically(config_path, _config_text(keys, servers).encode(), mode=0o644)
    except BaseException:
        _stop(alipay, wechatpay, banks, servers)
        raise
    assert alipay is not None and wechatpay is not None
    return Sandbox(
        directory=directory,
        config_path=config_path,
        alipay=alipay,
        wechatpay=wechatpay,
        banks=banks,
        servers=servers,
    )


def _serve(app: object, code: str, host: str, port: int) -> RunningServer:
    try:
        return serve_in_thread(app, host=host, port=port)
    except RuntimeError as error:
        raise RuntimeError(f"the {code} simulator could not listen on {host}:{port} (port in use?): {error}") from error


def _stop(
    alipay: AlipaySimulator | None,
    wechatpay: WechatPaySimulator | None,
    banks: Mapping[str, BankSimulator],
    servers: Mapping[str, RunningServer],
) -> None:
    # Simulators first: closing them wakes requests held by their timeout controls, so the servers can stop.
    if alipay is not None:
        alipay.close()
    if wechatpay is not None:
        wechatpay.close()
    for bank in banks.values():
        bank.shutdown()
    for running in servers.values():
        running.server.should_exit = True  # all at once; each notices within a tick of its loop
    for running in servers.values():
        running.stop()


# --------------------------------------------------------------------------- keys and ids


@dataclass(frozen=True)
class _Keys:
    """The sandbox's key directory: RSA key pairs by name, the APIv3 key and the ids, all created once."""

    directory: Path
    ids: Mapping[str, Mapping[str, str]]

    # Whose key each name is: the merchant side (our adapters) and the channel side (the simulators).
    RSA_KEY_NAMES = (
        "alipay-app",  # our Alipay app key; Alipay holds its public half
        "alipay",  # Alipay's own key; our adapter verifies with its public half
        "wechatpay-merchant",
        "wechatpay-platform",
        *(f"{profile}-{side}" for profile in BANK_PROFILES for side in ("platform", "bank")),
    )
    APIV3_KEY_FILE_NAME = "wechatpay-apiv3.key"

    @classmethod
    def ensure(cls, directory: Path) -> _Keys:
        """Creates whatever is missing in ``directory`` and returns the keys; safe against concurrent callers."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(directory / _LOCK_FILE_NAME):
            for name in cls.RSA_KEY_NAMES:
                _ensure_key_pair(directory, name)
            apiv3 = directory / cls.APIV3_KEY_FILE_NAME
            if not apiv3.exists():
                # 32 ASCII characters from [0-9a-f]: an AES-256 key, as the merchant platform issues one.
                _write_atomically(apiv3, secrets.token_hex(16).encode(), mode=0o600)
            ids = _ensure_ids(directory / _IDS_FILE_NAME)
        return cls(directory=directory, ids=ids)

    def private_path(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def public_path(self, name: str) -> Path:
        return self.directory / f"{name}.pub.pem"

    def private_pem(self, name: str) -> str:
        return self.private_path(name).read_text()

    def public_pem(self, name: str) -> str:
        return self.public_path(name).read_text()

    def apiv3_key(self) -> str:
        return (self.directory / self.APIV3_KEY_FILE_NAME).read_text().strip()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _ensure_key_pair(directory: Path, name: str) -> None:
    """The private key is the source of truth: made once; its public half is (re)written whenever it differs."""
    private_path = directory / f"{name}.pem"
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey), private_path
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE_BITS)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_atomically(private_path, private_pem, mode=0o600)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path = directory / f"{name}.pub.pem"
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        _write_atomically(public_path, public_pem, mode=0o644)


def _new_ids() -> dict[str, dict[str, str]]:
    """Ids in each channel's own shape, random so that two sandboxes never look like the same merchant."""

    def digits(count: int) -> str:
        return "".join(str(secrets.randbelow(10)) for _ in range(count))

    return {
        "alipay": {"app_id": "2021" + digits(12), "pid": "2088" + digits(12)},
        "wechatpay": {
            "mchid": "19" + digits(8),
            "appid": "wx" + secrets.token_hex(8),
            "cert_serial_no": secrets.token_hex(20).upper(),
            "platform_public_key_id": "PUB_KEY_ID_01" + digits(34),
        },
        **{f"bank_direct:{profile}": {"merchant_id": "M" + digits(9)} for profile in BANK_PROFILES},
    }


def _ensure_ids(path: Path) -> dict[str, dict[str, str]]:
    fresh = _new_ids()
    stored: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    # Keep every stored id; add only what an older sandbox did not have yet.
    merged = {code: {**fresh[code], **stored.get(code, {})} for code in fresh}
    if merged != stored:
        _write_atomically(path, (json.dumps(merged, indent=2, sort_keys=True) + "\n").encode(), mode=0o644)
    return merged


def _write_atomically(path: Path, content: bytes, *, mode: int) -> None:
    """Writes ``content`` to ``path`` so that readers see the old file or the new one, never a part."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)  # before any byte is written: a private key is never readable by others
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# --------------------------------------------------------------------------- the configuration file


def _toml_string(value: str) -> str:
    # A JSON string of printable text is a valid TOML basic string (same quotes and escapes).
    return json.dumps(value, ensure_ascii=False)


def _config_text(keys: _Keys, servers: Mapping[str, RunningServer]) -> str:
    """The channels TOML for the running simulators; key paths are relative to the file (``keys/…``)."""

    def key_file(file_name: str) -> str:
        return _toml_string(f"{KEYS_DIRECTORY_NAME}/{file_name}")

    def route(code: str) -> list[str]:
        spec = _ROUTES[code]
        return [
            "",
            "  [[channels.routes]]",
            f"  method = {_toml_string(spec.method)}",
            f"  channel_method = {_toml_string(spec.channel_method)}",
            '  currency = "CNY"',
            "  amount_min = 1",
            f"  amount_max = {spec.amount_max_minor}",
            f"  cost_rate = {_toml_string(spec.cost_rate)}",
            "  cost_fixed = 0",
            "  priority = 100",
        ]

    alipay_ids, wechat_ids = keys.ids["alipay"], keys.ids["wechatpay"]
    lines = [
        "# The sandbox's channels, written by zhangfang.sandbox.environment.start_sandbox on every start.",
        "# Same format as production (docs/channels/configuration.md); for development only.",
        "",
        "[[channels]]",
        'code = "alipay"',
        'kind = "alipay"',
        f"app_id = {_toml_string(alipay_ids['app_id'])}",
        f"app_private_key_file = {key_file('alipay-app.pem')}",
        f"alipay_public_key_file = {key_file('alipay.pub.pem')}",
        f"seller_id = {_toml_string(alipay_ids['pid'])}",
        f"gateway_url = {_toml_string(servers['alipay'].base_url + '/gateway.do')}",
        "timeout_seconds = 10",
        *route("alipay"),
        "",
        "[[channels]]",
        'code = "wechatpay"',
        'kind = "wechatpay"',
        f"mchid = {_toml_string(wechat_ids['mchid'])}",
        f"appid = {_toml_string(wechat_ids['appid'])}",
        f"private_key_file = {key_file('wechatpay-merchant.pem')}",
        f"cert_serial_no = {_toml_string(wechat_ids['cert_serial_no'])}",
        f"apiv3_key_file = {key_file(_Keys.APIV3_KEY_FILE_NAME)}",
        f"platform_public_key_file = {key_file('wechatpay-platform.pub.pem')}",
        f"platform_public_key_id = {_toml_string(wechat_ids['platform_public_key_id'])}",
        f"gateway_url = {_toml_string(servers['wechatpay'].base_url)}",
        "timeout_seconds = 10",
        *route("wechatpay"),
    ]
    for profile in BANK_PROFILES:
        code = f"bank_direct:{profile}"
        lines += [
            "",
            "[[channels]]",
            f"code = {_toml_string(code)}",
            'kind = "bank_direct"',
            f"profile = {_toml_string(profile)}",
            f"base_url = {_toml_string(servers[code].base_url)}",
            f"merchant_id = {_toml_string(keys.ids[code]['merchant_id'])}",
            f"platform_private_key_file = {key_file(f'{profile}-platform.pem')}",
            f"bank_public_key_file = {key_file(f'{profile}-bank.pub.pem')}",
            "payouts = true",
            "timeout_seconds = 10",
            *route(code),
        ]
    return "\n".join(lines) + "\n"
