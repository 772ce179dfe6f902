"""Jobs end to end on the real stack: worker processes, SSE, get-or-compute, cancel, kill -9."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from platform_helpers import read_sse, submit, wait_job
from sqlalchemy import func, select

from spdlab.common.db import session_scope
from spdlab.common.models import JobEvent


def test_job_runs_on_worker_and_sse_streams_progress_and_final(api: httpx.Client):
    job = submit(api, steps=5, step_s=0.1)
    assert job["status"] == "queued" and job["queue"] == "gpu"
    events = read_sse(api, job["id"])
    ids = [e["id"] for e in events]
    assert ids == list(range(1, len(ids) + 1))  # gapless and ordered
    progress = [e["data"]["current"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 5 and len(progress) >= 2
    assert events[-1]["event"] == "succeeded" and events[-1]["data"]["result"]["steps_done"] == 5
    done = api.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["worker"].startswith("gpu-") and done["progress"] == {"current": 5, "total": 5, "stage": "sleep"}


def test_sse_resumes_from_last_event_id_without_gaps(api: httpx.Client):
    job = submit(api, steps=8, step_s=0.15)
    first = read_sse(api, job["id"], max_events=3)  # disconnect mid-run
    rest = read_sse(api, job["id"], last_event_id=first[-1]["id"])
    ids = [e["id"] for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert rest[-1]["event"] == "succeeded"
    # Replaying a finished job from the start gives the same stream.
    assert [e["id"] for e in read_sse(api, job["id"])] == ids


def test_llm_queue_job_runs_on_llm_worker(api: httpx.Client):
    job = submit(api, "test.llm_sleep", steps=2, step_s=0.05)
    assert job["queue"] == "llm"
    done = wait_job(api, job["id"])
    assert done["status"] == "succeeded" and done["worker"].startswith("llm-")


def test_get_or_compute(api: httpx.Client):
    nonce = uuid.uuid4().hex
    first = api.post("/api/v1/jobs", json={"kind": "test.sleep", "params": {"steps": 3, "step_s": 0.1, "nonce": nonce}})
    same = api.post("/api/v1/jobs", json={"kind": "test.sleep", "params": {"nonce": nonce, "step_s": 0.1, "steps": 3}})
    assert first.status_code == 202 and same.status_code == 202
    assert same.json()["id"] == first.json()["id"]
    wait_job(api, first.json()["id"])
    cached = api.post("/api/v1/jobs", json={"kind": "test.sleep", "params": {"steps": 3, "step_s": 0.1, "nonce": nonce}})
    assert cached.status_code == 200 and cached.json()["id"] == first.json()["id"]
    assert cached.json()["result"]["steps_done"] == 3


def test_failed_job_keeps_user_facing_error(api: httpx.Client):
    job = submit(api, steps=3, step_s=0.01, fail_at=1)
    events = read_sse(api, job["id"])
    assert events[-1]["event"] == "failed"
    done = api.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "failed"
    assert done["error"] == {"code": "requested_failure", "message": "failing at step 1 as requested"}


def test_cancel_running_job_stops_within_2s(api: httpx.Client):
    job = submit(api, steps=200, step_s=0.1)
    wait_job(api, job["id"], lambda j: j["status"] == "running" and (j["progress"]["current"] or 0) >= 1)
    start = time.monotonic()
    resp = api.delete(f"/api/v1/jobs/{job['id']}")
    assert resp.status_code == 200 and resp.json()["cancel_requested"]
    done = wait_job(api, job["id"], timeout=5)
    assert done["status"] == "cancelled" and time.monotonic() - start < 2.0
    assert done["progress"]["current"] < 200
    assert read_sse(api, job["id"])[-1]["event"] == "cancelled"
    assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 409


def test_cancel_queued_job_never_starts(api: httpx.Client):
    blocker = submit(api, steps=100, step_s=0.05)  # occupies the single gpu slot
    wait_job(api, blocker["id"], lambda j: j["status"] == "running")
    queued = submit(api, steps=2, step_s=0.01)
    resp = api.delete(f"/api/v1/jobs/{queued['id']}")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    api.delete(f"/api/v1/jobs/{blocker['id']}")
    wait_job(api, blocker["id"])
    time.sleep(1.0)  # the queued job's message reaches the worker now and must be skipped
    after = api.get(f"/api/v1/jobs/{queued['id']}").json()
    assert after["status"] == "cancelled" and after["attempts"] == 0 and after["started_at"] is None


def test_list_filters_and_paginates(api: httpx.Client, make_user: Any):
    user_id, member = make_user()
    ids = [submit(member, "test.llm_sleep", steps=0)["id"] for _ in range(3)]
    for job_id in ids:
        wait_job(member, job_id)
    page = member.get("/api/v1/jobs", params={"owner": "me", "limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    rest = member.get("/api/v1/jobs", params={"owner": "me", "limit": 2, "offset": 2}).json()
    assert {j["id"] for j in page["items"] + rest["items"]} == set(ids)
    by_admin = api.get("/api/v1/jobs", params={"owner": str(user_id), "status": "succeeded",
                                               "kind": "test.llm_sleep"}).json()
    assert by_admin["total"] == 3
    assert api.get("/api/v1/jobs", params={"owner": str(user_id), "kind": "test.sleep"}).json()["total"] == 0


def test_worker_killed_mid_job_is_redelivered_and_finishes_once(api: httpx.Client, stack: Any,
                                                                  stack_settings: Any):
    job = submit(api, steps=15, step_s=0.2)
    wait_job(api, job["id"], lambda j: (j["progress"]["current"] or 0) >= 3)
    stack.kill("gpu")  # SIGKILL to the worker's process group, mid-job
    stack.start("gpu")
    done = wait_job(api, job["id"], timeout=45)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert done["result"]["steps_done"] == 15
    with session_scope(stack_settings) as session:
        finals = session.scalar(select(func.count()).select_from(JobEvent).where(
            JobEvent.job_id == job["id"], JobEvent.type.in_(("succeeded", "failed", "cancelled"))))
    assert finals == 1
    messages = [e["data"].get("message", "") for e in read_sse(api, job["id"]) if e["event"] == "log"]
    assert any("requeued" in m for m in messages)
    stack.wait_ready(30)


def test_health_ready_metrics_and_request_id(api: httpx.Client, stack: Any):
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz").json()
    assert ready["ready"] and ready["checks"]["workers"]["gpu"] >= 1 and ready["checks"]["workers"]["llm"] >= 1
    resp = api.get("/api/v1/users/me", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    assert len(api.get("/api/v1/users/me").headers["x-request-id"]) == 32
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'spdlab_http_requests_total{method="GET",route="/api/v1/users/me",status="200"}' in metrics
    assert "spdlab_http_request_duration_seconds_bucket" in metrics
    assert 'spdlab_jobs{state="succeeded"}' in metrics and 'spdlab_queue_depth{queue="gpu"}' in metrics
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    assert "/api/v1/jobs/{job_id}/events" in spec["paths"]
    assert httpx.get(f"{stack.url}/docs").status_code == 200
