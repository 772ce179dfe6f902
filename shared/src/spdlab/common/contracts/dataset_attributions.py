"""Contracts of dataset attributions (spec §5): the sharded `dataset_attributions` job and its
`dataset_attributions.shard` children, run views and top-k queries."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spdlab.common.contracts.harvest import ShardedRunOut, ShardedRunParams, ShardParams

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


class DatasetAttributionParams(ShardedRunParams):
    config: AttributionConfigSpec = AttributionConfigSpec()


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


class DatasetAttributionOut(ShardedRunOut):
    """A dataset attribution run: the shared run columns only (results are per-component rows)."""


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
