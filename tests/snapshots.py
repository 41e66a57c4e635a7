"""Every row of the database, to prove that a refused request changed nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zhangfang.db.tables import metadata


def snapshot(
    engine: Engine, *, tables: Iterable[sa.Table] | None = None, without: Iterable[sa.Table] = ()
) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of ``tables`` (default: every table, but ``without``), each table's rows in a stable order."""
    chosen = list(tables) if tables is not None else list(metadata.sorted_tables)
    skipped = set(without)
    with engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
            for table in chosen
            if table not in skipped
        }
