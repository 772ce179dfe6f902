"""Interventions on a stored graph: validated against the graph's node table before enqueueing."""

from __future__ import annotations

import uuid
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Response, status
from sqlalchemy import select

from spdlab.api.deps import SessionDep, SettingsDep, UserDep
from spdlab.api.graph_cache import GraphCache
from spdlab.api.graph_deps import (
    get_decomposition,
    get_graph,
    get_or_404,
    get_prompt,
    graph_cache,
    unprocessable,
)
from spdlab.api.graph_view import node_keys
from spdlab.api.routes.graphs import TokCacheDep, invalid_node_keys, load_cached
from spdlab.api.routes.jobs import submit_job
from spdlab.common.contracts.graphs import (
    InterventionJobRequest,
    InterventionOut,
    InterventionParams,
    InterventionSubmitOut,
    intervention_key,
)
from spdlab.common.graph_codec import NODE_COMPONENT, GraphArrays
from spdlab.common.graph_tables import Intervention

router = APIRouter(prefix="/api/v1/interventions", tags=["interventions"])
graph_router = APIRouter(prefix="/api/v1/graphs", tags=["interventions"])
GraphCacheDep = Annotated[GraphCache, Depends(graph_cache)]


def alive_component_keys(arrays: GraphArrays) -> set[str]:
    rows = np.flatnonzero((arrays["node_kind"] == NODE_COMPONENT) & (arrays["node_ci"] > 0))
    return set(node_keys(arrays, rows, arrays.meta.get("layers", [])))


@router.post(
    "",
    response_model=InterventionSubmitOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": InterventionSubmitOut, "description": "an identical intervention is stored"}},
)
def run_intervention(params: InterventionParams, response: Response, user: UserDep, session: SessionDep,
                     settings: SettingsDep, cache: GraphCacheDep, tokens: TokCacheDep) -> InterventionSubmitOut:
    graph = get_graph(session, params.graph_id)
    prompt = get_prompt(session, graph.prompt_id)
    decomposition = get_decomposition(session, graph.decomposition_id)
    n_tokens = len(prompt.token_ids)
    missing = invalid_node_keys(params.selected_nodes, decomposition, n_tokens)
    alive = alive_component_keys(load_cached(session, graph.id, cache, tokens).arrays)
    dead = [k for k in params.selected_nodes if k not in alive and k not in set(missing)]
    if missing or dead:
        listed = ", ".join([*missing, *dead][:100])
        raise unprocessable("selected_nodes", f"{len(missing)} not in this model/prompt, {len(dead)} not alive in "
                                              f"graph {graph.id}: {listed}")
    bad_ablate = invalid_node_keys(params.nodes_to_ablate or [], decomposition, n_tokens)
    if bad_ablate:
        raise unprocessable("nodes_to_ablate", f"{len(bad_ablate)} not in this model/prompt: {', '.join(bad_ablate)}")
    key = intervention_key(params)
    stored = session.scalar(select(Intervention).where(Intervention.graph_id == graph.id,
                                                       Intervention.params_key == key))
    if stored is not None:
        response.status_code = status.HTTP_200_OK
        return InterventionSubmitOut(status="stored", intervention=InterventionOut.model_validate(stored))
    request = InterventionJobRequest(kind="intervention", params=params)
    job = submit_job(request, response, user, session, settings)
    if job.status == "succeeded":  # an identical job ran, but its row was deleted with its graph since
        request.params = params.model_copy(update={"nonce": uuid.uuid4().hex})
        job = submit_job(request, response, user, session, settings)
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return InterventionSubmitOut(status=job.status, job=job.model_dump(mode="json"))  # type: ignore[arg-type]


@router.get("/{intervention_id}", response_model=InterventionOut)
def read_intervention(intervention_id: int, user: UserDep, session: SessionDep) -> InterventionOut:
    return InterventionOut.model_validate(get_or_404(session, Intervention, intervention_id, "intervention"))


@graph_router.get("/{graph_id}/interventions", response_model=list[InterventionOut])
def list_graph_interventions(graph_id: int, user: UserDep, session: SessionDep) -> list[InterventionOut]:
    get_graph(session, graph_id)
    rows = session.scalars(select(Intervention).where(Intervention.graph_id == graph_id).order_by(Intervention.id))
    return [InterventionOut.model_validate(r) for r in rows]
