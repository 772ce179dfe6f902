"""Shared steps of the dataset, harvest and component API tests: JSONL corpora of fixture tokens
(`t0`..`t255`, the llama fixture's word-level vocabulary), dataset registration, harvests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
from platform_helpers import wait_job

# Small enough for the 2-core CI box: few windows, few examples, short contexts.
SMALL_CONFIG = {"batch_size": 4, "examples_per_component": 4, "context_tokens_per_side": 3, "top_k_tokens": 5,
                "top_k_correlations": 8}


def corpus_dir(stack_env: dict[str, str]) -> Path:
    """Inside the stack's data dir, which is an allowed import root."""
    path = Path(stack_env["SPDLAB_DATA_DIR"]) / "corpora"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_jsonl(path: Path, n_docs: int, seed: int = 0, words: tuple[int, int] = (8, 30)) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_docs):
        # A skewed token distribution so some components fire often and correlate.
        toks = [f"t{min(255, int(rng.expovariate(1 / 25)))}" for _ in range(rng.randint(*words))]
        lines.append(json.dumps({"text": " ".join(toks)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def register_dataset(api: httpx.Client, decomposition_id: int, path: Path, name: str | None = None,
                     **extra: Any) -> dict[str, Any]:
    """POST /datasets and wait for its tokenize job; returns the dataset view (ready or failed)."""
    body = {"name": name or path.stem, "decomposition_id": decomposition_id,
            "source": {"kind": "jsonl", "path": str(path)}, **extra}
    resp = api.post("/api/v1/datasets", json=body)
    assert resp.status_code == 202, resp.text
    dataset = resp.json()
    wait_job(api, dataset["job_id"], timeout=60)
    return api.get(f"/api/v1/datasets/{dataset['id']}").json()


def ready_dataset(api: httpx.Client, stack_env: dict[str, str], decomposition_id: int, name: str, n_docs: int,
                  seed: int = 0) -> dict[str, Any]:
    """The named dataset, registered once per test session."""
    for item in api.get("/api/v1/datasets", params={"decomposition_id": decomposition_id, "limit": 200}).json()["items"]:
        if item["name"] == name and item["status"] == "ready":
            return item
    path = write_jsonl(corpus_dir(stack_env) / f"{name}.jsonl", n_docs, seed)
    dataset = register_dataset(api, decomposition_id, path, name=name)
    assert dataset["status"] == "ready", dataset
    return dataset


def run_harvest(api: httpx.Client, decomposition_id: int, dataset_id: int, n_shards: int,
                config: dict[str, Any] | None = None, timeout: float = 90) -> dict[str, Any]:
    body = {"decomposition_id": decomposition_id, "dataset_id": dataset_id, "n_shards": n_shards,
            "config": config or SMALL_CONFIG}
    resp = api.post("/api/v1/harvests", json=body)
    assert resp.status_code in (200, 202), resp.text
    harvest = resp.json()
    job = wait_job(api, harvest["job_id"], timeout=timeout)
    assert job["status"] == "succeeded", job
    return api.get(f"/api/v1/harvests/{harvest['id']}").json()
