"""Alembic's entry point: migrates the connection that reelgen.service.jobs.schema hands over."""

from alembic import context

from reelgen.service.jobs.schema import metadata


def _migrate(connection) -> None:
    # SQLite cannot ALTER most things: batch mode copies the table instead, so one script serves both databases
    context.configure(connection=connection, target_metadata=metadata(),
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("reelgen's migrations run through reelgen.service.jobs.schema (or `reelgen db`), "
                     "which hands them a connection")
_migrate(connection)
