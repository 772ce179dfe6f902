"""Component data of a finished harvest (layers, detail, bulk, pagination, validation), the live
probe, and dataset attributions (sharded run, top-k sources and targets)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from graph_helpers import import_llama
from harvest_helpers import ready_dataset, run_harvest
from platform_helpers import wait_job


@pytest.fixture(scope="module")
def harvest(stack, admin_key, stack_env):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": admin_key}, timeout=30) as api:
        dec = import_llama(api)
        dataset = ready_dataset(api, stack_env, dec["id"], "harvest_corpus", n_docs=60, seed=1)
        yield run_harvest(api, dec["id"], dataset["id"], n_shards=3)


def _busiest(api: httpx.Client, harvest_id: int) -> dict[str, Any]:
    page = api.get(f"/api/v1/harvests/{harvest_id}/components", params={"order": "density", "limit": 1}).json()
    return page["items"][0]


def test_layer_summary_and_pagination(api: httpx.Client, harvest: dict[str, Any]):
    hid = harvest["id"]
    layers = api.get(f"/api/v1/harvests/{hid}/layers").json()
    assert len(layers) == 12 and {"0.mlp.up", "1.mlp.down", "0.attn.q"} <= {la["layer"] for la in layers}
    assert sum(la["n_components"] for la in layers) == 304 and all(la["n_alive"] >= 1 for la in layers)
    first = api.get(f"/api/v1/harvests/{hid}/components", params={"layer": "0.mlp.up", "limit": 15}).json()
    second = api.get(f"/api/v1/harvests/{hid}/components",
                     params={"layer": "0.mlp.up", "limit": 30, "offset": 15}).json()
    assert first["total"] == second["total"] == 40
    assert [c["component_idx"] for c in first["items"] + second["items"]] == list(range(40))
    up = next(la for la in layers if la["layer"] == "0.mlp.up")
    densities = [c["firing_density"] for c in first["items"] + second["items"]]
    assert abs(sum(densities) / 40 - up["mean_density"]) < 1e-9 and max(densities) == up["max_density"]
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"order": "random"}):
        assert api.get(f"/api/v1/harvests/{hid}/components", params=params).status_code == 422, params
    resp = api.get(f"/api/v1/harvests/{hid}/components", params={"layer": "9.mlp.up"})
    assert resp.status_code == 404 and "'9.mlp.up'" in resp.json()["detail"]


def test_component_detail(api: httpx.Client, harvest: dict[str, Any]):
    hid, top = harvest["id"], _busiest(api, harvest["id"])
    url = f"/api/v1/harvests/{hid}/components/{top['layer']}/{top['component_idx']}"
    detail = api.get(url, params={"metric": "pmi", "limit": 5, "examples_limit": 3}).json()
    assert detail["firing_count"] > 0 and detail["n_examples"] == 4 and len(detail["examples"]) == 3
    for ex in detail["examples"]:
        assert ex["tokens"] == [f"t{i}" for i in ex["token_ids"]]
        assert len(ex["ci"]) == len(ex["activation"]) == len(ex["token_ids"])
        assert ex["ci"][ex["firing_offset"]] > 0  # the sampled token is a firing (threshold 0)
    assert detail["correlation_metric"] == "pmi" and 1 <= len(detail["correlated"]) <= 5
    pmis = [c["value"] for c in detail["correlated"]]
    assert pmis == sorted(pmis, reverse=True) and detail["correlated"][0]["key"] != top["key"]
    precision = detail["input_tokens"]["precision"]
    assert precision and all(t["token"] == f"t{t['token_id']}" and 0 < t["value"] <= 1 for t in precision)
    assert detail["output_tokens"] is not None
    rest = api.get(url, params={"examples_limit": 10, "examples_offset": 3}).json()["examples"]
    assert len(rest) == 1 and rest[0]["token_ids"] not in [e["token_ids"] for e in detail["examples"]]
    for params in ({"metric": "cosine"}, {"limit": 0}, {"limit": 101}, {"examples_limit": -1}):
        resp = api.get(url, params=params)
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == next(iter(params)), params
    resp = api.get(f"/api/v1/harvests/{hid}/components/nope.layer/0")
    assert resp.status_code == 404 and "'nope.layer'" in resp.json()["detail"]
    resp = api.get(f"/api/v1/harvests/{hid}/components/0.mlp.up/40")
    assert resp.status_code == 404 and "no component 40" in resp.json()["detail"]


def test_bulk_fetch(api: httpx.Client, harvest: dict[str, Any]):
    url = f"/api/v1/harvests/{harvest['id']}/components:bulk"
    resp = api.post(url, json={"keys": ["0.mlp.up:0", "1.attn.v:3", "0.mlp.up:99"], "examples_limit": 1})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [c["key"] for c in body["items"]] == ["0.mlp.up:0", "1.attn.v:3"] and body["missing"] == ["0.mlp.up:99"]
    single = api.get(f"/api/v1/harvests/{harvest['id']}/components/1.attn.v/3").json()
    assert body["items"][1]["firing_count"] == single["firing_count"]
    assert api.post(url, json={"keys": [f"0.mlp.up:{i}" for i in range(101)]}).status_code == 422
    assert api.post(url, json={"keys": []}).status_code == 422
    assert api.post(url, json={"keys": ["no-colon"]}).status_code == 422


def test_probe_matches_a_harvested_example(api: httpx.Client, harvest: dict[str, Any]):
    top = _busiest(api, harvest["id"])
    detail = api.get(f"/api/v1/harvests/{harvest['id']}/components/{top['layer']}/{top['component_idx']}").json()
    example = detail["examples"][0]
    body = {"decomposition_id": harvest["decomposition_id"], "text": " ".join(example["tokens"]),
            "layer": top["layer"], "component_idx": top["component_idx"]}
    resp = api.post("/api/v1/probes", json=body)
    assert resp.status_code in (200, 202), resp.text
    job = wait_job(api, resp.json()["id"], timeout=30)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["token_ids"] == example["token_ids"] and result["tokens"] == example["tokens"]
    assert len(result["ci"]) == len(result["activation"]) == len(example["tokens"])
    assert all(0 <= v <= 1 for v in result["ci"])
    bad = wait_job(api, api.post("/api/v1/probes", json={**body, "layer": "7.mlp.up"}).json()["id"], timeout=30)
    assert bad["status"] == "failed" and "unknown layer '7.mlp.up'" in bad["error"]["message"]
    assert api.post("/api/v1/probes", json={**body, "text": ""}).status_code == 422


def test_dataset_attributions_top_k(api: httpx.Client, harvest: dict[str, Any], stack_env: dict[str, str]):
    dec = harvest["decomposition_id"]
    small = ready_dataset(api, stack_env, dec, "attr_corpus", n_docs=12, seed=4)
    body = {"decomposition_id": dec, "dataset_id": small["id"], "n_shards": 2, "config": {"batch_size": 4}}
    resp = api.post("/api/v1/dataset-attributions", json=body)
    assert resp.status_code == 202, resp.text
    job = wait_job(api, resp.json()["job_id"], timeout=120)
    assert job["status"] == "succeeded", job
    run = api.get(f"/api/v1/dataset-attributions/{resp.json()['id']}").json()
    assert run["status"] == "succeeded" and run["n_tokens"] == small["n_windows"] * small["context_length"]
    url = f"/api/v1/dataset-attributions/{run['id']}/components/1.mlp.up/0"
    sources = api.get(url, params={"direction": "sources", "metric": "attr", "k": 5}).json()
    assert 1 <= len(sources["items"]) <= 5 and all(e["value"] > 0 for e in sources["items"])
    values = [e["value"] for e in sources["items"]]
    assert values == sorted(values, reverse=True)
    layers = {e["layer"] for e in sources["items"]}
    assert layers <= {"embed", "0.mlp.up", "0.mlp.down", "0.attn.q", "0.attn.k", "0.attn.v", "0.attn.o",
                      "1.attn.q", "1.attn.k", "1.attn.v", "1.attn.o"}
    negative = api.get(url, params={"metric": "attr_abs", "sign": "negative"}).json()
    assert all(e["value"] < 0 for e in negative["items"])
    targets = api.get(f"/api/v1/dataset-attributions/{run['id']}/components/0.mlp.up/0",
                      params={"direction": "targets", "k": 50}).json()
    assert targets["items"] and all(e["layer"] != "embed" for e in targets["items"])
    for params in ({"k": 0}, {"k": 51}, {"metric": "grad"}, {"direction": "up"}):
        assert api.get(url, params=params).status_code == 422, params
    resp = api.get(f"/api/v1/dataset-attributions/{run['id']}/components/5.mlp.up/0")
    assert resp.status_code == 404 and "'5.mlp.up'" in resp.json()["detail"]


def test_python_client_reads_component_data(stack: Any, admin_key: str, harvest: dict[str, Any]):
    from spdlab.client import SpdlabClient

    with SpdlabClient(stack.url, admin_key) as client:
        layers = client.components.layers(harvest["id"])
        page = client.components.list(harvest["id"], layer=layers[0].layer, limit=5)
        detail = client.components.get(harvest["id"], page.items[0].layer, page.items[0].component_idx, metric="recall")
        assert client.harvests.get(harvest["id"]).status == "succeeded"
    assert len(page.items) == 5 and page.total == layers[0].n_components
    assert detail.key == page.items[0].key and detail.correlation_metric == "recall"
