"""Decompositions: list, get, delete (creation comes with the import/decompose jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import func, select

from spdlab.api.deps import OffsetQuery, SessionDep, UserDep, ensure_owner_or_admin, get_or_404
from spdlab.common.contracts.decompositions import DecompositionOut, DecompositionPage
from spdlab.common.models import Decomposition

router = APIRouter(prefix="/api/v1/decompositions", tags=["decompositions"])


def _get(session: SessionDep, decomposition_id: int) -> Decomposition:
    return get_or_404(session, Decomposition, decomposition_id, "decomposition")


@router.get("", response_model=DecompositionPage)
def list_decompositions(
    user: UserDep,
    session: SessionDep,
    owner: Annotated[str | None, Query(pattern=r"^(me|\d{1,18})$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> DecompositionPage:
    query = select(Decomposition)
    if owner is not None:
        query = query.where(Decomposition.owner_id == (user.id if owner == "me" else int(owner)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Decomposition.id.desc()).limit(limit).offset(offset)).all()
    return DecompositionPage(items=[DecompositionOut.model_validate(r) for r in rows], total=total,
                             limit=limit, offset=offset)


@router.get("/{decomposition_id}", response_model=DecompositionOut)
def get_decomposition(decomposition_id: int, user: UserDep, session: SessionDep) -> DecompositionOut:
    return DecompositionOut.model_validate(_get(session, decomposition_id))


@router.delete("/{decomposition_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_decomposition(decomposition_id: int, user: UserDep, session: SessionDep) -> None:
    row = _get(session, decomposition_id)
    ensure_owner_or_admin(user, row.owner_id, "decomposition")
    session.delete(row)
    session.commit()
