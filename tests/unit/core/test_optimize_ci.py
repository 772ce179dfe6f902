"""CI optimization: seeded determinism, loss/L0 behaviour, batch = separate runs, LR schedule."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from research_fixtures import RESEARCH_RUNS

from spdlab.core.losses.importance_minimality import importance_minimality_loss
from spdlab.core.optimize_ci import (
    CISnapshot,
    LRSchedule,
    OptimizeCIConfig,
    OptimizeCIResult,
    PGDSettings,
    importance_minimality_per_element,
    optimize_ci,
)
from spdlab.core.prompt_losses import CELoss, KLLoss
from spdlab.core.research_import import import_research_run

FIXTURES = RESEARCH_RUNS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def llama():
    loaded = import_research_run(FIXTURES / "llama_mlp_vector")
    tokens = torch.tensor(json.loads((FIXTURES / "llama_mlp_vector/expected/p8_fp32.json").read_text())["token_ids"])
    return loaded.component_model, tokens


BASE = OptimizeCIConfig(
    loss=CELoss(position=6, label_token=197), imp_min_coeffs=(1e-2,), steps=12, pnorm=0.5,
    lr=LRSchedule(start_val=2e-2), seed=3,
)


def _run(llama, config: OptimizeCIConfig, **kwargs) -> OptimizeCIResult:
    model, tokens = llama
    return optimize_ci(model, tokens, config, sampling="continuous", **kwargs)


def test_seeded_runs_are_bit_identical(llama) -> None:
    config = replace(BASE, mask_type="stochastic", adv_pgd=PGDSettings(2, 0.3), steps=4)
    a, b = _run(llama, config), _run(llama, config)
    assert all(torch.equal(a.ci_lower[p], b.ci_lower[p]) for p in a.ci_lower)
    assert a.metrics == b.metrics
    assert a.adv_pgd_logits is not None and torch.equal(a.adv_pgd_logits, b.adv_pgd_logits)
    other = _run(llama, replace(config, seed=4))
    assert not all(torch.equal(a.ci_lower[p], other.ci_lower[p]) for p in a.ci_lower)


def test_loss_decreases_and_l0_falls_with_coefficient(llama) -> None:
    snapshots: list[CISnapshot] = []
    progress: list[tuple[int, int, str]] = []
    config = replace(BASE, mask_type="ci", imp_min_coeffs=(1e-4, 0.3), steps=40, snapshot_every=10)
    result = _run(llama, config, on_snapshot=snapshots.append, progress=lambda *a: progress.append(a))
    assert [s.step for s in snapshots] == [0, 10, 20, 30, 40]
    assert progress == [(s, 40, "optimizing") for s in (0, 10, 20, 30, 40)]
    assert snapshots[1].loss is not None and snapshots[-1].loss is not None
    assert snapshots[-1].loss < snapshots[1].loss
    initial = snapshots[0].initial_alive_counts  # [layer][pos]
    initial_l0 = sum(sum(row[:7]) for row in initial)  # L0 counts positions ≤ the loss position (6)
    assert snapshots[0].l0_total == [initial_l0, initial_l0]
    low, high = result.metrics
    assert high.l0_total < low.l0_total <= initial_l0
    assert snapshots[-1].l0_total == [low.l0_total, high.l0_total]
    # Optimization only removes nodes: per (layer, position) never more alive than at the start.
    final = torch.tensor(snapshots[-1].alive_counts)
    assert (final <= torch.tensor(initial)[None]).all()
    assert low.ci_masked_label_prob is not None and low.ci_masked_label_prob > 0.5
    assert low.stoch_masked_label_prob is not None and low.adv_pgd_label_prob is None


def test_batch_equals_separate_runs(llama) -> None:
    coeffs = (1e-3, 3e-2, 0.2)
    config = replace(BASE, mask_type="stochastic", imp_min_coeffs=coeffs, loss=KLLoss(position=5))
    batched = _run(llama, config)
    for i, coeff in enumerate(coeffs):
        single = _run(llama, replace(config, imp_min_coeffs=(coeff,)))
        for path, ci in single.ci_lower.items():
            torch.testing.assert_close(batched.ci_lower[path][i], ci[0], rtol=1e-4, atol=1e-5)
        assert batched.metrics[i].l0_total == single.metrics[0].l0_total
        assert batched.metrics[i].final_loss == pytest.approx(single.metrics[0].final_loss, rel=1e-4)


def test_lr_schedule_is_honoured(llama, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[float] = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    schedule = LRSchedule(start_val=0.05, fn_type="cosine", warmup_pct=0.2, final_val_frac=0.1)
    _run(llama, replace(BASE, steps=10, mask_type="ci", lr=schedule))
    warm = [0.05 * s / 2 for s in range(2)]
    decay = [0.05 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 7))) for k in range(8)]
    assert used == pytest.approx(warm + decay)
    frozen = _run(llama, replace(BASE, steps=3, mask_type="ci", lr=LRSchedule(start_val=0.0)))
    start = _run(llama, replace(BASE, steps=0, mask_type="ci"))
    assert all(torch.equal(frozen.pre_sigmoid[p], start.pre_sigmoid[p]) for p in start.pre_sigmoid)


def test_importance_minimality_matches_training_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    upper = {name: torch.rand(3, 5, 4, generator=gen) * 1.2 for name in ("a", "b")}
    per_element = importance_minimality_per_element(upper, p=0.7, beta=0.3, eps=1e-12)
    for n in range(3):
        single = importance_minimality_loss({k: v[n : n + 1] for k, v in upper.items()}, 0.0, pnorm=0.7, beta=0.3)
        assert per_element[n].item() == pytest.approx(single.item(), rel=1e-6)
