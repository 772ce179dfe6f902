"""Tables of attribution graphs and interventions (revision 0002_graphs).

A graph row holds the columnar codec blob (`graph_codec`), never JSON per edge. `(prompt_id,
params_key)` is unique for every graph type, so an identical request never computes twice (the
research code's uniqueness allowed duplicates through NULL-distinct columns).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from spdlab.common.models import Base, JSONType, UTCDateTime, utcnow

GRAPH_TYPES = ("standard", "manual", "optimized")


class Graph(Base):
    __tablename__ = "graphs"
    __table_args__ = (UniqueConstraint("prompt_id", "params_key", name="uq_graphs_prompt_params"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    decomposition_id: Mapped[int] = mapped_column(ForeignKey("decompositions.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    graph_type: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    params_key: Mapped[str] = mapped_column(String(64))
    blob: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    n_nodes: Mapped[int] = mapped_column(Integer)
    n_edges: Mapped[int] = mapped_column(Integer)
    n_component_nodes: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Intervention(Base):
    __tablename__ = "interventions"
    __table_args__ = (UniqueConstraint("graph_id", "params_key", name="uq_interventions_graph_params"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph_id: Mapped[int] = mapped_column(ForeignKey("graphs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    params_key: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
