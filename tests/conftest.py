"""Shared fixtures: the machine's Postgres/Redis, a fresh database per test session, SQLite settings.

Heavy imports stay inside fixtures so that unit tests of other packages pay nothing for them.
"""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PG_HOST = "127.0.0.1:5432"


def ensure_services() -> None:
    """Start Postgres and Redis when they are down (same command the Makefile uses)."""
    subprocess.run(["bash", str(REPO / "scripts" / "ensure_services.sh")], check=True, capture_output=True)


def _pg_user() -> str:
    import psycopg

    for user in ("postgres", "root"):
        try:
            with psycopg.connect(f"postgresql://{user}@{PG_HOST}/postgres", connect_timeout=3):
                return user
        except psycopg.OperationalError:
            continue
    raise RuntimeError("no Postgres role 'postgres' or 'root' with trust auth on 127.0.0.1:5432")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh, migrated Postgres databases (one per call), all dropped at session end."""
    import psycopg

    from spdlab.common.db import get_engine, upgrade_database

    ensure_services()
    user = _pg_user()
    admin = f"postgresql://{user}@{PG_HOST}/postgres"
    created: list[str] = []

    def make() -> str:
        name = f"spdlab_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = f"postgresql+psycopg://{user}@{PG_HOST}/{name}"
        upgrade_database(url)
        return url

    yield make
    for name in created:
        get_engine(f"postgresql+psycopg://{user}@{PG_HOST}/{name}").dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(postgres_database: Callable[[], str]) -> str:
    """A fresh database for in-process tests (the integration stack gets its own)."""
    return postgres_database()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis on a random database number (queues are namespaced per session too)."""
    ensure_services()
    return f"redis://127.0.0.1:6379/{random.randint(1, 15)}"


@pytest.fixture
def sqlite_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Embedded-mode settings over a fresh, migrated SQLite file."""
    from spdlab.common.db import upgrade_database
    from spdlab.common.settings import Settings

    settings = Settings(data_dir=tmp_path / "var", database_url=None, redis_url=None)
    upgrade_database(settings.effective_database_url)
    return settings


@pytest.fixture(scope="session")
def clean_env() -> dict[str, str]:
    """This process's environment without deployment variables (tests set their own)."""
    drop = ("DATABASE_URL", "REDIS_URL")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SPDLAB_")}
