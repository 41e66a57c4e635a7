"""Unit of work: one transaction owner per request or command.

Services receive a ``Connection`` that is already inside a transaction and never
commit. The caller (an API handler, a CLI command, a job) owns the unit of work:
``with UnitOfWork(engine) as uow: ...; uow.commit()``. Leaving the block without
``commit()`` rolls everything back, so a raised error changes nothing.

``run_in_transaction`` adds the retry a concurrent system needs: PostgreSQL
deadlocks (40P01) and serialization failures (40001), SQLite's "database is
locked", and the ledger's own ``RetryableConflict`` re-run the whole function
in a fresh transaction, with jittered backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from zhangfang.db.engine import SQLITE_BEGIN_OPTION

T = TypeVar("T")

RETRYABLE_SQLSTATES = {"40001", "40P01"}


class RetryableConflict(Exception):
    """Raised by a service when a concurrent writer changed what it read; the transaction is re-run."""


class UnitOfWork:
    """A connection with one open transaction; ``commit()`` or it rolls back on exit."""

    def __init__(self, engine: Engine, *, readonly: bool = False) -> None:
        self.engine = engine
        self.readonly = readonly
        self.conn: Connection

    def __enter__(self) -> UnitOfWork:
        conn = self.engine.connect()
        if self.readonly and conn.dialect.name == "sqlite":
            conn = conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        self.conn = conn
        self._transaction = conn.begin()
        return self

    def commit(self) -> None:
        self._transaction.commit()

    def rollback(self) -> None:
        self._transaction.rollback()

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._transaction.is_active:
                self._transaction.rollback()
        finally:
            self.conn.close()


def is_retryable(error: BaseException) -> bool:
    """True for errors that a fresh transaction can get past (deadlock, serialization, busy)."""
    if isinstance(error, RetryableConflict):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None)
        if sqlstate in RETRYABLE_SQLSTATES:
            return True
        if isinstance(error, OperationalError) and "database is locked" in str(error.orig):
            return True
    return False


def run_in_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    readonly: bool = False,
    attempts_max: int = 8,
) -> T:
    """Run ``work(conn)`` in its own unit of work and commit, retrying transient conflicts."""
    for attempt in range(1, attempts_max + 1):
        try:
            with UnitOfWork(engine, readonly=readonly) as uow:
                result = work(uow.conn)
                uow.commit()
                return result
        except Exception as error:
            if attempt == attempts_max or not is_retryable(error):
                raise
            time.sleep(min(0.2, 0.002 * 2**attempt) * random.random())
    raise AssertionError("unreachable")  # pragma: no cover
