"""The generic job runner both workers call: claim -> handler -> finish/fail/cancel.

A handler receives a :class:`JobContext` (validated params, progress/log/cancel callbacks, the
artifact store, settings) and returns a result model, a dict, or a :class:`HandlerResult`.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from spdlab.common import jobs
from spdlab.common.artifacts import ArtifactStore, artifact_store_from_settings
from spdlab.common.contracts.jobs import parse_job_request
from spdlab.common.db import session_scope
from spdlab.common.registry import HandlerRegistry, HandlerResult
from spdlab.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

# "parked": the handler released its claim on purpose (`JobContext.park`); no final state was written.
RunOutcome = Literal["succeeded", "failed", "cancelled", "lost", "skipped", "parked"]


class JobCancelledError(Exception):
    """Raised inside a handler (by ``ctx.check_cancel``/``ctx.sleep``) to stop at a cancel request."""


class JobFailedError(Exception):
    """A failure whose message is shown to the user (bad input discovered late, OOM, ...)."""

    def __init__(self, message: str, code: str = "job_failed") -> None:
        super().__init__(message)
        self.code = code


class ClaimWatcher(threading.Thread):
    """Heartbeats the claim and polls the cancel flag; sets ``cancelled`` on cancel or lost claim."""

    def __init__(self, claim: jobs.Claim, settings: Settings) -> None:
        super().__init__(name=f"claim-watcher-{claim.job_id}", daemon=True)
        self.claim = claim
        self.settings = settings
        self.cancelled = threading.Event()
        self.lost = False
        self._stop_event = threading.Event()
        if claim.cancel_requested:
            self.cancelled.set()

    def run(self) -> None:
        last_beat = time.monotonic()
        while not self._stop_event.wait(self.settings.cancel_poll_s):
            beat = time.monotonic() - last_beat >= self.settings.heartbeat_interval_s
            try:
                with session_scope(self.settings) as session:
                    flag = jobs.heartbeat(session, self.claim) if beat else jobs.cancel_state(session, self.claim)
            except Exception as exc:  # a DB hiccup must not kill the job; the next poll retries
                log.warning("heartbeat for job %s failed: %s", self.claim.job_id, exc)
                continue
            if beat:
                last_beat = time.monotonic()
            if flag is None:
                self.lost = True
            if flag is None or flag:
                self.cancelled.set()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@dataclass
class JobContext:
    job_id: str
    kind: str
    params: BaseModel
    attempt: int
    worker: str
    settings: Settings
    _claim: jobs.Claim
    _watcher: ClaimWatcher
    _last_progress: float = field(default=float("-inf"))
    _last_stage: str | None = None
    parked: bool = False

    def progress(self, current: float, total: float | None = None, stage: str | None = None) -> None:
        """Throttled into the job row and the event stream; stage changes and completion always go."""
        now = time.monotonic()
        final = total is not None and current >= total
        if now - self._last_progress < self.settings.progress_throttle_s and stage == self._last_stage and not final:
            return
        self._last_progress, self._last_stage = now, stage
        self._write(lambda s: jobs.record_progress(s, self._claim, float(current), total, stage))

    def log(self, message: str) -> None:
        self._write(lambda s: jobs.record_log(s, self._claim, message))

    def should_cancel(self) -> bool:
        return self._watcher.cancelled.is_set()

    def check_cancel(self) -> None:
        if self.should_cancel():
            raise JobCancelledError()

    def sleep(self, seconds: float) -> None:
        """Sleep that wakes at once on a cancel request."""
        if self._watcher.cancelled.wait(seconds):
            raise JobCancelledError()

    def park(self, message: str) -> bool:
        """Release this job's claim on purpose, leaving it ``running`` until a later message claims
        it again (a sharded parent waiting for its shards, see `spdlab.common.shard_jobs`).

        The handler must return right after: the runner writes no final state for a parked job, and
        its heartbeat stops. Parking does not count as an attempt; ``message`` goes to the event
        stream. Returns False when the claim was already lost (another worker owns the job).
        """
        self._watcher.stop()  # first, so a heartbeat cannot race the release and flag the claim lost
        with session_scope(self.settings) as session:
            self.parked = jobs.park(session, self._claim, message)
        if not self.parked:
            self._watcher.lost = True
            self._watcher.cancelled.set()
        return self.parked

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return artifact_store_from_settings(self.settings)

    def _write(self, op: Callable[[Any], bool]) -> None:
        try:
            with session_scope(self.settings) as session:
                if not op(session):
                    self._watcher.lost = True
                    self._watcher.cancelled.set()
        except OperationalError as exc:  # progress is best-effort; the final write is not
            log.warning("progress write for job %s failed: %s", self.job_id, exc)


def _result_payload(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    if isinstance(value, HandlerResult):
        result, ref = value.result, value.result_ref
    else:
        result, ref = value, None
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    return result, ref


def run_job(job_id: str, *, registry: HandlerRegistry, worker: str, settings: Settings | None = None) -> RunOutcome:
    """Run one job to a final state. Safe to call for a redelivered or duplicate message."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        claim = jobs.claim_job(
            session, job_id, worker, stale_after_s=settings.stale_claim_after_s, max_attempts=settings.max_job_attempts
        )
    if claim is None:
        log.info("job %s not claimable (finished, cancelled, or held by a live worker)", job_id)
        return "skipped"
    watcher = ClaimWatcher(claim, settings)
    watcher.start()
    try:
        return _execute(claim, registry, watcher, settings)
    finally:
        watcher.stop()


def _execute(claim: jobs.Claim, registry: HandlerRegistry, watcher: ClaimWatcher, settings: Settings) -> RunOutcome:
    result: dict[str, Any] | None = None
    ref: str | None = None
    error: tuple[str, str] | None = None
    outcome: RunOutcome = "succeeded"
    ctx: JobContext | None = None
    try:
        handler = registry.get(claim.kind)
        if handler is None:
            raise JobFailedError(f"no handler for kind {claim.kind!r} on queue {registry.queue!r}", "unknown_kind")
        request = parse_job_request(claim.kind, claim.params)
        ctx = JobContext(claim.job_id, claim.kind, request.params, claim.attempt, claim.worker,  # type: ignore[attr-defined]
                         settings, claim, watcher)
        ctx.check_cancel()
        result, ref = _result_payload(handler(ctx))
    except JobCancelledError:
        outcome = "cancelled"
    except JobFailedError as exc:
        outcome, error = "failed", (exc.code, str(exc))
    except Exception as exc:
        log.error("job %s (%s) crashed:\n%s", claim.job_id, claim.kind, traceback.format_exc())
        outcome, error = "failed", ("internal_error", f"{type(exc).__name__}: {exc}"[:2000])
    if ctx is not None and ctx.parked:
        return "parked"
    if watcher.lost:
        return "lost"
    with session_scope(settings) as session:
        if outcome == "succeeded":
            written = jobs.finish_job(session, claim, result, ref)
        elif outcome == "cancelled":
            written = jobs.cancel_claimed(session, claim)
        else:
            assert error is not None
            written = jobs.fail_job(session, claim, *error)
    return outcome if written else "lost"
