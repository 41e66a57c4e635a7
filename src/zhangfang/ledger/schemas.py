"""The ledger's HTTP shapes (pydantic v2), and their translation from the dataclasses in ``models``.

Guarantees
- Amounts are JSON integers of the currency's minor unit (fen for CNY). Requests
  take them as ``StrictInt``: ``1.5``, ``"100"`` and ``true`` are refused as
  ``request_invalid`` before the service sees them. Zero and negative amounts
  pass this layer and are refused by the service (``amount_must_be_positive``),
  so the API and the CLI give the same code for the same rule.
- Booleans are ``StrictBool`` (``"yes"`` is not a flag), and request bodies
  refuse unknown fields: a misspelt ``expire_at`` is an error, never a hold
  that does not expire.
- Value rules (key length, currency code, side, balance) stay in the service,
  which names the broken rule; these schemas only say what the JSON looks like.
- Times are ISO 8601 with a zone; business dates are ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from zhangfang.api.responses import ErrorBody
from zhangfang.ledger.models import (
    Account,
    Balance,
    ChainStatus,
    DayClose,
    Entry,
    EntryResult,
    Hold,
    HoldResult,
    VerifyReport,
)
from zhangfang.money import AMOUNT_MINOR_MAX

BATCH_ENTRIES_MAX = 5000


AmountMinor = Annotated[
    StrictInt,
    Field(
        le=AMOUNT_MINOR_MAX,
        description="integer amount in the currency's minor unit (fen for CNY); must be greater than zero",
        examples=[1250],
    ),
]
Side = Annotated[
    str,
    Field(description="'debit' or 'credit'", json_schema_extra={"enum": ["debit", "credit"]}),
]
Metadata = Annotated[
    dict[str, Any] | None,
    Field(description="caller's JSON object, at most 4 KiB, stored with the record"),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- balances and accounts


class BalanceOut(BaseModel):
    currency: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    posted: int = Field(description="posted balance, signed on the account's normal side")
    pending_in: int = Field(description="held funds that would arrive on the account's normal side")
    pending_out: int = Field(description="held funds that would leave the account's normal side")
    available: int = Field(description="posted minus pending_out")

    @classmethod
    def of(cls, balance: Balance) -> BalanceOut:
        return cls(**balance.as_dict())


class AccountIn(_Request):
    key: str = Field(description="caller's key; opening again with the same key returns the same account")
    ledger_code: str = Field(description="kind of account, e.g. merchant_pending", examples=["wallet"])
    currency: str = Field(description="ISO 4217 code", examples=["CNY"])
    normal_side: Side = "credit"
    owner_ref: str | None = Field(default=None, description="the owning party's id, 1 to 100 characters")
    debits_must_not_exceed_credits: StrictBool = False
    credits_must_not_exceed_debits: StrictBool = False
    hot: StrictBool = Field(default=False, description="hot account: postings appended, balance folded later")
    metadata: Metadata = None


class AccountFlags(BaseModel):
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    hot: bool
    closed: bool


class AccountOut(BaseModel):
    id: str = Field(description="account id, acc_…")
    key: str
    ledger_code: str
    currency: str
    owner_ref: str | None
    normal_side: str
    flags: AccountFlags
    balance: BalanceOut
    metadata: dict[str, Any] | None
    created_at: dt.datetime
    closed_at: dt.datetime | None

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls(
            id=account.ref,
            key=account.key,
            ledger_code=account.ledger_code,
            currency=account.currency,
            owner_ref=account.owner_ref,
            normal_side=account.normal_side,
            flags=AccountFlags(
                debits_must_not_exceed_credits=account.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits=account.credits_must_not_exceed_debits,
                hot=account.hot,
                closed=account.closed,
            ),
            balance=BalanceOut.of(account.balance),
            metadata=dict(account.metadata) if account.metadata is not None else None,
            created_at=account.created_at,
            closed_at=account.closed_at,
        )


class AccountPage(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class AccountBalanceOut(BalanceOut):
    account: str
    as_of_entry: str | None = Field(description="balance includes this entry and every earlier one")
    as_of_time: dt.datetime | None = Field(description="balance includes entries created up to this time")


class DayBalanceOut(BalanceOut):
    accounting_date: dt.date


class StatementLineOut(BaseModel):
    entry: str
    kind: str
    business_code: str
    accounting_date: dt.date
    created_at: dt.datetime
    side: str
    effect: str = Field(description="posted | pending | release")
    amount: int
    posted_balance_after: int = Field(description="the account's posted balance after this line")


class StatementPage(BaseModel):
    items: list[StatementLineOut]
    next_cursor: str | None


# --------------------------------------------------------------------------- entries


class LegIn(_Request):
    account: str = Field(description="account id, acc_…")
    side: Side
    amount: AmountMinor
    currency: str = Field(description="ISO 4217 code; must be the account's", examples=["CNY"])


class BatchEntryIn(_Request):
    idempotency_key: str = Field(description="caller's key; the same key and body replays the first result")
    business_code: str = Field(examples=["payment_capture"])
    legs: list[LegIn] = Field(description="at least two; per currency, debits equal credits")
    metadata: Metadata = None


class EntryIn(BatchEntryIn):
    idempotency_key: str | None = Field(  # type: ignore[assignment]
        default=None,
        description="caller's key; may come from the Idempotency-Key header instead (the body wins)",
    )


class PostingOut(BaseModel):
    seq: int
    account: str
    side: str
    effect: str = Field(description="posted | pending | release")
    amount: int
    currency: str


class EntryOut(BaseModel):
    id: str = Field(description="entry id")
    idempotency_key: str
    kind: str = Field(description="entry | reversal | hold | hold_post | hold_void | hold_expire")
    business_code: str
    accounting_date: dt.date
    metadata: dict[str, Any] | None
    created_at: dt.datetime
    reverses: str | None = Field(description="the entry this one reverses")
    hold: str | None = Field(description="the hold this entry creates, posts or releases")
    seal_seq: int | None = Field(description="position in the hash chain; null until sealed")
    postings: list[PostingOut]

    @classmethod
    def fields_of(cls, entry: Entry) -> dict[str, Any]:
        return {
            "id": entry.ref,
            "idempotency_key": entry.idempotency_key,
            "kind": entry.kind,
            "business_code": entry.business_code,
            "accounting_date": entry.accounting_date,
            "metadata": dict(entry.metadata) if entry.metadata is not None else None,
            "created_at": entry.created_at,
            "reverses": entry.reverses,
            "hold": entry.hold,
            "seal_seq": entry.seal_seq,
            "postings": [
                PostingOut(
                    seq=p.seq,
                    account=p.account,
                    side=p.side,
                    effect=p.effect,
                    amount=p.amount,
                    currency=p.currency,
                )
                for p in entry.postings
            ],
        }

    @classmethod
    def of(cls, entry: Entry) -> EntryOut:
        return cls(**cls.fields_of(entry))


class EntryResultOut(EntryOut):
    replayed: bool = Field(description="true when the key had been used before: nothing new was written")

    @classmethod
    def of_result(cls, result: EntryResult) -> EntryResultOut:
        return cls(**EntryOut.fields_of(result.entry), replayed=result.replayed)


class BatchIn(_Request):
    atomic: StrictBool = Field(
        default=True, description="true: all or nothing; false: each entry stands or falls alone"
    )
    entries: list[BatchEntryIn] = Field(min_length=1, max_length=BATCH_ENTRIES_MAX)


class BatchItemOut(BaseModel):
    index: int
    status: Literal["posted", "replayed", "refused"]
    entry: EntryOut | None = None
    error: ErrorBody | None = None


class BatchOut(BaseModel):
    results: list[BatchItemOut]


class ReverseIn(_Request):
    idempotency_key: str | None = Field(default=None, description="default: reverse:<entry id>")
    metadata: Metadata = None


# --------------------------------------------------------------------------- holds


class HoldIn(_Request):
    idempotency_key: str
    debit_account: str = Field(description="account the funds would leave (debited)")
    credit_account: str = Field(description="account the funds would reach (credited)")
    amount: AmountMinor
    currency: str = Field(examples=["CNY"])
    business_code: str
    expires_at: dt.datetime | None = Field(
        default=None, description="time zone aware; after it the hold can no longer be posted"
    )
    metadata: Metadata = None


class HoldPostIn(_Request):
    idempotency_key: str
    amount: AmountMinor | None = Field(
        default=None,
        description="amount to move, at most the hold's; default all of it, the rest is released",
    )
    metadata: Metadata = None


class HoldVoidIn(_Request):
    idempotency_key: str
    metadata: Metadata = None


class HoldOut(BaseModel):
    id: str = Field(description="hold id, hld_…")
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    state: str = Field(description="pending | posted | voided | expired")
    expires_at: dt.datetime | None
    posted_amount: int | None
    entry: str = Field(description="the entry that created the hold")
    resolving_entry: str | None = Field(description="the entry that posted, voided or expired it")
    created_at: dt.datetime
    resolved_at: dt.datetime | None

    @classmethod
    def of(cls, hold: Hold) -> HoldOut:
        return cls(
            id=hold.ref,
            debit_account=hold.debit_account,
            credit_account=hold.credit_account,
            amount=hold.amount,
            currency=hold.currency,
            state=hold.state,
            expires_at=hold.expires_at,
            posted_amount=hold.posted_amount,
            entry=hold.entry,
            resolving_entry=hold.resolving_entry,
            created_at=hold.created_at,
            resolved_at=hold.resolved_at,
        )


class HoldResultOut(BaseModel):
    hold: HoldOut
    entry: EntryOut
    replayed: bool

    @classmethod
    def of(cls, result: HoldResult) -> HoldResultOut:
        return cls(hold=HoldOut.of(result.hold), entry=EntryOut.of(result.entry), replayed=result.replayed)


# --------------------------------------------------------------------------- day-end and chain


class DayCloseIn(_Request):
    accounting_date: dt.date = Field(description="the open accounting date (YYYY-MM-DD)")


class DayCloseOut(BaseModel):
    accounting_date: dt.date
    state: str = Field(description="switched | closed")
    switched_at: dt.datetime
    closed_at: dt.datetime | None
    entry_count: int | None
    account_count: int | None

    @classmethod
    def of(cls, close: DayClose) -> DayCloseOut:
        return cls(
            accounting_date=close.accounting_date,
            state=close.state,
            switched_at=close.switched_at,
            closed_at=close.closed_at,
            entry_count=close.entry_count,
            account_count=close.account_count,
        )


class DayEndOut(BaseModel):
    open_date: dt.date = Field(description="the accounting date entries written now carry")
    closes: list[DayCloseOut] = Field(description="the most recent closes, newest first")


class ChainStatusOut(BaseModel):
    sealed_seq: int
    unsealed_count: int
    lag_seconds: float = Field(description="age of the oldest unsealed entry (not money)")
    oldest_unsealed: str | None

    @classmethod
    def of(cls, status: ChainStatus) -> ChainStatusOut:
        return cls(
            sealed_seq=status.sealed_seq,
            unsealed_count=status.unsealed_count,
            lag_seconds=status.lag_seconds,
            oldest_unsealed=status.oldest_unsealed,
        )


class VerifyReportOut(BaseModel):
    ok: bool
    checked: int
    unsealed: int
    first_bad_entry: str | None
    first_bad_seq: int | None
    reason: str | None = Field(description="entry_missing | content_changed | chain_truncated")
    details: dict[str, Any]

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyReportOut:
        return cls(
            ok=report.ok,
            checked=report.checked,
            unsealed=report.unsealed,
            first_bad_entry=report.first_bad_entry,
            first_bad_seq=report.first_bad_seq,
            reason=report.reason,
            details=dict(report.details),
        )
