"""The `decompose` handler in-process (runner + SQLite + local artifacts, no Celery): checkpoints,
registration, seeded reproducibility (what a redelivered job relies on), and a retry that finds the
finished training and only registers it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import update

from spdlab.common import jobs
from spdlab.common.artifacts import artifact_store_from_settings
from spdlab.common.contracts.jobs import parse_job_request
from spdlab.common.db import session_scope
from spdlab.common.models import Decomposition, Job
from spdlab.common.runner import run_job
from spdlab.common.settings import Settings
from spdlab.common.users import create_user
from spdlab.gpu_worker.decompose_artifacts import final_metrics, job_prefix, step_prefix, stored_steps
from spdlab.gpu_worker.decompose_inputs import shuffled_batches
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.handlers import decompose as handler

TMS_RUN = Path(__file__).resolve().parents[2] / "fixtures" / "research_runs" / "tms_5-2"
STEPS = 12


@pytest.fixture
def settings(sqlite_settings: Settings) -> Settings:
    return sqlite_settings.model_copy(update={"cancel_poll_s": 0.05, "progress_throttle_s": 0.0})


def params(**extra: Any) -> dict[str, Any]:
    config = yaml.safe_load((TMS_RUN / "final_config.yaml").read_text())
    config.update(steps=STEPS, batch_size=32, eval_batch_size=32, n_eval_steps=1, faithfulness_warmup_steps=2,
                  train_log_freq=4, eval_freq=STEPS, slow_eval_freq=STEPS, eval_metric_configs=[])
    return {"name": "tms", "config": config, "target": {"kind": "toy_weights", "path": str(TMS_RUN / "target")},
            "checkpoint_every": 4, "nonce": uuid.uuid4().hex, **extra}


def submit(settings: Settings, **extra: Any) -> str:
    with session_scope(settings) as session:
        owner = create_user(session, f"u{uuid.uuid4().hex[:6]}")
        request = parse_job_request("decompose", params(**extra))
        return jobs.submit_job(session, owner=owner, request=request, queue="gpu", default_quota=100).job.id


def job_row(settings: Settings, job_id: str) -> Job:
    with session_scope(settings) as session:
        row = session.get(Job, job_id)
        assert row is not None
        session.expunge(row)
        return row


def test_decompose_job_checkpoints_registers_and_is_reproducible(settings: Settings) -> None:
    first, second = submit(settings), submit(settings)
    for job_id in (first, second):
        assert run_job(job_id, registry=REGISTRY, worker="w", settings=settings) == "succeeded"
    done = job_row(settings, first)
    result = done.result
    assert result is not None and done.result_ref == f"decompositions:{result['decomposition_id']}"
    store = artifact_store_from_settings(settings)
    assert stored_steps(store, first) == [4, 8, 12] == result["checkpoints"]
    assert not result["resumed_from_final"]
    with session_scope(settings) as session:
        row = session.get(Decomposition, result["decomposition_id"])
        assert row is not None and row.source == "decompose" and row.artifact_ref == job_prefix(first)
        assert [(la["concrete"], la["C"]) for la in row.summary["layers"]] == [("linear1", 20), ("linear2", 20)]
        assert row.summary["training"]["metrics"] == result["metrics"]
    # Seeded end to end: a second run of the same config gives the same weights bit for bit, which is
    # why a redelivered job may retrain from step 0.
    weights = [store.get_bytes(f"{step_prefix(j, STEPS)}/weights.safetensors") for j in (first, second)]
    assert weights[0] == weights[1]
    assert store.get_bytes(f"{job_prefix(first)}/weights.safetensors") == weights[0]


def test_retry_after_training_only_registers(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = submit(settings)

    def lost_worker(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("worker died while registering")

    monkeypatch.setattr(handler, "register_trained", lost_worker)
    assert run_job(job_id, registry=REGISTRY, worker="w", settings=settings) == "failed"
    monkeypatch.undo()
    # As a redelivery would find it: the row claimable again, the artifacts of attempt 1 in place.
    with session_scope(settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="queued", error=None, finished_at=None))

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the retry must not train again")

    monkeypatch.setattr(handler, "_train", no_training)
    assert run_job(job_id, registry=REGISTRY, worker="w2", settings=settings) == "succeeded"
    result = job_row(settings, job_id).result
    assert result is not None and result["resumed_from_final"] and result["steps"] == STEPS
    assert set(result["metrics"]["l0"]) == {"linear1", "linear2"}


def test_final_metrics_keep_finite_scalars_by_group() -> None:
    metrics = final_metrics(
        {"train/l0/a": 1.5, "train/loss/total": 0.25, "train/loss/X": float("nan"), "train/schedules/lr": 1e-3},
        {"loss/X": 0.5, "figures/x": "not a number", "l0/0.1_a": float("inf")},  # type: ignore[dict-item]
    )
    assert metrics.l0 == {"a": 1.5} and metrics.losses == {"total": 0.25} and metrics.eval == {"loss/X": 0.5}


def test_shuffled_batches_visit_every_window_once_per_epoch() -> None:
    import torch

    windows = torch.arange(10).unsqueeze(1).repeat(1, 3)
    stream = shuffled_batches(windows, 4, seed=0)
    rows = torch.cat([next(stream) for _ in range(5)])[:, 0]  # 20 rows = 2 epochs
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:].tolist()) == list(range(10))
