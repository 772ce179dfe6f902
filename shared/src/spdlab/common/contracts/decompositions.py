"""Decomposition views (creation arrives with import/decompose jobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class DecompositionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    name: str
    source: str
    status: str
    config: dict[str, Any]
    summary: dict[str, Any]
    artifact_ref: str | None
    created_at: datetime


class DecompositionPage(BaseModel):
    items: list[DecompositionOut]
    total: int
    limit: int
    offset: int
