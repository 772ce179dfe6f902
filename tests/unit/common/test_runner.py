"""The generic runner in-process (no Celery): outcomes, progress throttling, cancel, lost claims."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import select

from spdlab.common import jobs
from spdlab.common.contracts.jobs import parse_job_request
from spdlab.common.db import session_scope
from spdlab.common.models import Job, JobEvent
from spdlab.common.registry import HandlerRegistry, HandlerResult
from spdlab.common.runner import JobContext, JobFailedError, run_job
from spdlab.common.settings import Settings
from spdlab.common.sleep_kind import run_sleep
from spdlab.common.users import create_user


@pytest.fixture
def settings(sqlite_settings: Settings) -> Settings:
    return sqlite_settings.model_copy(update={"cancel_poll_s": 0.05, "heartbeat_interval_s": 0.1,
                                              "progress_throttle_s": 0.0})


@pytest.fixture
def owner(settings: Settings):  # type: ignore[no-untyped-def]
    with session_scope(settings) as session:
        return create_user(session, "runner-owner")


def _submit(settings: Settings, owner, kind: str = "test.sleep", **params) -> str:  # type: ignore[no-untyped-def]
    params.setdefault("nonce", uuid.uuid4().hex)
    with session_scope(settings) as session:
        return jobs.submit_job(session, owner=owner, request=parse_job_request(kind, params), queue="gpu",
                               default_quota=100).job.id


def _state(settings: Settings, job_id: str) -> tuple[Job, list[JobEvent]]:
    with session_scope(settings) as session:
        events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))
        return session.get(Job, job_id), events


def _registry(**handlers) -> HandlerRegistry:  # type: ignore[no-untyped-def]
    registry = HandlerRegistry("gpu")
    for kind, fn in handlers.items():
        registry.register(kind.replace("_", "."))(fn)
    return registry


def test_success_records_progress_and_result(settings: Settings, owner):  # type: ignore[no-untyped-def]
    job_id = _submit(settings, owner, steps=4, step_s=0.0)
    assert run_job(job_id, registry=_registry(test_sleep=run_sleep), worker="w", settings=settings) == "succeeded"
    job, events = _state(settings, job_id)
    assert job.status == "succeeded" and job.result["steps_done"] == 4
    assert (job.progress_current, job.progress_total, job.progress_stage) == (4, 4, "sleep")
    assert [e.data["current"] for e in events if e.type == "progress"] == [1, 2, 3, 4]
    assert events[-1].type == "succeeded" and [e.seq for e in events] == list(range(1, len(events) + 1))
    # A redelivered message for a finished job is a no-op.
    assert run_job(job_id, registry=_registry(test_sleep=run_sleep), worker="w2", settings=settings) == "skipped"


def test_user_error_and_crash(settings: Settings, owner):  # type: ignore[no-untyped-def]
    failing = _submit(settings, owner, steps=3, step_s=0.0, fail_at=1)
    assert run_job(failing, registry=_registry(test_sleep=run_sleep), worker="w", settings=settings) == "failed"
    job, _ = _state(settings, failing)
    assert job.error == {"code": "requested_failure", "message": "failing at step 1 as requested"}

    def crash(ctx: JobContext) -> None:
        raise ZeroDivisionError("division by zero")

    crashing = _submit(settings, owner)
    assert run_job(crashing, registry=_registry(test_sleep=crash), worker="w", settings=settings) == "failed"
    job, events = _state(settings, crashing)
    assert job.error["code"] == "internal_error" and "ZeroDivisionError" in job.error["message"]
    assert events[-1].type == "failed"


def test_unknown_kind_fails_cleanly(settings: Settings, owner):  # type: ignore[no-untyped-def]
    job_id = _submit(settings, owner)
    assert run_job(job_id, registry=_registry(), worker="w", settings=settings) == "failed"
    assert _state(settings, job_id)[0].error["code"] == "unknown_kind"


def test_handler_result_with_reference(settings: Settings, owner):  # type: ignore[no-untyped-def]
    def with_ref(ctx: JobContext) -> HandlerResult:
        key = ctx.artifacts.put_bytes(f"jobs/{ctx.job_id}/out.bin", b"\x00\x01")
        return HandlerResult({"bytes": 2}, key)

    job_id = _submit(settings, owner)
    run_job(job_id, registry=_registry(test_sleep=with_ref), worker="w", settings=settings)
    job, _ = _state(settings, job_id)
    assert job.result == {"bytes": 2} and job.result_ref == f"jobs/{job_id}/out.bin"


def test_cancel_stops_a_running_handler_quickly(settings: Settings, owner):  # type: ignore[no-untyped-def]
    job_id = _submit(settings, owner, steps=200, step_s=0.05)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(
        run_job(job_id, registry=_registry(test_sleep=run_sleep), worker="w", settings=settings)))
    thread.start()
    while _state(settings, job_id)[0].progress_current is None:
        time.sleep(0.02)
    requested = time.monotonic()
    with session_scope(settings) as session:
        jobs.request_cancel(session, session.get(Job, job_id))
    thread.join(timeout=5)
    assert outcome == ["cancelled"] and time.monotonic() - requested < 1.0
    job, events = _state(settings, job_id)
    assert job.status == "cancelled" and job.progress_current < 200
    assert events[-1].type == "cancelled"


def test_lost_claim_writes_nothing(settings: Settings, owner):  # type: ignore[no-untyped-def]
    job_id = _submit(settings, owner)
    seen: list[bool] = []

    def stolen(ctx: JobContext) -> dict:
        # Another worker takes the job over (as after a missed heartbeat).
        with session_scope(settings) as session:
            session.get(Job, job_id).claim_token = "someone-else"
        deadline = time.monotonic() + 2
        while not ctx.should_cancel() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(ctx.should_cancel())
        raise JobFailedError("should not be recorded")

    assert run_job(job_id, registry=_registry(test_sleep=stolen), worker="w", settings=settings) == "lost"
    job, events = _state(settings, job_id)
    assert seen == [True] and job.status == "running" and job.error is None
    assert not any(e.type in ("failed", "succeeded") for e in events)


def test_park_releases_the_claim_until_the_next_message(settings: Settings, owner):  # type: ignore[no-untyped-def]
    job_id = _submit(settings, owner)
    calls: list[int] = []

    def parks_once(ctx: JobContext) -> dict | None:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            assert ctx.park("waiting for something")
            return None
        return {"second": True}

    registry = _registry(test_sleep=parks_once)
    assert run_job(job_id, registry=registry, worker="w", settings=settings) == "parked"
    job, events = _state(settings, job_id)
    assert job.status == "running" and job.claim_token is None and job.heartbeat_at is None and job.attempts == 0
    assert events[-1].type == "log" and events[-1].data["message"] == "waiting for something"
    # Parked, not stale: the sweep leaves it alone; the next message claims it as attempt 1 again.
    with session_scope(settings) as session:
        assert jobs.requeue_stale(session, stale_after_s=0.0) == []
    assert run_job(job_id, registry=registry, worker="w2", settings=settings) == "succeeded"
    assert calls == [1, 1] and _state(settings, job_id)[0].result == {"second": True}
