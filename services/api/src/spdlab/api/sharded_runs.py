"""Views and control of sharded runs (harvests, dataset attributions) in the API: the run's status
derived from its parent job, job briefs of the parent and shards, cancel of the whole run."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from spdlab.common import jobs, shard_jobs
from spdlab.common.contracts.harvest import JobBrief
from spdlab.common.models import ACTIVE_STATUSES, Job
from spdlab.common.settings import Settings


def brief(job: Job) -> JobBrief:
    return JobBrief(id=job.id, kind=job.kind, status=job.status, progress_current=job.progress_current,
                    progress_total=job.progress_total, progress_stage=job.progress_stage, error=job.error)


def run_status(row_status: str, job: Job | None) -> str:
    """A stored result wins; otherwise the parent job's state (it reflects its shards)."""
    if row_status == "succeeded" or job is None:
        return row_status
    return job.status


def run_view(session: Session, row: Any, with_shards: bool) -> dict[str, Any]:
    job = session.get(Job, row.job_id)
    fields = {c.name: getattr(row, c.name) for c in row.__table__.columns}
    fields["status"] = run_status(row.status, job)
    fields["job"] = None if job is None else brief(job)
    if with_shards:
        fields["shards"] = [brief(j) for j in shard_jobs.child_jobs(session, row.job_id)]
    return fields


def cancel_run(session: Session, settings: Settings, job_id: str) -> None:
    """Cancel the parent and every shard now, then wake the parent so a worker finalizes it."""
    job = session.get(Job, job_id)
    if job is None or job.status not in ACTIVE_STATUSES:
        raise jobs.JobStateError(f"job {job_id} is already {None if job is None else job.status}")
    jobs.request_cancel(session, job)
    session.commit()
    shard_jobs.cancel_children(settings, job_id)
    shard_jobs.wake(settings, job_id)
