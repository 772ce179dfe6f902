"""Sharded harvests on the real stack: a 3-shard run stores exactly the counts of a 1-shard run,
parent progress aggregates the shards, and cancelling the parent stops every shard."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from graph_helpers import import_llama
from harvest_helpers import SMALL_CONFIG, ready_dataset, run_harvest
from platform_helpers import read_sse, wait_job
from sqlalchemy import select

from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import ComponentStat


@pytest.fixture(scope="module")
def setup(stack, admin_key, stack_env):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": admin_key}, timeout=30) as api:
        dec = import_llama(api)
        dataset = ready_dataset(api, stack_env, dec["id"], "harvest_corpus", n_docs=60, seed=1)
        yield {"decomposition": dec, "dataset": dataset}


def _rows(settings: Any, harvest_id: int) -> dict[tuple[str, int], dict[str, Any]]:
    with session_scope(settings) as session:
        rows = session.scalars(select(ComponentStat).where(ComponentStat.harvest_id == harvest_id)).all()
        return {(r.layer, r.component_idx): {c.name: getattr(r, c.name) for c in ComponentStat.__table__.columns
                                             if c.name not in ("id", "harvest_id")} for r in rows}


def _merged_tensors(settings: Any, key: str) -> dict[str, Any]:
    from safetensors.torch import load

    from spdlab.common.artifacts import artifact_store_from_settings

    return load(artifact_store_from_settings(settings).get_bytes(key))


def _close(a: Any, b: Any) -> bool:
    """Equal structure; ints equal; floats to 1e-9 (float64 sums in a different order)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def test_three_shards_equal_one_shard_exactly(api: httpx.Client, setup: dict[str, Any], stack_settings: Any):
    dec, ds = setup["decomposition"]["id"], setup["dataset"]
    sharded = run_harvest(api, dec, ds["id"], n_shards=3)
    single = run_harvest(api, dec, ds["id"], n_shards=1)
    assert sharded["id"] != single["id"] and sharded["status"] == single["status"] == "succeeded"
    assert [s["status"] for s in sharded["shards"]] == ["succeeded"] * 3 and len(single["shards"]) == 1
    assert sharded["n_tokens"] == single["n_tokens"] == ds["n_windows"] * ds["context_length"]
    assert sharded["n_components"] == single["n_components"] == 304

    many, one = _rows(stack_settings, sharded["id"]), _rows(stack_settings, single["id"])
    assert many.keys() == one.keys() and len(many) == 304
    assert sum(r["firing_count"] for r in one.values()) > 0
    for key in one:
        assert many[key]["firing_count"] == one[key]["firing_count"], key
        assert _close(many[key], one[key]), key
    # The large matrices (artifact store): integer counts identical.
    a = _merged_tensors(stack_settings, sharded["artifact_ref"])
    b = _merged_tensors(stack_settings, single["artifact_ref"])
    for name in ("firing_counts", "cooccurrence", "input_counts", "input_totals"):
        assert a[name].equal(b[name]), name
    # Same sampled firings per component (slot order inside a reservoir is arbitrary).
    assert a["reservoir.keys"].sort(dim=1).values.equal(b["reservoir.keys"].sort(dim=1).values)
    assert int(a["cooccurrence"].sum()) > 0

    # Get-or-compute: the same request answers with the stored harvest.
    again = api.post("/api/v1/harvests", json={"decomposition_id": dec, "dataset_id": ds["id"], "n_shards": 3,
                                               "config": SMALL_CONFIG})
    assert again.status_code == 200 and again.json()["id"] == sharded["id"]
    # The parent's event stream aggregates shard progress and ends with the merge result.
    events = read_sse(api, sharded["job_id"])
    progress = [e["data"] for e in events if e["event"] == "progress" and e["data"]["stage"] == "harvest shards"]
    assert progress and progress[-1]["current"] == progress[-1]["total"] == ds["n_windows"]
    assert events[-1]["event"] == "succeeded" and events[-1]["data"]["result"]["n_shards"] == 3


def test_cancel_parent_stops_all_shards(api: httpx.Client, setup: dict[str, Any], stack_env: dict[str, str]):
    dec = setup["decomposition"]["id"]
    big = ready_dataset(api, stack_env, dec, "harvest_corpus_big", n_docs=600, seed=2)
    body = {"decomposition_id": dec, "dataset_id": big["id"], "n_shards": 3,
            "config": {**SMALL_CONFIG, "batch_size": 1, "seed": int(time.time())}}
    resp = api.post("/api/v1/harvests", json=body)
    assert resp.status_code == 202, resp.text
    harvest = resp.json()
    wait_job(api, harvest["job_id"], lambda j: (j["progress"]["current"] or 0) >= 2, timeout=60)
    started = time.monotonic()
    assert api.delete(f"/api/v1/jobs/{harvest['job_id']}").status_code == 200
    parent = wait_job(api, harvest["job_id"], timeout=10)
    assert parent["status"] == "cancelled"
    view = api.get(f"/api/v1/harvests/{harvest['id']}").json()
    deadline = time.monotonic() + 10
    while any(s["status"] in ("queued", "running") for s in view["shards"]) and time.monotonic() < deadline:
        time.sleep(0.1)
        view = api.get(f"/api/v1/harvests/{harvest['id']}").json()
    assert [s["status"] for s in view["shards"]] == ["cancelled"] * 3
    assert time.monotonic() - started < 5
    assert view["status"] == "cancelled" and view["n_components"] is None
    done = sum(s["progress_current"] or 0 for s in view["shards"])
    assert done < big["n_windows"]
    assert api.get(f"/api/v1/harvests/{harvest['id']}/layers").status_code == 409


def test_harvest_requests_are_validated(api: httpx.Client, setup: dict[str, Any]):
    dec, ds = setup["decomposition"]["id"], setup["dataset"]["id"]
    bad = [({"n_shards": 0}, "n_shards"), ({"n_shards": 10_000}, "n_shards"),
           ({"config": {"batch_size": 0}}, "config.batch_size"), ({"dataset_id": 999999}, "dataset_id"),
           ({"config": {"nope": 1}}, "config.nope")]
    for extra, field in bad:
        resp = api.post("/api/v1/harvests", json={"decomposition_id": dec, "dataset_id": ds, **extra})
        assert resp.status_code == 422, (extra, resp.text)
        assert resp.json()["errors"][0]["field"] == field, resp.json()
    assert api.get("/api/v1/harvests", params={"limit": 201}).status_code == 422
    assert api.get("/api/v1/harvests/999999").status_code == 404
