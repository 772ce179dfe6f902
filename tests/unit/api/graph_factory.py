"""Random graphs in the stored columnar layout, for tests and benchmarks."""

from __future__ import annotations

import numpy as np

from spdlab.common.graph_codec import NODE_COMPONENT, NODE_EMBED, NODE_OUTPUT, GraphArrays

LAYERS = ["embed", "0.attn.q", "0.attn.k", "0.attn.v", "0.attn.o", "0.mlp.up", "0.mlp.down", "output"]


def random_graph(n_edges: int, n_pos: int = 16, per_layer_pos: int = 20, seed: int = 0) -> GraphArrays:
    rng = np.random.default_rng(seed)
    comp_layers = np.arange(1, len(LAYERS) - 1)
    # node table: embed per position, `per_layer_pos` components per (layer, pos), 3 outputs per pos
    n_comp = len(comp_layers) * n_pos * per_layer_pos
    kind = np.concatenate([np.full(n_pos, NODE_EMBED), np.full(n_comp, NODE_COMPONENT), np.full(3 * n_pos, NODE_OUTPUT)])
    layer = np.concatenate([
        np.zeros(n_pos),
        np.repeat(comp_layers, n_pos * per_layer_pos),
        np.full(3 * n_pos, len(LAYERS) - 1),
    ])
    pos = np.concatenate([
        np.arange(n_pos),
        np.tile(np.repeat(np.arange(n_pos), per_layer_pos), len(comp_layers)),
        np.repeat(np.arange(n_pos), 3),
    ])
    index = np.concatenate([
        np.zeros(n_pos),
        np.tile(np.arange(per_layer_pos), len(comp_layers) * n_pos),
        rng.integers(0, 256, 3 * n_pos),
    ])
    ci = np.concatenate([np.ones(n_pos), rng.random(n_comp), rng.random(3 * n_pos)])
    n_nodes = len(kind)
    src = rng.integers(0, n_pos + n_comp, n_edges)
    tgt = rng.integers(n_pos, n_nodes, n_edges)
    val = rng.standard_normal(n_edges).astype(np.float32)
    n_out = 3 * n_pos
    cols = {
        "node_kind": kind, "node_layer": layer, "node_pos": pos, "node_index": index,
        "node_ci": ci, "node_act": rng.standard_normal(n_nodes),
        "edge_src": src, "edge_tgt": tgt, "edge_val": val, "edge_val_abs": np.abs(val),
        "edge_cross_seq": rng.random(n_edges) < 0.1,
        "out_pos": np.repeat(np.arange(n_pos), 3), "out_token": index[-n_out:],
        "out_ci_masked_prob": rng.random(n_out), "out_ci_masked_logit": rng.standard_normal(n_out),
        "out_target_prob": rng.random(n_out), "out_target_logit": rng.standard_normal(n_out),
    }
    from spdlab.common.graph_codec import ALL_COLUMNS

    cols = {k: np.asarray(v).astype(ALL_COLUMNS[k]) for k, v in cols.items()}
    return GraphArrays(columns=cols, meta={"layers": LAYERS, "prompt_tokens": [f"t{i}" for i in range(n_pos)]})
