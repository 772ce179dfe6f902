"""SPD training losses (spec §3.0–3.4, §8 items 8–11)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spdlab.common.spd_config import (
    CIMaskedReconLayerwiseLossConfig,
    CIMaskedReconLossConfig,
    CIMaskedReconSubsetLossConfig,
    FaithfulnessLossConfig,
    ImportanceMinimalityLossConfig,
    LayerwiseCiConfig,
    PGDReconLayerwiseLossConfig,
    PGDReconLossConfig,
    PGDReconSubsetLossConfig,
    StochasticHiddenActsReconLossConfig,
    StochasticReconLayerwiseLossConfig,
    StochasticReconLossConfig,
    StochasticReconSubsetLossConfig,
    UnmaskedReconLossConfig,
)
from spdlab.core.component_model import CIOutputs, ComponentModel
from spdlab.core.losses import LOSS_FUNCTIONS, compute_losses
from spdlab.core.losses.faithfulness import faithfulness_loss
from spdlab.core.losses.importance_minimality import importance_minimality_loss
from spdlab.core.losses.pgd import PGDSettings, init_sources, optimize_sources_
from spdlab.core.losses.recon import (
    ci_masked_recon_layerwise_loss,
    ci_masked_recon_loss,
    recon_error_sum,
    recon_normalizer,
    stochastic_recon_loss,
)

D_IN, D_HID, D_OUT = 5, 3, 4


class TwoLayer(nn.Module):
    """`lin2(relu(lin1(x)))`; lin2 has a bias (copied into the components as a buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1 = nn.Linear(D_IN, D_HID, bias=False)
        self.lin2 = nn.Linear(D_HID, D_OUT, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(F.relu(self.lin1(x)))


def make_model(exact: bool, seed: int = 0) -> ComponentModel:
    """A component model over `TwoLayer`; with `exact`, V = W^T and U = I so components equal the target."""
    torch.manual_seed(seed)
    target = TwoLayer().requires_grad_(False)
    model = ComponentModel(
        target, {"lin1": D_HID, "lin2": D_OUT}, LayerwiseCiConfig(mode="layerwise", fn_type="mlp", hidden_dims=[4])
    )
    if exact:
        with torch.no_grad():
            for path in ("lin1", "lin2"):
                w = target.get_submodule(path).weight
                model.components[path].V.copy_(w.T)
                model.components[path].U.copy_(torch.eye(w.shape[0]))
    return model


def ones_ci(model: ComponentModel, batch: Tensor) -> dict[str, Tensor]:
    return {p: torch.ones(*batch.shape[:-1], c) for p, c in model.module_to_c.items()}


def all_losses() -> list:
    pgd = {"init": "random", "step_size": 0.3, "n_steps": 2, "mask_scope": "unique_per_datapoint"}
    return [
        UnmaskedReconLossConfig(coeff=1.0),
        CIMaskedReconLossConfig(coeff=1.0),
        CIMaskedReconLayerwiseLossConfig(coeff=1.0),
        CIMaskedReconSubsetLossConfig(coeff=1.0),
        StochasticReconLossConfig(coeff=1.0),
        StochasticReconLayerwiseLossConfig(coeff=1.0),
        StochasticReconSubsetLossConfig(coeff=1.0),
        PGDReconLossConfig(coeff=1.0, **pgd),
        PGDReconLayerwiseLossConfig(coeff=1.0, **pgd),
        PGDReconSubsetLossConfig(coeff=1.0, **(pgd | {"mask_scope": "shared_across_batch"})),
        StochasticHiddenActsReconLossConfig(coeff=1.0),
    ]


# --- worked examples ------------------------------------------------------------------------------


def test_faithfulness_worked_example() -> None:
    deltas = {"a": torch.tensor([[1.0, -1.0], [2.0, 0.0]]), "b": torch.tensor([[2.0, -2.0, 1.0]])}
    assert faithfulness_loss(deltas).item() == pytest.approx(15 / 7)


def test_importance_minimality_worked_examples() -> None:
    ci = {"a": torch.tensor([[1.0, 2.0, 3.0]]), "b": torch.tensor([[0.5, 1.5]])}
    assert importance_minimality_loss(ci, 0.0, pnorm=1.0, eps=0.0).item() == pytest.approx(8.0)
    assert importance_minimality_loss({"a": torch.tensor([[2.0, 3.0]])}, 0.0, pnorm=2.0, eps=0.0).item() == (
        pytest.approx(13.0)
    )


def test_importance_minimality_p_annealing() -> None:
    ci = {"a": torch.tensor([[2.0]])}
    value = importance_minimality_loss(
        ci, 0.25, pnorm=2.0, eps=0.0, p_anneal_start_frac=0.0, p_anneal_final_p=1.0, p_anneal_end_frac=0.5
    )
    assert value.item() == pytest.approx(2**1.5)


def test_importance_minimality_beta_uses_log2_of_batch_sum_and_means_over_positions() -> None:
    ci = {"a": torch.tensor([[1.0, 0.0], [3.0, 0.0]])}  # S = [4, 0], μ = [2, 0]
    value = importance_minimality_loss(ci, 0.0, pnorm=1.0, beta=0.5, eps=0.0)
    assert value.item() == pytest.approx(2 + 0.5 * 2 * math.log2(5))


def test_importance_minimality_sums_over_sequence_positions() -> None:
    ci = {"a": torch.full((2, 3, 4), 0.5)}  # (batch, seq, C): 6 positions each 0.5 → μ_c = 0.5
    assert importance_minimality_loss(ci, 0.0, pnorm=1.0, eps=0.0).item() == pytest.approx(4 * 0.5)


# --- recon normalization --------------------------------------------------------------------------


def test_mse_and_kl_normalization() -> None:
    torch.manual_seed(1)
    pred, target = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mse = recon_error_sum(pred, target, "mse") / recon_normalizer(target, "mse")
    assert mse.item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-6)
    p, log_p, log_q = target.softmax(-1), target.log_softmax(-1), pred.log_softmax(-1)
    expected_kl = (p * (log_p - log_q)).sum(-1).mean()
    kl = recon_error_sum(pred, target, "kl") / recon_normalizer(target, "kl")
    assert recon_normalizer(target, "kl") == 6
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-5)


