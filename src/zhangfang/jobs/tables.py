"""Job queue storage: the outbox every domain writes its side effects to (DESIGN.md, principle 4).

Guarantees
- A job is written in the caller's transaction, beside the state change that
  asks for it: both commit or neither does. A rolled-back payment leaves no
  webhook behind; a committed one always has its job.
- One job per dedupe key: ``dedupe_key`` is unique, so enqueueing twice under
  the same key (a retried request, a replayed notify) gives the first job back.
- At any moment a job is held by at most one worker: claiming a job sets
  ``locked_by`` and the lease ``locked_until`` in one transaction that locks the
  row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the database write lock on
  SQLite), and a worker records an outcome only while the row still carries its
  id and its attempt number (compare-and-set).
- Delivery is at least once, not exactly once: a worker that dies after its
  handler did the work but before recording it leaves the job ``running``; when
  the lease runs out another worker runs it again. Handlers are idempotent.
- A job is never lost: every state but ``succeeded``/``failed``/``dead`` is
  picked up again by some worker, and those three are final until an operator
  replays the job.

States and transitions (``zhangfang.jobs.queue`` makes every one)::

    pending --claim--> running --complete--> succeeded
       ^                 |  |
       |  retry (fail)   |  +--fail, no attempt left--> dead
       +-----------------+  +--fail, permanent-------> failed
       ^  release, or lease expired and claimed again
    dead/failed --replay--> pending (attempts back to 0)

Columns and their constraints
- ``id``: internal key. ``ref``: external id ``job_…`` (``zhangfang.ids``), unique.
- ``kind``: 1 to 64 characters, the name a handler registered (``notify.deliver``).
- ``payload``: a JSON object, at most 64 KiB; what the handler needs, never secrets.
- ``dedupe_key``: caller's key, 1 to 200 printable ASCII characters, unique;
  NULL when the caller needs no deduplication (NULLs never collide).
- ``state``: one of ``pending``, ``running``, ``succeeded``, ``failed``, ``dead``.
- ``attempts``: how many times a worker claimed the job, from 0 to ``attempts_max``.
- ``attempts_max``: at least 1; after that many claims a failure dead-letters the job.
- ``run_at``: when the job may be claimed next. While ``running`` it equals
  ``locked_until``, so "due" is one test (``run_at <= now``) for a pending job
  and for a running job whose lease ran out, served by one partial index.
- ``locked_by``, ``locked_until``: the worker holding a running job and the end
  of its lease; set exactly while ``state = 'running'``.
- ``last_error``: the last failure, at most 2000 characters; kept across retries
  and replays for the operator's benefit.
- ``created_at``; ``finished_at``: set exactly in the final states.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

# The claim query repeats this text verbatim: SQLite uses a partial index only when the query's
# WHERE contains the index's condition literally (a bound parameter does not count).
DUE_STATES_SQL = "state IN ('pending', 'running')"

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, job_…"),
    sa.Column("kind", sa.String(64), nullable=False, comment="registered handler name"),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("dedupe_key", sa.String(200), nullable=True, unique=True, comment="caller's idempotency key"),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, comment="claims so far"),
    sa.Column("attempts_max", sa.Integer, nullable=False),
    sa.Column("run_at", UtcDateTime, nullable=False, comment="may be claimed from; the lease end while running"),
    sa.Column("locked_by", sa.String(100), nullable=True, comment="worker id holding the job"),
    sa.Column("locked_until", UtcDateTime, nullable=True, comment="end of the worker's lease"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.CheckConstraint(
        "state IN ('pending', 'running', 'succeeded', 'failed', 'dead')",
        name="state_valid",
    ),
    sa.CheckConstraint("attempts >= 0 AND attempts <= attempts_max", name="attempts_within_max"),
    sa.CheckConstraint("attempts_max >= 1", name="attempts_max_positive"),
    sa.CheckConstraint(
        "(state = 'running') = (locked_by IS NOT NULL AND locked_until IS NOT NULL)",
        name="running_has_lease",
    ),
    sa.CheckConstraint("state <> 'running' OR run_at = locked_until", name="running_due_at_lease_end"),
    sa.CheckConstraint(
        "(state IN ('succeeded', 'failed', 'dead')) = (finished_at IS NOT NULL)",
        name="finished_when_final",
    ),
    sa.CheckConstraint("length(last_error) <= 2000", name="last_error_length"),
    sa.Index(
        "ix_jobs_due",
        "run_at",
        postgresql_where=sa.text(DUE_STATES_SQL),
        sqlite_where=sa.text(DUE_STATES_SQL),
    ),
)
