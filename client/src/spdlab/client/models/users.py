"""User and API-key models."""

from __future__ import annotations

from datetime import datetime

from spdlab.client.models._base import ApiModel


class User(ApiModel):
    id: str
    name: str
    role: str
    max_active_jobs: int | None = None
    disabled: bool = False
    created_at: datetime | None = None


class ApiKey(ApiModel):
    """A key's public record; `key` holds the secret only in the answer that created it."""

    id: str
    user_id: str | None = None
    name: str | None = None
    prefix: str | None = None
    key: str | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class UserCreated(ApiModel):
    """Answer to creating a user: the user and, unless declined, a first key (shown once)."""

    user: User
    api_key: ApiKey | None = None
