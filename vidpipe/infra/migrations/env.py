"""Alembic environment for the catalog.

Run programmatically by ``vidpipe.infra.catalog.migrate``, which passes an
open connection (already holding the migration advisory lock, with
``search_path`` set to the ``vidpipe`` schema) in ``config.attributes``.
There is no ``alembic.ini``: the catalog builds its ``Config`` in code.
"""

from __future__ import annotations

from alembic import context

SCHEMA = "vidpipe"


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "the catalog migrations run through vidpipe.infra.catalog.migrate(), "
            "not the alembic command line"
        )
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table="alembic_version",
        version_table_schema=SCHEMA,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
