"""Alembic migrations for the catalog; applied by ``vidpipe.infra.catalog.migrate``."""
