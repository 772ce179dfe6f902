from __future__ import annotations

import uuid

import pytest

from spdlab.common.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def db_settings(request: pytest.FixtureRequest, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Both backends: the conditional updates must behave the same on each."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_settings")
    url = request.getfixturevalue("postgres_url")
    return Settings(data_dir=tmp_path / "var", database_url=url, redis_url=None)


@pytest.fixture
def owner(db_settings: Settings):  # type: ignore[no-untyped-def]
    from spdlab.common.db import session_scope
    from spdlab.common.users import create_user

    with session_scope(db_settings) as session:
        return create_user(session, f"u-{uuid.uuid4().hex[:8]}", "member")
