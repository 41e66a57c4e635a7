"""Engines for SQLite (embedded default) and PostgreSQL (production), tuned for the ledger.

SQLite: WAL journal, foreign keys on, a busy timeout, and write transactions that
start with ``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read
lock. A unit of work marked read-only starts a deferred transaction instead.

PostgreSQL: psycopg 3, READ COMMITTED; the ledger takes row locks in a fixed
order (account id) and retries deadlocks and serialization failures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

SQLITE_BEGIN_OPTION = "zhangfang_sqlite_begin"


def create_engine(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10, **kwargs: Any) -> Engine:
    """Return an engine for ``url`` with the settings the ledger relies on."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, sqlite_synchronous=sqlite_synchronous, **kwargs)
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **kwargs)


def _sqlite_engine(url: str, *, sqlite_synchronous: str, **kwargs: Any) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN IMMEDIATE is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
