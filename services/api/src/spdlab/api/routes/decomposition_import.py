"""`POST /api/v1/decompositions/import`: register a research-code run or spdlab checkpoint directory
(under an allowed import root) through a `decomposition.import` job."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from spdlab.api.deps import SessionDep, SettingsDep, UserDep
from spdlab.api.graph_deps import unprocessable
from spdlab.api.routes.jobs import submit_job
from spdlab.common.contracts.graphs import DecompositionImportJobRequest, DecompositionImportParams
from spdlab.common.contracts.jobs import JobOut

router = APIRouter(prefix="/api/v1/decompositions", tags=["decompositions"])


def check_path(path: str, settings: SettingsDep) -> None:
    """Same rule as the worker (which checks again): inside an allowed root. Existence is the worker's
    business, since the API may not share its filesystem."""
    from pathlib import Path

    resolved = Path(path).expanduser().resolve()
    roots = settings.allowed_import_roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise unprocessable("path", f"{path!r} is not under an allowed import root; allowed: "
                                    f"{', '.join(map(str, roots))} (set SPDLAB_IMPORT_ROOTS)")


@router.post("/import", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def import_decomposition(params: DecompositionImportParams, response: Response, user: UserDep,
                         session: SessionDep, settings: SettingsDep) -> JobOut:
    check_path(params.path, settings)
    return submit_job(DecompositionImportJobRequest(kind="decomposition.import", params=params), response, user,
                      session, settings)
