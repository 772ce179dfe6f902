"""What the harvest and dataset-attribution handlers share on top of `sharding`: the parent's run
row (get-or-create, status), the plan/park step that marks the row when the parent fails or is
cancelled, the final write of the per-component rows, and a shard's inputs and resume point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, insert
from sqlalchemy.orm import InstrumentedAttribute

from spdlab.common.contracts.harvest import ShardParams, ShardResult
from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import Dataset
from spdlab.common.models import Job, utcnow
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError
from spdlab.common.sharded_run_rows import RunParams, RunRow, get_or_create_run_row
from spdlab.gpu_worker.harvest_inputs import load_entry, load_windows
from spdlab.gpu_worker.sharding import ShardCheckpoints, drive_parent

if TYPE_CHECKING:
    from torch import Tensor

    from spdlab.core.harvest.harvest import ShardSpec
    from spdlab.gpu_worker.model_cache import LoadedEntry

T = TypeVar("T")
INSERT_CHUNK = 500


@dataclass(frozen=True)
class RunPlan:
    run_id: int
    n_windows: int
    n_shards: int


def checkpoints(ctx: JobContext, prefix: str, parent_job_id: str) -> ShardCheckpoints:
    """The artifacts of one sharded run: `<prefix>/<parent job>/shard-<i>` and `.../merged`."""
    return ShardCheckpoints(ctx.artifacts, f"{prefix}/{parent_job_id}")


def _run_row(ctx: JobContext, table: type[RunRow], params: RunParams) -> tuple[int, int]:
    """(run id, dataset windows) of the parent job, the row marked running."""
    with session_scope(ctx.settings) as session:
        dataset = session.get(Dataset, params.dataset_id)
        if dataset is None or dataset.status != "ready" or dataset.n_windows is None:
            raise JobFailedError(f"dataset {params.dataset_id} is not ready", "dataset_not_ready")
        if dataset.decomposition_id != params.decomposition_id:
            raise JobFailedError(f"dataset {params.dataset_id} was tokenized for decomposition "
                                 f"{dataset.decomposition_id}, not {params.decomposition_id}", "dataset_mismatch")
        job = session.get(Job, ctx.job_id)
        assert job is not None
        row = get_or_create_run_row(session, table, job, params, status="running")
        row.status = "running"
        session.flush()
        return int(row.id), int(dataset.n_windows)


def set_run_status(ctx: JobContext, table: type[RunRow], run_id: int, status: str) -> None:
    with session_scope(ctx.settings) as session:
        row = session.get(table, run_id)
        if row is not None:
            row.status, row.finished_at = status, utcnow()


def drive_run(ctx: JobContext, table: type[RunRow], child_kind: str) -> RunPlan | None:
    """The parent's step: the plan once every shard succeeded (the caller merges), None when parked
    (the caller returns at once). A failed or cancelled parent marks its run row so."""
    from spdlab.core.harvest.harvest import plan_shards

    params: Any = ctx.params
    run_id, n_windows = _run_row(ctx, table, params)
    n_shards = len(plan_shards(n_windows, params.n_shards))
    try:
        if not drive_parent(ctx, child_kind, n_shards):
            return None  # parked: a shard wakes us for the merge
    except JobCancelledError:
        set_run_status(ctx, table, run_id, "cancelled")
        raise
    except Exception:
        set_run_status(ctx, table, run_id, "failed")
        raise
    return RunPlan(run_id, n_windows, n_shards)


def finish_run(ctx: JobContext, table: type[RunRow], run_id: int, run_column: InstrumentedAttribute[int],
               rows: list[dict[str, Any]], **values: Any) -> None:
    """Replace the run's per-component rows (`run_column` is their run foreign key) and mark the run
    succeeded with `values`, in one transaction: re-running a merge replaces, never duplicates."""
    rows_table = run_column.class_
    with session_scope(ctx.settings) as session:
        session.execute(delete(rows_table).where(run_column == run_id))
        for i in range(0, len(rows), INSERT_CHUNK):
            session.execute(insert(rows_table), rows[i : i + INSERT_CHUNK])
        row = session.get(table, run_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)
        row.status, row.finished_at = "succeeded", utcnow()


@dataclass(frozen=True)
class ShardInputs:
    """A shard's decomposition, the dataset's windows, its window range and its checkpoints."""

    params: ShardParams
    entry: LoadedEntry
    windows: Tensor
    spec: ShardSpec
    start: int
    stop: int
    store: ShardCheckpoints

    def resume(self, reader: Callable[[Path], T]) -> tuple[T | None, int]:
        """The shard's last checkpoint and how many of its windows it covered (0 without one)."""
        state = self.store.load(self.spec.index, reader)
        done = state.windows_done[0][1] - self.start if state is not None and state.windows_done else 0  # type: ignore[attr-defined]
        return state, done

    def checkpoint(self, writer: Callable[[T, Path], None]) -> Callable[[T], None]:
        return lambda state: self.store.save(self.spec.index, lambda path: writer(state, path))

    def result(self, n_tokens: int, resumed_from: int) -> tuple[ShardResult, int]:
        """What `run_shard`'s body returns: the shard's result and its window count."""
        windows = self.stop - self.start
        return ShardResult(index=self.spec.index, count=self.spec.count, windows=windows, n_tokens=n_tokens,
                           resumed_from=resumed_from), windows


def shard_inputs(ctx: JobContext, parent: RunParams, prefix: str) -> ShardInputs:
    from spdlab.core.harvest.harvest import ShardSpec, shard_range

    params = ctx.params
    assert isinstance(params, ShardParams)
    entry = load_entry(ctx, parent.decomposition_id)
    windows = load_windows(ctx, parent.dataset_id)
    spec = ShardSpec(index=params.index, count=params.count)
    start, stop = shard_range(int(windows.shape[0]), spec)
    return ShardInputs(params, entry, windows, spec, start, stop, checkpoints(ctx, prefix, params.parent_job_id))
