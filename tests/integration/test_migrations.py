"""Migrations and table definitions describe the same schema."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from zhangfang.db.migrate import alembic_config, current_revision, upgrade
from zhangfang.db.tables import metadata


def test_the_migrated_schema_matches_the_table_definitions(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_upgrading_twice_is_harmless(engine):
    upgrade(engine)
    assert current_revision(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migration_0011_edits_the_schema_in_place_and_back(engine):
    """0011 rewrites checks and drops a foreign key without copying tables (on SQLite, by editing the
    schema text): down to 0010 and up again leaves the schema the table definitions describe."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    command.downgrade(config, "0010")
    assert current_revision(engine) == "0010"
    upgrade(engine)
    test_the_migrated_schema_matches_the_table_definitions(engine)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
            triggers = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").scalar_one()
        assert triggers > 0  # the journal's append-only triggers survived
