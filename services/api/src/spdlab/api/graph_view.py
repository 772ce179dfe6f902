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


def view(graph: GraphArrays, params: ViewParams) -> dict[str, Any]:
    alive = node_survival(graph, params.ci_threshold)
    src, tgt = graph["edge_src"], graph["edge_tgt"]
    column = "edge_val" if params.value == "signed" else "edge_val_abs"
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
    chosen = edge_keep[order]

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
            "value": values[order].tolist(),
            "cross_seq": graph["edge_cross_seq"][chosen].astype(bool).tolist(),
        },
        "stats": {
            "n_edges_stored": graph.n_edges,
            "n_edges_after_filter": len(edge_keep),
            "n_edges_returned": len(chosen),
            "n_edges_cut_by_limit": len(edge_keep) - len(chosen),
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
