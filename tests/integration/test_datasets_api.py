"""Datasets through the API and the gpu worker: tokenized windows, file:line:col errors, path checks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from graph_helpers import import_llama
from harvest_helpers import corpus_dir, register_dataset, write_jsonl


@pytest.fixture(scope="module")
def decomposition(stack, admin_key):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": admin_key}, timeout=30) as api:
        yield import_llama(api)


def test_jsonl_dataset_is_tokenized_into_windows(api: httpx.Client, stack_env: dict[str, str],
                                                 decomposition: dict[str, Any]):
    path = write_jsonl(corpus_dir(stack_env) / "ds_good.jsonl", n_docs=20, seed=3)
    n_words = sum(len(line.split('"text": "')[1].split()) for line in path.read_text().splitlines())
    dataset = register_dataset(api, decomposition["id"], path, context_length=16)
    assert dataset["status"] == "ready", dataset
    # Word-level tokenizer: one token per word (plus EOS per document when the tokenizer has one).
    assert dataset["context_length"] == 16
    per_doc = (dataset["n_windows"] * 16 + dataset["n_tokens_dropped"] - n_words) / 20
    assert per_doc in (0, 1) and dataset["n_documents"] == 20 and dataset["n_tokens_dropped"] < 16
    listed = api.get("/api/v1/datasets", params={"decomposition_id": decomposition["id"], "limit": 200}).json()
    assert dataset["id"] in [d["id"] for d in listed["items"]]
    assert api.delete(f"/api/v1/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/api/v1/datasets/{dataset['id']}").status_code == 404


def test_bad_jsonl_fails_naming_file_line_and_column(api: httpx.Client, stack_env: dict[str, str],
                                                     decomposition: dict[str, Any]):
    path = corpus_dir(stack_env) / "ds_bad.jsonl"
    bad = '{"text": "t6", oops}'
    path.write_text('{"text": "t1 t2 t3"}\n{"text": "t4 t5"}\n' + bad + "\n")
    with pytest.raises(json.JSONDecodeError) as err:
        json.loads(bad)
    dataset = register_dataset(api, decomposition["id"], path)
    assert dataset["status"] == "failed"
    assert dataset["error"].startswith(f"{path}:3:{err.value.colno}: invalid JSON"), dataset["error"]
    job = api.get(f"/api/v1/jobs/{dataset['job_id']}").json()
    assert job["status"] == "failed" and job["error"]["message"] == dataset["error"]
    assert job["error"]["code"] == "dataset_invalid"


@pytest.mark.parametrize(("source", "reason"), [
    ({"kind": "jsonl", "path": "/etc/passwd"}, "not under an allowed root"),
    ({"kind": "jsonl", "path": "{data}/corpora/missing.jsonl"}, "no such file"),
    ({"kind": "parquet", "path": "{data}/corpora/ds_ext.jsonl"}, "extensions"),
    ({"kind": "arrow_dir", "path": "{data}/corpora/ds_ext.jsonl"}, "directory is expected"),
])
def test_source_paths_are_checked_synchronously(api: httpx.Client, stack_env: dict[str, str],
                                                decomposition: dict[str, Any], source: dict[str, str], reason: str):
    write_jsonl(corpus_dir(stack_env) / "ds_ext.jsonl", 2)
    source = {**source, "path": source["path"].format(data=stack_env["SPDLAB_DATA_DIR"])}
    resp = api.post("/api/v1/datasets", json={"name": "x", "decomposition_id": decomposition["id"], "source": source})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "source.path" and reason in resp.json()["detail"]


def test_dataset_validation_errors(api: httpx.Client, decomposition: dict[str, Any]):
    resp = api.post("/api/v1/datasets", json={"name": "x", "decomposition_id": 999999, "source": {"kind": "demo"}})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "decomposition_id"
    resp = api.post("/api/v1/datasets", json={"name": "x", "decomposition_id": decomposition["id"],
                                              "source": {"kind": "csv", "path": "a.csv"}})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"].startswith("source")
    assert api.get("/api/v1/datasets", params={"limit": 0}).status_code == 422
    assert api.get("/api/v1/datasets", params={"offset": -1}).status_code == 422
    assert api.get("/api/v1/datasets/999999").status_code == 404
