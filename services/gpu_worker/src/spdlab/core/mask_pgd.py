"""Adversarial masks for one prompt: signed-gradient ascent on a masked-forward loss (app_backend §3.2).

Sources `s ∈ [0, 1]` per (position, component) turn CI values into masks `ci + (1 − ci)·s`; with a
weight delta, an extra last channel of `s` is the delta mask. Ascent moves only the entries marked
trainable; the others keep their initial values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.masks import ComponentsMaskInfo, make_mask_infos


def interpolated_mask_infos(
    ci: dict[str, Tensor], sources: dict[str, Tensor], weight_deltas: dict[str, Tensor] | None = None
) -> dict[str, ComponentsMaskInfo]:
    """Masks `ci + (1 − ci)·s[..., :C]`; with deltas, delta masks `s[..., C]` (sources are C+1 wide)."""
    masks = {p: c + (1 - c) * sources[p][..., : c.shape[-1]] for p, c in ci.items()}
    deltas = None
    if weight_deltas is not None:
        deltas = {p: WeightDeltaAndMask(weight_deltas[p], sources[p][..., -1]) for p in ci}
    return make_mask_infos(masks, "all", deltas)


def random_sources(
    shape_of: dict[str, tuple[int, ...]], batch: int, generator: torch.Generator, device: torch.device | str
) -> dict[str, Tensor]:
    """U(0,1) sources `[batch, *shape]`; one draw shared by every batch element (common random numbers,
    so a batched optimization equals the same optimizations run one by one)."""
    return {
        p: torch.rand((1, *shape), generator=generator, device=device).expand(batch, *shape).clone()
        for p, shape in shape_of.items()
    }


def pgd_ascent(
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    init: dict[str, Tensor],
    trainable: dict[str, Tensor],
    n_steps: int,
    step_size: float,
) -> dict[str, Tensor]:
    """`n_steps` of `s ← clamp(s + step_size·sign(∇ Σ loss), 0, 1)` on trainable entries; returns detached s.

    `loss_fn` maps sources to a per-element loss `[N]`; elements are independent, so summing keeps
    each element's ascent its own.
    """
    sources = {p: s.detach() for p, s in init.items()}
    for _ in range(n_steps):
        leaves = {p: s.clone().requires_grad_(True) for p, s in sources.items()}
        with torch.enable_grad():
            loss = loss_fn(leaves).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()))
        sources = {
            p: torch.where(trainable[p], (s + step_size * g.sign()).clamp(0.0, 1.0), s)
            for (p, s), g in zip(sources.items(), grads, strict=True)
        }
    return sources
