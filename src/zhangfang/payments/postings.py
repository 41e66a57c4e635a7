"""How payments move money in the ledger: the accounts they use and the entries they post.

Accounts (opened on first use, idempotently on their key; amounts in the
currency's minor unit):

===================================  ======  ==========================================================
key                                  normal  what it holds
===================================  ======  ==========================================================
``channel:<code>:clearing``          debit   what the channel owes us (collected, not yet settled to
                                             the custody account); hot (热点账户): every payment
                                             touches it
``merchant:<mch_…>:pending_settlement``  credit  what we owe the merchant (待结算); may not go negative
``platform:fee_income``              credit  our fees; hot
``platform:duplicate_payments``      credit  money payers paid twice (or paid a closed order), owed
                                             back to them until the automatic refund succeeds
===================================  ======  ==========================================================

(Non-CNY currencies get ``:<currency>`` appended to each key.)

Entries, each under an idempotency key derived from the object it books, so a
retried job or a duplicated notify can never post twice:

- payment succeeded (``payment``): Dr clearing = amount; Cr merchant = amount − fee;
  Cr fee income = fee. Key ``payment:<pat_…>``.
- duplicate payment (``duplicate_payment``): Dr clearing; Cr duplicate payments.
  Key ``payment:<pat_…>`` too: an attempt is booked once, one way or the other.
- merchant refund: at request a hold (冻结) Dr merchant / Cr clearing of the most
  the merchant can owe for it (``refund_hold_for``), so the merchant's funds are
  reserved while the channel works; on success the hold is posted for the
  refund minus the fee returned (the rest of the hold, a fen at most, released),
  and the fee returned moves Dr fee income / Cr clearing (``refund_fee_return``).
  On failure the hold is voided.
- duplicate refund (``duplicate_refund``): Dr duplicate payments; Cr clearing.
- payout (代付): a hold Dr merchant / Cr the paying bank's clearing account at
  request; posted on success, voided on failure.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from sqlalchemy.engine import Connection

from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg

CODE_PAYMENT = "payment"
CODE_DUPLICATE_PAYMENT = "duplicate_payment"
CODE_REFUND = "refund"
CODE_REFUND_FEE_RETURN = "refund_fee_return"
CODE_DUPLICATE_REFUND = "duplicate_refund"
CODE_PAYOUT = "payout"


def _suffix(currency: str) -> str:
    return "" if currency == "CNY" else f":{currency}"


def channel_clearing_request(channel: str, currency: str) -> AccountRequest:
    """The clearing account of a channel: debit-normal, hot."""
    return AccountRequest(
        key=f"channel:{channel}:clearing{_suffix(currency)}",
        ledger_code="channel_clearing",
        currency=currency,
        normal_side="debit",
        owner_ref=f"channel:{channel}",
        hot=True,
    )


def merchant_pending_request(merchant_ref: str, currency: str) -> AccountRequest:
    """A merchant's pending-settlement account (待结算): credit-normal, never below zero."""
    return AccountRequest(
        key=f"merchant:{merchant_ref}:pending_settlement{_suffix(currency)}",
        ledger_code="merchant_pending",
        currency=currency,
        owner_ref=f"merchant:{merchant_ref}",
        debits_must_not_exceed_credits=True,
    )


def fee_income_request(currency: str) -> AccountRequest:
    """The platform's fee income: credit-normal, hot."""
    return AccountRequest(
        key=f"platform:fee_income{_suffix(currency)}",
        ledger_code="fee_income",
        currency=currency,
        owner_ref="platform",
        hot=True,
    )


def duplicate_payments_request(currency: str) -> AccountRequest:
    """Money owed back to payers who paid twice (a suspense account, 待退款)."""
    return AccountRequest(
        key=f"platform:duplicate_payments{_suffix(currency)}",
        ledger_code="duplicate_payments",
        currency=currency,
        owner_ref="platform",
    )


