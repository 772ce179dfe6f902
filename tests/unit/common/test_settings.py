from __future__ import annotations

from pathlib import Path

import pytest

from spdlab.common.settings import Settings


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DATABASE_URL", "REDIS_URL", "SPDLAB_DATABASE_URL", "SPDLAB_REDIS_URL", "SPDLAB_DATA_DIR",
                 "SPDLAB_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_embedded_defaults(no_env: pytest.MonkeyPatch):
    s = Settings()
    assert s.embedded
    assert s.data_dir == Path("./var")
    assert s.effective_database_url.startswith("sqlite:///") and s.effective_database_url.endswith("var/spdlab.db")
    assert s.broker_url == "filesystem://"
    assert s.effective_artifact_dir == Path("./var/artifacts").resolve()


def test_plain_and_prefixed_urls(no_env: pytest.MonkeyPatch):
    no_env.setenv("DATABASE_URL", "postgresql+psycopg://u@h/db")
    no_env.setenv("REDIS_URL", "redis://h:6379/2")
    s = Settings()
    assert not s.embedded
    assert s.effective_database_url == "postgresql+psycopg://u@h/db"
    assert s.broker_url == "redis://h:6379/2"
    no_env.setenv("SPDLAB_DATABASE_URL", "postgresql+psycopg://v@h/other")
    assert Settings().effective_database_url == "postgresql+psycopg://v@h/other"


def test_namespace_and_visibility_timeout(no_env: pytest.MonkeyPatch):
    no_env.setenv("SPDLAB_NAMESPACE", "t1.")
    no_env.setenv("SPDLAB_LONGEST_JOB_S", "100")
    s = Settings()
    assert s.queue_name("gpu") == "t1.gpu"
    assert s.redis_key("job:x") == "spdlab:t1.job:x"
    assert s.visibility_timeout_s > s.longest_job_s


def test_invalid_values_are_rejected(no_env: pytest.MonkeyPatch):
    no_env.setenv("SPDLAB_ARTIFACT_BACKEND", "ftp")
    with pytest.raises(ValueError):
        Settings()
