"""Job state machine over the ``jobs`` table (the source of truth).

Every transition is a conditional UPDATE, so concurrent workers, sweepers and API replicas agree
on one winner: a job is claimed once per attempt and reaches ``succeeded`` at most once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spdlab.common.events import append_event
from spdlab.common.models import ACTIVE_STATUSES, Job, User, UTCDateTime, utcnow

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled"}),
    # running -> queued: a stale claim is handed back to the queue by the sweeper.
    "running": frozenset({"succeeded", "failed", "cancelled", "queued", "running"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def can_transition(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def params_key(kind: str, params: Mapping[str, Any]) -> str:
    """Content key of a request: identical (normalised) requests share it."""
    return hashlib.sha256(canonical_json({"kind": kind, "params": params}).encode()).hexdigest()


class QuotaExceededError(Exception):
    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"quota exceeded: {active} queued or running jobs, limit is {limit}")
        self.active = active
        self.limit = limit


class JobStateError(Exception):
    """A transition the job's current state does not allow (e.g. cancelling a finished job)."""


@dataclass(frozen=True)
class SubmitOutcome:
    job: Job
    outcome: Literal["created", "active", "cached"]


@dataclass(frozen=True)
class Claim:
    job_id: str
    token: str
    worker: str
    kind: str
    params: dict[str, Any]
    attempt: int
    cancel_requested: bool


def _ts(value: datetime) -> Any:
    return literal(value, type_=UTCDateTime())


def _find_reusable(session: Session, kind: str, key: str) -> SubmitOutcome | None:
    rows = session.scalars(
        select(Job)
        .where(Job.kind == kind, Job.params_key == key, Job.status.in_(("succeeded", *ACTIVE_STATUSES)))
        .order_by(Job.created_at.desc())
        .limit(5)
    ).all()
    for job in rows:
        if job.status == "succeeded":
            return SubmitOutcome(job, "cached")
    return SubmitOutcome(rows[0], "active") if rows else None


def active_job_count(session: Session, owner_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE_STATUSES))
        )
        or 0
    )


def submit_job(
    session: Session, *, owner: User, request: BaseModel, queue: str, default_quota: int
) -> SubmitOutcome:
    """Get-or-compute: a finished identical request, an active identical job, or a new queued row.

    The caller commits, then publishes the job (``broker.publish_job``) and marks it dispatched.
    """
    kind: str = request.kind  # type: ignore[attr-defined]
    params = request.params.model_dump(mode="json")  # type: ignore[attr-defined]
    key = params_key(kind, params)
    found = _find_reusable(session, kind, key)
    if found is not None:
        return found
    # Lock the owner's row so concurrent submits by one user cannot overshoot the quota.
    session.execute(select(User.id).where(User.id == owner.id).with_for_update())
    limit = owner.max_active_jobs or default_quota
    active = active_job_count(session, owner.id)
    if active >= limit:
        raise QuotaExceededError(active, limit)
    job = Job(kind=kind, queue=queue, owner_id=owner.id, params=params, params_key=key, status="queued",
              attempts=0, event_seq=0, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        # An identical request was inserted concurrently (unique index over active jobs).
        found = _find_reusable(session, kind, key)
        if found is None:
            raise
        return found
    return SubmitOutcome(job, "created")


def mark_dispatched(session: Session, job_id: str) -> None:
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == "queued").values(dispatched_at=_ts(utcnow()))
    )


def claim_job(
    session: Session, job_id: str, worker: str, *, stale_after_s: float, max_attempts: int
) -> Claim | None:
    """queued -> running, or take over a running job whose heartbeat is stale. None: not ours."""
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after_s)
    token = uuid.uuid4().hex
    row = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == "queued",
                and_(Job.status == "running", or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < _ts(cutoff))),
            ),
        )
        .values(
            status="running",
            claim_token=token,
            worker=worker,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, _ts(now)),
            heartbeat_at=_ts(now),
        )
        .returning(Job.kind, Job.params, Job.attempts, Job.cancel_requested)
    ).first()
    if row is None:
        return None
    claim = Claim(job_id, token, worker, row.kind, row.params, int(row.attempts), bool(row.cancel_requested))
    if claim.attempt > max_attempts:
        fail_job(session, claim, "worker_lost", f"gave up after {max_attempts} attempts (workers were lost)")
        return None
    append_event(session, job_id, "log", {"message": f"attempt {claim.attempt} started on {worker}"})
    return claim


def _owned(claim: Claim) -> Any:
    return and_(Job.id == claim.job_id, Job.claim_token == claim.token, Job.status == "running")


