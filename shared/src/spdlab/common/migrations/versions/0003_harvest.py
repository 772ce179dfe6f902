"""harvest: datasets, job shards, harvests, component statistics, dataset attributions

Revision ID: 0003_harvest
Revises: 0002_graphs
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_harvest"
down_revision = "0002_graphs"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(name: str, target: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer, sa.ForeignKey(target, ondelete="CASCADE"), nullable=nullable)


def _job_fk(name: str) -> sa.Column:
    return sa.Column(name, sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _fk("decomposition_id", "decompositions.id"),
        sa.Column("source", JSON, nullable=False),
        sa.Column("context_length", sa.Integer, nullable=True),
        sa.Column("max_windows", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_windows", sa.Integer, nullable=True),
        sa.Column("n_documents", sa.Integer, nullable=True),
        sa.Column("n_tokens_dropped", sa.Integer, nullable=True),
        sa.Column("error", sa.String(4000), nullable=True),
        sa.Column("artifact_ref", sa.String(500), nullable=True),
        sa.Column("job_id", sa.String(32), nullable=True),
        _ts("created_at"),
    )
    op.create_index("ix_datasets_owner_id", "datasets", ["owner_id"])
    op.create_index("ix_datasets_decomposition_id", "datasets", ["decomposition_id"])
    op.create_index("ix_datasets_job_id", "datasets", ["job_id"])

    op.create_table(
        "job_shards",
        sa.Column("parent_job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("shard_index", sa.Integer, primary_key=True),
        sa.Column("shard_count", sa.Integer, nullable=False),
        _job_fk("child_job_id"),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("error", sa.String(4000), nullable=True),
        sa.Column("windows", sa.Integer, nullable=True),
    )
    op.create_index("ix_job_shards_child_job_id", "job_shards", ["child_job_id"])

    run_columns = lambda: [  # noqa: E731  (same columns for both sharded run tables)
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        _fk("decomposition_id", "decompositions.id"),
        _fk("dataset_id", "datasets.id"),
        sa.Column("config", JSON, nullable=False),
        sa.Column("n_shards", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_tokens", sa.BigInteger, nullable=True),
        sa.Column("artifact_ref", sa.String(500), nullable=True),
        _job_fk("job_id"),
        _ts("created_at"),
        _ts("finished_at", nullable=True),
    ]
    op.create_table("harvests", *run_columns(), sa.Column("n_components", sa.Integer, nullable=True),
                    sa.UniqueConstraint("job_id", name="uq_harvests_job_id"))
    op.create_table("dataset_attributions", *run_columns(),
                    sa.UniqueConstraint("job_id", name="uq_dataset_attributions_job_id"))
    for table in ("harvests", "dataset_attributions"):
        for col in ("owner_id", "decomposition_id", "dataset_id"):
            op.create_index(f"ix_{table}_{col}", table, [col])

    op.create_table(
        "component_stats",
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("harvest_id", "harvests.id"),
        sa.Column("layer", sa.String(200), nullable=False),
        sa.Column("component_idx", sa.Integer, nullable=False),
        sa.Column("firing_count", sa.BigInteger, nullable=False),
        sa.Column("firing_density", sa.Float, nullable=False),
        sa.Column("mean_ci", sa.Float, nullable=False),
        sa.Column("mean_activation", sa.Float, nullable=False),
        sa.Column("input_tokens", JSON, nullable=False),
        sa.Column("output_tokens", JSON, nullable=True),
        sa.Column("correlations", JSON, nullable=False),
        sa.Column("examples", JSON, nullable=False),
        sa.Column("n_examples", sa.Integer, nullable=False),
        sa.UniqueConstraint("harvest_id", "layer", "component_idx", name="uq_component_stats_key"),
    )
    op.create_index("ix_component_stats_density", "component_stats", ["harvest_id", "layer", "firing_density"])

    op.create_table(
        "component_attributions",
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("run_id", "dataset_attributions.id"),
        sa.Column("layer", sa.String(200), nullable=False),
        sa.Column("component_idx", sa.Integer, nullable=False),
        sa.Column("tops", JSON, nullable=False),
        sa.UniqueConstraint("run_id", "layer", "component_idx", name="uq_component_attributions_key"),
    )


def downgrade() -> None:
    for table in ("component_attributions", "component_stats", "dataset_attributions", "harvests",
                  "job_shards", "datasets"):
        op.drop_table(table)
