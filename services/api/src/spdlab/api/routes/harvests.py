"""Harvests: submit (get-or-compute on params), list, get (with shard jobs), cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import func, select

from spdlab.api.deps import (
    OffsetQuery,
    SessionDep,
    SettingsDep,
    UserDep,
    ensure_owner_or_admin,
    find_row,
    get_or_404,
)
from spdlab.api.graph_deps import unprocessable
from spdlab.api.routes.jobs import submit_job
from spdlab.api.sharded_runs import cancel_run, run_view
from spdlab.common.artifacts import artifact_store_from_settings
from spdlab.common.contracts.harvest import HarvestJobRequest, HarvestOut, HarvestPage, HarvestParams
from spdlab.common.harvest_tables import Dataset, Harvest
from spdlab.common.models import ACTIVE_STATUSES, Job
from spdlab.common.sharded_run_rows import RunParams, RunRow, get_or_create_run_row

router = APIRouter(prefix="/api/v1/harvests", tags=["harvests"])


def check_dataset(session: SessionDep, decomposition_id: int, dataset_id: int) -> Dataset:
    """422 naming `dataset_id` unless the dataset exists, is tokenized and belongs to the decomposition."""
    dataset = find_row(session, Dataset, dataset_id)
    if dataset is None:
        raise unprocessable("dataset_id", f"dataset {dataset_id} not found")
    if dataset.decomposition_id != decomposition_id:
        raise unprocessable("dataset_id", f"dataset {dataset_id} was tokenized for decomposition "
                                          f"{dataset.decomposition_id}, not {decomposition_id}")
    if dataset.status != "ready":
        raise unprocessable("dataset_id", f"dataset {dataset_id} is not ready (status {dataset.status!r})")
    return dataset


def get_harvest(session: SessionDep, harvest_id: int) -> Harvest:
    return get_or_404(session, Harvest, harvest_id, "harvest")


def harvest_out(session: SessionDep, row: Harvest, with_shards: bool = True) -> HarvestOut:
    return HarvestOut.model_validate(run_view(session, row, with_shards))


def ensure_run_row(session: SessionDep, model: type[RunRow], job: Job, params: RunParams) -> RunRow:
    """The run row of a parent job (created here, or by a concurrent identical request)."""
    row = get_or_create_run_row(session, model, job, params, status="queued")
    session.commit()
    return row


@router.post("", response_model=HarvestOut, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"model": HarvestOut, "description": "an identical harvest already succeeded"}})
def create_harvest(body: HarvestParams, response: Response, user: UserDep, session: SessionDep,
                   settings: SettingsDep) -> HarvestOut:
    check_dataset(session, body.decomposition_id, body.dataset_id)
    job_out = submit_job(HarvestJobRequest(kind="harvest", params=body), response, user, session, settings)
    job = session.get(Job, job_out.id)
    assert job is not None
    row = ensure_run_row(session, Harvest, job, body)
    response.headers["Location"] = f"/api/v1/harvests/{row.id}"
    return harvest_out(session, row)  # type: ignore[arg-type]


@router.get("", response_model=HarvestPage)
def list_harvests(
    user: UserDep,
    session: SessionDep,
    decomposition_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    dataset_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> HarvestPage:
    query = select(Harvest)
    if decomposition_id is not None:
        query = query.where(Harvest.decomposition_id == decomposition_id)
    if dataset_id is not None:
        query = query.where(Harvest.dataset_id == dataset_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Harvest.id.desc()).limit(limit).offset(offset)).all()
    return HarvestPage(items=[harvest_out(session, r, with_shards=False) for r in rows], total=total, limit=limit,
                       offset=offset)


@router.get("/{harvest_id}", response_model=HarvestOut)
def read_harvest(harvest_id: int, user: UserDep, session: SessionDep) -> HarvestOut:
    return harvest_out(session, get_harvest(session, harvest_id))


@router.post("/{harvest_id}/cancel", response_model=HarvestOut)
def cancel_harvest(harvest_id: int, user: UserDep, session: SessionDep, settings: SettingsDep) -> HarvestOut:
    """Cancel the harvest: its queued shards never start, running ones stop within ~1 s."""
    row = get_harvest(session, harvest_id)
    ensure_owner_or_admin(user, row.owner_id, "harvest")
    cancel_run(session, settings, row.job_id)
    session.expire_all()
    return harvest_out(session, row)


@router.delete("/{harvest_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_harvest(harvest_id: int, user: UserDep, session: SessionDep, settings: SettingsDep) -> None:
    row = get_harvest(session, harvest_id)
    ensure_owner_or_admin(user, row.owner_id, "harvest")
    job = session.get(Job, row.job_id)
    if job is not None and job.status in ACTIVE_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT, f"harvest {harvest_id} is {job.status}; cancel it first")
    ref = row.artifact_ref
    session.delete(row)
    session.commit()
    if ref is not None:
        artifact_store_from_settings(settings).delete(ref)
