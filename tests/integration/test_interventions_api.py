"""Interventions through the API: the ci regime reproduces the research fixture; invalid selections
are a 422 listing every offender, before any job is enqueued."""

from __future__ import annotations

import pytest
from graph_helpers import canonical_map, compute, create_prompt, expected, import_llama


@pytest.fixture(scope="module")
def p24(stack, admin_key):  # type: ignore[no-untyped-def]
    import httpx

    with httpx.Client(base_url=stack.url, headers={"X-API-Key": admin_key}, timeout=30) as api:
        dec = import_llama(api)
        prompt = create_prompt(api, dec["id"], expected("intervention_p24_fp32")["token_ids"])
        (graph_id,), _ = compute(api, "graph.standard", prompt_id=prompt["id"])
        yield {"prompt": prompt, "graph_id": graph_id}


def _selected() -> list[str]:
    canon = canonical_map()
    nodes = expected("intervention_p24_fp32")["node_sets"]["ci_gt_0.1"]["active_nodes"]
    return [f"{canon[p]}:{s}:{c}" for p, s, c in nodes]


def test_ci_regime_reproduces_fixture_and_is_stored_once(api, p24):
    from platform_helpers import wait_job

    want = expected("intervention_p24_fp32")
    body = {"graph_id": p24["graph_id"], "selected_nodes": _selected(), "top_k": want["top_k"],
            "regimes": ["ci", "stochastic"]}
    resp = api.post("/api/v1/interventions", json=body)
    assert resp.status_code == 202, resp.text
    job = wait_job(api, resp.json()["job"]["id"], timeout=60)
    assert job["status"] == "succeeded", job
    stored = api.get(f"/api/v1/interventions/{job['result']['intervention_id']}").json()
    assert set(stored["result"]["regimes"]) == {"ci", "stochastic"}
    got = stored["result"]["regimes"]["ci"]["predictions"]
    ref = want["node_sets"]["ci_gt_0.1"]["result"]["predictions_per_position"]
    assert len(got) == len(ref)
    for g, w in zip(got, ref, strict=True):
        assert [p["token_id"] for p in g] == [r["token_id"] for r in w]
        assert [p["token"] for p in g] == [r["token"] for r in w]
        assert g[0]["prob"] == pytest.approx(w[0]["spd_prob"], rel=1e-4, abs=1e-6)
        assert g[0]["target_prob"] == pytest.approx(w[0]["target_prob"], rel=1e-4, abs=1e-6)
    again = api.post("/api/v1/interventions", json=body)
    assert again.status_code == 200 and again.json()["intervention"]["id"] == stored["id"]
    listed = api.get(f"/api/v1/graphs/{p24['graph_id']}/interventions").json()
    assert [i["id"] for i in listed] == [stored["id"]]


def test_invalid_selection_is_422_listing_every_node(api, p24):
    graph = api.get(f"/api/v1/graphs/{p24['graph_id']}", params={"edge_limit": 1}).json()
    alive = {k for k, kind in zip(graph["nodes"]["key"], graph["nodes"]["kind"], strict=True) if kind == 1}
    dead = next(f"0.attn.q:0:{c}" for c in range(16) if f"0.attn.q:0:{c}" not in alive)
    before = api.get("/api/v1/jobs", params={"kind": "intervention", "limit": 200}).json()["total"]
    resp = api.post("/api/v1/interventions", json={
        "graph_id": p24["graph_id"], "selected_nodes": [*_selected()[:3], "0.mlp.up:0:999", "0.mlp.up:40:0", dead]})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "2 not in this model/prompt, 1 not alive" in detail
    assert all(k in detail for k in ("0.mlp.up:0:999", "0.mlp.up:40:0", dead))
    assert api.get("/api/v1/jobs", params={"kind": "intervention", "limit": 200}).json()["total"] == before
    ablate = api.post("/api/v1/interventions", json={"graph_id": p24["graph_id"], "selected_nodes": _selected()[:2],
                                                     "regimes": ["ablated"]})
    assert ablate.status_code == 422 and "nodes_to_ablate" in ablate.json()["detail"]


def test_ablated_regime_runs(api, p24):
    from platform_helpers import wait_job

    body = {"graph_id": p24["graph_id"], "selected_nodes": _selected()[:5], "regimes": ["ablated", "adversarial"],
            "nodes_to_ablate": _selected()[:2], "top_k": 3, "pgd": {"n_steps": 2, "step_size": 0.5}}
    resp = api.post("/api/v1/interventions", json=body)
    assert resp.status_code == 202, resp.text
    job = wait_job(api, resp.json()["job"]["id"], timeout=60)
    assert job["status"] == "succeeded", job
    result = api.get(f"/api/v1/interventions/{job['result']['intervention_id']}").json()["result"]
    assert set(result["regimes"]) == {"ablated", "adversarial"}
    assert all(len(pos) == 3 for pos in result["regimes"]["ablated"]["predictions"])
