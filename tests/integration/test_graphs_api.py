"""Graphs through the API and real workers: the standard graph reproduces the research fixture,
get-or-compute never computes twice, optimized batches, manual graphs, reads and exports."""

from __future__ import annotations

import json

import jsonschema
import pytest
from graph_helpers import (
    SCHEMA_PATH,
    assert_strengths_close,
    canonical_map,
    compute,
    create_prompt,
    expected,
    graph_edges,
    import_llama,
)
from platform_helpers import read_sse


@pytest.fixture(scope="module")
def p8(stack, admin_key):  # type: ignore[no-untyped-def]
    import httpx

    with httpx.Client(base_url=stack.url, headers={"X-API-Key": admin_key}, timeout=30) as api:
        dec = import_llama(api)
        prompt = create_prompt(api, dec["id"], expected("p8_fp32")["token_ids"])
        (graph_id,), _ = compute(api, "graph.standard", prompt_id=prompt["id"])
        yield {"decomposition": dec, "prompt": prompt, "graph_id": graph_id}


def _expected_edges() -> dict[tuple[str, str], float]:
    canon = canonical_map()

    def key(k: str) -> str:
        layer, pos, idx = k.rsplit(":", 2)
        return f"{canon.get(layer, layer)}:{pos}:{idx}"

    return {(key(s), key(t)): v for s, t, v, _ in expected("p8_fp32")["compute_prompt_attributions"]["edges"]}


def test_standard_graph_reproduces_fixture_and_is_computed_once(api, p8):
    graph = api.get(f"/api/v1/graphs/{p8['graph_id']}", params={"edge_limit": 100_000}).json()
    want = expected("p8_fp32")["compute_prompt_attributions"]
    assert graph["n_edges"] == want["n_edges"] and graph["stats"]["n_edges_cut_by_limit"] == 0
    assert graph["n_component_nodes"] == want["n_alive_component_nodes"]
    assert_strengths_close(graph_edges(graph), _expected_edges())
    ids = expected("p8_fp32")["token_ids"]
    assert graph["prompt_tokens"] == [f"t{ids[0]}"] + [f" t{i}" for i in ids[1:]]
    top1 = [row[0]["token_id"] for row in want["output_top5_by_ci_masked_prob"]]
    out = graph["outputs"]
    first: dict[int, int] = {}
    for pos, tok in zip(out["pos"], out["token_id"], strict=True):
        first.setdefault(pos, tok)  # rows are rank-ordered per position
    assert [first[p] for p in range(len(top1))] == top1

    again = api.post("/api/v1/graphs", json={"kind": "graph.standard", "params": {"prompt_id": p8["prompt"]["id"]}})
    assert again.status_code == 200 and again.json()["status"] == "stored" and again.json()["job"] is None
    assert [g["id"] for g in again.json()["graphs"]] == [p8["graph_id"]]
    jobs = api.get("/api/v1/jobs", params={"kind": "graph.standard", "limit": 200}).json()["items"]
    assert sum(j["params"].get("prompt_id") == p8["prompt"]["id"] for j in jobs) == 1
    listed = api.get(f"/api/v1/prompts/{p8['prompt']['id']}/graphs").json()
    assert [g["id"] for g in listed] == [p8["graph_id"]]


def test_view_filters_truncates_and_reports(api, p8):
    url = f"/api/v1/graphs/{p8['graph_id']}"
    cut = api.get(url, params={"edge_limit": 50, "ci_threshold": 0.1, "normalize": "target"}).json()
    stats = cut["stats"]
    assert len(cut["edges"]["value"]) == 50
    assert stats["n_edges_cut_by_limit"] == stats["n_edges_after_filter"] - 50 > 0
    mags = [abs(v) for v in cut["edges"]["value"]]
    assert mags == sorted(mags, reverse=True)
    kinds, cis = cut["nodes"]["kind"], cut["nodes"]["ci"]
    assert all(c > 0.1 for k, c in zip(kinds, cis, strict=True) if k == 1)
    assert api.get(url, params={"edge_limit": 0}).status_code == 422
    assert api.get(url, params={"normalize": "bogus"}).status_code == 422
    assert api.get("/api/v1/graphs/99999999").status_code == 404


def test_neuronpedia_export_validates(api, p8):
    body = api.get(f"/api/v1/graphs/{p8['graph_id']}", params={"format": "neuronpedia", "edge_limit": 300}).json()
    jsonschema.validate(body, json.loads(SCHEMA_PATH.read_text()))
    assert len(body["links"]) == 300
    assert body["metadata"]["prompt_tokens"] == p8["prompt"]["tokens"]


