"""Contracts of harvests: the sharded `harvest` job (parent) and its `harvest.shard` children,
harvest views, and the component data views (summaries, detail, bulk)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spdlab.common.contracts.ids import RowId

CorrelationMetric = Literal["precision", "recall", "jaccard", "pmi"]
ComponentKey = Annotated[str, Field(min_length=3, max_length=200, pattern=r"^[A-Za-z0-9_.]+:\d+$")]
MAX_SHARDS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobBrief(BaseModel):
    """A job's state in a harvest view (the parent and each shard)."""

    id: str
    kind: str
    status: str
    progress_current: float | None
    progress_total: float | None
    progress_stage: str | None
    error: dict[str, Any] | None


class HarvestConfigSpec(_Strict):
    """Mirror of the core's `HarvestConfig` (same fields and defaults; the API has no torch)."""

    activation_threshold: float = 0.0
    examples_per_component: int = Field(default=400, ge=0, le=10_000)
    context_tokens_per_side: int = Field(default=20, ge=0, le=512)
    batch_size: int = Field(default=32, ge=1, le=4096)
    top_k_tokens: int = Field(default=40, ge=1, le=1000)
    top_k_correlations: int = Field(default=20, ge=1, le=1000)
    pmi_min_count: float = Field(default=0.0, ge=0.0)
    output_token_stats: bool = True
    seed: int = 0


class ShardedRunParams(_Strict):
    """Params of a sharded run's parent job over a tokenized dataset; each kind adds its `config`."""

    decomposition_id: RowId
    dataset_id: RowId
    n_shards: int = Field(default=1, ge=1, le=MAX_SHARDS)


class HarvestParams(ShardedRunParams):
    config: HarvestConfigSpec = HarvestConfigSpec()


class HarvestJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["harvest"]
    params: HarvestParams


class ShardParams(_Strict):
    """A child of a sharded parent job: everything else is read from the parent's params."""

    parent_job_id: str = Field(min_length=1, max_length=32)
    index: int = Field(ge=0)
    count: int = Field(ge=1, le=MAX_SHARDS)


class HarvestShardJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["harvest.shard"]
    params: ShardParams


class ShardResult(BaseModel):
    index: int
    count: int
    windows: int
    n_tokens: int
    resumed_from: int


class HarvestResult(BaseModel):
    harvest_id: int
    n_tokens: int
    n_components: int
    n_alive: int
    n_shards: int
    merge_s: float


class ShardedRunOut(BaseModel):
    """A sharded run's row with its parent job; each kind adds its own result columns."""

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


class HarvestOut(ShardedRunOut):
    n_components: int | None
    shards: list[JobBrief] = Field(default_factory=list)


class HarvestPage(BaseModel):
    items: list[HarvestOut]
    total: int
    limit: int
    offset: int


class LayerSummary(BaseModel):
    layer: str
    n_components: int
    n_alive: int
    mean_density: float
    max_density: float
    mean_ci: float


class ComponentSummary(BaseModel):
    key: str
    layer: str
    component_idx: int
    firing_count: int
    firing_density: float
    mean_ci: float
    mean_activation: float


class ComponentPage(BaseModel):
    items: list[ComponentSummary]
    total: int
    limit: int
    offset: int


class TokenValue(BaseModel):
    token_id: int
    token: str | None
    value: float


class TokenStatsOut(BaseModel):
    precision: list[TokenValue]
    recall: list[TokenValue]
    pmi_top: list[TokenValue]
    pmi_bottom: list[TokenValue]


class CorrelatedComponent(BaseModel):
    key: str
    layer: str
    component_idx: int
    value: float


class ActivationExampleOut(BaseModel):
    token_ids: list[int]
    tokens: list[str | None]
    ci: list[float]
    activation: list[float]
    firing_offset: int


class ComponentDetail(ComponentSummary):
    n_examples: int
    examples: list[ActivationExampleOut]
    examples_offset: int
    input_tokens: TokenStatsOut
    output_tokens: TokenStatsOut | None
    correlation_metric: CorrelationMetric
    correlated: list[CorrelatedComponent]


class BulkComponentsRequest(_Strict):
    keys: list[ComponentKey] = Field(min_length=1, max_length=100)
    examples_limit: int = Field(default=10, ge=0, le=100)
    correlation_metric: CorrelationMetric = "jaccard"
    correlation_limit: int = Field(default=10, ge=1, le=100)


class BulkComponentsResponse(BaseModel):
    items: list[ComponentDetail]
    missing: list[str]
