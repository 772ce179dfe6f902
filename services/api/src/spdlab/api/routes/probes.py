"""`POST /api/v1/probes`: one component's CI and activation on custom text, as a fast `probe` job
(get-or-compute: an identical probe answers from the stored result)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from spdlab.api.deps import SessionDep, SettingsDep, UserDep
from spdlab.api.graph_deps import get_decomposition, unprocessable
from spdlab.api.routes.jobs import submit_job
from spdlab.common.contracts.jobs import JobOut
from spdlab.common.contracts.probes import ProbeJobRequest, ProbeParams

router = APIRouter(prefix="/api/v1/probes", tags=["components"])


@router.post("", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"model": JobOut, "description": "an identical probe already ran"}})
def create_probe(body: ProbeParams, response: Response, user: UserDep, session: SessionDep,
                 settings: SettingsDep) -> JobOut:
    try:
        get_decomposition(session, body.decomposition_id)
    except HTTPException as exc:
        raise unprocessable("decomposition_id", f"decomposition {body.decomposition_id} not found") from exc
    return submit_job(ProbeJobRequest(kind="probe", params=body), response, user, session, settings)