def fee_for(amount: int, fee_rate: Decimal) -> int:
    """The merchant's fee on ``amount``: ``amount × rate`` rounded half up to the minor unit."""
    return int((Decimal(amount) * fee_rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fee_returned_for(*, fee: int, amount: int, refunded_before: int, refund: int) -> int:
    """The part of ``fee`` a refund returns: the fee is returned in proportion to what is refunded.

    Computed on cumulative amounts (``round(fee × refunded / amount)`` after
    minus before, half up), so however an order is refunded in parts, the parts
    returned sum to the whole fee once it is refunded in full.
    """

    def share(refunded: int) -> int:
        exact = Fraction(fee * refunded, amount)
        whole, rest = divmod(exact.numerator, exact.denominator)
        return whole + (1 if 2 * rest >= exact.denominator else 0)

    returned = share(refunded_before + refund) - share(refunded_before)
    assert 0 <= returned <= refund, (fee, amount, refunded_before, refund)
    return returned


def refund_hold_for(*, fee: int, amount: int, refund: int) -> int:
    """What a refund reserves from the merchant: the refund less the least part of the fee it can return.

    The part returned (``fee_returned_for``) is ``round(fee × refunded / amount)``
    after minus before, which is never less than ``floor(fee × refund / amount)``
    (rounding is monotonic and commutes with adding whole fen), so the hold
    always covers what the refund finally takes from the merchant, whatever
    other refunds succeed or fail meanwhile. It exceeds it by a fen at most; with
    several refunds of one order in flight at once, a merchant with no other
    funds may therefore need a fen or two more than it finally gives back.
    """
    held = refund - fee * refund // amount
    assert 1 <= held <= refund, (fee, amount, refund)
    return held


def _legs(*legs: tuple[str, str, int, str]) -> tuple[Leg, ...]:
    """Legs from ``(account, side, amount, currency)``, leaving out zero amounts (a zero fee)."""
    return tuple(Leg(account=a, side=s, amount=n, currency=c) for a, s, n, c in legs if n)


def post_payment(
    conn: Connection,
    *,
    attempt_ref: str,
    order_ref: str,
    merchant_ref: str,
    channel: str,
    amount: int,
    fee: int,
    currency: str,
    now: dt.datetime,
) -> str:
    """Books a succeeded payment; returns the entry's ref."""
    clearing = ledger.ensure_account(conn, request=channel_clearing_request(channel, currency), now=now)
    merchant = ledger.ensure_account(conn, request=merchant_pending_request(merchant_ref, currency), now=now)
    fees = ledger.ensure_account(conn, request=fee_income_request(currency), now=now)
    request = EntryRequest(
        idempotency_key=f"payment:{attempt_ref}",
        business_code=CODE_PAYMENT,
        legs=_legs(
            (clearing, "debit", amount, currency),
            (merchant, "credit", amount - fee, currency),
            (fees, "credit", fee, currency),
        ),
        metadata={"payment": order_ref, "attempt": attempt_ref, "merchant": merchant_ref, "channel": channel},
    )
    return ledger.post_entry(conn, request=request, now=now).entry.ref


def post_duplicate_payment(
    conn: Connection, *, attempt_ref: str, order_ref: str, channel: str, amount: int, currency: str, now: dt.datetime
) -> str:
    """Books money a payer paid on an order already paid or closed: owed back to them."""
    clearing = ledger.ensure_account(conn, request=channel_clearing_request(channel, currency), now=now)
    suspense = ledger.ensure_account(conn, request=duplicate_payments_request(currency), now=now)
    request = EntryRequest(
        idempotency_key=f"payment:{attempt_ref}",
        business_code=CODE_DUPLICATE_PAYMENT,
        legs=_legs((clearing, "debit", amount, currency), (suspense, "credit", amount, currency)),
        metadata={"payment": order_ref, "attempt": attempt_ref, "channel": channel},
    )
    return ledger.post_entry(conn, request=request, now=now).entry.ref


def hold_merchant_funds(
    conn: Connection,
    *,
    key: str,
    business_code: str,
    merchant_ref: str,
    channel: str,
    amount: int,
    currency: str,
    metadata: dict[str, str],
    now: dt.datetime,
) -> str:
    """Reserves ``amount`` of the merchant's pending settlement toward the channel; returns the hold's ref.

    Raises the ledger's ``debits_exceed_credits`` when the merchant's available
    balance is short.
    """
    merchant = ledger.ensure_account(conn, request=merchant_pending_request(merchant_ref, currency), now=now)
    clearing = ledger.ensure_account(conn, request=channel_clearing_request(channel, currency), now=now)
    result = ledger.create_hold(
        conn,
        idempotency_key=key,
        debit_account=merchant,
        credit_account=clearing,
        amount=amount,
        currency=currency,
        business_code=business_code,
        metadata=metadata,
        now=now,
    )
    return result.hold.ref


def post_held(conn: Connection, *, hold_ref: str, key: str, amount: int, now: dt.datetime) -> str:
    """Moves ``amount`` of a hold (the rest is released); returns the entry's ref."""
    return ledger.post_hold(conn, ref=hold_ref, idempotency_key=key, amount=amount, now=now).entry.ref


def void_held(conn: Connection, *, hold_ref: str, key: str, now: dt.datetime) -> str:
    """Releases a hold entirely; returns the entry's ref."""
    return ledger.void_hold(conn, ref=hold_ref, idempotency_key=key, now=now).entry.ref


def post_fee_return(
    conn: Connection, *, refund_ref: str, channel: str, amount: int, currency: str, now: dt.datetime
) -> str:
    """Gives back the fee a refund returns: from fee income to the channel's clearing account."""
    clearing = ledger.ensure_account(conn, request=channel_clearing_request(channel, currency), now=now)
    fees = ledger.ensure_account(conn, request=fee_income_request(currency), now=now)
    request = EntryRequest(
        idempotency_key=f"refund:{refund_ref}:fee",
        business_code=CODE_REFUND_FEE_RETURN,
        legs=_legs((fees, "debit", amount, currency), (clearing, "credit", amount, currency)),
        metadata={"refund": refund_ref},
    )
    return ledger.post_entry(conn, request=request, now=now).entry.ref


def post_duplicate_refund(
    conn: Connection, *, refund_ref: str, channel: str, amount: int, currency: str, now: dt.datetime
) -> str:
    """Books a duplicate payment returned to its payer."""
    clearing = ledger.ensure_account(conn, request=channel_clearing_request(channel, currency), now=now)
    suspense = ledger.ensure_account(conn, request=duplicate_payments_request(currency), now=now)
    request = EntryRequest(
        idempotency_key=f"refund:{refund_ref}",
        business_code=CODE_DUPLICATE_REFUND,
        legs=_legs((suspense, "debit", amount, currency), (clearing, "credit", amount, currency)),
        metadata={"refund": refund_ref},
    )
    return ledger.post_entry(conn, request=request, now=now).entry.ref
