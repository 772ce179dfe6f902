"""Decomposition models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from spdlab.client.models._base import ApiModel


class Decomposition(ApiModel):
    id: str
    name: str | None = None
    owner_id: str | None = None
    source: str | None = None
    status: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    artifact_ref: str | None = None
    created_at: datetime | None = None


class DecompositionPage(ApiModel):
    items: list[Decomposition]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None
