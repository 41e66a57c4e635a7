"""What every benchmark script shares: a fresh database of each kind, and the JSON line it prints.

Imported by the scripts beside it (``python benchmarks/<script>.py`` puts this folder on the path).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def emit(name: str, value: float, unit: str, database: str, **extra: object) -> None:
    """One figure as a JSON line on stdout: ``{"name", "value", "unit", "database", …}``."""
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "database": database, **extra}))
    sys.stdout.flush()


def fresh_database(kind: str, workdir: Path | None = None) -> tuple[str, Callable[[], None]]:
    """A new, empty database and the function that removes it.

    SQLite: a file in ``workdir``. PostgreSQL: a database created on the server of
    ``ZHANGFANG_TEST_POSTGRES_URL`` (default postgres@127.0.0.1:5432), dropped by the function.
    """
    if kind == "sqlite":
        if workdir is None:
            raise ValueError("a SQLite benchmark database needs a working directory")
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"

        def remove() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return f"sqlite:///{path}", remove
    server = os.environ.get("ZHANGFANG_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    name = f"zf_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(server).set(database=name).render_as_string(hide_password=False), drop
