"""Column types shared by every domain's tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """An instant, stored in UTC and read back as an aware UTC ``datetime`` on every database.

    SQLite keeps a datetime as text and drops its offset, so a ``+08:00`` time
    would come back eight hours off and compare wrongly with UTC ones. Here every
    value is converted to UTC on the way in (a naive value is a programming
    error) and tagged UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert value.tzinfo is not None and value.utcoffset() is not None, f"naive datetime {value!r} stored"
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
