"""Hidden-activation reconstruction: module outputs with all modules replaced vs the target's (spec §3.4)."""

import torch
from torch import Tensor

from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.masks import Sampling, calc_stochastic_component_mask_info, make_mask_infos

ModuleSSE = dict[str, tuple[Tensor, int]]


def target_module_outputs(model: ComponentModel, batch: Tensor) -> dict[str, Tensor]:
    """Output of every decomposed module in a plain target forward."""
    result = model(batch, cache_type="output")
    assert isinstance(result, OutputWithCache)
    return result.cache


def _sse_against(cache: dict[str, Tensor], target_acts: dict[str, Tensor]) -> ModuleSSE:
    return {
        path: ((cache[path] - target_acts[path]).pow(2).sum(), target_acts[path].numel()) for path in target_acts
    }


def _accumulate(total: ModuleSSE, new: ModuleSSE) -> ModuleSSE:
    if not total:
        return new
    return {path: (total[path][0] + sse, total[path][1] + n) for path, (sse, n) in new.items()}


def stochastic_hidden_acts_sse(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    sampling: Sampling,
    n_mask_samples: int,
    target_acts: dict[str, Tensor] | None = None,
) -> ModuleSSE:
    """Per module (Σ squared error, element count) over `n_mask_samples` stochastic draws (+ delta)."""
    target_acts = target_module_outputs(model, batch) if target_acts is None else target_acts
    total: ModuleSSE = {}
    for _ in range(n_mask_samples):
        mask_infos = calc_stochastic_component_mask_info(ci, sampling, weight_deltas)
        result = model(batch, mask_infos=mask_infos, cache_type="output")
        total = _accumulate(total, _sse_against(result.cache, target_acts))
    return total


def ci_hidden_acts_sse(
    model: ComponentModel, batch: Tensor, ci: dict[str, Tensor], target_acts: dict[str, Tensor] | None = None
) -> ModuleSSE:
    """Per module (Σ squared error, element count) with masks = ci, no delta."""
    target_acts = target_module_outputs(model, batch) if target_acts is None else target_acts
    result = model(batch, mask_infos=make_mask_infos(ci), cache_type="output")
    return _sse_against(result.cache, target_acts)


def total_mse(sse: ModuleSSE) -> Tensor:
    """`Σ_modules SSE / Σ_modules numel`."""
    return torch.stack([s for s, _ in sse.values()]).sum() / sum(n for _, n in sse.values())


def stochastic_hidden_acts_recon_loss(
    model: ComponentModel,
    batch: Tensor,
    ci: dict[str, Tensor],
    weight_deltas: dict[str, Tensor] | None,
    sampling: Sampling,
    n_mask_samples: int,
) -> Tensor:
    return total_mse(stochastic_hidden_acts_sse(model, batch, ci, weight_deltas, sampling, n_mask_samples))
