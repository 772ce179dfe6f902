"""Server-side view of a stored graph: CI threshold, normalisation, sort and truncation.

Pure numpy over the columns of `spdlab.common.graph_codec.GraphArrays`; every step is a
vectorised pass over the edge table (no per-edge Python). Semantics follow the research app's
display filter, with its silent behaviours made explicit: the number of edges cut by the limit
and the output nodes dropped by top-k are reported in the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from spdlab.common.graph_codec import NODE_COMPONENT, GraphArrays

Normalize = Literal["none", "target", "layer"]
EdgeValue = Literal["signed", "abs"]


@dataclass(frozen=True)
class ViewParams:
    ci_threshold: float = 0.0
    normalize: Normalize = "none"
    edge_limit: int = 1000
    value: EdgeValue = "signed"


@dataclass(frozen=True)
class EdgeIndex:
    """Per-graph precomputation (graphs are immutable, so it is built once per cached graph).

    `order`: edges by descending |value| (stable). |edge_val_abs| == |edge_val|, so one order serves both
    value columns. `min_ci`: per sorted edge, the smallest CI of its component endpoints (+inf when it
    has none), so "both endpoints survive the threshold" is one comparison per edge.
    """

    order: np.ndarray
    min_ci: np.ndarray


def build_index(graph: GraphArrays) -> EdgeIndex:
    order = np.argsort(-np.abs(graph["edge_val"]), kind="stable")
    ci = np.where(graph["node_kind"] == NODE_COMPONENT, graph["node_ci"], np.float32(np.inf)).astype(np.float32)
    src, tgt = graph["edge_src"][order], graph["edge_tgt"][order]
    return EdgeIndex(order=order, min_ci=np.minimum(ci[src], ci[tgt]))


def node_survival(graph: GraphArrays, ci_threshold: float) -> np.ndarray:
    """Embed and output nodes always survive; component nodes need CI > threshold."""
    is_component = graph["node_kind"] == NODE_COMPONENT
    return ~is_component | (graph["node_ci"] > ci_threshold)


def normalise(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Divide each value by the L2 norm of its group; drop values whose group norm is zero."""
    sq = np.bincount(groups, weights=np.square(values, dtype=np.float64), minlength=n_groups)
    norms = np.sqrt(sq)[groups]
    keep = norms > 0
    return (values[keep] / norms[keep]).astype(np.float32), keep


def top_by_magnitude(values: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the `limit` largest |values|, in descending order of |value|."""
    mag = np.abs(values)
    if len(values) > limit:
        part = np.argpartition(-mag, limit - 1)[:limit]
        return part[np.argsort(-mag[part], kind="stable")]
    return np.argsort(-mag, kind="stable")


def view(graph: GraphArrays, params: ViewParams, index: EdgeIndex | None = None) -> dict[str, Any]:
    """The filtered view; with an `index` and no normalisation, a threshold pass over the presorted
    edges replaces the gathers and the partition (same result)."""
    alive = node_survival(graph, params.ci_threshold)
    src, tgt = graph["edge_src"], graph["edge_tgt"]
    column = "edge_val" if params.value == "signed" else "edge_val_abs"
    if index is not None and params.normalize == "none":
        kept = np.flatnonzero(index.min_ci > params.ci_threshold)
        chosen = index.order[kept[: params.edge_limit]]
        values = graph[column][chosen]
        max_abs = float(abs(values[0])) if len(values) else 0.0
        return _result(graph, alive, chosen, values, len(kept), max_abs)
    edge_keep = np.flatnonzero(alive[src] & alive[tgt])
    values = graph[column][edge_keep]

    if params.normalize != "none":
        groups = tgt[edge_keep]
        n_groups = graph.n_nodes
        if params.normalize == "layer":
            groups = graph["node_layer"][groups].astype(np.int64)
            n_groups = int(graph["node_layer"].max(initial=0)) + 1
        values, keep = normalise(values, groups, n_groups)
        edge_keep = edge_keep[keep]

    max_abs = float(np.abs(values).max()) if len(values) else 0.0
    order = top_by_magnitude(values, params.edge_limit)
    return _result(graph, alive, edge_keep[order], values[order], len(edge_keep), max_abs)


def _result(graph: GraphArrays, alive: np.ndarray, chosen: np.ndarray, values: np.ndarray, n_after: int,
            max_abs: float) -> dict[str, Any]:
    src, tgt = graph["edge_src"], graph["edge_tgt"]
    node_rows = np.flatnonzero(alive)
    remap = np.full(graph.n_nodes, -1, dtype=np.int64)
    remap[node_rows] = np.arange(len(node_rows))
    layers: list[str] = graph.meta.get("layers", [])
    is_component = graph["node_kind"][node_rows] == NODE_COMPONENT
    return {
        "nodes": {
            "key": node_keys(graph, node_rows, layers),
            "kind": graph["node_kind"][node_rows].tolist(),
            "ci": graph["node_ci"][node_rows].tolist(),
            "act": graph["node_act"][node_rows].tolist(),
        },
        "edges": {
            "source": remap[src[chosen]].tolist(),
            "target": remap[tgt[chosen]].tolist(),
            "value": values.tolist(),
            "cross_seq": graph["edge_cross_seq"][chosen].astype(bool).tolist(),
        },
        "stats": {
            "n_edges_stored": graph.n_edges,
            "n_edges_after_filter": n_after,
            "n_edges_returned": len(chosen),
            "n_edges_cut_by_limit": n_after - len(chosen),
            "l0_total": int(is_component.sum()),
            "max_abs_value": max_abs,
        },
    }


def node_keys(graph: GraphArrays, rows: np.ndarray, layers: list[str]) -> list[str]:
    """`layer:pos:index` keys (canonical layer names) for the given node rows."""
    layer = graph["node_layer"][rows].tolist()
    pos = graph["node_pos"][rows].tolist()
    idx = graph["node_index"][rows].tolist()
    return [f"{layers[lay]}:{p}:{i}" for lay, p, i in zip(layer, pos, idx, strict=True)]
