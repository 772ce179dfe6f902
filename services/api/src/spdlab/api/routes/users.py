"""Users and API keys. Keys are returned once, at creation."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from spdlab.api.deps import AdminDep, SessionDep, UserDep, find_row, get_or_404
from spdlab.common.contracts.users import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    UserCreate,
    UserCreated,
    UserOut,
)
from spdlab.common.models import ApiKey, User
from spdlab.common.users import create_api_key, create_user, revoke_key

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def _created_key(row: ApiKey, key: str) -> ApiKeyCreated:
    return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), key=key)


def _user(session: SessionDep, user_id: int) -> User:
    return get_or_404(session, User, user_id, "user")


@router.post("", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
def create_user_route(body: UserCreate, admin: AdminDep, session: SessionDep) -> UserCreated:
    try:
        user = create_user(session, body.name, body.role, body.max_active_jobs)
    except IntegrityError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"user name {body.name!r} is taken") from exc
    created = _created_key(*create_api_key(session, user)) if body.with_key else None
    session.commit()
    return UserCreated(user=UserOut.model_validate(user), api_key=created)


@router.get("", response_model=list[UserOut])
def list_users(user: UserDep, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in session.scalars(select(User).order_by(User.id))]


@router.get("/me", response_model=UserOut)
def me(user: UserDep) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/me/keys", response_model=list[ApiKeyOut])
def my_keys(user: UserDep, session: SessionDep) -> list[ApiKeyOut]:
    rows = session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id))
    return [ApiKeyOut.model_validate(r) for r in rows]


@router.post("/me/keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_my_key(body: ApiKeyCreate, user: UserDep, session: SessionDep) -> ApiKeyCreated:
    created = _created_key(*create_api_key(session, user, body.name))
    session.commit()
    return created


@router.post("/{user_id}/keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
def create_key_for(user_id: int, body: ApiKeyCreate, admin: AdminDep, session: SessionDep) -> ApiKeyCreated:
    created = _created_key(*create_api_key(session, _user(session, user_id), body.name))
    session.commit()
    return created


def _revoke(session: SessionDep, user: User, owner_id: int, key_id: int) -> ApiKeyOut:
    if user.role != "admin" and user.id != owner_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the key's owner or an admin may revoke it")
    row = find_row(session, ApiKey, key_id)
    if row is None or row.user_id != owner_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"key {key_id} not found")
    revoke_key(session, row)
    session.commit()
    return ApiKeyOut.model_validate(row)


@router.delete("/me/keys/{key_id}", response_model=ApiKeyOut)
def revoke_my_key(key_id: int, user: UserDep, session: SessionDep) -> ApiKeyOut:
    return _revoke(session, user, user.id, key_id)


@router.delete("/{user_id}/keys/{key_id}", response_model=ApiKeyOut)
def revoke_key_of(user_id: int, key_id: int, user: UserDep, session: SessionDep) -> ApiKeyOut:
    return _revoke(session, user, user_id, key_id)
