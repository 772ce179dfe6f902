"""Contracts of dataset attributions (spec §5): the sharded `dataset_attributions` job and its
`dataset_attributions.shard` children, run views and top-k queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spdlab.common.contracts.harvest import MAX_SHARDS, JobBrief, ShardParams

AttributionMetric = Literal["attr", "attr_abs"]
Direction = Literal["sources", "targets"]
Sign = Literal["positive", "negative"]
STORED_TOP_K = 50  # top-k lists precomputed per component, direction, metric and sign


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttributionConfigSpec(_Strict):
    """Mirror of the core's `DatasetAttributionConfig`."""

    batch_size: int = Field(default=32, ge=1, le=4096)
    ci_threshold: float = 0.0
    use_delta: bool = False
    max_chunk_bytes: int = Field(default=256 * 2**20, ge=1)


class DatasetAttributionParams(_Strict):
    decomposition_id: int = Field(ge=1)
    dataset_id: int = Field(ge=1)
    config: AttributionConfigSpec = AttributionConfigSpec()
    n_shards: int = Field(default=1, ge=1, le=MAX_SHARDS)


class DatasetAttributionJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["dataset_attributions"]
    params: DatasetAttributionParams


class DatasetAttributionShardJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["dataset_attributions.shard"]
    params: ShardParams


class DatasetAttributionResult(BaseModel):
    run_id: int
    n_tokens: int
    n_shards: int
    merge_s: float


class DatasetAttributionOut(BaseModel):
    id: int
    owner_id: int
    decomposition_id: int
    dataset_id: int
    config: dict[str, Any]
    n_shards: int
    status: str
    n_tokens: int | None
    artifact_ref: str | None
    job_id: str
    created_at: datetime
    finished_at: datetime | None
    job: JobBrief | None = None


class AttributionEntryOut(BaseModel):
    key: str
    layer: str
    index: int
    value: float


class AttributionQueryOut(BaseModel):
    key: str
    direction: Direction
    metric: AttributionMetric
    sign: Sign
    items: list[AttributionEntryOut]
