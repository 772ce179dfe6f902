"""Per-process state of the graph routes (decoded-graph and tokenizer caches) and shared lookups."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from spdlab.api.deps import get_or_404
from spdlab.api.graph_cache import GraphCache
from spdlab.api.tokenizer_cache import TokenizerCache
from spdlab.common.artifacts import artifact_store_from_settings
from spdlab.common.graph_tables import Graph
from spdlab.common.models import Decomposition, Prompt


def graph_cache(request: Request) -> GraphCache:
    state = request.app.state
    if getattr(state, "graph_cache", None) is None:
        state.graph_cache = GraphCache(state.settings.graph_cache_bytes)
    return state.graph_cache


def tokenizer_cache(request: Request) -> TokenizerCache:
    state = request.app.state
    if getattr(state, "tokenizer_cache", None) is None:
        state.tokenizer_cache = TokenizerCache(artifact_store_from_settings(state.settings))
    return state.tokenizer_cache


def unprocessable(field: str, message: str, type_: str = "value_error") -> RequestValidationError:
    """A 422 in the platform's shape (`detail` + `errors[{field, reason}]`)."""
    return RequestValidationError([{"loc": ("body", *field.split(".")), "msg": message, "type": type_}])


def get_prompt(session: Session, prompt_id: int) -> Prompt:
    return get_or_404(session, Prompt, prompt_id, "prompt")


def get_graph(session: Session, graph_id: int) -> Graph:
    return get_or_404(session, Graph, graph_id, "graph")


def get_decomposition(session: Session, decomposition_id: int) -> Decomposition:
    return get_or_404(session, Decomposition, decomposition_id, "decomposition")
