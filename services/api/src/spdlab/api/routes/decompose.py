"""`POST /api/v1/decompositions/decompose`: train a decomposition with a `decompose` job.

The body's SPD config is validated here (a 422 names the field, e.g. `config.module_info.0.C`);
the target path must lie under an allowed import root and a dataset must exist and be tokenized.
The worker checks the paths again and reads the files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response, status

from spdlab.api.deps import SessionDep, SettingsDep, UserDep, find_row
from spdlab.api.graph_deps import unprocessable
from spdlab.api.routes.jobs import submit_job
from spdlab.common.contracts.decompose import DatasetData, DecomposeJobRequest, DecomposeParams
from spdlab.common.contracts.jobs import JobOut
from spdlab.common.harvest_tables import Dataset

router = APIRouter(prefix="/api/v1/decompositions", tags=["decompositions"])


def check_target_path(path: str, settings: SettingsDep) -> None:
    resolved = Path(path).expanduser().resolve()
    roots = settings.allowed_import_roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise unprocessable("target.path", f"{path!r} is not under an allowed import root; allowed: "
                                           f"{', '.join(map(str, roots))} (set SPDLAB_IMPORT_ROOTS)")


def check_dataset(session: SessionDep, dataset_id: int) -> None:
    dataset = find_row(session, Dataset, dataset_id)
    if dataset is None:
        raise unprocessable("data.dataset_id", f"dataset {dataset_id} not found")
    if dataset.status != "ready":
        raise unprocessable("data.dataset_id", f"dataset {dataset_id} is not ready (status {dataset.status!r})")


@router.post("/decompose", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def decompose(params: DecomposeParams, response: Response, user: UserDep, session: SessionDep,
              settings: SettingsDep) -> JobOut:
    """Queue a `decompose` job; its result names the new decomposition and the final metrics."""
    check_target_path(params.target.path, settings)
    if isinstance(params.data, DatasetData):
        check_dataset(session, params.data.dataset_id)
    return submit_job(DecomposeJobRequest(kind="decompose", params=params), response, user, session, settings)
