"""Adversarial (PGD) masked reconstruction losses (spec §3.3).

Per module a source tensor of width `C (+1 for the delta mask)` is optimized by signed-gradient
ascent on the recon error and clamped to [0, 1] after every step; the component mask is
`ci + (1 − ci)·source`, as for stochastic masks. The returned loss is a final forward with the
optimized sources, differentiable w.r.t. model parameters and `ci` (not the sources).
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from spdlab.core.component_model import ComponentModel
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.losses.recon import OutputLossType, recon_error_sum, recon_normalizer
from spdlab.core.masks import AllLayersRouter, Router, RoutingMasks, make_mask_infos

PGDInit = Literal["random", "ones", "zeroes"]
MaskScope = Literal["unique_per_datapoint", "shared_across_batch"]


@dataclass(frozen=True)
class PGDSettings:
    init: PGDInit
    step_size: float
    n_steps: int
    mask_scope: MaskScope


def init_sources(
    ci: dict[str, Tensor], with_delta: bool, settings: PGDSettings
) -> dict[str, Tensor]:
    """Leaf source tensors per module, `(..., C[+1])` or all-ones leading dims when shared."""
    sources = {}
    for path, c in ci.items():
        leading = c.shape[:-1] if settings.mask_scope == "unique_per_datapoint" else (1,) * (c.ndim - 1)
        shape = (*leading, c.shape[-1] + int(with_delta))
        match settings.init:
            case "random":
                src = torch.rand(shape, device=c.device)
            case "ones":
                src = torch.ones(shape, device=c.device)
            case "zeroes":
                src = torch.zeros(shape, device=c.device)
        sources[path] = src.requires_grad_(True)
    return sources


def _masked_error(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    sources: dict[str, Tensor],
    routing: RoutingMasks,
    target_out: Tensor,
    loss_type: OutputLossType,
) -> Tensor:
    component_masks = {}
    deltas_and_masks = None if weight_deltas is None else {}
    for path, c in ci.items():
        src = sources[path].expand(*c.shape[:-1], -1)
        component_masks[path] = c + (1 - c) * src[..., : c.shape[-1]]
        if deltas_and_masks is not None and weight_deltas is not None:
            deltas_and_masks[path] = WeightDeltaAndMask(delta=weight_deltas[path], mask=src[..., -1])
    mask_infos = make_mask_infos(component_masks, routing, deltas_and_masks)
    return recon_error_sum(model(batch, mask_infos=mask_infos), target_out, loss_type)


def optimize_sources_(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    sources: dict[str, Tensor],
    routing: RoutingMasks,
    target_out: Tensor,
    loss_type: OutputLossType,
    settings: PGDSettings,
) -> None:
    """`n_steps` of `src += step_size·sign(∂E/∂src)`, then clamp to [0, 1] (in place)."""
    leaves = list(sources.values())
    for _ in range(settings.n_steps):
        with torch.enable_grad():
            err = _masked_error(model, batch, ci, weight_deltas, sources, routing, target_out, loss_type)
        # Gradients w.r.t. the sources only; model parameters receive nothing from the ascent.
        grads = torch.autograd.grad(err, leaves)
        with torch.no_grad():
            for src, grad in zip(leaves, grads, strict=True):
                src.add_(settings.step_size * grad.sign()).clamp_(0.0, 1.0)


def pgd_recon_loss(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    target_out: Tensor,
    loss_type: OutputLossType,
    settings: PGDSettings,
    router: Router | None = None,
) -> Tensor:
    """PGD recon over all modules; with a `router` one routing draw is fixed for the whole run."""
    first = next(iter(ci.values()))
    routing = (router or AllLayersRouter()).get_masks(list(ci), tuple(first.shape[:-1]), first.device)
    sources = init_sources(ci, weight_deltas is not None, settings)
    optimize_sources_(model, batch, ci, weight_deltas, sources, routing, target_out, loss_type, settings)
    err = _masked_error(model, batch, ci, weight_deltas, sources, routing, target_out, loss_type)
    return err / recon_normalizer(target_out, loss_type)


def pgd_recon_layerwise_loss(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    target_out: Tensor,
    loss_type: OutputLossType,
    settings: PGDSettings,
) -> Tensor:
    """PGD separately per module (the other modules keep target outputs); `Σ E / Σ n`."""
    errors = []
    for path in ci:
        ci_one = {path: ci[path]}
        deltas_one = None if weight_deltas is None else {path: weight_deltas[path]}
        sources = init_sources(ci_one, deltas_one is not None, settings)
        optimize_sources_(model, batch, ci_one, deltas_one, sources, "all", target_out, loss_type, settings)
        errors.append(_masked_error(model, batch, ci_one, deltas_one, sources, "all", target_out, loss_type))
    return torch.stack(errors).sum() / (len(errors) * recon_normalizer(target_out, loss_type))
