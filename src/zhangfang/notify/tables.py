"""Webhook storage: merchants' signing secrets, the events to deliver, and every delivery attempt.

Guarantees the database enforces on its own, beside the service's checks:

- ``webhook_secrets``: at most one *current* secret per merchant (``expires_at``
  NULL; a partial unique index), so two first uses or two rotations at once
  cannot leave a merchant with two current secrets.
- ``webhook_events``: one event per (merchant, idempotency key) and per
  ``ref``; ``state`` from a closed set; a ``delivered`` event has its
  ``delivered_at``.
- ``webhook_attempts``: one row per (event, attempt number); an attempt has an
  outcome exactly when it has finished; the response excerpt is at most 1024
  characters (it is cut at 1024 bytes of UTF-8) and the error at most 2000.

Columns and their constraints
- ``webhook_secrets.secret``: ``whsec_`` and the standard base64 of 32 random
  bytes (the Standard Webhooks format; the HMAC key is the decoded bytes). It
  signs, so it cannot be hashed: stored in clear for now, to be encrypted at
  rest with the merchants' HMAC secrets.
- ``webhook_secrets.expires_at``: NULL for the current secret; for a replaced
  one, the end of its grace period. Every secret not yet expired signs.
- ``webhook_events.ref``: ``msg_…`` (``zhangfang.ids``), sent as ``webhook-id``
  on every attempt and replay of the event.
- ``webhook_events.merchant_ref``: the merchant's ``mch_…`` id, kept beside its
  internal key so that listings name the merchant without reading another
  domain's tables.
- ``webhook_events.idempotency_key``: the emitter's key, 1 to 200 printable
  ASCII characters; ``request_hash`` (sha256 hex of type, data and URL) tells a
  repeat from a conflict.
- ``webhook_events.event_type``: dotted lower-case words, at most 64 characters.
- ``webhook_events.payload``: the ``data`` object, at most 64 KiB of JSON.
- ``webhook_events.url``: absolute http(s) URL, at most 2048 characters.
- ``webhook_events.state``: ``pending`` (attempts to come), ``delivered`` (a
  2xx answered), ``dead`` (the last scheduled attempt started and did not
  succeed), ``disabled`` (the receiver answered 410 Gone).
- ``webhook_events.attempts``: attempts started, all replays included;
  ``replays``: how many times the event was replayed.
- ``webhook_events.job_ref``: the job (``zhangfang.jobs``) that delivers the
  event now; a replay points it at a new job. Written in the transaction that
  writes the event.
- ``webhook_events.delivered_at``: the last 2xx answer; kept across replays.
- ``webhook_attempts.number``: 1, 2, … per event, across replays.
- ``webhook_attempts.started_at``: when the request was about to be sent
  (committed before sending, so an attempt whose worker died is still logged,
  without an outcome); ``finished_at``, ``duration_ms`` (the HTTP exchange
  alone), ``status_code`` (NULL when no answer came), ``outcome``
  (``delivered|failed|gone``), ``error`` (why no answer came), and
  ``response_excerpt`` (the first 1 KB of the answer's body).
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

CURRENT_SECRET_SQL = "expires_at IS NULL"

webhook_secrets = sa.Table(
    "webhook_secrets",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("secret", sa.String(60), nullable=False, comment="whsec_ + base64 of 32 random bytes; to encrypt"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=True, comment="NULL: current; else end of the grace period"),
    sa.CheckConstraint("secret LIKE 'whsec_%'", name="secret_format"),
    sa.Index("ix_webhook_secrets_merchant_id", "merchant_id"),
    sa.Index(
        "uq_webhook_secrets_current",
        "merchant_id",
        unique=True,
        postgresql_where=sa.text(CURRENT_SECRET_SQL),
        sqlite_where=sa.text(CURRENT_SECRET_SQL),
    ),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="msg_…, the webhook-id"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("merchant_ref", sa.String(40), nullable=False, comment="mch_…"),
    sa.Column("idempotency_key", sa.String(200), nullable=False, comment="emitter's key, per merchant"),
    sa.Column("request_hash", sa.String(64), nullable=False, comment="sha256 of type, data and url"),
    sa.Column("event_type", sa.String(64), nullable=False, comment="payment.succeeded, …"),
    sa.Column("payload", sa.JSON, nullable=False, comment="the data object"),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("state", sa.String(10), nullable=False, comment="pending | delivered | dead | disabled"),
    sa.Column("attempts", sa.Integer, nullable=False, comment="attempts started, replays included"),
    sa.Column("replays", sa.Integer, nullable=False),
    sa.Column("job_ref", sa.String(40), nullable=True, comment="the job delivering it now"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True, comment="the last 2xx"),
    sa.UniqueConstraint("merchant_id", "idempotency_key"),
    sa.CheckConstraint("state IN ('pending', 'delivered', 'dead', 'disabled')", name="state_valid"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    sa.CheckConstraint("replays >= 0", name="replays_not_negative"),
    sa.CheckConstraint("state <> 'delivered' OR delivered_at IS NOT NULL", name="delivered_has_time"),
    sa.Index("ix_webhook_events_merchant_id", "merchant_id", "id"),
    sa.Index("ix_webhook_events_state", "state", "id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("event_id", BigId, sa.ForeignKey("webhook_events.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False, comment="1, 2, … per event"),
    sa.Column("job_ref", sa.String(40), nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=True, comment="the HTTP exchange"),
    sa.Column("status_code", sa.SmallInteger, nullable=True, comment="HTTP status; NULL without an answer"),
    sa.Column("outcome", sa.String(10), nullable=True, comment="delivered | failed | gone; NULL until finished"),
    sa.Column("error", sa.String(2000), nullable=True, comment="why no answer came"),
    sa.Column("response_excerpt", sa.String(1024), nullable=True, comment="first 1 KB of the answer"),
    sa.UniqueConstraint("event_id", "number"),
    sa.CheckConstraint("number >= 1", name="number_positive"),
    sa.CheckConstraint("outcome IN ('delivered', 'failed', 'gone')", name="outcome_valid"),
    sa.CheckConstraint("(outcome IS NULL) = (finished_at IS NULL)", name="outcome_when_finished"),
    sa.CheckConstraint("duration_ms >= 0", name="duration_not_negative"),
    sa.CheckConstraint("status_code >= 100 AND status_code <= 599", name="status_code_valid"),
    sa.CheckConstraint("length(error) <= 2000", name="error_length"),
    sa.CheckConstraint("length(response_excerpt) <= 1024", name="response_excerpt_length"),
)
