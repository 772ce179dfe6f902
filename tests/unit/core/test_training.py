"""Decomposition loop semantics (spec §4.2, §8 item 15) and a short TMS 5-2 training run."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from spdlab.common.spd_config import Config, parse_config
from spdlab.core.callbacks import Cancelled
from spdlab.core.component_model import ComponentModel, build_component_model
from spdlab.core.data.sparse_features import sparse_feature_batches
from spdlab.core.eval_metrics import single_feature_ci
from spdlab.core.targets.tms import TMSModel, TMSModelConfig
from spdlab.core.training import decompose

TMS_RUN = Path(__file__).parents[2] / "fixtures" / "research_runs" / "tms_5-2"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core box a second thread mostly waits in barriers
    (a training step gets several times slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def research_tms_config(**overrides: Any) -> Config:
    data = yaml.safe_load((TMS_RUN / "final_config.yaml").read_text())
    data.update(overrides)
    return parse_config(data)


def research_tms_target() -> TMSModel:
    model_cfg = yaml.safe_load((TMS_RUN / "target" / "tms_train_config.yaml").read_text())["tms_model_config"]
    target = TMSModel(TMSModelConfig(**model_cfg))
    target.load_state_dict(torch.load(TMS_RUN / "target" / "tms.pth", weights_only=True))
    target.tie_weights_()
    return target.requires_grad_(False)


def tms_batches(batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    return sparse_feature_batches("at_least_zero_active", batch_size, 5, 0.05, (0.0, 1.0), seed=seed)


class Recorder:
    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, float]]] = []
        self.progress: list[tuple[int, int, str]] = []
        self.checkpoints: list[int] = []
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.model: ComponentModel | None = None

    def on_log(self, step: int, values: dict[str, float]) -> None:
        self.logs.append((step, values))
        if self.model is not None and "train/loss/total" in values:
            self.snapshots[step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_progress(self, current: int, total: int, stage: str) -> None:
        self.progress.append((current, total, stage))

    def on_checkpoint(self, step: int, model: ComponentModel) -> None:
        self.checkpoints.append(step)


def small_run_config(steps: int, **overrides: Any) -> Config:
    base = dict(
        steps=steps, batch_size=64, eval_batch_size=64, train_log_freq=1, eval_freq=2, slow_eval_freq=4,
        n_eval_steps=2, faithfulness_warmup_steps=3,
    )
    return research_tms_config(**(base | overrides))


def run_small(steps: int, recorder: Recorder, counter: list[int] | None = None, **overrides: Any) -> ComponentModel:
    config = small_run_config(steps, **overrides)
    model = build_component_model(research_tms_target(), config)
    recorder.model = model

    def counting() -> Iterator[torch.Tensor]:
        for batch in tms_batches(64, seed=0):
            if counter is not None:
                counter.append(1)
            yield batch

    decompose(
        config, model, counting(), lambda: tms_batches(64, seed=1),
        progress=recorder.on_progress, should_cancel=lambda: False, on_log=recorder.on_log,
        on_checkpoint=recorder.on_checkpoint,
    )
    return model


def test_runs_steps_plus_one_iterations_and_last_does_not_step() -> None:
    rec, consumed = Recorder(), []
    model = run_small(4, rec, consumed, save_freq=2)
    assert len(consumed) == 5
    train_steps = [s for s, v in rec.logs if "train/loss/total" in v]
    assert train_steps == [0, 1, 2, 3, 4]
    final = model.state_dict()
    # Snapshots are taken after backward, before the optimizer step of that iteration.
    assert all(torch.equal(final[k], v) for k, v in rec.snapshots[4].items())
    # The last optimizer step (after iteration 3) uses the final cosine LR, 0 here; the one before moves.
    assert not torch.equal(rec.snapshots[2]["_components.linear1.V"], final["_components.linear1.V"])
    assert rec.checkpoints == [2, 4]


def test_only_components_and_ci_fn_change() -> None:
    rec = Recorder()
    config = small_run_config(3)
    model = build_component_model(research_tms_target(), config)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    decompose(
        config, model, tms_batches(64, 0), None, progress=rec.on_progress, should_cancel=lambda: False,
        on_log=rec.on_log, on_checkpoint=None,
    )
    after = model.state_dict()
    frozen = [k for k in before if k.startswith("target_model.") or k.endswith(".bias")]
    trained = [k for k in before if k not in frozen]
    assert "_components.linear2.bias" in frozen and "target_model.linear1.weight" in frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert {k.split(".")[0] for k in trained} == {"_components", "ci_fn"}
    assert all(not torch.equal(before[k], after[k]) for k in trained)


def test_tms_tied_components_share_storage() -> None:
    rec = Recorder()
    model = run_small(2, rec)
    c1, c2 = model.components["linear1"], model.components["linear2"]
    assert torch.equal(c2.U, c1.V.T) and torch.equal(c2.V, c1.U.T)
    assert c2.U.data_ptr() == c1.V.data_ptr()


def test_eval_at_step_zero_and_every_eval_freq_with_slow_metrics_on_slow_steps() -> None:
    rec = Recorder()
    run_small(4, rec)
    evals = {s: v for s, v in rec.logs if "l0/0.1_linear1" in v}
    assert sorted(evals) == [0, 2, 4]
    assert "target_solution_error/total" in evals[0] and "target_solution_error/total" in evals[4]
    assert "target_solution_error/total" not in evals[2]  # slow metric, slow_eval_freq = 4
    assert {"loss/StochasticReconLoss", "loss/ImportanceMinimalityLoss"} <= set(evals[2])


def test_progress_is_monotone_and_complete() -> None:
    rec = Recorder()
    run_small(4, rec)
    train = [(c, t) for c, t, s in rec.progress if s == "train"]
    assert train == [(s, 4) for s in range(5)]
    warmup = [c for c, _, s in rec.progress if s == "faithfulness_warmup"]
    assert warmup == [1, 2, 3]
    stages = [s for _, _, s in rec.progress]
    assert stages.index("train") > max(i for i, s in enumerate(stages) if s == "faithfulness_warmup")


def test_cancel_stops_within_one_step() -> None:
    config = small_run_config(50, faithfulness_warmup_steps=0)
    model = build_component_model(research_tms_target(), config)
    consumed: list[int] = []
    calls = {"n": 0}

    def should_cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    def counting() -> Iterator[torch.Tensor]:
        for batch in tms_batches(64, 0):
            consumed.append(1)
            yield batch

    with pytest.raises(Cancelled):
        decompose(config, model, counting(), None, progress=lambda *a: None, should_cancel=should_cancel,
                  on_log=lambda s, v: None, on_checkpoint=None)
    assert len(consumed) <= 4


def test_short_tms_run_reduces_recon_and_sparsifies_single_feature_ci() -> None:
    """400 steps of the research TMS 5-2 config (batch 256, no eval): both stochastic recon losses fall
    by a large factor; single-feature inputs keep 1..C/2 alive components per layer."""
    torch.manual_seed(0)
    steps, batch_size = 400, 256
    # Constant LR at the research start value, so 400 steps see the LR of the research run's first 400.
    lr = {"start_val": 1e-3, "fn_type": "constant", "final_val_frac": 1.0, "warmup_pct": 0.0}
    config = research_tms_config(steps=steps, batch_size=batch_size, train_log_freq=50, lr_schedule=lr)
    model = build_component_model(research_tms_target(), config)
    rec = Recorder()
    decompose(
        config, model, tms_batches(batch_size, seed=0), None, progress=lambda *a: None,
        should_cancel=lambda: False, on_log=rec.on_log, on_checkpoint=None,
    )
    train = dict(rec.logs)
    for key in ("train/loss/StochasticReconLoss", "train/loss/StochasticReconLayerwiseLoss"):
        last = sum(train[s][key] for s in (300, 350, 400)) / 3
        assert last < train[0][key] / 5, (key, train[0][key], last)  # ≈10x lower in practice
    with torch.no_grad():
        ci = single_feature_ci(model, 5, "continuous")
    for path, c in ci.items():
        alive = (c > config.ci_alive_threshold).sum(dim=-1)
        # Not yet one per feature at 400 steps, but neither collapsed nor dense.
        assert alive.min() >= 1 and alive.max() <= model.module_to_c[path] // 2, (path, alive)
