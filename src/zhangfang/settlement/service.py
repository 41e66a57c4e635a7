"""Settlement (清结算): merchants' terms, the settlement run, statements, the float and the reserve-fund check.

Every function that takes a ``Connection`` expects it inside a transaction and
never commits: the caller owns the unit of work. Payments and refunds are read
through ``payments.service``, balances through ``ledger.service``, payouts are
made by ``payments.service.create_payout`` (held, sent by a job, posted or voided).

The run for a settlement date D, per merchant whose cycle pays on D
(``calendar.business_dates_settling_on``) and who has payments, refunds or a
carried amount on those business dates:

1. statement lines per business date: payments paid that day (Asia/Shanghai),
   refunds that succeeded that day, fees per the merchant's ``FeeContract``
   (tiered models see the merchant's volume earlier in the same month), fees
   returned per contract;
2. one ``fee`` entry for the difference between the contract's fees and those
   booked at payment and refund time (Dr merchant pending / Cr fee income when
   the contract charges more, the mirror when less), so the merchant's pending
   settlement balance for those dates equals the statement's net;
3. deductions from the providers the caller passes (the CLI and API pass
   ``lending.pos.settlement_deductions()``: POS-loan repayments);
4. payable = captured - refunds - fees + fees returned - deductions + carried in;
   paid = payable, but never more than the available pending-settlement balance
   and nothing below the merchant's minimum payout; the rest is carried to the
   merchant's next batch;
5. a batch row and, when something is paid, a payout (代付) to the merchant's
   payout account: the funds are held at once, a job asks the bank, and the
   payout is posted or voided; the batch's state follows the payout's
   (``sync_batch_states``).

Guarantees
- Idempotent per merchant and settlement date: one batch per (merchant,
  settlement date, currency), by a unique constraint; running a date again
  returns the same batches and posts, holds and pays nothing more.
- A business date is settled once per merchant: a batch never covers a date at
  or before the last date of the merchant's previous batch (after a cycle change too).
- After the run, the ledger's fees equal the contract's for every settled
  payment and refund; the fee entry's key is ``settlement:<stb_…>:fee``.
- ``amount`` <= available balance, ``amount`` <= ``payable``,
  ``carried_out`` = ``payable`` - ``amount`` (checked here and by the database).
- A merchant that cannot be settled (unusable payout account, or a higher
  contract fee its balance cannot cover) gets nothing written and is reported.
- Only the ``CNY`` currency is settled by default; pass ``currency`` for another.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from zhangfang import ids, money
from zhangfang.accounting import chart as accounting_chart
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import EntryRequest, Leg
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant
from zhangfang.payments import postings
from zhangfang.payments import service as payments
from zhangfang.payments.models import Payee, PayoutRequest
from zhangfang.recon.importers import LineError, iter_statement
from zhangfang.settlement import errors
from zhangfang.settlement.calendar import DEFAULT_CYCLE, Cycle, business_dates_settling_on
from zhangfang.settlement.fees import FeeContract, Percentage
from zhangfang.settlement.models import (
    Batch,
    DayLine,
    Deduction,
    DeductionProvider,
    FloatLine,
    FloatReport,
    MerchantSettings,
    PayoutAccount,
    ReserveCheck,
    RunResult,
    SkippedMerchant,
)
from zhangfang.settlement.tables import settlement_batch_days, settlement_batches, settlement_merchants

SHANGHAI = ZoneInfo("Asia/Shanghai")
SETTLEMENT_CURRENCY = "CNY"
CODE_FEE = "fee"
CUSTOMER_FUNDS_SUBJECT_PREFIX = "2241"  # 应付客户备付金
FLOAT_DAYS_BACK = 92
DATE_YEAR_MIN, DATE_YEAR_MAX = 2000, 2999  # a fixed UTC+8 offset holds for these years
PAYOUT_REMARK = "结算 {date}"

_ACCOUNT_NUMBER = re.compile(r"[0-9]{8,32}")
_BANK_CODE = re.compile(r"[A-Za-z0-9]{2,16}")


class _Keep:
    """Leave this term as it is (``set_merchant_settings``)."""


KEEP: Any = _Keep()


# --------------------------------------------------------------------------- helpers


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    assert now.tzinfo is not None, "naive datetime"
    return now.astimezone(dt.UTC)


def _check_date(value: Any, field: str) -> dt.date:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise errors.BusinessDateInvalid(f"{field} is a datetime.date (Asia/Shanghai)", field=field)
    if not DATE_YEAR_MIN <= value.year <= DATE_YEAR_MAX:
        raise errors.BusinessDateInvalid(f"{field} is in the years {DATE_YEAR_MIN} to {DATE_YEAR_MAX}", field=field)
    return value


def day_start(day: dt.date) -> dt.datetime:
    """The instant (UTC) a business date starts in Asia/Shanghai."""
    return dt.datetime.combine(day, dt.time(), SHANGHAI).astimezone(dt.UTC)


def business_date_of(moment: dt.datetime) -> dt.date:
    """The business date (Asia/Shanghai) of an instant."""
    return moment.astimezone(SHANGHAI).date()


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _check_payout_account(account: Any) -> PayoutAccount:
    number = getattr(account, "account_number", None)
    name = getattr(account, "account_name", None)
    bank_code = getattr(account, "bank_code", None)
    if not isinstance(number, str) or not _ACCOUNT_NUMBER.fullmatch(number):
        raise errors.SettlementPayeeInvalid("account_number is 8 to 32 digits", field="payout_account.account_number")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise errors.SettlementPayeeInvalid("account_name is 1 to 100 characters", field="payout_account.account_name")
    if bank_code is not None and (not isinstance(bank_code, str) or not _BANK_CODE.fullmatch(bank_code)):
        raise errors.SettlementPayeeInvalid("bank_code is 2 to 16 letters and digits", field="payout_account.bank_code")
    return PayoutAccount(account_number=number, account_name=name.strip(), bank_code=bank_code)


def _check_minimum(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise errors.PayoutMinimumInvalid("payout_minimum is an int >= 0 of the minor unit", field="payout_minimum")
    return value


def default_fee_contract(merchant: Merchant) -> FeeContract:
    """The contract of a merchant without one: a percentage at its ``fee_rate``, refunds returning the fee."""
    return FeeContract(fee_model=Percentage(rate=merchant.fee_rate), refund_returns_fee=True)


def _settings_of(merchant: Merchant, row: Row[Any] | None) -> MerchantSettings:
    stored_contract = row is not None and row.fee_contract is not None
    stored_account = row is not None and row.payee_account_number is not None
    if stored_account:
        assert row is not None
        account = PayoutAccount(row.payee_account_number, row.payee_account_name, row.payee_bank_code)
    else:
        account = PayoutAccount(
            merchant.settlement_account.account_number,
            merchant.settlement_account.account_name,
            row.payee_bank_code if row is not None else None,
        )
    return MerchantSettings(
        merchant_id=merchant.id,
        merchant_ref=merchant.ref,
        cycle=Cycle.parse(row.cycle) if row is not None else DEFAULT_CYCLE,
        fee_contract=FeeContract.from_dict(row.fee_contract) if stored_contract else default_fee_contract(merchant),  # type: ignore[union-attr]
        fee_contract_is_default=not stored_contract,
        payout_account=account,
        payout_account_is_default=not stored_account,
        payout_minimum=row.payout_minimum if row is not None else None,
    )


# --------------------------------------------------------------------------- merchants' terms


def get_merchant_settings(conn: Connection, *, merchant_ref: str) -> MerchantSettings:
    """Returns a merchant's settlement terms (the defaults for any term never set)."""
    merchant = parties.get_merchant(conn, ref=merchant_ref)
    row = conn.execute(sa.select(settlement_merchants).where(settlement_merchants.c.merchant_id == merchant.id)).first()
    return _settings_of(merchant, row)


