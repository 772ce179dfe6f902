"""Evaluation-only metrics of a decomposition (spec §3.6): pure functions over one batch's CI values.

CI values are `lower_leaky` (the mask CI). Batch-level functions return tensors; the evaluation loop
(`spdlab.core.evaluation`) averages them over eval batches.
"""

import fnmatch
import re
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.losses.recon import recon_error_sum, recon_normalizer
from spdlab.core.masks import Sampling, calc_stochastic_component_mask_info, make_mask_infos

# --- CI statistics --------------------------------------------------------------------------------


def calc_ci_l_zero(ci: Tensor, threshold: float) -> Tensor:
    """Mean over positions of the number of components with `ci > threshold` (strict)."""
    return (ci > threshold).sum(dim=-1, dtype=torch.float32).mean()


def ci_l0_per_module(ci: Mapping[str, Tensor], threshold: float) -> dict[str, Tensor]:
    return {path: calc_ci_l_zero(c, threshold) for path, c in ci.items()}


def l0_group_sums(l0: Mapping[str, Tensor], groups: Mapping[str, list[str]]) -> dict[str, Tensor]:
    """Per group, the sum of the L0 of modules whose path matches one of its patterns (`*` → `.*`)."""
    sums = {}
    for group, patterns in groups.items():
        regexes = [re.compile(p.replace(".", r"\.").replace("*", ".*")) for p in patterns]
        members = [v for path, v in l0.items() if any(r.fullmatch(path) for r in regexes)]
        sums[group] = torch.stack(members).sum() if members else torch.zeros(())
    return sums


def component_activation_density(ci: Mapping[str, Tensor], threshold: float) -> dict[str, Tensor]:
    """Per module `(C,)`: fraction of positions with `ci > threshold`."""
    return {path: (c > threshold).reshape(-1, c.shape[-1]).float().mean(dim=0) for path, c in ci.items()}


