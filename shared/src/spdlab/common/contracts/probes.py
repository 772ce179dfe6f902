"""Contracts of the `probe` job: one component's CI and activation on custom text (fast)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spdlab.common.contracts.ids import RowId


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decomposition_id: RowId
    text: str = Field(min_length=1, max_length=20_000)
    layer: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.]+$", description="canonical layer")
    component_idx: int = Field(ge=0)


class ProbeJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: ClassVar[str] = "gpu"

    kind: Literal["probe"]
    params: ProbeParams


class ProbeResult(BaseModel):
    layer: str
    component_idx: int
    token_ids: list[int]
    tokens: list[str]
    ci: list[float]
    activation: list[float]
