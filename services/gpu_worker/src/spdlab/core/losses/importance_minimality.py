"""Importance-minimality loss on the upper-leaky CI values (spec §3.2)."""

import torch
from torch import Tensor

from spdlab.core.schedules import get_annealed_p


def importance_minimality_loss(
    ci_upper_leaky: dict[str, Tensor],
    current_frac: float,
    pnorm: float,
    beta: float = 0.0,
    eps: float = 1e-12,
    p_anneal_start_frac: float = 1.0,
    p_anneal_final_p: float | None = None,
    p_anneal_end_frac: float = 1.0,
    world_size: int = 1,
) -> Tensor:
    """`Σ_l Σ_c [μ_lc + β·μ_lc·log2(1 + S_lc·world_size)]` with `S_lc = Σ_positions (ci + eps)^p`.

    `μ_lc = S_lc / N` (N positions). `world_size` scales the batch sum to estimate the global one in
    data-parallel training; single-process training and evaluation use 1.
    """
    p = get_annealed_p(current_frac, pnorm, p_anneal_start_frac, p_anneal_final_p, p_anneal_end_frac)
    per_layer = []
    for ci in ci_upper_leaky.values():
        sums = (ci + eps).pow(p).reshape(-1, ci.shape[-1]).sum(dim=0)
        n_positions = ci.numel() // ci.shape[-1]
        means = sums / n_positions
        per_layer.append((means + beta * means * torch.log2(1 + sums * world_size)).sum())
    return torch.stack(per_layer).sum()