def test_optimized_batch_gives_one_graph_per_coefficient_with_snapshots(api, p8):
    last = len(p8["prompt"]["token_ids"]) - 1
    label = expected("p8_fp32")["compute_prompt_attributions"]["output_top5_by_ci_masked_prob"][last][0]["token_id"]
    params = {"prompt_id": p8["prompt"]["id"], "loss": {"type": "ce", "position": last, "label_token": label},
              "imp_min_coeffs": [0.01, 1.0], "steps": 30, "snapshot_every": 10, "mask_type": "ci"}
    ids, job = compute(api, "graph.optimized", **params)
    assert len(ids) == 2 and len(set(ids)) == 2
    snaps = [e for e in read_sse(api, job["id"]) if e.get("event") == "ci_snapshot"]
    assert snaps and len(snaps[-1]["data"]["alive_counts"]) == 2  # per coefficient × layer × position
    graphs = [api.get(f"/api/v1/graphs/{i}").json() for i in ids]
    assert [g["summary"]["imp_min_coeff"] for g in graphs] == [0.01, 1.0]
    assert all(g["summary"]["metrics"]["ci_masked_label_prob"] is not None for g in graphs)
    # a stronger sparsity coefficient keeps no more nodes than a weaker one
    assert graphs[1]["n_component_nodes"] <= graphs[0]["n_component_nodes"]
    # one coefficient of the batch is already stored: no new job
    single = api.post("/api/v1/graphs", json={"kind": "graph.optimized", "params": {**params, "imp_min_coeffs": [1.0]}})
    assert single.status_code == 200 and [g["id"] for g in single.json()["graphs"]] == [ids[1]]


def test_manual_graph_keeps_only_included_nodes(api, p8):
    full = api.get(f"/api/v1/graphs/{p8['graph_id']}", params={"edge_limit": 100_000}).json()
    components = [k for k, kind in zip(full["nodes"]["key"], full["nodes"]["kind"], strict=True) if kind == 1]
    included = components[::7]
    (gid,), _ = compute(api, "graph.manual", prompt_id=p8["prompt"]["id"], included_nodes=included)
    manual = api.get(f"/api/v1/graphs/{gid}", params={"edge_limit": 100_000}).json()
    got = {k for k, kind in zip(manual["nodes"]["key"], manual["nodes"]["kind"], strict=True) if kind == 1}
    assert got == set(included)
    bad = api.post("/api/v1/graphs", json={"kind": "graph.manual", "params": {
        "prompt_id": p8["prompt"]["id"], "included_nodes": ["0.mlp.up:0:999", "7.mlp.up:0:0", included[0]]}})
    assert bad.status_code == 422
    assert "0.mlp.up:0:999" in bad.json()["detail"] and "7.mlp.up:0:0" in bad.json()["detail"]


def test_only_owner_or_admin_deletes_and_prompt_delete_cascades(api, make_user, p8):
    _, member = make_user()
    assert member.get(f"/api/v1/graphs/{p8['graph_id']}").status_code == 200  # members read everything
    assert member.delete(f"/api/v1/graphs/{p8['graph_id']}").status_code == 403
    prompt = create_prompt(api, p8["decomposition"]["id"], [1, 2, 3])
    (gid,), _ = compute(api, "graph.standard", prompt_id=prompt["id"])
    assert api.delete(f"/api/v1/prompts/{prompt['id']}").status_code == 204
    assert api.get(f"/api/v1/graphs/{gid}").status_code == 404


def test_client_and_cli_read_the_stored_graph(stack, admin_key, p8):
    from typer.testing import CliRunner

    from spdlab.cli.main import app
    from spdlab.client import SpdlabClient

    with SpdlabClient(stack.url, admin_key) as client:
        sub = client.graphs.compute("standard", p8["prompt"]["id"])
        assert sub.status == "stored" and [g.id for g in sub.graphs] == [str(p8["graph_id"])]
        graph = client.graphs.get(p8["graph_id"], edge_limit=5)
        assert len(graph.edges["value"]) == 5 and graph.stats["n_edges_cut_by_limit"] > 0
        assert [p.id for p in client.prompts.list(decomposition_id=p8["decomposition"]["id"]).items]
    env = {"SPDLAB_URL": stack.url, "SPDLAB_API_KEY": admin_key}
    out = CliRunner().invoke(app, ["graphs", "show", str(p8["graph_id"]), "--edge-limit", "3"], env=env)
    assert out.exit_code == 0, out.output
    assert "3 shown" in out.output and out.output.count(" -> ") == 3
    out = CliRunner().invoke(app, ["graphs", "compute", str(p8["prompt"]["id"])], env=env)
    assert out.exit_code == 0 and out.output.strip() == str(p8["graph_id"])
