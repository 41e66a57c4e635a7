"""Apply Alembic migrations programmatically (``zhangfang db upgrade``)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def create_database_if_missing(engine: Engine) -> bool:
    """On PostgreSQL, create the engine's database when the server does not have it yet.

    So that ``ZHANGFANG_DATABASE_URL=postgresql+psycopg://…/zhangfang`` is the only change needed
    to move from SQLite. Returns True when it created the database. SQLite creates its file itself.
    """
    if engine.dialect.name != "postgresql":
        return False
    name = engine.url.database
    maintenance = sa.create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        maintenance.dispose()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database of ``engine`` to ``revision`` (default: the newest)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
