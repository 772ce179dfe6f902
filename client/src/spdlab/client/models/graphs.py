"""Prompt, graph and intervention models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from spdlab.client.models._base import ApiModel
from spdlab.client.models.jobs import Job


class Prompt(ApiModel):
    id: str
    decomposition_id: str
    owner_id: str | None = None
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    created_at: datetime | None = None


class PromptPage(ApiModel):
    items: list[Prompt]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class GraphSummary(ApiModel):
    id: str
    prompt_id: str
    decomposition_id: str | None = None
    owner_id: str | None = None
    graph_type: str
    params: dict[str, Any] = Field(default_factory=dict)
    n_nodes: int = 0
    n_edges: int = 0
    n_component_nodes: int = 0
    summary: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    created_at: datetime | None = None


class GraphView(GraphSummary):
    """A filtered graph: columnar `nodes` (key, kind, ci, act), `edges` (source, target indexing
    nodes, value, cross_seq), the top-k `outputs` table and `stats` (including edges cut by the limit)."""

    prompt_token_ids: list[int] = Field(default_factory=list)
    prompt_tokens: list[str] = Field(default_factory=list)
    nodes: dict[str, list[Any]] = Field(default_factory=dict)
    edges: dict[str, list[Any]] = Field(default_factory=dict)
    outputs: dict[str, list[Any]] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)


class GraphSubmission(ApiModel):
    """`stored`: every graph exists (`graphs`); else `job` computes the missing ones."""

    status: str
    graphs: list[GraphSummary] = Field(default_factory=list)
    job: Job | None = None


class Intervention(ApiModel):
    id: str
    graph_id: str
    owner_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    created_at: datetime | None = None


class InterventionSubmission(ApiModel):
    status: str
    intervention: Intervention | None = None
    job: Job | None = None
