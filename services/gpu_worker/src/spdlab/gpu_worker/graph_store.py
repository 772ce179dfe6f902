"""Idempotent writes of graph and intervention rows: a retried attempt finds the row by its key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spdlab.common.db import session_scope
from spdlab.common.events import append_event
from spdlab.common.graph_codec import GraphArrays, encode
from spdlab.common.graph_tables import Graph, Intervention
from spdlab.common.models import Job, Prompt
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.gpu_worker.graph_columns import graph_counts


def job_owner(ctx: JobContext) -> int:
    with session_scope(ctx.settings) as session:
        owner = session.scalar(select(Job.owner_id).where(Job.id == ctx.job_id))
    if owner is None:
        raise JobFailedError(f"job {ctx.job_id} disappeared", "job_missing")
    return int(owner)


def load_prompt(ctx: JobContext, prompt_id: int) -> tuple[int, list[int]]:
    """(decomposition id, token ids) of a prompt; a deleted prompt fails the job."""
    with session_scope(ctx.settings) as session:
        prompt = session.get(Prompt, prompt_id)
        if prompt is None:
            raise JobFailedError(f"prompt {prompt_id} does not exist (deleted?)", "prompt_missing")
        return prompt.decomposition_id, list(prompt.token_ids)


def existing_graph_ids(session: Session, prompt_id: int, keys: list[str]) -> dict[str, int]:
    rows = session.execute(
        select(Graph.params_key, Graph.id).where(Graph.prompt_id == prompt_id, Graph.params_key.in_(keys))
    ).all()
    return {k: i for k, i in rows}


def store_graph(
    ctx: JobContext, *, prompt_id: int, decomposition_id: int, owner_id: int, graph_type: str,
    params: dict[str, Any], key: str, arrays: GraphArrays, summary: dict[str, Any],
) -> tuple[int, bool]:
    """Insert one graph; (id, created). A concurrent or earlier identical row wins."""
    counts = graph_counts(arrays)
    row = Graph(
        prompt_id=prompt_id, decomposition_id=decomposition_id, owner_id=owner_id, graph_type=graph_type,
        params=params, params_key=key, blob=encode(arrays), n_nodes=counts["n_nodes"],
        n_edges=counts["n_edges"], n_component_nodes=counts["n_component_nodes"],
        summary={**counts, **summary}, job_id=ctx.job_id,
    )
    with session_scope(ctx.settings) as session:
        try:
            with session.begin_nested():
                session.add(row)
            return row.id, True
        except IntegrityError:
            pass
    with session_scope(ctx.settings) as session:
        found = existing_graph_ids(session, prompt_id, [key])
    if key not in found:
        raise JobFailedError("graph row could not be written (its prompt was deleted?)", "store_failed")
    return found[key], False


def store_intervention(
    ctx: JobContext, *, graph_id: int, owner_id: int, params: dict[str, Any], key: str, result: dict[str, Any]
) -> int:
    with session_scope(ctx.settings) as session:
        try:
            with session.begin_nested():
                row = Intervention(graph_id=graph_id, owner_id=owner_id, params=params, params_key=key,
                                   result=result, job_id=ctx.job_id)
                session.add(row)
            return row.id
        except IntegrityError:
            pass
    with session_scope(ctx.settings) as session:
        found = session.scalar(
            select(Intervention.id).where(Intervention.graph_id == graph_id, Intervention.params_key == key)
        )
    if found is None:
        raise JobFailedError("intervention row could not be written (its graph was deleted?)", "store_failed")
    return int(found)


def emit_event(ctx: JobContext, type_: str, data: dict[str, Any]) -> None:
    """A typed job event (e.g. `ci_snapshot`) for SSE followers; best effort like progress."""
    try:
        with session_scope(ctx.settings) as session:
            append_event(session, ctx.job_id, type_, data)
    except Exception:  # progress-like data: never fail the job over it
        pass