def set_merchant_settings(
    conn: Connection,
    *,
    merchant_ref: str,
    cycle: Any = KEEP,
    fee_contract: Any = KEEP,
    payout_account: Any = KEEP,
    payout_minimum: Any = KEEP,
    now: dt.datetime | None = None,
) -> MerchantSettings:
    """Sets some of a merchant's settlement terms and returns them all; ``KEEP`` (the default) leaves a term.

    ``cycle``: a ``Cycle`` or its text. ``fee_contract``: a ``FeeContract`` or
    its dict (``FeeContract.to_dict``); None returns to the default contract.
    ``payout_account``: a ``PayoutAccount``; None returns to the merchant's
    settlement account. ``payout_minimum``: minor units, or None for no minimum.
    A change applies from the next settlement run; batches already made keep
    the terms they were made with.
    """
    now = _now(now)
    merchant = parties.get_merchant(conn, ref=merchant_ref)
    values: dict[str, Any] = {}
    if cycle is not KEEP:
        values["cycle"] = str(Cycle.parse(cycle))
    if fee_contract is not KEEP:
        if fee_contract is None:
            values["fee_contract"] = None
        else:
            contract = fee_contract if isinstance(fee_contract, FeeContract) else FeeContract.from_dict(fee_contract)
            values["fee_contract"] = contract.to_dict()
    if payout_account is not KEEP:
        if payout_account is None:
            values.update(payee_account_number=None, payee_account_name=None, payee_bank_code=None)
        else:
            account = _check_payout_account(payout_account)
            values.update(
                payee_account_number=account.account_number,
                payee_account_name=account.account_name,
                payee_bank_code=account.bank_code,
            )
    if payout_minimum is not KEEP:
        values["payout_minimum"] = _check_minimum(payout_minimum)
    table = settlement_merchants
    existing = conn.execute(
        sa.select(table.c.merchant_id).where(table.c.merchant_id == merchant.id).with_for_update()
    ).first()
    if existing is None:
        conn.execute(
            table.insert().values(
                merchant_id=merchant.id,
                merchant_ref=merchant.ref,
                cycle=values.pop("cycle", str(DEFAULT_CYCLE)),
                created_at=now,
                updated_at=now,
                **values,
            )
        )
    elif values:
        conn.execute(table.update().where(table.c.merchant_id == merchant.id).values(updated_at=now, **values))
    return get_merchant_settings(conn, merchant_ref=merchant.ref)


