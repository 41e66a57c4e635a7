"""Routing (路由): which channel takes a payment, and the circuit breaker that keeps failing channels out.

Routing ranks the routes the registry offers for the payer's method, the
order's currency and its amount (each route carries an amount band):

1. channels whose breaker is open (cooling down) are left out;
2. the order's preferred channel first, if it is still in;
3. healthy channels before half-open ones (those on trial after a cool-down);
4. then the cheapest for this amount (``Route.cost_minor``), then the route's
   priority, then the channel code, so the order is total and stable.

The breaker, per channel, shared by every process through ``channel_health``:
a channel that fails ``threshold`` times in a row (``ChannelUnavailable``: a
timeout, a refused connection, a 5xx, an unverifiable answer) opens for
``cooldown_seconds``; after that it is half-open: one caller at a time claims a
trial (``claim_trial``, compare-and-set on ``open_until``), and the next success
closes it while a failure opens it again. A rejection (the channel answered
"no") is an answer, not a failure: it never opens the breaker.

Functions taking an ``Engine`` run their own short transaction, so that
recording a failure survives the rollback of whatever the caller was doing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang.channels.registry import Route
from zhangfang.db.sql import insert_ignoring_conflict
from zhangfang.db.uow import run_in_transaction
from zhangfang.payments.models import ChannelHealth
from zhangfang.payments.tables import channel_health

ERROR_LENGTH_MAX = 500


def _health_from_row(row: Any) -> ChannelHealth:
    return ChannelHealth(
        channel=row.channel,
        consecutive_failures=row.consecutive_failures,
        open_until=row.open_until,
        last_failure_at=row.last_failure_at,
        last_error=row.last_error,
    )


def health(conn: Connection) -> dict[str, ChannelHealth]:
    """Every channel's breaker that has recorded a failure, by channel code (no row: healthy)."""
    return {row.channel: _health_from_row(row) for row in conn.execute(sa.select(channel_health)).all()}


def rank(
    routes: Sequence[Route],
    *,
    amount: int,
    preferred_channel: str | None,
    healths: dict[str, ChannelHealth],
    threshold: int,
    now: dt.datetime,
) -> list[Route]:
    """The routes a payment should try, best first; channels cooling down are left out."""

    def state(route: Route) -> str:
        entry = healths.get(route.channel)
        return "closed" if entry is None else entry.state(now, threshold)

    usable = [route for route in routes if state(route) != "open"]
    return sorted(
        usable,
        key=lambda route: (
            route.channel != preferred_channel,
            state(route) == "half_open",
            route.cost_minor(amount),
            route.priority,
            route.channel,
        ),
    )


def claim_trial(engine: Engine, *, channel: str, threshold: int, trial_seconds: float, now: dt.datetime) -> bool:
    """Claims the one trial call of a half-open channel; False when another caller holds it."""

    def claim(conn: Connection) -> bool:
        c = channel_health.c
        result = conn.execute(
            channel_health.update()
            .where(
                c.channel == channel,
                c.consecutive_failures >= threshold,
                sa.or_(c.open_until.is_(None), c.open_until <= now),
            )
            .values(open_until=now + dt.timedelta(seconds=trial_seconds), updated_at=now)
        )
        return result.rowcount == 1

    return run_in_transaction(engine, claim)


def record_failure(
    engine: Engine, *, channel: str, error: str, threshold: int, cooldown_seconds: float, now: dt.datetime
) -> ChannelHealth:
    """Counts a failure of ``channel``; at ``threshold`` in a row its breaker opens for ``cooldown_seconds``."""

    def record(conn: Connection) -> ChannelHealth:
        conn.execute(
            insert_ignoring_conflict(conn, channel_health, ["channel"]).values(
                channel=channel, consecutive_failures=0, updated_at=now
            )
        )
        row = conn.execute(sa.select(channel_health).where(channel_health.c.channel == channel).with_for_update()).one()
        failures = row.consecutive_failures + 1
        open_until = now + dt.timedelta(seconds=cooldown_seconds) if failures >= threshold else None
        updated = conn.execute(
            channel_health.update()
            .where(channel_health.c.channel == channel)
            .values(
                consecutive_failures=failures,
                open_until=open_until,
                last_failure_at=now,
                last_error=error[:ERROR_LENGTH_MAX],
                updated_at=now,
            )
            .returning(*channel_health.c)
        ).one()
        return _health_from_row(updated)

    return run_in_transaction(engine, record)


def record_success(engine: Engine, *, channel: str, now: dt.datetime) -> None:
    """A call to ``channel`` got an answer: its failures in a row start again from zero, and its breaker closes."""

    def record(conn: Connection) -> None:
        conn.execute(
            channel_health.update()
            .where(channel_health.c.channel == channel, channel_health.c.consecutive_failures > 0)
            .values(consecutive_failures=0, open_until=None, updated_at=now)
        )

    run_in_transaction(engine, record)


def reset(conn: Connection, *, channel: str, now: dt.datetime) -> None:
    """An operator puts a channel back in rotation at once."""
    conn.execute(
        channel_health.update()
        .where(channel_health.c.channel == channel)
        .values(consecutive_failures=0, open_until=None, updated_at=now)
    )
