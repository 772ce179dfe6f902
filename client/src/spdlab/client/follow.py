"""Following a job's SSE stream across disconnects, resuming with Last-Event-ID."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import httpx

from spdlab.client.errors import ConnectionFailed, Unavailable
from spdlab.client.models.jobs import Job, JobEvent
from spdlab.client.sse import parse_sse
from spdlab.client.transport import Transport


@dataclass(frozen=True)
class FollowPolicy:
    """How hard to hold on to a stream: failed reconnects in a row, and the waits between them."""

    max_retries: int = 8
    retry_delay: float = 0.5
    max_delay: float = 10.0
    read_timeout: float = 30.0


def _until(deadline: float | None, lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("job did not finish in time")
        yield line


def _quiet(exc: ConnectionFailed) -> bool:
    """A read timeout on an open stream is a quiet job, not a broken server: reconnect for free."""
    return isinstance(exc.__cause__, httpx.ReadTimeout)


def _terminal_from_row(job: Job) -> JobEvent | None:
    if not job.status.is_terminal:
        return None
    error = job.error.model_dump() if job.error else None
    return JobEvent(event=job.status.value, data={"status": job.status.value, "error": error})


def follow_job_events(
    transport: Transport,
    path: str,
    get_job: Callable[[], Job],
    *,
    last_event_id: str | None = None,
    timeout: float | None = None,
    policy: FollowPolicy = FollowPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[JobEvent]:
    """Yield the job's events until a terminal one; reconnect on drops, resuming after the last id."""
    deadline = None if timeout is None else time.monotonic() + timeout
    failures, delay = 0, policy.retry_delay
    while True:
        remaining = policy.read_timeout if deadline is None else max(deadline - time.monotonic(), 0.01)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        try:
            with transport.stream(path, headers=headers, read_timeout=min(policy.read_timeout, remaining)) as resp:
                for message in parse_sse(_until(deadline, resp.iter_lines())):
                    event = JobEvent.from_sse(message)
                    last_event_id = event.id if event.id is not None else last_event_id
                    delay = message.retry_ms / 1000 if message.retry_ms else delay
                    failures = 0
                    yield event
                    if event.is_terminal:
                        return
        except (ConnectionFailed, Unavailable) as exc:
            if isinstance(exc, ConnectionFailed) and _quiet(exc):
                _check_deadline(deadline)
                continue
            failures += 1
            if failures > policy.max_retries:
                raise
            wait = getattr(exc, "retry_after", None) or delay
            sleep(min(wait * 2 ** (failures - 1), policy.max_delay))
            _check_deadline(deadline)
            continue
        # The stream ended without a terminal event: the job may have finished while we were away.
        final = _terminal_from_row(get_job())
        if final is not None:
            yield final
            return
        _check_deadline(deadline)
        sleep(delay)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError("job did not finish in time")
