"""Schema migrations of the job store (Alembic), run by the store itself: no alembic.ini, no separate step.

The scripts live in `migrations/` beside this file and ship inside the package. A change to a model is a new
revision there, written from the diff against a database at head, then read over and tidied:
    with engine.begin() as c: alembic.command.revision(schema.config(c), "what changed", autogenerate=True)
tests/service/test_store.py fails while the models and the migrations disagree.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"
# The schema create_all made before migrations existed: such a database is adopted at this revision.
BASELINE = "0001"
BASELINE_TABLES = ("jobs", "webhook_deliveries")
# pg_advisory_xact_lock key: any fixed 64-bit number that other applications on the database are unlikely to use
_LOCK_KEY = 0x7265656C67656E  # "reelgen"


def metadata() -> MetaData:
    """Every table of the service. Models register on the jobs' Base when imported; import them all here."""
    import reelgen.service.tenants.models  # noqa: F401  (so do API keys, counters and idempotency records)
    import reelgen.service.webhooks.models  # noqa: F401  (the webhook outbox shares the jobs' database)
    from reelgen.service.jobs.models import Base

    return Base.metadata


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection  # env.py migrates this connection, inside its transaction
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty (or pre-migrations) database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision`. Safe when several processes start at once: one migrates, the others
    wait for it and then find nothing to do."""
    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # held until this transaction commits; PostgreSQL runs the DDL in the same transaction
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        tables = set(inspect(connection).get_table_names())
        if "jobs" in tables and "alembic_version" not in tables:
            # made by create_all before migrations: add the baseline's tables it lacks, then record the baseline
            tables = metadata().tables
            metadata().create_all(connection, tables=[tables[name] for name in BASELINE_TABLES])
            command.stamp(config(connection), BASELINE)
        command.upgrade(config(connection), revision)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks and runs DDL outside the driver's transaction: a lock file beside the
    database serializes the processes of this machine (the only ones that can share a SQLite file)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database:
        yield
        return
    with open(Path(database).with_name(Path(database).name + ".migrate.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
