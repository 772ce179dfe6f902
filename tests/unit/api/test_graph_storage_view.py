"""Graph codec round-trip and the server-side view (threshold, normalise, sort, truncate)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from graph_factory import random_graph

from spdlab.api.graph_view import ViewParams, view
from spdlab.api.neuronpedia import cantor, export_graph
from spdlab.common.graph_codec import NODE_COMPONENT, GraphCodecError, decode, encode

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "attribution_graph.schema.json").read_text())


def test_codec_round_trips_every_column_bit_for_bit():
    g = random_graph(5000)
    back = decode(encode(g))
    assert back.meta == g.meta
    for name, col in g.columns.items():
        assert back[name].dtype == col.dtype
        np.testing.assert_array_equal(back[name], col)


def test_codec_is_compact():
    g = random_graph(100_000)
    # 17 bytes per edge (4 columns of 4 bytes + 1) plus a small node table: no per-edge text.
    assert len(encode(g)) < 100_000 * 17 + 200_000


def test_codec_rejects_garbage_and_truncation():
    blob = encode(random_graph(100))
    with pytest.raises(GraphCodecError, match="magic"):
        decode(b"XXXX" + blob[4:])
    with pytest.raises(GraphCodecError, match="truncated"):
        decode(blob[: len(blob) // 2])


def _reference_view(g, params: ViewParams):
    """The obvious per-edge implementation of the display filter."""
    alive = [k != NODE_COMPONENT or c > params.ci_threshold for k, c in zip(g["node_kind"], g["node_ci"], strict=True)]
    col = g["edge_val"] if params.value == "signed" else g["edge_val_abs"]
    edges = [(s, t, float(v)) for s, t, v in zip(g["edge_src"], g["edge_tgt"], col, strict=True) if alive[s] and alive[t]]
    if params.normalize != "none":
        def group(t):
            return t if params.normalize == "target" else int(g["node_layer"][t])
        sq: dict[int, float] = {}
        for _, t, v in edges:
            sq[group(t)] = sq.get(group(t), 0.0) + v * v
        edges = [(s, t, v / sq[group(t)] ** 0.5) for s, t, v in edges if sq[group(t)] > 0]
    edges.sort(key=lambda e: -abs(e[2]))
    return edges, len(edges)


@pytest.mark.parametrize("normalize", ["none", "target", "layer"])
@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_view_matches_per_edge_reference(normalize, threshold):
    g = random_graph(3000, n_pos=4, per_layer_pos=5, seed=1)
    params = ViewParams(ci_threshold=threshold, normalize=normalize, edge_limit=200)
    got = view(g, params)
    ref, n_after = _reference_view(g, params)
    assert got["stats"]["n_edges_after_filter"] == n_after
    assert got["stats"]["n_edges_cut_by_limit"] == n_after - 200
    keys = got["nodes"]["key"]
    got_edges = [(keys[s], keys[t], v) for s, t, v in zip(got["edges"]["source"], got["edges"]["target"], got["edges"]["value"], strict=True)]
    layers = g.meta["layers"]

    def key(i):
        return f"{layers[g['node_layer'][i]]}:{g['node_pos'][i]}:{g['node_index'][i]}"

    np.testing.assert_allclose([abs(v) for *_, v in got_edges], [abs(v) for *_, v in ref[:200]], rtol=1e-5)
    # same multiset of (source, target, value) among the top edges (ties aside, values are continuous)
    assert sorted((a, b, round(v, 4)) for a, b, v in got_edges) == sorted((key(s), key(t), round(v, 4)) for s, t, v in ref[:200])
    # every component node returned passes the threshold
    comp = np.array(got["nodes"]["kind"]) == NODE_COMPONENT
    assert (np.array(got["nodes"]["ci"])[comp] > threshold).all()


def test_abs_values_and_small_limit():
    g = random_graph(1000, seed=3)
    got = view(g, ViewParams(value="abs", edge_limit=10))
    assert len(got["edges"]["value"]) == 10
    assert all(v >= 0 for v in got["edges"]["value"])
    assert got["edges"]["value"] == sorted(got["edges"]["value"], reverse=True)


def test_neuronpedia_export_validates_against_schema():
    g = random_graph(2000, n_pos=4, per_layer_pos=5, seed=2)
    v = view(g, ViewParams(ci_threshold=0.2, edge_limit=300))
    layers = g.meta["layers"]
    out = export_graph(
        v, slug="My Graph #1", scan="demo", prompt="t0 t1 t2 t3", prompt_tokens=g.meta["prompt_tokens"],
        component_layers=layers[1:-1], token_strings={i: f"t{i}" for i in range(256)},
    )
    jsonschema.validate(out, SCHEMA)
    assert out["metadata"]["slug"] == "my-graph-1"
    ids = {n["node_id"] for n in out["nodes"]}
    assert len(ids) == len(out["nodes"])  # node ids are unique
    assert all(link["source"] in ids and link["target"] in ids for link in out["links"])
    assert len(out["links"]) == 300
    feats = [n for n in out["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert feats and all(n["feature"] == cantor(int(n["layer"]), int(n["node_id"].split("_")[1])) for n in feats)


def test_schema_rejects_a_broken_export():
    bad = {"metadata": {"slug": "Bad Slug", "scan": "x", "prompt_tokens": [], "prompt": ""}, "qParams": {}, "nodes": [], "links": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
