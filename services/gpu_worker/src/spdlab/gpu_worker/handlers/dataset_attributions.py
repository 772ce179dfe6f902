"""``dataset_attributions`` (parent: plan, then merge) and ``dataset_attributions.shard``.

Same sharded design as the harvest (`handlers/harvest.py`, `spdlab.common.shard_jobs`): shards
accumulate raw sums over contiguous window ranges with checkpoints in the artifact store
(`dataset_attributions/<parent job>/shard-<i>.safetensors`); the parent merges them by element-wise
sums (exact for counts, float64 sums), stores the merged raw sums as
`dataset_attributions/<parent job>/merged.safetensors`, and precomputes each component's top
`STORED_TOP_K` sources and targets for both metrics and signs into `component_attributions`, so
the torch-free API answers top-k queries from one row.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from spdlab.common.contracts.dataset_attributions import (
    STORED_TOP_K,
    DatasetAttributionParams,
    DatasetAttributionResult,
)
from spdlab.common.contracts.harvest import ShardResult
from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import ComponentAttribution, DatasetAttributionRun
from spdlab.common.models import Decomposition
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobContext
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.sharded_runs import RunPlan, checkpoints, drive_run, finish_run, shard_inputs
from spdlab.gpu_worker.sharding import load_parent, run_shard

if TYPE_CHECKING:
    from spdlab.core.harvest.dataset_attributions import AttributionState

CHECKPOINT_EVERY = 10
PREFIX = "dataset_attributions"  # artifacts: dataset_attributions/<parent job>/{shard-<i>,merged}.safetensors


@REGISTRY.register("dataset_attributions")
def run_dataset_attributions(ctx: JobContext) -> HandlerResult | None:
    plan = drive_run(ctx, DatasetAttributionRun, "dataset_attributions.shard")
    if plan is None:
        return None
    return HandlerResult(_merge(ctx, plan), f"dataset_attributions:{plan.run_id}")


def _tops(state: AttributionState) -> list[dict[str, Any]]:
    """Per component: top sources and targets by metric and sign (normalised as the core ranks them)."""
    from spdlab.core.harvest.dataset_attributions import top_sources, top_targets

    rows = []
    for layer, n in state.layers.items():
        for idx in range(n):
            key = f"{layer}:{idx}"
            tops: dict[str, Any] = {"sources": {}, "targets": {}}
            for metric in ("attr", "attr_abs"):
                for direction, fn in (("sources", top_sources), ("targets", top_targets)):
                    tops[direction][metric] = {
                        sign: [[e.key, e.value] for e in fn(state, key, STORED_TOP_K, sign, metric)]  # type: ignore[operator]
                        for sign in ("positive", "negative")
                    }
            rows.append({"layer": layer, "component_idx": idx, "tops": tops})
    return rows


def _merge(ctx: JobContext, plan: RunPlan) -> DatasetAttributionResult:
    from spdlab.core.harvest.dataset_attributions import (
        load_attribution_state,
        merge_attribution_states,
        save_attribution_state,
    )

    start = time.perf_counter()
    store = checkpoints(ctx, PREFIX, ctx.job_id)
    if store.merged_only():
        state = store.load_merged(load_attribution_state)
    else:
        state = merge_attribution_states(store.stream(plan.n_shards, load_attribution_state))
        store.save_merged(lambda p: save_attribution_state(state, p))
    ctx.progress(0, 1, "top-k")
    rows = [{**r, "run_id": plan.run_id} for r in _tops(state)]
    finish_run(ctx, DatasetAttributionRun, plan.run_id, ComponentAttribution.run_id, rows, n_tokens=state.n_tokens,
               artifact_ref=store.merged_key)
    store.delete_all(plan.n_shards)
    ctx.progress(1, 1, "top-k")
    return DatasetAttributionResult(run_id=plan.run_id, n_tokens=state.n_tokens, n_shards=plan.n_shards,
                                    merge_s=time.perf_counter() - start)


def _canonical_sources(ctx: JobContext, decomposition_id: int) -> dict[str, list[str]] | None:
    with session_scope(ctx.settings) as session:
        row = session.get(Decomposition, decomposition_id)
        stored = None if row is None else row.sources_by_target
    canonical = (stored or {}).get("canonical")
    return None if not canonical else {k: list(v) for k, v in canonical.items()}


@REGISTRY.register("dataset_attributions.shard")
def run_dataset_attributions_shard(ctx: JobContext) -> ShardResult:
    parent = DatasetAttributionParams.model_validate(load_parent(ctx)[0])

    def body(watch: Any) -> tuple[ShardResult, int]:
        from spdlab.core.harvest.dataset_attributions import (
            DatasetAttributionConfig,
            load_attribution_state,
            run_attribution_shard,
            save_attribution_state,
        )

        inputs = shard_inputs(ctx, parent, PREFIX)
        entry = inputs.entry
        resume, resumed_from = inputs.resume(lambda p: load_attribution_state(p, entry.device))
        state = run_attribution_shard(
            entry.model, inputs.windows, inputs.spec,
            DatasetAttributionConfig.model_validate(parent.config.model_dump()),
            sampling=entry.sampling, topology=entry.topology,
            sources_by_target=_canonical_sources(ctx, parent.decomposition_id),
            progress=watch.progress, should_cancel=watch.should_cancel, resume_state=resume,
            checkpoint=inputs.checkpoint(save_attribution_state), checkpoint_every=CHECKPOINT_EVERY,
        )
        return inputs.result(state.n_tokens, resumed_from)

    return run_shard(ctx, "attribution shards", body)