def test_layerwise_averages_over_modules_and_masks_zero_keep_bias() -> None:
    model = make_model(exact=False)
    x = torch.randn(7, D_IN)
    target_out = model(x)
    zero = {p: torch.zeros(7, c) for p, c in model.module_to_c.items()}
    # Zero masks: replacing lin1 gives relu(0) → lin2 bias; replacing lin2 gives its bias copy.
    bias_only = model.target_model.lin2.bias.expand(7, D_OUT)
    expected = F.mse_loss(bias_only, target_out)
    assert ci_masked_recon_layerwise_loss(model, x, zero, target_out, "mse").item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    assert ci_masked_recon_loss(model, x, zero, target_out, "mse").item() == pytest.approx(expected.item(), rel=1e-6)


# --- exact components give zero recon -------------------------------------------------------------


@pytest.mark.parametrize("config", all_losses(), ids=lambda c: c.classname)
def test_every_recon_loss_is_zero_for_exact_components_with_ci_one(config: object) -> None:
    model = make_model(exact=True)
    x = torch.randn(16, D_IN)
    ci = ones_ci(model, x)
    losses = compute_losses(
        [config], model, x, CIOutputs(ci, ci, ci), model.calc_weight_deltas(), model(x), 0.0,
        sampling="continuous", use_delta_component=True, n_mask_samples=2, output_loss_type="mse",
    )
    (value,) = losses.values()
    assert value.item() == pytest.approx(0.0, abs=1e-10)


def test_stochastic_recon_is_positive_without_exact_components() -> None:
    model = make_model(exact=False)
    x = torch.randn(16, D_IN)
    ci = {p: torch.zeros(16, c) for p, c in model.module_to_c.items()}
    value = stochastic_recon_loss(model, x, ci, None, model(x), "mse", "continuous", n_mask_samples=1)
    assert value.item() > 1e-4


def test_stochastic_recon_with_full_delta_and_ci_one_is_exact_for_random_components() -> None:
    # ci = 1 → masks 1; but the delta mask is U(0,1), so only exact components give zero error.
    model = make_model(exact=False)
    x = torch.randn(16, D_IN)
    ci = ones_ci(model, x)
    value = stochastic_recon_loss(model, x, ci, model.calc_weight_deltas(), model(x), "mse", "continuous", 1)
    assert value.item() > 1e-6


