"""A real stack per test session: fresh Postgres database, namespaced Redis queues, the API under
uvicorn and real Celery worker processes (gpu: one prefork child, prefetch 1; llm: threads)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# Short timeouts so crash recovery and outages resolve within seconds in tests.
FAST_TIMINGS = {
    "SPDLAB_STALE_CLAIM_AFTER_S": "3",
    "SPDLAB_HEARTBEAT_INTERVAL_S": "0.5",
    "SPDLAB_CANCEL_POLL_S": "0.2",
    "SPDLAB_SWEEP_INTERVAL_S": "0.5",
    "SPDLAB_DISPATCH_GRACE_S": "3",
    "SPDLAB_WORKER_ALIVE_AFTER_S": "5",
    "SPDLAB_PROGRESS_THROTTLE_S": "0.05",
    "SPDLAB_RETRY_AFTER_S": "1",
    "SPDLAB_LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="session")
def stack_env(postgres_database: Callable[[], str], redis_url: str, clean_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **clean_env,
        **FAST_TIMINGS,
        "DATABASE_URL": postgres_database(),
        "REDIS_URL": redis_url,
        "SPDLAB_NAMESPACE": f"t{uuid.uuid4().hex[:8]}.",
        "SPDLAB_DATA_DIR": str(tmp_path_factory.mktemp("stack")),
    }


@pytest.fixture(scope="session")
def stack_settings(stack_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Settings equal to the stack's, for direct database checks from the test process."""
    from spdlab.common.settings import Settings

    return Settings(
        database_url=stack_env["DATABASE_URL"], redis_url=stack_env["REDIS_URL"],
        namespace=stack_env["SPDLAB_NAMESPACE"], data_dir=Path(stack_env["SPDLAB_DATA_DIR"]),
    )


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str]) -> Iterator[Any]:
    from spdlab.common.stack import start_stack

    log_dir = Path(stack_env["SPDLAB_DATA_DIR"]) / "logs"
    s = start_stack(stack_env, log_dir=log_dir, timeout=90)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def admin_key(stack: Any, stack_settings: Any) -> str:
    from spdlab.common.db import session_scope
    from spdlab.common.users import create_api_key, create_user

    with session_scope(stack_settings) as session:
        user = create_user(session, f"admin-{uuid.uuid4().hex[:6]}", "admin")
        return create_api_key(session, user, "tests")[1]


@pytest.fixture
def api(stack: Any, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": admin_key}, timeout=15) as client:
        yield client


@pytest.fixture
def make_user(api: httpx.Client, stack: Any) -> Callable[..., tuple[int, httpx.Client]]:
    """Create a user through the admin API; returns (user id, a client authenticated as them)."""
    clients: list[httpx.Client] = []

    def make(role: str = "member", max_active_jobs: int | None = None) -> tuple[int, httpx.Client]:
        body = {"name": f"u{uuid.uuid4().hex[:8]}", "role": role, "max_active_jobs": max_active_jobs}
        resp = api.post("/api/v1/users", json=body)
        assert resp.status_code == 201, resp.text
        created = resp.json()
        client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {created['api_key']['key']}"},
                              timeout=15)
        clients.append(client)
        return created["user"]["id"], client

    yield make
    for client in clients:
        client.close()
