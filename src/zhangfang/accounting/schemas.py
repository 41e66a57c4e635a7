"""The accounting system's JSON shapes (pydantic v2), shared by the HTTP API and ``--json`` in the CLI.

Guarantees
- Vouchers are records, like ledger entries: their amounts are JSON integers of
  the currency's minor unit (fen). Requests take them as ``StrictInt``.
- Reports (trial balance, 账账核对, statements) are for finance staff and other
  books: their amounts are decimal strings in major units (``"1234.56"``), exact,
  never floats.
- Request bodies refuse unknown fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from zhangfang.accounting.models import (
    AccountingException,
    ManualVoucherRequest,
    Period,
    SyncedDay,
    Voucher,
    VoucherLine,
)
from zhangfang.accounting.reports import CheckResult, TrialBalance
from zhangfang.money import format_minor

AmountMinor = Annotated[StrictInt, Field(ge=0, description="integer amount in the minor unit (fen for CNY)")]
Operator = Annotated[
    str, Field(description="the person acting, as the console's sign-on names them", examples=["li.kuaiji"])
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VoucherLineIO(BaseModel):
    subject_code: str = Field(examples=["642101"])
    debit: AmountMinor = 0
    credit: AmountMinor = 0
    dimension: str | None = Field(default=None, description="auxiliary dimension (辅助核算), e.g. merchant")
    aux: str = Field(default="", description="the dimension's value, e.g. merchant:mch_…")

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, line: VoucherLine) -> VoucherLineIO:
        return cls(
            subject_code=line.subject_code,
            debit=line.debit,
            credit=line.credit,
            dimension=line.dimension,
            aux=line.aux,
        )

    def to_model(self) -> VoucherLine:
        return VoucherLine(self.subject_code, self.debit, self.credit, self.dimension, self.aux)


class ManualVoucherIn(_Request):
    idempotency_key: str = Field(description="the maker's key: the same voucher under it is created once")
    voucher_date: dt.date
    currency: str = "CNY"
    summary: str = Field(description="摘要", examples=["调整渠道手续费 channel fee adjustment"])
    lines: list[VoucherLineIO]

    def to_request(self, maker: str) -> ManualVoucherRequest:
        return ManualVoucherRequest(
            idempotency_key=self.idempotency_key,
            voucher_date=self.voucher_date,
            currency=self.currency,
            summary=self.summary,
            lines=tuple(line.to_model() for line in self.lines),
            maker=maker,
        )


class RejectIn(_Request):
    reason: str


class SyncIn(_Request):
    mode: Literal["summary", "entry"] | None = Field(default=None, description="default: the configured mode")
    through: dt.date | None = Field(default=None, description="book closed ledger days up to this date")


class VoucherOut(BaseModel):
    ref: str
    label: str = Field(description="凭证号 as finance writes it: 记-YYYY-MM-NNNN (the ref while unnumbered)")
    kind: Literal["summary", "entry", "manual", "closing"]
    state: Literal["pending", "posted", "rejected"]
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
    source_entry: str | None = Field(description="kind entry: the ledger entry it books")
    lines: list[VoucherLineIO]

    @classmethod
    def of(cls, voucher: Voucher) -> VoucherOut:
        return cls(
            ref=voucher.ref,
            label=voucher.label,
            kind=voucher.kind,
            state=voucher.state,
            period=voucher.period,
            number=voucher.number,
            voucher_date=voucher.voucher_date,
            currency=voucher.currency,
            business_code=voucher.business_code,
            summary=voucher.summary,
            entry_count=voucher.entry_count,
            total=voucher.total,
            maker=voucher.maker,
            checker=voucher.checker,
            created_at=voucher.created_at,
            posted_at=voucher.posted_at,
            rejected_reason=voucher.rejected_reason,
            source_entry=voucher.source_entry_ref,
            lines=[VoucherLineIO.of(line) for line in voucher.lines],
        )


class VoucherPage(BaseModel):
    data: list[VoucherOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class PeriodOut(BaseModel):
    period: str
    state: Literal["open", "closed"]
    next_number: int
    closed_at: dt.datetime | None
    closed_by: str | None

    @classmethod
    def of(cls, period: Period) -> PeriodOut:
        return cls(**vars(period))


class SyncedDayOut(BaseModel):
    accounting_date: dt.date
    mode: Literal["summary", "entry"]
    entry_count: int
    exception_count: int
    voucher_count: int
    rules_hash: str
    synced_at: dt.datetime

    @classmethod
    def of(cls, day: SyncedDay) -> SyncedDayOut:
        return cls(**vars(day))


class ExceptionOut(BaseModel):
    entry: str
    accounting_date: dt.date
    business_code: str
    reason: Literal["no_rule", "leg_not_in_rule"]
    detected_at: dt.datetime

    @classmethod
    def of(cls, item: AccountingException) -> ExceptionOut:
        return cls(
            entry=item.entry_ref,
            accounting_date=item.accounting_date,
            business_code=item.business_code,
            reason=item.reason,
            detected_at=item.detected_at,
        )


class TrialBalanceRowOut(BaseModel):
    code: str
    name_zh: str
    name_en: str
    type: str
    level: int
    leaf: bool
    currency: str
    opening_debit: str
    opening_credit: str
    debit: str
    credit: str
    closing_debit: str
    closing_credit: str
    balance: str = Field(description="closing balance signed on the subject's normal side")
    balance_side: Literal["debit", "credit", "flat"] = Field(description="借 / 贷 / 平")


class TrialBalanceTotalsOut(BaseModel):
    currency: str
    balanced: bool
    opening_debit: str
    opening_credit: str
    debit: str
    credit: str
    closing_debit: str
    closing_credit: str


class TrialBalanceOut(BaseModel):
    date_from: dt.date
    date_to: dt.date
    balanced: bool
    totals: list[TrialBalanceTotalsOut]
    rows: list[TrialBalanceRowOut]

    @classmethod
    def of(cls, trial: TrialBalance) -> TrialBalanceOut:
        columns = ("opening_debit", "opening_credit", "debit", "credit", "closing_debit", "closing_credit")
        return cls(
            date_from=trial.date_from,
            date_to=trial.date_to,
            balanced=trial.balanced,
            totals=[
                TrialBalanceTotalsOut(
                    currency=total.currency,
                    balanced=total.balanced,
                    **{name: format_minor(getattr(total, name), total.currency) for name in columns},
                )
                for total in trial.totals
            ],
            rows=[
                TrialBalanceRowOut(
                    code=row.subject.code,
                    name_zh=row.subject.name_zh,
                    name_en=row.subject.name_en,
                    type=row.subject.type,
                    level=row.subject.level,
                    leaf=row.subject.leaf,
                    currency=row.currency,
                    balance=format_minor(row.balance, row.currency),
                    balance_side=_side(row.closing_debit - row.closing_credit),
                    **{name: format_minor(getattr(row, name), row.currency) for name in columns},
                )
                for row in trial.rows
            ],
        )


def _side(net: int) -> Literal["debit", "credit", "flat"]:
    return "debit" if net > 0 else "credit" if net < 0 else "flat"


class DifferenceCauseOut(BaseModel):
    kind: Literal["unbooked_entry", "manual_voucher"]
    ref: str
    accounting_date: dt.date
    detail: str
    amount: str = Field(description="its effect on the subject, debit positive")


class SubjectCheckOut(BaseModel):
    code: str
    name_zh: str
    currency: str
    ledger_codes: list[str]
    ledger_balance: str = Field(description="debit positive")
    accounting_balance: str = Field(description="debit positive")
    difference: str = Field(description="accounting minus ledger")
    causes: list[DifferenceCauseOut]


class UnmappedOut(BaseModel):
    ledger_code: str
    currency: str
    account_count: int
    balance: str


class CheckOut(BaseModel):
    date: dt.date
    ok: bool
    differences: int
    subjects: list[SubjectCheckOut]
    unmapped_ledger_codes: list[UnmappedOut]

    @classmethod
    def of(cls, result: CheckResult) -> CheckOut:
        return cls(
            date=result.date,
            ok=result.ok,
            differences=len(result.differences),
            subjects=[
                SubjectCheckOut(
                    code=item.subject.code,
                    name_zh=item.subject.name_zh,
                    currency=item.currency,
                    ledger_codes=list(item.ledger_codes),
                    ledger_balance=format_minor(item.ledger_balance, item.currency),
                    accounting_balance=format_minor(item.accounting_balance, item.currency),
                    difference=format_minor(item.difference, item.currency),
                    causes=[
                        DifferenceCauseOut(
                            kind=cause.kind,  # type: ignore[arg-type]
                            ref=cause.ref,
                            accounting_date=cause.accounting_date,
                            detail=cause.detail,
                            amount=format_minor(cause.amount, item.currency),
                        )
                        for cause in item.causes
                    ],
                )
                for item in result.subjects
            ],
            unmapped_ledger_codes=[
                UnmappedOut(
                    ledger_code=item.ledger_code,
                    currency=item.currency,
                    account_count=item.account_count,
                    balance=format_minor(item.balance, item.currency),
                )
                for item in result.unmapped
            ],
        )


def dump(model: BaseModel) -> dict[str, Any]:
    """A schema as the JSON the API answers (dates and times ISO 8601)."""
    return model.model_dump(mode="json")
