"""Alembic environment: runs against the connection handed over by appliance.core.migrate."""

from __future__ import annotations

from alembic import context

from appliance.core.db import make_engine
from appliance.models_registry import metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations on the caller's connection (or a fresh engine from the URL)."""
    connection = config.attributes.get("connection")
    if connection is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode works on both
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
