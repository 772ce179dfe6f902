"""Faithfulness loss: mean squared entry of the weight deltas over all decomposed modules (spec §3.1)."""

import torch
from torch import Tensor


def faithfulness_loss(weight_deltas: dict[str, Tensor]) -> Tensor:
    """`Σ_l ‖Δ_l‖²_F / Σ_l numel(Δ_l)`."""
    assert weight_deltas, "no weight deltas given"
    sum_sq = torch.stack([d.pow(2).sum() for d in weight_deltas.values()]).sum()
    n_entries = sum(d.numel() for d in weight_deltas.values())
    return sum_sq / n_entries
