"""Export a graph view in the circuit-tracer / Neuronpedia attribution-graph JSON format.

Mapping of SPD onto that format: a component layer becomes an integer "layer" (its index in the
forward order of decomposed layers) and a component becomes a feature with
`feature = cantor(layer, component)` (`metadata.schema_version = 1`). Embedding nodes are
`E_{token}_{pos}`, output nodes are logits `{n_layers + 1}_{token}_{pos}` with the
`Output "tok" (p=...)` label the viewer parses. SPD has no reconstruction-error nodes.
"""

from __future__ import annotations

import re
from typing import Any

from spdlab.common.graph_codec import NODE_COMPONENT, NODE_EMBED, NODE_OUTPUT

_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def cantor(a: int, b: int) -> int:
    return (a + b) * (a + b + 1) // 2 + b


def slugify(text: str) -> str:
    return _SLUG_BAD.sub("-", text.lower()).strip("-") or "graph"


def _parse_key(key: str) -> tuple[str, int, int]:
    layer, pos, idx = key.rsplit(":", 2)
    return layer, int(pos), int(idx)


def export_graph(
    view: dict[str, Any],
    *,
    slug: str,
    scan: str,
    prompt: str,
    prompt_tokens: list[str],
    component_layers: list[str],
    token_strings: dict[int, str],
) -> dict[str, Any]:
    """`view` is the result of `graph_view.view`; `component_layers` is the forward order."""
    layer_index = {name: i for i, name in enumerate(component_layers)}
    logit_layer = len(component_layers) + 1
    nodes_in = view["nodes"]
    node_ids: list[str] = []
    nodes: list[dict[str, Any]] = []
    for key, kind, ci in zip(nodes_in["key"], nodes_in["kind"], nodes_in["ci"], strict=True):
        layer, pos, idx = _parse_key(key)
        if kind == NODE_EMBED:
            token = _prompt_token_id(view, pos)
            node = _node(f"E_{token}_{pos}", pos, "E", pos, "embedding", f"E_{token}-{pos}",
                         f'Emb: "{prompt_tokens[pos] if pos < len(prompt_tokens) else pos}"', 1.0)
        elif kind == NODE_OUTPUT:
            tok = token_strings.get(idx, str(idx))
            node = _node(f"{logit_layer}_{idx}_{pos}", idx, str(logit_layer), pos, "logit",
                         f"L_{idx}-{pos}", f'Output "{tok}" (p={ci:.4f})', ci)
            node["token_prob"] = ci
        else:
            assert kind == NODE_COMPONENT
            li = layer_index[layer]
            node = _node(f"{li}_{idx}_{pos}", cantor(li, idx), str(li), pos,
                         "cross layer transcoder", f"{li}_{cantor(li, idx)}-{pos}", f"{layer}:{idx}", ci)
        node_ids.append(node["node_id"])
        nodes.append(node)

    edges = view["edges"]
    links = [
        {"source": node_ids[s], "target": node_ids[t], "weight": w}
        for s, t, w in zip(edges["source"], edges["target"], edges["value"], strict=True)
    ]
    return {
        "metadata": {
            "slug": slugify(slug),
            "scan": scan,
            "prompt_tokens": prompt_tokens,
            "prompt": prompt,
            "schema_version": 1,
            "generation_settings": {"source": "spdlab", **view.get("stats", {})},
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


def _prompt_token_id(view: dict[str, Any], pos: int) -> int:
    ids = view.get("prompt_token_ids") or []
    return int(ids[pos]) if pos < len(ids) else pos


def _node(node_id: str, feature: int, layer: str, pos: int, ftype: str, js: str, clerp: str,
          activation: float) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "feature": feature,
        "layer": layer,
        "ctx_idx": pos,
        "feature_type": ftype,
        "jsNodeId": js,
        "clerp": clerp,
        "activation": activation,
        "influence": None,
    }
