"""Jobs: submit, list, get, cancel, follow (SSE) and wait."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from spdlab.client.follow import FollowPolicy, follow_job_events
from spdlab.client.models.jobs import Job, JobEvent, JobPage, JobStatus
from spdlab.client.resources._base import API, _Resource


class JobsResource(_Resource):
    def submit(self, kind: str, params: Mapping[str, Any] | None = None) -> Job:
        """Submit a job; an identical finished or active job is returned instead of a new one."""
        return self._post(f"{API}/jobs", Job, {"kind": kind, "params": dict(params or {})})

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        kind: str | None = None,
        owner: str | int | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> JobPage:
        """Newest first; `owner` is a user id or "me"."""
        params = {"status": status, "kind": kind, "owner": owner, "limit": limit, "offset": offset}
        return self._page(f"{API}/jobs", JobPage, params)

    def get(self, job_id: str) -> Job:
        return self._get(f"{API}/jobs/{job_id}", Job)

    def cancel(self, job_id: str) -> Job:
        """Ask for cancellation; the worker stops at its next check. Returns the job as it is now."""
        body = self._delete(f"{API}/jobs/{job_id}")
        return Job.model_validate(body) if isinstance(body, dict) and "status" in body else self.get(job_id)

    def follow(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        timeout: float | None = None,
        policy: FollowPolicy | None = None,
    ) -> Iterator[JobEvent]:
        """Yield the job's events up to and including the terminal one, reconnecting when dropped."""
        return follow_job_events(
            self._t,
            f"{API}/jobs/{job_id}/events",
            lambda: self.get(job_id),
            last_event_id=last_event_id,
            timeout=timeout,
            policy=policy or FollowPolicy(),
        )

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job is terminal (TimeoutError after `timeout` s); return its final row."""
        job = self.get(job_id)
        if not job.status.is_terminal:
            for event in self.follow(job_id, timeout=timeout):
                if event.is_terminal:
                    break
            job = self.get(job_id)
        return job
