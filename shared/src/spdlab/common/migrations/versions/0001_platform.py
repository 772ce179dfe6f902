"""platform backbone: users, api_keys, decompositions, prompts, jobs, job_events, workers

Revision ID: 0001_platform
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_platform"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("max_active_jobs", sa.Integer, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.text("false")),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        _ts("created_at", nullable=False),
        _ts("last_used_at"),
        _ts("revoked_at"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "decompositions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("artifact_ref", sa.String(500), nullable=True),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_decompositions_owner_id", "decompositions", ["owner_id"])
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "decomposition_id",
            sa.Integer,
            sa.ForeignKey("decompositions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("token_ids", JSON, nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_prompts_decomposition_id", "prompts", ["decomposition_id"])
    op.create_index("ix_prompts_owner_id", "prompts", ["owner_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("params_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress_current", sa.Float, nullable=True),
        sa.Column("progress_total", sa.Float, nullable=True),
        sa.Column("progress_stage", sa.String(200), nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("result_ref", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        _ts("created_at", nullable=False),
        _ts("dispatched_at"),
        _ts("started_at"),
        _ts("finished_at"),
        _ts("heartbeat_at"),
    )
    op.create_index("ix_jobs_status_kind", "jobs", ["status", "kind"])
    op.create_index("ix_jobs_owner_status", "jobs", ["owner_id", "status"])
    op.create_index("ix_jobs_params_key", "jobs", ["kind", "params_key", "status"])
    active = sa.text("status IN ('queued', 'running')")
    op.create_index(
        "uq_jobs_active_params",
        "jobs",
        ["kind", "params_key"],
        unique=True,
        postgresql_where=active,
        sqlite_where=active,
    )
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", JSON, nullable=False),
        _ts("created_at", nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        _ts("started_at", nullable=False),
        _ts("last_seen_at", nullable=False),
    )
    op.create_index("ix_workers_queue", "workers", ["queue"])


def downgrade() -> None:
    for table in ("workers", "job_events", "jobs", "prompts", "decompositions", "api_keys", "users"):
        op.drop_table(table)
