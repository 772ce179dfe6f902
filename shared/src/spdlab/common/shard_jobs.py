"""Sharded jobs: a parent job fans out into child jobs on its queue without ever blocking a worker.

Why not a Celery chord: the platform runs Celery without a result backend (Postgres is the source
of truth), and a parent that waited for its children would deadlock a gpu worker that runs one
task at a time. Instead the parent's life is a short sequence of ordinary claims:

1. **Plan** (first claim of the parent): insert one child job row per shard plus a `job_shards`
   row linking it (idempotent on `(parent, index)`), publish the children, then **park**
   (`JobContext.park`): a fenced update drops the parent's claim token and heartbeat while leaving
   it `running` (so clients see a running job). The runner writes no final state, the worker is
   free at once, and the stale-claim sweep ignores the parent (no heartbeat to go stale). Parking
   does not count as an attempt.
2. **Shards** run as normal jobs (redelivery, stale-claim takeover, checkpoints). Each handler
   records its outcome in `job_shards` *before* returning (the runner writes the job status only
   afterwards, so job statuses could not decide "all done" without a race), then **wakes** the
   parent (publishes it) when all shards have an outcome, or at once when it failed or was
   cancelled. While running, a shard also stops when the parent is cancelled, and writes the
   parent's aggregated progress.
3. **Merge** (the woken parent's claim): all succeeded → the handler merges and returns the
   result; a failed shard → the parent fails naming it (siblings are cancelled); a cancelled shard
   → the parent is cancelled. A cancel request on the parent makes the runner cancel it on claim.

Lost wake-ups are impossible: the parent re-checks the outcomes *after* parking and wakes itself
when they are complete, and a shard checks *after* committing its outcome; whichever commits last
sees the other's write. Duplicate wake-ups are harmless (the claim skips a claimed job).

A shard can also end without running its handler's last step: the platform gives up on it after
`max_job_attempts` lost workers, or it is cancelled while still queued, or its params no longer
parse. The worker's sweeper calls `settle_orphans`, which records such a shard's outcome from its
job row (its error message included) and wakes the parent, so the parent fails naming the shard
instead of waiting forever.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, aliased

from spdlab.common import jobs
from spdlab.common.broker import publish_job
from spdlab.common.db import session_scope
from spdlab.common.events import append_event
from spdlab.common.harvest_tables import JobShard
from spdlab.common.models import ACTIVE_STATUSES, FINAL_STATUSES, Job, utcnow
from spdlab.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSummary:
    count: int
    outcomes: dict[str, int]  # outcome -> number of shards
    first_error: str | None

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def complete(self) -> bool:
        return self.count > 0 and self.outcomes.get("succeeded", 0) == self.count

    @property
    def stopped(self) -> bool:
        """A shard failed or was cancelled: the parent must not wait for the rest."""
        return bool(self.outcomes.get("failed") or self.outcomes.get("cancelled"))


def summary(session: Session, parent_job_id: str) -> ShardSummary:
    rows = session.execute(
        select(JobShard.shard_index, JobShard.shard_count, JobShard.outcome, JobShard.error)
        .where(JobShard.parent_job_id == parent_job_id).order_by(JobShard.shard_index)
    ).all()
    outcomes = Counter(r.outcome for r in rows if r.outcome is not None)
    errors = [f"shard {r.shard_index + 1}/{r.shard_count}: {r.error}" for r in rows if r.outcome == "failed"]
    return ShardSummary(count=len(rows), outcomes=dict(outcomes), first_error=errors[0] if errors else None)


def ensure_children(settings: Settings, parent_job_id: str, child_kind: str, count: int) -> list[str]:
    """Create the parent's child jobs once, publish those still queued; returns their ids in order."""
    with session_scope(settings) as session:
        parent = session.get(Job, parent_job_id)
        assert parent is not None
        existing = session.scalars(
            select(JobShard).where(JobShard.parent_job_id == parent_job_id).order_by(JobShard.shard_index)
        ).all()
        if not existing:
            for index in range(count):
                params = {"parent_job_id": parent_job_id, "index": index, "count": count}
                child = Job(kind=child_kind, queue=parent.queue, owner_id=parent.owner_id, params=params,
                            params_key=jobs.params_key(child_kind, params), status="queued", attempts=0,
                            event_seq=0, created_at=utcnow())
                session.add(child)
                session.flush()
                session.add(JobShard(parent_job_id=parent_job_id, shard_index=index, shard_count=count,
                                     child_job_id=child.id))
            session.flush()
            existing = session.scalars(
                select(JobShard).where(JobShard.parent_job_id == parent_job_id).order_by(JobShard.shard_index)
            ).all()
        child_ids = [s.child_job_id for s in existing]
        queued = session.execute(
            select(Job.id, Job.queue).where(Job.id.in_(child_ids), Job.status == "queued")
        ).all()
    for job_id, queue in queued:
        publish_job(job_id, queue, settings)
        with session_scope(settings) as session:
            jobs.mark_dispatched(session, job_id)
    return child_ids


