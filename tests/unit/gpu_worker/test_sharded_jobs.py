"""Sharded jobs in-process (runner + SQLite + the filesystem broker, no Celery worker): a parent
parks while its shards run, and a shard that ends without telling its parent (given up after the
maximum attempts, or cancelled while queued) is settled by the sweeper so the parent ends too."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import update

from spdlab.common import jobs, shard_jobs
from spdlab.common.contracts.jobs import parse_job_request
from spdlab.common.db import session_scope
from spdlab.common.models import Job
from spdlab.common.registry import HandlerRegistry
from spdlab.common.runner import JobContext, run_job
from spdlab.common.settings import Settings
from spdlab.common.users import create_user
from spdlab.common.worker import sweep
from spdlab.gpu_worker.sharding import drive_parent, run_shard

N_SHARDS = 2


@pytest.fixture
def settings(sqlite_settings: Settings) -> Settings:
    return sqlite_settings.model_copy(update={"cancel_poll_s": 0.05, "heartbeat_interval_s": 0.1,
                                              "progress_throttle_s": 0.0})


def _parent(ctx: JobContext) -> dict[str, Any] | None:
    if not drive_parent(ctx, "harvest.shard", N_SHARDS):
        return None
    return {"merged": True}


def _shard(ctx: JobContext) -> dict[str, Any]:
    return run_shard(ctx, "test shards", lambda watch: ({"shard": ctx.params.index}, 1))  # type: ignore[attr-defined]


REGISTRY = HandlerRegistry("gpu")
REGISTRY.register("harvest")(_parent)
REGISTRY.register("harvest.shard")(_shard)


def _run(settings: Settings, job_id: str) -> str:
    return run_job(job_id, registry=REGISTRY, worker="w", settings=settings)


def _job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _parked_parent(settings: Settings) -> tuple[str, list[str]]:
    """A submitted parent after its first claim: shards created, parent parked."""
    params = {"decomposition_id": 1, "dataset_id": 1, "n_shards": N_SHARDS, "config": {"seed": uuid.uuid4().int % 1000}}
    with session_scope(settings) as session:
        owner = create_user(session, f"u{uuid.uuid4().hex[:6]}")
        parent_id = jobs.submit_job(session, owner=owner, request=parse_job_request("harvest", params),
                                    queue="gpu", default_quota=100).job.id
    assert _run(settings, parent_id) == "parked"
    parent = _job(settings, parent_id)
    assert parent.status == "running" and parent.claim_token is None and parent.heartbeat_at is None
    assert parent.attempts == 0  # parking is not an attempt
    with session_scope(settings) as session:
        children = [j.id for j in shard_jobs.child_jobs(session, parent_id)]
    assert len(children) == N_SHARDS
    return parent_id, children


def test_all_shards_succeed_then_parent_merges(settings: Settings):
    parent_id, children = _parked_parent(settings)
    assert [_run(settings, c) for c in children] == ["succeeded"] * N_SHARDS
    assert _run(settings, parent_id) == "succeeded"
    assert _job(settings, parent_id).result == {"merged": True}
    assert sweep(settings) == []  # nothing to settle


def test_shard_given_up_after_max_attempts_fails_the_parent(settings: Settings):
    parent_id, (first, second) = _parked_parent(settings)
    assert _run(settings, first) == "succeeded"
    # Every earlier worker of the second shard was lost: the next claim gives up on it, which fails
    # the job row directly, without its handler recording an outcome or waking the parent.
    with session_scope(settings) as session:
        session.execute(update(Job).where(Job.id == second).values(attempts=settings.max_job_attempts))
    assert _run(settings, second) == "skipped"
    assert _job(settings, second).error["code"] == "worker_lost"
    assert _job(settings, parent_id).status == "running"

    assert parent_id in sweep(settings)
    assert parent_id not in sweep(settings)  # settled once
    assert _run(settings, parent_id) == "failed"
    parent = _job(settings, parent_id)
    assert parent.status == "failed" and parent.error["code"] == "shard_failed"
    assert parent.error["message"] == (
        f"shard 2/2: gave up after {settings.max_job_attempts} attempts (workers were lost)")
    assert _job(settings, first).status == "succeeded"


def test_shard_cancelled_while_queued_cancels_the_parent(settings: Settings):
    parent_id, (first, second) = _parked_parent(settings)
    with session_scope(settings) as session:
        jobs.request_cancel(session, session.get(Job, first))  # queued: cancelled at once, no handler runs
    assert parent_id in sweep(settings)
    assert _job(settings, second).status == "cancelled"  # siblings are stopped as a shard would
    assert _run(settings, parent_id) == "cancelled"
    assert _job(settings, parent_id).status == "cancelled"
