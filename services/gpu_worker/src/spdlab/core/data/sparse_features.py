"""Sparse feature batches for TMS / ResidMLP targets (research code: `SparseFeatureDataset`, spec §4.3)."""

from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

DataGenerationType = Literal[
    "at_least_zero_active",
    "exactly_one_active",
    "exactly_two_active",
    "exactly_three_active",
    "exactly_four_active",
    "exactly_five_active",
]

_EXACTLY_K = {
    "exactly_one_active": 1,
    "exactly_two_active": 2,
    "exactly_three_active": 3,
    "exactly_four_active": 4,
    "exactly_five_active": 5,
}


def at_least_zero_active(
    batch_size: int,
    n_features: int,
    feature_probability: float,
    value_range: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Each feature independently active with `feature_probability`, value ~ U(value_range)."""
    low, high = value_range
    values = torch.rand(batch_size, n_features, generator=generator, device=device) * (high - low) + low
    active = torch.rand(batch_size, n_features, generator=generator, device=device) < feature_probability
    return values * active


def exactly_k_active(
    batch_size: int,
    n_features: int,
    k: int,
    value_range: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Exactly `k` distinct features active per row, values ~ U(value_range)."""
    if k > n_features:
        raise ValueError(f"cannot activate {k} features when only {n_features} exist")
    low, high = value_range
    # A random permutation per row (argsort of uniform noise); its first k entries are the active features.
    perm = torch.rand(batch_size, n_features, generator=generator, device=device).argsort(dim=-1)
    values = torch.rand(batch_size, k, generator=generator, device=device) * (high - low) + low
    batch = torch.zeros(batch_size, n_features, device=device)
    return batch.scatter_(1, perm[:, :k], values)


def generate_batch(
    data_generation_type: DataGenerationType,
    batch_size: int,
    n_features: int,
    feature_probability: float,
    value_range: tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """One batch `(batch_size, n_features)` of the given generation type."""
    if data_generation_type == "at_least_zero_active":
        return at_least_zero_active(batch_size, n_features, feature_probability, value_range, generator, device)
    if data_generation_type in _EXACTLY_K:
        k = _EXACTLY_K[data_generation_type]
        return exactly_k_active(batch_size, n_features, k, value_range, generator, device)
    raise ValueError(f"unknown data_generation_type {data_generation_type!r}")


def sparse_feature_batches(
    data_generation_type: DataGenerationType,
    batch_size: int,
    n_features: int,
    feature_probability: float,
    value_range: tuple[float, float],
    seed: int,
    device: torch.device | str = "cpu",
) -> Iterator[Tensor]:
    """Endless stream of batches from a generator seeded with `seed` (reproducible, RNG-isolated)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    while True:
        yield generate_batch(
            data_generation_type, batch_size, n_features, feature_probability, value_range, generator, device
        )