def wake(settings: Settings, parent_job_id: str) -> None:
    """Publish the parent so a worker claims it (only a parked or queued parent is claimable)."""
    with session_scope(settings) as session:
        queue = session.scalar(select(Job.queue).where(Job.id == parent_job_id, Job.status.in_(ACTIVE_STATUSES)))
    if queue is not None:
        publish_job(parent_job_id, queue, settings)


def record_outcome(settings: Settings, parent_job_id: str, index: int, outcome: str, error: str | None = None,
                   windows: int | None = None) -> ShardSummary:
    with session_scope(settings) as session:
        session.execute(
            update(JobShard)
            .where(JobShard.parent_job_id == parent_job_id, JobShard.shard_index == index)
            .values(outcome=outcome, error=None if error is None else error[:4000], windows=windows)
        )
    with session_scope(settings) as session:
        return summary(session, parent_job_id)


def finish_shard(settings: Settings, parent_job_id: str, index: int, outcome: str, error: str | None = None,
                 windows: int | None = None) -> None:
    """A shard's last step: record its outcome; on failure stop the siblings; wake the parent when due."""
    state = record_outcome(settings, parent_job_id, index, outcome, error, windows)
    if outcome != "succeeded":
        cancel_children(settings, parent_job_id)
    if state.done == state.count or outcome != "succeeded":
        wake(settings, parent_job_id)


def settle_orphans(settings: Settings) -> list[str]:
    """Record the outcome of every shard whose job ended without recording it (see the module doc)
    while its parent is still active, as the shard's own last step would; returns the parents."""
    parent = aliased(Job)
    with session_scope(settings) as session:
        orphans = session.execute(
            select(JobShard.parent_job_id, JobShard.shard_index, Job.status, Job.error)
            .join(Job, Job.id == JobShard.child_job_id)
            .join(parent, parent.id == JobShard.parent_job_id)
            .where(JobShard.outcome.is_(None), Job.status.in_(FINAL_STATUSES), parent.status.in_(ACTIVE_STATUSES))
            .order_by(JobShard.parent_job_id, JobShard.shard_index)
        ).all()
    for row in orphans:
        error = (row.error or {}).get("message") or f"shard job ended {row.status} without reporting"
        log.warning("shard %d of job %s ended %s without an outcome", row.shard_index, row.parent_job_id,
                    row.status)
        finish_shard(settings, row.parent_job_id, row.shard_index, row.status,
                     None if row.status == "succeeded" else error)
    return sorted({row.parent_job_id for row in orphans})


def parent_stopping(settings: Settings, parent_job_id: str) -> bool:
    """The parent was cancelled (or asked to be), or already finished without us."""
    with session_scope(settings) as session:
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == parent_job_id)).first()
    return row is None or row.status not in ACTIVE_STATUSES or bool(row.cancel_requested)


def cancel_children(settings: Settings, parent_job_id: str) -> int:
    """Cancel every active child (queued ones at once, running ones at their next check)."""
    with session_scope(settings) as session:
        children = session.scalars(
            select(Job).join(JobShard, JobShard.child_job_id == Job.id)
            .where(JobShard.parent_job_id == parent_job_id, Job.status.in_(ACTIVE_STATUSES))
        ).all()
        for child in children:
            jobs.request_cancel(session, child)
    return len(children)


def child_jobs(session: Session, parent_job_id: str) -> list[Job]:
    return list(session.scalars(
        select(Job).join(JobShard, JobShard.child_job_id == Job.id)
        .where(JobShard.parent_job_id == parent_job_id).order_by(JobShard.shard_index)
    ).all())


def aggregate_progress(settings: Settings, parent_job_id: str, stage: str) -> None:
    """Write the children's summed progress into the parent row (and its event stream)."""
    with session_scope(settings) as session:
        cur, total = session.execute(
            select(func.coalesce(func.sum(Job.progress_current), 0), func.coalesce(func.sum(Job.progress_total), 0))
            .join(JobShard, JobShard.child_job_id == Job.id).where(JobShard.parent_job_id == parent_job_id)
        ).one()
        done = session.execute(
            update(Job)
            .where(and_(Job.id == parent_job_id, Job.status == "running", Job.claim_token.is_(None)))
            .values(progress_current=float(cur), progress_total=float(total), progress_stage=stage)
            .returning(Job.id)
        ).first()
        if done is not None:
            append_event(session, parent_job_id, "progress",
                         {"current": float(cur), "total": float(total), "stage": stage})


def parent_params(settings: Settings, parent_job_id: str) -> tuple[dict[str, Any], int]:
    """The parent's params and owner."""
    with session_scope(settings) as session:
        row = session.execute(select(Job.params, Job.owner_id).where(Job.id == parent_job_id)).first()
    if row is None:
        raise LookupError(f"parent job {parent_job_id} not found")
    return dict(row.params), int(row.owner_id)
