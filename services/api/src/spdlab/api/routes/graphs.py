"""Attribution graphs: get-or-compute, filtered reads (JSON or Neuronpedia), listing, delete.

`POST /graphs` answers with the stored graphs when every graph of the request exists (200), else
with the job computing the missing ones (202). `GET /graphs/{id}` filters, normalises, sorts and
truncates server-side over the columnar blob (`graph_view`), from an in-process cache of decoded
blobs after the first read.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from spdlab.api.deps import MAX_ROW_ID, SessionDep, SettingsDep, UserDep, ensure_owner_or_admin
from spdlab.api.graph_cache import CachedGraph, GraphCache
from spdlab.api.graph_deps import (
    get_decomposition,
    get_graph,
    get_prompt,
    graph_cache,
    tokenizer_cache,
    unprocessable,
)
from spdlab.api.graph_view import ViewParams, view
from spdlab.api.neuronpedia import export_graph
from spdlab.api.routes.jobs import submit_job
from spdlab.api.tokenizer_cache import TokenizerCache, prompt_token_strings, token_strings
from spdlab.common.contracts.graphs import (
    GraphJobRequest,
    GraphSubmitOut,
    GraphSummary,
    GraphViewOut,
    ManualGraphParams,
    OptimizedGraphParams,
    graph_keys,
)
from spdlab.common.graph_codec import GraphArrays, decode
from spdlab.common.graph_tables import Graph
from spdlab.common.models import Decomposition, Prompt

router = APIRouter(prefix="/api/v1/graphs", tags=["graphs"])
prompt_router = APIRouter(prefix="/api/v1/prompts", tags=["graphs"])
GraphCacheDep = Annotated[GraphCache, Depends(graph_cache)]
TokCacheDep = Annotated[TokenizerCache, Depends(tokenizer_cache)]
MAX_EDGE_LIMIT = 100_000


# --- request validation (no model: the decomposition's summary suffices) -------------------------


def invalid_node_keys(keys: list[str], decomposition: Decomposition, n_tokens: int) -> list[str]:
    """Keys naming no component of this decomposition/prompt (unknown layer, position or index)."""
    sizes = {layer["canonical"]: layer["C"] for layer in (decomposition.summary or {}).get("layers", [])}
    bad = []
    for key in keys:
        layer, pos, idx = key.rsplit(":", 2)
        if layer not in sizes or not 0 <= int(pos) < n_tokens or not 0 <= int(idx) < sizes[layer]:
            bad.append(key)
    return bad


def validate_graph_request(body: Any, prompt: Prompt, decomposition: Decomposition) -> None:
    params = body.params
    n_tokens = len(prompt.token_ids)
    if isinstance(params, ManualGraphParams):
        bad = invalid_node_keys(params.included_nodes, decomposition, n_tokens)
        if bad:
            raise unprocessable("params.included_nodes",
                                f"{len(bad)} node(s) not in this decomposition/prompt: {', '.join(bad[:50])}")
    if isinstance(params, OptimizedGraphParams):
        if params.loss.position >= n_tokens:
            raise unprocessable("params.loss.position",
                                f"position {params.loss.position} is outside the prompt (length {n_tokens})")
        vocab = (decomposition.summary or {}).get("vocab_size")
        label = getattr(params.loss, "label_token", None)
        if label is not None and vocab is not None and label >= vocab:
            raise unprocessable("params.loss.label_token", f"token {label} is outside the vocabulary (size {vocab})")


def stored_graphs(session: Session, prompt_id: int, keys: list[str]) -> dict[str, Graph]:
    rows = session.scalars(select(Graph).where(Graph.prompt_id == prompt_id, Graph.params_key.in_(keys)))
    return {g.params_key: g for g in rows}


# --- routes ---------------------------------------------------------------------------------------


@router.post(
    "",
    response_model=GraphSubmitOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": GraphSubmitOut, "description": "every requested graph is already stored"}},
)
def compute_graph(body: GraphJobRequest, response: Response, user: UserDep, session: SessionDep,
                  settings: SettingsDep) -> GraphSubmitOut:
    prompt = get_prompt(session, body.params.prompt_id)
    decomposition = get_decomposition(session, prompt.decomposition_id)
    validate_graph_request(body, prompt, decomposition)
    keyed = graph_keys(body.kind, body.params)
    found = stored_graphs(session, prompt.id, [k for _, k in keyed])
    graphs = [GraphSummary.model_validate(found[k]) for _, k in keyed if k in found]
    if len(found) == len(keyed):
        response.status_code = status.HTTP_200_OK
        return GraphSubmitOut(status="stored", graphs=graphs)
    request: Any = body
    if isinstance(body.params, OptimizedGraphParams):  # compute only the coefficients not stored yet
        missing = [p["imp_min_coeff"] for p, k in keyed if k not in found]
        request = body.model_copy(update={"params": body.params.model_copy(update={"imp_min_coeffs": missing})})
    job = submit_job(request, response, user, session, settings)
    if job.status == "succeeded":  # an identical job ran, but its graphs were deleted since: recompute
        request = request.model_copy(update={"params": request.params.model_copy(update={"nonce": uuid.uuid4().hex})})
        job = submit_job(request, response, user, session, settings)
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return GraphSubmitOut(status=job.status, graphs=graphs, job=job.model_dump(mode="json"))  # type: ignore[arg-type]


def load_cached(session: Session, graph_id: int, cache: GraphCache, tokens: TokenizerCache) -> CachedGraph:
    """The graph from the process cache; a miss reads the blob and the rows once. Raises 404."""
    exists = 0 < graph_id <= MAX_ROW_ID and session.scalar(select(Graph.id).where(Graph.id == graph_id))
    if not exists:  # never stored, or deleted through another API process
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"graph {graph_id} not found")
    cached = cache.get(graph_id)
    if cached is None:
        graph = get_graph(session, graph_id)
        prompt = get_prompt(session, graph.prompt_id)
        decomposition = get_decomposition(session, graph.decomposition_id)
        arrays = decode(session.scalar(select(Graph.blob).where(Graph.id == graph_id)))
        tok = tokens.get(decomposition.tokenizer_ref)
        token_ids = list(arrays.meta.get("token_ids") or prompt.token_ids)
        out_ids = sorted(set(arrays["out_token"].tolist()))
        strings = dict(zip(out_ids, token_strings(tok, out_ids), strict=True))
        static = {
            "summary": GraphSummary.model_validate(graph).model_dump(mode="json"),
            "prompt_token_ids": token_ids,
            "prompt_tokens": prompt_token_strings(tok, token_ids),
            "prompt_text": prompt.text,
            "outputs": output_table(arrays, strings),
            "token_strings": strings,
            "decomposition_name": decomposition.name,
            "component_layers": [layer["canonical"] for layer in (decomposition.summary or {}).get("layers", [])],
        }
        cached = CachedGraph.build(arrays, static)
        cache.put(graph_id, cached)
    return cached


def output_table(arrays: GraphArrays, strings: dict[int, str]) -> dict[str, list[Any]]:
    tokens = arrays["out_token"].tolist()
    return {
        "pos": arrays["out_pos"].tolist(),
        "token_id": tokens,
        "token": [strings.get(t, str(t)) for t in tokens],
        "ci_masked_prob": arrays["out_ci_masked_prob"].tolist(),
        "ci_masked_logit": arrays["out_ci_masked_logit"].tolist(),
        "target_prob": arrays["out_target_prob"].tolist(),
        "target_logit": arrays["out_target_logit"].tolist(),
        **{k: arrays.meta[k] for k in ("adv_pgd_prob", "adv_pgd_logit") if k in arrays.meta},
    }


@router.get(
    "/{graph_id}",
    response_model=GraphViewOut,
    responses={200: {"description": "the filtered graph (JSON), or the Neuronpedia graph JSON"}},
)
def read_graph(
    graph_id: int,
    user: UserDep,
    session: SessionDep,
    cache: GraphCacheDep,
    tokens: TokCacheDep,
    ci_threshold: Annotated[float, Query(ge=0, le=1, description="component nodes need CI > this")] = 0.0,
    normalize: Annotated[Literal["none", "target", "layer"], Query()] = "none",
    edge_limit: Annotated[int, Query(ge=1, le=MAX_EDGE_LIMIT)] = 1000,
    value: Annotated[Literal["signed", "abs"], Query()] = "signed",
    format: Annotated[Literal["json", "neuronpedia"], Query()] = "json",
) -> Response:
    cached = load_cached(session, graph_id, cache, tokens)
    session.close()
    params = ViewParams(ci_threshold=ci_threshold, normalize=normalize, edge_limit=edge_limit, value=value)
    v = view(cached.arrays, params, cached.index)
    st = cached.static
    if format == "neuronpedia":
        v["prompt_token_ids"] = st["prompt_token_ids"]
        name = st["decomposition_name"]
        body = export_graph(v, slug=f"{name}-graph-{graph_id}", scan=name, prompt=st["prompt_text"],
                            prompt_tokens=st["prompt_tokens"], component_layers=st["component_layers"],
                            token_strings=st["token_strings"])
    else:
        body = {**st["summary"], "prompt_token_ids": st["prompt_token_ids"], "prompt_tokens": st["prompt_tokens"],
                "nodes": v["nodes"], "edges": v["edges"], "outputs": st["outputs"], "stats": v["stats"],
                "view": {"ci_threshold": ci_threshold, "normalize": normalize, "edge_limit": edge_limit,
                         "value": value}}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.delete("/{graph_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_graph(graph_id: int, user: UserDep, session: SessionDep, cache: GraphCacheDep) -> None:
    graph = get_graph(session, graph_id)
    ensure_owner_or_admin(user, graph.owner_id, "graph")
    session.delete(graph)
    session.commit()
    cache.drop(graph_id)


@prompt_router.get("/{prompt_id}/graphs", response_model=list[GraphSummary])
def list_prompt_graphs(prompt_id: int, user: UserDep, session: SessionDep) -> list[GraphSummary]:
    get_prompt(session, prompt_id)
    rows = session.scalars(select(Graph).where(Graph.prompt_id == prompt_id).order_by(Graph.id))
    return [GraphSummary.model_validate(g) for g in rows]