# --- PGD ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["unique_per_datapoint", "shared_across_batch"])
def test_pgd_sources_stay_in_unit_interval_and_move(scope: str) -> None:
    model = make_model(exact=False)
    x = torch.randn(8, D_IN)
    ci = {p: torch.rand(8, c) * 0.5 for p, c in model.module_to_c.items()}
    deltas = model.calc_weight_deltas()
    settings = PGDSettings(init="random", step_size=0.7, n_steps=3, mask_scope=scope)
    sources = init_sources(ci, with_delta=True, settings=settings)
    expected_lead = (8,) if scope == "unique_per_datapoint" else (1,)
    assert {tuple(s.shape) for s in sources.values()} == {(*expected_lead, D_HID + 1), (*expected_lead, D_OUT + 1)}
    before = {p: s.detach().clone() for p, s in sources.items()}
    optimize_sources_(model, x, ci, deltas, sources, "all", model(x), "mse", settings)
    for path, src in sources.items():
        assert src.min() >= 0.0 and src.max() <= 1.0
        assert not torch.equal(src, before[path])
        # step 0.7 from U(0,1) starts: entries pushed out of range were clamped to the bounds
        assert ((src == 0) | (src == 1)).any()


def test_pgd_loss_backpropagates_into_components_and_ci() -> None:
    model = make_model(exact=False)
    x = torch.randn(8, D_IN)
    raw = {p: torch.rand(8, c, requires_grad=True) for p, c in model.module_to_c.items()}
    cfg = PGDReconLossConfig(coeff=1.0, init="random", step_size=0.1, n_steps=2, mask_scope="unique_per_datapoint")
    losses = compute_losses(
        [cfg], model, x, CIOutputs(raw, raw, raw), model.calc_weight_deltas(), model(x), 0.0,
        sampling="continuous", use_delta_component=True, n_mask_samples=1, output_loss_type="mse",
    )
    losses["PGDReconLoss"].backward()
    assert all(model.components[p].V.grad is not None for p in model.module_to_c)
    assert all(r.grad is not None and r.grad.abs().sum() > 0 for r in raw.values())


# --- dispatch -------------------------------------------------------------------------------------


def test_compute_losses_dispatches_every_config_class_and_matches_direct_calls() -> None:
    assert set(LOSS_FUNCTIONS) >= {type(c) for c in all_losses()} | {
        FaithfulnessLossConfig, ImportanceMinimalityLossConfig,
    }
    model = make_model(exact=False)
    x = torch.randn(6, D_IN)
    ci_raw = {p: torch.rand(6, c) for p, c in model.module_to_c.items()}
    ci = CIOutputs(ci_raw, ci_raw, ci_raw)
    deltas = model.calc_weight_deltas()
    configs = [
        FaithfulnessLossConfig(coeff=1.0),
        ImportanceMinimalityLossConfig(coeff=1.0, pnorm=1.0),
        CIMaskedReconLossConfig(coeff=1.0),
        StochasticReconLossConfig(coeff=1.0),
    ]
    torch.manual_seed(3)
    losses = compute_losses(
        configs, model, x, ci, deltas, model(x), 0.0,
        sampling="continuous", use_delta_component=True, n_mask_samples=1, output_loss_type="mse",
    )
    assert list(losses) == [c.classname for c in configs]
    assert losses["FaithfulnessLoss"].item() == pytest.approx(faithfulness_loss(deltas).item())
    assert losses["ImportanceMinimalityLoss"].item() == pytest.approx(
        importance_minimality_loss(ci_raw, 0.0, pnorm=1.0).item()
    )
    assert losses["CIMaskedReconLoss"].item() == pytest.approx(
        ci_masked_recon_loss(model, x, ci_raw, model(x), "mse").item()
    )
    torch.manual_seed(3)
    direct = stochastic_recon_loss(model, x, ci_raw, deltas, model(x), "mse", "continuous", 1)
    assert losses["StochasticReconLoss"].item() == pytest.approx(direct.item())


def test_kl_recon_losses_are_zero_for_exact_components() -> None:
    model = make_model(exact=True)
    x = torch.randn(2, 3, D_IN)  # (batch, seq, d): output logits over a "vocab" of D_OUT
    ci = ones_ci(model, x)
    losses = compute_losses(
        [StochasticReconSubsetLossConfig(coeff=1.0), CIMaskedReconLayerwiseLossConfig(coeff=1.0)],
        model, x, CIOutputs(ci, ci, ci), model.calc_weight_deltas(), model(x), 0.0,
        sampling="binomial", use_delta_component=True, n_mask_samples=1, output_loss_type="kl",
    )
    assert all(abs(v.item()) < 1e-6 for v in losses.values())
