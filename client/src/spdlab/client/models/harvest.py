"""Models of datasets, harvests, component data, probes and dataset attributions (tolerant views)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from spdlab.client.models._base import ApiModel


class Dataset(ApiModel):
    id: str
    name: str | None = None
    decomposition_id: str | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    context_length: int | None = None
    status: str | None = None
    n_windows: int | None = None
    n_documents: int | None = None
    error: str | None = None
    job_id: str | None = None
    created_at: datetime | None = None


class DatasetPage(ApiModel):
    items: list[Dataset]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class JobBrief(ApiModel):
    id: str
    kind: str | None = None
    status: str | None = None
    progress_current: float | None = None
    progress_total: float | None = None
    error: dict[str, Any] | None = None


class Harvest(ApiModel):
    id: str
    decomposition_id: str | None = None
    dataset_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    n_shards: int | None = None
    status: str | None = None
    n_tokens: int | None = None
    n_components: int | None = None
    job_id: str | None = None
    job: JobBrief | None = None
    shards: list[JobBrief] = Field(default_factory=list)


class HarvestPage(ApiModel):
    items: list[Harvest]
    total: int | None = None


class LayerSummary(ApiModel):
    layer: str
    n_components: int
    n_alive: int
    mean_density: float
    max_density: float
    mean_ci: float


class ComponentSummary(ApiModel):
    key: str
    layer: str
    component_idx: int
    firing_count: int
    firing_density: float
    mean_ci: float
    mean_activation: float


class ComponentPage(ApiModel):
    items: list[ComponentSummary]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class ComponentDetail(ComponentSummary):
    n_examples: int = 0
    examples: list[dict[str, Any]] = Field(default_factory=list)
    input_tokens: dict[str, Any] = Field(default_factory=dict)
    output_tokens: dict[str, Any] | None = None
    correlation_metric: str | None = None
    correlated: list[dict[str, Any]] = Field(default_factory=list)


class BulkComponents(ApiModel):
    items: list[ComponentDetail]
    missing: list[str] = Field(default_factory=list)


class DatasetAttributionRun(ApiModel):
    id: str
    decomposition_id: str | None = None
    dataset_id: str | None = None
    status: str | None = None
    n_tokens: int | None = None
    job_id: str | None = None


class AttributionQuery(ApiModel):
    key: str
    direction: str
    metric: str
    sign: str
    items: list[dict[str, Any]]
