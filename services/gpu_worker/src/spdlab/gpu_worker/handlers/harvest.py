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

import time

from spdlab.common.contracts.harvest import HarvestParams, HarvestResult, ShardResult
from spdlab.common.harvest_tables import ComponentStat, Harvest
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.harvest_inputs import make_adapter
from spdlab.gpu_worker.sharded_runs import RunPlan, checkpoints, drive_run, finish_run, shard_inputs
from spdlab.gpu_worker.sharding import load_parent, run_shard

CHECKPOINT_EVERY = 20  # batches between shard checkpoints
PREFIX = "harvests"  # artifacts: harvests/<parent job>/{shard-<i>,merged}.safetensors


@REGISTRY.register("harvest")
def run_harvest(ctx: JobContext) -> HandlerResult | None:
    plan = drive_run(ctx, Harvest, "harvest.shard")
    if plan is None:
        return None
    return HandlerResult(_merge(ctx, plan), f"harvests:{plan.run_id}")


def _merge(ctx: JobContext, plan: RunPlan) -> HarvestResult:
    from spdlab.core.harvest.harvest import merge_shards, missing_windows
    from spdlab.core.harvest.stats import finalize, load_state, save_state
    from spdlab.gpu_worker.harvest_rows import component_rows

    start = time.perf_counter()
    store = checkpoints(ctx, PREFIX, ctx.job_id)
    if store.merged_only():
        state = store.load_merged(load_state)
    else:
        progress = lambda cur, _total, stage: ctx.progress(cur, plan.n_shards, stage)  # noqa: E731
        state = merge_shards(store.stream(plan.n_shards, load_state), progress=progress)
        gaps = missing_windows(state, plan.n_windows)
        if gaps:
            raise JobFailedError(f"merged shards miss windows {gaps[:5]}", "merge_incomplete")
        store.save_merged(lambda p: save_state(state, p))
    ctx.check_cancel()
    ctx.progress(0, 1, "finalize")
    result = finalize(state)
    rows = component_rows(result, plan.run_id)
    finish_run(ctx, Harvest, plan.run_id, ComponentStat.harvest_id, rows, n_tokens=state.n_tokens,
               n_components=len(rows), artifact_ref=store.merged_key)
    store.delete_all(plan.n_shards)
    ctx.progress(1, 1, "finalize")
    return HarvestResult(harvest_id=plan.run_id, n_tokens=state.n_tokens, n_components=len(rows),
                         n_alive=int(result.alive.sum()), n_shards=plan.n_shards,
                         merge_s=time.perf_counter() - start)


@REGISTRY.register("harvest.shard")
def run_harvest_shard_job(ctx: JobContext) -> ShardResult:
    parent = HarvestParams.model_validate(load_parent(ctx)[0])

    def body(watch: object) -> tuple[ShardResult, int]:
        from spdlab.core.harvest.config import HarvestConfig
        from spdlab.core.harvest.harvest import run_harvest_shard
        from spdlab.core.harvest.stats import load_state, save_state

        inputs = shard_inputs(ctx, parent, PREFIX)
        adapter = make_adapter(inputs.entry, int(inputs.windows.shape[1]), ctx.settings)
        resume, resumed_from = inputs.resume(lambda p: load_state(p, adapter.device))
        if resumed_from:
            ctx.log(f"resuming shard {inputs.spec.index + 1}/{inputs.spec.count} after {resumed_from} windows")
        state = run_harvest_shard(
            adapter, inputs.windows, inputs.spec, HarvestConfig.model_validate(parent.config.model_dump()),
            progress=watch.progress, should_cancel=watch.should_cancel,  # type: ignore[attr-defined]
            resume_state=resume, checkpoint=inputs.checkpoint(save_state), checkpoint_every=CHECKPOINT_EVERY,
        )
        return inputs.result(state.n_tokens, resumed_from)

    return run_shard(ctx, "harvest shards", body)
