"""`intervention`: run the chosen regimes for a stored graph's prompt and store the result with it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import select

from spdlab.common.contracts.graphs import InterventionJobResult, InterventionParams, intervention_key
from spdlab.common.db import session_scope
from spdlab.common.graph_tables import Graph, Intervention
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.gpu_worker.autocast import core_autocast
from spdlab.gpu_worker.graph_store import job_owner, load_prompt, store_intervention
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.handlers.graphs import core_errors, prompt_loss
from spdlab.gpu_worker.model_cache import get_decomposition


def _regime(result: Any) -> dict[str, Any]:
    return {"loss": result.loss, "label_prob": result.label_prob,
            "predictions": [[asdict(p) for p in pos] for pos in result.predictions]}


@REGISTRY.register("intervention")
def run_intervention(ctx: JobContext) -> HandlerResult:
    import torch

    from spdlab.core.intervention import compute_intervention
    from spdlab.core.optimize_ci import PGDSettings

    params = ctx.params
    assert isinstance(params, InterventionParams)
    key = intervention_key(params)
    with session_scope(ctx.settings) as session:
        graph = session.get(Graph, params.graph_id)
        if graph is None:
            raise JobFailedError(f"graph {params.graph_id} does not exist (deleted?)", "graph_missing")
        prompt_id = graph.prompt_id
        done = session.scalar(
            select(Intervention.id).where(Intervention.graph_id == params.graph_id, Intervention.params_key == key)
        )
    if done is not None:
        return HandlerResult(InterventionJobResult(intervention_id=done), f"interventions:{done}")
    decomposition_id, token_ids = load_prompt(ctx, prompt_id)
    with core_errors():
        entry = get_decomposition(decomposition_id, ctx.settings, ctx.artifacts)
        tok = entry.tokenizer
        with core_autocast(ctx.settings, entry.device):
            out = compute_intervention(
                entry.model, torch.tensor(token_ids, device=entry.device), params.selected_nodes,
                topology=entry.topology, sampling=entry.sampling,
                loss=None if params.loss is None else prompt_loss(params.loss), nodes_to_ablate=params.nodes_to_ablate,
                top_k=params.top_k, seed=params.seed, decode=None if tok is None else tok.id_to_token,
                pgd=None if params.pgd is None else PGDSettings(params.pgd.n_steps, params.pgd.step_size),
            )
    regimes = {name: _regime(getattr(out, name)) for name in params.regimes if getattr(out, name) is not None}
    result = {"token_ids": out.token_ids, "label_position": out.label_position, "label_token": out.label_token,
              "regimes": regimes}
    stored = store_intervention(ctx, graph_id=params.graph_id, owner_id=job_owner(ctx),
                                params=params.model_dump(mode="json"), key=key, result=result)
    return HandlerResult(InterventionJobResult(intervention_id=stored), f"interventions:{stored}")
