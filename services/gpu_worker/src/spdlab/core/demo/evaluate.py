"""Summary figures of a decomposition on held-out windows: L0 per module and output KLs (spec §3.6)."""

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor

from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.masks import make_mask_infos


class DecompositionMetrics(BaseModel):
    """Means over eval positions: `l0[threshold][module]` = #components with CI > threshold."""

    l0: dict[str, dict[str, float]]
    l0_total: dict[str, float]
    sum_c: int
    kl_ci_masked: float
    kl_unmasked: float
    kl_zero_masked: float
    n_positions: int


def _kl_per_position(target_logits: Tensor, pred_logits: Tensor) -> Tensor:
    """KL(softmax(target) ‖ softmax(pred)) per position, summed over the vocabulary."""
    log_p = F.log_softmax(target_logits, dim=-1)
    log_q = F.log_softmax(pred_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@torch.no_grad()
def decomposition_metrics(
    cm: ComponentModel, windows: Tensor, thresholds: tuple[float, ...] = (0.1, 0.0), batch_size: int = 32
) -> DecompositionMetrics:
    """L0 of `lower_leaky` CI (strict `>`) per module and threshold; KLs of masked forwards vs target."""
    paths = cm.target_module_paths
    counts = {t: {p: 0.0 for p in paths} for t in thresholds}
    kl = {"ci": 0.0, "ones": 0.0, "zeros": 0.0}
    n_pos = 0
    for batch in windows.split(batch_size):
        out = cm(batch, cache_type="input")
        assert isinstance(out, OutputWithCache)
        ci = cm.calc_causal_importances(out.cache, sampling="continuous").lower_leaky
        for t in thresholds:
            for p in paths:
                counts[t][p] += float((ci[p] > t).sum())
        masks = {
            "ci": ci,
            "ones": {p: torch.ones_like(ci[p]) for p in paths},
            "zeros": {p: torch.zeros_like(ci[p]) for p in paths},
        }
        for name, m in masks.items():
            pred = cm(batch, mask_infos=make_mask_infos(m))
            kl[name] += float(_kl_per_position(out.output, pred).sum())
        n_pos += batch.numel()
    l0 = {str(t): {p: c / n_pos for p, c in counts[t].items()} for t in thresholds}
    return DecompositionMetrics(
        l0=l0,
        l0_total={t: sum(v.values()) for t, v in l0.items()},
        sum_c=sum(cm.module_to_c.values()),
        kl_ci_masked=kl["ci"] / n_pos,
        kl_unmasked=kl["ones"] / n_pos,
        kl_zero_masked=kl["zeros"] / n_pos,
        n_positions=n_pos,
    )


class CopyAccuracy(BaseModel):
    """Greedy accuracy on back-references that only the introduction can answer."""

    colour_after_the: float  # "... throws the [red]": the colour bound to the owner/object
    object_after_the_colour: float  # "... the red [ball]": the object bound to the colour
    n_colour: int
    n_object: int


@torch.no_grad()
def copy_accuracy(
    model: torch.nn.Module, windows: Tensor, the_id: int, colour_ids: Tensor, object_ids: Tensor
) -> CopyAccuracy:
    """Accuracy of the target's argmax at colour/object positions that refer back to the intro."""
    pred = model(windows)[0][:, :-1].argmax(-1)
    nxt, prev = windows[:, 1:], windows[:, :-1]
    prev2 = torch.cat([torch.full_like(prev[:, :1], -1), prev[:, :-1]], dim=1)
    colour_mask = (prev == the_id) & torch.isin(nxt, colour_ids)
    object_mask = (prev2 == the_id) & torch.isin(prev, colour_ids) & torch.isin(nxt, object_ids)
    correct = pred == nxt
    return CopyAccuracy(
        colour_after_the=float(correct[colour_mask].float().mean()),
        object_after_the_colour=float(correct[object_mask].float().mean()),
        n_colour=int(colour_mask.sum()),
        n_object=int(object_mask.sum()),
    )
