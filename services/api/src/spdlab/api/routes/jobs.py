"""Jobs: submit (get-or-compute), list, get, cancel, and the SSE event stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import delete, func, select

from spdlab.api.deps import OffsetQuery, SessionDep, SettingsDep, UserDep, ensure_owner_or_admin
from spdlab.api.errors import DependencyUnavailableError
from spdlab.common import jobs
from spdlab.common.broker import publish_job
from spdlab.common.contracts.jobs import JobOut, JobPage, JobRequest, JobStatus, Progress, kind_queues
from spdlab.common.db import session_factory
from spdlab.common.events import FINAL_EVENT_TYPES, events_after
from spdlab.common.models import Job
from spdlab.common.settings import Settings

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
log = logging.getLogger(__name__)


def job_out(job: Job) -> JobOut:
    return JobOut.model_validate(
        {
            **{k: getattr(job, k) for k in JobOut.model_fields if k != "progress"},
            "progress": Progress(current=job.progress_current, total=job.progress_total, stage=job.progress_stage),
        }
    )


def _get_job(session: SessionDep, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    return job


@router.post(
    "",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": JobOut, "description": "an identical request already succeeded"}},
)
def submit_job(body: JobRequest, response: Response, user: UserDep, session: SessionDep,
               settings: SettingsDep) -> JobOut:
    outcome = jobs.submit_job(session, owner=user, request=body, queue=kind_queues()[body.kind],
                              default_quota=settings.max_active_jobs_per_user)
    session.commit()
    job = outcome.job
    if outcome.outcome == "created":
        try:
            publish_job(job.id, job.queue, settings)
        except Exception as exc:
            # Not accepted: remove the row so the 503 is truthful (the sweeper would otherwise
            # dispatch it once the broker is back).
            log.warning("publishing job %s failed: %s", job.id, exc)
            session.rollback()
            session.execute(delete(Job).where(Job.id == job.id, Job.status == "queued"))
            session.commit()
            raise DependencyUnavailableError("broker") from exc
        jobs.mark_dispatched(session, job.id)
        session.commit()
    response.status_code = status.HTTP_200_OK if outcome.outcome == "cached" else status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return job_out(job)


@router.get("", response_model=JobPage)
def list_jobs(
    user: UserDep,
    session: SessionDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    kind: str | None = None,
    owner: Annotated[str | None, Query(pattern=r"^(me|\d{1,18})$", description="user id or 'me'")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> JobPage:
    query = select(Job)
    if status_ is not None:
        query = query.where(Job.status == status_)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if owner is not None:
        query = query.where(Job.owner_id == (user.id if owner == "me" else int(owner)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return JobPage(items=[job_out(j) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, user: UserDep, session: SessionDep) -> JobOut:
    return job_out(_get_job(session, job_id))


@router.delete("/{job_id}", response_model=JobOut)
def cancel_job(job_id: str, user: UserDep, session: SessionDep) -> JobOut:
    """Cancel: a queued job never starts; a running one stops at its next check (within ~1 s)."""
    job = _get_job(session, job_id)
    ensure_owner_or_admin(user, job.owner_id, "job")
    jobs.request_cancel(session, job)
    session.commit()
    return job_out(job)


def _load_events(settings: Settings, job_id: str, after: int) -> list[tuple[int, str, dict[str, object]]]:
    with session_factory(settings.effective_database_url)() as session:
        return [(e.seq, e.type, e.data) for e in events_after(session, job_id, after)]


def _sse(seq: int, type_: str, data: dict[str, object]) -> str:
    return f"id: {seq}\nevent: {type_}\ndata: {json.dumps(data, default=str)}\n\n"


async def _stream(request: Request, job_id: str, after: int) -> AsyncIterator[str]:
    settings: Settings = request.app.state.settings
    notifier = request.app.state.notifier
    idle = 0.0
    async with notifier.subscribe(job_id) as wake:
        while True:
            wake.clear()
            try:
                events = await run_in_threadpool(_load_events, settings, job_id, after)
            except Exception as exc:  # database blip: keep the stream, retry
                log.warning("event stream for %s: %s", job_id, exc)
                events = []
            for seq, type_, data in events:
                yield _sse(seq, type_, data)
                after = seq
                if type_ in FINAL_EVENT_TYPES:
                    return
            if events:
                idle = 0.0
                continue
            if await request.is_disconnected():
                return
            try:
                await asyncio.wait_for(wake.wait(), timeout=notifier.poll_interval_s)
            except TimeoutError:
                idle += notifier.poll_interval_s
                if idle >= 15:
                    idle = 0.0
                    yield ": keepalive\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE: progress, log, final state"}},
)
def job_events(
    request: Request,
    job_id: str,
    user: UserDep,
    session: SessionDep,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this event id")] = None,
) -> StreamingResponse:
    """Server-sent events with ``id:`` = the job's event sequence number; reconnect with
    ``Last-Event-ID`` (or ``?after=``) to resume without gaps. Ends after the final event."""
    _get_job(session, job_id)
    session.close()
    start = last_event_id if last_event_id is not None else (after or 0)
    return StreamingResponse(
        _stream(request, job_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


