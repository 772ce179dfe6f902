"""Shared steps of the graph, prompt and intervention API tests: import the llama fixture run through
the API (an identical import is answered from the job cache, so every module may ask), prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from platform_helpers import wait_job

RUN = Path(__file__).resolve().parents[1] / "fixtures" / "research_runs" / "llama_mlp_vector"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "unit" / "api" / "schemas" / "attribution_graph.schema.json"


def expected(name: str) -> dict[str, Any]:
    return json.loads((RUN / "expected" / f"{name}.json").read_text())


def canonical_map() -> dict[str, str]:
    return expected("meta")["canonical"]


def import_llama(api: httpx.Client) -> dict[str, Any]:
    """The decomposition row of the imported fixture run."""
    resp = api.post("/api/v1/decompositions/import", json={"name": "llama fixture", "path": str(RUN)})
    assert resp.status_code in (200, 202), resp.text
    job = wait_job(api, resp.json()["id"], timeout=60)
    assert job["status"] == "succeeded", job
    decomposition = api.get(f"/api/v1/decompositions/{job['result']['decomposition_id']}")
    assert decomposition.status_code == 200
    return decomposition.json()


def create_prompt(api: httpx.Client, decomposition_id: int, token_ids: list[int]) -> dict[str, Any]:
    resp = api.post("/api/v1/prompts", json={"decomposition_id": decomposition_id, "token_ids": token_ids})
    assert resp.status_code == 201, resp.text
    return resp.json()


def compute(api: httpx.Client, kind: str, timeout: float = 60, **params: Any) -> tuple[list[int], dict[str, Any]]:
    """POST /graphs and wait for its job; returns (graph ids, the job)."""
    resp = api.post("/api/v1/graphs", json={"kind": kind, "params": params})
    assert resp.status_code == 202, resp.text
    job = wait_job(api, resp.json()["job"]["id"], timeout=timeout)
    assert job["status"] == "succeeded", job
    return job["result"]["graph_ids"], job


def graph_edges(graph: dict[str, Any]) -> dict[tuple[str, str], float]:
    keys = graph["nodes"]["key"]
    e = graph["edges"]
    return {(keys[s], keys[t]): v for s, t, v in zip(e["source"], e["target"], e["value"], strict=True)}


def assert_strengths_close(actual: dict, want: dict) -> None:
    """Same keys; |a − e| ≤ 1e-5·|e| + 1e-7·max|e| (the core tests' tolerance)."""
    assert set(actual) == set(want)
    keys = list(want)
    a = np.array([actual[k] for k in keys], dtype=np.float64)
    e = np.array([want[k] for k in keys], dtype=np.float64)
    err = np.abs(a - e)
    bound = 1e-5 * np.abs(e) + 1e-7 * np.abs(e).max()
    worst = int(np.argmax(err - bound))
    assert (err <= bound).all(), f"{keys[worst]}: {a[worst]} vs {e[worst]}"
