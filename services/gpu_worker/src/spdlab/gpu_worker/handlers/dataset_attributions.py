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

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from spdlab.common.contracts.dataset_attributions import (
    STORED_TOP_K,
    DatasetAttributionParams,
    DatasetAttributionResult,
)
from spdlab.common.contracts.harvest import ShardParams, ShardResult
from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import ComponentAttribution, Dataset, DatasetAttributionRun
from spdlab.common.models import Decomposition, Job, utcnow
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.harvest_inputs import load_entry, load_windows
from spdlab.gpu_worker.sharding import ShardCheckpoints, drive_parent, load_parent, run_shard

if TYPE_CHECKING:
    from spdlab.core.harvest.dataset_attributions import AttributionState

CHECKPOINT_EVERY = 10
INSERT_CHUNK = 500


def checkpoints(ctx: JobContext, parent_job_id: str) -> ShardCheckpoints:
    return ShardCheckpoints(ctx.artifacts, f"dataset_attributions/{parent_job_id}")


def _run_row(ctx: JobContext) -> tuple[int, int]:
    params = ctx.params
    assert isinstance(params, DatasetAttributionParams)
    with session_scope(ctx.settings) as session:
        dataset = session.get(Dataset, params.dataset_id)
        if dataset is None or dataset.status != "ready" or dataset.n_windows is None:
            raise JobFailedError(f"dataset {params.dataset_id} is not ready", "dataset_not_ready")
        row = session.scalar(select(DatasetAttributionRun).where(DatasetAttributionRun.job_id == ctx.job_id))
        if row is None:
            job = session.get(Job, ctx.job_id)
            assert job is not None
            row = DatasetAttributionRun(owner_id=job.owner_id, decomposition_id=params.decomposition_id,
                                        dataset_id=params.dataset_id, config=params.config.model_dump(mode="json"),
                                        n_shards=params.n_shards, status="running", job_id=ctx.job_id)
            try:
                with session.begin_nested():  # the API may insert the same row concurrently
                    session.add(row)
            except IntegrityError:
                row = session.scalar(select(DatasetAttributionRun).where(DatasetAttributionRun.job_id == ctx.job_id))
                assert row is not None
        row.status = "running"
        session.flush()
        return row.id, int(dataset.n_windows)


def _set_status(ctx: JobContext, run_id: int, status: str) -> None:
    with session_scope(ctx.settings) as session:
        row = session.get(DatasetAttributionRun, run_id)
        if row is not None:
            row.status, row.finished_at = status, utcnow()


@REGISTRY.register("dataset_attributions")
def run_dataset_attributions(ctx: JobContext) -> HandlerResult | None:
    from spdlab.core.harvest.harvest import plan_shards

    params = ctx.params
    assert isinstance(params, DatasetAttributionParams)
    run_id, n_windows = _run_row(ctx)
    n_shards = len(plan_shards(n_windows, params.n_shards))
    try:
        if not drive_parent(ctx, "dataset_attributions.shard", n_shards):
            return None
    except JobCancelledError:
        _set_status(ctx, run_id, "cancelled")
        raise
    except Exception:
        _set_status(ctx, run_id, "failed")
        raise
    return HandlerResult(_merge(ctx, run_id, n_shards), f"dataset_attributions:{run_id}")


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


def _merge(ctx: JobContext, run_id: int, n_shards: int) -> DatasetAttributionResult:
    from spdlab.core.harvest.dataset_attributions import (
        load_attribution_state,
        merge_attribution_states,
        save_attribution_state,
    )

    start = time.perf_counter()
    store = checkpoints(ctx, ctx.job_id)
    key = f"dataset_attributions/{ctx.job_id}/merged.safetensors"
    if ctx.artifacts.exists(key) and not ctx.artifacts.exists(store.key(0)):
        with tempfile.TemporaryDirectory() as tmp:
            state = load_attribution_state(ctx.artifacts.get_file(key, Path(tmp) / "m.safetensors"))
    else:
        state = merge_attribution_states(store.stream(n_shards, load_attribution_state))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.safetensors"
            save_attribution_state(state, path)
            ctx.artifacts.put_file(key, path)
    ctx.progress(0, 1, "top-k")
    rows = [{**r, "run_id": run_id} for r in _tops(state)]
    with session_scope(ctx.settings) as session:
        session.execute(delete(ComponentAttribution).where(ComponentAttribution.run_id == run_id))
        for i in range(0, len(rows), INSERT_CHUNK):
            session.execute(insert(ComponentAttribution), rows[i : i + INSERT_CHUNK])
        row = session.get(DatasetAttributionRun, run_id)
        assert row is not None
        row.status, row.n_tokens, row.artifact_ref, row.finished_at = "succeeded", state.n_tokens, key, utcnow()
    store.delete_all(n_shards)
    ctx.progress(1, 1, "top-k")
    return DatasetAttributionResult(run_id=run_id, n_tokens=state.n_tokens, n_shards=n_shards,
                                    merge_s=time.perf_counter() - start)


def _canonical_sources(ctx: JobContext, decomposition_id: int) -> dict[str, list[str]] | None:
    with session_scope(ctx.settings) as session:
        row = session.get(Decomposition, decomposition_id)
        stored = None if row is None else row.sources_by_target
    canonical = (stored or {}).get("canonical")
    return None if not canonical else {k: list(v) for k, v in canonical.items()}


@REGISTRY.register("dataset_attributions.shard")
def run_dataset_attributions_shard(ctx: JobContext) -> ShardResult:
    params = ctx.params
    assert isinstance(params, ShardParams)
    parent = DatasetAttributionParams.model_validate(load_parent(ctx)[0])

    def body(watch: Any) -> tuple[ShardResult, int]:
        from spdlab.core.harvest.dataset_attributions import (
            DatasetAttributionConfig,
            load_attribution_state,
            run_attribution_shard,
            save_attribution_state,
        )
        from spdlab.core.harvest.harvest import ShardSpec, shard_range

        entry = load_entry(ctx, parent.decomposition_id)
        windows = load_windows(ctx, parent.dataset_id)
        shard = ShardSpec(index=params.index, count=params.count)
        start, stop = shard_range(int(windows.shape[0]), shard)
        store = checkpoints(ctx, params.parent_job_id)
        resume = store.load(params.index, lambda p: load_attribution_state(p, entry.device))
        resumed_from = resume.windows_done[0][1] - start if resume is not None and resume.windows_done else 0
        state = run_attribution_shard(
            entry.model, windows, shard, DatasetAttributionConfig.model_validate(parent.config.model_dump()),
            sampling=entry.sampling, topology=entry.topology,
            sources_by_target=_canonical_sources(ctx, parent.decomposition_id),
            progress=watch.progress, should_cancel=watch.should_cancel, resume_state=resume,
            checkpoint=lambda s: store.save(params.index, lambda p: save_attribution_state(s, p)),
            checkpoint_every=CHECKPOINT_EVERY,
        )
        return ShardResult(index=params.index, count=params.count, windows=stop - start, n_tokens=state.n_tokens,
                           resumed_from=resumed_from), stop - start

    return run_shard(ctx, "attribution shards", body)
