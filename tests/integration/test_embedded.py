"""Embedded default: no DATABASE_URL/REDIS_URL -> SQLite, filesystem broker, local artifacts; the API
and both workers as processes, a job on each queue through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_helpers import read_sse, submit, wait_job


@pytest.fixture(scope="module")
def embedded(clean_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from spdlab.common.admin import ensure_admin
    from spdlab.common.settings import Settings
    from spdlab.common.stack import start_stack

    data_dir = tmp_path_factory.mktemp("embedded") / "var"
    env = {**clean_env, "SPDLAB_DATA_DIR": str(data_dir), "SPDLAB_CANCEL_POLL_S": "0.2",
           "SPDLAB_PROGRESS_THROTTLE_S": "0.05"}
    stack = start_stack(env, log_dir=data_dir / "logs", timeout=90)
    try:
        key = ensure_admin(Settings(data_dir=data_dir, database_url=None, redis_url=None))
        assert key is not None
        yield stack, key
    finally:
        stack.stop()


def test_embedded_stack_runs_jobs_on_both_queues(embedded: tuple[Any, str]):
    stack, key = embedded
    data_dir = Path(stack.env["SPDLAB_DATA_DIR"])
    assert (data_dir / "spdlab.db").is_file() and (data_dir / "broker" / "queue").is_dir()
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": key}, timeout=15) as api:
        gpu = submit(api, steps=3, step_s=0.05)
        llm = submit(api, "test.llm_sleep", steps=3, step_s=0.05)
        events = read_sse(api, gpu["id"])
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["event"] == "succeeded" and any(e["event"] == "progress" for e in events)
        assert wait_job(api, llm["id"])["status"] == "succeeded"
        long = submit(api, steps=100, step_s=0.05)
        wait_job(api, long["id"], lambda j: j["status"] == "running")
        api.delete(f"/api/v1/jobs/{long['id']}")
        assert wait_job(api, long["id"], timeout=5)["status"] == "cancelled"
        ready = httpx.get(f"{stack.url}/readyz").json()
        assert ready["ready"] and ready["checks"]["broker"] == "ok"
