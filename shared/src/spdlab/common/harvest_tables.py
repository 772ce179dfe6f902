"""Tables of datasets, harvests, component statistics, dataset attributions and job shards
(revision 0003_harvest).

Per-component rows hold what the API shows (densities, means, top token lists, top correlations,
activation examples as compact JSON); the large matrices (co-occurrence `[C,C]`, token counts
`[C,V]`, attribution sums) stay in the artifact store, referenced by `artifact_ref`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from spdlab.common.models import Base, JSONType, UTCDateTime, utcnow


class Dataset(Base):
    """A source tokenized once for one decomposition's tokenizer into fixed-length windows."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    decomposition_id: Mapped[int] = mapped_column(ForeignKey("decompositions.id", ondelete="CASCADE"), index=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSONType)
    context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_windows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | ready | failed
    n_windows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_documents: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_tokens_dropped: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(4000), nullable=True)
    artifact_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobShard(Base):
    """One shard of a sharded parent job: the child job and the outcome its handler recorded.

    The outcome is written by the shard handler itself before it returns (the runner writes the
    child's job status only afterwards), so "all shards done" is decided on these rows without a race.
    """

    __tablename__ = "job_shards"

    parent_job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    shard_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard_count: Mapped[int] = mapped_column(Integer)
    child_job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)  # succeeded | failed | cancelled
    error: Mapped[str | None] = mapped_column(String(4000), nullable=True)
    windows: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ShardedRunColumns:
    """What a sharded run over a dataset records (harvests and dataset attributions alike): its
    inputs, its parent job, and where the merged result lives."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    decomposition_id: Mapped[int] = mapped_column(ForeignKey("decompositions.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    n_shards: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    n_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    artifact_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Harvest(ShardedRunColumns, Base):
    __tablename__ = "harvests"

    n_components: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ComponentStat(Base):
    """One component of a finished harvest. JSON shapes (token ids, not strings; the API decodes):

    `input_tokens`/`output_tokens`: `{"precision": [[tok, v], ...], "recall": ..., "pmi_top": ...,
    "pmi_bottom": ...}`; `correlations`: `{"precision": [["layer:idx", v], ...], "recall", "jaccard",
    "pmi"}`; `examples`: `[{"tokens": [...], "ci": [...], "act": [...], "offset": n}, ...]`.
    """

    __tablename__ = "component_stats"
    __table_args__ = (
        UniqueConstraint("harvest_id", "layer", "component_idx", name="uq_component_stats_key"),
        Index("ix_component_stats_density", "harvest_id", "layer", "firing_density"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    harvest_id: Mapped[int] = mapped_column(ForeignKey("harvests.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(200))
    component_idx: Mapped[int] = mapped_column(Integer)
    firing_count: Mapped[int] = mapped_column(BigInteger)
    firing_density: Mapped[float] = mapped_column(Float)
    mean_ci: Mapped[float] = mapped_column(Float)
    mean_activation: Mapped[float] = mapped_column(Float)
    input_tokens: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    output_tokens: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    correlations: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    examples: Mapped[list[Any]] = mapped_column(JSONType, default=list, deferred=True)
    n_examples: Mapped[int] = mapped_column(Integer, default=0)


class DatasetAttributionRun(ShardedRunColumns, Base):
    """Dataset attributions of a decomposition over a dataset; raw sums live in the artifact store."""

    __tablename__ = "dataset_attributions"


class ComponentAttribution(Base):
    """Precomputed top-k sources and targets of one component (both metrics, both signs), so the
    torch-free API answers top-k queries from a row: `{"sources"|"targets": {"attr"|"attr_abs":
    {"positive"|"negative": [["layer:idx", value], ...]}}}`."""

    __tablename__ = "component_attributions"
    __table_args__ = (UniqueConstraint("run_id", "layer", "component_idx", name="uq_component_attributions_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("dataset_attributions.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(String(200))
    component_idx: Mapped[int] = mapped_column(Integer)
    tops: Mapped[dict[str, Any]] = mapped_column(JSONType)
