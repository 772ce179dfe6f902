"""The run row (`harvests`, `dataset_attributions`) of a sharded parent job: created by the API on
submit, or by the worker for a job submitted through `/jobs`, whichever comes first."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spdlab.common.harvest_tables import DatasetAttributionRun, Harvest
from spdlab.common.models import Job

RunRow = Harvest | DatasetAttributionRun


class RunParams(Protocol):
    """What the parent job's params of a sharded run have in common."""

    decomposition_id: int
    dataset_id: int
    n_shards: int
    config: BaseModel


def get_or_create_run_row(session: Session, table: type[RunRow], job: Job, params: RunParams, status: str) -> Any:
    """The job's run row; a new one gets `status`. Safe against a concurrent insert of the same row
    (unique `job_id`). The caller commits."""
    row = session.scalar(select(table).where(table.job_id == job.id))
    if row is not None:
        return row
    row = table(owner_id=job.owner_id, decomposition_id=params.decomposition_id, dataset_id=params.dataset_id,
                config=params.config.model_dump(mode="json"), n_shards=params.n_shards, status=status,
                job_id=job.id)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(table).where(table.job_id == job.id))
        assert row is not None
    return row
