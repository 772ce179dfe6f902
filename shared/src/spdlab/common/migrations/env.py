"""Alembic environment: runs on the connection handed over by ``spdlab.common.db.upgrade_database``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from spdlab.common import graph_tables  # noqa: F401  (registers its tables on Base.metadata)
from spdlab.common.models import Base
from spdlab.common.settings import get_settings

target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().effective_database_url
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
