"""Datasets: register a local file / `save_to_disk` directory / the demo corpus for a decomposition
(tokenized once by a `dataset.tokenize` job), list, get, delete.

The API checks what it can synchronously (path under an allowed import root, exists, extension
fits the kind); the worker validates the content and fails the job with `file:line:col`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import func, select

from spdlab.api.deps import OffsetQuery, SessionDep, SettingsDep, UserDep, ensure_owner_or_admin, get_or_404
from spdlab.api.graph_deps import get_decomposition, unprocessable
from spdlab.api.routes.jobs import submit_job
from spdlab.common.artifacts import artifact_store_from_settings
from spdlab.common.contracts.datasets import (
    FILE_EXTENSIONS,
    DatasetCreate,
    DatasetOut,
    DatasetPage,
    DatasetTokenizeJobRequest,
    DatasetTokenizeParams,
)
from spdlab.common.harvest_tables import Dataset
from spdlab.common.models import ACTIVE_STATUSES, Job
from spdlab.common.settings import Settings

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


def check_source_path(source: object, settings: Settings) -> None:
    """Allowed root, existence and file type of a file-backed source (422 naming `source.path`)."""
    kind = getattr(source, "kind", "demo")
    raw = getattr(source, "path", None)
    if raw is None:
        return
    path = Path(raw).expanduser().resolve()
    roots = settings.allowed_import_roots()
    if not any(path == r or path.is_relative_to(r) for r in roots):
        raise unprocessable("source.path", f"{raw!r} is not under an allowed root; allowed: "
                                           f"{', '.join(map(str, roots))} (set SPDLAB_IMPORT_ROOTS)")
    if not path.exists():
        raise unprocessable("source.path", f"{raw!r}: no such file or directory")
    if kind == "arrow_dir" and not path.is_dir():
        raise unprocessable("source.path", f"{raw!r}: a save_to_disk directory is expected, got a file")
    if kind == "parquet" and path.is_dir():
        return
    if path.is_dir():
        raise unprocessable("source.path", f"{raw!r}: a {kind} file is expected, got a directory")
    allowed = FILE_EXTENSIONS.get(kind, ())
    if allowed and path.suffix.lower() not in allowed:
        raise unprocessable("source.path", f"{raw!r}: a {kind} source needs one of the extensions {list(allowed)}")


def dataset_out(session: SessionDep, row: Dataset) -> DatasetOut:
    """The row, with a job that ended before the handler could mark the row reflected in it."""
    out = DatasetOut.model_validate(row)
    if row.status in ACTIVE_STATUSES and row.job_id is not None:
        job = session.get(Job, row.job_id)
        if job is not None and job.status in ("failed", "cancelled"):
            message = (job.error or {}).get("message")
            out = out.model_copy(update={"status": job.status, "error": message})
    return out


@router.post("", response_model=DatasetOut, status_code=status.HTTP_202_ACCEPTED)
def create_dataset(body: DatasetCreate, response: Response, user: UserDep, session: SessionDep,
                   settings: SettingsDep) -> DatasetOut:
    try:
        get_decomposition(session, body.decomposition_id)
    except HTTPException as exc:
        raise unprocessable("decomposition_id", f"decomposition {body.decomposition_id} not found") from exc
    check_source_path(body.source, settings)
    source = body.source.model_dump(mode="json")
    if "path" in source:
        source["path"] = str(Path(source["path"]).expanduser().resolve())
    row = Dataset(owner_id=user.id, name=body.name, decomposition_id=body.decomposition_id, source=source,
                  context_length=body.context_length, max_windows=body.max_windows, status="queued")
    session.add(row)
    session.commit()
    job = submit_job(DatasetTokenizeJobRequest(kind="dataset.tokenize",
                                               params=DatasetTokenizeParams(dataset_id=row.id)),
                     Response(), user, session, settings)
    row.job_id = job.id
    session.commit()
    response.headers["Location"] = f"/api/v1/datasets/{row.id}"
    return dataset_out(session, row)


@router.get("", response_model=DatasetPage)
def list_datasets(
    user: UserDep,
    session: SessionDep,
    decomposition_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    owner: Annotated[str | None, Query(pattern=r"^(me|\d{1,18})$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> DatasetPage:
    query = select(Dataset)
    if decomposition_id is not None:
        query = query.where(Dataset.decomposition_id == decomposition_id)
    if owner is not None:
        query = query.where(Dataset.owner_id == (user.id if owner == "me" else int(owner)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Dataset.id.desc()).limit(limit).offset(offset)).all()
    return DatasetPage(items=[dataset_out(session, r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: int, user: UserDep, session: SessionDep) -> DatasetOut:
    return dataset_out(session, get_or_404(session, Dataset, dataset_id, "dataset"))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: int, user: UserDep, session: SessionDep, settings: SettingsDep) -> None:
    row = get_or_404(session, Dataset, dataset_id, "dataset")
    ensure_owner_or_admin(user, row.owner_id, "dataset")
    ref = row.artifact_ref
    session.delete(row)
    session.commit()
    if ref is not None:
        artifact_store_from_settings(settings).delete(ref)
