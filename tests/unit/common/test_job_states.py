"""Job state machine against SQLite and Postgres: claims, takeover, exactly-once finish, cancel."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from spdlab.common import jobs
from spdlab.common.contracts.jobs import parse_job_request
from spdlab.common.db import session_scope
from spdlab.common.models import Job, JobEvent, User, utcnow
from spdlab.common.settings import Settings


def _submit(settings: Settings, owner: User, quota: int = 10, **params: object) -> jobs.SubmitOutcome:
    params.setdefault("nonce", uuid.uuid4().hex)
    request = parse_job_request("test.sleep", dict(params))
    with session_scope(settings) as session:
        return jobs.submit_job(session, owner=owner, request=request, queue="gpu", default_quota=quota)


def _claim(settings: Settings, job_id: str, worker: str = "w1", stale: float = 30) -> jobs.Claim | None:
    with session_scope(settings) as session:
        return jobs.claim_job(session, job_id, worker, stale_after_s=stale, max_attempts=3)


def _job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings) as session:
        return session.get(Job, job_id)


def _event_types(settings: Settings, job_id: str) -> list[str]:
    with session_scope(settings) as session:
        return list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def test_transition_table():
    assert jobs.can_transition("queued", "running")
    assert jobs.can_transition("running", "succeeded")
    assert not jobs.can_transition("succeeded", "running")
    assert not jobs.can_transition("queued", "succeeded")
    assert not any(jobs.can_transition("cancelled", s) for s in ("queued", "running", "succeeded"))


def test_get_or_compute(db_settings: Settings, owner: User):
    first = _submit(db_settings, owner, nonce="same")
    assert first.outcome == "created"
    again = _submit(db_settings, owner, nonce="same")
    assert again.outcome == "active" and again.job.id == first.job.id
    claim = _claim(db_settings, first.job.id)
    with session_scope(db_settings) as session:
        assert jobs.finish_job(session, claim, {"answer": 42})
    cached = _submit(db_settings, owner, nonce="same")
    assert cached.outcome == "cached" and cached.job.id == first.job.id
    assert cached.job.result == {"answer": 42}


def test_failed_request_is_recomputed(db_settings: Settings, owner: User):
    first = _submit(db_settings, owner, nonce="f")
    claim = _claim(db_settings, first.job.id)
    with session_scope(db_settings) as session:
        jobs.fail_job(session, claim, "boom", "it broke")
    second = _submit(db_settings, owner, nonce="f")
    assert second.outcome == "created" and second.job.id != first.job.id


def test_claim_is_exclusive_and_finish_is_exactly_once(db_settings: Settings, owner: User):
    job_id = _submit(db_settings, owner).job.id
    claim = _claim(db_settings, job_id)
    assert claim is not None and claim.attempt == 1
    assert _claim(db_settings, job_id, "w2") is None  # live claim: not claimable
    with session_scope(db_settings) as session:
        assert jobs.finish_job(session, claim, {"ok": True})
    with session_scope(db_settings) as session:
        assert not jobs.finish_job(session, claim, {"ok": "again"})
        assert not jobs.fail_job(session, claim, "x", "late failure")
    job = _job(db_settings, job_id)
    assert job.status == "succeeded" and job.result == {"ok": True}
    assert _event_types(db_settings, job_id).count("succeeded") == 1
    assert _claim(db_settings, job_id, "w3") is None


def test_stale_claim_takeover_fences_the_old_worker(db_settings: Settings, owner: User):
    job_id = _submit(db_settings, owner).job.id
    old = _claim(db_settings, job_id, "old")
    with session_scope(db_settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
    new = _claim(db_settings, job_id, "new", stale=30)
    assert new is not None and new.attempt == 2
    with session_scope(db_settings) as session:
        assert jobs.heartbeat(session, old) is None  # the old worker learns it lost the claim
        assert not jobs.record_progress(session, old, 1, 2, "x")
        assert not jobs.finish_job(session, old, {"from": "old"})
        assert jobs.heartbeat(session, new) is False
        assert jobs.finish_job(session, new, {"from": "new"})
    job = _job(db_settings, job_id)
    assert job.result == {"from": "new"} and job.attempts == 2 and job.worker == "new"


def test_too_many_attempts_fail_the_job(db_settings: Settings, owner: User):
    job_id = _submit(db_settings, owner).job.id
    for attempt in range(3):
        assert _claim(db_settings, job_id, f"w{attempt}") is not None
        with session_scope(db_settings) as session:
            session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert _claim(db_settings, job_id, "last") is None
    job = _job(db_settings, job_id)
    assert job.status == "failed" and job.error["code"] == "worker_lost"


def test_cancel_queued_and_running(db_settings: Settings, owner: User):
    queued = _submit(db_settings, owner).job.id
    with session_scope(db_settings) as session:
        jobs.request_cancel(session, session.get(Job, queued))
    assert _job(db_settings, queued).status == "cancelled"
    assert _claim(db_settings, queued) is None  # a cancelled job never starts

    running = _submit(db_settings, owner).job.id
    claim = _claim(db_settings, running)
    with session_scope(db_settings) as session:
        assert jobs.cancel_state(session, claim) is False
        jobs.request_cancel(session, session.get(Job, running))
    with session_scope(db_settings) as session:
        assert jobs.cancel_state(session, claim) is True
        assert jobs.cancel_claimed(session, claim)
    assert _job(db_settings, running).status == "cancelled"
    with session_scope(db_settings) as session, pytest.raises(jobs.JobStateError):
        jobs.request_cancel(session, session.get(Job, running))


def test_quota_counts_queued_and_running(db_settings: Settings, owner: User):
    a = _submit(db_settings, owner, quota=2).job.id
    _submit(db_settings, owner, quota=2)
    with pytest.raises(jobs.QuotaExceededError) as info:
        _submit(db_settings, owner, quota=2)
    assert info.value.limit == 2 and info.value.active == 2
    claim = _claim(db_settings, a)
    with session_scope(db_settings) as session:
        jobs.finish_job(session, claim, {})
    assert _submit(db_settings, owner, quota=2).outcome == "created"


def test_sweeper_queries(db_settings: Settings, owner: User):
    fresh = _submit(db_settings, owner).job.id
    old = _submit(db_settings, owner).job.id
    dispatched = _submit(db_settings, owner).job.id
    stale = _submit(db_settings, owner).job.id
    past = utcnow() - timedelta(seconds=120)
    with session_scope(db_settings) as session:
        session.execute(update(Job).where(Job.id == old).values(created_at=past))
        session.execute(update(Job).where(Job.id == dispatched).values(created_at=past, dispatched_at=past))
    assert _claim(db_settings, stale) is not None
    with session_scope(db_settings) as session:
        session.execute(update(Job).where(Job.id == stale).values(heartbeat_at=past))
        requeued = jobs.requeue_stale(session, stale_after_s=30)
    assert [j for j, _ in requeued] == [stale]
    assert _job(db_settings, stale).status == "queued"
    with session_scope(db_settings) as session:
        # Broker epoch older than everything: only the never-dispatched old job is due.
        ids = {j for j, _ in jobs.undispatched(session, epoch_started=past - timedelta(hours=1), grace_s=10)}
    assert old in ids and fresh not in ids and dispatched not in ids
    with session_scope(db_settings) as session:
        # Broker restarted after 'dispatched' was sent: its message is gone (and so are the others').
        ids = {j for j, _ in jobs.undispatched(session, epoch_started=utcnow(), grace_s=10)}
    assert dispatched in ids and fresh not in ids
    with session_scope(db_settings) as session:
        # Re-dispatched once per epoch, not on every sweep.
        assert jobs.undispatched(session, epoch_started=past, grace_s=10) == []
