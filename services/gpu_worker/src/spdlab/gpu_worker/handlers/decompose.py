"""`decompose`: train an SPD decomposition (the core's `decompose`) and register the result.

Load the target, `set_seed(config.seed)`, build the component model, train on the chosen batches
with the job's progress / cancel callbacks, save checkpoints in our format to the artifact store
(`decompositions/decompose-<job>/step-<n>/`), then register the final model as a decomposition
(`source="decompose"`).

Redelivery (a worker killed mid-run): the core's loop always starts at step 0 with a fresh optimizer
(its checkpoint callback gets the model, not the optimizer state or the schedule position), so a
mid-run checkpoint cannot be continued faithfully. A redelivered job therefore retrains from step 0;
every random stream is seeded from the config, so on the same device it reproduces the uninterrupted
run. Work after training is resumed: when the final step's checkpoint and `metrics.json` are stored,
or the decomposition row already exists, the retry only registers (or returns) it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from spdlab.common.contracts.decompose import DecomposeMetrics, DecomposeParams, DecomposeResult
from spdlab.common.db import session_scope
from spdlab.common.models import Decomposition
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError
from spdlab.gpu_worker.decompose_artifacts import (
    fetch_checkpoint,
    final_metrics,
    format_log_line,
    job_prefix,
    read_metrics,
    save_checkpoint,
    step_prefix,
    stored_steps,
    write_metrics,
)
from spdlab.gpu_worker.decompose_registration import register_trained
from spdlab.gpu_worker.graph_store import job_owner
from spdlab.gpu_worker.handlers import REGISTRY

if TYPE_CHECKING:
    from spdlab.common.spd_config import Config
    from spdlab.core.component_model import ComponentModel
    from spdlab.gpu_worker.decompose_inputs import TrainTarget

LOG_INTERVAL_S = 2.0  # at most one train-log line per interval in the job's event stream


def train_config(params: DecomposeParams) -> Config:
    """The config as trained: `checkpoint_every` (when given) replaces `save_freq`."""
    if params.checkpoint_every is None:
        return params.config
    return params.config.model_copy(update={"save_freq": params.checkpoint_every})


def throttled_log(ctx: JobContext, steps: int) -> Callable[[int, dict[str, float]], None]:
    """Train logs at most every `LOG_INTERVAL_S` (plus the first and last step); eval logs always."""
    last = [float("-inf")]

    def on_log(step: int, values: dict[str, float]) -> None:
        now = time.monotonic()
        is_train = "train/loss/total" in values
        if is_train and step not in (0, steps) and now - last[0] < LOG_INTERVAL_S:
            return
        if is_train:
            last[0] = now
        ctx.log(format_log_line(step, steps, values))

    return on_log


def _registered(ctx: JobContext, prefix: str) -> Decomposition | None:
    with session_scope(ctx.settings) as session:
        row = session.scalar(select(Decomposition).where(Decomposition.artifact_ref == prefix))
        if row is not None:
            session.expunge(row)
        return row


def _train(ctx: JobContext, params: DecomposeParams, config: Config) -> list[int]:
    """Run the core loop; checkpoints (and, last, the final metrics) land in the artifact store."""
    from spdlab.core.callbacks import Cancelled
    from spdlab.core.component_model import build_component_model
    from spdlab.core.research_import import LoadedDecomposition, SourceInfo
    from spdlab.core.training import decompose, set_seed
    from spdlab.gpu_worker.decompose_inputs import batch_streams, load_train_target
    from spdlab.gpu_worker.model_cache import configure_torch, resolve_device

    configure_torch(ctx.settings)
    ctx.progress(0, config.steps, "loading")
    target: TrainTarget = load_train_target(params, ctx.settings)
    streams = batch_streams(ctx, params, target)
    set_seed(config.seed)  # component init, as the research entry points seed before building
    try:
        model = build_component_model(target.model, config).to(resolve_device(ctx.settings))
    except ValueError as exc:
        raise JobFailedError(f"config does not fit the target: {exc}", "config_mismatch") from exc
    ctx.log(f"training {sum(model.module_to_c.values())} components over {len(model.target_module_paths)} "
            f"modules for {config.steps} steps on {streams.description}")
    saved: list[int] = []

    def on_checkpoint(step: int, trained: ComponentModel) -> None:
        source = SourceInfo(kind="decompose", path=target.path, step=step, extra={"job_id": ctx.job_id})
        loaded = LoadedDecomposition(config=config, component_model=trained, target_model_type=target.model_type,
                                     target_config=target.config, tokenizer=None, source=source,
                                     tokenizer_json=target.tokenizer_json)
        save_checkpoint(ctx.artifacts, step_prefix(ctx.job_id, step), loaded)
        saved.append(step)

    try:
        result = decompose(config, model, streams.train, streams.eval, progress=ctx.progress,
                           should_cancel=ctx.should_cancel, on_log=throttled_log(ctx, config.steps),
                           on_checkpoint=on_checkpoint)
    except Cancelled:
        raise JobCancelledError() from None
    metrics = final_metrics(result.last_train_log, result.last_eval)
    write_metrics(ctx.artifacts, step_prefix(ctx.job_id, config.steps), metrics, result.seconds)
    return saved


def _register(ctx: JobContext, params: DecomposeParams, final_step: int, metrics: DecomposeMetrics,
              seconds: float) -> int:
    """Register the final checkpoint (idempotent per job) and attach the training numbers to its summary."""
    import json
    import tempfile

    from spdlab.core.checkpoints import MANIFEST_FILE

    ctx.progress(final_step, final_step, "registering")
    with tempfile.TemporaryDirectory(prefix="spdlab-decompose-") as tmp:
        directory = fetch_checkpoint(ctx.artifacts, step_prefix(ctx.job_id, final_step), Path(tmp))
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        decomposition_id = register_trained(
            directory, target_model_type=manifest["target"]["model_type"], config=manifest["spd_config"],
            name=params.name, owner_id=job_owner(ctx), settings=ctx.settings, artifacts=ctx.artifacts,
            artifact_prefix=job_prefix(ctx.job_id),
        )
    training = {"job_id": ctx.job_id, "steps": final_step, "seconds": seconds, "metrics": metrics.model_dump(),
                "target": params.target.model_dump(), "data": params.data.model_dump()}
    with session_scope(ctx.settings) as session:
        row = session.get(Decomposition, decomposition_id)
        assert row is not None
        row.summary = {**row.summary, "training": training}  # a new dict, so the JSON column is updated
    return decomposition_id


@REGISTRY.register("decompose")
def run_decompose(ctx: JobContext) -> HandlerResult:
    params = ctx.params
    assert isinstance(params, DecomposeParams)
    config = train_config(params)
    prefix = job_prefix(ctx.job_id)
    final_prefix = step_prefix(ctx.job_id, config.steps)

    row = _registered(ctx, prefix)
    stored = read_metrics(ctx.artifacts, final_prefix)
    resumed = row is not None or stored is not None
    if stored is None:
        if ctx.attempt > 1:
            ctx.log(f"attempt {ctx.attempt}: no finished run stored; training again from step 0 (seeded)")
        _train(ctx, params, config)
        stored = read_metrics(ctx.artifacts, final_prefix)
        assert stored is not None
    else:
        ctx.log(f"attempt {ctx.attempt}: training had finished; registering the stored final checkpoint")
    metrics, seconds = stored
    decomposition_id = row.id if row is not None else _register(ctx, params, config.steps, metrics, seconds)
    ctx.progress(config.steps, config.steps, "done")
    result = DecomposeResult(decomposition_id=decomposition_id, steps=config.steps, seconds=seconds, metrics=metrics,
                             artifact_ref=prefix, checkpoints=stored_steps(ctx.artifacts, ctx.job_id),
                             resumed_from_final=resumed)
    return HandlerResult(result, f"decompositions:{decomposition_id}")
