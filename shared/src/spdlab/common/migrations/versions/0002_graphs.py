"""graphs: attribution graphs, interventions; decomposition connectivity and tokenizer

Revision ID: 0002_graphs
Revises: 0001_platform
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_graphs"
down_revision = "0001_platform"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("decompositions") as batch:
        batch.add_column(sa.Column("sources_by_target", JSON, nullable=True))
        batch.add_column(sa.Column("tokenizer_ref", sa.String(500), nullable=True))
    op.create_table(
        "graphs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prompt_id", sa.Integer, sa.ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("decomposition_id", sa.Integer, sa.ForeignKey("decompositions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("graph_type", sa.String(16), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("params_key", sa.String(64), nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("n_nodes", sa.Integer, nullable=False),
        sa.Column("n_edges", sa.Integer, nullable=False),
        sa.Column("n_component_nodes", sa.Integer, nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        _ts("created_at"),
        sa.UniqueConstraint("prompt_id", "params_key", name="uq_graphs_prompt_params"),
    )
    op.create_index("ix_graphs_prompt_id", "graphs", ["prompt_id"])
    op.create_index("ix_graphs_decomposition_id", "graphs", ["decomposition_id"])
    op.create_index("ix_graphs_owner_id", "graphs", ["owner_id"])
    op.create_table(
        "interventions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("graph_id", sa.Integer, sa.ForeignKey("graphs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("params_key", sa.String(64), nullable=False),
        sa.Column("result", JSON, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        _ts("created_at"),
        sa.UniqueConstraint("graph_id", "params_key", name="uq_interventions_graph_params"),
    )
    op.create_index("ix_interventions_graph_id", "interventions", ["graph_id"])
    op.create_index("ix_interventions_owner_id", "interventions", ["owner_id"])


def downgrade() -> None:
    op.drop_table("interventions")
    op.drop_table("graphs")
    with op.batch_alter_table("decompositions") as batch:
        batch.drop_column("tokenizer_ref")
        batch.drop_column("sources_by_target")
