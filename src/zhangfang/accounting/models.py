"""Shapes the accounting system takes in and gives out. Plain frozen dataclasses: no framework here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["debit", "credit"]
SubjectType = Literal["asset", "liability", "equity", "common", "income", "expense"]
VoucherKind = Literal["summary", "entry", "manual", "closing"]
VoucherState = Literal["pending", "posted", "rejected"]
SyncMode = Literal["summary", "entry"]

# The side a subject's balance normally sits on, by type. Common subjects (共同类, such as clearing
# funds in transit) may sit on either; they are kept debit-normal and shown by the sign of the balance.
NORMAL_SIDE: dict[str, Side] = {
    "asset": "debit",
    "expense": "debit",
    "common": "debit",
    "liability": "credit",
    "equity": "credit",
    "income": "credit",
}

# The system's name as the maker of the vouchers it generates from the ledger.
SYSTEM_MAKER = "zhangfang"


@dataclass(frozen=True)
class Subject:
    """One subject (会计科目) of the chart of accounts."""

    code: str
    name_zh: str
    name_en: str
    type: SubjectType
    normal_side: Side
    parent_code: str | None = None
    leaf: bool = True


@dataclass(frozen=True)
class Chart:
    """The chart of accounts, subjects in file order (parents before children)."""

    subjects: tuple[Subject, ...]

    def by_code(self) -> dict[str, Subject]:
        return {subject.code: subject for subject in self.subjects}


@dataclass(frozen=True)
class LedgerCodeMapping:
    """Where the ledger accounts of one ledger code are kept in the books (科目映射)."""

    ledger_code: str
    subject_code: str
    dimension: str | None = None
    dimension_source: Literal["owner", "account"] = "owner"


@dataclass(frozen=True)
class Rule:
    """The voucher template of one ledger business code."""

    business_code: str
    summary: str
    debit: tuple[str, ...]  # ledger codes it may debit
    credit: tuple[str, ...]  # ledger codes it may credit


@dataclass(frozen=True)
class Rules:
    """Posting rules (记账规则): ledger codes to subjects, business codes to voucher templates."""

    ledger_codes: dict[str, LedgerCodeMapping]
    rules: dict[str, Rule]
    digest: str  # sha256 of the canonical rules: recorded with every day they book


@dataclass(frozen=True)
class VoucherLine:
    """One line of a voucher: a subject, its auxiliary dimension value, and one positive side."""

    subject_code: str
    debit: int = 0
    credit: int = 0
    dimension: str | None = None
    aux: str = ""


@dataclass(frozen=True)
class ManualVoucherRequest:
    """An adjustment a finance person makes (手工凭证); a second person approves it before it is posted."""

    idempotency_key: str
    voucher_date: dt.date
    currency: str
    summary: str
    lines: tuple[VoucherLine, ...]
    maker: str


@dataclass(frozen=True)
class Voucher:
    """A voucher (记账凭证) and its lines."""

    ref: str
    kind: VoucherKind
    state: VoucherState
    period: str
    number: int | None
    voucher_date: dt.date
    currency: str
    business_code: str | None
    summary: str
    entry_count: int
    total: int
    maker: str
    checker: str | None
    created_at: dt.datetime
    posted_at: dt.datetime | None
    rejected_reason: str | None
    source_entry_ref: str | None = None
    lines: tuple[VoucherLine, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        """The voucher's number as finance staff write it: 记-2026-11-0001 (or the ref while unnumbered)."""
        return f"记-{self.period}-{self.number:04d}" if self.number is not None else self.ref


@dataclass(frozen=True)
class SyncedDay:
    """One ledger day booked into vouchers."""

    accounting_date: dt.date
    mode: SyncMode
    entry_count: int
    exception_count: int
    voucher_count: int
    rules_hash: str
    synced_at: dt.datetime


@dataclass(frozen=True)
class AccountingException:
    """A ledger entry that was not booked, and why."""

    entry_ref: str
    accounting_date: dt.date
    business_code: str
    reason: Literal["no_rule", "leg_not_in_rule"]
    detected_at: dt.datetime


@dataclass(frozen=True)
class Period:
    """An accounting period (会计期间): one calendar month."""

    period: str
    state: Literal["open", "closed"]
    next_number: int
    closed_at: dt.datetime | None
    closed_by: str | None
