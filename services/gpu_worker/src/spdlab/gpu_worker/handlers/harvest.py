"""``harvest`` (parent: plan, then merge) and ``harvest.shard`` (one contiguous window range).

Design (details in `spdlab.common.shard_jobs`):
- The API submits one ``harvest`` job and creates its `harvests` row. The parent's first claim
  creates `n_shards` ``harvest.shard`` child jobs, publishes them and parks itself (still
  `running`, no claim held), freeing the gpu worker at once — a single worker with concurrency 1
  therefore runs shard 1, shard 2, ..., then the merge, and never deadlocks.
- A shard loads the decomposition (model cache) and the dataset's windows, resumes from its last
  checkpoint in the artifact store (`harvests/<parent job>/shard-<i>.safetensors`, written every
  `CHECKPOINT_EVERY` batches and at the end), runs `run_harvest_shard`, records its outcome and
  wakes the parent when it is the last one (or failed / was cancelled).
- The woken parent merges the shard states exactly (`merge_shards`: integer counts summed,
  reservoirs by smallest keys, so counts equal a single-worker run), checks that every window was
  counted once, finalizes, stores the merged state (co-occurrence, token count matrices) as
  `harvests/<parent job>/merged.safetensors` and one `component_stats` row per component, and
  deletes the shard states. Re-running the merge is idempotent (rows are replaced; a stored merged
  state is reused when the shard states are gone).
- Cancel: cancelling the parent stops every shard within ~1 s (shards poll the parent); a
  cancelled or failed shard cancels its siblings and ends the parent cancelled / failed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from spdlab.common.contracts.harvest import HarvestParams, HarvestResult, ShardParams, ShardResult
from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import ComponentStat, Harvest
from spdlab.common.models import utcnow
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.harvest_inputs import load_entry, load_windows, make_adapter
from spdlab.gpu_worker.sharding import ShardCheckpoints, drive_parent, load_parent, run_shard

if TYPE_CHECKING:
    from spdlab.core.harvest.stats import HarvestState

CHECKPOINT_EVERY = 20  # batches between shard checkpoints
INSERT_CHUNK = 500


def checkpoints(ctx: JobContext, parent_job_id: str) -> ShardCheckpoints:
    return ShardCheckpoints(ctx.artifacts, f"harvests/{parent_job_id}")


def merged_key(parent_job_id: str) -> str:
    return f"harvests/{parent_job_id}/merged.safetensors"


def _harvest_row(ctx: JobContext, job_id: str) -> tuple[int, int]:
    """(harvest id, n_windows) of the parent job; creates the row for a job submitted via /jobs."""
    from spdlab.common.harvest_tables import Dataset
    from spdlab.common.models import Job

    params = ctx.params
    assert isinstance(params, HarvestParams)
    with session_scope(ctx.settings) as session:
        dataset = session.get(Dataset, params.dataset_id)
        if dataset is None or dataset.status != "ready" or dataset.n_windows is None:
            raise JobFailedError(f"dataset {params.dataset_id} is not ready", "dataset_not_ready")
        if dataset.decomposition_id != params.decomposition_id:
            raise JobFailedError(f"dataset {params.dataset_id} was tokenized for decomposition "
                                 f"{dataset.decomposition_id}, not {params.decomposition_id}", "dataset_mismatch")
        row = session.scalar(select(Harvest).where(Harvest.job_id == job_id))
        if row is None:
            job = session.get(Job, job_id)
            assert job is not None
            row = Harvest(owner_id=job.owner_id, decomposition_id=params.decomposition_id,
                          dataset_id=params.dataset_id, config=params.config.model_dump(mode="json"),
                          n_shards=params.n_shards, status="running", job_id=job_id)
            try:
                with session.begin_nested():  # the API may insert the same row concurrently
                    session.add(row)
            except IntegrityError:
                row = session.scalar(select(Harvest).where(Harvest.job_id == job_id))
                assert row is not None
        row.status = "running"
        session.flush()
        return row.id, int(dataset.n_windows)


@REGISTRY.register("harvest")
def run_harvest(ctx: JobContext) -> HandlerResult | None:
    from spdlab.core.harvest.harvest import plan_shards

    params = ctx.params
    assert isinstance(params, HarvestParams)
    harvest_id, n_windows = _harvest_row(ctx, ctx.job_id)
    n_shards = len(plan_shards(n_windows, params.n_shards))
    try:
        if not drive_parent(ctx, "harvest.shard", n_shards):
            return None  # parked: a shard wakes us for the merge
    except JobCancelledError:
        _set_status(ctx, harvest_id, "cancelled")
        raise
    except Exception:
        _set_status(ctx, harvest_id, "failed")
        raise
    result = _merge(ctx, harvest_id, n_shards, n_windows)
    return HandlerResult(result, f"harvests:{harvest_id}")


def _set_status(ctx: JobContext, harvest_id: int, status: str) -> None:
    with session_scope(ctx.settings) as session:
        row = session.get(Harvest, harvest_id)
        if row is not None:
            row.status = status
            row.finished_at = utcnow()


def _merge(ctx: JobContext, harvest_id: int, n_shards: int, n_windows: int) -> HarvestResult:
    from spdlab.core.harvest.harvest import merge_shards, missing_windows
    from spdlab.core.harvest.stats import finalize, load_state, save_state
    from spdlab.gpu_worker.harvest_rows import component_rows

    start = time.perf_counter()
    store = checkpoints(ctx, ctx.job_id)
    key = merged_key(ctx.job_id)
    if ctx.artifacts.exists(key) and not ctx.artifacts.exists(store.key(0)):
        state = _load_artifact(ctx, key, load_state)
    else:
        progress = lambda cur, _total, stage: ctx.progress(cur, n_shards, stage)  # noqa: E731
        state = merge_shards(store.stream(n_shards, load_state), progress=progress)
        gaps = missing_windows(state, n_windows)
        if gaps:
            raise JobFailedError(f"merged shards miss windows {gaps[:5]}", "merge_incomplete")
        _save_artifact(ctx, key, lambda p: save_state(state, p))
    ctx.check_cancel()
    ctx.progress(0, 1, "finalize")
    result = finalize(state)
    rows = component_rows(result, harvest_id)
    with session_scope(ctx.settings) as session:
        session.execute(delete(ComponentStat).where(ComponentStat.harvest_id == harvest_id))
        for i in range(0, len(rows), INSERT_CHUNK):
            session.execute(insert(ComponentStat), rows[i : i + INSERT_CHUNK])
        row = session.get(Harvest, harvest_id)
        assert row is not None
        row.status, row.n_tokens, row.n_components = "succeeded", state.n_tokens, len(rows)
        row.artifact_ref, row.finished_at = key, utcnow()
    store.delete_all(n_shards)
    ctx.progress(1, 1, "finalize")
    return HarvestResult(harvest_id=harvest_id, n_tokens=state.n_tokens, n_components=len(rows),
                         n_alive=int(result.alive.sum()), n_shards=n_shards, merge_s=time.perf_counter() - start)


def _save_artifact(ctx: JobContext, key: str, writer: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        writer(path)  # type: ignore[operator]
        ctx.artifacts.put_file(key, path)


def _load_artifact(ctx: JobContext, key: str, reader: object) -> HarvestState:
    with tempfile.TemporaryDirectory() as tmp:
        return reader(ctx.artifacts.get_file(key, Path(tmp) / "state.safetensors"))  # type: ignore[operator]


@REGISTRY.register("harvest.shard")
def run_harvest_shard_job(ctx: JobContext) -> ShardResult:
    params = ctx.params
    assert isinstance(params, ShardParams)
    parent = HarvestParams.model_validate(load_parent(ctx)[0])

    def body(watch: object) -> tuple[ShardResult, int]:
        from spdlab.core.harvest.config import HarvestConfig
        from spdlab.core.harvest.harvest import ShardSpec, run_harvest_shard, shard_range
        from spdlab.core.harvest.stats import load_state, save_state

        entry = load_entry(ctx, parent.decomposition_id)
        windows = load_windows(ctx, parent.dataset_id)
        adapter = make_adapter(entry, int(windows.shape[1]))
        shard = ShardSpec(index=params.index, count=params.count)
        start, stop = shard_range(int(windows.shape[0]), shard)
        store = checkpoints(ctx, params.parent_job_id)
        resume = store.load(params.index, lambda p: load_state(p, adapter.device))
        resumed_from = resume.windows_done[0][1] - start if resume is not None and resume.windows_done else 0
        if resumed_from:
            ctx.log(f"resuming shard {params.index + 1}/{params.count} after {resumed_from} windows")
        state = run_harvest_shard(
            adapter, windows, shard, HarvestConfig.model_validate(parent.config.model_dump()),
            progress=watch.progress, should_cancel=watch.should_cancel,  # type: ignore[attr-defined]
            resume_state=resume, checkpoint=lambda s: store.save(params.index, lambda p: save_state(s, p)),
            checkpoint_every=CHECKPOINT_EVERY,
        )
        return ShardResult(index=params.index, count=params.count, windows=stop - start, n_tokens=state.n_tokens,
                           resumed_from=resumed_from), stop - start

    return run_shard(ctx, "harvest shards", body)
