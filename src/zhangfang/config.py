"""Settings, read from ``ZHANGFANG_*`` environment variables (and ``.env`` if present)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHANGFANG_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/zhangfang.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host:port/db",
    )
    admin_api_key: str | None = Field(
        default=None,
        description="Bearer key for the admin API (/v1/ledger/...). The server refuses to start without one.",
    )
    platform_private_key_pem: str | None = Field(
        default=None,
        description="PEM key that signs responses to RSA2 merchants; generated and stored on first use when unset",
    )
    timezone: str = Field(default="Asia/Shanghai", description="Zone of business dates (accounting dates).")
    sqlite_synchronous: str = Field(
        default="FULL", description="PRAGMA synchronous for SQLite; FULL survives power loss with WAL."
    )
    run_jobs_in_server: bool = Field(
        default=True, description="Run the periodic ledger jobs (seal, fold, expire) inside the API process."
    )
    job_interval_seconds: float = Field(default=1.0, description="Pause between rounds of periodic jobs.")
    job_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a worker holds a claimed job; longer than the slowest handler times the batch.",
    )
    webhook_timeout_seconds: float = Field(
        default=15.0, gt=0, le=60, description="Limit on connecting, sending and each read of one webhook attempt."
    )
    webhook_allow_http: bool = Field(
        default=False,
        description="Accept http:// webhook URLs to any host (test environments). Off: https only, except loopback.",
    )
    webhook_secret_grace_seconds: int = Field(
        default=24 * 3600, ge=0, description="How long a rotated-out webhook secret keeps signing beside the new one."
    )
    transaction_age_max_seconds: int = Field(
        default=60,
        description="Longest a ledger write transaction may stay open; day-end waits this long at most.",
    )

    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where channels and payers reach this platform: notify URLs and the cashier are built on it.",
    )
    channels_file: Path | None = Field(
        default=None, description="TOML file configuring the payment channels (docs/channels/configuration.md)."
    )
    sandbox: bool = Field(
        default=False,
        description="Development: start the local channel simulators inside the server and use them as the channels "
        "(when channels_file is unset). Never in production.",
    )
    sandbox_dir: Path = Field(
        default=Path("var/sandbox"),
        description="Where the sandbox keeps its generated keys and its channels.toml (workers read it from there).",
    )
    database_pool_size: int = Field(
        default=20,
        ge=1,
        description="PostgreSQL connections a process keeps open (as many again may open under a burst, and "
        "close after). Keep it above api_threads so requests never open connections.",
    )
    api_threads: int = Field(
        default=16,
        ge=1,
        le=200,
        description="Threads an API process runs blocking handlers in (the database calls). Beyond a few per core "
        "they only contend for Python's GIL; each holds a database connection while it works.",
    )
    merchant_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long an API process trusts a merchant it read (status, keys) before reading it again; "
        "changes made through the same process apply at once. 0: read on every request.",
    )
    settlement_calendar_file: Path | None = Field(
        default=None,
        description="TOML: the State Council's published holiday schedule (节假日安排) for the years after the "
        "last one the installed chinese-calendar covers, a table per year with holidays and working_days "
        "(weekend days worked) as lists of dates (docs/settlement.md).",
    )
    accounting_chart_file: Path | None = Field(
        default=None,
        description="TOML chart of accounts (会计科目表); the packaged chart of a payment institution when unset.",
    )
    accounting_rules_file: Path | None = Field(
        default=None,
        description="TOML posting rules (记账规则: ledger codes to subjects, business codes to voucher templates).",
    )
    accounting_sync_mode: Literal["summary", "entry"] = Field(
        default="summary",
        description="How the periodic sync books a closed ledger day: summary vouchers (汇总凭证) or one per entry.",
    )
    payment_expiry_seconds: int = Field(
        default=1800, ge=60, le=7 * 86400, description="How long an order stays payable when it names no expiry."
    )
    payment_poll_schedule_seconds: tuple[float, ...] = Field(
        default=(15, 30, 60, 120, 300, 600),
        description="Waits before each query of an open payment whose notify has not come (the last one repeats).",
    )
    channel_failure_threshold: int = Field(
        default=5, ge=1, description="Failures in a row that take a channel out of rotation (circuit breaker)."
    )
    channel_cooldown_seconds: float = Field(
        default=60.0, gt=0, description="How long a channel that tripped its breaker stays out of rotation."
    )

    mandate_retry_schedule: str = Field(
        default="3d,7d,7d",
        pattern=r"^\s*[0-9]{1,6}[smhd]\s*(,\s*[0-9]{1,6}[smhd]\s*){0,19}$",
        description="Waits before each retry of a withholding debit that failed softly (insufficient funds, no "
        "answer), as durations like 3d,7d,7d (s, m, h, d); one retry per entry, then the debit fails. The default "
        "follows GoCardless Success+: three retries within 21 days.",
    )
    mandate_restricted_mccs: str = Field(
        default="7995,7800,7801,7802,5967",
        pattern=r"^\s*([0-9]{4}\s*(,\s*[0-9]{4}\s*)*)?$",
        description="Merchant category codes refused for withholding (comma-separated): no mandate is signed and no "
        "debit is made for a merchant of these industries (default: gambling, lotteries, adult content).",
    )
    mandate_debit_amount_max: int = Field(
        default=5_000_000,
        ge=1,
        description="The most one withholding debit may take, in fen, whatever a mandate allows (50,000 yuan).",
    )
    mandate_daily_amount_max: int = Field(
        default=20_000_000,
        ge=1,
        description="The most one mandate may debit per day (Asia/Shanghai due date), in fen, whatever it allows.",
    )
    mandate_code_seconds: int = Field(
        default=300, ge=30, le=3600, description="How long a one-time signing code (SMS) stays valid."
    )
    mandate_code_attempts_max: int = Field(
        default=5, ge=1, le=20, description="Wrong codes after which a signing code is spent (ask for a new one)."
    )

    def sqlite_path(self) -> Path | None:
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            return Path(self.database_url[len(prefix) :])
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