def heartbeat(session: Session, claim: Claim) -> bool | None:
    """Refresh the claim. Returns the cancel flag, or None when the claim was lost."""
    value = session.execute(
        update(Job).where(_owned(claim)).values(heartbeat_at=_ts(utcnow())).returning(Job.cancel_requested)
    ).scalar_one_or_none()
    return None if value is None else bool(value)


def cancel_state(session: Session, claim: Claim) -> bool | None:
    """Read-only cancel check. Returns the cancel flag, or None when the claim was lost."""
    value = session.execute(select(Job.cancel_requested).where(_owned(claim))).scalar_one_or_none()
    return None if value is None else bool(value)


def record_progress(session: Session, claim: Claim, current: float, total: float | None, stage: str | None) -> bool:
    done = session.execute(
        update(Job)
        .where(_owned(claim))
        .values(progress_current=current, progress_total=total, progress_stage=stage)
        .returning(Job.id)
    ).first()
    if done is None:
        return False
    append_event(session, claim.job_id, "progress", {"current": current, "total": total, "stage": stage})
    return True


def record_log(session: Session, claim: Claim, message: str) -> bool:
    if session.execute(select(Job.id).where(_owned(claim))).first() is None:
        return False
    append_event(session, claim.job_id, "log", {"message": message[:4000]})
    return True


def park(session: Session, claim: Claim, message: str) -> bool:
    """Give up the claim but stay ``running``: no token, no heartbeat, so the sweeper leaves the job
    alone and a later message claims it again (a sharded parent waiting for its shards). Parking
    does not count as an attempt. False if the claim was already lost."""
    done = session.execute(
        update(Job)
        .where(_owned(claim))
        .values(claim_token=None, heartbeat_at=None, attempts=Job.attempts - 1)
        .returning(Job.id)
    ).first()
    if done is None:
        return False
    append_event(session, claim.job_id, "log", {"message": message[:4000]})
    return True


def _finalize(session: Session, claim: Claim, status: str, event_data: dict[str, Any], **values: Any) -> bool:
    done = session.execute(
        update(Job)
        .where(_owned(claim))
        .values(status=status, finished_at=_ts(utcnow()), claim_token=None, **values)
        .returning(Job.id)
    ).first()
    if done is None:
        return False
    append_event(session, claim.job_id, status, event_data)
    return True


def finish_job(session: Session, claim: Claim, result: dict[str, Any] | None, result_ref: str | None = None) -> bool:
    """running -> succeeded with the result, in the caller's transaction; False if the claim was lost."""
    return _finalize(session, claim, "succeeded", {"result": result, "result_ref": result_ref},
                     result=result, result_ref=result_ref)


def fail_job(session: Session, claim: Claim, code: str, message: str) -> bool:
    error = {"code": code, "message": message}
    return _finalize(session, claim, "failed", {"error": error}, error=error)


def cancel_claimed(session: Session, claim: Claim) -> bool:
    return _finalize(session, claim, "cancelled", {})


def request_cancel(session: Session, job: Job) -> Job:
    """Queued jobs are cancelled at once (they never start); running ones get the flag."""
    session.refresh(job, with_for_update=True)
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
        session.flush()
        append_event(session, job.id, "cancelled", {})
    elif job.status == "running":
        if not job.cancel_requested:
            job.cancel_requested = True
            session.flush()
            append_event(session, job.id, "log", {"message": "cancel requested"})
    else:
        raise JobStateError(f"job {job.id} is already {job.status}")
    return job


def requeue_stale(session: Session, *, stale_after_s: float) -> list[tuple[str, str]]:
    """Hand running jobs with a missed heartbeat back to the queue; returns (id, queue) to publish."""
    now = utcnow()
    rows = session.execute(
        update(Job)
        .where(Job.status == "running", Job.heartbeat_at < _ts(now - timedelta(seconds=stale_after_s)))
        .values(status="queued", claim_token=None, dispatched_at=_ts(now))
        .returning(Job.id, Job.queue, Job.worker)
    ).all()
    for row in rows:
        append_event(session, row.id, "log", {"message": f"worker {row.worker} lost; job requeued"})
    return [(row.id, row.queue) for row in rows]


def undispatched(session: Session, *, epoch_started: datetime, grace_s: float) -> list[tuple[str, str]]:
    """Queued jobs whose message may be gone: never marked dispatched (after a grace period), or
    dispatched into a broker incarnation that has since been replaced."""
    now = utcnow()
    rows = session.execute(
        update(Job)
        .where(
            Job.status == "queued",
            or_(
                and_(Job.dispatched_at.is_(None), Job.created_at < _ts(now - timedelta(seconds=grace_s))),
                Job.dispatched_at < _ts(epoch_started),
            ),
        )
        .values(dispatched_at=_ts(now))
        .returning(Job.id, Job.queue)
    ).all()
    return [(row.id, row.queue) for row in rows]
