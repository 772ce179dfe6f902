"""Graph jobs: `graph.standard`, `graph.manual`, `graph.optimized` (a batch of coefficients → one
graph each). Progress per target layer; optimized runs also emit `ci_snapshot` events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from spdlab.common.contracts.graphs import (
    GraphJobResult,
    ManualGraphParams,
    OptimizedGraphParams,
    StandardGraphParams,
    graph_keys,
    graph_type_of,
)
from spdlab.common.db import session_scope
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError
from spdlab.gpu_worker.autocast import core_autocast
from spdlab.gpu_worker.graph_columns import graph_arrays
from spdlab.gpu_worker.graph_store import emit_event, existing_graph_ids, job_owner, load_prompt, store_graph
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.model_cache import DecompositionUnavailableError, LoadedEntry, get_decomposition


@contextmanager
def core_errors() -> Iterator[None]:
    """The core's cancellation and input errors as the runner's job outcomes."""
    from spdlab.core.callbacks import Cancelled
    from spdlab.core.graph import InvalidNodesError

    try:
        yield
    except Cancelled as exc:
        raise JobCancelledError() from exc
    except InvalidNodesError as exc:
        raise JobFailedError(str(exc), "invalid_nodes") from exc
    except DecompositionUnavailableError as exc:
        raise JobFailedError(str(exc), "decomposition_missing") from exc
    except ValueError as exc:  # the core names the field that does not fit the prompt or model
        raise JobFailedError(str(exc), "invalid_request") from exc


def _progress(ctx: JobContext) -> Any:
    return lambda current, total, stage: ctx.progress(current, total, stage)


def attribution_config(params: StandardGraphParams | ManualGraphParams | OptimizedGraphParams) -> Any:
    from spdlab.core.attribution import AttributionConfig

    included = params.included_nodes if isinstance(params, ManualGraphParams) else None
    return AttributionConfig(
        output_prob_threshold=params.output_prob_threshold,
        max_output_nodes_per_pos=params.max_output_nodes_per_pos,
        output_display_top_k=params.output_top_k,
        included_nodes=included,
    )


def prompt_loss(spec: Any) -> Any:
    from spdlab.core.prompt_losses import CELoss, KLLoss, LogitLoss

    if spec.type == "ce":
        return CELoss(position=spec.position, label_token=spec.label_token, coeff=spec.coeff)
    if spec.type == "kl":
        return KLLoss(position=spec.position, coeff=spec.coeff)
    return LogitLoss(position=spec.position, label_token=spec.label_token, coeff=spec.coeff)


def optimize_config(params: OptimizedGraphParams, coeffs: list[float]) -> Any:
    from spdlab.core.optimize_ci import LRSchedule, OptimizeCIConfig, PGDSettings

    pgd = None if params.adv_pgd is None else PGDSettings(params.adv_pgd.n_steps, params.adv_pgd.step_size)
    return OptimizeCIConfig(
        loss=prompt_loss(params.loss), imp_min_coeffs=tuple(coeffs), steps=params.steps, pnorm=params.pnorm,
        beta=params.beta, p_anneal_start_frac=params.p_anneal_start_frac, p_anneal_final_p=params.p_anneal_final_p,
        p_anneal_end_frac=params.p_anneal_end_frac, mask_type=params.mask_type,
        lr=LRSchedule(**params.lr.model_dump()), adv_pgd=pgd, seed=params.seed, snapshot_every=params.snapshot_every,
    )


def _tokens(entry: LoadedEntry, token_ids: list[int]) -> Any:
    import torch

    return torch.tensor(token_ids, dtype=torch.long, device=entry.device)


def _graph_summary(graph: Any, token_ids: list[int]) -> dict[str, Any]:
    trunc = graph.output_truncation
    return {"n_positions": graph.n_positions, "prompt_token_ids": token_ids,
            "output_truncation": {**asdict(trunc), "truncated": trunc.truncated}}


def run_graph(ctx: JobContext) -> HandlerResult:
    params = ctx.params
    assert isinstance(params, StandardGraphParams | ManualGraphParams | OptimizedGraphParams)
    keyed = graph_keys(ctx.kind, params)
    decomposition_id, token_ids = load_prompt(ctx, params.prompt_id)
    with session_scope(ctx.settings) as session:
        done = existing_graph_ids(session, params.prompt_id, [k for _, k in keyed])
    todo = [(p, k) for p, k in keyed if k not in done]
    ids = dict(done)
    created = 0
    if todo:
        owner = job_owner(ctx)
        with core_errors():
            entry = get_decomposition(decomposition_id, ctx.settings, ctx.artifacts)
            with core_autocast(ctx.settings, entry.device):
                computed = _compute(ctx, entry, params, token_ids, todo)
        for (stored_params, key), (graph, summary) in zip(todo, computed, strict=True):
            arrays = graph_arrays(graph.to_numpy_columns(), {"graph_type": graph_type_of(ctx.kind)})
            ids[key], new = store_graph(
                ctx, prompt_id=params.prompt_id, decomposition_id=decomposition_id, owner_id=owner,
                graph_type=graph_type_of(ctx.kind), params=stored_params, key=key, arrays=arrays,
                summary={**_graph_summary(graph, token_ids), **summary},
            )
            created += int(new)
    graph_ids = [ids[k] for _, k in keyed]
    return HandlerResult(GraphJobResult(graph_ids=graph_ids, created=created),
                         "graphs:" + ",".join(map(str, graph_ids)))


def _compute(ctx: JobContext, entry: LoadedEntry, params: Any, token_ids: list[int],
             todo: list[tuple[dict[str, Any], str]]) -> list[tuple[Any, dict[str, Any]]]:
    from spdlab.core.attribution import compute_attribution_graph, compute_optimized_graphs

    tokens = _tokens(entry, token_ids)
    common = dict(topology=entry.topology, sources_by_target=entry.sources_by_target, sampling=entry.sampling,
                  config=attribution_config(params), progress=_progress(ctx), cancel=ctx.should_cancel)
    if not isinstance(params, OptimizedGraphParams):
        return [(compute_attribution_graph(entry.model, tokens, **common), {})]  # type: ignore[arg-type]
    coeffs = [p["imp_min_coeff"] for p, _ in todo]
    results = compute_optimized_graphs(
        entry.model, tokens, optimize_config(params, coeffs),
        on_snapshot=lambda snap: emit_event(ctx, "ci_snapshot", snap.to_dict()), **common,  # type: ignore[arg-type]
    )
    return [(r.graph, {"metrics": asdict(r.metrics), "imp_min_coeff": r.metrics.imp_min_coeff}) for r in results]


for _kind in ("graph.standard", "graph.manual", "graph.optimized"):
    REGISTRY.register(_kind)(run_graph)
