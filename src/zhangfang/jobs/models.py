"""Shapes the job queue gives out. Plain frozen dataclasses: no framework here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

JobState = Literal["pending", "running", "succeeded", "failed", "dead"]
JOB_STATES: tuple[JobState, ...] = ("pending", "running", "succeeded", "failed", "dead")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "dead")


@dataclass(frozen=True)
class Job:
    """One row of the ``jobs`` table, as it was when read (see ``zhangfang.jobs.tables`` for each field)."""

    id: int
    ref: str
    kind: str
    payload: Mapping[str, Any]
    dedupe_key: str | None
    state: JobState
    attempts: int
    attempts_max: int
    run_at: dt.datetime
    locked_by: str | None
    locked_until: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class Page:
    """Some jobs, and the cursor to pass for the next ones (None on the last page)."""

    items: list[Job]
    next_cursor: str | None = None
