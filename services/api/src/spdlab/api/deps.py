"""Request dependencies: settings, a DB session, the authenticated user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request, status
from sqlalchemy.orm import Session

from spdlab.common.db import session_factory
from spdlab.common.models import User
from spdlab.common.settings import Settings
from spdlab.common.users import authenticate


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(settings: Annotated[Settings, Depends(get_app_settings)]) -> Iterator[Session]:
    """Routes commit explicitly; anything left uncommitted is rolled back."""
    with session_factory(settings.effective_database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def current_user(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> User:
    key = x_api_key
    if key is None and authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token:
            key = token.strip()
    if not key:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    user = authenticate(session, key)
    if user is None:
        raise _unauthorized("invalid or revoked API key")
    if session.dirty:
        session.commit()
    request.state.user_id = user.id
    return user


UserDep = Annotated[User, Depends(current_user)]


def require_admin(user: UserDep) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return user


AdminDep = Annotated[User, Depends(require_admin)]


def ensure_owner_or_admin(user: User, owner_id: int, what: str) -> None:
    if user.role != "admin" and user.id != owner_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"only the owner or an admin may modify this {what}")


MAX_ROW_ID = 2**63 - 1  # ids are BIGINT at most; a larger one cannot exist (and the driver would overflow)


def find_row(session: Session, model: Any, row_id: int) -> Any:
    """The row with this client-given id, or None (also for ids no row can have)."""
    return session.get(model, row_id) if 0 < row_id <= MAX_ROW_ID else None


def get_or_404(session: Session, model: Any, row_id: int, what: str) -> Any:
    row = find_row(session, model, row_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {row_id} not found")
    return row


# Pagination offsets are bounded so the database never sees an out-of-range OFFSET (a 422 instead).
OffsetQuery = Annotated[int, Query(ge=0, le=2**31 - 1)]
