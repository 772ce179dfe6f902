"""Output reconstruction losses (spec §3.0–3.1).

Every loss here is `Σ E / Σ n` over the forward passes it makes, with E the summed recon error of one
forward and n its normalizer (output elements for `mse`, positions for `kl`). Masks use
`ci = lower_leaky`; weight deltas are given only when the delta component is in use.
"""

from collections.abc import Iterable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from spdlab.core.component_model import ComponentModel
from spdlab.core.masks import (
    AllLayersRouter,
    ComponentsMaskInfo,
    Router,
    Sampling,
    calc_stochastic_component_mask_info,
    make_mask_infos,
)

OutputLossType = Literal["mse", "kl"]
MaskInfos = dict[str, ComponentsMaskInfo]


def recon_error_sum(pred: Tensor, target: Tensor, loss_type: OutputLossType) -> Tensor:
    """E: summed squared error (`mse`) or Σ over positions of KL(softmax(target) ‖ softmax(pred)) (`kl`)."""
    match loss_type:
        case "mse":
            return (pred - target).pow(2).sum()
        case "kl":
            log_q = F.log_softmax(pred, dim=-1)
            log_p = F.log_softmax(target, dim=-1)
            return F.kl_div(log_q, log_p, reduction="sum", log_target=True)
    raise ValueError(f"unknown output loss type {loss_type!r}")


def recon_normalizer(out: Tensor, loss_type: OutputLossType) -> int:
    """n: number of output elements (`mse`) or of positions (`kl`)."""
    match loss_type:
        case "mse":
            return out.numel()
        case "kl":
            return out[..., 0].numel()
    raise ValueError(f"unknown output loss type {loss_type!r}")


def recon_over_mask_infos(
    model: ComponentModel,
    batch: Tensor,
    target_out: Tensor,
    loss_type: OutputLossType,
    mask_infos_seq: Iterable[MaskInfos],
) -> Tensor:
    """`Σ E / Σ n` with one forward per element of `mask_infos_seq` (consumed lazily, in order)."""
    errors = []
    for mask_infos in mask_infos_seq:
        out = model(batch, mask_infos=mask_infos)
        errors.append(recon_error_sum(out, target_out, loss_type))
    assert errors, "no forward passes"
    return torch.stack(errors).sum() / (len(errors) * recon_normalizer(target_out, loss_type))


def _single_module_infos(mask_infos: MaskInfos) -> Iterator[MaskInfos]:
    """One dict per module: replace only that module, the others keep target weights."""
    for path, info in mask_infos.items():
        yield {path: info}


def unmasked_recon_loss(
    model: ComponentModel, batch: Tensor, ci: dict[str, Tensor], target_out: Tensor, loss_type: OutputLossType
) -> Tensor:
    """All component masks 1 (shape `(C,)`, broadcast), no delta, all modules."""
    ones = {path: torch.ones(c.shape[-1], device=c.device, dtype=c.dtype) for path, c in ci.items()}
    return recon_over_mask_infos(model, batch, target_out, loss_type, [make_mask_infos(ones)])


def ci_masked_recon_loss(
    model: ComponentModel, batch: Tensor, ci: dict[str, Tensor], target_out: Tensor, loss_type: OutputLossType
) -> Tensor:
    """Masks = ci, no delta, all modules."""
    return recon_over_mask_infos(model, batch, target_out, loss_type, [make_mask_infos(ci)])


def ci_masked_recon_layerwise_loss(
    model: ComponentModel, batch: Tensor, ci: dict[str, Tensor], target_out: Tensor, loss_type: OutputLossType
) -> Tensor:
    """Masks = ci, no delta, one module at a time; averaged over modules."""
    return recon_over_mask_infos(model, batch, target_out, loss_type, _single_module_infos(make_mask_infos(ci)))


def ci_masked_recon_subset_loss(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    target_out: Tensor,
    loss_type: OutputLossType,
    router: Router,
) -> Tensor:
    """Masks = ci, no delta, with one subset-routing draw."""
    first = next(iter(ci.values()))
    routing = router.get_masks(list(ci), tuple(first.shape[:-1]), first.device)
    return recon_over_mask_infos(model, batch, target_out, loss_type, [make_mask_infos(ci, routing)])


def _stochastic_draws(
    ci: dict[str, Tensor],
    sampling: Sampling,
    weight_deltas: dict[str, Tensor] | None,
    n_mask_samples: int,
    router: Router,
) -> Iterator[MaskInfos]:
    for _ in range(n_mask_samples):
        yield calc_stochastic_component_mask_info(ci, sampling, weight_deltas, router)


def stochastic_recon_loss(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    target_out: Tensor,
    loss_type: OutputLossType,
    sampling: Sampling,
    n_mask_samples: int,
    router: Router | None = None,
) -> Tensor:
    """`n_mask_samples` forwards with fresh stochastic masks (+ delta); `router` = subset variant."""
    draws = _stochastic_draws(ci, sampling, weight_deltas, n_mask_samples, router or AllLayersRouter())
    return recon_over_mask_infos(model, batch, target_out, loss_type, draws)


def stochastic_recon_layerwise_loss(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    target_out: Tensor,
    loss_type: OutputLossType,
    sampling: Sampling,
    n_mask_samples: int,
) -> Tensor:
    """Per sample one stochastic draw for all modules, then one forward per module replacing only it."""
    draws = _stochastic_draws(ci, sampling, weight_deltas, n_mask_samples, AllLayersRouter())
    per_module = (single for draw in draws for single in _single_module_infos(draw))
    return recon_over_mask_infos(model, batch, target_out, loss_type, per_module)
