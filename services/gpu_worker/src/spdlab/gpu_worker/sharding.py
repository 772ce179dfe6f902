"""Worker-side halves of sharded jobs (see `spdlab.common.shard_jobs` for the design).

`drive_parent` is the parent handler's step: plan/dispatch, then either report "all shards
succeeded" (the caller merges) or park and return. `run_shard` wraps a shard's body: it stops when
the parent is cancelled, aggregates progress into the parent, and records the outcome before the
handler returns. `ShardCheckpoints` keeps a shard's state in the artifact store keyed by
(parent job, shard), so a redelivered shard resumes from its last checkpoint.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from spdlab.common import shard_jobs
from spdlab.common.artifacts import ArtifactStore
from spdlab.common.contracts.harvest import ShardParams
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError

T = TypeVar("T")
PARENT_CHECK_S = 0.5  # how often a shard looks at its parent's cancel flag
PARENT_PROGRESS_S = 1.0  # how often a shard writes the parent's aggregated progress


def drive_parent(ctx: JobContext, child_kind: str, n_shards: int) -> bool:
    """True when every shard succeeded; False after parking (the handler must then return at once).

    Raises `JobFailedError` when a shard failed and `JobCancelledError` when one was cancelled.
    """
    settings = ctx.settings
    shard_jobs.ensure_children(settings, ctx.job_id, child_kind, n_shards)
    state = _check(ctx)
    if state.complete:
        return True
    if not ctx.park(f"waiting for {state.count - state.done} of {state.count} shards"):
        return False  # the claim was lost: whoever holds the parent now drives it
    state = _check_quietly(ctx)
    if state.complete or state.stopped:
        shard_jobs.wake(settings, ctx.job_id)  # a shard finished between our check and the park
    return False


def _check_quietly(ctx: JobContext) -> shard_jobs.ShardSummary:
    from spdlab.common.db import session_scope

    with session_scope(ctx.settings) as session:
        return shard_jobs.summary(session, ctx.job_id)


def _check(ctx: JobContext) -> shard_jobs.ShardSummary:
    state = _check_quietly(ctx)
    if state.outcomes.get("failed"):
        shard_jobs.cancel_children(ctx.settings, ctx.job_id)
        raise JobFailedError(state.first_error or "a shard failed", "shard_failed")
    if state.outcomes.get("cancelled"):
        shard_jobs.cancel_children(ctx.settings, ctx.job_id)
        raise JobCancelledError()
    return state


class _ParentWatch:
    """Throttled look at the parent: cancel propagation and aggregated progress."""

    def __init__(self, ctx: JobContext, params: ShardParams, stage: str) -> None:
        self.ctx, self.params, self.stage = ctx, params, stage
        self._last_check = self._last_progress = float("-inf")
        self._stopping = False

    def should_cancel(self) -> bool:
        if self.ctx.should_cancel() or self._stopping:
            return True
        now = time.monotonic()
        if now - self._last_check >= PARENT_CHECK_S:
            self._last_check = now
            self._stopping = shard_jobs.parent_stopping(self.ctx.settings, self.params.parent_job_id)
        return self._stopping

    def progress(self, current: float, total: float, stage: str) -> None:
        self.ctx.progress(current, total, stage)
        now = time.monotonic()
        if now - self._last_progress >= PARENT_PROGRESS_S or current >= total:
            self._last_progress = now
            shard_jobs.aggregate_progress(self.ctx.settings, self.params.parent_job_id, self.stage)


def run_shard(ctx: JobContext, stage: str, body: Callable[[_ParentWatch], tuple[T, int]]) -> T:
    """Run `body(watch) -> (result, windows)` as shard `ctx.params`, recording its outcome."""
    from spdlab.core.callbacks import Cancelled

    params = ctx.params
    assert isinstance(params, ShardParams)
    settings = ctx.settings
    watch = _ParentWatch(ctx, params, stage)
    try:
        if watch.should_cancel():
            raise JobCancelledError()
        result, windows = body(watch)
    except (JobCancelledError, Cancelled):
        shard_jobs.finish_shard(settings, params.parent_job_id, params.index, "cancelled")
        raise JobCancelledError() from None
    except JobFailedError as exc:
        shard_jobs.finish_shard(settings, params.parent_job_id, params.index, "failed", str(exc))
        raise
    except Exception as exc:
        shard_jobs.finish_shard(settings, params.parent_job_id, params.index, "failed", f"{type(exc).__name__}: {exc}")
        raise
    shard_jobs.aggregate_progress(settings, params.parent_job_id, stage)
    shard_jobs.finish_shard(settings, params.parent_job_id, params.index, "succeeded", windows=windows)
    return result


class ShardCheckpoints:
    """Shard states as artifacts `<prefix>/shard-<i>.safetensors` and the merged state as
    `<prefix>/merged.safetensors`, moved through a local temp dir."""

    def __init__(self, artifacts: ArtifactStore, prefix: str) -> None:
        self.artifacts, self.prefix = artifacts, prefix.rstrip("/")

    def key(self, index: int) -> str:
        return f"{self.prefix}/shard-{index}.safetensors"

    @property
    def merged_key(self) -> str:
        return f"{self.prefix}/merged.safetensors"

    def save(self, index: int, writer: Callable[[Path], None]) -> None:
        self._put(self.key(index), writer)

    def load(self, index: int, reader: Callable[[Path], T]) -> T | None:
        return self._get(self.key(index), reader)

    def merged_only(self) -> bool:
        """The merge stored its state and deleted the shard states: a re-run reuses the merged one."""
        return self.artifacts.exists(self.merged_key) and not self.artifacts.exists(self.key(0))

    def save_merged(self, writer: Callable[[Path], None]) -> None:
        self._put(self.merged_key, writer)

    def load_merged(self, reader: Callable[[Path], T]) -> T:
        state = self._get(self.merged_key, reader)
        if state is None:
            raise JobFailedError(f"{self.merged_key} is missing", "shard_state_missing")
        return state

    def _put(self, key: str, writer: Callable[[Path], None]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.safetensors"
            writer(path)
            self.artifacts.put_file(key, path)

    def _get(self, key: str, reader: Callable[[Path], T]) -> T | None:
        if not self.artifacts.exists(key):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return reader(self.artifacts.get_file(key, Path(tmp) / "state.safetensors"))

    def stream(self, count: int, reader: Callable[[Path], T]) -> Iterator[T]:
        """Every shard's state in order, one at a time (the merge holds one besides its accumulator)."""
        for index in range(count):
            state = self.load(index, reader)
            if state is None:
                raise JobFailedError(f"shard {index + 1}/{count} has no saved state", "shard_state_missing")
            yield state

    def delete_all(self, count: int) -> None:
        for index in range(count):
            self.artifacts.delete(self.key(index))


def load_parent(ctx: JobContext) -> tuple[dict[str, Any], int]:
    params = ctx.params
    assert isinstance(params, ShardParams)
    return shard_jobs.parent_params(ctx.settings, params.parent_job_id)
