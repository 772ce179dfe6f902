"""SPD training losses and `compute_losses`, which evaluates a config's loss list (spec §3.1).

Dispatch is a table from loss-config class to a function `(config, LossContext) -> Tensor`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from spdlab.common import spd_config as cfg
from spdlab.core.component_model import CIOutputs, ComponentModel
from spdlab.core.losses.faithfulness import faithfulness_loss
from spdlab.core.losses.hidden_acts import stochastic_hidden_acts_recon_loss
from spdlab.core.losses.importance_minimality import importance_minimality_loss
from spdlab.core.losses.pgd import PGDSettings, pgd_recon_layerwise_loss, pgd_recon_loss
from spdlab.core.losses.recon import (
    OutputLossType,
    ci_masked_recon_layerwise_loss,
    ci_masked_recon_loss,
    ci_masked_recon_subset_loss,
    stochastic_recon_layerwise_loss,
    stochastic_recon_loss,
    unmasked_recon_loss,
)
from spdlab.core.masks import Sampling, router_from_config


@dataclass(frozen=True)
class LossContext:
    """Everything one training (or eval) step offers to a loss."""

    model: ComponentModel
    batch: Tensor
    ci: CIOutputs
    weight_deltas: dict[str, Tensor] | None  # None unless the delta component is used
    all_weight_deltas: dict[str, Tensor]  # always present (faithfulness needs them)
    target_out: Tensor
    current_frac: float
    sampling: Sampling
    n_mask_samples: int
    output_loss_type: OutputLossType


def _pgd_settings(c: Any) -> PGDSettings:
    return PGDSettings(init=c.init, step_size=c.step_size, n_steps=c.n_steps, mask_scope=c.mask_scope)


def _importance_minimality(c: Any, x: LossContext) -> Tensor:
    return importance_minimality_loss(
        x.ci.upper_leaky,
        x.current_frac,
        pnorm=c.pnorm,
        beta=c.beta,
        eps=c.eps,
        p_anneal_start_frac=c.p_anneal_start_frac,
        p_anneal_final_p=c.p_anneal_final_p,
        p_anneal_end_frac=c.p_anneal_end_frac,
    )


def _stochastic(c: Any, x: LossContext, router: Any = None) -> Tensor:
    return stochastic_recon_loss(
        x.model, x.batch, x.ci.lower_leaky, x.weight_deltas, x.target_out, x.output_loss_type,
        x.sampling, x.n_mask_samples, router,
    )


LossFn = Callable[[Any, LossContext], Tensor]

LOSS_FUNCTIONS: dict[type, LossFn] = {
    cfg.FaithfulnessLossConfig: lambda c, x: faithfulness_loss(x.all_weight_deltas),
    cfg.ImportanceMinimalityLossConfig: _importance_minimality,
    cfg.UnmaskedReconLossConfig: lambda c, x: unmasked_recon_loss(
        x.model, x.batch, x.ci.lower_leaky, x.target_out, x.output_loss_type
    ),
    cfg.CIMaskedReconLossConfig: lambda c, x: ci_masked_recon_loss(
        x.model, x.batch, x.ci.lower_leaky, x.target_out, x.output_loss_type
    ),
    cfg.CIMaskedReconLayerwiseLossConfig: lambda c, x: ci_masked_recon_layerwise_loss(
        x.model, x.batch, x.ci.lower_leaky, x.target_out, x.output_loss_type
    ),
    cfg.CIMaskedReconSubsetLossConfig: lambda c, x: ci_masked_recon_subset_loss(
        x.model, x.batch, x.ci.lower_leaky, x.target_out, x.output_loss_type, router_from_config(c.routing)
    ),
    cfg.StochasticReconLossConfig: _stochastic,
    cfg.StochasticReconLayerwiseLossConfig: lambda c, x: stochastic_recon_layerwise_loss(
        x.model, x.batch, x.ci.lower_leaky, x.weight_deltas, x.target_out, x.output_loss_type,
        x.sampling, x.n_mask_samples,
    ),
    cfg.StochasticReconSubsetLossConfig: lambda c, x: _stochastic(c, x, router_from_config(c.routing)),
    cfg.PGDReconLossConfig: lambda c, x: pgd_recon_loss(
        x.model, x.batch, x.ci.lower_leaky, x.weight_deltas, x.target_out, x.output_loss_type, _pgd_settings(c)
    ),
    cfg.PGDReconLayerwiseLossConfig: lambda c, x: pgd_recon_layerwise_loss(
        x.model, x.batch, x.ci.lower_leaky, x.weight_deltas, x.target_out, x.output_loss_type, _pgd_settings(c)
    ),
    cfg.PGDReconSubsetLossConfig: lambda c, x: pgd_recon_loss(
        x.model, x.batch, x.ci.lower_leaky, x.weight_deltas, x.target_out, x.output_loss_type,
        _pgd_settings(c), router_from_config(c.routing),
    ),
    cfg.StochasticHiddenActsReconLossConfig: lambda c, x: stochastic_hidden_acts_recon_loss(
        x.model, x.batch, x.ci.lower_leaky, x.weight_deltas, x.sampling, x.n_mask_samples
    ),
}


def loss_function_for(config: Any) -> LossFn:
    try:
        return LOSS_FUNCTIONS[type(config)]
    except KeyError:
        raise ValueError(f"{type(config).__name__} is not a supported training loss") from None


def compute_losses(
    configs: Sequence[Any],
    model: ComponentModel,
    batch: Tensor,
    ci: CIOutputs,
    weight_deltas: dict[str, Tensor],
    target_out: Tensor,
    current_frac: float,
    *,
    sampling: Sampling,
    use_delta_component: bool,
    n_mask_samples: int,
    output_loss_type: OutputLossType,
) -> dict[str, Tensor]:
    """Unweighted loss value per config, keyed by its `classname` (config order)."""
    ctx = LossContext(
        model=model,
        batch=batch,
        ci=ci,
        weight_deltas=weight_deltas if use_delta_component else None,
        all_weight_deltas=weight_deltas,
        target_out=target_out,
        current_frac=current_frac,
        sampling=sampling,
        n_mask_samples=n_mask_samples,
        output_loss_type=output_loss_type,
    )
    losses: dict[str, Tensor] = {}
    for config in configs:
        assert config.classname not in losses, f"duplicate loss config {config.classname}"
        losses[config.classname] = loss_function_for(config)(config, ctx)
    return losses


__all__ = ["LOSS_FUNCTIONS", "LossContext", "compute_losses", "loss_function_for"]