def ci_mean_per_component(ci: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per module `(C,)`: mean CI over positions."""
    return {path: c.reshape(-1, c.shape[-1]).float().mean(dim=0) for path, c in ci.items()}


# --- CE / KL for language models ------------------------------------------------------------------

CE_KL_MASK_SETTINGS = ("ci_masked", "unmasked", "stoch_masked", "random_masked", "rounded_masked", "zero_masked")


def _ce_vs_next_tokens(logits: Tensor, tokens: Tensor) -> Tensor:
    """Next-token CE on the flattened batch; position 0 of every row is ignored, so no
    prediction across a row boundary is scored."""
    labels = tokens.clone()
    labels[:, 0] = -100
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(flat_logits[:-1], labels.flatten()[1:], ignore_index=-100)


def _mean_kl(logits: Tensor, target_out: Tensor) -> Tensor:
    return recon_error_sum(logits.float(), target_out.float(), "kl") / recon_normalizer(target_out, "kl")


def ce_and_kl_losses(
    model: ComponentModel,
    tokens: Tensor,
    target_out: Tensor,
    ci: Mapping[str, Tensor],
    weight_deltas: dict[str, Tensor],
    sampling: Sampling,
    rounding_threshold: float,
) -> dict[str, Tensor]:
    """`kl_<s>`, `ce_difference_<s>`, `ce_unrecovered_<s>` for the six mask settings (`zero_masked`
    has no CE entries: it is the normalizer). `stoch_masked` always uses the delta component."""
    assert tokens.ndim == 2, "CE/KL needs a (batch, seq) token batch"
    ci = dict(ci)
    masks = {
        "ci_masked": make_mask_infos(ci),
        "unmasked": make_mask_infos({k: torch.ones_like(v) for k, v in ci.items()}),
        "stoch_masked": calc_stochastic_component_mask_info(ci, sampling, weight_deltas),
        "random_masked": make_mask_infos({k: torch.rand_like(v) for k, v in ci.items()}),
        "rounded_masked": make_mask_infos({k: (v > rounding_threshold).to(v.dtype) for k, v in ci.items()}),
        "zero_masked": make_mask_infos({k: torch.zeros_like(v) for k, v in ci.items()}),
    }
    ce_target = _ce_vs_next_tokens(target_out, tokens)
    kl: dict[str, Tensor] = {}
    ce: dict[str, Tensor] = {}
    for setting in CE_KL_MASK_SETTINGS:
        logits = model(tokens, mask_infos=masks[setting])
        kl[setting] = _mean_kl(logits, target_out)
        ce[setting] = _ce_vs_next_tokens(logits, tokens)
    out = {f"kl_{s}": kl[s] for s in CE_KL_MASK_SETTINGS}
    ce_range = ce["zero_masked"] - ce_target
    for s in CE_KL_MASK_SETTINGS[:-1]:
        out[f"ce_difference_{s}"] = ce[s] - ce_target
    for s in CE_KL_MASK_SETTINGS[:-1]:
        out[f"ce_unrecovered_{s}"] = (ce[s] - ce_target) / ce_range
    return out


# --- target-solution (identity / dense) CI error for toy models -----------------------------------


def single_feature_ci(
    model: ComponentModel, n_features: int, sampling: Sampling, input_magnitude: float = 0.75,
    with_pos_dim: bool = False,
) -> dict[str, Tensor]:
    """CI (`lower_leaky`) per module, `(n_features, C)`, for inputs with one active feature each."""
    device = next(model.parameters()).device
    batch = torch.eye(n_features, device=device) * input_magnitude
    if with_pos_dim:
        batch = batch.unsqueeze(1)
    result = model(batch, cache_type="input")
    assert isinstance(result, OutputWithCache)
    ci = model.calc_causal_importances(result.cache, sampling=sampling).lower_leaky
    return {path: (c[:, 0] if with_pos_dim else c) for path, c in ci.items()}


def max_weight_assignment(weights: np.ndarray) -> np.ndarray:
    """Column assigned to each row maximizing the summed weight (Hungarian method, rows ≤ columns)."""
    n, m = weights.shape
    assert n <= m, "need at least as many columns as rows"
    cost = -weights.astype(np.float64)
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    row_of_col = np.zeros(m + 1, dtype=np.int64)  # 1-based row matched to column j (0 = none)
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        row_of_col[0] = i
        j0 = 0
        min_v = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = row_of_col[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < min_v[1:])
            min_v[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, min_v[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[row_of_col[used]] += delta
            v[used] -= delta
            min_v[~used] -= delta
            j0 = j1
            if row_of_col[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            row_of_col[j0] = row_of_col[j1]
            j0 = j1
    cols = np.empty(n, dtype=np.int64)
    matched = np.nonzero(row_of_col[1:])[0]
    cols[row_of_col[1:][matched] - 1] = matched
    return cols


def identity_distance(ci: Tensor, tolerance: float = 0.1) -> int:
    """Entries off the best feature→component matching that exceed `tolerance`, plus matched
    entries below `1 − tolerance`. Zero iff each feature has exactly one strong component of its own."""
    n_features, n_components = ci.shape
    if n_features > n_components:
        raise ValueError(f"expected at least {n_features} components, got {n_components}")
    cols = torch.as_tensor(max_weight_assignment(ci.detach().float().cpu().numpy()), device=ci.device)
    rows = torch.arange(n_features, device=ci.device)
    matched = torch.zeros_like(ci, dtype=torch.bool)
    matched[rows, cols] = True
    off = int((ci[~matched] > tolerance).sum())
    on = int((ci[rows, cols] < 1 - tolerance).sum())
    return off + on


def dense_distance(ci: Tensor, k: int, tolerance: float = 0.1, min_entries: int = 1) -> int:
    """Dense pattern: the k densest columns each need `min_entries` strong values; others must be off."""
    order = ci.sum(dim=0).argsort(descending=True)
    sorted_ci = ci[:, order]
    strong = (sorted_ci >= 1 - tolerance).sum(dim=0)
    missing = (min_entries - strong[:k]).clamp(min=0).sum()
    stray = (sorted_ci[:, k:] > tolerance).sum()
    return int(missing + stray)


def _first_match(path: str, patterns: Mapping[str, object]) -> object | None:
    return next((spec for pattern, spec in patterns.items() if fnmatch.fnmatch(path, pattern)), None)


def target_solution_errors(
    ci_by_module: Mapping[str, Tensor],
    identity_patterns: Mapping[str, int],
    dense_patterns: Mapping[str, int],
) -> dict[str, int]:
    """Research-code keys `target_solution_error/{total,total_0p2,<module>}` (tolerance 0.1; 0.2)."""

    def distance(path: str, tolerance: float) -> int | None:
        if (n := _first_match(path, identity_patterns)) is not None:
            assert n == ci_by_module[path].shape[0], f"{path}: expected {n} features"
            return identity_distance(ci_by_module[path], tolerance)
        if (k := _first_match(path, dense_patterns)) is not None:
            return dense_distance(ci_by_module[path], int(k), tolerance)  # type: ignore[call-overload]
        return None

    per_module = {p: d for p in ci_by_module if (d := distance(p, 0.1)) is not None}
    total_0p2 = sum(d for p in ci_by_module if (d := distance(p, 0.2)) is not None)
    out = {"target_solution_error/total": sum(per_module.values()), "target_solution_error/total_0p2": total_0p2}
    out.update({f"target_solution_error/{p}": d for p, d in per_module.items()})
    return out


def components_per_feature(ci_by_module: Mapping[str, Tensor], threshold: float) -> dict[str, Tensor]:
    """Per module `(n_features,)`: how many components have CI over `threshold` for each single feature."""
    return {path: (c > threshold).sum(dim=-1) for path, c in ci_by_module.items()}
