"""Evaluation metrics (spec §3.6, §8 item 15): CI-L0, CE/KL, densities, target-solution errors."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spdlab.common.spd_config import LayerwiseCiConfig
from spdlab.core import eval_metrics as em
from spdlab.core.component_model import ComponentModel


def test_ci_l0_uses_strict_threshold_and_means_over_positions() -> None:
    ci = torch.tensor([[[0.1, 0.2, 0.0], [0.1, 0.1, 0.5]], [[0.9, 0.8, 0.7], [0.0, 0.0, 0.0]]])  # (2, 2, 3)
    assert em.calc_ci_l_zero(ci, 0.1).item() == pytest.approx((1 + 1 + 3 + 0) / 4)
    assert em.calc_ci_l_zero(ci, 0.0).item() == pytest.approx((2 + 3 + 3 + 0) / 4)


def test_l0_groups_sum_matching_modules() -> None:
    l0 = {"h.0.mlp.c_fc": torch.tensor(2.0), "h.0.attn.q_proj": torch.tensor(1.0), "h.1.mlp.c_fc": torch.tensor(4.0)}
    sums = em.l0_group_sums(l0, {"layer_0": ["h.0.*"], "mlp": ["h.*.mlp.*"], "total": ["*"]})
    assert {k: v.item() for k, v in sums.items()} == {"layer_0": 3.0, "mlp": 6.0, "total": 7.0}


def test_density_and_mean_per_component() -> None:
    ci = {"m": torch.tensor([[[0.0, 0.5]], [[0.2, 1.0]]])}  # (2, 1, 2): two positions
    assert em.component_activation_density(ci, 0.1)["m"].tolist() == [0.5, 1.0]
    assert em.ci_mean_per_component(ci)["m"].tolist() == pytest.approx([0.1, 0.75])


def test_max_weight_assignment_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 5))
        m = int(rng.integers(n, 7))
        w = rng.random((n, m))
        cols = em.max_weight_assignment(w)
        best = max(sum(w[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
        assert len(set(cols.tolist())) == n
        assert w[np.arange(n), cols].sum() == pytest.approx(best)


def permuted_identity(n: int, C: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    ci = torch.zeros(n, C)
    ci[torch.arange(n), torch.randperm(C, generator=g)[:n]] = 1.0
    return ci


def test_identity_distance_counts_deviations_from_best_matching() -> None:
    ci = permuted_identity(5, 20)
    assert em.identity_distance(ci) == 0
    noisy = ci + 0.05  # below tolerance everywhere off the matching
    assert em.identity_distance(noisy.clamp(max=1)) == 0
    extra = ci.clone()
    extra[2, (ci.sum(0) == 0).nonzero()[0]] = 0.5  # a second alive component for feature 2
    assert em.identity_distance(extra) == 1
    weak = ci.clone()
    weak[3] *= 0.6  # feature 3's component below 1 − tolerance
    assert em.identity_distance(weak) == 1
    shared = torch.zeros(5, 20)
    shared[:, 0] = 1.0  # one component for all features: 4 unmatched strong + 4 missing diagonals
    assert em.identity_distance(shared) == 8


def test_target_solution_errors_keys_and_totals() -> None:
    good = permuted_identity(5, 20)
    bad = good.clone()
    bad[0, (good.sum(0) == 0).nonzero()[0]] = 0.15  # over 0.1 but under 0.2
    errors = em.target_solution_errors({"linear1": good, "linear2": bad}, {"linear*": 5}, {})
    assert errors == {
        "target_solution_error/total": 1,
        "target_solution_error/total_0p2": 0,
        "target_solution_error/linear1": 0,
        "target_solution_error/linear2": 1,
    }
    dense = torch.zeros(4, 6)
    dense[:, 1] = 1.0
    assert em.target_solution_errors({"m": dense}, {}, {"m": 1})["target_solution_error/total"] == 0
    assert em.target_solution_errors({"m": dense}, {}, {"m": 2})["target_solution_error/total"] == 1


def test_components_per_feature() -> None:
    ci = permuted_identity(3, 6)
    ci[1, :] = 0.5
    assert em.components_per_feature({"m": ci}, 0.1)["m"].tolist() == [1, 6, 1]


# --- CE / KL --------------------------------------------------------------------------------------

VOCAB, D = 11, 6


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.lm_head(self.wte(tokens))


def exact_lm() -> ComponentModel:
    torch.manual_seed(0)
    target = TinyLM().requires_grad_(False)
    model = ComponentModel(target, {"lm_head": VOCAB}, LayerwiseCiConfig(mode="layerwise", fn_type="mlp", hidden_dims=[4]))
    with torch.no_grad():
        model.components["lm_head"].V.copy_(target.lm_head.weight.T)
        model.components["lm_head"].U.copy_(torch.eye(VOCAB))
    return model


def test_ce_ignores_position_zero_so_no_cross_row_prediction_is_scored() -> None:
    torch.manual_seed(1)
    logits, tokens = torch.randn(3, 5, VOCAB), torch.randint(0, VOCAB, (3, 5))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
    assert em._ce_vs_next_tokens(logits, tokens).item() == pytest.approx(expected.item(), rel=1e-6)


def test_ce_and_kl_for_exact_components() -> None:
    model = exact_lm()
    tokens = torch.randint(0, VOCAB, (4, 7))
    target_out = model(tokens)
    ci = {"lm_head": torch.ones(4, 7, VOCAB)}
    out = em.ce_and_kl_losses(model, tokens, target_out, ci, model.calc_weight_deltas(), "continuous", 0.0)
    assert set(out) == (
        {f"kl_{s}" for s in em.CE_KL_MASK_SETTINGS}
        | {f"ce_difference_{s}" for s in em.CE_KL_MASK_SETTINGS[:-1]}
        | {f"ce_unrecovered_{s}" for s in em.CE_KL_MASK_SETTINGS[:-1]}
    )
    for key in ("kl_ci_masked", "kl_unmasked", "kl_rounded_masked", "kl_stoch_masked",
                "ce_difference_ci_masked", "ce_unrecovered_unmasked"):
        assert abs(out[key].item()) < 1e-5, key
    # Zero masks: uniform logits (no bias), so KL to the target is strictly positive.
    assert out["kl_zero_masked"].item() > 0.01
    zero_logits = torch.zeros(4, 7, VOCAB)
    assert out["kl_zero_masked"].item() == pytest.approx(
        (F.softmax(target_out, -1) * (F.log_softmax(target_out, -1) - F.log_softmax(zero_logits, -1)))
        .sum(-1).mean().item(), rel=1e-5,
    )