# --------------------------------------------------------------------------- batches


def _batch_from_row(row: Row[Any], days: Iterable[DayLine] = ()) -> Batch:
    values = {name: getattr(row, name) for name in Batch.__dataclass_fields__ if name != "days"}
    return Batch(**values, days=tuple(days))


def _days_of(conn: Connection, batch_ids: Sequence[int]) -> dict[int, list[DayLine]]:
    found: dict[int, list[DayLine]] = defaultdict(list)
    d = settlement_batch_days
    for start in range(0, len(batch_ids), 500):
        rows = conn.execute(
            sa.select(d)
            .where(d.c.batch_id.in_(batch_ids[start : start + 500]))
            .order_by(d.c.batch_id, d.c.business_date)
        )
        for row in rows:
            found[row.batch_id].append(
                DayLine(
                    business_date=row.business_date,
                    payment_count=row.payment_count,
                    captured=row.captured,
                    refund_count=row.refund_count,
                    refunds=row.refunds,
                    fees=row.fees,
                    fees_returned=row.fees_returned,
                )
            )
    return found


def _batches_where(conn: Connection, *conditions: Any, with_days: bool = True) -> list[Batch]:
    rows = conn.execute(sa.select(settlement_batches).where(*conditions).order_by(settlement_batches.c.id)).all()
    days = _days_of(conn, [row.id for row in rows]) if with_days else {}
    return [_batch_from_row(row, days.get(row.id, ())) for row in rows]


def get_batch(
    conn: Connection, *, merchant_ref: str, settlement_date: dt.date, currency: str = SETTLEMENT_CURRENCY
) -> Batch:
    """Returns a merchant's batch of a settlement date, with its statement lines."""
    merchant = parties.get_merchant(conn, ref=merchant_ref)
    day = _check_date(settlement_date, "settlement_date")
    b = settlement_batches.c
    found = _batches_where(conn, b.merchant_id == merchant.id, b.settlement_date == day, b.currency == currency)
    if not found:
        raise errors.SettlementBatchNotFound(
            f"merchant {merchant.ref} has no settlement batch on {day.isoformat()}", field="date"
        )
    return found[0]


def list_batches(
    conn: Connection, *, settlement_date: dt.date, currency: str = SETTLEMENT_CURRENCY, with_days: bool = False
) -> list[Batch]:
    """Returns every batch of a settlement date, in creation order."""
    day = _check_date(settlement_date, "settlement_date")
    b = settlement_batches.c
    return _batches_where(conn, b.settlement_date == day, b.currency == currency, with_days=with_days)


_BATCH_STATE_OF_PAYOUT = {"processing": "paying", "succeeded": "paid", "failed": "failed"}


def sync_batch_states(conn: Connection, *, now: dt.datetime | None = None) -> int:
    """Moves every ``paying`` batch to its payout's state (``paid``, ``failed``); returns how many moved."""
    now = _now(now)
    b = settlement_batches.c
    rows = conn.execute(sa.select(b.id, b.payout_ref).where(b.state == "paying")).all()
    states = payments.payout_states(conn, refs=[row.payout_ref for row in rows])
    moved = 0
    for row in rows:
        state = _BATCH_STATE_OF_PAYOUT[states[row.payout_ref]]
        if state != "paying":
            conn.execute(
                settlement_batches.update()
                .where(b.id == row.id, b.state == "paying")
                .values(state=state, updated_at=now)
            )
            moved += 1
    return moved


def settled_volume(
    conn: Connection, *, merchant_id: int, since: dt.date, until: dt.date, currency: str = SETTLEMENT_CURRENCY
) -> int:
    """Captured minus refunds of the merchant's batches with a settlement date in [since, until).

    What a POS credit line is computed from: the flow the merchant has actually settled.
    """
    b = settlement_batches.c
    total = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(b.captured - b.refunds), 0)).where(
            b.merchant_id == merchant_id,
            b.currency == currency,
            b.settlement_date >= since,
            b.settlement_date < until,
        )
    ).scalar_one()
    return int(total)


# --------------------------------------------------------------------------- the run


