"""`POST /api/v1/decompositions/decompose` end to end: a short TMS 5-2 training run through the real
stack (API, broker, gpu worker), its registered decomposition, cancel, the 422s, and a short LM run
of the llama fixture target on a registered dataset whose result serves a standard graph."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from graph_helpers import RUN as LLAMA_RUN
from graph_helpers import canonical_map, compute, create_prompt, import_llama
from harvest_helpers import ready_dataset
from platform_helpers import read_sse, wait_job

TMS_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "research_runs" / "tms_5-2"
TARGET = TMS_RUN / "target"
URL = "/api/v1/decompositions/decompose"


@pytest.fixture(scope="module")
def research_config() -> dict[str, Any]:
    return yaml.safe_load((TMS_RUN / "final_config.yaml").read_text())


def short_config(config: dict[str, Any], steps: int, **overrides: Any) -> dict[str, Any]:
    """The fixture run's config, cut to `steps` with small batches (seconds on a CPU)."""
    out = copy.deepcopy(config)
    out.update(dict(steps=steps, batch_size=64, eval_batch_size=64, n_eval_steps=2, faithfulness_warmup_steps=5,
                    train_log_freq=5, eval_freq=steps, slow_eval_freq=steps) | overrides)
    return out


def body(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": f"tms-{uuid.uuid4().hex[:6]}", "config": config,
            "target": {"kind": "toy_weights", "path": str(TARGET)}, **extra}


def test_decompose_tms_registers_a_decomposition(api: httpx.Client, research_config: dict[str, Any]) -> None:
    steps = 30
    resp = api.post(URL, json=body(short_config(research_config, steps), checkpoint_every=10))
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.json()["kind"] == "decompose"

    events = read_sse(api, job_id, timeout=60)
    assert events[-1]["event"] == "succeeded", events[-3:]
    train_progress = [e["data"] for e in events if e["event"] == "progress" and e["data"].get("stage") == "train"]
    assert train_progress and train_progress[-1]["current"] == steps
    logs = [e["data"]["message"] for e in events if e["event"] == "log"]
    assert any(m.startswith(f"step {steps}/{steps}:") for m in logs), logs

    job = wait_job(api, job_id)
    result = job["result"]
    assert result["steps"] == steps and result["checkpoints"] == [10, 20, 30]
    assert set(result["metrics"]["l0"]) == {"linear1", "linear2"}
    assert all(0 <= v <= 20 for v in result["metrics"]["l0"].values())
    assert {"StochasticReconLoss", "StochasticReconLayerwiseLoss", "total"} <= set(result["metrics"]["losses"])
    assert "loss/StochasticReconLoss" in result["metrics"]["eval"]
    assert job["result_ref"] == f"decompositions:{result['decomposition_id']}"

    decomposition = api.get(f"/api/v1/decompositions/{result['decomposition_id']}").json()
    assert decomposition["source"] == "decompose" and decomposition["status"] == "ready"
    layers = {layer["concrete"]: layer["C"] for layer in decomposition["summary"]["layers"]}
    assert layers == {"linear1": 20, "linear2": 20}
    assert decomposition["config"]["spd"]["steps"] == steps
    assert decomposition["summary"]["training"]["metrics"] == result["metrics"]

    # An identical request is answered from the finished job, not retrained.
    again = api.post(URL, json=job["params"])
    assert again.status_code == 200 and again.json()["id"] == job_id


