"""Job events: persisted in ``job_events`` with a gapless per-job ``seq`` (the SSE ``id:``), plus a
best-effort Redis notification after commit so listeners wake up without polling.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from spdlab.common.models import Job, JobEvent, utcnow
from spdlab.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

FINAL_EVENT_TYPES = frozenset({"succeeded", "failed", "cancelled"})
_NOTIFY_KEY = "spdlab_notify_jobs"


def channel(job_id: str, settings: Settings | None = None) -> str:
    return (settings or get_settings()).redis_key(f"job:{job_id}")


def channel_pattern(settings: Settings | None = None) -> str:
    return (settings or get_settings()).redis_key("job:*")


def append_event(session: Session, job_id: str, type_: str, data: dict[str, Any] | None = None) -> int:
    """Append an event; bumping ``jobs.event_seq`` locks the job row, so per-job commit order
    equals ``seq`` order and a reader never sees seq n+1 before n."""
    seq = session.execute(
        update(Job).where(Job.id == job_id).values(event_seq=Job.event_seq + 1).returning(Job.event_seq)
    ).scalar_one()
    session.add(JobEvent(job_id=job_id, seq=seq, type=type_, data=data or {}, created_at=utcnow()))
    session.flush()
    session.info.setdefault(_NOTIFY_KEY, set()).add(job_id)
    return int(seq)


def events_after(session: Session, job_id: str, after_seq: int, limit: int = 500) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
    )


class _Publisher:
    """Publishes job ids after commit; backs off for a while after a Redis failure."""

    def __init__(self) -> None:
        self._down_until = 0.0
        self._lock = threading.Lock()

    def publish(self, job_ids: set[str]) -> None:
        settings = get_settings()
        if not settings.redis_url or time.monotonic() < self._down_until:
            return
        from spdlab.common.broker import get_redis

        try:
            client = get_redis(settings)
            for job_id in job_ids:
                client.publish(channel(job_id, settings), job_id)
        except Exception as exc:  # listeners fall back to polling the table
            with self._lock:
                self._down_until = time.monotonic() + 2.0
            log.warning("event notification failed: %s", exc)


_PUBLISHER = _Publisher()


@event.listens_for(Session, "after_commit")
def _notify_after_commit(session: Session) -> None:
    job_ids = session.info.pop(_NOTIFY_KEY, None)
    if job_ids:
        _PUBLISHER.publish(job_ids)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_NOTIFY_KEY, None)
