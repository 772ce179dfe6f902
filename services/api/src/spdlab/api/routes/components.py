"""Component data of a finished harvest: per-layer summary, paginated component lists, one
component's detail (examples, token statistics, correlated components), bulk fetch.

Layers are canonical names (`0.mlp.up`, ...). Correlated components come from the lists stored
at merge time, so `limit` is capped by the harvest's `top_k_correlations`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import undefer

from spdlab.api.component_view import detail, summary
from spdlab.api.deps import OffsetQuery, SessionDep, UserDep
from spdlab.api.graph_deps import tokenizer_cache
from spdlab.api.routes.harvests import get_harvest
from spdlab.api.tokenizer_cache import TokenizerCache
from spdlab.common.contracts.harvest import (
    BulkComponentsRequest,
    BulkComponentsResponse,
    ComponentDetail,
    ComponentPage,
    CorrelationMetric,
    LayerSummary,
)
from spdlab.common.harvest_tables import ComponentStat, Harvest
from spdlab.common.models import Decomposition

router = APIRouter(prefix="/api/v1/harvests", tags=["components"])
TokenizersDep = Annotated[TokenizerCache, Depends(tokenizer_cache)]


def finished_harvest(session: SessionDep, harvest_id: int) -> Harvest:
    row = get_harvest(session, harvest_id)
    if row.status != "succeeded":
        raise HTTPException(status.HTTP_409_CONFLICT, f"harvest {harvest_id} has no results yet (status {row.status})")
    return row


def _layers(session: SessionDep, harvest_id: int) -> list[str]:
    return list(session.scalars(select(ComponentStat.layer).where(ComponentStat.harvest_id == harvest_id)
                                .group_by(ComponentStat.layer).order_by(func.min(ComponentStat.id))).all())


def _check_layer(session: SessionDep, harvest_id: int, layer: str) -> None:
    layers = _layers(session, harvest_id)
    if layer not in layers:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"harvest {harvest_id} has no layer {layer!r}; layers: {', '.join(layers)}")


def _tokenizer(session: SessionDep, tokenizers: TokenizerCache, harvest: Harvest):  # type: ignore[no-untyped-def]
    decomposition = session.get(Decomposition, harvest.decomposition_id)
    return tokenizers.get(None if decomposition is None else decomposition.tokenizer_ref)


@router.get("/{harvest_id}/layers", response_model=list[LayerSummary])
def layer_summaries(harvest_id: int, user: UserDep, session: SessionDep) -> list[LayerSummary]:
    finished_harvest(session, harvest_id)
    c = ComponentStat
    rows = session.execute(
        select(c.layer, func.count(), func.count().filter(c.firing_count > 0), func.avg(c.firing_density),
               func.max(c.firing_density), func.avg(c.mean_ci))
        .where(c.harvest_id == harvest_id).group_by(c.layer).order_by(func.min(c.id))
    ).all()
    return [LayerSummary(layer=r[0], n_components=r[1], n_alive=r[2] or 0, mean_density=float(r[3] or 0),
                         max_density=float(r[4] or 0), mean_ci=float(r[5] or 0)) for r in rows]


@router.get("/{harvest_id}/components", response_model=ComponentPage)
def list_components(
    harvest_id: int,
    user: UserDep,
    session: SessionDep,
    layer: Annotated[str | None, Query(max_length=200)] = None,
    order: Literal["index", "density"] = "index",
    alive_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: OffsetQuery = 0,
) -> ComponentPage:
    finished_harvest(session, harvest_id)
    if layer is not None:
        _check_layer(session, harvest_id, layer)
    c = ComponentStat
    query = select(c).where(c.harvest_id == harvest_id)
    if layer is not None:
        query = query.where(c.layer == layer)
    if alive_only:
        query = query.where(c.firing_count > 0)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ordering = (c.firing_density.desc(), c.id) if order == "density" else (c.id,)
    rows = session.scalars(query.order_by(*ordering).limit(limit).offset(offset)).all()
    return ComponentPage(items=[summary(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{harvest_id}/components/{layer}/{component_idx}", response_model=ComponentDetail)
def component_detail(
    harvest_id: int,
    layer: str,
    component_idx: int,
    user: UserDep,
    session: SessionDep,
    tokenizers: TokenizersDep,
    metric: CorrelationMetric = "jaccard",
    limit: Annotated[int, Query(ge=1, le=100, description="correlated components")] = 10,
    examples_limit: Annotated[int, Query(ge=0, le=1000)] = 20,
    examples_offset: OffsetQuery = 0,
    token_limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> ComponentDetail:
    harvest = finished_harvest(session, harvest_id)
    row = session.scalar(select(ComponentStat).options(undefer(ComponentStat.examples)).where(
        ComponentStat.harvest_id == harvest_id, ComponentStat.layer == layer,
        ComponentStat.component_idx == component_idx))
    if row is None:
        _check_layer(session, harvest_id, layer)
        n = session.scalar(select(func.count()).where(ComponentStat.harvest_id == harvest_id,
                                                      ComponentStat.layer == layer))
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"layer {layer!r} has no component {component_idx} ({n} components)")
    return detail(row, _tokenizer(session, tokenizers, harvest), metric=metric, correlation_limit=limit,
                  examples_limit=examples_limit, examples_offset=examples_offset, token_limit=token_limit)


@router.post("/{harvest_id}/components:bulk", response_model=BulkComponentsResponse)
def bulk_components(harvest_id: int, body: BulkComponentsRequest, user: UserDep, session: SessionDep,
                    tokenizers: TokenizersDep) -> BulkComponentsResponse:
    harvest = finished_harvest(session, harvest_id)
    wanted = [(k.rpartition(":")[0], int(k.rpartition(":")[2])) for k in dict.fromkeys(body.keys)]
    rows = session.scalars(select(ComponentStat).options(undefer(ComponentStat.examples)).where(
        ComponentStat.harvest_id == harvest_id,
        tuple_(ComponentStat.layer, ComponentStat.component_idx).in_(wanted))).all()
    by_key = {(r.layer, r.component_idx): r for r in rows}
    tok = _tokenizer(session, tokenizers, harvest)
    items = [detail(by_key[k], tok, metric=body.correlation_metric, correlation_limit=body.correlation_limit,
                    examples_limit=body.examples_limit) for k in wanted if k in by_key]
    return BulkComponentsResponse(items=items, missing=[f"{la}:{i}" for la, i in wanted if (la, i) not in by_key])