def test_cancel_stops_a_long_decompose(api: httpx.Client, research_config: dict[str, Any]) -> None:
    config = short_config(research_config, 100_000, eval_metric_configs=[], train_log_freq=1000)
    resp = api.post(URL, json=body(config))
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    wait_job(api, job_id, until=lambda j: j["progress"]["stage"] == "train" and (j["progress"]["current"] or 0) > 0,
             timeout=60)
    asked = time.monotonic()
    assert api.delete(f"/api/v1/jobs/{job_id}").status_code in (200, 202)
    job = wait_job(api, job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert time.monotonic() - asked < 2.0
    assert job["progress"]["current"] < 100_000


@pytest.mark.parametrize(("change", "field"), [
    (lambda b: b["config"]["module_info"][0].update(C=0), "config.module_info.0.C"),
    (lambda b: b["config"].update(steps=0), "config"),
    (lambda b: b.update(target={"kind": "toy_weights", "path": "/etc"}), "target.path"),
    (lambda b: b.update(target={"kind": "nope", "path": str(TARGET)}), "target.kind"),
    (lambda b: b.update(data={"kind": "dataset", "dataset_id": 1}), "data"),
])
def test_invalid_requests_are_422_naming_the_field(api: httpx.Client, research_config: dict[str, Any],
                                                   change: Any, field: str) -> None:
    request = body(short_config(research_config, 10))
    change(request)
    resp = api.post(URL, json=request)
    assert resp.status_code == 422, resp.text
    assert field in {e["field"] for e in resp.json()["errors"]}, resp.json()


def test_unknown_dataset_is_422(api: httpx.Client, research_config: dict[str, Any]) -> None:
    config = short_config(research_config, 10)
    config["task_config"] = {"task_name": "lm", "max_seq_len": 8}
    resp = api.post(URL, json=body(config, data={"kind": "dataset", "dataset_id": 987654}))
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "data.dataset_id"


def test_cli_decompose_follows_to_a_decomposition(api: httpx.Client, stack: Any, admin_key: str,
                                                  research_config: dict[str, Any], tmp_path: Path) -> None:
    config_file = tmp_path / "spd.yaml"
    config_file.write_text(yaml.safe_dump(short_config(research_config, 30, train_log_freq=4)))
    name = f"cli-{uuid.uuid4().hex[:6]}"
    script = Path(sys.executable).with_name("spdlab")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "spdlab.cli"]
    env = {**os.environ, "SPDLAB_URL": stack.url, "SPDLAB_API_KEY": admin_key, "COLUMNS": "120"}
    out = subprocess.run([*command, "decompositions", "decompose", "--config", str(config_file), "--target",
                          str(TARGET), "--steps", "8", "--name", name, "--follow"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    assert f"job {job_id} succeeded" in out.stdout
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    assert job["params"]["config"]["steps"] == 8 and job["params"]["target"]["kind"] == "toy_weights"
    decomposition = api.get(f"/api/v1/decompositions/{job['result']['decomposition_id']}").json()
    assert decomposition["name"] == name
    assert [layer["concrete"] for layer in decomposition["summary"]["layers"]] == ["linear1", "linear2"]


def test_decompose_llama_on_a_dataset_then_graph(api: httpx.Client, stack_env: dict[str, str]) -> None:
    """An LM decompose of the llama fixture target on a registered dataset; the result serves graphs."""
    imported = import_llama(api)
    dataset = ready_dataset(api, stack_env, imported["id"], "decompose-lm-words", n_docs=40, seed=3)
    config = yaml.safe_load((LLAMA_RUN / "final_config.yaml").read_text())
    steps = 6
    config.update(steps=steps, batch_size=4, eval_batch_size=4, n_eval_steps=1, faithfulness_warmup_steps=2,
                  train_log_freq=3, eval_freq=steps, slow_eval_freq=steps)
    config["task_config"]["max_seq_len"] = 8
    request = {"name": f"llama-{uuid.uuid4().hex[:6]}", "config": config,
               "target": {"kind": "run_dir", "path": str(LLAMA_RUN)},
               "data": {"kind": "dataset", "dataset_id": dataset["id"]}}
    resp = api.post(URL, json=request)
    assert resp.status_code == 202, resp.text
    job = wait_job(api, resp.json()["id"], timeout=60)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["steps"] == steps and result["checkpoints"] == [steps]
    assert {"FaithfulnessLoss", "StochasticReconSubsetLoss", "total"} <= set(result["metrics"]["losses"])
    assert {"ce_kl/kl_ci_masked", "l0/0.0_total"} <= set(result["metrics"]["eval"])  # the LM eval metrics ran

    decomposition = api.get(f"/api/v1/decompositions/{result['decomposition_id']}").json()
    assert decomposition["source"] == "decompose" and decomposition["status"] == "ready"
    got = {layer["concrete"]: layer["C"] for layer in decomposition["summary"]["layers"]}
    want = {layer["concrete"]: layer["C"] for layer in imported["summary"]["layers"]}
    assert got == want and len(got) == 12  # 2 blocks x 6 module patterns, C per pattern as configured
    assert set(result["metrics"]["l0"]) == set(got)
    assert all(0 <= result["metrics"]["l0"][path] <= c for path, c in got.items())
    assert decomposition["summary"]["training"]["data"] == {"kind": "dataset", "dataset_id": dataset["id"]}

    prompt = create_prompt(api, decomposition["id"], [1, 5, 9, 2])
    (graph_id,), _ = compute(api, "graph.standard", prompt_id=prompt["id"])
    graph = api.get(f"/api/v1/graphs/{graph_id}", params={"edge_limit": 100_000}).json()
    assert graph["decomposition_id"] == decomposition["id"]
    assert graph["prompt_tokens"] == ["t1", " t5", " t9", " t2"]
    assert graph["n_edges"] > 0 and graph["n_component_nodes"] > 0
    layers = {key.rsplit(":", 2)[0] for key, kind in zip(graph["nodes"]["key"], graph["nodes"]["kind"], strict=True)
              if kind == 1}
    assert layers and layers <= {canonical_map().get(c, c) for c in got} | set(got)
