"""Users and API keys. A key is shown once; only its sha256 is stored (it is 256 random bits, so a
plain hash is enough and makes lookup a single indexed read)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from spdlab.common.models import ApiKey, User, utcnow

KEY_PREFIX = "spd_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(session: Session, name: str, role: str = "member", max_active_jobs: int | None = None) -> User:
    if role not in ("admin", "member"):
        raise ValueError(f"unknown role {role!r}")
    user = User(name=name, role=role, max_active_jobs=max_active_jobs, disabled=False, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def create_api_key(session: Session, user: User, name: str = "default") -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key (the only time it exists)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(user_id=user.id, name=name, prefix=key[:12], key_hash=hash_key(key), created_at=utcnow())
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> User | None:
    if not key.startswith(KEY_PREFIX):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    now = utcnow()
    # Touch last_used_at at most once a minute: a write per request would serialise on SQLite.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return user


def revoke_key(session: Session, key_row: ApiKey) -> None:
    if key_row.revoked_at is None:
        key_row.revoked_at = utcnow()


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))
