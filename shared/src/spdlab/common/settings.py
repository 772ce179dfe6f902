"""Process settings from the environment (``SPDLAB_*``, plus plain ``DATABASE_URL``/``REDIS_URL``).

With neither URL set the same code runs embedded: SQLite and a file-backed Celery transport under
the data directory.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPDLAB_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SPDLAB_DATABASE_URL", "DATABASE_URL")
    )
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("SPDLAB_REDIS_URL", "REDIS_URL"))
    # Prefix for queue names and Redis keys, so several deployments (or test sessions) share a Redis.
    namespace: str = ""

    artifact_backend: Literal["local", "s3"] = "local"
    artifact_dir: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = "spdlab"
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    max_active_jobs_per_user: int = Field(default=20, ge=1)
    max_job_attempts: int = Field(default=3, ge=1)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    stale_claim_after_s: float = Field(default=30.0, gt=0)
    cancel_poll_s: float = Field(default=0.5, gt=0)
    progress_throttle_s: float = Field(default=0.5, ge=0)
    sweep_interval_s: float = Field(default=2.0, gt=0)
    dispatch_grace_s: float = Field(default=10.0, gt=0)
    worker_alive_after_s: float = Field(default=15.0, gt=0)
    # The broker re-delivers an unacked message after this; it must exceed the longest job.
    longest_job_s: int = Field(default=24 * 3600, gt=0)
    retry_after_s: int = 5

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    # Run migrations when the API starts (the embedded launcher migrates before starting anything).
    auto_migrate: bool = False

    # Decomposition import: run directories must lie under one of these (os.pathsep-separated;
    # the data dir and the repo's test fixtures are always allowed). Nothing else on the host is readable.
    import_roots: str = ""
    # GPU worker: loaded-decomposition cache budget, device ("auto" = cuda when available), torch threads.
    model_cache_bytes: int = Field(default=4 * 2**30, ge=0)
    device: str = "auto"
    torch_threads: int = Field(default=1, ge=0)  # 0 = leave torch's default
    # GPU worker: run graph / intervention / probe / harvest forward passes under bf16 autocast on CUDA
    # (faster, less exact; float32 is the reference). Ignored, with a log line, on other devices.
    autocast_bf16: bool = False
    # API: decoded graph blobs kept in process (graphs are immutable).
    graph_cache_bytes: int = Field(default=512 * 2**20, ge=0)

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.redis_url is None

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'spdlab.db').resolve()}"

    @property
    def broker_url(self) -> str:
        return self.redis_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def effective_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def visibility_timeout_s(self) -> int:
        return self.longest_job_s + 3600

    def allowed_import_roots(self) -> list[Path]:
        fixtures = Path(__file__).resolve().parents[4] / "tests" / "fixtures"
        extra = [Path(p) for p in self.import_roots.split(os.pathsep) if p.strip()]
        return [r.resolve() for r in (self.data_dir, fixtures, *extra)]

    def queue_name(self, queue: str) -> str:
        return f"{self.namespace}{queue}"

    def redis_key(self, suffix: str) -> str:
        return f"spdlab:{self.namespace}{suffix}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
