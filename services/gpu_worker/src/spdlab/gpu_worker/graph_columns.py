"""The core's `AttributionGraph.to_numpy_columns()` mapped onto the stored codec columns.

Numpy only (no torch), so it is testable without a model. Node kinds come from the layer names
(`embed`, `output`, everything else a component layer); optional adversarial-PGD output columns,
which the codec does not have, go into `meta` (the output table is small: top-k per position).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spdlab.common.graph_codec import ALL_COLUMNS, NODE_COMPONENT, NODE_EMBED, NODE_OUTPUT, GraphArrays

_RENAMES = {
    "node_layer": "node_layer", "node_pos": "node_pos", "node_index": "node_index", "node_ci": "node_ci",
    "node_activation": "node_act",
    "edge_source": "edge_src", "edge_target": "edge_tgt", "edge_strength": "edge_val",
    "edge_strength_abs": "edge_val_abs", "edge_is_cross_seq": "edge_cross_seq",
    "output_pos": "out_pos", "output_token_id": "out_token", "output_ci_masked_prob": "out_ci_masked_prob",
    "output_ci_masked_logit": "out_ci_masked_logit", "output_target_prob": "out_target_prob",
    "output_target_logit": "out_target_logit",
}


def node_kinds(layer_index: np.ndarray, layer_names: list[str]) -> np.ndarray:
    per_layer = np.array([NODE_EMBED if n == "embed" else NODE_OUTPUT if n == "output" else NODE_COMPONENT
                          for n in layer_names], dtype=np.uint8)
    return per_layer[layer_index]


def graph_arrays(cols: dict[str, np.ndarray], extra_meta: dict[str, Any] | None = None) -> GraphArrays:
    layers = [str(n) for n in cols["layer_names"]]
    out = {dst: np.asarray(cols[src]).astype(ALL_COLUMNS[dst]) for src, dst in _RENAMES.items()}
    out["node_kind"] = node_kinds(np.asarray(cols["node_layer"]), layers)
    meta: dict[str, Any] = {
        "layers": layers,
        "token_ids": np.asarray(cols["token_ids"]).tolist(),
        "n_positions": int(cols["meta_n_positions"]),
        "output_truncation": {
            "prob_threshold": float(cols["meta_output_prob_threshold"]),
            "max_per_pos": int(cols["meta_output_max_per_pos"]),
            "n_candidates": int(cols["meta_output_n_candidates"]),
            "n_kept": int(cols["meta_output_n_kept"]),
            "capped_positions": np.asarray(cols["meta_output_capped_positions"]).tolist(),
        },
        **(extra_meta or {}),
    }
    for name in ("output_adv_pgd_prob", "output_adv_pgd_logit"):
        if name in cols:
            meta[name.removeprefix("output_")] = np.asarray(cols[name], dtype=np.float32).tolist()
    return GraphArrays(columns=out, meta=meta)


def graph_counts(arrays: GraphArrays) -> dict[str, int]:
    kinds = arrays["node_kind"]
    return {
        "n_nodes": arrays.n_nodes,
        "n_edges": arrays.n_edges,
        "n_component_nodes": int((kinds == NODE_COMPONENT).sum()),
        "n_output_nodes": int((kinds == NODE_OUTPUT).sum()),
    }
