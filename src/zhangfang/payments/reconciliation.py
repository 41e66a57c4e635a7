"""What reconciliation reads of payments: our succeeded trades at a channel, shaped like bill lines.

Reconciliation (``zhangfang.recon``) matches a channel's bill against these in SQL, in
bulk, so they are given as ``Select`` statements rather than rows; payments keeps the
knowledge of its tables here, beside them.

Each statement has the columns ``kind`` (payment | refund), ``ref`` (our number at the
channel: ``pat_…`` or ``rfd_…``), ``amount``, ``currency``, ``fee`` (what the channel
should charge, or NULL when not compared), ``status`` and ``at`` (when it succeeded).
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.channels.registry import ChannelRegistry
from zhangfang.payments.tables import payment_attempts, refunds


def channel_fee(registry: ChannelRegistry | None, channel: str) -> sa.ColumnElement[int] | None:
    """What the channel should charge for a payment attempt, as SQL over ``payment_attempts``.

    The route the attempt took (its channel, payer method, currency and amount band)
    gives ``cost_fixed + amount × cost_rate``, half up to the fen, in integer
    arithmetic so SQLite and PostgreSQL agree to the fen. None when the registry
    does not know the channel (fees are then not compared).
    """
    if registry is None:
        return None
    a = payment_attempts
    cases = []
    for route in (route for route in registry.routes() if route.channel == channel):
        rate = Fraction(route.cost_rate)  # exact: a Decimal is a fraction of a power of ten
        # amount × rate, half up: floor((2 × amount × numerator + denominator) / (2 × denominator))
        cost = route.cost_fixed_minor + (a.c.amount * (2 * rate.numerator) + rate.denominator) // (2 * rate.denominator)
        cases.append(
            (
                sa.and_(
                    a.c.method == route.method,
                    a.c.currency == route.currency,
                    a.c.amount.between(route.amount_min_minor, route.amount_max_minor),
                ),
                cost,
            )
        )
    return sa.case(*cases, else_=sa.null()) if cases else None


def succeeded_payments(
    channel: str, since: dt.datetime, until: dt.datetime, fee_sql: sa.ColumnElement[int] | None
) -> sa.Select:
    """Our succeeded payment attempts at the channel in [since, until), shaped like bill lines."""
    a = payment_attempts
    return sa.select(
        sa.literal("payment").label("kind"),
        a.c.ref,
        a.c.amount,
        a.c.currency,
        (fee_sql if fee_sql is not None else sa.cast(sa.null(), sa.BigInteger)).label("fee"),
        a.c.state.label("status"),
        a.c.paid_at.label("at"),
    ).where(a.c.channel == channel, a.c.state == "succeeded", a.c.paid_at >= since, a.c.paid_at < until)


def succeeded_refunds(channel: str, since: dt.datetime, until: dt.datetime) -> sa.Select:
    """Our succeeded refunds at the channel in [since, until); refund fees are not compared (channels differ)."""
    r = refunds
    return sa.select(
        sa.literal("refund").label("kind"),
        r.c.ref,
        r.c.amount,
        r.c.currency,
        sa.cast(sa.null(), sa.BigInteger).label("fee"),
        r.c.state.label("status"),
        r.c.finished_at.label("at"),
    ).where(r.c.channel == channel, r.c.state == "succeeded", r.c.finished_at >= since, r.c.finished_at < until)


def find_trade(conn: Connection, *, kind: str, ref: str | None) -> dict[str, Any] | None:
    """Our record of a line's number when it is not among the day's succeeded records (another state or day)."""
    if not ref:
        return None
    table = payment_attempts if kind == "payment" else refunds
    row = conn.execute(
        sa.select(table.c.ref, table.c.amount, table.c.currency, table.c.state).where(table.c.ref == ref)
    ).first()
    if row is None:
        return None
    return {
        "kind": kind,
        "ref": row.ref,
        "amount": row.amount,
        "currency": row.currency,
        "fee": None,
        "status": row.state,
    }
