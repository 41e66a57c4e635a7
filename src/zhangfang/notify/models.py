"""Shapes the webhooks give out. Plain frozen dataclasses: no framework here.

Secrets are left out of ``repr`` so that a logged object does not leak them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EventState = Literal["pending", "delivered", "dead", "disabled"]
EVENT_STATES: tuple[EventState, ...] = ("pending", "delivered", "dead", "disabled")
# A replay hands an event back to the workers; a pending event is still theirs.
REPLAYABLE_STATES: tuple[EventState, ...] = ("delivered", "dead", "disabled")

AttemptOutcome = Literal["delivered", "failed", "gone"]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = ("delivered", "failed", "gone")


@dataclass(frozen=True)
class WebhookEvent:
    """One event to deliver to one merchant (see ``zhangfang.notify.tables`` for each field)."""

    id: int
    ref: str
    merchant_id: int
    merchant_ref: str
    idempotency_key: str
    event_type: str
    data: Mapping[str, Any]
    url: str
    state: EventState
    attempts: int
    replays: int
    job_ref: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


@dataclass(frozen=True)
class WebhookAttempt:
    """One delivery attempt. ``outcome`` is None while it runs, and forever if its worker died during it."""

    number: int
    job_ref: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: int | None
    status_code: int | None
    outcome: AttemptOutcome | None
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True)
class EmitResult:
    """An event just written, or (``created=False``) the one the idempotency key wrote before."""

    event: WebhookEvent
    created: bool


@dataclass(frozen=True)
class SecretRotation:
    """A merchant's new signing secret, shown this once, and until when the previous one still signs."""

    secret: str = field(repr=False)
    created_at: dt.datetime
    previous_expires_at: dt.datetime | None


@dataclass(frozen=True)
class Page:
    """Some events, newest first, and the cursor to pass for older ones (None on the last page)."""

    items: list[WebhookEvent]
    next_cursor: str | None = None
