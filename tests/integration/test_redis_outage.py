"""Redis stopped and restarted: 503 + Retry-After while down, normal after, no accepted job lost.

This stops the machine's Redis (``redis-cli shutdown nosave``, so its queues are really lost) and
always restarts it with ``scripts/ensure_services.sh``.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from platform_helpers import submit, wait_job
from sqlalchemy import func, select

from spdlab.common.db import session_scope
from spdlab.common.models import Job

REPO = Path(__file__).resolve().parents[2]


def _redis_up() -> bool:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True, text=True)
    return out.stdout.strip() == "PONG"


def _stop_redis() -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True)
    deadline = time.monotonic() + 10
    while _redis_up():
        assert time.monotonic() < deadline, "redis did not stop"
        time.sleep(0.1)


def _start_redis() -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "ensure_services.sh")], check=True, capture_output=True)


def test_redis_outage_503_then_recovery_without_loss(api: httpx.Client, stack: Any, stack_settings: Any):
    running = submit(api, steps=25, step_s=0.1)
    wait_job(api, running["id"], lambda j: j["status"] == "running")
    queued_gpu = submit(api, steps=2, step_s=0.05)  # waits behind `running` in Redis
    queued_llm = submit(api, "test.llm_sleep", steps=20, step_s=0.1)
    rejected_nonce = uuid.uuid4().hex
    try:
        _stop_redis()
        resp = api.post("/api/v1/jobs", json={"kind": "test.sleep", "params": {"nonce": rejected_nonce}})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "broker" in resp.json()["detail"]
        assert api.get(f"/api/v1/jobs/{running['id']}").status_code == 200  # reads need only Postgres
        ready = httpx.get(f"{stack.url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("unavailable")
        time.sleep(1.0)
    finally:
        _start_redis()

    deadline = time.monotonic() + 30
    while True:  # the API reconnects by itself
        resp = api.post("/api/v1/jobs", json={"kind": "test.sleep", "params": {"steps": 1, "nonce": uuid.uuid4().hex}})
        if resp.status_code == 202:
            break
        assert resp.status_code == 503 and time.monotonic() < deadline, resp.text
        time.sleep(0.3)
    after = resp.json()

    for job in (running, queued_gpu, queued_llm, after):
        done = wait_job(api, job["id"], timeout=60)
        assert done["status"] == "succeeded", done
    with session_scope(stack_settings) as session:
        # The request answered 503 was not accepted: no row, nothing half-queued.
        assert session.scalar(select(func.count()).select_from(Job).where(
            Job.params["nonce"].as_string() == rejected_nonce)) == 0
    stack.wait_ready(30)
