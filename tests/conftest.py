"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``ZHANGFANG_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); the session creates
its own database there (one per xdist worker) and drops it at the end. When the
server cannot be reached the PostgreSQL half is skipped with a message saying
how to enable it — unless ``ZHANGFANG_REQUIRE_POSTGRES=1`` (set by ``.ci/run``),
in which case it is an error (``.ci/run`` also checks that PostgreSQL tests passed).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import settings
from sqlalchemy.engine import Engine, make_url

from zhangfang.db.engine import create_engine
from zhangfang.db.migrate import upgrade
from zhangfang.db.tables import metadata
from zhangfang.ledger.chain import GENESIS_SEAL
from zhangfang.ledger.tables import chain_head, ledger_clock

SHANGHAI = ZoneInfo("Asia/Shanghai")

pytest_plugins = ["tests.webhook_receiver", "tests.payments_env", "tests.mandates_env"]

# In CI, property tests draw a fixed sequence of examples, so a green build stays green and a red one
# reproduces; on a developer's machine they explore afresh on every run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL = os.environ.get("ZHANGFANG_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
REQUIRE_POSTGRES = os.environ.get("ZHANGFANG_REQUIRE_POSTGRES") == "1"
HOW_TO_ENABLE = (
    "PostgreSQL is not reachable at {url} ({error}). Start it with "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or point "
    "ZHANGFANG_TEST_POSTGRES_URL at a server where this user may create databases."
)


def postgres_unavailable_reason() -> str | None:
    """None when the test server answers, otherwise why not."""
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as error:  # any failure to connect means "not available"
        return HOW_TO_ENABLE.format(url=POSTGRES_URL, error=str(error).splitlines()[0])


@dataclass
class Database:
    kind: str
    url: str
    template_path: Path | None = None


def _worker_id(request: pytest.FixtureRequest) -> str:
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


@pytest.fixture(scope="session")
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (and xdist worker)."""
    reason = postgres_unavailable_reason()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"zf_test_{_worker_id(request)}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so every test starts clean in milliseconds."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The database under test: a clean SQLite copy, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "zhangfang.db"
        shutil.copyfile(template, path)
        return Database(kind="sqlite", url=f"sqlite:///{path}")
    url = request.getfixturevalue("postgres_database")
    return Database(kind="postgresql", url=url)


def reset_postgres(engine: Engine) -> None:
    """Empty every table and seed the clock and chain head again, as migration 0001 does.

    Only the tables the last test wrote to are truncated (those with rows, or whose id sequence
    was used): TRUNCATE costs a few milliseconds per table and its indexes even when it is empty.
    """
    tables = [table.name for table in metadata.sorted_tables]
    probe = " UNION ALL ".join(f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in tables)
    with engine.begin() as conn:
        written = set(conn.execute(sa.text(probe)).scalars())
        used = set(
            conn.execute(sa.text("SELECT sequencename FROM pg_sequences WHERE last_value IS NOT NULL")).scalars()
        )
        written |= {name for name in tables if f"{name}_id_seq" in used}
        names = ", ".join(f'"{name}"' for name in tables if name in written)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.execute(ledger_clock.insert().values(id=1, open_date=dt.datetime.now(SHANGHAI).date()))
        conn.execute(chain_head.insert().values(id=1, seal_seq=0, seal=GENESIS_SEAL))


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    """An engine on a clean database of the parametrized kind."""
    engine = create_engine(database.url)
    if database.kind == "postgresql":
        reset_postgres(engine)
    yield engine
    engine.dispose()
