"""Dataset attributions (spec §5): submit a sharded run (get-or-compute), get it, cancel it, and
query a component's top-k sources or targets by `attr` / `attr_abs` and sign.

Top-k lists are precomputed per component at merge time (k ≤ `STORED_TOP_K`), so queries read one
row; `embed:<tok>` / `output:<tok>` nodes appear in the lists but are not queryable themselves.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import func, select

from spdlab.api.deps import SessionDep, SettingsDep, UserDep, ensure_owner_or_admin, get_or_404
from spdlab.api.routes.harvests import check_dataset, ensure_run_row
from spdlab.api.routes.jobs import submit_job
from spdlab.api.sharded_runs import cancel_run, run_view
from spdlab.common.contracts.dataset_attributions import (
    STORED_TOP_K,
    AttributionEntryOut,
    AttributionMetric,
    AttributionQueryOut,
    DatasetAttributionJobRequest,
    DatasetAttributionOut,
    DatasetAttributionParams,
    Direction,
    Sign,
)
from spdlab.common.harvest_tables import ComponentAttribution, DatasetAttributionRun
from spdlab.common.models import Job

router = APIRouter(prefix="/api/v1/dataset-attributions", tags=["dataset attributions"])


def _get(session: SessionDep, run_id: int) -> DatasetAttributionRun:
    return get_or_404(session, DatasetAttributionRun, run_id, "dataset attribution run")


@router.post("", response_model=DatasetAttributionOut, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"model": DatasetAttributionOut, "description": "an identical run already succeeded"}})
def create_run(body: DatasetAttributionParams, response: Response, user: UserDep, session: SessionDep,
               settings: SettingsDep) -> DatasetAttributionOut:
    check_dataset(session, body.decomposition_id, body.dataset_id)
    job_out = submit_job(DatasetAttributionJobRequest(kind="dataset_attributions", params=body), response, user,
                         session, settings)
    job = session.get(Job, job_out.id)
    assert job is not None
    row = ensure_run_row(session, DatasetAttributionRun, job, body)
    response.headers["Location"] = f"/api/v1/dataset-attributions/{row.id}"
    return DatasetAttributionOut.model_validate(run_view(session, row, with_shards=False))


@router.get("/{run_id}", response_model=DatasetAttributionOut)
def read_run(run_id: int, user: UserDep, session: SessionDep) -> DatasetAttributionOut:
    return DatasetAttributionOut.model_validate(run_view(session, _get(session, run_id), with_shards=False))


@router.post("/{run_id}/cancel", response_model=DatasetAttributionOut)
def cancel(run_id: int, user: UserDep, session: SessionDep, settings: SettingsDep) -> DatasetAttributionOut:
    row = _get(session, run_id)
    ensure_owner_or_admin(user, row.owner_id, "dataset attribution run")
    cancel_run(session, settings, row.job_id)
    session.expire_all()
    return DatasetAttributionOut.model_validate(run_view(session, row, with_shards=False))


@router.get("/{run_id}/components/{layer}/{component_idx}", response_model=AttributionQueryOut)
def component_attributions(
    run_id: int,
    layer: str,
    component_idx: int,
    user: UserDep,
    session: SessionDep,
    direction: Direction = "sources",
    metric: AttributionMetric = "attr",
    sign: Sign = "positive",
    k: Annotated[int, Query(ge=1, le=STORED_TOP_K)] = 10,
) -> AttributionQueryOut:
    run = _get(session, run_id)
    if run.status != "succeeded":
        raise HTTPException(status.HTTP_409_CONFLICT, f"dataset attribution run {run_id} has no results yet")
    row = session.scalar(select(ComponentAttribution).where(
        ComponentAttribution.run_id == run_id, ComponentAttribution.layer == layer,
        ComponentAttribution.component_idx == component_idx))
    if row is None:
        layers = session.scalars(select(ComponentAttribution.layer).where(ComponentAttribution.run_id == run_id)
                                 .group_by(ComponentAttribution.layer).order_by(func.min(ComponentAttribution.id))).all()
        if layer not in layers:
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                f"run {run_id} has no component layer {layer!r}; layers: {', '.join(layers)}")
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"layer {layer!r} has no component {component_idx}")
    pairs = row.tops[direction][metric][sign][:k]
    items = []
    for key, value in pairs:
        node_layer, _, idx = str(key).rpartition(":")
        items.append(AttributionEntryOut(key=key, layer=node_layer, index=int(idx), value=float(value)))
    return AttributionQueryOut(key=f"{layer}:{component_idx}", direction=direction, metric=metric, sign=sign,
                               items=items)
