"""Settlement shapes: merchants' terms, batches and their lines, run results, float and reserve reports.

Amounts are integers of the currency's minor unit; business and settlement
dates are ``datetime.date`` in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from zhangfang.settlement.calendar import Cycle
from zhangfang.settlement.fees import FeeContract


@dataclass(frozen=True)
class PayoutAccount:
    """The bank account settlements are paid to (``bank_code`` None: an account at the paying bank)."""

    account_number: str
    account_name: str
    bank_code: str | None = None


@dataclass(frozen=True)
class MerchantSettings:
    """A merchant's settlement terms; ``*_is_default`` says a term comes from the defaults, not a stored choice."""

    merchant_id: int
    merchant_ref: str
    cycle: Cycle
    fee_contract: FeeContract
    fee_contract_is_default: bool
    payout_account: PayoutAccount
    payout_account_is_default: bool
    payout_minimum: int | None

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types; the account number masked but its last four digits."""
        number = self.payout_account.account_number
        return {
            "merchant": self.merchant_ref,
            "cycle": str(self.cycle),
            "fee_contract": self.fee_contract.to_dict(),
            "fee_contract_is_default": self.fee_contract_is_default,
            "payout_account": {
                "account_number_masked": "*" * max(0, len(number) - 4) + number[-4:],
                "account_name": self.payout_account.account_name,
                "bank_code": self.payout_account.bank_code,
            },
            "payout_account_is_default": self.payout_account_is_default,
            "payout_minimum": self.payout_minimum,
        }


@dataclass
class DayLine:
    """One business date of a statement: payments captured and refunds, with fees per contract."""

    business_date: dt.date
    payment_count: int = 0
    captured: int = 0
    refund_count: int = 0
    refunds: int = 0
    fees: int = 0
    fees_returned: int = 0

    @property
    def net(self) -> int:
        """Captured - refunds - fees + fees returned."""
        return self.captured - self.refunds - self.fees + self.fees_returned


@dataclass(frozen=True)
class Deduction:
    """An amount owed by the merchant that a settlement takes before paying (a POS-loan instalment, …)."""

    kind: str
    ref: str
    amount: int
    description: str

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {"kind": self.kind, "ref": self.ref, "amount": self.amount, "description": self.description}


class DeductionProvider(Protocol):
    """A source of deductions, asked once per merchant in every run (``lending.pos.PosLoanDeductions``).

    ``deductions_for`` says what to take, at most ``available`` in total (the
    merchant's available pending-settlement balance after the fee adjustment);
    ``net`` is the statement's net before any deduction (captured - refunds -
    fees + fees returned), for a provider that takes a share of it;
    ``book`` then moves each taken deduction in the ledger, in the run's
    transaction, debiting the merchant's pending-settlement account (business
    code ``settlement``) under an idempotency key derived from ``batch_ref``.
    """

    kind: str

    def deductions_for(
        self,
        conn: Connection,
        *,
        merchant_id: int,
        merchant_ref: str,
        settlement_date: dt.date,
        currency: str,
        net: int,
        available: int,
    ) -> Sequence[Deduction]: ...

    def book(
        self, conn: Connection, *, deduction: Deduction, merchant_ref: str, batch_ref: str, now: dt.datetime
    ) -> None: ...


@dataclass(frozen=True)
class Batch:
    """A settlement batch: one merchant, one settlement date, one currency; its statement lines in ``days``."""

    id: int
    ref: str
    merchant_id: int
    merchant_ref: str
    settlement_date: dt.date
    currency: str
    cycle: str
    fee_contract: dict[str, Any]
    first_business_date: dt.date
    last_business_date: dt.date
    payment_count: int
    captured: int
    refund_count: int
    refunds: int
    fees: int
    fees_returned: int
    fees_booked: int
    fees_returned_booked: int
    fee_adjustment: int
    fee_entry_ref: str | None
    deductions: int
    deduction_lines: list[dict[str, Any]]
    net: int
    carried_in: int
    payable: int
    available: int
    amount: int
    carried_out: int
    state: str
    payout_ref: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    days: tuple[DayLine, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types (dates as ISO text)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ("id", "days")}
        data["days"] = [{**vars(day), "net": day.net} for day in self.days]
        return data


@dataclass(frozen=True)
class SkippedMerchant:
    """A merchant a run left out, with nothing written for it; a later run of the same date settles it."""

    merchant_ref: str
    code: str
    message: str


@dataclass(frozen=True)
class RunResult:
    """What a settlement run did: every batch of the date (new and earlier ones) and who was left out."""

    settlement_date: dt.date
    currency: str
    batches: list[Batch]
    created: int
    replayed: int
    skipped: list[SkippedMerchant] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types, with the amounts paid out and carried in total."""
        return {
            "settlement_date": self.settlement_date,
            "currency": self.currency,
            "created": self.created,
            "replayed": self.replayed,
            "paid_out": sum(batch.amount for batch in self.batches),
            "carried_out": sum(batch.carried_out for batch in self.batches),
            "batches": [batch.as_json() for batch in self.batches],
            "skipped": [vars(skip) for skip in self.skipped],
        }


@dataclass(frozen=True)
class FloatLine:
    """Funds of one merchant and business date collected but not yet paid out.

    ``source``: ``unsettled`` (no batch yet; fees as booked at payment time) or
    the batch (``stb_…``) that covers the date but has not paid yet (fees per contract).
    """

    business_date: dt.date
    merchant_ref: str
    payment_count: int
    captured: int
    refunds: int
    fees: int
    fees_returned: int
    net: int
    source: str


@dataclass(frozen=True)
class FloatReport:
    """The float (沉淀资金) as of a date: lines per business date and merchant, totals per merchant and overall.

    ``by_merchant``: ``unsettled`` (the sum of its lines), ``carried`` (what its
    latest paid batch left unpaid for want of funds: owed, not held, so not in
    the float) and ``total`` (= ``unsettled``).
    """

    as_of: dt.date
    date_from: dt.date
    currency: str
    lines: list[FloatLine]
    by_merchant: dict[str, dict[str, int]]
    by_date: dict[dt.date, int]
    total: int

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types (dates as ISO text in ``by_date``)."""
        return {
            "as_of": self.as_of,
            "date_from": self.date_from,
            "currency": self.currency,
            "total": self.total,
            "by_date": {day.isoformat(): amount for day, amount in sorted(self.by_date.items())},
            "by_merchant": self.by_merchant,
            "lines": [vars(line) for line in self.lines],
        }


@dataclass(frozen=True)
class ReserveCheck:
    """Customer funds in the ledger (2241xx subjects) at the end of a date against the custody account's balance.

    ``gap`` = ``bank_balance`` - ``customer_funds``: 0 when they agree; negative
    when the custody account holds less than customers are owed (a shortfall).
    """

    date: dt.date
    currency: str
    ledger_codes: dict[str, int]
    customer_funds: int
    bank_balance: int
    bank_account: str | None
    statement_closing_date: dt.date | None
    gap: int

    @property
    def agrees(self) -> bool:
        """Whether the custody balance equals the customer funds to the fen."""
        return self.gap == 0

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types, with ``agrees``."""
        return {**vars(self), "agrees": self.agrees}
