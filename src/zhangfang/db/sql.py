"""Small SQL helpers every domain's service shares, one implementation per dialect where they differ."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def insert_ignoring_conflict(conn: Connection, table: sa.Table, columns: Sequence[str], *, where: Any = None) -> Any:
    """``INSERT … ON CONFLICT (columns) DO NOTHING`` — how every idempotent create finds out it came second."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(columns), index_where=where)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): the form requests are hashed in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_digest(payload: Any) -> str:
    """SHA-256 of the canonical JSON of a request: the same request under the same key hashes the same."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