def _all_merchants(conn: Connection) -> dict[int, Merchant]:
    found: dict[int, Merchant] = {}
    cursor: str | None = None
    while True:
        page = parties.list_merchants(conn, cursor=cursor, limit=parties.PAGE_LIMIT_MAX)
        found.update({merchant.id: merchant for merchant in page.items})
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _contract_fees(contract: FeeContract, orders: Sequence[Row[Any]], fees: dict[int, int]) -> None:
    """The contract's fee of every order of one merchant (ordered by payment time), into ``fees``."""
    month: tuple[int, int] | None = None
    volume = 0
    for order in orders:
        local = order.paid_at.astimezone(SHANGHAI)
        if (local.year, local.month) != month:
            month, volume = (local.year, local.month), 0
        fees[order.id] = contract.fee_for(order.amount, monthly_volume_before=volume)
        volume += order.amount


def _previous_batches(conn: Connection, *, settlement_date: dt.date, currency: str) -> dict[int, Row[Any]]:
    """Each merchant's latest batch before ``settlement_date``."""
    b = settlement_batches
    latest = (
        sa.select(b.c.merchant_id, sa.func.max(b.c.settlement_date).label("settlement_date"))
        .where(b.c.settlement_date < settlement_date, b.c.currency == currency)
        .group_by(b.c.merchant_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(b.c.merchant_id, b.c.last_business_date, b.c.carried_out, b.c.amount, b.c.state, b.c.payout_ref).join(
            latest,
            sa.and_(
                latest.c.merchant_id == b.c.merchant_id,
                latest.c.settlement_date == b.c.settlement_date,
                b.c.currency == currency,
            ),
        )
    ).all()
    return {row.merchant_id: row for row in rows}


def _carried_in(previous: Row[Any] | None, payout_states: dict[str, str]) -> int:
    """What the previous batch left to this one: its carry, plus its payout when the bank refused it."""
    if previous is None:
        return 0
    state = payout_states.get(previous.payout_ref) if previous.payout_ref else None
    return previous.carried_out + (previous.amount if state == "failed" else 0)


def _payout_channel(registry: ChannelRegistry | None, channel: str | None, currency: str) -> str:
    able = (
        [code for code in registry.payout_channels() if currency in registry.adapter(code).currencies]
        if registry is not None
        else []
    )
    if not able or (channel is not None and channel not in able):
        raise errors.SettlementPayoutChannelUnavailable(
            f"no configured channel pays out {currency}" + (f" as {channel}" if channel else ""),
            field="channel",
            channels=able,
        )
    return channel or able[0]


def _post_fee_adjustment(
    conn: Connection, *, batch_ref: str, merchant_ref: str, delta: int, currency: str, now: dt.datetime
) -> str | None:
    """Dr merchant pending / Cr fee income by ``delta`` (> 0), or the mirror (< 0); returns the entry's ref."""
    if delta == 0:
        return None
    merchant = ledger.ensure_account(conn, request=postings.merchant_pending_request(merchant_ref, currency), now=now)
    fees = ledger.ensure_account(conn, request=postings.fee_income_request(currency), now=now)
    debit, credit = (merchant, fees) if delta > 0 else (fees, merchant)
    request = EntryRequest(
        idempotency_key=f"settlement:{batch_ref}:fee",
        business_code=CODE_FEE,
        legs=(
            Leg(account=debit, side="debit", amount=abs(delta), currency=currency),
            Leg(account=credit, side="credit", amount=abs(delta), currency=currency),
        ),
        metadata={"settlement_batch": batch_ref, "merchant": merchant_ref, "kind": "fee_adjustment"},
    )
    return ledger.post_entry(conn, request=request, now=now).entry.ref


def run_settlement(
    conn: Connection,
    *,
    settlement_date: dt.date,
    registry: ChannelRegistry | None,
    channel: str | None = None,
    currency: str = SETTLEMENT_CURRENCY,
    deduction_providers: Sequence[DeductionProvider] = (),
    now: dt.datetime | None = None,
) -> RunResult:
    """Settles every merchant whose cycle pays on ``settlement_date`` (see the module doc); idempotent.

    ``registry`` supplies the payout channel (``channel``, or the first that pays
    out ``currency``). Returns every batch of the date, those made by an earlier
    run of it included (``replayed``).
    """
    day = _check_date(settlement_date, "settlement_date")
    now = _now(now)
    b = settlement_batches.c
    stored = {row.merchant_id: row for row in conn.execute(sa.select(settlement_merchants)).all()}
    cycle_texts = {str(DEFAULT_CYCLE), *(row.cycle for row in stored.values())}
    windows = {text: business_dates_settling_on(day, Cycle.parse(text)) for text in cycle_texts}
    windows = {text: dates for text, dates in windows.items() if dates}
    sync_batch_states(conn, now=now)
    existing = {
        row.merchant_id: row
        for row in conn.execute(
            sa.select(b.merchant_id, b.id).where(b.settlement_date == day, b.currency == currency)
        ).all()
    }
    if not windows:
        batches = list_batches(conn, settlement_date=day, currency=currency)
        return RunResult(day, currency, batches, created=0, replayed=len(batches))
    payout_channel = _payout_channel(registry, channel, currency)
    if conn.dialect.name == "postgresql":
        # The run writes a hold, a payout and a job per merchant in one transaction, into tables whose
        # statistics predate it. psycopg prepares a statement on its fifth use; PostgreSQL then keeps the
        # generic plan it chose for tables it took for nearly empty, and each lookup grew slower with the
        # run (178 merchants/s at 6,000 merchants; planned per call: 232/s at 8,000, flat).
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    first = min(dates[0] for dates in windows.values())
    last = max(dates[-1] for dates in windows.values())
    until = day_start(last + dt.timedelta(days=1))

    # What happened in the window, for every merchant at once (one query each).
    orders = payments.paid_orders_between(
        conn, paid_from=day_start(_month_start(first)), paid_until=until, currency=currency
    )
    refund_rows = payments.refunds_finished_between(
        conn, finished_from=day_start(first), finished_until=until, currency=currency
    )
    orders_by_merchant: dict[int, list[Row[Any]]] = defaultdict(list)
    for order in orders:
        orders_by_merchant[order.merchant_id].append(order)
    # Refunds of orders paid in an earlier month: their contract fee needs that month's volume before them.
    earliest: dict[int, dt.datetime] = {}
    window_month = day_start(_month_start(first))
    for row in refund_rows:
        if row.in_window and row.order_paid_at < earliest.get(row.merchant_id, window_month):
            earliest[row.merchant_id] = row.order_paid_at
    if earliest:
        since = day_start(_month_start(business_date_of(min(earliest.values()))))
        for order in payments.paid_orders_between(
            conn, paid_from=since, paid_until=window_month, currency=currency, merchant_ids=sorted(earliest)
        ):
            orders_by_merchant[order.merchant_id].append(order)
        for merchant_orders in orders_by_merchant.values():
            merchant_orders.sort(key=lambda order: (order.paid_at, order.id))
    refunds_by_merchant: dict[int, list[tuple[Row[Any], int]]] = defaultdict(list)
    refunded_so_far: dict[int, int] = defaultdict(int)
    for row in refund_rows:  # ordered by order, then finishing time
        if row.in_window:
            refunds_by_merchant[row.merchant_id].append((row, refunded_so_far[row.order_id]))
        refunded_so_far[row.order_id] += row.amount

    previous = _previous_batches(conn, settlement_date=day, currency=currency)
    states = payments.payout_states(conn, refs=[row.payout_ref for row in previous.values() if row.payout_ref])
    candidates = (
        set(orders_by_merchant)
        | set(refunds_by_merchant)
        | {merchant_id for merchant_id, row in previous.items() if _carried_in(row, states) != 0}
    ) - set(existing)
    merchants = _all_merchants(conn) if candidates else {}
    balances = ledger.balances_by_key(
        conn,
        keys=[postings.merchant_pending_request(merchants[m].ref, currency).key for m in candidates if m in merchants],
    )
    skipped: list[SkippedMerchant] = []
    created = 0
    for merchant_id in sorted(candidates):
        merchant = merchants.get(merchant_id)
        if merchant is None:  # pragma: no cover - orders reference merchants by foreign key
            continue
        settings = _settings_of(merchant, stored.get(merchant_id))
        dates = windows.get(str(settings.cycle), [])
        prior = previous.get(merchant_id)
        if prior is not None:
            dates = [d for d in dates if d > prior.last_business_date]
        if not dates:
            continue
        contract = settings.fee_contract
        contract_fees: dict[int, int] = {}
        _contract_fees(contract, orders_by_merchant.get(merchant_id, ()), contract_fees)
        lines = {d: DayLine(d) for d in dates}
        fees_booked = fees_returned_booked = 0
        for order in orders_by_merchant.get(merchant_id, ()):
            line = lines.get(business_date_of(order.paid_at))
            if line is None:
                continue
            line.payment_count += 1
            line.captured += order.amount
            line.fees += contract_fees[order.id]
            fees_booked += order.fee
        for row, refunded_before in refunds_by_merchant.get(merchant_id, ()):
            line = lines.get(business_date_of(row.finished_at))
            if line is None:
                continue
            line.refund_count += 1
            line.refunds += row.amount
            if row.order_id not in contract_fees:  # pragma: no cover - loaded above for every refunded order
                raise AssertionError(f"no contract fee for order {row.order_id}")
            line.fees_returned += contract.fee_returned_for(
                fee=contract_fees[row.order_id],
                amount=row.order_amount,
                refunded_before=refunded_before,
                refund=row.amount,
            )
            fees_returned_booked += row.fee_returned
        carried_in = _carried_in(prior, states)
        days = [lines[d] for d in dates]
        if not carried_in and not any(line.payment_count or line.refund_count for line in days):
            continue
        try:
            account = _check_payout_account(settings.payout_account)
        except errors.SettlementPayeeInvalid as error:
            skipped.append(SkippedMerchant(merchant.ref, error.code, error.message))
            continue
        fees = sum(line.fees for line in days)
        fees_returned = sum(line.fees_returned for line in days)
        delta = (fees - fees_booked) - (fees_returned - fees_returned_booked)
        key = postings.merchant_pending_request(merchant.ref, currency).key
        available_before = balances[key].available if key in balances else 0
        if delta > available_before:
            skipped.append(
                SkippedMerchant(
                    merchant.ref,
                    "merchant_balance_insufficient",
                    f"the contract charges {delta} more in fees than booked, "
                    f"and the available balance is {available_before}",
                )
            )
            continue
        ref = ids.new_id("stb")
        fee_entry = _post_fee_adjustment(
            conn, batch_ref=ref, merchant_ref=merchant.ref, delta=delta, currency=currency, now=now
        )
        available = available_before - delta
        captured = sum(line.captured for line in days)
        refunds = sum(line.refunds for line in days)
        deductions: list[Deduction] = []
        for provider in deduction_providers:
            taken = list(
                provider.deductions_for(
                    conn,
                    merchant_id=merchant.id,
                    merchant_ref=merchant.ref,
                    settlement_date=day,
                    currency=currency,
                    net=captured - refunds - fees + fees_returned,
                    available=available - sum(d.amount for d in deductions),
                )
            )
            for deduction in taken:
                provider.book(conn, deduction=deduction, merchant_ref=merchant.ref, batch_ref=ref, now=now)
            deductions.extend(taken)
        deducted = sum(d.amount for d in deductions)
        assert 0 <= deducted <= available, (merchant.ref, deducted, available)
        available -= deducted
        net = captured - refunds - fees + fees_returned - deducted
        payable = net + carried_in
        amount = max(0, min(payable, available))
        if amount < max(1, settings.payout_minimum or 0):
            amount = 0
        payout_ref = None
        if amount:
            payout = payments.create_payout(
                conn,
                merchant=merchant,
                request=PayoutRequest(
                    out_payout_no=f"settle:{day.isoformat()}:{currency}",
                    amount=amount,
                    currency=currency,
                    payee=Payee(account.account_number, account.account_name, account.bank_code),
                    remark=PAYOUT_REMARK.format(date=day.isoformat()),
                ),
                registry=registry,  # type: ignore[arg-type]
                channel=payout_channel,
                now=now,
            ).payout
            payout_ref = payout.ref
        inserted = conn.execute(
            settlement_batches.insert()
            .values(
                ref=ref,
                merchant_id=merchant.id,
                merchant_ref=merchant.ref,
                settlement_date=day,
                currency=currency,
                cycle=str(settings.cycle),
                fee_contract=contract.to_dict(),
                first_business_date=dates[0],
                last_business_date=dates[-1],
                payment_count=sum(line.payment_count for line in days),
                captured=captured,
                refund_count=sum(line.refund_count for line in days),
                refunds=refunds,
                fees=fees,
                fees_returned=fees_returned,
                fees_booked=fees_booked,
                fees_returned_booked=fees_returned_booked,
                fee_adjustment=delta,
                fee_entry_ref=fee_entry,
                deductions=deducted,
                deduction_lines=[d.as_json() for d in deductions],
                net=net,
                carried_in=carried_in,
                payable=payable,
                available=available,
                amount=amount,
                carried_out=payable - amount,
                state="paying" if amount else "nothing_to_pay",
                payout_ref=payout_ref,
                created_at=now,
                updated_at=now,
            )
            .returning(b.id)
        ).scalar_one()
        conn.execute(
            settlement_batch_days.insert(),
            [
                {
                    "batch_id": inserted,
                    "business_date": line.business_date,
                    "payment_count": line.payment_count,
                    "captured": line.captured,
                    "refund_count": line.refund_count,
                    "refunds": line.refunds,
                    "fees": line.fees,
                    "fees_returned": line.fees_returned,
                }
                for line in days
            ],
        )
        created += 1
    batches = list_batches(conn, settlement_date=day, currency=currency, with_days=True)
    return RunResult(day, currency, batches, created=created, replayed=len(batches) - created, skipped=skipped)


# --------------------------------------------------------------------------- statements


def _amount(value: int, currency: str) -> str:
    return money.format_minor(value, currency)


def statement_csv(
    conn: Connection, *, merchant_ref: str, settlement_date: dt.date, currency: str = SETTLEMENT_CURRENCY
) -> str:
    """Returns a merchant's settlement statement (结算单) for a settlement date as CSV text (UTF-8 BOM included).

    A header block (merchant, dates, cycle, contract), one line per business
    date (counts and amounts in major units), the totals, then the settlement:
    deductions, carried in, payable, available, paid, carried out, state, payout.
    """
    batch = get_batch(conn, merchant_ref=merchant_ref, settlement_date=settlement_date, currency=currency)
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    c = batch.currency
    writer.writerow(["结算单 settlement statement", batch.ref])
    writer.writerow(["商户 merchant", batch.merchant_ref])
    writer.writerow(["结算日 settlement date", batch.settlement_date.isoformat()])
    writer.writerow(
        ["业务日期 business dates", batch.first_business_date.isoformat(), batch.last_business_date.isoformat()]
    )
    writer.writerow(["结算周期 cycle", batch.cycle])
    writer.writerow(["费率合同 fee contract", json.dumps(batch.fee_contract, ensure_ascii=False, sort_keys=True)])
    writer.writerow(["币种 currency", c])
    writer.writerow([])
    writer.writerow(
        [
            "业务日期 business date",
            "交易笔数 payments",
            "交易金额 captured",
            "退款笔数 refunds",
            "退款金额 refunded",
            "手续费 fees",
            "退还手续费 fees returned",
            "净额 net",
        ]
    )
    for line in batch.days:
        writer.writerow(
            [
                line.business_date.isoformat(),
                line.payment_count,
                _amount(line.captured, c),
                line.refund_count,
                _amount(line.refunds, c),
                _amount(line.fees, c),
                _amount(line.fees_returned, c),
                _amount(line.net, c),
            ]
        )
    writer.writerow(
        [
            "合计 total",
            batch.payment_count,
            _amount(batch.captured, c),
            batch.refund_count,
            _amount(batch.refunds, c),
            _amount(batch.fees, c),
            _amount(batch.fees_returned, c),
            _amount(batch.net + batch.deductions, c),
        ]
    )
    writer.writerow([])
    for label, value in (
        ("扣款 deductions", batch.deductions),
        ("本期净额 net", batch.net),
        ("上期结转 carried in", batch.carried_in),
        ("应结算 payable", batch.payable),
        ("可用余额 available", batch.available),
        ("本期结算 paid", batch.amount),
        ("结转下期 carried out", batch.carried_out),
    ):
        writer.writerow([label, _amount(value, c)])
    for line in batch.deduction_lines:
        writer.writerow(
            ["扣款明细 deduction", line["kind"], line["ref"], _amount(line["amount"], c), line["description"]]
        )
    writer.writerow(["状态 state", batch.state])
    writer.writerow(["代付 payout", batch.payout_ref or ""])
    return out.getvalue()


# --------------------------------------------------------------------------- the float


def float_report(
    conn: Connection,
    *,
    as_of: dt.date,
    date_from: dt.date | None = None,
    currency: str = SETTLEMENT_CURRENCY,
) -> FloatReport:
    """Returns the float (沉淀资金) at the end of ``as_of``: funds collected but not yet paid out to merchants.

    Per merchant and business date from ``date_from`` (default: ``as_of`` less
    92 days) to ``as_of``: a date covered by a batch whose payout has not
    succeeded counts with the batch's figures (fees per contract); a date no
    batch covers counts with the payments' and refunds' figures (fees as booked).
    Dates covered by a paid batch are settled and left out. Each merchant's
    latest paid batch's carried amount is shown (``carried``) but not counted:
    a batch carries only what the merchant's balance could not cover, so no
    funds are held for it. With every unsettled date in range, the total equals
    the merchants' pending-settlement balances. Reads only: batch states are
    taken from their payouts as they are now.
    """
    as_of = _check_date(as_of, "as_of")
    if date_from is None:
        date_from = max(as_of - dt.timedelta(days=FLOAT_DAYS_BACK), dt.date(DATE_YEAR_MIN, 1, 1))
    date_from = _check_date(date_from, "date_from")
    if date_from > as_of:
        raise errors.BusinessDateInvalid("date_from is on or before as_of", field="date_from")
    b = settlement_batches.c
    rows = conn.execute(
        sa.select(settlement_batches)
        .where(b.currency == currency, b.last_business_date >= date_from, b.first_business_date <= as_of)
        .order_by(b.merchant_id, b.settlement_date)
    ).all()
    states = payments.payout_states(conn, refs=[row.payout_ref for row in rows if row.payout_ref])

    def paid(row: Row[Any]) -> bool:
        return row.payout_ref is not None and states.get(row.payout_ref) == "succeeded"

    covered: dict[str, set[dt.date]] = defaultdict(set)
    latest_paid: dict[str, Row[Any]] = {}
    unpaid = [row for row in rows if not paid(row)]
    for row in rows:
        span = (row.last_business_date - row.first_business_date).days + 1
        covered[row.merchant_ref].update(row.first_business_date + dt.timedelta(days=i) for i in range(span))
        if paid(row):
            latest_paid[row.merchant_ref] = row
    lines: list[FloatLine] = []
    days = _days_of(conn, [row.id for row in unpaid])
    for row in unpaid:
        for line in days.get(row.id, ()):
            if date_from <= line.business_date <= as_of:
                lines.append(
                    FloatLine(
                        line.business_date,
                        row.merchant_ref,
                        line.payment_count,
                        line.captured,
                        line.refunds,
                        line.fees,
                        line.fees_returned,
                        line.net,
                        row.ref,
                    )
                )
    # Dates no batch covers: from the payments, fees as booked.
    loose: dict[tuple[dt.date, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    until = day_start(as_of + dt.timedelta(days=1))
    for order in payments.paid_orders_between(
        conn, paid_from=day_start(date_from), paid_until=until, currency=currency
    ):
        business_date = business_date_of(order.paid_at)
        if business_date not in covered.get(order.merchant_ref, ()):
            figures = loose[(business_date, order.merchant_ref)]
            figures[0] += 1
            figures[1] += order.amount
            figures[3] += order.fee
    for row in payments.refunds_finished_between(
        conn, finished_from=day_start(date_from), finished_until=until, currency=currency
    ):
        if not row.in_window:
            continue
        merchant_ref = row.merchant_ref
        business_date = business_date_of(row.finished_at)
        if business_date not in covered.get(merchant_ref, ()):
            figures = loose[(business_date, merchant_ref)]
            figures[2] += row.amount
            figures[4] += row.fee_returned
    for (business_date, merchant_ref), (count, captured, refunds, fees, returned) in loose.items():
        lines.append(
            FloatLine(
                business_date,
                merchant_ref,
                count,
                captured,
                refunds,
                fees,
                returned,
                captured - refunds - fees + returned,
                "unsettled",
            )
        )
    lines.sort(key=lambda line: (line.business_date, line.merchant_ref))
    by_merchant: dict[str, dict[str, int]] = {}
    by_date: dict[dt.date, int] = defaultdict(int)
    for line in lines:
        entry = by_merchant.setdefault(line.merchant_ref, {"unsettled": 0, "carried": 0, "total": 0})
        entry["unsettled"] += line.net
        by_date[line.business_date] += line.net
    for merchant_ref, row in latest_paid.items():
        if row.carried_out:
            entry = by_merchant.setdefault(merchant_ref, {"unsettled": 0, "carried": 0, "total": 0})
            entry["carried"] += row.carried_out
    for entry in by_merchant.values():
        entry["total"] = entry["unsettled"]  # a carry is owed, but its funds were not available: not held
    total = sum(entry["total"] for entry in by_merchant.values())
    return FloatReport(as_of, date_from, currency, lines, dict(sorted(by_merchant.items())), dict(by_date), total)


# --------------------------------------------------------------------------- the reserve-fund check


def customer_fund_ledger_codes(rules_path: Path | None = None) -> list[str]:
    """The ledger codes the posting rules map to the 2241xx subjects (应付客户备付金): customer-owned balances."""
    if rules_path is None:
        _, rules = accounting_chart.configured()
    else:
        rules = accounting_chart.load_rules(accounting_chart.load_chart(), rules_path)
    return sorted(
        code
        for code, mapping in rules.ledger_codes.items()
        if mapping.subject_code.startswith(CUSTOMER_FUNDS_SUBJECT_PREFIX)
    )


def reserve_check(
    conn: Connection,
    *,
    date: dt.date,
    statement: Path | str,
    fmt: str,
    currency: str = SETTLEMENT_CURRENCY,
    ledger_codes: Sequence[str] | None = None,
) -> ReserveCheck:
    """Compares customer funds in the ledger at the end of accounting date ``date`` with the custody account.

    Customer funds: the posted balances, through ``date``, of the ledger codes
    mapped to the 2241xx subjects (``customer_fund_ledger_codes``). The custody
    balance: the closing balance in ``currency`` of the bank statement
    (``mt940`` or ``camt053``), which must read without a single malformed line
    and close on ``date`` when it says its closing date.
    """
    date = _check_date(date, "date")
    codes = list(ledger_codes) if ledger_codes is not None else customer_fund_ledger_codes()
    reader = iter_statement(statement, fmt, currency=currency)
    problems = [item for item in reader if isinstance(item, LineError)]
    if problems:
        first = problems[0]
        raise errors.ReserveStatementInvalid(
            f"the statement has {len(problems)} malformed line(s); line {first.line_no}: {first.reason}",
            field="statement",
        )
    totals = reader.totals.currencies.get(currency)
    if totals is None or totals.closing_balance is None:
        raise errors.ReserveStatementInvalid(f"the statement has no closing balance in {currency}", field="statement")
    closing = [s for s in reader.totals.statements if s.currency == currency]
    last = closing[-1] if closing else None
    if last is not None and last.closing_date is not None and last.closing_date != date:
        raise errors.ReserveStatementDateMismatch(
            f"the statement closes on {last.closing_date.isoformat()}, not {date.isoformat()}", field="date"
        )
    balances = ledger.posted_totals_by_ledger_code(conn, ledger_codes=codes, through_date=date)
    by_code = {code: balances.get((code, currency), 0) for code in codes}
    customer_funds = sum(by_code.values())
    return ReserveCheck(
        date=date,
        currency=currency,
        ledger_codes=by_code,
        customer_funds=customer_funds,
        bank_balance=totals.closing_balance,
        bank_account=last.account if last is not None else None,
        statement_closing_date=last.closing_date if last is not None else None,
        gap=totals.closing_balance - customer_funds,
    )
