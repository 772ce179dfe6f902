"""Health and readiness answers."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from spdlab.client.models._base import ApiModel


class Health(ApiModel):
    """`/healthz` answers `status`; `/readyz` answers `ready` and per-dependency `checks`."""

    status: str | None = None
    ready: bool | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
